"""The MLP family's float64 NumPy plan: its prediction for small CPU batches.

``_BaseMLP._prediction_plan`` returns :func:`compile_plan` of its module,
and :func:`sklears_neural.core.inference.raw_outputs` runs that
:class:`Plan` instead of the module for batches that :func:`use_plan`
accepts (CPU modules only). The module is translated once per weight state
into NumPy steps over float64 copies of its weights:

- a row's outputs then depend on the other rows of its batch only within
  float64 rounding (~1e-16), which scikit-learn's batch- and
  order-invariance checks need (float32 kernels round differently with the
  batch's shape, ~1e-7);
- one row costs a few NumPy calls instead of a pass through ``nn.Module``
  dispatch (~4x faster than the float32 module for one row).

Larger batches run the module itself (``inference.py``), where float64's
twice-dearer arithmetic stops paying: the cost model is
:func:`use_plan`, with the measurements in ``doc/inference.md``.

The plan knows the layers an MLP can hold (:func:`compile_plan` lists
them); a module with any other layer gets no plan (``None``), and
prediction treats it as a family without one. :func:`unknown_layers` names
what is missing.
"""

import copy

import numpy as np
import torch
from scipy.special import erf, expit
from torch import nn
from torch.nn.utils import parametrize

from sklears_neural.core.data import dense_chunk_rows
from sklears_neural.core.layers import MLP, AddResidual, ConcatResidual, GatedResidual
from sklears_neural.core.noise import NoiseLayer

__all__ = [
    "PLAN_MAX_MACS",
    "PLAN_MIN_ROWS",
    "Plan",
    "compile_plan",
    "unknown_layers",
    "use_plan",
]

#: Batches of at most this many rows always take the float64 plan, whatever
#: the module's width: scikit-learn's invariance checks use 20 rows. A module
#: without a plan runs such batches through a float64 copy of itself.
PLAN_MIN_ROWS = 32

#: Larger batches take the plan while ``rows * multiply-adds per row`` stays
#: within this budget. Below it, torch's fixed cost per layer outweighs
#: float64's twice-dearer arithmetic. The measured crossovers lie between
#: 0.3 and 2.5 million multiply-adds depending on the layer shapes
#: (doc/inference.md); at this budget the plan is at worst ~1.4x slower than
#: the torch path, near the budget, for the shapes measured.
PLAN_MAX_MACS = 500_000


class _Untranslatable(Exception):
    """A layer the plan has no NumPy step for; the caller falls back to torch."""


def _float64(tensor):
    """A float64 NumPy copy (never a view of the module's memory)."""
    return tensor.detach().to(device="cpu", dtype=torch.float64, copy=True).numpy()


def _tensor64(module, name):
    """``module.<name>`` in float64, computing a parametrization in float64 too.

    A parametrized tensor (spectral normalization) is recomputed from
    float64 copies of its original and buffers, in evaluation mode (no
    power iteration), as the module computes it in float64.
    """
    if parametrize.is_parametrized(module, name):
        chain = copy.deepcopy(module.parametrizations[name]).double().eval()
        with torch.no_grad():
            return _float64(chain())
    tensor = getattr(module, name)
    return None if tensor is None else _float64(tensor)


def _linear(m, then=None):
    """``x @ W.T + b``, then the in-place activation ``then`` on the fresh result.

    ``x`` is ``(n_samples, d_in)``, or one row as a vector ``(d_in,)``: then
    ``np.dot(W, x)`` (a matrix-vector product, ~20% faster for one row than
    a one-row matrix product). ``W.T`` is a transposed view: BLAS reads it
    in place, as fast as a transposed copy.

    The step's ``sparse`` attribute takes a scipy sparse ``x`` instead and
    multiplies it by the dense weights, as scikit-learn's
    ``safe_sparse_dot`` does (the plan's first step, on sparse input).
    """
    weight = np.ascontiguousarray(_tensor64(m, "weight"))  # (d_out, d_in)
    bias = _tensor64(m, "bias")
    # W.T C-ordered, made at the first sparse batch: scipy copies a
    # transposed view into C order at every product.
    transposed = []

    def linear(x):
        out = np.dot(weight, x) if x.ndim == 1 else x @ weight.T
        if bias is not None:
            np.add(out, bias, out=out)  # a third cheaper than +=
        if then is not None:
            then(out)
        return out

    def sparse_linear(x):
        if not transposed:
            transposed.append(np.ascontiguousarray(weight.T))  # (d_in, d_out)
        out = np.asarray(x @ transposed[0], dtype=np.float64)
        if bias is not None:
            out += bias
        if then is not None:
            then(out)
        return out

    linear.sparse = sparse_linear
    return linear


_ZERO = np.zeros((), dtype=np.float64)

