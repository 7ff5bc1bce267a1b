"""Learning-rate schedules by name and the LRScheduler callback (core/schedules.py)."""

import copy
import functools
import json
import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sklears_neural.core.data import ArrayData
from sklears_neural.core.optim import SOLVERS, make_optimizer
from sklears_neural.core.schedules import LEARNING_RATES, LRScheduler, make_schedule
from sklears_neural.core.trainer import Trainer

LR = 0.1


def _optimizer(solver="sgd", lr=LR):
    est = SimpleNamespace(solver=solver, learning_rate_init=lr, momentum=0.9,
                          nesterovs_momentum=True, beta_1=0.9, beta_2=0.999,
                          epsilon=1e-8)
    return make_optimizer(torch.nn.Linear(2, 1), est)


def _drive(callback, optimizer, *, epochs, steps_per_epoch, **begin_kwargs):
    """Run the hooks as the trainer does; return the lr of every optimizer step.

    Also returns the history records the callback wrote.
    """
    used = []
    handle = optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"])
    )
    trainer = SimpleNamespace(optimizer=optimizer, history=[])
    callback.on_train_begin(trainer, **begin_kwargs)
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            optimizer.step()
            callback.on_batch_end(trainer, batch_loss=torch.tensor(0.0))
        trainer.history.append({})
        callback.on_epoch_end(trainer)
    handle.remove()
    return used, [record["lr"] for record in trainer.history]


def _per_epoch(values, steps_per_epoch):
    """Check ``values`` is constant within each epoch; return one value per epoch."""
    chunks = np.asarray(values).reshape(-1, steps_per_epoch)
    first = chunks[:, :1].repeat(steps_per_epoch, 1)
    np.testing.assert_allclose(chunks, first, rtol=1e-15)
    return chunks[:, 0]


def _schedule(option, *, epochs, steps_per_epoch, max_iter=None, warmup_iters=0,
              solver="sgd"):
    optimizer = _optimizer(solver)
    callback = make_schedule(option, optimizer, learning_rate_init=LR,
                             max_iter=epochs if max_iter is None else max_iter,
                             steps_per_epoch=steps_per_epoch, warmup_iters=warmup_iters)
    return _drive(callback, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch)


# -- each schedule against its closed form -------------------------------------


def test_step():
    used, recorded = _schedule(("step", {"step_size": 2, "gamma": 0.5}), epochs=7,
                               steps_per_epoch=3)
    expected = [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125]
    np.testing.assert_allclose(_per_epoch(used, 3), expected, rtol=1e-12)
    np.testing.assert_allclose(recorded, expected, rtol=1e-12)


def test_step_default_decays_twice_within_max_iter():
    # step_size = ceil(9 / 3) = 3, gamma = 0.1.
    _, recorded = _schedule("step", epochs=9, steps_per_epoch=1)
    expected = [0.1] * 3 + [0.01] * 3 + [0.001] * 3
    np.testing.assert_allclose(recorded, expected, rtol=1e-12)


def test_exponential():
    _, recorded = _schedule(("exponential", {"gamma": 0.8}), epochs=6,
                            steps_per_epoch=2)
    np.testing.assert_allclose(recorded, 0.1 * 0.8 ** np.arange(6), rtol=1e-12)


def test_exponential_default_ends_100_times_lower():
    optimizer = _optimizer()
    callback = make_schedule("exponential", optimizer, learning_rate_init=LR,
                             max_iter=10, steps_per_epoch=2)
    _, recorded = _drive(callback, optimizer, epochs=10, steps_per_epoch=2)
    np.testing.assert_allclose(recorded, 0.1 * 0.01 ** (np.arange(10) / 10), rtol=1e-12)
    np.testing.assert_allclose(optimizer.param_groups[0]["lr"], 0.1 * 0.01, rtol=1e-12)


