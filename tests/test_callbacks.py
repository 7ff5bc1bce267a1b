"""Callbacks: the hook contract for every public callback, then each one's numbers."""

import copy
import os
import tempfile
import inspect
import math
import pickle
import re
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

import sklears_neural.callbacks as public_callbacks
from sklears_neural import MLPClassifier
from sklears_neural.callbacks import (
    Callback,
    EarlyStopping,
    GradientStats,
    InverseScalingLR,
    ProgressBar,
    TerminateOnNaN,
)
from sklears_neural.core.history import History
from sklears_neural.exceptions import TrainingDivergedError

X_small, y_small = load_digits(n_class=3, return_X_y=True)
X_small, y_small = X_small[:60] / 16.0, y_small[:60]


# -- a tiny stand-in for the Trainer ---------------------------------------------


class FakeTrainer:
    """What a callback may touch: module, optimizer, history, should_stop, weights."""

    def __init__(self, module, optimizer=None):
        self.module = module
        self.optimizer = optimizer
        self.history = History()
        self.should_stop = False
        self.samples_seen = 0
        self.checkpoints = []

    def checkpoint(self, path):
        self.checkpoints.append(path)

    def snapshot(self):
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def restore(self, state):
        with torch.no_grad():
            for name, tensor in self.module.state_dict().items():
                tensor.copy_(state[name])


def _linear(n_in=3, n_out=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    module = torch.nn.Sequential(torch.nn.Linear(n_in, n_out)).double()
    with torch.no_grad():
        weight = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64)
        module[0].weight.copy_(weight)
        module[0].bias.zero_()
    return module


def _batches(n_batches=4, batch=5, n_in=3, n_out=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, n_in, generator=gen, dtype=torch.float64),
         torch.randn(batch, n_out, generator=gen, dtype=torch.float64))
        for _ in range(n_batches)
    ]


def _mse(module, X, y):
    return 0.5 * (module(X) - y).pow(2).sum(dim=1).mean()


def _run(trainer, callbacks, batches, n_epochs, *, poison=None, extra=None):
    """The Trainer's loop, by hand, with every hook and optional extra kwargs.

    ``poison=(epoch, batch)`` (1-based) puts a NaN into that batch's inputs.
    """
    extra = extra or {}
    for cb in callbacks:
        cb.on_train_begin(trainer, max_epochs=n_epochs, n_batches=len(batches), **extra)
    for epoch in range(1, n_epochs + 1):
        for cb in callbacks:
            cb.on_epoch_begin(trainer, **extra)
        for b, (X, y) in enumerate(batches, start=1):
            if poison == (epoch, b):
                X = X.clone()
                X[0, 0] = math.nan
            trainer.optimizer.zero_grad(set_to_none=True)
            loss = _mse(trainer.module, X, y)
            loss.backward()
            for cb in callbacks:
                cb.on_backward_end(trainer, **extra)
            trainer.optimizer.step()
            for cb in callbacks:
                cb.on_batch_end(trainer, batch_loss=loss.detach(), **extra)
            if trainer.should_stop:
                break
        if trainer.should_stop:
            break
        trainer.history.append({"epoch": epoch, "train_loss": 1.0 / epoch,
                                "valid_loss": 2.0 / epoch, "valid_score": 0.5})
        for cb in callbacks:
            cb.on_epoch_end(trainer, **extra)
    for cb in callbacks:
        cb.on_train_end(trainer, **extra)


# -- the contract, for every public callback -------------------------------------

CALLBACK_CLASSES = sorted(
    (
        obj for name in public_callbacks.__all__
        if inspect.isclass(obj := getattr(public_callbacks, name))
        and issubclass(obj, Callback)
    ),
    key=lambda cls: cls.__name__,
)
HOOKS = sorted(name for name in vars(Callback) if name.startswith("on_"))

# Values for required constructor arguments, by name; a new callback with a
# required argument not listed here fails test_contract_covers_every_callback.
REQUIRED_ARGUMENTS = {"learning_rate_init": 0.01, "power_t": 0.5,
                      "path": os.path.join(tempfile.mkdtemp(), "contract.zip"),
                      "schedule": ("step", {"step_size": 1, "gamma": 0.5})}


