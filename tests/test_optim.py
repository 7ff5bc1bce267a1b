"""Solvers by name (core/optim.py) and our LARS / LAMB (core/optimizers.py)."""

import copy
import pickle
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from sklears_neural.core.optim import (
    LEARNING_RATES,
    SOLVERS,
    apply_hyperparameters,
    make_optimizer,
)
from sklears_neural.core.optimizers import LAMB, LARS


def _est(solver="adam", **overrides):
    """The estimator attributes a solver factory reads (scikit-learn's defaults)."""
    settings = dict(
        solver=solver,
        learning_rate_init=0.001,
        momentum=0.9,
        nesterovs_momentum=True,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
    )
    settings.update(overrides)
    return SimpleNamespace(**settings)


# -- LARS against the paper, in numpy ------------------------------------------

RNG = np.random.RandomState(0)
W0 = RNG.normal(size=(3, 4))  # a weight matrix: adapted
B0 = RNG.normal(size=4)  # a bias: excluded by default
GRADS = [(RNG.normal(size=(3, 4)), RNG.normal(size=4)) for _ in range(2)]


def _params(*arrays):
    return [torch.nn.Parameter(torch.tensor(a, dtype=torch.float64)) for a in arrays]


def _run(optimizer, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    return [p.detach().numpy() for p in params]


def _lars_paper(weights, grads, *, lr, momentum, weight_decay, eta, exclude_1d=True):
    """Algorithm 1 of You, Gitman & Ginsburg (2017), for a constant global rate.

    v <- m v + gamma * lambda * (g + beta w),  w <- w - v, with the local rate
    lambda = eta ||w|| / (||g|| + beta ||w||); a 1-D tensor, when excluded,
    takes a plain momentum step v <- m v + gamma g.
    """
    weights = [w.copy() for w in weights]
    velocity = [np.zeros_like(w) for w in weights]
    for step_grads in grads:
        for i, (w, g) in enumerate(zip(weights, step_grads)):
            if exclude_1d and w.ndim == 1:
                local, decayed = 1.0, g
            else:
                w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
                local = eta * w_norm / (g_norm + weight_decay * w_norm)
                decayed = g + weight_decay * w
            velocity[i] = momentum * velocity[i] + lr * local * decayed
            weights[i] = w - velocity[i]
    return weights


@pytest.mark.parametrize("n_steps", [1, 2])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("exclude_1d", [True, False])
def test_lars_matches_paper(n_steps, weight_decay, exclude_1d):
    params = _params(W0, B0)
    opt = LARS(params, lr=0.5, momentum=0.9, weight_decay=weight_decay,
               trust_coefficient=0.1, eps=0.0, exclude_1d=exclude_1d)
    got = _run(opt, params, GRADS[:n_steps])
    expected = _lars_paper([W0, B0], GRADS[:n_steps], lr=0.5, momentum=0.9,
                           weight_decay=weight_decay, eta=0.1, exclude_1d=exclude_1d)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6)


def test_lars_excluded_bias_is_plain_sgd_and_not_decayed():
    params = _params(W0, B0)
    opt = LARS(params, lr=0.5, momentum=0.0, weight_decay=0.3, trust_coefficient=0.1)
    _, bias = _run(opt, params, GRADS[:1])
    np.testing.assert_allclose(bias, B0 - 0.5 * GRADS[0][1], rtol=1e-12)
    # Negative control: with the bias adapted, the step is not plain SGD.
    params = _params(W0, B0)
    opt = LARS(params, lr=0.5, momentum=0.0, weight_decay=0.3, trust_coefficient=0.1,
               exclude_1d=False)
    _, bias = _run(opt, params, GRADS[:1])
    assert not np.allclose(bias, B0 - 0.5 * GRADS[0][1], rtol=1e-3)


def test_lars_step_size_is_trust_coefficient_times_weight_norm():
    # Without momentum or decay, a layer moves by exactly lr * eta * ||w||.
    params = _params(W0)
    opt = LARS(params, lr=2.0, momentum=0.0, trust_coefficient=0.01, eps=0.0)
    (w1,) = _run(opt, params, [GRADS[0][:1]])
    np.testing.assert_allclose(np.linalg.norm(w1 - W0), 2.0 * 0.01 * np.linalg.norm(W0),
                               rtol=1e-12)


