"""From validated arrays to tensors, and fast in-memory batching.

In-memory data is indexed by a permutation per epoch: no ``DataLoader``,
no per-sample Python. Dense float arrays of the compute dtype become tensors
without a copy.

Sparse input
------------
A scipy sparse matrix is never made dense whole: a 70,000 x 100,000 matrix
with a few million values takes tens of megabytes, and 26 GiB dense in
float32. Where a module reads its input only through a first ``nn.Linear``
(:func:`takes_sparse`: the MLP and plain ``nn.Sequential`` stacks), it gets
the rows as a torch sparse CSR tensor, and that layer multiplies sparse by
dense, as scikit-learn's ``safe_sparse_dot`` does. Anything else gets dense
rows, at most :data:`DENSE_CHUNK_BYTES` of them at once
(:func:`dense_chunk_rows`, :meth:`ArrayData.chunks`); a mini-batch is made
dense on its own.
"""

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn.utils import parametrize

from sklears_neural.core.layers import MLP
from sklears_neural.core.noise import NoiseLayer

__all__ = [
    "DENSE_CHUNK_BYTES",
    "ArrayData",
    "SequenceData",
    "as_tensor",
    "call_module",
    "dense_array",
    "dense_chunk_rows",
    "rows_independent",
    "sparse_tensor",
    "takes_sparse",
]

#: Most bytes of dense input made at once from a sparse matrix, where a
#: module needs dense rows (prediction, validation, L-BFGS). Large enough
#: that a chunk's matrix products stay efficient (800 rows of 20,000 float32
#: features), small next to the memory a wide matrix would take dense.
DENSE_CHUNK_BYTES = 64 * 2**20


def as_tensor(array, dtype, device):
    """A tensor over ``array``, copying only when dtype, layout or device need it.

    Parameters
    ----------
    array : ndarray
        Already validated (finite, numeric).
    dtype : torch.dtype
    device : torch.device

    Returns
    -------
    torch.Tensor
    """
    array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        # Read-only inputs (memmaps) are fine: the library never writes to X.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        tensor = torch.from_numpy(array)
    return tensor.to(device=device, dtype=dtype)


def _numpy_dtype(dtype):
    """The NumPy dtype of a torch float dtype; float32 for those NumPy lacks."""
    return np.float64 if dtype == torch.float64 else np.float32