def _make(cls):
    kwargs = {
        name: REQUIRED_ARGUMENTS[name]
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    return cls(**kwargs)


def _params(cb):
    return {k: v for k, v in vars(cb).items() if not k.startswith("_")}


def test_contract_covers_every_callback():
    names = {cls.__name__ for cls in CALLBACK_CLASSES}
    assert {"Callback", "Checkpoint", "EarlyStopping", "EpochLogger", "GradientStats",
            "InverseScalingLR", "ProgressBar", "TerminateOnNaN"} <= names
    for cls in CALLBACK_CLASSES:
        assert isinstance(_make(cls), cls)
    assert HOOKS == ["on_backward_end", "on_batch_end", "on_epoch_begin",
                     "on_epoch_end", "on_train_begin", "on_train_end"]


@pytest.mark.parametrize("cls", CALLBACK_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_takes_trainer_and_kwargs(cls, hook):
    params = list(inspect.signature(getattr(cls, hook)).parameters.values())
    assert [p.name for p in params[:2]] == ["self", "trainer"]
    assert params[1].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert params[-1].kind is inspect.Parameter.VAR_KEYWORD
    # Nothing but the trainer may be required, save on_batch_end's batch_loss.
    required = {p.name for p in params[2:] if p.default is p.empty
                and p.kind is not inspect.Parameter.VAR_KEYWORD}
    assert required <= ({"batch_loss"} if hook == "on_batch_end" else set())


@pytest.mark.parametrize("cls", CALLBACK_CLASSES, ids=lambda c: c.__name__)
def test_hooks_run_through_a_loop_with_unknown_kwargs(cls, capsys):
    module = _linear()
    trainer = FakeTrainer(module, torch.optim.SGD(module.parameters(), lr=0.01))
    cb = _make(cls)
    _run(trainer, [cb], _batches(), 2, extra={"unknown_option": object()})
    assert [r["epoch"] for r in trainer.history] == [1, 2]
    assert torch.isfinite(trainer.snapshot()["0.weight"]).all()


def test_base_hooks_are_no_ops():
    module = _linear()
    optimizer = torch.optim.Adam(module.parameters())
    trainer = FakeTrainer(module, optimizer)
    trainer.history.append({"epoch": 1, "train_loss": 0.5})
    before = (trainer.snapshot(), copy.deepcopy(trainer.history), trainer.samples_seen)
    cb = Callback()
    for hook in HOOKS:
        nan = torch.tensor(math.nan)
        kwargs = {"batch_loss": nan} if hook == "on_batch_end" else {}
        assert getattr(cb, hook)(trainer, unknown_option=1, **kwargs) is None
    assert trainer.should_stop is False and trainer.history == before[1]
    assert trainer.samples_seen == before[2] and optimizer.state_dict()["state"] == {}
    for name, tensor in trainer.snapshot().items():
        torch.testing.assert_close(tensor, before[0][name], rtol=0, atol=0)
    assert vars(cb) == {}


@pytest.mark.parametrize("cls", [c for c in CALLBACK_CLASSES if c is not Callback],
                         ids=lambda c: c.__name__)
def test_every_callback_overrides_a_hook(cls):
    # Inherited hooks are the base no-ops above, which the Trainer skips.
    assert any(getattr(cls, h) is not getattr(Callback, h) for h in HOOKS)


@pytest.mark.parametrize("cls", CALLBACK_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("used", [False, True], ids=["fresh", "after-training"])
def test_survives_deepcopy_pickle_and_clone(cls, used, capsys):
    cb = _make(cls)
    if used:
        module = _linear()
        trainer = FakeTrainer(module, torch.optim.Adam(module.parameters()))
        _run(trainer, [cb], _batches(), 2)
    for copied in (copy.deepcopy(cb), pickle.loads(pickle.dumps(cb))):
        assert type(copied) is cls and copied is not cb
        assert repr(copied) == repr(cb)
        assert _params(copied).keys() == _params(cb).keys()
    est = MLPClassifier(callbacks=[cb])
    cloned = clone(est).callbacks
    assert len(cloned) == 1 and type(cloned[0]) is cls and cloned[0] is not cb
    assert repr(cloned[0]) == repr(cb)


@pytest.mark.parametrize("cls", CALLBACK_CLASSES, ids=lambda c: c.__name__)
def test_estimator_with_callback_fits_pickles_and_clones(cls, capsys):
    cb = _make(cls)
    if cls is EarlyStopping:
        cb = EarlyStopping(monitor="train_loss")
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, callbacks=[cb],
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_small, y_small)
    assert clf.n_iter_ == 3
    proba = clf.predict_proba(X_small)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X_small), proba)
    assert type(restored.callbacks[0]) is cls
    assert type(clone(clf).callbacks[0]) is cls


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ProgressBar(unit="epochs"), r"'unit' parameter of ProgressBar .*"
                                             r"\['batch', 'epoch'\]. Got 'epochs'"),
        (lambda: ProgressBar(keys="train_loss"), r"'keys' parameter of ProgressBar"),
        (lambda: ProgressBar(keys=["train_loss", 3]), r"'keys' parameter"),
        (lambda: ProgressBar(leave="yes"), r"'leave' parameter of ProgressBar"),
        (lambda: TerminateOnNaN(restore_weights=None),
         r"'restore_weights' parameter of TerminateOnNaN must be True or False\. "
         r"Got None instead"),
        (lambda: GradientStats(update_ratio=1),
         r"'update_ratio' parameter of GradientStats"),
    ],
)
def test_bad_options_fail_at_construction(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert isinstance(info.value, TypeError)


def test_progress_bar_without_tqdm_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match="pip install tqdm"):
        ProgressBar()