# Activations that may overwrite their input: fused into the linear step
# before them, whose output no one else holds (one array and one call less).
_IN_PLACE = {
    # Against a 0-d array: a Python 0.0 is converted at every call.
    nn.ReLU: lambda out: np.maximum(out, _ZERO, out=out),
    nn.Tanh: lambda out: np.tanh(out, out=out),
    nn.Sigmoid: lambda out: expit(out, out=out),
}


def _sequence(children):
    steps, i = [], 0
    while i < len(children):
        child = children[i]
        after = type(children[i + 1]) if i + 1 < len(children) else None
        if (
            parametrize.type_before_parametrizations(child) is nn.Linear
            and after in _IN_PLACE
        ):
            steps.append(_linear(child, then=_IN_PLACE[after]))
            i += 2
        else:
            steps += _steps(child)
            i += 1
    return steps


def _batch_norm(m):
    if not m.track_running_stats or m.running_mean is None:
        # Evaluation then normalizes with the batch's own statistics.
        raise _Untranslatable(type(m).__name__)
    # torch's CPU kernel in evaluation: x * alpha + beta with these.
    alpha = 1.0 / np.sqrt(_float64(m.running_var) + m.eps)
    if m.affine:
        alpha = alpha * _tensor64(m, "weight")
    beta = -_float64(m.running_mean) * alpha
    if m.affine:
        beta = beta + _tensor64(m, "bias")
    return lambda x: x * alpha + beta


def _layer_norm(m):
    if len(m.normalized_shape) != 1:
        raise _Untranslatable(type(m).__name__)
    weight, bias, eps = _tensor64(m, "weight"), _tensor64(m, "bias"), m.eps

    def layer_norm(x):
        centered = x - x.mean(axis=-1, keepdims=True)
        var = np.mean(centered * centered, axis=-1, keepdims=True)  # biased, as torch
        out = centered * (1.0 / np.sqrt(var + eps))
        if weight is not None:
            out *= weight
        if bias is not None:
            out += bias
        return out

    return layer_norm


# torch's SELU constants (aten/src/ATen/native/Activation.cpp).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_GELU_TANH_BETA = np.sqrt(2.0) * (2.0 / np.sqrt(np.pi)) * 0.5
_SQRT_HALF = np.sqrt(0.5)


def _leaky_relu(m):
    slope = float(m.negative_slope)
    return lambda x: np.where(x > 0, x, x * slope)


def _prelu(m):
    slope = _tensor64(m, "weight")  # (1,) or (n_units,): broadcasts over rows
    return lambda x: np.where(x > 0, x, x * slope)


def _elu(m):
    alpha = float(m.alpha)
    return lambda x: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _selu(m):
    return lambda x: _SELU_SCALE * np.where(
        x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))
    )


def _gelu(m):
    if m.approximate == "tanh":
        return (
            lambda x: 0.5 * x * (1.0 + np.tanh(_GELU_TANH_BETA * (x + 0.044715 * x**3)))
        )
    return lambda x: x * 0.5 * (1.0 + erf(x * _SQRT_HALF))


def _softplus(m):
    beta, threshold = float(m.beta), float(m.threshold)
    # torch: x where beta * x > threshold, else log1p(exp(beta * x)) / beta.
    return lambda x: np.where(
        x * beta > threshold, x, np.logaddexp(0.0, x * beta) / beta
    )


_STEPS = {
    nn.Linear: _linear,
    nn.BatchNorm1d: _batch_norm,
    nn.LayerNorm: _layer_norm,
    nn.Identity: lambda m: None,
    nn.Dropout: lambda m: None,  # the identity in evaluation
    nn.ReLU: lambda m: (lambda x: np.maximum(x, 0.0)),
    nn.Sigmoid: lambda m: expit,
    nn.Tanh: lambda m: np.tanh,
    nn.LeakyReLU: _leaky_relu,
    nn.PReLU: _prelu,
    nn.ELU: _elu,
    nn.SELU: _selu,
    nn.GELU: _gelu,
    nn.SiLU: lambda m: (lambda x: x * expit(x)),
    nn.Mish: lambda m: (lambda x: x * np.tanh(np.logaddexp(0.0, x))),
    nn.Softplus: _softplus,
}


def _run(steps, x):
    for step in steps:
        x = step(x)
    return x


def _residual(block):
    pre = [] if block.noise is None else _steps(block.noise)
    body = _steps(block.body)
    kind = type(block)
    if kind is ConcatResidual:

        def concat(x):
            x = _run(pre, x)
            return np.concatenate([x, _run(body, x)], axis=-1)

        return concat
    projection = _steps(block.projection)
    if kind is AddResidual:

        def add(x):
            x = _run(pre, x)
            return _run(projection, x) + _run(body, x)

        return add
    gate = _steps(block.gate)

    def gated(x):
        x = _run(pre, x)
        g = expit(_run(gate, x))
        return g * _run(body, x) + (1.0 - g) * _run(projection, x)

    return gated