def test_lars_zero_gradient_or_weight_uses_unit_ratio():
    # ||g|| = 0: the ratio falls back to 1 (no division by zero), so only the
    # weight decay moves the weights.
    params = _params(W0)
    opt = LARS(params, lr=0.5, momentum=0.0, weight_decay=0.1, trust_coefficient=0.1)
    (w1,) = _run(opt, params, [(np.zeros_like(W0),)])
    np.testing.assert_allclose(w1, W0 - 0.5 * 0.1 * W0, rtol=1e-12)
    # ||w|| = 0: also 1, so a zero-initialized layer still learns.
    params = _params(np.zeros_like(W0))
    opt = LARS(params, lr=0.5, momentum=0.0, trust_coefficient=0.1)
    (w1,) = _run(opt, params, [GRADS[0][:1]])
    np.testing.assert_allclose(w1, -0.5 * GRADS[0][0], rtol=1e-12)


def test_lars_nesterov():
    params = _params(W0)
    opt = LARS(params, lr=0.5, momentum=0.9, trust_coefficient=0.1, eps=0.0,
               nesterov=True)
    (got,) = _run(opt, params, [g[:1] for g in GRADS])
    w, buf = W0.copy(), None
    for (g,) in (g[:1] for g in GRADS):
        d = 0.1 * np.linalg.norm(w) / np.linalg.norm(g) * g
        buf = d if buf is None else 0.9 * buf + d
        w = w - 0.5 * (d + 0.9 * buf)
    np.testing.assert_allclose(got, w, rtol=1e-6)


# -- LAMB against the paper, in numpy ------------------------------------------


def _lamb_paper(weights, grads, *, lr, betas, eps, weight_decay, clamp=10.0,
                exclude_1d=True):
    """Algorithm 2 of You et al. (2019, "Large Batch Optimization for Deep Learning").

    m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2,  bias-corrected to
    m_hat, v_hat;  r = m_hat / (sqrt(v_hat) + eps) + lambda w;
    w <- w - lr * phi(||w||) / ||r|| * r, phi(z) = min(max(z, 0), clamp).
    An excluded 1-D tensor takes w <- w - lr * m_hat / (sqrt(v_hat) + eps).
    """
    b1, b2 = betas
    weights = [w.copy() for w in weights]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for t, step_grads in enumerate(grads, start=1):
        for i, (w, g) in enumerate(zip(weights, step_grads)):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g**2
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            adam = m_hat / (np.sqrt(v_hat) + eps)
            if exclude_1d and w.ndim == 1:
                weights[i] = w - lr * adam
                continue
            r = adam + weight_decay * w
            phi = np.linalg.norm(w)
            if clamp is not None:
                phi = min(max(phi, 0.0), clamp)
            weights[i] = w - lr * phi / np.linalg.norm(r) * r
    return weights


@pytest.mark.parametrize("n_steps", [1, 2])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("exclude_1d", [True, False])
def test_lamb_matches_paper(n_steps, weight_decay, exclude_1d):
    params = _params(W0, B0)
    opt = LAMB(params, lr=0.1, betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay,
               exclude_1d=exclude_1d)
    got = _run(opt, params, GRADS[:n_steps])
    expected = _lamb_paper([W0, B0], GRADS[:n_steps], lr=0.1, betas=(0.9, 0.99),
                           eps=1e-6, weight_decay=weight_decay, exclude_1d=exclude_1d)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6)


@pytest.mark.parametrize("clamp_value", [10.0, None])
def test_lamb_trust_ratio_clipping(clamp_value):
    big = 10.0 * W0  # ||w|| ~ 36 > 10: the clipped phi differs from the norm
    assert np.linalg.norm(big) > 10.0
    params = _params(big)
    opt = LAMB(params, lr=0.01, weight_decay=0.01, clamp_value=clamp_value)
    (got,) = _run(opt, params, [g[:1] for g in GRADS])
    (expected,) = _lamb_paper([big], [g[:1] for g in GRADS], lr=0.01,
                              betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                              clamp=clamp_value)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The first step moves the layer by lr * phi(||w||): 0.1 clipped, ~0.36 not.
    params = _params(big)
    opt = LAMB(params, lr=0.01, clamp_value=clamp_value)
    (first,) = _run(opt, params, [GRADS[0][:1]])
    phi = 10.0 if clamp_value else np.linalg.norm(big)
    np.testing.assert_allclose(np.linalg.norm(first - big), 0.01 * phi, rtol=1e-9)


