"""Prediction: a fast input check, a float64 NumPy plan, torch, ONNX Runtime.

``BaseNeuralEstimator._raw_outputs`` calls :func:`raw_outputs`, which checks
``X`` and runs the fitted module forward one of three ways:

plan
    CPU modules, small batches (see :func:`use_plan`). The module is
    translated once into NumPy steps over float64 copies of its weights
    (:func:`compile_plan`). A row's outputs then depend on the other rows of
    its batch only within float64 rounding (~1e-16), which scikit-learn's
    batch- and order-invariance checks need, and one row costs a few NumPy
    calls instead of a pass through ``nn.Module`` dispatch.
torch
    Larger batches, accelerators, and modules the plan cannot translate: the
    module itself, in its own dtype, under ``torch.inference_mode``, in
    chunks of :data:`PREDICT_CHUNK` rows. A module with a layer the plan does
    not know runs batches of at most :data:`PLAN_MIN_ROWS` rows through
    ``torch.func.functional_call`` with float64 copies of its state instead,
    so the invariance holds for it too; the multiply-add budget, which
    counts ``nn.Linear`` layers only, is not applied to it.
onnxruntime
    ``inference_backend="onnxruntime"``: the graph of ``to_onnx`` in an ONNX
    Runtime session (float32 input).

Whatever runs, the output is a float64 array of raw outputs (logits, or the
regression link's input); the task mixin computes probabilities and labels
from it in float64.

Caching
-------
What a module needs for prediction (the plan, the float64 state, the ONNX
Runtime session) is compiled on first use and kept in a table keyed weakly
by the module, so nothing is added to the estimator's ``__dict__`` or to the
module, and pickling, ``save`` and ``clone`` never see it. An entry is
rebuilt when

- any ``torch.optim`` optimizer has stepped since it was built (torch's
  global step hook counts steps). This matters because torch's *fused*
  optimizers (``fused=True``, which the training core uses where torch has
  them) update parameters without bumping their version counters. An
  unrelated model training in the same process costs a rebuild (~1 ms for a
  small MLP) at the next prediction, never a stale one;
- a parameter or buffer changes: its version counter (in-place edits under
  ``torch.no_grad()``, ``load_state_dict``) or its data pointer (``.data``
  assignments, as L-BFGS's ``vector_to_parameters`` makes, ``.to(dtype)``);
- the layers change: a parameter, buffer or layer assigned anywhere in the
  process (torch's global registration hooks count those; the entry then
  compares its module's submodules and tensors by identity), or a layer
  deleted (the sizes of the submodule tables).

The check costs a few microseconds per call. An in-place edit through
``tensor.data`` (``w.data.mul_(2)``) is the one change none of these sees:
call :func:`clear_cache` after one.

Entries refer to the module's layers and tensors weakly, so a model that is
deleted is freed with everything compiled for it.

Threads
-------
Predictions change nothing any other prediction reads, so any number of
threads may predict at once; :mod:`~sklears_neural.core.modes` says who may
switch the training flags, and how a prediction beside a running fit is
computed (:func:`_outputs_beside_fit`).

The ONNX graph is the exception that is kept: with the onnxruntime backend,
its bytes are stored on the estimator (``_onnx_model_``, with the SHA-256 of
the weights and heads it was exported from), so a pickled or saved model
starts its session without exporting again.
"""

import contextlib
import copy
import threading
import weakref

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import erf, expit
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from sklears_neural.core import modes
from sklears_neural.core.data import (
    as_tensor,
    dense_array,
    dense_chunk_rows,
    sparse_tensor,
    takes_sparse,
)
from sklears_neural.core.inputs import TABULAR
from sklears_neural.core.layers import MLP, AddResidual, ConcatResidual, GatedResidual
from sklears_neural.core.noise import NoiseLayer

__all__ = [
    "BACKENDS",
    "PLAN_MAX_MACS",
    "PLAN_MIN_ROWS",
    "PREDICT_CHUNK",
    "check_input",
    "check_representable",
    "clear_cache",
    "compile_plan",
    "onnx_model",
    "raw_outputs",
    "unknown_layers",
    "use_plan",
]

