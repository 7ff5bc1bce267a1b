"""Prediction: the input check, the per-module cache and the forward passes.

``BaseNeuralEstimator._raw_outputs`` calls :func:`raw_outputs`, which checks
``X`` (:func:`check_input`) and runs the fitted module forward one of three
ways:

plan
    CPU modules of a family that has a float64 NumPy translation of its
    module (``_prediction_plan``; the MLP family's is
    :mod:`~sklears_neural.core.plan`), for small batches (``plan.use_plan``).
    A row's outputs then depend on the other rows of its batch only within
    float64 rounding (~1e-16), which scikit-learn's batch- and
    order-invariance checks need, and one row costs a few NumPy calls
    instead of a pass through ``nn.Module`` dispatch.
torch
    Everything else: the module itself, in its own dtype, under
    ``torch.inference_mode``, in chunks (on the CPU, sized so that the
    activations stay in cache: :data:`CACHE_CHUNK_BYTES`). On
    the CPU, a module without a plan (another family's, or an MLP holding a
    layer the plan does not know) runs batches of at most
    ``plan.PLAN_MIN_ROWS`` rows through ``torch.func.functional_call`` with
    float64 copies of its state instead, so the invariance holds for it
    too; no multiply-add budget is applied to it (that budget counts
    ``nn.Linear`` layers only).
onnxruntime
    ``inference_backend="onnxruntime"``: the graph of ``to_onnx`` in an ONNX
    Runtime session (float32 input), run by
    :mod:`~sklears_neural.core.onnx_runtime`.

Whatever runs, the output is a float64 array of raw outputs (logits, or the
regression link's input); the task mixin computes probabilities and labels
from it in float64. Families whose input is not 2-D rows (images,
sequences) and custom ``forward`` calls go through the family's dataset
instead (:func:`_dataset_outputs`), with the same float64 rule for small
batches.

Caching
-------
What a module needs for prediction (the plan, the float64 state, the ONNX
bytes and Runtime session) is built on first use and kept in a table keyed
weakly by the module, so nothing is added to the estimator's ``__dict__``
or to the module, and pickling, ``save`` and ``clone`` never see it. An
entry is rebuilt when

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
"""

import contextlib
import copy
import math
import threading
import weakref

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.validation import check_is_fitted, validate_data
from torch.func import functional_call

from sklears_neural.core import modes, onnx_runtime
from sklears_neural.core.data import (
    as_tensor,
    dense_array,
    dense_chunk_rows,
    sparse_tensor,
    takes_sparse,
)
from sklears_neural.core.inputs import TABULAR
from sklears_neural.core.plan import PLAN_MIN_ROWS, use_plan


__all__ = [
    "BACKENDS",
    "PREDICT_CHUNK",
    "check_input",
    "check_representable",
    "clear_cache",
    "onnx_model",
    "raw_outputs",
]

#: Values of the ``inference_backend`` parameter.
BACKENDS = ("torch", "onnxruntime")

#: Rows per forward pass of the torch and onnxruntime paths: bounds memory.
PREDICT_CHUNK = 65536

#: Bytes of the widest activation per chunk and thread on the CPU's torch
#: path: chunks whose activations stay in a core's cache. At 10,000 rows of
#: the benchmark's MLP (widest layer 256, float32, so 1,024 rows a thread)
#: they took the forward pass from 1.0x to 0.73x the single pass with one
#: thread and 0.82x with two (doc/inference.md).
CACHE_CHUNK_BYTES = 1 << 20

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
    float32 module, and its outputs ``NaN``; the float64 path that small
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
    if X.size <= _VDOT_MAX_SIZE:
        # One BLAS call without a temporary (np.isfinite(X).all() makes a
        # boolean copy and costs a one-row predict 1 us more): the sum of
        # squares is finite unless a value is NaN or infinite, or large
        # enough for it to overflow (~1e19 in float32), which only sends X
        # to validate_data, which looks element by element. Small inputs
        # only: BLAS threads a longer dot, and its threads then spin beside
        # torch's (10,000 rows predicted 1.3x slower with two threads).
        return math.isfinite(np.vdot(X, X))
    if X.size <= 2**20:
        return bool(np.isfinite(X).all())
    # One pass without a boolean temporary, as scikit-learn's own check: the
    # sum of finite values is finite unless it overflows, and a non-finite
    # sum only sends X to validate_data, which looks element by element.
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.add.reduce(X, axis=None)))