def test_lamb_without_bias_correction():
    params = _params(W0)
    opt = LAMB(params, lr=0.1, betas=(0.9, 0.99), bias_correction=False, eps=0.0)
    (got,) = _run(opt, params, [GRADS[0][:1]])
    g = GRADS[0][0]
    r = (0.1 * g) / np.sqrt(0.01 * g**2)  # the raw moments, no 1 - beta^t
    ratio = np.linalg.norm(W0) / np.linalg.norm(r)
    np.testing.assert_allclose(got, W0 - 0.1 * ratio * r, rtol=1e-6)


# -- state, validation ---------------------------------------------------------


@pytest.mark.parametrize("Optimizer, kwargs", [
    (LARS, dict(lr=0.5, momentum=0.9, weight_decay=0.01, trust_coefficient=0.1)),
    (LAMB, dict(lr=0.1, weight_decay=0.01)),
])
def test_state_dict_round_trip_continues_exactly(Optimizer, kwargs):
    params = _params(W0, B0)
    opt = Optimizer(params, **kwargs)
    _run(opt, params, GRADS[:1])
    saved_weights = [p.detach().clone() for p in params]
    saved = pickle.loads(pickle.dumps(opt.state_dict()))

    after_two = _run(opt, params, GRADS[1:])

    fresh = [torch.nn.Parameter(w.clone()) for w in saved_weights]
    resumed = Optimizer(fresh, **{**kwargs, "lr": 123.0})
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == kwargs["lr"]
    np.testing.assert_array_equal(_run(resumed, fresh, GRADS[1:])[0], after_two[0])
    np.testing.assert_array_equal(_run(resumed, fresh, [])[1], after_two[1])
    # Negative control: without the saved state (momentum, moments, step),
    # the second step differs.
    fresh = [torch.nn.Parameter(w.clone()) for w in saved_weights]
    assert not np.allclose(_run(Optimizer(fresh, **kwargs), fresh, GRADS[1:])[0],
                           after_two[0])


@pytest.mark.parametrize("Optimizer, kwargs, match", [
    (LARS, dict(lr=-1.0), "'lr' parameter of LARS"),
    (LARS, dict(momentum=1.0), "'momentum' parameter of LARS"),
    (LARS, dict(weight_decay=-0.1), "'weight_decay'"),
    (LARS, dict(trust_coefficient=0.0), "'trust_coefficient'"),
    (LARS, dict(momentum=0.0, nesterov=True), "needs momentum > 0"),
    (LARS, dict(exclude_1d="yes"), "'exclude_1d'"),
    (LAMB, dict(betas=(0.9, 1.0)), r"'betas\[1\]'"),
    (LAMB, dict(betas=0.9), "pair"),
    (LAMB, dict(eps=-1.0), "'eps'"),
    (LAMB, dict(clamp_value=0.0), "'clamp_value'"),
    (LAMB, dict(lr="fast"), "real number"),
])
def test_invalid_hyperparameters_raise_value_error(Optimizer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Optimizer(_params(W0), **kwargs)


# -- solvers by name -----------------------------------------------------------


def test_solver_names():
    assert SOLVERS.names == [
        "adagrad", "adam", "adamw", "lamb", "lars", "lbfgs", "nadam", "radam",
        "rmsprop", "sgd",
    ]
    assert make_optimizer(torch.nn.Linear(2, 1), _est("lbfgs")) is None
    assert make_optimizer(torch.nn.Linear(2, 1), _est("L-BFGS")) is None


@pytest.mark.parametrize("solver", ["sgd", "adam", "adamw", "adagrad"])
def test_fused_kernel_computes_the_foreach_update(solver):
    torch.manual_seed(0)
    fused_net, foreach_net = torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)
    foreach_net.load_state_dict(fused_net.state_dict())
    initial = [p.detach().clone() for p in fused_net.parameters()]
    fused = make_optimizer(fused_net, _est(solver, learning_rate_init=0.1))
    assert fused.param_groups[0]["fused"] is True
    foreach = make_optimizer(foreach_net, _est(solver, learning_rate_init=0.1))
    for group in foreach.param_groups:
        group["fused"], group["foreach"] = None, True
    for _ in range(5):
        x = torch.randn(16, 8)
        for net, opt in [(fused_net, fused), (foreach_net, foreach)]:
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b, start in zip(fused_net.parameters(), foreach_net.parameters(), initial):
        assert (a - start).abs().max() > 1e-3  # the steps moved the weights
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_foreach_where_torch_has_no_fused_kernel(monkeypatch):
    class NoFused(torch.optim.Adam):
        def __init__(self, params, fused=None, **settings):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be ...")
            super().__init__(params, fused=fused, **settings)

    monkeypatch.setattr(torch.optim, "Adam", NoFused)
    adam = make_optimizer(torch.nn.Linear(2, 1), _est("adam"))
    assert isinstance(adam, NoFused)
    assert adam.param_groups[0]["foreach"] is True and not adam.param_groups[0]["fused"]


