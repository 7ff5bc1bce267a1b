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
    not know runs its small batches through ``torch.func.functional_call``
    with float64 copies of its state instead, so the invariance holds for it
    too.
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

The ONNX graph is the exception that is kept: with the onnxruntime backend,
its bytes are stored on the estimator (``_onnx_model_``, with the SHA-256 of
the weights and heads it was exported from), so a pickled or saved model
starts its session without exporting again.
"""

import contextlib
import copy
import weakref

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import erf, expit
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from sklears_neural.core.data import as_tensor
from sklears_neural.core.layers import MLP, AddResidual, ConcatResidual, GatedResidual
from sklears_neural.core.noise import NoiseLayer

__all__ = [
    "BACKENDS",
    "PLAN_MAX_MACS",
    "PLAN_MIN_ROWS",
    "PREDICT_CHUNK",
    "check_input",
    "clear_cache",
    "compile_plan",
    "labels_from_outputs",
    "labels_from_probabilities",
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


def check_input(estimator, X):
    """``X`` checked as ``validate_data(estimator, X, reset=False)`` checks it.

    A plain 2-D float32/float64 ``ndarray`` with the fitted number of columns
    and finite values, for an estimator fitted without feature names, passes
    with a few attribute reads and one finiteness test (~3-5 us, against
    ~50-100 us for ``validate_data``).
    Anything else (lists, DataFrames, sparse matrices, other dtypes, a wrong
    shape, NaN or inf) goes through ``validate_data``, so errors and warnings
    are scikit-learn's own.

    Parameters
    ----------
    estimator : fitted estimator
        With ``n_features_in_``.
    X : object
        What the caller passed.

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
        and _all_finite(X)
    ):
        return X
    return validate_data(
        estimator,
        X,
        accept_sparse=["csr", "csc"],
        dtype=(np.float64, np.float32),
        reset=False,
    )


def _all_finite(X):
    if X.size <= 2**20:
        return bool(np.isfinite(X).all())
    # One pass without a boolean temporary, as scikit-learn's own check: the
    # sum of finite values is finite unless it overflows, and a non-finite
    # sum only sends X to validate_data, which looks element by element.
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.add.reduce(X, axis=None)))


def labels_from_probabilities(binarizer, probabilities):
    """``binarizer.inverse_transform(probabilities)`` without its overhead.

    ``LabelBinarizer.inverse_transform`` spends ~100 us on checks per call,
    more than a one-row forward pass. This applies the same rules: the
    first argmax for multiclass, ``p > threshold`` for binary and
    multilabel targets (``threshold`` halfway between ``neg_label`` and
    ``pos_label``), integer indicators for multilabel.

    Parameters
    ----------
    binarizer : fitted LabelBinarizer
    probabilities : ndarray of shape (n_samples,) or (n_samples, n_columns)

    Returns
    -------
    ndarray
        What ``inverse_transform`` returns; a binarizer fitted on sparse
        targets (which returns a sparse matrix) goes through it.
    """
    if binarizer.sparse_input_ or not isinstance(probabilities, np.ndarray):
        return binarizer.inverse_transform(probabilities)
    classes = binarizer.classes_
    kind = binarizer.y_type_
    if kind == "multiclass":
        return classes[np.argmax(probabilities, axis=1)]
    threshold = (binarizer.pos_label + binarizer.neg_label) / 2.0
    if kind == "multilabel-indicator":
        return (probabilities > threshold).astype(np.intp)
    if kind == "binary" and probabilities.ndim == 1:
        if len(classes) == 1:
            return np.repeat(classes[0], len(probabilities))
        return classes[(probabilities > threshold).astype(np.intp)]
    return binarizer.inverse_transform(probabilities)


