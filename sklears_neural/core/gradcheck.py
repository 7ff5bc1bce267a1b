"""Compare an estimator's analytic gradients with finite differences."""

import copy
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core.data import ArrayData

__all__ = ["GradientCheck", "check_gradients"]

# Gradients below this are compared on an absolute scale (see GradientCheck).
_FLOOR = 1e-4


@dataclass(frozen=True)
class GradientCheck:
    """Result of :func:`check_gradients`.

    Attributes
    ----------
    max_relative_error : float
        ``max |g - d| / max(|g|, |d|, 1e-4)`` over the checked coordinates,
        ``g`` the autograd gradient and ``d`` the centred difference. The
        floor keeps coordinates with near-zero gradients, where the
        difference quotient's rounding noise (~1e-10) dominates, from
        inflating the ratio.
    max_absolute_error : float
        ``max |g - d|``.
    n_checked : int
        Number of parameter coordinates compared.
    """

    max_relative_error: float
    max_absolute_error: float
    n_checked: int


def check_gradients(estimator, X, y, *, sample_weight=None, n_coordinates=200,
                    step=1e-6, random_state=0):
    """Check a fitted estimator's training gradients against finite differences.

    The estimator's objective (loss plus weight penalty, sample weights
    included) is evaluated in float64 on a copy of its module in evaluation
    mode (dropout and noise off, so the objective is deterministic); the
    estimator itself is not changed.

    Parameters
    ----------
    estimator : fitted BaseNeuralEstimator
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
    sample_weight : array-like of shape (n_samples,), default=None
    n_coordinates : int, default=200
        Parameter coordinates to compare, drawn at random; all of them if
        the module has fewer.
    step : float, default=1e-6
        Half-width ``h`` of the centred difference ``(f(w+h) - f(w-h)) / 2h``.
    random_state : int, default=0
        Seeds the choice of coordinates.

    Returns
    -------
    GradientCheck

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklears_neural import MLPClassifier, check_gradients
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    >>> import warnings; warnings.simplefilter("ignore")
    >>> clf = clf.fit(X, y)
    >>> bool(check_gradients(clf, X, y).max_relative_error < 1e-5)
    True
    """
    check_is_fitted(estimator)
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}.")
    probe = copy.deepcopy(estimator)
    X, targets, sample_weight = probe._validate_training_data(
        X, y, sample_weight, reset=False, incremental=True, classes=None
    )
    module = probe.module_.to(device="cpu", dtype=torch.float64).eval()
    data = ArrayData(X, targets, sample_weight, dtype=torch.float64,
                     device=torch.device("cpu"),
                     target_dtype=probe._target_dtype(torch.float64))
    inputs, target, weight = data.all()
    objective = probe._objective(module)
    params = [p for p in module.parameters() if p.requires_grad]

    loss = objective(module, inputs, target, weight)
    analytic = torch.autograd.grad(loss, params)

    sizes = [p.numel() for p in params]
    total = sum(sizes)
    rng = np.random.RandomState(random_state)
    flat_indices = (
        np.arange(total) if total <= n_coordinates
        else np.sort(rng.choice(total, n_coordinates, replace=False))
    )
    offsets = np.cumsum([0] + sizes)
    errors_abs, errors_rel = [], []
    with torch.no_grad():
        for flat in flat_indices:
            k = int(np.searchsorted(offsets, flat, side="right") - 1)
            param, index = params[k].view(-1), int(flat - offsets[k])
            original = param[index].item()
            param[index] = original + step
            upper = objective(module, inputs, target, weight).item()
            param[index] = original - step
            lower = objective(module, inputs, target, weight).item()
            param[index] = original
            numeric = (upper - lower) / (2 * step)
            exact = analytic[k].view(-1)[index].item()
            gap = abs(exact - numeric)
            errors_abs.append(gap)
            errors_rel.append(gap / max(abs(exact), abs(numeric), _FLOOR))
    return GradientCheck(
        max_relative_error=float(max(errors_rel)),
        max_absolute_error=float(max(errors_abs)),
        n_checked=len(flat_indices),
    )
