"""The written-out training step equals autograd's, and steps aside where it must."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from sklears_neural import MLPClassifier, MLPRegressor
from sklears_neural.core.fused import FusedMLPStep
from sklears_neural.core.layers import MLP
from sklears_neural.core.precision import precision_policy

X_digits, y_digits = load_digits(return_X_y=True)
X_digits = X_digits[:300] / 16.0
y_digits = y_digits[:300]
X_reg, y_reg = load_diabetes(return_X_y=True)
X_reg = StandardScaler().fit_transform(X_reg)[:300]
y_reg = ((y_reg - y_reg.mean()) / y_reg.std())[:300]


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def _targets(kind, rng, n):
    if kind == "multiclass":
        return torch.from_numpy(rng.randint(0, 4, n)), "softmax_cross_entropy", 4
    if kind == "binary":
        return torch.from_numpy(rng.randint(0, 2, (n, 1))).double(), "logistic_cross_entropy", 1
    if kind == "multilabel":
        return torch.from_numpy(rng.randint(0, 2, (n, 3))).double(), "logistic_cross_entropy", 3
    return torch.from_numpy(rng.randn(n, 2)), "squared_error", 2


def _autograd_objective(est_class, kind, module, X, y, w, alpha, l1_ratio):
    est = est_class(alpha=alpha, l1_ratio=l1_ratio)
    est.module_ = module
    if est_class is MLPClassifier:
        est._is_multiclass = lambda: kind == "multiclass"
    else:
        est.out_activation_ = "identity"
    return est._objective()(module, X, y, w)


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "squared"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("alpha, l1_ratio", [(0.0, 0.0), (0.3, 0.0), (0.3, 0.4)])
def test_gradients_equal_autograd(activation, kind, weighted, alpha, l1_ratio):
    rng = np.random.RandomState(0)
    n = 37
    y, loss_kind, n_out = _targets(kind, rng, n)
    torch.manual_seed(0)
    module = MLP(5, (7, 6), n_out, activation, weight_init="xavier_uniform").double()
    X = torch.from_numpy(rng.randn(n, 5))
    w = torch.from_numpy(rng.rand(n) * 2) if weighted else None
    est_class = MLPRegressor if kind == "squared" else MLPClassifier

    loss = _autograd_objective(est_class, kind, module, X, y, w, alpha, l1_ratio)
    loss.backward()
    expected = [p.grad.clone() for p in module.parameters()]
    for p in module.parameters():
        p.grad = None

    penalized = [lin.weight for lin in module.linears]
    step = FusedMLPStep.for_module(module, loss_kind, penalized=penalized, alpha=alpha,
                                   l1_ratio=l1_ratio)
    got_loss = step(X, y, w)
    torch.testing.assert_close(got_loss, loss.detach(), rtol=1e-12, atol=1e-14)
    for p, grad in zip(module.parameters(), expected):
        assert grad.abs().max() > 1e-6  # far above the tolerance below
        torch.testing.assert_close(p.grad, grad, rtol=1e-10, atol=1e-13)
    # A shorter batch reuses the buffers; the result is that batch's alone.
    first = [p.grad.clone() for p in module.parameters()]
    step(X[:5], y[:5], None if w is None else w[:5])
    assert any(not torch.equal(a, p.grad) for a, p in zip(first, module.parameters()))


@pytest.mark.parametrize("options", [
    {"dropout": 0.1}, {"batch_norm": True}, {"layer_norm": True}, {"residual": "add"},
    {"noise": "gaussian"}, {"spectral_norm": True}, {"gradient_checkpointing": True},
    {"activation": "gelu"}, {"precision": "mixed"},
])
def test_autograd_runs_what_the_step_does_not_cover(options):
    est = _fit(MLPClassifier((8,), max_iter=1, random_state=0, **options),
               X_digits, y_digits)
    assert est._train_step(precision_policy(est.precision, torch.device("cpu"))) is None


def test_poisson_loss_runs_through_autograd():
    est = _fit(MLPRegressor(hidden_layer_sizes=(8,), loss="poisson", max_iter=1, random_state=0),
               X_reg, np.abs(y_reg))
    assert est._train_step(precision_policy("float32", torch.device("cpu"))) is None
    plain = _fit(MLPRegressor(hidden_layer_sizes=(8,), max_iter=1, random_state=0), X_reg, y_reg)
    assert plain._train_step(precision_policy("float32", torch.device("cpu"))) is not None


def _both_ways(est, X, y):
    fused = _fit(est.set_params(precision="float64"), X, y)
    autograd = est.__class__(**est.get_params())
    autograd._use_fused_step = False
    _fit(autograd, X, y)
    return fused, autograd


@pytest.mark.parametrize("est, X, y", [
    (MLPClassifier((16, 8), solver="adam", batch_size=64, max_iter=5, alpha=1e-3,
                   random_state=0), X_digits, y_digits),
    (MLPClassifier((16,), solver="sgd", batch_size=50, max_iter=5, activation="tanh",
                   clip_grad_norm=0.5, class_weight="balanced", random_state=0),
     X_digits, y_digits),
    (MLPClassifier((16,), solver="adamw", batch_size=70, max_iter=5, l1_ratio=0.5,
                   alpha=0.1, random_state=0), X_digits, y_digits % 2),
    (MLPRegressor(hidden_layer_sizes=(16,), activation="logistic", batch_size=64, max_iter=5,
                  clip_grad_value=0.01, random_state=0), X_reg, y_reg),
])
def test_training_equals_autograd_training(est, X, y):
    fused, autograd = _both_ways(est, X, y)
    assert fused.n_iter_ == autograd.n_iter_ == 5
    for a, b in zip(fused.module_.parameters(), autograd.module_.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fused.loss_curve_, autograd.loss_curve_, rtol=1e-10)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_l2_folded_into_the_weight_gradient_trains_as_before_within_1e10(
        Estimator, weighted, monkeypatch):
    """addmm(W, g.T, a, beta=alpha/n) vs mm then the penalty's own pass."""
    X, y = load_digits(return_X_y=True)
    X = X[:400] / 16.0
    y = y[:400] if Estimator is MLPClassifier else y[:400] / 9.0
    fit_params = {}
    if weighted:
        fit_params["sample_weight"] = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    make = lambda: Estimator(hidden_layer_sizes=(32, 16), alpha=0.1,  # noqa: E731
                             batch_size=32, max_iter=10, tol=0, precision="float64",
                             random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        folded = make().fit(X, y, **fit_params)
        original_init = FusedMLPStep.__init__

        def unfolded_init(self, *args, **kwargs):
            original_init(self, *args, **kwargs)
            assert self._fold_l2
            self._fold_l2 = False

        monkeypatch.setattr(FusedMLPStep, "__init__", unfolded_init)
        unfolded = make().fit(X, y, **fit_params)
    for a, b in zip(folded.module_.parameters(), unfolded.module_.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    np.testing.assert_allclose(folded.loss_curve_, unfolded.loss_curve_, rtol=1e-12)