def test_cosine_anneals_over_max_iter_then_holds():
    eta_min, max_iter = 0.01, 6
    used, recorded = _schedule(("cosine", {"eta_min": eta_min}), epochs=9,
                               steps_per_epoch=2, max_iter=max_iter)
    epoch = np.arange(9)
    cosine = np.cos(np.pi * np.minimum(epoch, max_iter) / max_iter)
    closed_form = eta_min + (LR - eta_min) * (1 + cosine) / 2
    np.testing.assert_allclose(_per_epoch(used, 2), closed_form, rtol=1e-12)
    np.testing.assert_allclose(recorded, closed_form, rtol=1e-12)
    assert recorded[6:] == [eta_min] * 3


def test_cosine_warm_restarts():
    used, _ = _schedule(("cosine", {"T_0": 2, "T_mult": 2}), epochs=14,
                        steps_per_epoch=1)
    # Cycles of 2, 4, 8 epochs; T_cur counts epochs into the current cycle.
    t_cur = [0, 1, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7]
    t_i = [2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8]
    expected = [LR * (1 + math.cos(math.pi * c / t)) / 2 for c, t in zip(t_cur, t_i)]
    np.testing.assert_allclose(used, expected, rtol=1e-12, atol=1e-15)


def _triangle(k, base, peak, up):
    """Smith (2017), triangular policy, at optimizer step k (0-based)."""
    cycle = math.floor(1 + k / (2 * up))
    x = abs(k / up - 2 * cycle + 1)
    return base + (peak - base) * max(0.0, 1 - x)


def test_cyclic_is_a_triangle_wave_over_batches():
    used, recorded = _schedule(("cyclic", {"max_lr": 0.5, "step_size_up": 4}), epochs=5,
                               steps_per_epoch=3)
    expected = [_triangle(k, 0.1, 0.5, 4) for k in range(15)]
    np.testing.assert_allclose(used, expected, rtol=1e-12)
    assert used[:9] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.4, 0.3, 0.2, 0.1])
    # history holds the rate of each epoch's last step.
    np.testing.assert_allclose(recorded, expected[2::3], rtol=1e-12)


def test_cyclic_defaults():
    # max_lr = 10 * learning_rate_init, step_size_up = 4 epochs of batches.
    used, _ = _schedule("cyclic", epochs=8, steps_per_epoch=2)
    np.testing.assert_allclose(used, [_triangle(k, 0.1, 1.0, 8) for k in range(16)],
                               rtol=1e-12)


def _cos_anneal(start, end, pct):
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def test_one_cycle_over_all_steps_then_holds():
    epochs, spe = 4, 5
    total = epochs * spe
    optimizer = _optimizer("adam")
    option = ("one_cycle", {"max_lr": 0.4, "pct_start": 0.25})
    callback = make_schedule(option, optimizer, learning_rate_init=LR,
                             max_iter=epochs, steps_per_epoch=spe)
    used, _ = _drive(callback, optimizer, epochs=epochs + 1, steps_per_epoch=spe)
    initial, peak = 0.4 / 25, 0.4
    final = initial / 1e4
    up_end = 0.25 * total - 1
    expected = [
        _cos_anneal(initial, peak, k / up_end) if k <= up_end
        else _cos_anneal(peak, final, (k - up_end) / (total - 1 - up_end))
        for k in range(total)
    ]
    np.testing.assert_allclose(used[:total], expected, rtol=1e-12)
    assert used[0] == pytest.approx(0.016) and max(used) == pytest.approx(0.4)
    # An extra epoch past total_steps keeps the final rate instead of failing.
    np.testing.assert_allclose(used[total:], [final] * spe, rtol=1e-12)
    # cycle_momentum is off: Adam's beta_1 is left alone.
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)


