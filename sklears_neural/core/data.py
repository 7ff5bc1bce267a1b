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

import copy
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn.utils import parametrize

from sklears_neural.core.layers import MLP
from sklears_neural.core.noise import NoiseLayer

__all__ = [
    "BOS",
    "DENSE_CHUNK_BYTES",
    "EOS",
    "GATHER_MAX_BYTES",
    "N_SPECIAL",
    "PAD",
    "UNK",
    "ArrayData",
    "RowGather",
    "SequenceData",
    "TokenData",
    "as_tensor",
    "call_module",
    "dense_array",
    "dense_chunk_rows",
    "rows_independent",
    "sparse_tensor",
    "takes_sparse",
]

#: Most bytes of an in-memory data set that :meth:`RowGather.gathered`
#: copies into a shuffled order once per epoch. Below it, an epoch's
#: batches are slices of one gathered copy (one ``index_select`` per field
#: per epoch instead of one per batch, a few microseconds of each small
#: step); above it, batches index the data, which costs no second copy.
GATHER_MAX_BYTES = 64 * 2**20

#: Most bytes of dense input made at once from a sparse matrix, where a
#: module needs dense rows (prediction, validation, L-BFGS). Large enough
#: that a chunk's matrix products stay efficient (800 rows of 20,000 float32
#: features), small next to the memory a wide matrix would take dense.
DENSE_CHUNK_BYTES = 64 * 2**20

# Reserved token ids of token sequences (TokenData here, the kind
# TokenSequenceInput in core/inputs.py): every vocabulary learned from data
# starts after them, so a network can give them fixed roles.

#: Padding id, on both sides; after each sequence's length.
PAD = 0
#: Begin-of-sequence id: the first decoder input of token targets.
BOS = 1
#: End-of-sequence id: the last output of token targets.
EOS = 2
#: Unknown input token (``handle_unknown="unk"``).
UNK = 3
#: Number of reserved ids; tokens learned from data get ``N_SPECIAL`` and up.
N_SPECIAL = 4


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


class RowGather:
    """The epoch's rows gathered once, in the epoch's order.

    A data set whose tensors are indexed by sample along their first axis
    names them in ``_row_fields``; :meth:`gathered` returns a shallow copy
    whose fields hold those rows in a given order, in buffers allocated once
    and reused every epoch, so the trainer takes each batch as a slice (a
    view) of it. A batch holds the same values as ``batch(order[a:b])``.
    """

    _row_fields = ()

    def gathered(self, order, batch_size=None):
        """This data with its rows in ``order``, or None where it does not apply.

        Parameters
        ----------
        order : torch.Tensor
            A permutation of ``range(n_samples)``, int64.
        batch_size : int, optional
            The size of the slices the epoch will take; rows need no
            per-batch arithmetic, so it is not used here (graphs use it).

        Returns
        -------
        RowGather or None
            None for sparse data and for data above
            :data:`GATHER_MAX_BYTES`: batches then index the data itself.
        """
        if self.sparse:
            return None
        fields = {name: getattr(self, name) for name in self._row_fields}
        fields = {name: t for name, t in fields.items() if t is not None}
        if sum(t.numel() * t.element_size() for t in fields.values()) > GATHER_MAX_BYTES:
            return None
        buffers = self.__dict__.setdefault("_gather_buffers", {})
        view = copy.copy(self)
        view.__dict__.pop("_gather_buffers", None)
        for name, tensor in fields.items():
            buffer = buffers.get(name)
            if buffer is None:
                buffer = buffers[name] = torch.empty_like(tensor)
            torch.index_select(tensor, 0, order.to(tensor.device), out=buffer)
            setattr(view, name, buffer)
        return view


class ArrayData(RowGather):
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

    _row_fields = ("X", "y", "w")

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
        return _row_slices(self.n_samples,
                           dense_chunk_rows(self.X.shape[1], self.dtype.itemsize,
                                            max_bytes))


class SequenceData(RowGather):
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
    _row_fields = ("X", "lengths", "y", "w")

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
        """Rows ``index`` as ``((x, lengths), y, w)``, cut to their longest sequence.

        ``lengths`` is None when every sequence of the batch is that long:
        the modules then skip packing and masks.
        """
        if isinstance(index, torch.Tensor):
            cpu_index = index.cpu()
        else:
            cpu_index = index
        lengths = self.lengths[cpu_index]
        longest = _longest(lengths)
        x = self.X[index]
        if longest < self._max_length:
            x = x[:, :longest]
        y = None if self.y is None else self.y[index]
        if y is not None and self._per_step and longest < self._max_length:
            y = y[:, :longest]
        w = None if self.w is None else self.w[index]
        if lengths.numel() and int(lengths.min()) == longest:
            # Every sequence fills the batch: no packing, no padding masks
            # (they cost an LSTM ~10% and attention 5-7% per batch).
            lengths = None
        return (x, lengths), y, w

    def all(self, *, keep_sparse=False):
        """All rows as one batch."""
        return self.batch(slice(None))

    def chunks(self, max_bytes=None):
        """Row slices whose padded values take at most ``max_bytes`` each."""
        per_row = self._max_length * max(1, self.X.shape[2]) if self.X.ndim == 3 else 1
        return _row_slices(self.n_samples,
                           dense_chunk_rows(per_row, self.dtype.itemsize, max_bytes))