def test_sgd_and_adam_unchanged():
    sgd = make_optimizer(torch.nn.Linear(2, 1), _est("sgd", learning_rate_init=0.1))
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["fused"]) == (
        0.1, 0.9, True, True
    )
    no_momentum = make_optimizer(torch.nn.Linear(2, 1), _est("sgd", momentum=0.0))
    assert no_momentum.param_groups[0]["nesterov"] is False
    adam = make_optimizer(torch.nn.Linear(2, 1), _est("adam", beta_1=0.8))
    assert isinstance(adam, torch.optim.Adam)
    group = adam.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["amsgrad"]) == (
        0.001, (0.8, 0.999), 1e-8, False
    )


@pytest.mark.parametrize("solver, cls, expected", [
    ("adamw", torch.optim.AdamW,
     dict(lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05, fused=True)),
    ("nadam", torch.optim.NAdam,
     dict(betas=(0.9, 0.999), weight_decay=0.05, decoupled_weight_decay=True,
          foreach=True)),
    ("radam", torch.optim.RAdam,
     dict(betas=(0.9, 0.999), weight_decay=0.05, decoupled_weight_decay=True,
          foreach=True)),
    ("rmsprop", torch.optim.RMSprop,
     dict(alpha=0.999, momentum=0.9, eps=1e-8, weight_decay=0, foreach=True)),
    ("adagrad", torch.optim.Adagrad, dict(eps=1e-8, weight_decay=0, fused=True)),
    ("lars", LARS, dict(momentum=0.9, weight_decay=0.05, eps=1e-8,
                        trust_coefficient=0.001, exclude_1d=True)),
    ("lamb", LAMB, dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05,
                        clamp_value=10.0)),
])
def test_new_solvers_read_estimator_attributes(solver, cls, expected):
    opt = make_optimizer(torch.nn.Linear(2, 1), _est(solver, weight_decay=0.05))
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.001
    assert {k: group[k] for k in expected} == expected


def test_weight_decay_defaults_to_zero_without_the_attribute():
    for solver in ["adamw", "nadam", "radam", "lars", "lamb"]:
        opt = make_optimizer(torch.nn.Linear(2, 1), _est(solver))
        assert opt.param_groups[0]["weight_decay"] == 0.0, solver


@pytest.mark.parametrize("option, expected", [
    (("lars", {"trust_coefficient": 0.01}), dict(trust_coefficient=0.01, momentum=0.9)),
    (("lars", {"momentum": 0.5, "learning_rate_init": 2.0}),
     dict(momentum=0.5, lr=2.0)),
    ({"name": "adamw", "weight_decay": 0.1, "beta_1": 0.5},
     dict(weight_decay=0.1, betas=(0.5, 0.999))),
    (("lamb", {"clamp_value": None, "epsilon": 1e-6}),
     dict(clamp_value=None, eps=1e-6)),
    (("rmsprop", {"centered": True, "beta_2": 0.9}), dict(centered=True, alpha=0.9)),
    (("adagrad", {"lr_decay": 0.01}), dict(lr_decay=0.01, eps=1e-8)),
    (("sgd", {"momentum": 0.0}), dict(momentum=0.0, nesterov=False)),
    (("nadam", {"momentum_decay": 0.01}), dict(momentum_decay=0.01)),
])
def test_composite_settings_override_estimator_attributes(option, expected):
    opt = make_optimizer(torch.nn.Linear(2, 1), _est(option, weight_decay=0.05))
    group = opt.param_groups[0]
    assert {k: group[k] for k in expected} == expected