def test_repr_shows_options_that_differ_from_defaults():
    assert repr(ProgressBar()) == "ProgressBar()"
    assert repr(ProgressBar("batch", keys=["valid_loss"])) == (
        "ProgressBar(unit='batch', keys=['valid_loss'])"
    )
    assert repr(InverseScalingLR(0.1, 0.5)) == (
        "InverseScalingLR(learning_rate_init=0.1, power_t=0.5)"
    )
    assert repr(EarlyStopping(patience=np.inf)) == "EarlyStopping(patience=inf)"


# -- EarlyStopping options ----------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"patience": -3}, r"'patience' parameter of EarlyStopping must be an int >= 0\. "
                           r"Got -3 instead"),
        ({"patience": 2.5}, r"'patience' parameter of EarlyStopping must be an int"),
        ({"tol": -1.0}, r"'tol' parameter of EarlyStopping must be a real number >= 0"),
        ({"restore_on": "never"}, r"'restore_on' parameter of EarlyStopping must be a "
                                  r"str among \['end', 'stop'\]"),
        ({"lr_reduce_factor": 0.5}, r"'lr_reduce_factor' .* must be a real number > 1"),
        ({"monitor": 3}, r"'monitor' parameter of EarlyStopping must be a history key"),
    ],
)
def test_early_stopping_refuses_bad_options_where_it_is_made(options, message):
    # InvalidParameterError: a ValueError and a TypeError, as scikit-learn's.
    with pytest.raises((ValueError, TypeError), match=message):
        EarlyStopping(**options)


def test_early_stopping_on_a_key_the_fit_does_not_record_says_how_to_fix():
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0,
                        callbacks=[EarlyStopping()])
    with pytest.raises(ValueError, match=r"monitors 'valid_loss'.*early_stopping=True"
                       r".*monitor='train_loss'"):
        clf.fit(X_small, y_small)
    assert not hasattr(clf, "module_")  # rolled back: still unfitted
    # Either fix works.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.set_params(early_stopping=True).fit(X_small, y_small)
        assert "valid_loss" in clf.history_[-1]
        clf.set_params(early_stopping=False,
                       callbacks=[EarlyStopping(monitor="train_loss")]).fit(X_small,
                                                                             y_small)
    assert clf.n_iter_ >= 1