def _steps(module):
    """The NumPy steps of ``module`` in evaluation mode.

    Raises
    ------
    _Untranslatable
        For a layer without a step (any class not listed, subclasses
        included: they may override ``forward``).
    """
    kind = parametrize.type_before_parametrizations(module)
    if kind is nn.Sequential:
        return _sequence(list(module))
    if kind is MLP:
        # MLP.forward in evaluation is layers(x) (checkpointing is training-only).
        return _steps(module.layers)
    if kind in (AddResidual, ConcatResidual, GatedResidual):
        return [_residual(module)]
    if isinstance(module, NoiseLayer) and kind.forward is NoiseLayer.forward:
        return []  # NoiseLayer.forward is the identity in evaluation
    translate = _STEPS.get(kind)
    if translate is None:
        raise _Untranslatable(kind.__name__)
    step = translate(module)
    return [] if step is None else [step]


class Plan:
    """A module's forward pass in evaluation mode, as float64 NumPy steps.

    Built by :func:`compile_plan`; the weights are float64 copies taken when
    it was built. What prediction uses of it (the protocol of a family's
    ``_prediction_plan``): calling it on a dense batch, :meth:`sparse` on a
    sparse one, and :attr:`macs` for :func:`use_plan`.

    Attributes
    ----------
    steps : list of callable
        ``x -> x`` on ``(n_samples, width)`` float64 arrays.
    macs : int
        Multiply-adds per row of the linear layers (the cost model of
        :func:`use_plan`).
    """

    def __init__(self, steps, macs):
        self.steps = steps
        self.macs = macs

    def __call__(self, X):
        """Outputs for ``X`` (dense, 2-D), as a new float64 array."""
        x = np.asarray(X, dtype=np.float64)
        if x.shape[0] == 1:  # every step also takes one row as a vector
            out = _run(self.steps, x[0])[None, :]
        else:
            out = _run(self.steps, x)
        return out.copy() if out.base is X or out is X else out

    def sparse(self, X):
        """Outputs for a scipy sparse ``X`` (2-D), as a new float64 array.

        ``X`` is multiplied by the first linear layer's weights as it is;
        where the plan starts with another step (a residual block), it is
        made dense a bounded number of rows at a time.
        """
        first = getattr(self.steps[0], "sparse", None) if self.steps else None
        if first is not None:
            return _run(self.steps[1:], first(X))
        X = X.tocsr()
        step = dense_chunk_rows(X.shape[1], 8)
        parts = [self(X[start:start + step].toarray())
                 for start in range(0, X.shape[0], step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def compile_plan(module):
    """Translate ``module`` into a :class:`Plan`, or ``None`` if a layer has no step.

    Covered: ``nn.Sequential``, :class:`~sklears_neural.core.layers.MLP`,
    ``nn.Linear`` (spectral-normalized too), ``BatchNorm1d`` with running
    statistics, ``LayerNorm`` over the last dimension, the residual blocks
    (add, concat, gated), every activation of
    :data:`~sklears_neural.core.resolve.ACTIVATIONS`, and dropout, noise
    layers and ``nn.Identity`` (the identity in evaluation).

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    Plan or None
        ``None`` when a layer has no step (:func:`unknown_layers` names it):
        prediction then runs the module as for a family without a plan.
    """
    try:
        steps = _steps(module)
    except _Untranslatable:
        return None
    return Plan(steps, _macs(module))


def unknown_layers(module):
    """Class names of the layers of ``module`` that the plan has no step for.

    :func:`compile_plan` gives no plan for such a module (it predicts
    through torch), and an ONNX export failure names them.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    list of str
        Sorted; empty when the plan covers every layer.
    """
    names, stack = set(), [module]
    while stack:
        m = stack.pop()
        kind = parametrize.type_before_parametrizations(m)
        if kind in (nn.Sequential, MLP, AddResidual, ConcatResidual, GatedResidual):
            stack.extend(child for child in m.children() if child is not None)
        elif not (
            kind in _STEPS
            or (isinstance(m, NoiseLayer) and kind.forward is NoiseLayer.forward)
        ):
            names.add(kind.__name__)
    return sorted(names)


def _macs(module):
    return sum(
        m.in_features * m.out_features
        for m in module.modules()
        if isinstance(m, nn.Linear)
    )


def use_plan(n_rows, macs):
    """Whether a batch of ``n_rows`` takes the float64 plan (CPU modules).

    Parameters
    ----------
    n_rows : int
    macs : int
        Multiply-adds per row of the module's linear layers.

    Returns
    -------
    bool
        ``n_rows <= PLAN_MIN_ROWS`` or ``n_rows * macs <= PLAN_MAX_MACS``.
    """
    return n_rows <= PLAN_MIN_ROWS or n_rows * macs <= PLAN_MAX_MACS