def test_unknown_solver_or_setting_lists_the_choices():
    module = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match=(
        "Unknown solver 'lasr'. Valid names are: adagrad, adam, adamw, lamb, lars, "
        "lbfgs, nadam, radam, rmsprop, sgd. Did you mean 'lars'"
    )):
        make_optimizer(module, _est("lasr"))
    with pytest.raises(ValueError, match=(
        r"Unknown setting\(s\) \['trust'\] for solver 'lars'. It takes: epsilon, "
        "exclude_1d, learning_rate_init, momentum, nesterov, trust_coefficient, "
        "weight_decay."
    )):
        make_optimizer(module, _est(("lars", {"trust": 0.1})))
    with pytest.raises(ValueError, match="solver 'lbfgs' takes no settings"):
        make_optimizer(module, _est(("lbfgs", {"m": 10})))
    with pytest.raises(ValueError, match="'trust_coefficient' parameter of LARS"):
        make_optimizer(module, _est(("lars", {"trust_coefficient": -1.0})))


@pytest.mark.parametrize("solver", [n for n in SOLVERS.names if n != "lbfgs"])
def test_apply_hyperparameters_keeps_state_takes_new_values(solver):
    module = torch.nn.Linear(3, 2)
    est = _est(solver, weight_decay=0.01)
    opt = make_optimizer(module, est)
    module(torch.ones(4, 3)).sum().backward()
    opt.step()
    state = copy.deepcopy(opt.state_dict()["state"])
    assert state  # moments / momentum buffers / step counts exist

    est.learning_rate_init = 0.05
    est.epsilon = 1e-7
    est.solver = (solver, {"weight_decay": 0.02}) if solver in (
        "adamw", "nadam", "radam", "lars", "lamb"
    ) else solver
    apply_hyperparameters(opt, est)
    group = opt.param_groups[0]
    assert group["lr"] == 0.05
    if "eps" in group:
        assert group["eps"] == 1e-7
    if solver in ("adamw", "nadam", "radam", "lars", "lamb"):
        assert group["weight_decay"] == 0.02
    kept = opt.state_dict()["state"]
    assert kept.keys() == state.keys()
    for key in state:
        for name, value in state[key].items():
            torch.testing.assert_close(kept[key][name], value, rtol=0, atol=0)


def test_apply_hyperparameters_with_lbfgs_is_a_no_op():
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.3)
    apply_hyperparameters(opt, _est("lbfgs"))
    assert opt.param_groups[0]["lr"] == 0.3


def test_learning_rates_still_importable_from_optim():
    from sklears_neural.core.schedules import LEARNING_RATES as from_schedules

    assert LEARNING_RATES is from_schedules


# -- every solver trains -------------------------------------------------------

X_bc, y_bc = load_breast_cancer(return_X_y=True)
X_bc = torch.tensor(StandardScaler().fit_transform(X_bc), dtype=torch.float32)
y_bc = torch.tensor(y_bc, dtype=torch.float32)

# (learning_rate_init, threshold) per solver. The value checked is the final
# full-batch log-loss after 20 epochs (batch 64, weight_decay=1e-3 where a
# solver reads it) of a 30-16-1 ReLU MLP with He-uniform weights on
# standardized breast_cancer; the untrained loss is ~0.80. Measured over
# seeds 0-99 (torch 2.13 CPU, float32), the threshold is about 1.5x the worst:
#   solver   lr      worst   median  seed 42  threshold
#   sgd      0.05    0.0458  0.0375  0.0327   0.07
#   adam     0.01    0.0423  0.0303  0.0208   0.065
#   adamw    0.01    0.0423  0.0303  0.0208   0.065
#   nadam    0.01    0.0441  0.0307  0.0226   0.065
#   radam    0.01    0.1234  0.0889  0.0709   0.18   (rectified: slow start)
#   rmsprop  0.001   0.0234  0.0099  0.0119   0.035
#   adagrad  0.05    0.0467  0.0351  0.0285   0.07
#   lars     1.0     0.0564  0.0502  0.0472   0.085
#   lamb     0.01    0.0282  0.0125  0.0153   0.045
SOLVER_CASES = {
    "sgd": (0.05, 0.07),
    "adam": (0.01, 0.065),
    "adamw": (0.01, 0.065),
    "nadam": (0.01, 0.065),
    "radam": (0.01, 0.18),
    "rmsprop": (0.001, 0.035),
    "adagrad": (0.05, 0.07),
    "lars": (1.0, 0.085),
    "lamb": (0.01, 0.045),
}