class TokenData(RowGather):
    """Token id sequences, their lengths, targets and sample weights of one fit.

    The protocol of :class:`ArrayData` (``n_samples``, ``batch``, ``all``,
    ``chunks``, ``sparse``, ``device``, ``dtype``) for the
    :class:`~sklears_neural.core.inputs.TokenSequenceInput` kind. Ids stay
    int64 whatever ``dtype`` (the network's compute dtype) is, and every
    tensor of a batch is cut to the batch's longest sequence. A batch is

    - ``((src, src_lengths), y, w)`` when ``X`` carries no token targets:
      ``y`` per-sequence targets (class indices, values), or None;
    - ``((src, src_lengths, tgt_in, tgt_lengths), tgt_out, w)`` when it
      does, for teacher forcing: ``tgt_in`` is ``BOS`` and the target
      tokens (the decoder's inputs), ``tgt_out`` the target tokens and
      ``EOS`` (what it must output), ``PAD`` beyond each length.

    The module is called with the inputs spread, ``module(src,
    src_lengths)`` or ``module(src, src_lengths, tgt_in, tgt_lengths)``.

    Parameters
    ----------
    X : TokenSequences
        ``X.ids`` of shape (n_samples, S), ``X.lengths``, and ``X.targets``
        of shape (n_samples, T + 2) (``BOS``, ids, ``EOS``, then ``PAD``)
        or None.
    y : ndarray or None, default=None
        With token targets, the same ids as ``X.targets`` (``tgt_out`` is
        ``y[:, 1:]``); else per-sequence targets of shape (n_samples, ...).
    sample_weight : ndarray of shape (n_samples,) or None, default=None
    dtype : torch.dtype
        dtype of the sample weights (and of per-sequence float targets).
    device : torch.device
    target_dtype : torch.dtype or None, default=None
        dtype of per-sequence targets; None uses ``dtype``. Token targets
        are int64 ids whatever it says.

    Attributes
    ----------
    src : Tensor of shape (n_samples, S), int64
    src_lengths : Tensor of shape (n_samples,), int64
        On the CPU (``pack_padded_sequence`` reads them there).
    tgt : Tensor of shape (n_samples, T + 2), int64, or None
    tgt_lengths : Tensor of shape (n_samples,), int64, or None
        On the CPU; counts ``BOS`` and the target tokens (the steps of
        ``tgt_in``).
    """

    sparse = False
    _row_fields = ("src", "src_lengths", "tgt", "tgt_lengths", "y", "w")

    def __init__(self, X, y=None, sample_weight=None, *, dtype, device,
                 target_dtype=None):
        self.device = device
        self.dtype = dtype
        self.n_samples = len(X)
        self.src = torch.as_tensor(X.ids, dtype=torch.long).to(device)
        self.src_lengths = torch.as_tensor(np.asarray(X.lengths), dtype=torch.long)
        self.tgt = self.tgt_lengths = None
        if X.targets is not None:
            self.tgt = torch.as_tensor(X.targets, dtype=torch.long).to(device)
            self.tgt_lengths = torch.as_tensor((X.targets != PAD).sum(1) - 1,
                                               dtype=torch.long)
            target_dtype = torch.long
        self.y = None if y is None else as_tensor(y, target_dtype or dtype, device)
        self.w = None if sample_weight is None else as_tensor(sample_weight, dtype,
                                                              device)

    def batch(self, index):
        """Rows ``index`` (a slice or an index tensor) as ``(inputs, y, w)``."""
        cpu_index = index.cpu() if isinstance(index, torch.Tensor) else index
        src_lengths = self.src_lengths[cpu_index]
        src = self.src[index][:, : _longest(src_lengths)]
        w = None if self.w is None else self.w[index]
        y = None if self.y is None else self.y[index]
        if self.tgt is None:
            return (src, src_lengths), y, w
        tgt_lengths = self.tgt_lengths[cpu_index]
        steps = _longest(tgt_lengths)
        tgt_in = self.tgt[index][:, :steps]
        y = None if y is None else y[:, 1: steps + 1]
        return (src, src_lengths, tgt_in, tgt_lengths), y, w

    def all(self, *, keep_sparse=False):
        """All rows as one batch."""
        return self.batch(slice(None))

    def chunks(self, max_bytes=None):
        """Row slices whose ids (source and target) take at most ``max_bytes`` each."""
        width = self.src.shape[1] + (0 if self.tgt is None else self.tgt.shape[1])
        return _row_slices(self.n_samples, dense_chunk_rows(width, 8, max_bytes))


def _longest(lengths):
    """The largest of 1-D lengths (a CPU tensor or an ndarray); 0 for none."""
    return int(lengths.max()) if len(lengths) else 0


def _row_slices(n_samples, rows):
    """Slices of ``rows`` rows covering ``n_samples`` in order (one for none)."""
    return [slice(start, min(start + rows, n_samples))
            for start in range(0, max(n_samples, 1), rows)]


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