# -- ProgressBar -------------------------------------------------------------------


def _final_bar(err):
    # tqdm redraws with carriage returns; the last drawing is the final state.
    return re.split(r"[\r\n]+", err.strip())[-1]


def test_progress_bar_counts_epochs_and_shows_the_latest_record(capsys):
    module = _linear()
    trainer = FakeTrainer(module, torch.optim.SGD(module.parameters(), lr=0.01))
    bar = ProgressBar()
    _run(trainer, [bar, GradientStats()], _batches(), 5)
    out, err = capsys.readouterr()
    assert out == ""
    final = _final_bar(err)
    assert "5/5" in final and "epoch" in final
    assert f"train_loss={1 / 5:.4g}" in final and f"valid_loss={2 / 5:.4g}" in final
    # GradientStats' namespaced keys stay out of the bar by default.
    assert "grad_norm" not in err and "epoch=" not in err
    assert bar._bar is None


def test_progress_bar_over_batches(capsys):
    module = _linear()
    trainer = FakeTrainer(module, torch.optim.SGD(module.parameters(), lr=0.01))
    _run(trainer, [ProgressBar("batch", keys=["valid_loss"])], _batches(n_batches=3), 2)
    final = _final_bar(capsys.readouterr().err)
    assert "6/6" in final and "epoch 2" in final
    assert f"valid_loss={2 / 2:.4g}" in final and "train_loss" not in final


def test_progress_bar_over_batches_counts_epochs_without_mini_batches(capsys):
    # L-BFGS passes no n_batches: the bar counts its iterations as epochs.
    trainer = FakeTrainer(_linear())
    bar = ProgressBar("batch")
    bar.on_train_begin(trainer, max_epochs=4)
    for epoch in (1, 2):
        trainer.history.append({"epoch": epoch, "train_loss": 0.5 / epoch})
        bar.on_epoch_end(trainer)
    bar.on_train_end(trainer)
    final = _final_bar(capsys.readouterr().err)
    assert "2/4" in final and "epoch" in final and f"train_loss={0.25:.4g}" in final


def test_progress_bar_over_batches_in_an_estimator(capsys):
    # 60 samples in batches of 15: 4 per epoch.
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, batch_size=15,
                        random_state=0, callbacks=[ProgressBar("batch")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_small, y_small)
    final = _final_bar(capsys.readouterr().err)
    assert "8/8" in final and "epoch 2" in final and "batch" in final


def test_estimators_print_nothing_by_default(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(
            X_small, y_small
        )
    assert capsys.readouterr() == ("", "")


def test_progress_bar_in_an_estimator_shows_every_epoch(capsys):
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=4, callbacks=[ProgressBar()],
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_small, y_small)
    out, err = capsys.readouterr()
    final = _final_bar(err)
    assert out == "" and clf.n_iter_ == 4
    assert "4/4" in final
    assert f"train_loss={clf.loss_curve_[-1]:.4g}" in final


def test_progress_bar_closes_on_ctrl_c(capsys):
    class CtrlCAtThree(Callback):
        def on_epoch_end(self, trainer, **kwargs):
            if len(trainer.history) == 3:
                raise KeyboardInterrupt

    bar = ProgressBar()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=50,
                        callbacks=[bar, CtrlCAtThree()], random_state=0)
    with pytest.warns(UserWarning, match="interrupted by user"):
        clf.fit(X_small, y_small)
    final = _final_bar(capsys.readouterr().err)
    assert clf.callbacks_[0]._bar is None and clf.n_iter_ == 3
    assert "3/50" in final


def test_progress_bar_left_open_by_an_error_is_closed_by_the_next_fit(capsys):
    module = _linear()
    trainer = FakeTrainer(module, torch.optim.SGD(module.parameters(), lr=0.01))
    bar = ProgressBar()
    bar.on_train_begin(trainer, max_epochs=3)
    stale = bar._bar
    bar.on_train_begin(trainer, max_epochs=3)
    # tqdm marks a closed bar disabled.
    assert stale.disable and bar._bar is not stale and not bar._bar.disable
    bar.on_train_end(trainer)
    assert bar._bar is None