def _bc_loss(module, X, y):
    return F.binary_cross_entropy_with_logits(module(X).squeeze(1), y)


def _train_breast_cancer(solver, learning_rate_init, seed, epochs=20, batch_size=64):
    generator = torch.Generator().manual_seed(seed)
    module = torch.nn.Sequential(
        torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )
    with torch.no_grad():
        for layer in (module[0], module[2]):
            bound = (6.0 / layer.in_features) ** 0.5
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.zero_()
    est = _est(solver, learning_rate_init=learning_rate_init, weight_decay=1e-3)
    opt = make_optimizer(module, est)
    n = X_bc.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            _bc_loss(module, X_bc[index], y_bc[index]).backward()
            opt.step()
    with torch.no_grad():
        return _bc_loss(module, X_bc, y_bc).item()


@pytest.mark.parametrize("solver", sorted(SOLVER_CASES))
def test_every_solver_trains_breast_cancer(solver, global_random_seed):
    learning_rate_init, threshold = SOLVER_CASES[solver]
    loss = _train_breast_cancer(solver, learning_rate_init, global_random_seed)
    assert loss < threshold, (solver, loss)


def test_breast_cancer_thresholds_reject_a_solver_that_does_not_learn(
    global_random_seed,
):
    # Negative control: a rate too small to move the weights stays near the
    # untrained loss (~0.8), far above every threshold.
    loss = _train_breast_cancer("adam", 1e-7, global_random_seed, epochs=2)
    assert loss > 3 * max(threshold for _, threshold in SOLVER_CASES.values())


def _per_tensor(monkeypatch, direct=False):
    """No flat buffers; Optimizer.step every batch unless ``direct``."""
    from sklears_neural.core import trainer as trainer_module

    if not direct:
        monkeypatch.setattr(trainer_module, "direct_step",
                            lambda optimizer, flat=None: None)
    monkeypatch.setattr(trainer_module.FlatParameters, "flatten",
                        classmethod(lambda cls, params, **kwargs: None))


DIRECT_SOLVERS = [
    "adam", ("adam", {"amsgrad": True}), ("adamw", {"weight_decay": 0.05}),
    "sgd", ("sgd", {"momentum": 0.0}), "adagrad",
]


def _small_mlp(solver, learning_rate="constant", **params):
    from sklears_neural import MLPClassifier

    params = {"batch_size": 16, "max_iter": 4, "alpha": 1e-3, "random_state": 0,
              **params}
    return MLPClassifier(hidden_layer_sizes=(9, 5), solver=solver,
                         learning_rate=learning_rate, **params)


def _assert_same_state(a, b, atol=0.0):
    for (_, s), (_, t) in zip(a._optimizer.state.items(), b._optimizer.state.items()):
        assert s.keys() == t.keys()
        for k in s:
            torch.testing.assert_close(s[k], t[k], rtol=0, atol=atol)


@pytest.mark.parametrize("solver", DIRECT_SOLVERS, ids=str)
@pytest.mark.parametrize("learning_rate", ["constant", "cosine"])
def test_direct_fused_step_trains_bit_for_bit_as_optimizer_step(
        solver, learning_rate, monkeypatch):
    """core.optim.direct_step per tensor: the same kernels with the same
    arguments, so the same weights and optimizer state, bit for bit."""
    from sklears_neural.core import trainer as trainer_module
    from sklears_neural.core.optim import direct_step

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 6)), rng.integers(0, 3, 120)
    calls = []

    def counted(optimizer, flat=None):
        step = direct_step(optimizer, flat)
        assert step is not None  # fused kernels on the CPU
        def wrapped():
            calls.append(1)
            return step()
        return wrapped

    _per_tensor(monkeypatch, direct=True)
    monkeypatch.setattr(trainer_module, "direct_step", counted)
    direct = _small_mlp(solver, learning_rate).fit(X, y)
    assert len(calls) == 4 * 8
    _per_tensor(monkeypatch)
    reference = _small_mlp(solver, learning_rate).fit(X, y)
    for a, b in zip(direct.module_.parameters(), reference.module_.parameters()):
        assert torch.equal(a, b)
    _assert_same_state(direct, reference)