def test_constant_is_none_and_sklearn_schedules_are_left_to_the_estimator():
    optimizer = _optimizer()
    for name in ["constant", "invscaling", "adaptive"]:
        assert make_schedule(name, optimizer, learning_rate_init=LR, max_iter=5,
                             steps_per_epoch=2) is None
    assert optimizer.param_groups[0]["lr"] == LR
    for name in ["invscaling", "adaptive"]:
        with pytest.raises(ValueError, match="does not combine with"):
            make_schedule(name, optimizer, learning_rate_init=LR, max_iter=5,
                          steps_per_epoch=2, warmup_iters=3)
        with pytest.raises(ValueError, match="InverseScalingLR"):
            LRScheduler(name)


# -- warmup --------------------------------------------------------------------


def test_warmup_ramps_linearly_over_optimizer_steps():
    used, recorded = _schedule("constant", epochs=3, steps_per_epoch=3, warmup_iters=4)
    np.testing.assert_allclose(used, [0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
                               rtol=1e-12)
    np.testing.assert_allclose(recorded, [0.075, 0.1, 0.1], rtol=1e-12)


def test_warmup_multiplies_an_epoch_schedule_across_epoch_boundaries():
    used, _ = _schedule(("step", {"step_size": 1, "gamma": 0.5}), epochs=3,
                        steps_per_epoch=3, warmup_iters=5)
    np.testing.assert_allclose(
        used, [0.02, 0.04, 0.06, 0.05 * 4 / 5, 0.05, 0.05, 0.025, 0.025, 0.025],
        rtol=1e-12,
    )


@pytest.mark.parametrize("option", [
    ("cosine", {"eta_min": 0.01}),
    ("cosine", {"T_0": 2, "eta_min": 0.01}),
    ("cyclic", {"max_lr": 0.3, "step_size_up": 3}),
    ("one_cycle", {"max_lr": 0.3}),
    ("exponential", {"gamma": 0.7}),
])
def test_warmup_is_exact_on_top_of_any_schedule(option):
    # The ramp must not leak into torch's recursive formulas (cosine reads the
    # group's current lr): with and without warmup, the rates differ exactly by
    # the factor min(1, k / warmup_iters).
    kwargs = dict(epochs=6, steps_per_epoch=3)
    plain, _ = _schedule(option, **kwargs)
    warm, _ = _schedule(option, warmup_iters=7, **kwargs)
    factor = np.minimum(1.0, np.arange(1, 19) / 7)
    np.testing.assert_allclose(warm, np.asarray(plain) * factor, rtol=1e-12)
    assert warm[0] < plain[0] and warm[-1] == pytest.approx(plain[-1], rel=1e-12)


# -- options and errors --------------------------------------------------------


def test_names():
    assert LEARNING_RATES.names == [
        "adaptive", "constant", "cosine", "cyclic", "exponential", "invscaling",
        "one_cycle", "step",
    ]
    assert LEARNING_RATES.canonical("OneCycle") == "one_cycle"
    assert LEARNING_RATES.canonical("Cosine-Annealing") == "cosine"


@pytest.mark.parametrize("option", [
    ("step", {"step_size": 1, "gamma": 0.5}),
    {"name": "step", "step_size": 1, "gamma": 0.5},
])
def test_composite_settings(option):
    _, recorded = _schedule(option, epochs=3, steps_per_epoch=1)
    np.testing.assert_allclose(recorded, [0.1, 0.05, 0.025], rtol=1e-12)


def test_keyword_settings_override_composite_ones():
    optimizer = _optimizer()
    callback = LRScheduler(("step", {"step_size": 1, "gamma": 0.5}), gamma=0.25)
    _, recorded = _drive(callback, optimizer, epochs=3, steps_per_epoch=1)
    np.testing.assert_allclose(recorded, [0.1, 0.025, 0.00625], rtol=1e-12)


def test_unknown_names_and_settings_list_the_choices():
    optimizer = _optimizer()
    kwargs = dict(learning_rate_init=LR, max_iter=5, steps_per_epoch=2)
    with pytest.raises(ValueError, match=(
        "Unknown learning_rate schedule 'cosin'. Valid names are: adaptive, "
        "constant, cosine, cyclic, exponential, invscaling, one_cycle, step. "
        "Did you mean 'cosine'"
    )):
        make_schedule("cosin", optimizer, **kwargs)
    with pytest.raises(ValueError, match=(
        r"Unknown setting\(s\) \['gama'\] for learning_rate schedule 'step'. It takes: "
        "gamma, step_size."
    )):
        make_schedule(("step", {"gama": 0.5}), optimizer, **kwargs)
    with pytest.raises(ValueError, match="It takes: no settings"):
        make_schedule(("constant", {"x": 1}), optimizer, **kwargs)
    with pytest.raises(ValueError, match=r"Unknown setting\(s\) \['T'\]"):
        LRScheduler("cosine", T=3)


@pytest.mark.parametrize("option, match", [
    (("step", {"step_size": 0}),
     "The 'step_size' parameter of the 'step' schedule must be an int >= 1. Got 0"),
    (("step", {"gamma": -0.5}), "'gamma' parameter of the 'step' schedule must be a "
                                "real number > 0. Got -0.5"),
    (("cosine", {"T_0": 3, "T_max": 5}), "not both"),
    (("cosine", {"T_mult": 2}), "give T_0 too"),
    (("cosine", {"eta_min": -1.0}), "'eta_min'"),
    (("cyclic", {"step_size_up": 1.5}), "'step_size_up' parameter of the 'cyclic' "
                                        "schedule must be an int"),
    (("one_cycle", {"pct_start": 1.0}), r"'pct_start' parameter of the 'one_cycle' "
                                        r"schedule must be a real number in \(0, 1.0\)"),
    (("one_cycle", {"anneal_strategy": "step"}), "'cos' or 'linear'"),
])
def test_bad_settings_raise_value_error(option, match):
    # InvalidParameterError: a ValueError and a TypeError, as scikit-learn's.
    with pytest.raises((ValueError, TypeError), match=match):
        make_schedule(option, _optimizer(), learning_rate_init=LR, max_iter=5,
                      steps_per_epoch=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(schedule=3), "'schedule' parameter of LRScheduler"),
    (dict(schedule="step", step_every="batch"), "callable schedules only"),
    (dict(schedule="constant", warmup_iters=-1), "'warmup_iters' parameter"),
    (dict(schedule="constant", warmup_iters=2.0), "'warmup_iters' parameter"),
    (dict(schedule=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1),
          step_every="iteration"), "'step_every' parameter"),
])
def test_callback_options_are_checked_when_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRScheduler(**kwargs)