# -- TerminateOnNaN ----------------------------------------------------------------


def _weights_after(n_epochs, batches, optimizer_cls=torch.optim.Adam):
    module = _linear()
    trainer = FakeTrainer(module, optimizer_cls(module.parameters(), lr=0.05))
    _run(trainer, [], batches, n_epochs)
    return trainer


def test_terminate_on_nan_stops_and_restores_the_last_finite_epoch():
    batches = _batches()
    reference = _weights_after(1, batches)
    module = _linear()
    trainer = FakeTrainer(module, torch.optim.Adam(module.parameters(), lr=0.05))
    cb = TerminateOnNaN()
    match = "epoch 2, batch 3; training stopped and"
    with pytest.warns(ConvergenceWarning, match=match):
        _run(trainer, [cb], batches, 5, poison=(2, 3))
    assert trainer.should_stop and cb.stopped
    assert (cb.stopped_epoch, cb.stopped_batch) == (2, 3)
    assert len(trainer.history) == 1
    for name, tensor in trainer.snapshot().items():
        torch.testing.assert_close(tensor, reference.snapshot()[name], rtol=0, atol=0)
    # Adam's moments went back too: the NaN step left no trace.
    state = trainer.optimizer.state_dict()["state"]
    expected = reference.optimizer.state_dict()["state"]
    for index, moments in state.items():
        for key, value in moments.items():
            torch.testing.assert_close(value, expected[index][key], rtol=0, atol=0)
    assert cb._saved is None


def test_terminate_on_nan_without_restore_keeps_the_diverged_weights():
    module = _linear()
    trainer = FakeTrainer(module, torch.optim.SGD(module.parameters(), lr=0.05))
    cb = TerminateOnNaN(restore_weights=False)
    match = "with the weights of the diverged step"
    with pytest.warns(ConvergenceWarning, match=match):
        _run(trainer, [cb], _batches(), 3, poison=(1, 2))
    assert cb.stopped_epoch == 1 and trainer.should_stop
    assert torch.isnan(module[0].weight).all()


def test_terminate_on_nan_changes_nothing_while_the_loss_is_finite():
    batches = _batches()
    reference = _weights_after(3, batches)
    module = _linear()
    trainer = FakeTrainer(module, torch.optim.Adam(module.parameters(), lr=0.05))
    cb = TerminateOnNaN()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(trainer, [cb], batches, 3)
    assert not cb.stopped and not trainer.should_stop and len(trainer.history) == 3
    for name, tensor in trainer.snapshot().items():
        torch.testing.assert_close(tensor, reference.snapshot()[name], rtol=0, atol=0)


def test_terminate_on_nan_resets_between_fits():
    module = _linear()
    trainer = FakeTrainer(module, torch.optim.SGD(module.parameters(), lr=0.05))
    cb = TerminateOnNaN()
    with pytest.warns(ConvergenceWarning):
        _run(trainer, [cb], _batches(), 2, poison=(1, 1))
    trainer.should_stop = False
    _run(trainer, [cb], _batches(), 2)
    assert not cb.stopped and cb.stopped_epoch is None and len(trainer.history) == 2


class _PoisonWeightsAfterBatch(Callback):
    """Set every weight to NaN after global batch ``at`` (1-based)."""

    def __init__(self, at):
        self.at = at
        self.seen = 0

    def on_batch_end(self, trainer, **kwargs):
        self.seen += 1
        if self.seen == self.at:
            with torch.no_grad():
                for p in trainer.module.parameters():
                    p.fill_(math.nan)