@pytest.mark.parametrize("solver", DIRECT_SOLVERS, ids=str)
def test_flat_buffers_train_as_per_tensor_within_1e10(solver, monkeypatch):
    """Parameters, gradients and optimizer state in flat buffers (core.flat),
    the kernel once on the whole buffer: float64 trainings equal the per-tensor
    ones within 1e-10. Not bit for bit: the fused kernels compute a tensor's
    last few elements (past the vector width) apart, one ulp differently."""
    from sklears_neural.core import inference

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 6)), rng.integers(0, 3, 120)
    # A prediction installs the caches' global optimizer hook: the direct step
    # still runs, and counts its steps for the caches as the hook would.
    _small_mlp(solver, max_iter=1).fit(X, y).predict(X)
    steps_before = inference._OPTIMIZER_STEPS[0]
    flat = _small_mlp(solver, precision="float64").fit(X, y)
    assert inference._OPTIMIZER_STEPS[0] - steps_before == 4 * 8
    params = list(flat.module_.parameters())
    # The parameters and the optimizer's state are views of flat buffers.
    assert len({p.untyped_storage().data_ptr() for p in params}) == 1
    for key in flat._optimizer.state[params[0]]:
        assert len({flat._optimizer.state[p][key].untyped_storage().data_ptr()
                    for p in params}) == 1
    if "step" in flat._optimizer.state[params[0]]:
        # The step counters too, each parameter's counting every step.
        steps = [float(flat._optimizer.state[p]["step"]) for p in params]
        assert steps == [32.0] * len(params)
    # The gaps between the views stay zero through training.
    from sklears_neural.core.flat import FlatParameters

    layout = FlatParameters.flatten(params)  # adopts the layout: no copy
    assert layout.data.data_ptr() <= params[0].data_ptr()
    assert float(layout.data.square().sum()) == pytest.approx(
        sum(float(p.detach().square().sum()) for p in params), rel=1e-12)
    _per_tensor(monkeypatch)
    reference = _small_mlp(solver, precision="float64").fit(X, y)
    assert len({p.untyped_storage().data_ptr()
                for p in reference.module_.parameters()}) == len(params)
    for a, b in zip(params, reference.module_.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    _assert_same_state(flat, reference, atol=1e-10)
    np.testing.assert_allclose(flat.loss_curve_, reference.loss_curve_, rtol=1e-12)


@pytest.mark.parametrize("Estimator", ["MLPClassifier", "MLPRegressor"])
def test_flat_training_equals_per_tensor_training_within_1e10(Estimator, monkeypatch):
    """Clipping by norm and by value, an elastic-net penalty, sample weights,
    early stopping and a warm start: float64 trainings on the flat buffers equal
    the per-tensor ones within 1e-10."""
    import sklears_neural

    X, y = load_digits(return_X_y=True)
    X = X[:300] / 16.0
    y = y[:300] if Estimator == "MLPClassifier" else y[:300] / 9.0
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    make = lambda: getattr(sklears_neural, Estimator)(  # noqa: E731
        hidden_layer_sizes=(32, 16), alpha=0.01, l1_ratio=0.3, clip_grad_norm=0.5,
        clip_grad_value=0.2, batch_size=32, max_iter=6, early_stopping=True,
        warm_start=True, tol=0, precision="float64", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        flat = make().fit(X, y, sample_weight=w).fit(X, y)
        _per_tensor(monkeypatch)
        per_tensor = make().fit(X, y, sample_weight=w).fit(X, y)
    for a, b in zip(flat.module_.parameters(), per_tensor.module_.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    np.testing.assert_allclose(flat.loss_curve_, per_tensor.loss_curve_, rtol=1e-10)


def test_direct_step_leaves_other_optimizers_and_hooks_to_step():
    from sklears_neural.core.optim import direct_step

    module = torch.nn.Linear(3, 2)
    assert direct_step(torch.optim.SGD(module.parameters(), lr=0.1)) is None
    assert direct_step(torch.optim.Adam(module.parameters(), foreach=True)) is None
    adam = torch.optim.Adam(module.parameters(), fused=True)
    step = direct_step(adam)
    seen = []
    adam.register_step_post_hook(lambda *args: seen.append(1))
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    step()  # no state yet, and a hook: both need Optimizer.step
    step()
    assert seen == [1, 1]