#: Values of the ``inference_backend`` parameter.
BACKENDS = ("torch", "onnxruntime")

#: Rows per forward pass of the torch and onnxruntime paths: bounds memory.
#: Not smaller: chunks that keep activations in cache gained 4% at 10,000
#: rows with one thread, but each chunk is another parallel region, and with
#: two threads on a loaded machine they made it 3x slower (doc/inference.md).
PREDICT_CHUNK = 65536

#: Batches of at most this many rows always take the float64 plan, whatever
#: the module's width: scikit-learn's invariance checks use 20 rows.
PLAN_MIN_ROWS = 32

#: Larger batches take the plan while ``rows * multiply-adds per row`` stays
#: within this budget. Below it, torch's fixed cost per layer outweighs
#: float64's twice-dearer arithmetic. The measured crossovers lie between
#: 0.3 and 2.5 million multiply-adds depending on the layer shapes
#: (doc/inference.md); at this budget the plan is at worst ~1.4x slower than
#: the torch path, near the budget, for the shapes measured.
PLAN_MAX_MACS = 500_000

_FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


# -- input ---------------------------------------------------------------------


def check_input(estimator, X, dtype=None):
    """``X`` checked as ``validate_data(estimator, X, reset=False)`` checks it.

    A plain 2-D float32/float64 ``ndarray`` with the fitted number of columns
    and finite values, for an estimator fitted without feature names, passes
    with a few attribute reads and one finiteness test (~3-5 us, against
    ~50-100 us for ``validate_data``).
    Anything else (lists, DataFrames, sparse matrices, other dtypes, a wrong
    shape, NaN or inf) goes through ``validate_data``, so errors and warnings
    are scikit-learn's own. Arrays of strings are refused, as scikit-learn's
    own ``predict`` refuses them.

    Parameters
    ----------
    estimator : fitted estimator
        With ``n_features_in_``.
    X : object
        What the caller passed.
    dtype : torch.dtype, default=None
        The dtype the model computes in: values beyond its range are refused
        too (:func:`check_representable`).

    Returns
    -------
    X : ndarray or sparse matrix (CSR or CSC) of float32 or float64
        ``X`` itself when it was already valid.
    """
    state = estimator.__dict__
    if (
        type(X) is np.ndarray
        and X.ndim == 2
        and X.dtype in _FLOAT_DTYPES
        and X.shape[0] > 0
        and X.shape[1] == state.get("n_features_in_")
        and "feature_names_in_" not in state
        and _finite_and_representable(X, dtype)
    ):
        return X
    # "numeric" first, as scikit-learn's own predict: it refuses arrays of
    # strings ("1.5") that a float dtype would silently parse.
    X = validate_data(
        estimator, X, accept_sparse=["csr", "csc"], dtype="numeric", reset=False
    )
    if X.dtype not in _FLOAT_DTYPES:
        X = X.astype(np.float64)
    if dtype is not None:
        check_representable(X, dtype)
    return X


def _finite_and_representable(X, dtype):
    if dtype is None or X.dtype.itemsize <= dtype.itemsize:
        return _all_finite(X)
    limit = torch.finfo(dtype).max
    # NaN propagates into min and max and fails both comparisons, and inf
    # exceeds any limit: one pair of reductions, no temporary, checks both.
    return bool(-limit <= X.min() and X.max() <= limit)


def check_representable(X, dtype):
    """Refuse input beyond the range of the dtype the model computes in.

    A float64 value above float32's largest (~3.4e38) becomes ``inf`` in a
    float32 module, and its outputs ``NaN``; the float64 plan that small
    batches take would compute it. Rather than an answer that depends on
    the batch size, such input gets an error.

    Parameters
    ----------
    X : ndarray or sparse matrix of float32 or float64
        Finite (already checked).
    dtype : torch.dtype
        The module's parameter dtype.

    Raises
    ------
    ValueError
        If a value of ``X`` does not fit in ``dtype``.
    """
    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.size == 0 or values.dtype.itemsize <= dtype.itemsize:
        return
    limit = torch.finfo(dtype).max
    # Two reductions, no temporary the size of X (np.abs would make one).
    largest = max(float(values.max()), -float(values.min()))
    if largest > limit:
        name = str(dtype).replace("torch.", "")
        raise ValueError(
            f"X has values as large as {largest:.3g} in magnitude, beyond the "
            f"largest {name} ({limit:.3g}) this model computes in: they would "
            "overflow to inf and the outputs to NaN. Scale the inputs (e.g. "
            "StandardScaler), or fit with precision='float64'."
        )