#: Largest input checked by one ``vdot`` (OpenBLAS runs a dot of up to
#: 10,000 values on one thread).
_VDOT_MAX_SIZE = 8192


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


def note_optimizer_step():
    """Tell the caches that weights changed in place, as after ``Optimizer.step``.

    For code that runs an optimizer's kernel without ``Optimizer.step``
    (``core.optim.direct_step``), whose global hook would otherwise not see it.
    """
    _OPTIMIZER_STEPS[0] += 1


def is_cache_hook(hook):
    """Whether ``hook`` is the global optimizer hook these caches installed."""
    return hook is _optimizer_stepped


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
        # What is_current compares, as flat tuples (it runs at every predict).
        self._tensor_checks = [(ref, t._version, t.data_ptr())
                               for ref, t in zip(self.tensors, tensors)]
        self._table_checks = [(weakref.ref(m), len(m._modules))
                              for m in modules if m._modules]
        param = next(module.parameters(), None)
        self.device = torch.device("cpu") if param is None else param.device
        self.dtype = torch.float32 if param is None else param.dtype
        self.on_cpu = self.device.type == "cpu"
        self._plan = None
        self._compiled = False
        # The plan once compiled (None before, or without one): read by the
        # dense fast path of raw_outputs.
        self.ready_plan = None
        # use_plan's cost model, counted without compiling the plan: a plan
        # holds float64 copies of the weights (twice a float32 module's
        # size: +770 MiB for 100M parameters), made only for a batch that
        # takes it.
        self.macs = sum(
            m.in_features * m.out_features
            for m in modules
            if isinstance(m, torch.nn.Linear)
        )
        # The widest layer a row passes through, where the layers say
        # (nn.Linear; 0 for other modules): sizes the CPU's chunks.
        self.widest = max(
            (max(m.in_features, m.out_features) for m in modules
             if isinstance(m, torch.nn.Linear)),
            default=0,
        )
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
        for ref, version, pointer in self._tensor_checks:
            tensor = ref()
            if tensor is None or tensor._version != version or (
                tensor.data_ptr() != pointer
            ):
                return False
        for ref, size in self._table_checks:
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

    def plan(self, estimator, module, n_rows):
        """The plan for a batch of ``n_rows`` rows, or ``None`` if it takes none.

        ``estimator._prediction_plan(module)``, asked once per module state,
        and only for a batch that would take it (``use_plan`` on the
        multiply-adds of the ``nn.Linear`` layers, the plan's own count once
        compiled). ``None`` for a family without a plan, a module its plan
        cannot translate, or a batch too large for the plan.
        """
        if self._compiled:
            if self._plan is None or use_plan(n_rows, self._plan.macs):
                return self._plan
            return None
        if not use_plan(n_rows, self.macs):
            return None
        self._plan = estimator._prediction_plan(module)
        self._compiled = True
        self.ready_plan = self._plan
        return self.plan(estimator, module, n_rows)


_CACHE = weakref.WeakKeyDictionary()
# WeakKeyDictionary is not safe under concurrent writes (a thread's insert
# can meet another's removal of a freed key); predictions come from any thread.
_CACHE_LOCK = threading.Lock()