def test_nan_weights_in_an_estimator_raise_without_terminate_on_nan():
    # The control for the test below: the same poison diverges the fit.
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, batch_size=15,
                        random_state=0, callbacks=[_PoisonWeightsAfterBatch(at=6)])
    with pytest.raises(TrainingDivergedError, match="epoch 2"):
        clf.fit(X_small, y_small)
    assert not hasattr(clf, "module_")


def test_terminate_on_nan_keeps_an_estimator_fitted_with_finite_weights():
    # 60 samples, batch_size=15: batch 6 is the 2nd batch of epoch 2.
    cb = TerminateOnNaN()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, batch_size=15,
                        random_state=0, callbacks=[cb, _PoisonWeightsAfterBatch(at=6)])
    with pytest.warns(ConvergenceWarning, match="epoch 2, batch 3"):
        clf.fit(X_small, y_small)
    reference = MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, batch_size=15,
                              random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference.fit(X_small, y_small)
    assert clf.n_iter_ == 1 and clf.loss_curve_ == reference.loss_curve_
    np.testing.assert_array_equal(clf.predict_proba(X_small),
                                  reference.predict_proba(X_small))
    for moments in clf._optimizer.state_dict()["state"].values():
        assert all(torch.isfinite(v).all() for v in moments.values())


# -- GradientStats -----------------------------------------------------------------


def _hand_sgd_stats(module, batches, lr, n_epochs):
    """Per-epoch mean gradient norms and update ratios of SGD on the MSE, in numpy."""
    W = module[0].weight.detach().numpy().copy()
    b = module[0].bias.detach().numpy().copy()
    epochs = []
    for _ in range(n_epochs):
        grads = {"0.weight": [], "0.bias": []}
        ratios = {"0.weight": [], "0.bias": []}
        for X, y in batches:
            X, y = X.numpy(), y.numpy()
            residual = X @ W.T + b - y  # (batch, n_out)
            gW = residual.T @ X / len(X)
            gb = residual.mean(axis=0)
            for name, weight, grad in (("0.weight", W, gW), ("0.bias", b, gb)):
                grads[name].append(np.linalg.norm(grad))
                if np.linalg.norm(weight) > 0:
                    ratio = lr * np.linalg.norm(grad) / np.linalg.norm(weight)
                    ratios[name].append(ratio)
            W, b = W - lr * gW, b - lr * gb
        epochs.append({**{f"grad_norm/{k}": np.mean(v) for k, v in grads.items()},
                       **{f"update_ratio/{k}": np.mean(v) for k, v in ratios.items()}})
    return epochs


def test_gradient_stats_equal_hand_computed_norms():
    batches = _batches(n_batches=4)
    module = _linear()
    expected = _hand_sgd_stats(_linear(), batches, lr=0.1, n_epochs=2)
    trainer = FakeTrainer(module, torch.optim.SGD(module.parameters(), lr=0.1))
    _run(trainer, [GradientStats()], batches, 2)
    for record, hand in zip(trainer.history, expected):
        stats = {k: v for k, v in record.items() if "/" in k}
        assert stats.keys() == hand.keys()
        assert all(type(v) is float for v in stats.values())
        for key, value in hand.items():
            assert stats[key] == pytest.approx(value, rel=1e-5), key
    # The zero bias counts from its second batch on: 3 ratios, not 4.
    assert expected[0]["update_ratio/0.bias"] > 0


def test_gradient_stats_leave_out_non_finite_and_undefined_values():
    module = _linear()
    trainer = FakeTrainer(module, torch.optim.SGD(module.parameters(), lr=0.0))
    cb = GradientStats()
    cb.on_train_begin(trainer)
    cb.on_epoch_begin(trainer)
    for grad in (3.0, math.inf, 5.0):
        for p in module.parameters():
            p.grad = torch.full_like(p, grad)
        cb.on_backward_end(trainer)
        trainer.optimizer.step()
        cb.on_batch_end(trainer, batch_loss=torch.tensor(1.0))
    trainer.history.append({"epoch": 1, "train_loss": 1.0})
    cb.on_epoch_end(trainer)
    record = trainer.history[-1]
    # 2x3 weight of 3s then 5s: mean of sqrt(6)*3 and sqrt(6)*5; inf is left out.
    assert record["grad_norm/0.weight"] == pytest.approx(4 * math.sqrt(6), rel=1e-6)
    assert record["grad_norm/0.bias"] == pytest.approx(4 * math.sqrt(2), rel=1e-6)
    # lr=0: no step at all; the bias stays zero, so its ratio is undefined.
    assert record["update_ratio/0.weight"] == 0.0
    assert math.isnan(record["update_ratio/0.bias"])