def test_run_length_comes_from_the_trainer_or_a_setting():
    callback = LRScheduler("cosine")
    with pytest.raises(ValueError, match="needs max_iter to set 'T_max'"):
        callback.on_train_begin(SimpleNamespace(optimizer=_optimizer(), history=[]))
    _, recorded = _drive(LRScheduler("cosine"), _optimizer(), epochs=4,
                         steps_per_epoch=1, max_epochs=4)
    expected = LR * (1 + np.cos(np.pi * np.arange(4) / 4)) / 2
    np.testing.assert_allclose(recorded, expected, rtol=1e-12)
    _, recorded = _drive(LRScheduler("cosine", T_max=2), _optimizer(), epochs=3,
                         steps_per_epoch=1)
    np.testing.assert_allclose(recorded, [0.1, 0.05, 0.0], atol=1e-15)
    with pytest.raises(ValueError, match="needs the batches per epoch"):
        LRScheduler("one_cycle").on_train_begin(
            SimpleNamespace(optimizer=_optimizer(), history=[]), max_epochs=3
        )


def test_lbfgs_has_no_rate_to_schedule():
    with pytest.raises(ValueError, match="solver='lbfgs' has no learning rate"):
        LRScheduler("step", step_size=1).on_train_begin(
            SimpleNamespace(optimizer=None, history=[])
        )


# -- user callbacks with torch schedulers --------------------------------------