def dense_chunk_rows(n_features, itemsize, max_bytes=None):
    """Rows per chunk so that a dense chunk takes at most ``max_bytes``.

    Parameters
    ----------
    n_features : int
    itemsize : int
        Bytes per value of the dense chunk.
    max_bytes : int or None, default=None
        :data:`DENSE_CHUNK_BYTES` if None (read at each call).

    Returns
    -------
    int
        At least 1.
    """
    if max_bytes is None:
        max_bytes = DENSE_CHUNK_BYTES
    return max(1, int(max_bytes) // max(1, int(n_features) * int(itemsize)))


def dense_array(X, dtype):
    """``X`` (scipy sparse) as a dense ndarray of the NumPy side of ``dtype``.

    The values are converted while still sparse, so the dense array is made
    once, in its final dtype.
    """
    return X.astype(_numpy_dtype(dtype), copy=False).toarray()


def sparse_tensor(X, dtype, device):
    """A torch sparse CSR tensor with the values of ``X``.

    Parameters
    ----------
    X : scipy sparse matrix or array of shape (n_samples, n_features)
        Any format; converted to canonical CSR (sorted indices, duplicates
        summed, as ``toarray`` sums them) without touching the caller's
        matrix.
    dtype : torch.dtype
        dtype of the values.
    device : torch.device

    Returns
    -------
    torch.Tensor
        ``layout=torch.sparse_csr``, sharing the index arrays of ``X`` where
        they need no conversion.
    """
    X = sp.csr_matrix(X, dtype=_numpy_dtype(dtype))
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    indices = X.indices
    indptr = X.indptr.astype(indices.dtype, copy=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        # torch says once per process that sparse CSR support is "beta";
        # the one kernel used here (addmm) is the one scipy users rely on.
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support.*")
        tensor = torch.sparse_csr_tensor(
            torch.from_numpy(indptr),
            torch.from_numpy(indices),
            torch.from_numpy(X.data),
            size=X.shape,
            # The matrix is canonical CSR by construction: no O(nnz) check.
            check_invariants=False,
        )
    return tensor.to(device=device, dtype=dtype)


def _identity_in_evaluation(layer):
    kind = type(layer)
    return kind is nn.Identity or (
        not layer.training
        and (
            kind is nn.Dropout
            or (isinstance(layer, NoiseLayer) and kind.forward is NoiseLayer.forward)
        )
    )


def takes_sparse(module):
    """Whether ``module(x)`` accepts ``x`` as a torch sparse CSR tensor.

    True when the input reaches nothing but a first ``nn.Linear`` (spectral
    normalized too), in float32 or float64: ``torch.addmm`` then multiplies
    sparse by dense and every later layer sees a dense tensor. That holds
    for :class:`~sklears_neural.core.layers.MLP` (not while gradient
    checkpointing runs, which hands the input to ``torch.utils.checkpoint``)
    and a plain ``nn.Sequential``, with only layers that are the identity in
    the current mode before that ``Linear`` (``nn.Identity``; dropout and
    noise layers in evaluation). A module whose first layer is a residual
    block, a normalization or anything else takes dense rows.

    Parameters
    ----------
    module : torch.nn.Module
        In the mode it will run in (``module.training``).

    Returns
    -------
    bool
    """
    layers = module
    if type(module) is MLP:
        checkpointing = module.gradient_checkpointing and module.training
        if checkpointing and torch.is_grad_enabled():
            return False
        layers = module.layers
    if type(layers) is not nn.Sequential:
        return False
    for layer in layers:
        if parametrize.type_before_parametrizations(layer) is nn.Linear:
            # torch's sparse addmm has float32 and float64 kernels only.
            return layer.weight.dtype in (torch.float32, torch.float64)
        if not _identity_in_evaluation(layer):
            return False
    return False


class ArrayData:
    """Inputs, targets and sample weights of one fit, ready to batch.

    Parameters
    ----------
    X : ndarray or scipy sparse matrix of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,) or (n_samples, n_outputs), or None
    sample_weight : ndarray of shape (n_samples,) or None
    dtype : torch.dtype
        Compute dtype of X (and of float targets).
    device : torch.device
    target_dtype : torch.dtype or None, default=None
        dtype of the targets; ``None`` uses ``dtype`` (class indices pass
        ``torch.long``).

    Attributes
    ----------
    X : torch.Tensor or scipy.sparse.csr_matrix
        Sparse input is kept as canonical CSR in the compute dtype, so that
        a batch becomes dense with one ``toarray`` and no further copy.
    y : torch.Tensor or None
    w : torch.Tensor or None
    sparse : bool
        Whether ``X`` is sparse.
    n_samples : int
    """

    def __init__(self, X, y, sample_weight, *, dtype, device, target_dtype=None):
        self.device = device
        self.dtype = dtype
        self.n_samples = X.shape[0]
        self.sparse = sp.issparse(X)
        if self.sparse:
            X = sp.csr_matrix(X, dtype=_numpy_dtype(dtype))
            if not X.has_canonical_format:
                X = X.copy()  # never the caller's matrix
                X.sum_duplicates()
            self.X = X
        else:
            self.X = as_tensor(X, dtype, device)
        self.y = None if y is None else as_tensor(y, target_dtype or dtype, device)
        self.w = (
            None
            if sample_weight is None
            else as_tensor(sample_weight, dtype, device)
        )

    def _rows_of_X(self, index):
        if not self.sparse:
            return self.X[index]
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        dense = dense_array(self.X[index], self.dtype)
        return as_tensor(dense, self.dtype, self.device)

    def batch(self, index):
        """Rows ``index`` (a slice or an index tensor) as ``(X, y, w)`` tensors.

        ``X`` is dense: sparse input is made dense for these rows only.
        """
        y = None if self.y is None else self.y[index]
        w = None if self.w is None else self.w[index]
        return self._rows_of_X(index), y, w

    def all(self, *, keep_sparse=False):
        """All rows as ``(X, y, w)`` tensors (full-batch solvers, validation).

        Parameters
        ----------
        keep_sparse : bool, default=False
            Give sparse input as a torch sparse CSR tensor, for a module that
            :func:`takes_sparse`, instead of making all of it dense. No
            effect on dense input.
        """
        if keep_sparse and self.sparse:
            return sparse_tensor(self.X, self.dtype, self.device), self.y, self.w
        return self.batch(slice(None))

    def chunks(self, max_bytes=None):
        """Row slices whose dense ``X`` takes at most ``max_bytes`` each.

        Parameters
        ----------
        max_bytes : int or None, default=None
            :data:`DENSE_CHUNK_BYTES` if None.

        Returns
        -------
        list of slice
            Covering all rows in order; one slice for dense input (already
            in memory) and for sparse input that fits in ``max_bytes``.
        """
        if not self.sparse:
            return [slice(0, self.n_samples)]
        rows = dense_chunk_rows(self.X.shape[1], self.dtype.itemsize, max_bytes)
        return [slice(start, min(start + rows, self.n_samples))
                for start in range(0, max(self.n_samples, 1), rows)]


class SequenceData:
    """Padded sequences, their lengths, targets and sample weights of one fit.

    The same protocol as :class:`ArrayData` (``n_samples``, ``batch``,
    ``all``, ``chunks``); a batch's inputs are the pair ``(x, lengths)``,
    ``x`` cut to the batch's longest sequence, so short batches do no work
    on padding. The module is called as ``module(x, lengths)``.

    Parameters
    ----------
    values : ndarray of shape (n_samples, max_length, n_features)
        Zero-padded.
    lengths : ndarray of shape (n_samples,), int
    y : ndarray or None
        Per-sequence targets ``(n_samples, ...)``, or per-step targets
        ``(n_samples, max_length, ...)``, which are cut with ``x``.
    sample_weight : ndarray of shape (n_samples,) or None
    dtype, device, target_dtype
        As for :class:`ArrayData`.
    per_step : bool, default=False
        Whether ``y`` holds a target per step (cut with ``x``).

    Attributes
    ----------
    lengths : torch.Tensor
        int64, on the CPU (``pack_padded_sequence`` reads them there).
    """

    sparse = False

    def __init__(self, values, lengths, y, sample_weight, *, dtype, device,
                 target_dtype=None, per_step=False):
        self.device = device
        self.dtype = dtype
        self.n_samples = values.shape[0]
        self.X = as_tensor(values, dtype, device)
        self.lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64)
        self._max_length = values.shape[1]
        self.y = None if y is None else as_tensor(y, target_dtype or dtype, device)
        self._per_step = per_step and self.y is not None
        self.w = (
            None if sample_weight is None else as_tensor(sample_weight, dtype, device)
        )

    def batch(self, index):
        """Rows ``index`` as ``((x, lengths), y, w)``, cut to their longest sequence."""
        if isinstance(index, torch.Tensor):
            cpu_index = index.cpu()
        else:
            cpu_index = index
        lengths = self.lengths[cpu_index]
        longest = int(lengths.max()) if lengths.numel() else 0
        x = self.X[index]
        if longest < self._max_length:
            x = x[:, :longest]
        y = None if self.y is None else self.y[index]
        if y is not None and self._per_step and longest < self._max_length:
            y = y[:, :longest]
        w = None if self.w is None else self.w[index]
        return (x, lengths), y, w

    def all(self, *, keep_sparse=False):
        """All rows as one batch."""
        return self.batch(slice(None))

    def chunks(self, max_bytes=None):
        """Row slices whose padded values take at most ``max_bytes`` each."""
        per_row = self._max_length * max(1, self.X.shape[2]) if self.X.ndim == 3 else 1
        rows = dense_chunk_rows(per_row, self.dtype.itemsize, max_bytes)
        return [slice(start, min(start + rows, self.n_samples))
                for start in range(0, max(self.n_samples, 1), rows)]


def call_module(module, inputs):
    """``module(inputs)``, or ``module(*inputs)`` for a tuple (sequences and lengths)."""
    if type(inputs) is tuple:
        return module(*inputs)
    return module(inputs)


def rows_independent(module):
    """Whether ``module``'s forward pass treats rows alike and independently.

    Then a full-batch objective can be computed in row chunks and added up
    (L-BFGS on wide sparse input). Not so for batch normalization in
    training (batch statistics, running averages updated per call),
    parametrizations in training (spectral normalization runs a power
    iteration per call) and dropout or noise in training (the draws depend
    on the chunk shapes). Other layers are taken to be row-wise, as every
    layer of :class:`~sklears_neural.core.layers.MLP` is.

    Parameters
    ----------
    module : torch.nn.Module
        In the mode it will run in.

    Returns
    -------
    bool
    """
    coupled = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd,
               NoiseLayer)
    for m in module.modules():
        if m.training and (isinstance(m, coupled) or parametrize.is_parametrized(m)):
            return False
    return True