def labels_from_outputs(binarizer, outputs):
    """Labels from raw outputs, skipping the probabilities where the rule allows.

    Softmax and the logistic function are increasing: the first argmax of
    the logits is the class of the first argmax of the probabilities, and
    ``logit > 0`` is ``p > 0.5``, except where rounding ties two
    probabilities whose logits differ by less than one unit in the last
    place. ``predict`` then skips a float64 softmax (~2 ms per 10,000 rows
    of 10 classes, ~12 us for one row).

    Parameters
    ----------
    binarizer : fitted LabelBinarizer
    outputs : ndarray of shape (n_samples, n_outputs)
        Logits.

    Returns
    -------
    ndarray or None
        ``None`` when the rule needs the probabilities: labels fitted on
        sparse targets, or a binarizer whose threshold is not 0.5.
    """
    if binarizer.sparse_input_ or (binarizer.neg_label, binarizer.pos_label) != (0, 1):
        return None
    classes = binarizer.classes_
    kind = binarizer.y_type_
    if kind == "multiclass":
        return classes[np.argmax(outputs, axis=1)]
    if kind == "multilabel-indicator":
        return (outputs > 0).astype(np.intp)
    if kind == "binary" and outputs.shape[1] == 1:
        if len(classes) == 1:
            return np.repeat(classes[0], len(outputs))
        return classes[(outputs[:, 0] > 0).astype(np.intp)]
    return None


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
    """
    weight = np.ascontiguousarray(_tensor64(m, "weight"))  # (d_out, d_in)
    bias = _tensor64(m, "bias")

    def linear(x):
        out = np.dot(weight, x) if x.ndim == 1 else x @ weight.T
        if bias is not None:
            out += bias
        if then is not None:
            then(out)
        return out

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


def _same(a, b):
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


class _Entry:
    """What prediction keeps for one module state (see the module docstring).

    It holds the module's submodules and tensors (so no identity it was
    built for can be reused by a new object while it lives), their version
    counters and data pointers, and the sizes of the submodule tables (a
    deleted layer fires no registration hook).
    """

    def __init__(self, module):
        self.structure = _STRUCTURE[0]
        self.steps = _OPTIMIZER_STEPS[0]
        self.modules, self.tensors = _walk(module)
        self.state = [(t._version, t.data_ptr()) for t in self.tensors]
        self.tables = [m._modules for m in self.modules if m._modules]
        self.sizes = [len(table) for table in self.tables]
        param = next(module.parameters(), None)
        self.device = torch.device("cpu") if param is None else param.device
        self.dtype = torch.float32 if param is None else param.dtype
        self.on_cpu = self.device.type == "cpu"
        self._plan = None
        self._compiled = False
        self.macs = None
        self.state64 = None
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
        state = [(t._version, t.data_ptr()) for t in self.tensors]
        sizes = [len(table) for table in self.tables]
        return state == self.state and sizes == self.sizes

    def plan(self, module):
        """The module's :class:`Plan` (``None`` if untranslatable), compiled once."""
        if not self._compiled:
            self._plan = compile_plan(module)
            self.macs = self._plan.macs if self._plan is not None else _macs(module)
            self._compiled = True
        return self._plan


_CACHE = weakref.WeakKeyDictionary()


def _entry(module):
    entry = _CACHE.get(module)
    if entry is not None and entry.is_current(module):
        return entry
    _watch()  # before the snapshot: later changes are counted
    entry = _CACHE[module] = _Entry(module)
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
        _CACHE.pop(module, None)


# -- forward passes --------------------------------------------------------------


def _dense(X):
    return X.toarray() if sp.issparse(X) else X


def _tensor(part, entry):
    if type(part) is np.ndarray and part.flags.c_contiguous and part.flags.writeable:
        # as_tensor without its warnings filter (for read-only input), which
        # costs as much as a small batch's forward pass.
        tensor = torch.from_numpy(part)
        if tensor.dtype == entry.dtype and entry.on_cpu:
            return tensor
        return tensor.to(device=entry.device, dtype=entry.dtype)
    return as_tensor(_dense(part), entry.dtype, entry.device)


@contextlib.contextmanager
def _evaluating(entry):
    """Evaluation mode for the forward pass, each layer's own mode after it.

    A prediction from a callback in the middle of a fit must not leave the
    rest of the epoch training in evaluation mode (dropout off, batch norm
    on running statistics). Flags are set per layer: ``module.eval()``
    walks every submodule (~40 us).
    """
    training = [m for m in entry.modules if m.training]
    for m in training:
        m.training = False
    try:
        yield
    finally:
        for m in training:
            m.training = True


def _torch_outputs(module, entry, X):
    step = PREDICT_CHUNK
    chunks = []
    with _evaluating(entry), torch.inference_mode():
        for start in range(0, X.shape[0], step):
            out = module(_tensor(X[start:start + step], entry))
            if out.dtype != torch.float64:
                out = out.double()
            chunks.append((out if entry.on_cpu else out.cpu()).numpy())
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _float64_outputs(module, entry, X):
    """Small batches of a module the plan cannot translate: float64 torch."""
    if entry.state64 is None:
        entry.state64 = {
            name: t.detach().double() if t.is_floating_point() else t
            for name, t in [*module.named_parameters(), *module.named_buffers()]
        }
    with _evaluating(entry), torch.inference_mode():
        inputs = as_tensor(_dense(X), torch.float64, entry.device)
        return functional_call(module, entry.state64, (inputs,)).cpu().numpy()


def raw_outputs(estimator, X):
    """The module's outputs for ``X`` as float64: ``_raw_outputs`` of the base.

    Parameters
    ----------
    estimator : BaseNeuralEstimator
    X : array-like or sparse matrix of shape (n_samples, n_features)

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
    X = check_input(estimator, X)
    # An estimator pickled before the parameter existed has none: "torch".
    backend = estimator.__dict__.get("inference_backend", "torch")
    if backend != "torch":
        if backend == "onnxruntime":
            return _onnxruntime_outputs(estimator, module, X)
        raise ValueError(
            f"Unknown inference_backend {backend!r}. Valid names are: "
            f"{', '.join(sorted(BACKENDS))}."
        )
    entry = _entry(module)
    if entry.on_cpu:
        plan = entry.plan(module)
        if use_plan(X.shape[0], entry.macs):
            if plan is None:
                return _float64_outputs(module, entry, X)
            return plan(X if type(X) is np.ndarray else _dense(X))
    return _torch_outputs(module, entry, X)


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
    chunks = []
    for start in range(0, X.shape[0], step):
        part = np.ascontiguousarray(_dense(X[start:start + step]), dtype=np.float32)
        (out,) = session.run(["raw_output"], {"X": part})
        chunks.append(out.astype(np.float64))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