@pytest.mark.parametrize("step_every, expected", [
    (None, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]),
    ("batch", [0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125]),
])
def test_callable_schedule(step_every, expected):
    factory = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    callback = LRScheduler(factory, step_every=step_every)
    used, _ = _drive(callback, _optimizer(), epochs=3, steps_per_epoch=2)
    np.testing.assert_allclose(used, expected, rtol=1e-12)


def test_callable_must_return_a_scheduler():
    callback = LRScheduler(torch.optim.lr_scheduler.ReduceLROnPlateau)
    with pytest.raises(TypeError, match="EarlyStopping"):
        callback.on_train_begin(SimpleNamespace(optimizer=_optimizer(), history=[]))


def test_callback_in_the_trainer_records_lr(global_random_seed):
    generator = torch.Generator().manual_seed(global_random_seed)
    X = torch.randn(20, 2, generator=generator).numpy()
    y = X.sum(axis=1)
    module = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)

    def objective(module, X, y, w):
        return 0.5 * (module(X).squeeze(1) - y).pow(2).mean()

    callback = LRScheduler("step", step_size=1, gamma=0.5, warmup_iters=3)
    trainer = Trainer(module, objective, optimizer, callbacks=[callback],
                      generator=generator)
    data = ArrayData(X, y, None, dtype=torch.float32, device=torch.device("cpu"))
    trainer.fit(data, max_epochs=3, batch_size=10)
    # 2 steps per epoch: warmup factors 1/3, 2/3 | 1, 1 (x 0.5) | 1, 1 (x 0.25).
    assert trainer.history.column("lr") == pytest.approx([0.1 * 2 / 3, 0.05, 0.025])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)


@pytest.mark.parametrize("solver", [n for n in SOLVERS.names if n != "lbfgs"])
@pytest.mark.parametrize("name",
                         ["step", "exponential", "cosine", "cyclic", "one_cycle"])
def test_every_schedule_drives_every_solver(solver, name):
    used, recorded = _schedule(name, epochs=4, steps_per_epoch=2, solver=solver)
    assert len(recorded) == 4 and len(set(used)) > 1 and all(v > 0 for v in used)


# -- state ---------------------------------------------------------------------

RESUME_CASES = [
    (("cosine", {"eta_min": 0.001}), 7),
    (("cosine", {"T_0": 2, "T_mult": 2}), 0),
    (("cyclic", {"step_size_up": 3}), 5),
    ("one_cycle", 4),
    (("step", {"step_size": 2}), 0),
]


def _split_run(option, warmup_iters, resume):
    """Lrs of a 6-epoch run, interrupted after epoch 2 and resumed with ``resume``."""
    kwargs = dict(learning_rate_init=LR, max_iter=6, steps_per_epoch=3,
                  warmup_iters=warmup_iters)
    module = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=LR, momentum=0.9)
    callback = make_schedule(option, optimizer, **kwargs)
    first, _ = _drive(callback, optimizer, epochs=2, steps_per_epoch=3)
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    weights = copy.deepcopy(module.state_dict())
    if resume is None:
        rest, _ = _drive(callback, optimizer, epochs=4, steps_per_epoch=3)
        return first + rest
    module2 = torch.nn.Linear(2, 1)
    module2.load_state_dict(weights)
    optimizer2 = torch.optim.SGD(module2.parameters(), lr=123.0, momentum=0.9)
    optimizer2.load_state_dict(optimizer_state)
    callback2 = resume(callback, optimizer2, kwargs)
    rest, _ = _drive(callback2, optimizer2, epochs=4, steps_per_epoch=3)
    return first + rest


def _via_state_dict(callback, optimizer, kwargs):
    state = pickle.loads(pickle.dumps(callback.state_dict()))
    fresh = make_schedule(callback.schedule, optimizer, **kwargs)
    fresh.load_state_dict(state)
    return fresh


def _via_state_dict_before_binding(callback, optimizer, kwargs):
    fresh = LRScheduler(callback.schedule, warmup_iters=callback.warmup_iters)
    fresh.load_state_dict(callback.state_dict())
    return fresh