def _all_finite(X):
    if X.size <= 2**20:
        return bool(np.isfinite(X).all())
    # One pass without a boolean temporary, as scikit-learn's own check: the
    # sum of finite values is finite unless it overflows, and a non-finite
    # sum only sends X to validate_data, which looks element by element.
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.add.reduce(X, axis=None)))


# -- the float64 plan ----------------------------------------------------------


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
            out += bias
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


# Activations that may overwrite their input: fused into the linear step
# before them, whose output no one else holds (one array and one call less).
_IN_PLACE = {
    nn.ReLU: lambda out: np.maximum(out, 0.0, out=out),
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
    it was built.

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
    """
    try:
        steps = _steps(module)
    except _Untranslatable:
        return None
    return Plan(steps, _macs(module))


def unknown_layers(module):
    """Class names of the layers of ``module`` that the plan has no step for.

    The plan falls back to torch for such a module, and an ONNX export
    failure names them.

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


# -- the per-module cache --------------------------------------------------------


def _walk(module):
    """``(modules, tensors)``: every submodule, and every parameter and buffer."""
    modules, tensors = [], []
    stack = [module]
    while stack:
        m = stack.pop()
        modules.append(m)
        tensors += [t for t in m._parameters.values() if t is not None]
        tensors += [t for t in m._buffers.values() if t is not None]
        stack.extend(child for child in m._modules.values() if child is not None)
    return modules, tensors


# Counters of changes anywhere in the process, kept by torch's global hooks
# (installed with the first entry) and read by every entry:
# _STRUCTURE: a module was given a parameter, buffer or submodule
#   (assignment, register_*, load_state_dict with assign=True, a
#   parametrization). The entry then compares its module by identity.
# _OPTIMIZER_STEPS: an optimizer stepped. Its update may not show in any version
#   counter (fused kernels), so the entry is rebuilt.
_STRUCTURE = [0]
_OPTIMIZER_STEPS = [0]
_WATCHING = []


def _structure_changed(module, name, value):
    _STRUCTURE[0] += 1


def _optimizer_stepped(optimizer, args, kwargs):
    _OPTIMIZER_STEPS[0] += 1


def _watch():
    if not _WATCHING:
        from torch.nn.modules import module as torch_module
        from torch.optim import optimizer as torch_optimizer

        _WATCHING.extend(
            register(_structure_changed)
            for register in (
                torch_module.register_module_parameter_registration_hook,
                torch_module.register_module_buffer_registration_hook,
                torch_module.register_module_module_registration_hook,
            )
        )
        _WATCHING.append(
            torch_optimizer.register_optimizer_step_post_hook(_optimizer_stepped)
        )


def _refs(objects):
    return [weakref.ref(obj) for obj in objects]


def _same(objects, refs):
    return len(objects) == len(refs) and all(
        obj is ref() for obj, ref in zip(objects, refs)
    )


class _Entry:
    """What prediction keeps for one module state (see the module docstring).

    It refers to the module's submodules and tensors only weakly (an entry
    that held them would keep its own weak key, the module, alive forever),
    and remembers their version counters and data pointers and the sizes of
    the submodule tables (a deleted layer fires no registration hook). A
    freed submodule or tensor makes the entry stale, so no identity it was
    built for can be taken over by a new object unnoticed.
    """

    def __init__(self, module):
        self.structure = _STRUCTURE[0]
        self.steps = _OPTIMIZER_STEPS[0]
        modules, tensors = _walk(module)
        self.modules, self.tensors = _refs(modules), _refs(tensors)
        self.state = [(t._version, t.data_ptr()) for t in tensors]
        self.tables = _refs(m for m in modules if m._modules)
        self.sizes = [len(m._modules) for m in modules if m._modules]
        param = next(module.parameters(), None)
        self.device = torch.device("cpu") if param is None else param.device
        self.dtype = torch.float32 if param is None else param.dtype
        self.on_cpu = self.device.type == "cpu"
        self._plan = None
        self._compiled = False
        self.macs = None
        self.state64 = None
        self._module64 = None
        self.session = None
        self.onnx = None  # (head signature, bytes)

    def is_current(self, module):
        """Whether the module holds the tensors, values and layers it was built for."""
        if self.steps != _OPTIMIZER_STEPS[0]:
            return False
        if self.structure != _STRUCTURE[0]:
            # Something somewhere was re-registered: was it in this module?
            modules, tensors = _walk(module)
            if not (_same(modules, self.modules) and _same(tensors, self.tensors)):
                return False
            self.structure = _STRUCTURE[0]
        for ref, (version, pointer) in zip(self.tensors, self.state):
            tensor = ref()
            if tensor is None or tensor._version != version or (
                tensor.data_ptr() != pointer
            ):
                return False
        for ref, size in zip(self.tables, self.sizes):
            table_owner = ref()
            if table_owner is None or len(table_owner._modules) != size:
                return False
        return True

    def training_layers(self):
        """The module's layers that are in training mode."""
        layers = [ref() for ref in self.modules]
        return [m for m in layers if m is not None and m.training]

    def module64(self, module):
        """A float64 copy of ``module`` in evaluation mode, made once."""
        if self._module64 is None:
            self._module64 = copy.deepcopy(module).eval().double()
        return self._module64

    def plan(self, module):
        """The module's :class:`Plan` (``None`` if untranslatable), compiled once."""
        if not self._compiled:
            plan = compile_plan(module)
            # Multiply-adds per row: the plan's cost model (no plan, no model).
            self.macs = None if plan is None else plan.macs
            self._plan = plan
            self._compiled = True
        return self._plan


_CACHE = weakref.WeakKeyDictionary()
# WeakKeyDictionary is not safe under concurrent writes (a thread's insert
# can meet another's removal of a freed key); predictions come from any thread.
_CACHE_LOCK = threading.Lock()


def _entry(module):
    with _CACHE_LOCK:
        entry = _CACHE.get(module)
    if entry is not None and entry.is_current(module):
        return entry
    with _CACHE_LOCK:
        _watch()  # before the snapshot: later changes are counted
    entry = _Entry(module)
    with _CACHE_LOCK:
        _CACHE[module] = entry
    return entry


def clear_cache(estimator):
    """Drop what prediction compiled for ``estimator``'s module.

    Needed only after an in-place edit through ``tensor.data``, which torch's
    version counters do not see; every other change is noticed.

    Parameters
    ----------
    estimator : fitted estimator with ``module_``
    """
    module = estimator.__dict__.get("module_")
    if module is not None:
        with _CACHE_LOCK:
            _CACHE.pop(module, None)


# -- forward passes --------------------------------------------------------------


def _dense(X):
    return X.toarray() if sp.issparse(X) else X


def _tensor(part, entry, dtype=None, keep_sparse=False):
    """Rows of ``X`` as the module's input, in ``dtype`` (the module's if None).

    Sparse rows become a torch sparse CSR tensor where ``keep_sparse`` (a
    module that :func:`~sklears_neural.core.data.takes_sparse`), else dense.
    """
    dtype = entry.dtype if dtype is None else dtype
    if type(part) is np.ndarray and part.flags.c_contiguous and part.flags.writeable:
        # as_tensor without its warnings filter (for read-only input), which
        # costs as much as a small batch's forward pass.
        tensor = torch.from_numpy(part)
        if tensor.dtype == dtype and entry.on_cpu:
            return tensor
        return tensor.to(device=entry.device, dtype=dtype)
    if sp.issparse(part):
        if keep_sparse:
            return sparse_tensor(part, dtype, entry.device)
        return as_tensor(dense_array(part, dtype), dtype, entry.device)
    return as_tensor(part, dtype, entry.device)


def _sparse_chunking(module, X, itemsize):
    """``(X as CSR, rows per chunk, keep_sparse)`` for a forward pass over sparse ``X``.

    A module that takes sparse input gets chunks of :data:`PREDICT_CHUNK`
    rows as sparse tensors; any other gets dense chunks of at most
    :data:`~sklears_neural.core.data.DENSE_CHUNK_BYTES` (``itemsize``
    bytes per value). CSC is converted once: its row slices copy columns.
    Call in the mode the module runs in (:func:`takes_sparse` reads it).
    """
    X = X.tocsr()
    if takes_sparse(module):
        return X, PREDICT_CHUNK, True
    return X, min(PREDICT_CHUNK, dense_chunk_rows(X.shape[1], itemsize)), False


@contextlib.contextmanager
def _evaluating(entry):
    """Evaluation mode for the forward pass, each layer's own mode after it.

    Outside a fit the module already rests in evaluation mode
    (:mod:`~sklears_neural.core.modes`) and this changes nothing. A
    prediction from a callback in the middle of its own thread's fit must
    not leave the rest of the epoch training in evaluation mode (dropout
    off, batch norm on running statistics): the flags go back afterwards.
    Flags are set per layer: ``module.eval()`` walks every submodule (~40 us).
    """
    training = entry.training_layers()
    for m in training:
        m.training = False
    try:
        yield
    finally:
        for m in training:
            m.training = True


def _forward_in_chunks(module, entry, X, dtype, forward):
    """``forward`` over ``X`` in chunks, in evaluation mode, as float64 NumPy.

    Dense chunks of :data:`PREDICT_CHUNK` rows; sparse ``X`` as
    :func:`_sparse_chunking` says. ``forward`` takes a chunk as a tensor of
    ``dtype`` on the module's device.
    """
    step, keep_sparse = PREDICT_CHUNK, False
    chunks = []
    with _evaluating(entry), torch.inference_mode():
        if type(X) is not np.ndarray and sp.issparse(X):
            X, step, keep_sparse = _sparse_chunking(module, X, dtype.itemsize)
        for start in range(0, X.shape[0], step):
            out = forward(_tensor(X[start:start + step], entry, dtype, keep_sparse))
            if out.dtype != torch.float64:
                out = out.double()
            chunks.append((out if entry.on_cpu else out.cpu()).numpy())
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _torch_outputs(module, entry, X):
    """The module itself, in its own dtype."""
    return _forward_in_chunks(module, entry, X, entry.dtype, module)


def _float64_outputs(module, entry, X):
    """A module the plan cannot translate, or float32 overflow: float64 torch."""
    if entry.state64 is None:
        entry.state64 = {
            name: t.detach().double() if t.is_floating_point() else t
            for name, t in [*module.named_parameters(), *module.named_buffers()]
        }
    return _forward_in_chunks(
        module, entry, X, torch.float64,
        lambda inputs: functional_call(module, entry.state64, (inputs,)),
    )


def raw_outputs(estimator, X, forward=None):
    """The module's outputs for ``X`` as float64: ``_raw_outputs`` of the base.

    Parameters
    ----------
    estimator : BaseNeuralEstimator
    X : array-like or sparse matrix of shape (n_samples, n_features)
        Or any input the family's ``_input_kind()`` takes.
    forward : callable or None, default=None
        ``forward(module, inputs)`` instead of the family's ``_forward``
        (e.g. an autoencoder's encoder half for ``transform``).

    Returns
    -------
    ndarray of shape (n_samples, n_outputs_), float64

    Raises
    ------
    NotFittedError
        If the estimator has no ``module_``.
    ValueError
        On invalid ``X`` (scikit-learn's messages), or an unknown
        ``inference_backend``.
    """
    module = estimator.__dict__.get("module_")
    if module is None:
        check_is_fitted(estimator, "module_")
    if forward is not None or estimator._input_kind() is not TABULAR:
        return _dataset_outputs(estimator, module, X, forward)
    # An estimator pickled before the parameter existed has none: "torch".
    backend = estimator.__dict__.get("inference_backend", "torch")
    if backend != "torch":
        if backend == "onnxruntime":
            # float32: the graph's input dtype.
            X = check_input(estimator, X, torch.float32)
            return _onnxruntime_outputs(estimator, module, X)
        raise ValueError(
            f"Unknown inference_backend {backend!r}. Valid names are: "
            f"{', '.join(sorted(BACKENDS))}."
        )
    entry = _entry(module)
    X = check_input(estimator, X, entry.dtype)
    with modes.predicting(module, entry.training_layers) as situation:
        if situation == modes.OTHER_FIT:
            return _outputs_beside_fit(module, X)
        if entry.on_cpu:
            plan = entry.plan(module)
            if plan is None:
                # No cost model for layers the plan does not know (the
                # multiply-adds count only nn.Linear: a conv stack would
                # count as free): float64 torch for the few rows of
                # scikit-learn's invariance checks, the chunked module
                # path for everything else.
                if X.shape[0] <= PLAN_MIN_ROWS:
                    return _float64_outputs(module, entry, X)
            elif use_plan(X.shape[0], entry.macs):
                if type(X) is np.ndarray or not sp.issparse(X):
                    return plan(X)
                return plan.sparse(X)
        outputs = _torch_outputs(module, entry, X)
        if entry.dtype != torch.float64 and not np.isfinite(outputs).all():
            # Overflow in the module's dtype (float32 tops out at 3.4e38) on
            # finite input: compute in float64 as the plan does for small
            # batches, so the answer does not depend on the batch size.
            outputs = _float64_outputs(module, entry, X)
        return outputs


#: Values of input per chunk on the general path: conv and recurrent
#: activations are many times the input, so chunks are smaller than
#: :data:`PREDICT_CHUNK` rows of a table.
DATASET_CHUNK_VALUES = 2**18


def _dataset_outputs(estimator, module, X, forward=None):
    """Outputs for any input kind: the family's dataset, chunked, in evaluation mode.

    The path of every family that is not 2-D rows through its module (and
    of custom ``forward`` calls): no NumPy plan. Batches of at most
    :data:`PLAN_MIN_ROWS` rows on the CPU run a float64 copy of the module,
    so a sample's output does not depend on its batch beyond float64
    rounding (scikit-learn's invariance checks); larger ones run the module
    in its own dtype, in chunks of :data:`DATASET_CHUNK_VALUES` input values.
    """
    backend = estimator.__dict__.get("inference_backend", "torch")
    if backend != "torch":
        raise ValueError(
            f"inference_backend={backend!r} runs 2-D tabular models only; "
            f"{type(estimator).__name__} predicts with inference_backend='torch'."
        )
    if forward is None:
        forward = estimator._forward
    kind = estimator._input_kind()
    entry = _entry(module)
    X = kind.validate(estimator, X, reset=False)
    check_representable(X, entry.dtype)
    with modes.predicting(module, entry.training_layers) as situation:
        if situation == modes.OTHER_FIT:
            # Another thread trains this module and owns its flags: a
            # private float64 copy of the current weights.
            copied = copy.deepcopy(module).eval().double()
            return _chunked_dataset_outputs(copied, kind, X, torch.float64, forward,
                                            entry.device)
        if entry.on_cpu and len(X) <= PLAN_MIN_ROWS:
            return _chunked_dataset_outputs(entry.module64(module), kind, X,
                                            torch.float64, forward, entry.device)
        with _evaluating(entry):
            outputs = _chunked_dataset_outputs(module, kind, X, entry.dtype, forward,
                                               entry.device)
        if entry.dtype != torch.float64 and not np.isfinite(outputs).all():
            outputs = _chunked_dataset_outputs(entry.module64(module), kind, X,
                                               torch.float64, forward, entry.device)
        return outputs


def _chunked_dataset_outputs(module, kind, X, dtype, forward, device):
    data = kind.dataset(X, dtype=dtype, device=device)
    per_sample = max(1, int(np.prod(X.shape[1:])))
    rows = max(1, min(PREDICT_CHUNK, DATASET_CHUNK_VALUES // per_sample))
    if data.sparse:
        rows = min(rows, data.chunks()[0].stop)
    chunks = []
    with torch.inference_mode():
        for start in range(0, data.n_samples, rows):
            inputs, _, _ = data.batch(slice(start, start + rows))
            out = forward(module, inputs)
            chunks.append(out.double().cpu().numpy())
    return _concatenate(chunks)


def _concatenate(chunks):
    """Chunks of outputs in one array; per-step outputs padded to the longest."""
    if len(chunks) == 1:
        return chunks[0]
    if chunks[0].ndim >= 3:
        longest = max(c.shape[1] for c in chunks)
        chunks = [
            c if c.shape[1] == longest
            else np.pad(c, [(0, 0), (0, longest - c.shape[1])] + [(0, 0)] * (c.ndim - 2))
            for c in chunks
        ]
    return np.concatenate(chunks)


def _outputs_beside_fit(module, X):
    """Outputs of a module another thread is training, without disturbing it.

    The fit owns the module's training flags (:mod:`~sklears_neural.core.modes`),
    so the module itself is not run: the float64 plan of its current weights
    is (a private copy in evaluation mode where the plan lacks a layer). The
    weights may be read in the middle of an optimizer step; nothing is
    cached, since they keep changing.
    """
    plan = compile_plan(module)
    sparse = sp.issparse(X)
    if sparse:
        X = X.tocsr()  # row slices of CSC copy columns
    if plan is not None:
        rows = PREDICT_CHUNK  # bounds the activations, as the torch path does
    else:
        copied = copy.deepcopy(module).eval().double()
        device = next(copied.parameters(), torch.empty(0)).device
        rows = dense_chunk_rows(X.shape[1], 8) if sparse else PREDICT_CHUNK
    chunks = []
    for start in range(0, X.shape[0], rows):
        part = X[start:start + rows]
        if plan is not None:
            chunks.append(plan.sparse(part) if sparse else plan(part))
            continue
        with torch.inference_mode():
            inputs = as_tensor(_dense(part), torch.float64, device)
            chunks.append(copied(inputs).cpu().numpy())
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


# -- ONNX Runtime ----------------------------------------------------------------


def onnx_model(estimator, path=None):
    """``estimator.to_onnx(path)``: the ONNX graph, exported once per module state.

    The bytes are kept with the module's cache entry; with
    ``inference_backend="onnxruntime"`` they are also stored on the estimator
    (``_onnx_model_``) with the SHA-256 of what they were exported from, so
    that pickles and saved files keep them.
    """
    from sklears_neural.core import export

    module = estimator.__dict__.get("module_")
    if module is None:
        check_is_fitted(estimator, "module_")
    entry = _entry(module)
    head = export.head_signature(estimator)
    if entry.onnx is None or entry.onnx[0] != head:
        keep = estimator.__dict__.get("inference_backend") == "onnxruntime"
        stored = estimator.__dict__.get("_onnx_model_")
        digest = export.fingerprint(estimator) if keep or stored is not None else None
        if stored is not None and stored.get("sha256") == digest:
            data = stored["model"].tobytes()
        else:
            data = export.to_onnx(estimator)
            if keep:
                estimator._onnx_model_ = {
                    "sha256": digest,
                    "model": np.frombuffer(data, dtype=np.uint8).copy(),
                }
        entry.onnx = (head, data)
    data = entry.onnx[1]
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(
            "inference_backend='onnxruntime' needs the onnxruntime package: "
            "pip install sklears-neural[onnx] (or set inference_backend='torch')."
        ) from exc
    return onnxruntime


def _session(onnxruntime, model_bytes):
    options = onnxruntime.SessionOptions()
    # The thread budget torch has: the two backends compare like for like.
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        model_bytes, options, providers=["CPUExecutionProvider"]
    )


def _onnxruntime_outputs(estimator, module, X):
    entry = _entry(module)
    session = entry.session
    if session is None:
        # Checked before exporting, which takes seconds.
        onnxruntime = _onnxruntime()
        session = entry.session = _session(onnxruntime, onnx_model(estimator))
    step = PREDICT_CHUNK
    if sp.issparse(X):
        # The graph takes dense float32: a bounded number of rows at a time.
        X = X.tocsr()
        step = min(step, dense_chunk_rows(X.shape[1], 4))
    chunks = []
    for start in range(0, X.shape[0], step):
        part = X[start:start + step]
        if sp.issparse(part):
            part = dense_array(part, torch.float32)
        part = np.ascontiguousarray(part, dtype=np.float32)
        (out,) = session.run(["raw_output"], {"X": part})
        chunks.append(out.astype(np.float64))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
