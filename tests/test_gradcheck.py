"""check_gradients: autograd against centred finite differences."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from sklears_neural import MLPClassifier, MLPRegressor
from sklears_neural.core.gradcheck import check_gradients

X, y = load_iris(return_X_y=True)


def _fit(est, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kwargs)


@pytest.mark.parametrize(
    "est, target",
    [
        (MLPClassifier(hidden_layer_sizes=(6,), activation="tanh"), y),
        (MLPClassifier(hidden_layer_sizes=(6, 4), activation="logistic", alpha=0.3,
                       l1_ratio=0.5), y == 2),
        (MLPClassifier(hidden_layer_sizes=(6,), activation="logistic"),
         np.column_stack([y == 0, X[:, 0] > 5.8])),
        (MLPRegressor(hidden_layer_sizes=(6,), activation="tanh"), X[:, 0]),
        # Smooth activations: a ReLU kink within +-step of a coordinate breaks
        # the difference quotient (measured 1.5e-5 on one seed).
        (MLPRegressor(loss="poisson", hidden_layer_sizes=(6,), activation="tanh",
                      alpha=1.0), y),
    ],
    ids=["multiclass-tanh", "binary-elastic-net", "multilabel", "squared", "poisson"],
)
def test_gradients_match_finite_differences(est, target, global_random_seed):
    est.set_params(max_iter=5, random_state=global_random_seed)
    _fit(est, X, target)
    weights = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    result = check_gradients(est, X, target, sample_weight=weights, n_coordinates=60)
    n_params = sum(p.numel() for p in est.module_.parameters())
    assert result.n_checked == min(60, n_params)
    # Measured over seeds 0-15: 1e-8 to 3e-5 (the worst on the squared loss,
    # whose value ~10 makes the quotient's rounding ~1e-9 absolute); a wrong
    # gradient gives > 0.3 (test_a_wrong_gradient_is_caught).
    assert result.max_relative_error < 1e-4
    assert result.max_absolute_error < 1e-7


class _DoubleGradient(torch.autograd.Function):
    """Identity forward, twice the gradient backward: a deliberately wrong op."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


def test_a_wrong_gradient_is_caught():
    clf = _fit(MLPClassifier(hidden_layer_sizes=(4,), activation="tanh", max_iter=5,
                             random_state=0), X, y)
    # An instance attribute survives the copy check_gradients works on.
    clf._mean_loss = lambda output, target: MLPClassifier._mean_loss(
        clf, _DoubleGradient.apply(output), target
    )
    result = check_gradients(clf, X, y, n_coordinates=1000)
    # The loss term's gradient doubles; only the penalty's part stays right.
    assert result.max_relative_error > 0.3


def test_estimator_is_left_unchanged_and_errors_are_clear():
    clf = _fit(MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0), X, y)
    before = [p.detach().clone() for p in clf.module_.parameters()]
    check_gradients(clf, X, y)
    assert all(torch.equal(a, b) for a, b in zip(before, clf.module_.parameters()))
    assert next(clf.module_.parameters()).dtype == torch.float32
    with pytest.raises(NotFittedError):
        check_gradients(MLPClassifier(), X, y)
    with pytest.raises(ValueError, match="step"):
        check_gradients(clf, X, y, step=0)