def _via_pickle(callback, optimizer, kwargs):
    return pickle.loads(pickle.dumps(callback))


@pytest.mark.parametrize("option, warmup_iters", RESUME_CASES)
@pytest.mark.parametrize("resume", [_via_state_dict, _via_state_dict_before_binding,
                                    _via_pickle, copy.deepcopy])
def test_resume_continues_exactly(option, warmup_iters, resume):
    straight = _split_run(option, warmup_iters, None)
    if resume is copy.deepcopy:
        resumed = _split_run(option, warmup_iters,
                             lambda cb, opt, kw: copy.deepcopy(cb))
    else:
        resumed = _split_run(option, warmup_iters, resume)
    assert resumed == straight
    # Negative control: a fresh schedule on the resumed optimizer starts over.
    restarted = _split_run(
        option, warmup_iters, lambda cb, opt, kw: make_schedule(cb.schedule, opt, **kw)
    )
    assert restarted != straight


def test_state_dict_is_plain_data_and_none_before_start():
    callback = LRScheduler("cosine", T_max=4, warmup_iters=2)
    assert callback.state_dict() is None
    _drive(callback, _optimizer(), epochs=1, steps_per_epoch=3)
    state = callback.state_dict()
    assert state["schedule"] == "cosine" and state["steps"] == 3
    assert pickle.loads(pickle.dumps(state)) == state
    other = make_schedule("step", _optimizer(), learning_rate_init=LR, max_iter=3,
                          steps_per_epoch=1)
    with pytest.raises(ValueError, match="for schedule 'cosine', not 'step'"):
        other.load_state_dict(state)


@pytest.mark.parametrize("option", [
    "step", "exponential", "cosine", ("cosine", {"T_0": 2}), "cyclic", "one_cycle",
    "constant",
])
def test_state_dict_is_json_data(option):
    # The save/load format stores it as JSON: it must come back equal.
    optimizer = _optimizer()
    callback = make_schedule(option, optimizer, learning_rate_init=LR, max_iter=5,
                             steps_per_epoch=3, warmup_iters=2)
    _drive(callback, optimizer, epochs=2, steps_per_epoch=3)
    state = callback.state_dict()
    assert json.loads(json.dumps(state)) == state


def test_pickled_callback_holds_no_torch_objects():
    optimizer = _optimizer()
    callback = make_schedule("cosine", optimizer, learning_rate_init=LR, max_iter=4,
                             steps_per_epoch=2)
    payload = pickle.dumps(callback)
    assert b"torch" not in payload
    assert pickle.loads(payload).state_dict() == callback.state_dict()


def test_new_optimizer_restarts_the_schedule_and_clone_is_fresh():
    callback = LRScheduler("step", step_size=1, gamma=0.5)
    _, first = _drive(callback, _optimizer(), epochs=3, steps_per_epoch=1)
    # Same callback, a new fit (new optimizer): the schedule starts over.
    _, second = _drive(callback, _optimizer(), epochs=3, steps_per_epoch=1)
    assert first == second == pytest.approx([0.1, 0.05, 0.025])
    # reset() starts over on the same optimizer; without it, training continues.
    optimizer = _optimizer()
    _drive(callback, optimizer, epochs=2, steps_per_epoch=1)
    _, continued = _drive(callback, optimizer, epochs=1, steps_per_epoch=1)
    assert continued == pytest.approx([0.025])
    optimizer.param_groups[0]["lr"] = 0.2
    callback.reset()
    assert callback.state_dict() is None
    _, restarted = _drive(callback, optimizer, epochs=2, steps_per_epoch=1)
    assert restarted == pytest.approx([0.2, 0.1])
    cloned = clone(callback)
    assert cloned is not callback and cloned.state_dict() is None
    assert repr(cloned) == "LRScheduler('step', step_size=1, gamma=0.5)"