def _entry(module):
    # A lookup is one dict read, atomic under the GIL; the lock guards the
    # writes (an insert beside a freed key's removal).
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

    Dense chunks as :func:`_dense_chunk_rows` says; sparse ``X`` as
    :func:`_sparse_chunking` says. ``forward`` takes a chunk as a tensor of
    ``dtype`` on the module's device.
    """
    step, keep_sparse = _dense_chunk_rows(entry, dtype), False
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


def _dense_chunk_rows(entry, dtype):
    """Rows per chunk of a dense forward pass.

    On the CPU, for modules whose widest layer is known, as many rows as keep
    that layer's activations within :data:`CACHE_CHUNK_BYTES` per thread
    (torch splits a product's rows among its threads); else
    :data:`PREDICT_CHUNK`.
    """
    if not entry.on_cpu or not entry.widest:
        return PREDICT_CHUNK
    per_row = entry.widest * dtype.itemsize
    rows = CACHE_CHUNK_BYTES * torch.get_num_threads() // per_row
    return int(min(PREDICT_CHUNK, max(256, rows)))


def _torch_outputs(module, entry, X):
    """The module itself, in its own dtype."""
    return _forward_in_chunks(module, entry, X, entry.dtype, module)


def _float64_outputs(module, entry, X):
    """A module without a plan, or float32 overflow: float64 torch."""
    if entry.state64 is None:
        entry.state64 = {
            name: t.detach().double() if t.is_floating_point() else t
            for name, t in [*module.named_parameters(), *module.named_buffers()]
        }
    return _forward_in_chunks(
        module, entry, X, torch.float64,
        lambda inputs: functional_call(module, entry.state64, (inputs,)),
    )


def raw_outputs(estimator, X, forward=None, module=None):
    """The module's outputs for ``X`` as float64: ``_raw_outputs`` of the base.

    Parameters
    ----------
    estimator : BaseNeuralEstimator
    X : array-like or sparse matrix of shape (n_samples, n_features)
        Or any input the family's ``_input_kind()`` takes.
    forward : callable or None, default=None
        ``forward(module, inputs)`` instead of the family's ``_forward``
        (e.g. an autoencoder's encoder half for ``transform``).
    module : torch.nn.Module or None, default=None
        Another of the estimator's declared networks to run instead of
        ``module_`` (a GAN's discriminator); it takes the general path.

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
    if module is not None:
        return _dataset_outputs(estimator, module, X, forward)
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
            return onnx_runtime.outputs(estimator, _entry(module), X, PREDICT_CHUNK)
        raise ValueError(
            f"Unknown inference_backend {backend!r}. Valid names are: "
            f"{', '.join(sorted(BACKENDS))}."
        )
    entry = _entry(module)
    X = check_input(estimator, X, entry.dtype)
    plan = entry.ready_plan
    if (
        plan is not None
        and not module.training
        and use_plan(X.shape[0], plan.macs)
        and (type(X) is np.ndarray or not sp.issparse(X))
    ):
        # The plan's own float64 copies, not the module: nothing to
        # register with modes.predicting (~3 us a call), which guards the
        # flags a forward pass reads. Beside another thread's fit this
        # plan is current (entry.is_current), so it computes what
        # _outputs_beside_fit's fresh plan would. A module in training
        # mode takes the full path below, which rests it in evaluation.
        return plan(X)
    with modes.predicting(module, entry.training_layers) as situation:
        if situation == modes.OTHER_FIT:
            return _outputs_beside_fit(estimator, module, X)
        if entry.on_cpu:
            plan = entry.plan(estimator, module, X.shape[0])
            if plan is not None:
                if type(X) is np.ndarray or not sp.issparse(X):
                    return plan(X)
                return plan.sparse(X)
            if X.shape[0] <= PLAN_MIN_ROWS:
                # No plan, no cost model (the multiply-adds count only
                # nn.Linear: a conv stack would count as free): float64
                # torch for the few rows of scikit-learn's invariance
                # checks, the chunked module path for everything else.
                return _float64_outputs(module, entry, X)
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
    :data:`~sklears_neural.core.plan.PLAN_MIN_ROWS` rows on the CPU run a
    float64 copy of the module, so a sample's output does not depend on its
    batch beyond float64 rounding (scikit-learn's invariance checks); larger
    ones run the module in its own dtype, in chunks of
    :data:`DATASET_CHUNK_VALUES` input values. With
    ``inference_backend="onnxruntime"`` the family's graph runs instead
    (:func:`~sklears_neural.core.export.graph_feed` gives its inputs).
    """
    backend = estimator.__dict__.get("inference_backend", "torch")
    kind = estimator._input_kind()
    entry = _entry(module)
    if backend == "onnxruntime" and forward is None:
        X = kind.validate(estimator, X, reset=False)
        check_representable(X, torch.float32)  # the graph's input dtype
        return onnx_runtime.outputs(estimator, entry, X, _dataset_chunk_rows(X))
    if backend != "torch" and forward is None:
        raise ValueError(
            f"Unknown inference_backend {backend!r}. Valid names are: "
            f"{', '.join(sorted(BACKENDS))}."
        )
    if forward is None:
        forward = estimator._forward
    X = kind.validate(estimator, X, reset=False)
    check_representable(X, entry.dtype)
    with modes.predicting(module, entry.training_layers) as situation:
        if situation == modes.OTHER_FIT:
            # Another thread trains this module and owns its flags: a
            # private float64 copy of the current weights.
            copied = copy.deepcopy(module).eval().double()
            return _chunked_dataset_outputs(copied, kind, X, torch.float64, forward,
                                            entry.device)
        # Rows of X: ``len`` for ragged sequences, ``shape`` for sparse
        # matrices (whose ``len`` raises).
        n_rows = X.shape[0] if hasattr(X, "shape") else len(X)
        if entry.on_cpu and n_rows <= PLAN_MIN_ROWS:
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
    rows = _dataset_chunk_rows(X)
    if data.sparse:
        rows = min(rows, data.chunks()[0].stop)
    chunks = []
    with torch.inference_mode():
        for start in range(0, data.n_samples, rows):
            inputs, _, _ = data.batch(slice(start, start + rows))
            out = forward(module, inputs)
            chunks.append(out.double().cpu().numpy())
    return _concatenate(chunks)


def _dataset_chunk_rows(X):
    per_sample = max(1, int(np.prod(X.shape[1:])))
    return max(1, min(PREDICT_CHUNK, DATASET_CHUNK_VALUES // per_sample))


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


def _outputs_beside_fit(estimator, module, X):
    """Outputs of a module another thread is training, without disturbing it.

    The fit owns the module's training flags (:mod:`~sklears_neural.core.modes`),
    so the module itself is not run: the family's float64 plan of its
    current weights is (``estimator._prediction_plan``; a private float64
    copy in evaluation mode for a family or module without one). The
    weights may be read in the middle of an optimizer step; nothing is
    cached, since they keep changing.
    """
    plan = estimator._prediction_plan(module)
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


def onnx_model(estimator, path=None):
    """``estimator.to_onnx(path)``: the ONNX graph, exported once per module state.

    The bytes are kept with the module's cache entry
    (:func:`~sklears_neural.core.onnx_runtime.model_bytes`); with
    ``inference_backend="onnxruntime"`` they are also stored on the
    estimator (``_onnx_model_``) with the SHA-256 of what they were exported
    from, so that pickles and saved files keep them.

    Parameters
    ----------
    estimator : fitted BaseNeuralEstimator
    path : str or path-like, default=None
        Where to write the bytes too.

    Returns
    -------
    bytes
        The serialized ``ModelProto``.
    """
    module = estimator.__dict__.get("module_")
    if module is None:
        check_is_fitted(estimator, "module_")
    data = onnx_runtime.model_bytes(estimator, _entry(module))
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data