def test_gradient_stats_without_update_ratio_copy_no_weights():
    module = _linear()
    trainer = FakeTrainer(module, torch.optim.SGD(module.parameters(), lr=0.1))
    cb = GradientStats(update_ratio=False)
    _run(trainer, [cb], _batches(), 1)
    assert {k for k in trainer.history[-1] if "/" in k} == {"grad_norm/0.weight",
                                                           "grad_norm/0.bias"}
    assert cb._before is None and cb._sums is None


def test_gradient_stats_in_an_estimator():
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0,
                        callbacks=[GradientStats()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_small, y_small)
    names = [n for n, _ in clf.module_.named_parameters()]
    assert names == ["layers.0.weight", "layers.0.bias",
                     "layers.2.weight", "layers.2.bias"]
    for record in clf.history_:
        for name in names:
            assert 0 < record[f"grad_norm/{name}"] < math.inf
            assert 0 < record[f"update_ratio/{name}"] < 1
    assert History.from_json(clf.history_.to_json()) == clf.history_


def test_gradient_stats_warn_when_the_solver_runs_no_mini_batches():
    clf = MLPClassifier(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=3,
                        random_state=0, callbacks=[GradientStats()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(UserWarning, match="GradientStats recorded nothing"):
            clf.fit(X_small, y_small)
    assert not any("/" in key for record in clf.history_ for key in record)


def test_a_loop_of_its_own_gets_the_trainers_step_callbacks_and_history():
    """begin/step/end_epoch/end: an RL-style loop equals fit's epochs."""
    from sklears_neural.core.data import ArrayData
    from sklears_neural.core.trainer import Trainer

    torch.manual_seed(0)
    X = torch.randn(64, 3)
    y = X @ torch.tensor([1.0, -2.0, 0.5])
    objective = lambda m, a, b, w: ((m(a).squeeze(1) - b) ** 2).mean()  # noqa: E731

    def make():
        torch.manual_seed(1)
        module = torch.nn.Linear(3, 1)
        return module, torch.optim.SGD(module.parameters(), lr=0.1)

    module, optimizer = make()
    seen = []

    class Count(Callback):
        def on_batch_end(self, trainer, *, batch_loss, **kwargs):
            seen.append(float(batch_loss))

        def on_epoch_end(self, trainer, **kwargs):
            if len(trainer.history) == 3:
                trainer.should_stop = True

    trainer = Trainer(module, objective, optimizer, callbacks=[Count()],
                      clip_grad_norm=0.5)
    trainer.begin(max_epochs=10)
    epochs = 0
    while True:
        trainer.begin_epoch()
        for start in range(0, 64, 16):
            assert trainer.step(objective(module, X[start:start + 16],
                                          y[start:start + 16], None))
        epochs += 1
        if trainer.end_epoch({"episode_return": float(epochs)}, samples=64):
            break
    trainer.end()
    assert epochs == 3 and len(seen) == 12
    assert trainer.history.column("episode_return") == [1.0, 2.0, 3.0]
    assert [r["epoch"] for r in trainer.history] == [1, 2, 3]
    assert trainer.samples_seen == 192
    assert all(p.grad is None for p in module.parameters())

    # The same three epochs through fit, unshuffled: the same weights.
    reference, reference_optimizer = make()
    Trainer(reference, objective, reference_optimizer, clip_grad_norm=0.5).fit(
        ArrayData(X, y, None, dtype=torch.float32, device="cpu"),
        max_epochs=3, batch_size=16, shuffle=False)
    for a, b in zip(module.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
