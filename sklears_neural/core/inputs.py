"""What X a family takes, and how X becomes tensors and batches.

A family declares its input with ``_input_kind()``, which returns one of the
kinds below; fit, the validation split, the evaluator and predict all go
through it. Each kind validates X (the same checks in ``fit`` and
``predict``: rank, shape, dtype, NaN/inf, with messages that name the fix),
records what it learned in ``fit`` (``n_features_in_``, ``input_shape_``),
and makes the dataset that batches it (:mod:`sklears_neural.core.data`).

:data:`TABULAR`
    2-D rows, dense or sparse: scikit-learn's ``validate_data`` and
    :class:`~sklears_neural.core.data.ArrayData`, unchanged. The MLPs.
:class:`ArrayInput`
    One sample is an N-D array: ``(C, L)`` signals, ``(C, H, W)`` images,
    ``(C, D, H, W)`` volumes. X is ``(n, C, *spatial)``, or flat 2-D rows that
    ``input_shape`` reshapes, so an image model sits in a ``Pipeline`` after
    a ``StandardScaler``. Flat rows without ``input_shape`` are one-channel
    signals ``(n, 1, n_features)``.
:class:`SequenceInput`
    One sample is a sequence of ``T_i`` steps of ``F`` features: a 3-D
    array ``(n, T, F)``, a list (or object array) of ``(T_i, F)`` or
    ``(T_i,)`` arrays of any lengths, or flat 2-D rows (``(n, T)``
    univariate sequences, or reshaped by ``input_shape=(T, F)``). Batches
    are zero-padded to their longest sequence and carry the lengths, so a
    family's module can pack them and padding never reaches the result.
:class:`TokenSequenceInput`
    One sample is a sequence of tokens: a Python string (its characters)
    or a 1-D integer array, of any length. The vocabulary is learned in
    ``fit`` (``vocabulary_``), tokens become int64 ids after the reserved
    ones (:data:`PAD`, :data:`BOS`, :data:`EOS`, :data:`UNK`), and
    :class:`~sklears_neural.core.data.TokenData` batches them cut to each
    batch's longest sequence. Targets are per-sequence (a text classifier)
    or token sequences too (``token_targets=True``: sequence to sequence,
    batched for teacher forcing).

Adding a kind (graphs, environments) means writing ``validate``,
``dataset`` and ``tags`` for it here; the estimator layer does not change.
"""

import numbers

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.validation import check_array, validate_data

from sklears_neural.core.data import (
    BOS,
    EOS,
    N_SPECIAL,
    PAD,
    UNK,
    ArrayData,
    SequenceData,
    TokenData,
    _longest,
)

__all__ = [
    "BOS",
    "EOS",
    "N_SPECIAL",
    "PAD",
    "TABULAR",
    "UNK",
    "ArrayInput",
    "PaddedSequences",
    "SequenceInput",
    "TabularInput",
    "TokenSequenceInput",
    "TokenSequences",
    "check_input_shape",
    "step_features",
    "ids_to_tokens",
    "learn_vocabulary",
    "pad_ids",
    "read_token_sequences",
    "tokens_to_ids",
]

_FLOATS = (np.float64, np.float32)


def _owner(estimator):
    return type(estimator).__name__


class TabularInput:
    """2-D rows, dense or sparse (CSR/CSC): scikit-learn's own validation."""

    layout = "tabular"

    def validate(self, estimator, X, *, reset):
        """X as ``validate_data(estimator, X, reset=reset)`` returns it."""
        return validate_data(
            estimator, X, accept_sparse=["csr", "csc"], dtype=_FLOATS, reset=reset
        )

    def validate_with_targets(self, estimator, X, y, *, reset, y_numeric=False):
        """X and y together, as ``validate_data(estimator, X, y)`` checks them."""
        return validate_data(
            estimator, X, y, accept_sparse=["csr", "csc"], multi_output=True,
            y_numeric=y_numeric, dtype=_FLOATS, reset=reset,
        )

    def dataset(self, X, y=None, sample_weight=None, *, dtype, device,
                target_dtype=None):
        """An :class:`~sklears_neural.core.data.ArrayData` over the rows."""
        return ArrayData(X, y, sample_weight, dtype=dtype, device=device,
                         target_dtype=target_dtype)

    def tags(self, tags):
        tags.input_tags.sparse = True
        return tags


#: The kind of every family that takes 2-D rows (the default).
TABULAR = TabularInput()


class DenseTabularInput(TabularInput):
    """2-D dense rows only: scikit-learn's validation and its message for sparse X.

    For families whose targets or samples live in the data space itself
    (autoencoders reconstruct X, flows and energy models put a density on
    it, MCMC chains move in it), where a sparse X would be densified
    anyway. Sparse input fails with scikit-learn's "dense data is required"
    and the input tags say so.
    """

    def validate(self, estimator, X, *, reset):
        return validate_data(estimator, X, accept_sparse=False, dtype=_FLOATS,
                             reset=reset)

    def tags(self, tags):
        tags.input_tags.sparse = False
        return tags


#: The kind of the families that take dense 2-D rows only.
DENSE_TABULAR = DenseTabularInput()


def check_input_shape(input_shape, *, owner, min_rank=1, max_rank=4):
    """``input_shape`` as a tuple of positive ints, or None.

    Parameters
    ----------
    input_shape : tuple of int or None
    owner : str
        The estimator's class name, for the message.
    min_rank, max_rank : int
        Allowed numbers of dimensions of one sample.

    Raises
    ------
    ValueError
        Naming the parameter and what it must be.
    """
    if input_shape is None:
        return None
    try:
        shape = tuple(int(d) for d in input_shape)
        valid = all(d >= 1 and d == s for d, s in zip(shape, input_shape))
    except (TypeError, ValueError):
        valid = False
    if not valid or not min_rank <= len(shape) <= max_rank:
        raise ValueError(
            f"The 'input_shape' parameter of {owner} must be None or a tuple of "
            f"{min_rank} to {max_rank} positive ints (the shape of one sample). "
            f"Got {input_shape!r} instead."
        )
    return shape


def _finite(X, owner):
    if not np.isfinite(X).all():
        kind = "NaN" if np.isnan(X).any() else "infinity"
        raise ValueError(
            f"Input X contains {kind}. {owner} does not accept missing values "
            "encoded as NaN natively: impute them first (e.g. "
            "sklearn.impute.SimpleImputer), or drop those samples."
        )


class ArrayInput:
    """One sample is an array of ``1 + spatial_dims`` dimensions (channels first).

    Parameters
    ----------
    input_shape : tuple of int or None
        ``(C, *spatial)`` of one sample. Flat 2-D rows are reshaped to it
        (row-major, as ``X.reshape(n, *input_shape)``); N-D input must have
        it. None: taken from N-D input, and flat rows are ``(1, n_features)``.
    spatial_dims : tuple of int, default=(1, 2, 3)
        Numbers of spatial dimensions the family's module supports.
    """

    layout = "image"

    def __init__(self, input_shape=None, spatial_dims=(1, 2, 3)):
        self.input_shape = input_shape
        self.spatial_dims = tuple(spatial_dims)

    def validate(self, estimator, X, *, reset):
        """X as a float array ``(n, C, *spatial)``; sets ``input_shape_`` in fit.

        Also sets ``n_features_in_`` (values per sample) and, for flat rows
        with column names, ``feature_names_in_``, as ``validate_data`` does.
        """
        owner = _owner(estimator)
        shape = check_input_shape(self.input_shape, owner=owner, min_rank=2,
                                  max_rank=1 + max(self.spatial_dims))
        if sp.issparse(X):
            raise TypeError(
                f"{owner} takes dense arrays; got a sparse matrix. Convert it "
                "with X.toarray() if it fits in memory."
            )
        if not hasattr(X, "ndim") and hasattr(X, "__array__"):
            X = np.asarray(X)  # array-likes that NumPy functions refuse
        flat = getattr(X, "ndim", None) == 2 or (
            not hasattr(X, "ndim") and np.ndim(X) == 2
        )
        if flat:
            # Flat rows: scikit-learn's checks and messages, feature names too.
            X = validate_data(estimator, X, dtype=_FLOATS, reset=reset)
            if shape is None:
                shape = (1, X.shape[1]) if reset else estimator.input_shape_
            if int(np.prod(shape)) != X.shape[1]:
                raise ValueError(
                    f"X has {X.shape[1]} features per row, but input_shape="
                    f"{shape} holds {int(np.prod(shape))} values. Set input_shape "
                    "to the shape of one sample (channels first), e.g. (1, 8, 8) "
                    "for 64 pixels."
                )
            X = X.reshape((X.shape[0], *shape))
        else:
            X = check_array(X, dtype=_FLOATS, allow_nd=True,
                            ensure_all_finite=False, input_name="X")
            if X.ndim - 2 not in self.spatial_dims:
                ranks = ", ".join(f"{d + 2}" for d in self.spatial_dims)
                raise ValueError(
                    f"{owner} takes X of {ranks} dimensions (n_samples, channels, "
                    f"*spatial); got {X.ndim} dimensions, shape {X.shape}. Add the "
                    "channel axis (e.g. X[:, None]) or pass flat rows with "
                    "input_shape."
                )
            _finite(X, owner)
            if shape is not None and X.shape[1:] != shape:
                raise ValueError(
                    f"X has samples of shape {X.shape[1:]}, but input_shape={shape}."
                )
            if reset:
                estimator.n_features_in_ = int(np.prod(X.shape[1:]))
                estimator.__dict__.pop("feature_names_in_", None)
        if reset:
            estimator.input_shape_ = tuple(int(d) for d in X.shape[1:])
        else:
            _check_sample_shape(estimator, X.shape[1:])
        return X

    def validate_with_targets(self, estimator, X, y, *, reset, y_numeric=False):
        X = self.validate(estimator, X, reset=reset)
        return X, _check_targets(X, y, y_numeric)

    def dataset(self, X, y=None, sample_weight=None, *, dtype, device,
                target_dtype=None):
        return ArrayData(X, y, sample_weight, dtype=dtype, device=device,
                         target_dtype=target_dtype)

    def tags(self, tags):
        tags.input_tags.sparse = False
        tags.input_tags.three_d_array = True
        return tags


def _check_sample_shape(estimator, shape):
    fitted = tuple(estimator.input_shape_)
    if tuple(shape) == fitted:
        return
    owner = _owner(estimator)
    if len(shape) != len(fitted):
        problem = f"{len(shape)} dimensions per sample instead of {len(fitted)}"
    elif shape[0] != fitted[0]:
        problem = f"{shape[0]} channels instead of {fitted[0]}"
    else:
        problem = "another size"
    raise ValueError(
        f"X has samples of shape {tuple(shape)}, but {owner} was fitted on samples "
        f"of shape {fitted} ({problem}). Pass data shaped as in fit."
    )


def _check_targets(X, y, y_numeric):
    y = check_array(y, ensure_2d=False, dtype="numeric" if y_numeric else None,
                    input_name="y")
    _check_n_samples(len(X), y.shape[0])
    return y


def _check_n_samples(n_X, n_y):
    # scikit-learn's check_consistent_length message.
    if n_X != n_y:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{n_X}, {n_y}]"
        )


class PaddedSequences:
    """Sequences of varying lengths, zero-padded into one array.

    Indexable like an array along samples (``seqs[rows]``, and
    ``seqs[rows, ...]`` as scikit-learn's ``_safe_indexing`` asks), so
    scikit-learn's splitters take it as they take X; each subset is cut to
    its longest sequence.

    Parameters
    ----------
    values : ndarray of shape (n_samples, max_length, n_features)
        Zero beyond each sequence's length. (:class:`TokenSequences`:
        ``(n_samples, max_length)`` ids.)
    lengths : ndarray of shape (n_samples,), int64
    """

    def __init__(self, values, lengths):
        self.values = values
        self.lengths = lengths

    @property
    def shape(self):
        return self.values.shape

    @property
    def dtype(self):
        return self.values.dtype

    def __len__(self):
        return self.values.shape[0]

    def __getitem__(self, rows):
        if isinstance(rows, tuple) and len(rows) == 2 and rows[1] is Ellipsis:
            rows = rows[0]  # scikit-learn's _safe_indexing asks for X[rows, ...]
        if isinstance(rows, numbers.Integral):
            rows = [rows]
        return self._take(rows)

    def _take(self, rows):
        """The sequences ``rows`` (a list, array or slice), cut to their longest."""
        lengths = self.lengths[rows]
        return PaddedSequences(self.values[rows, : _longest(lengths)], lengths)

    def __array__(self, dtype=None, copy=None):
        # The padded values: what sklearn's utilities see if they convert.
        return self.values if dtype is None else self.values.astype(dtype)

    @property
    def size(self):
        return self.values.size


def _to_sequences(X, owner, dtype):
    """A list of (T_i, F) float arrays, checked: one width, finite, T_i >= 1."""
    items = []
    for i, seq in enumerate(X):
        try:
            seq = np.asarray(seq, dtype=dtype if dtype is not None else np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"Sequence {i} of X cannot be read as numbers ({exc}). {owner} takes "
                "a list of (T_i, n_features) numeric arrays."
            ) from None
        if seq.ndim == 1:
            seq = seq[:, None]
        if seq.ndim != 2:
            raise ValueError(
                f"Sequence {i} of X has {seq.ndim} dimensions, shape {seq.shape}; "
                f"{owner} takes sequences of shape (T_i, n_features) or (T_i,)."
            )
        if seq.shape[0] == 0:
            raise ValueError(
                f"Sequence {i} of X is empty; every sequence needs at least one step."
            )
        items.append(seq)
    if not items:
        raise ValueError(f"Found array with 0 sample(s) while a minimum of 1 is required by {owner}.")
    widths = {seq.shape[1] for seq in items}
    if len(widths) > 1:
        first = items[0].shape[1]
        bad = next(i for i, seq in enumerate(items) if seq.shape[1] != first)
        raise ValueError(
            f"The sequences of X have different numbers of features per step: "
            f"sequence 0 has {first}, sequence {bad} has {items[bad].shape[1]}. "
            "Every step needs the same features."
        )
    return items


def step_features(estimator):
    """Features per step of a fitted sequence model.

    ``n_step_features_``; a model fitted before it existed has them as
    ``n_features_in_`` (fitted on 3-D or ragged input, where the two agree).
    Flat rows keep ``n_features_in_`` as their number of columns, as
    scikit-learn's checks and pipelines expect.
    """
    state = vars(estimator)
    return state.get("n_step_features_", state.get("n_features_in_"))


def _sequence_layout(X):
    """``X`` and its number of dimensions, or None for ragged sequences.

    A list of equal-length rows is flat 2-D rows (scikit-learn passes
    ``X.tolist()``), a list of equal-shape arrays a 3-D array, and an object
    array of 2 or 3 dimensions its numbers; a list numpy cannot make
    rectangular, or a 1-D object array, holds ragged sequences.
    """
    if isinstance(X, np.ndarray):
        if X.dtype == object and X.ndim == 1:
            return X, None
        return X, X.ndim
    if hasattr(X, "ndim"):
        return X, X.ndim
    try:
        array = np.asarray(X)
    except (ValueError, TypeError):
        return X, None
    if array.dtype == object or array.ndim not in (2, 3):
        return X, None
    return array, array.ndim


class SequenceInput:
    """One sample is a sequence of steps with ``F`` features each.

    Parameters
    ----------
    input_shape : tuple of int or None
        ``(T, F)``: flat 2-D rows are reshaped to it. None: flat rows are
        univariate sequences ``(n_features, 1)``.
    per_step : bool, default=False
        Targets are per step, ``(n_samples, max_length, ...)``, zero-padded.
    """

    layout = "sequence"

    def __init__(self, input_shape=None, per_step=False):
        self.input_shape = input_shape
        self.per_step = per_step

    def validate(self, estimator, X, *, reset):
        """X as :class:`PaddedSequences`; sets ``n_features_in_`` (F) in fit."""
        owner = _owner(estimator)
        shape = check_input_shape(self.input_shape, owner=owner, min_rank=2,
                                  max_rank=2)
        flat = False
        if isinstance(X, PaddedSequences):
            values, lengths = X.values, X.lengths
            _finite(values, owner)
        elif sp.issparse(X):
            raise TypeError(
                f"{owner} takes dense sequences; got a sparse matrix. Convert it "
                "with X.toarray() if it fits in memory."
            )
        else:
            if not hasattr(X, "ndim") and hasattr(X, "__array__"):
                X = np.asarray(X)  # array-likes that NumPy functions refuse
            X, ndim = _sequence_layout(X)
            if ndim is None:
                values, lengths = self._ragged(X, owner)
            elif ndim == 2:
                flat = True
                X = validate_data(estimator, X, dtype=_FLOATS, reset=reset)
                if shape is None:
                    values = X[:, :, None]
                else:
                    if int(np.prod(shape)) != X.shape[1]:
                        raise ValueError(
                            f"X has {X.shape[1]} features per row, but input_shape="
                            f"{shape} holds {int(np.prod(shape))} values. Set "
                            "input_shape=(n_steps, n_features_per_step)."
                        )
                    values = X.reshape((X.shape[0], *shape))
                lengths = np.full(X.shape[0], values.shape[1], dtype=np.int64)
            elif ndim == 3:
                values = check_array(X, dtype=_FLOATS, allow_nd=True,
                                     ensure_all_finite=False, input_name="X")
                _finite(values, owner)
                lengths = np.full(values.shape[0], values.shape[1], dtype=np.int64)
            else:
                raise ValueError(
                    f"Reshape your data: {owner} takes X as a 3-D array (n_samples, "
                    "n_steps, "
                    "n_features), a list of (n_steps_i, n_features) arrays, or flat "
                    f"2-D rows; got {ndim} dimensions, shape {X.shape}."
                )
        if values.shape[1] == 0:
            raise ValueError(f"X has sequences of 0 steps; {owner} needs at least one.")
        width = values.shape[2]
        if reset:
            if not flat:
                # Flat rows keep validate_data's n_features_in_ (their number of
                # columns, which scikit-learn's checks and Pipelines expect).
                estimator.__dict__.pop("feature_names_in_", None)
                estimator.n_features_in_ = int(width)
            estimator.n_step_features_ = int(width)
        elif width != estimator.n_step_features_:
            raise ValueError(
                f"X has {width} features per step, but {owner} was fitted with "
                f"{estimator.n_step_features_} features per step."
            )
        return PaddedSequences(values, lengths)

    @staticmethod
    def _ragged(X, owner):
        items = _to_sequences(X, owner, None)
        for seq in items:
            _finite(seq, owner)
        lengths = np.array([len(seq) for seq in items], dtype=np.int64)
        dtype = np.result_type(*[seq.dtype for seq in items])
        dtype = dtype if dtype in _FLOATS else np.float64
        values = np.zeros((len(items), int(lengths.max()), items[0].shape[1]), dtype)
        for i, seq in enumerate(items):
            values[i, : len(seq)] = seq
        return values, lengths

    def validate_with_targets(self, estimator, X, y, *, reset, y_numeric=False):
        X = self.validate(estimator, X, reset=reset)
        return X, _check_targets(X, y, y_numeric)

    def dataset(self, X, y=None, sample_weight=None, *, dtype, device,
                target_dtype=None):
        """A :class:`~sklears_neural.core.data.SequenceData` over ``X``."""
        return SequenceData(X.values, X.lengths, y, sample_weight, dtype=dtype,
                            device=device, target_dtype=target_dtype,
                            per_step=self.per_step)

    def tags(self, tags):
        tags.input_tags.sparse = False
        tags.input_tags.three_d_array = True
        return tags



# -- token sequences ---------------------------------------------------------------


def read_token_sequences(X, *, name="X", owner):
    """Read a list of token sequences: strings, or 1-D integer arrays.

    Parameters
    ----------
    X : list, tuple, ndarray of dtype object or Series, of length n_samples
        Each item a ``str`` (its characters are the tokens) or a 1-D array
        of integer tokens; all of one of the two kinds. Empty items are
        allowed here (a kind decides whether it takes them).
    name : str, default="X"
        What the messages call it (``"X"`` or ``"y"``).
    owner : str
        The estimator's class name, for the messages.

    Returns
    -------
    kind : {"str", "int"}
        ``"int"`` when every sequence is empty.
    sequences : list of str, or list of list of int

    Raises
    ------
    TypeError
        A single string's container is not a list (sparse matrix,
        DataFrame, scalar), or a sequence is ``bytes``.
    ValueError
        A single string, a sequence of other than 1 dimension or of
        non-integer values, mixed kinds, or no sequence at all.
    """
    if isinstance(X, (str, bytes)):
        raise ValueError(
            f"{owner} takes {name} as a list of sequences; got a single string. "
            f"Wrap it in a list: [{X!r:.40}]."
        )
    if sp.issparse(X):
        raise TypeError(
            f"{owner} takes {name} as a list of token sequences (strings or 1-D "
            "integer arrays); got a sparse matrix."
        )
    if hasattr(X, "columns"):
        raise TypeError(
            f"{owner} takes {name} as a list of token sequences; got a DataFrame. "
            "Pass one column (a Series) or a list."
        )
    if not hasattr(X, "__len__") or getattr(X, "ndim", 1) == 0:
        raise TypeError(
            f"{owner} takes {name} as a list of token sequences (strings or 1-D "
            f"integer arrays); got {type(X).__name__}."
        )
    kinds, sequences = set(), []
    for i, seq in enumerate(X):
        if isinstance(seq, str):
            kinds.add("str")
            sequences.append(seq)
            continue
        if isinstance(seq, bytes):
            raise TypeError(
                f"Sequence {i} of {name} is bytes; {owner} reads str as characters. "
                "Decode it first (seq.decode())."
            )
        array = np.asarray(seq)
        if array.ndim != 1:
            raise ValueError(
                f"Sequence {i} of {name} has {array.ndim} dimensions, shape "
                f"{array.shape}; {owner} takes strings or 1-D arrays of integer tokens."
            )
        if array.size == 0:
            sequences.append([])
            continue
        if array.dtype.kind not in "iu":
            raise ValueError(
                f"Sequence {i} of {name} holds {array.dtype} values; tokens must be "
                "integers (or the characters of a str). Cast ids with "
                ".astype(np.int64)."
            )
        kinds.add("int")
        sequences.append(array.tolist())
    if not sequences:
        raise ValueError(
            f"Found array with 0 sample(s) while a minimum of 1 is required by {owner}."
        )
    if len(kinds) > 1:
        raise ValueError(
            f"{name} mixes strings and integer arrays; {owner} takes one kind of "
            "sequence for all samples."
        )
    # All empty: no evidence either way; integer arrays are the plain case.
    kind = kinds.pop() if kinds else "int"
    if kind == "str":
        sequences = ["" if isinstance(s, list) else s for s in sequences]
    return kind, sequences


def learn_vocabulary(sequences):
    """``{token: id}`` of the tokens in ``sequences``, ids from :data:`N_SPECIAL`.

    Parameters
    ----------
    sequences : list of str, or list of list of int

    Returns
    -------
    dict
        Token (a one-character str, or an int) to id, in sorted token order,
        so the same tokens always get the same ids.
    """
    tokens = sorted(set().union(*(set(s) for s in sequences)))
    return {token: N_SPECIAL + i for i, token in enumerate(tokens)}


def tokens_to_ids(sequences, vocabulary, *, unknown="error", name="X", owner):
    """Map each sequence's tokens to their ids.

    Parameters
    ----------
    sequences : list of str, or list of list of int
    vocabulary : dict
        Token to id, as :func:`learn_vocabulary` gives it.
    unknown : {"error", "unk"}, default="error"
        A token outside ``vocabulary`` raises, or becomes :data:`UNK`.
    name : str, default="X"
        ``"X"`` or ``"y"``: the message says how to fix each.
    owner : str
        The estimator's class name, for the message.

    Returns
    -------
    list of list of int

    Raises
    ------
    ValueError
        With ``unknown="error"``, naming up to five unseen tokens and how
        many sequences hold some.
    """
    missing = object()
    ids, unseen, n_bad = [], [], 0
    for seq in sequences:
        row = [vocabulary.get(token, missing) for token in seq]
        if any(i is missing for i in row):
            n_bad += 1
            for token, i in zip(seq, row):
                if i is missing and token not in unseen and len(unseen) < 5:
                    unseen.append(token)
            row = [UNK if i is missing else i for i in row]
        ids.append(row)
    if n_bad and unknown == "error":
        if name == "X":
            fix = ("Set handle_unknown='unk' to read them as one unknown token, or "
                   "fit on data that holds them.")
        else:
            fix = ("The model can only output tokens it saw in the targets of its "
                   "first fit; fit again (warm_start=False) on data that holds them.")
        raise ValueError(
            f"{name} has tokens that {owner} did not see in fit, e.g. {unseen} (in "
            f"{n_bad} sequence(s)). {fix}"
        )
    return ids


def pad_ids(rows, *, before=(), after=()):
    """Rows of ids, ``before`` and ``after`` added, in one array padded with PAD.

    Parameters
    ----------
    rows : list of list of int
    before, after : tuple of int, default=()
        Ids put before and after every row (``(BOS,)``, ``(EOS,)``).

    Returns
    -------
    ids : ndarray of shape (n_samples, max(1, longest)), int64
    lengths : ndarray of shape (n_samples,), int64
        Each row's length, ``before`` and ``after`` included.
    """
    lengths = np.array([len(before) + len(r) + len(after) for r in rows],
                       dtype=np.int64)
    out = np.full((len(rows), max(int(lengths.max()), 1)), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : lengths[i]] = [*before, *r, *after]
    return out, lengths


def ids_to_tokens(ids, vocabulary, kind):
    """Rows of ids back to token sequences, each cut at its first reserved id.

    The inverse of :func:`tokens_to_ids` for decoded outputs: a row ends at
    its first :data:`EOS` or :data:`PAD` (any id below :data:`N_SPECIAL`).

    Parameters
    ----------
    ids : ndarray of shape (n_samples, T), int
    vocabulary : dict
        Token to id, ids ``N_SPECIAL, N_SPECIAL + 1, ...`` as
        :func:`learn_vocabulary` gives them.
    kind : {"str", "int"}
        Strings (tokens joined) or int64 arrays, as ``read_token_sequences``
        read the sequences the vocabulary was learned from.

    Returns
    -------
    ndarray of shape (n_samples,), dtype object
    """
    tokens = sorted(vocabulary, key=vocabulary.get)
    out = np.empty(len(ids), dtype=object)
    for i, row in enumerate(np.asarray(ids).astype(np.int64)):
        end = np.flatnonzero(row < N_SPECIAL)
        row = row[: end[0] if len(end) else len(row)]
        seq = [tokens[j - N_SPECIAL] for j in row]
        out[i] = "".join(seq) if kind == "str" else np.asarray(seq, dtype=np.int64)
    return out


class TokenSequences(PaddedSequences):
    """Validated token sequences: padded ids, their lengths, and token targets.

    A :class:`PaddedSequences` of ids (``values`` is ``ids``), indexable
    along samples the same way; a subset's targets are cut to its longest
    target too.

    Parameters
    ----------
    ids : ndarray of shape (n_samples, S), int64
        Token ids, :data:`PAD` beyond each length.
    lengths : ndarray of shape (n_samples,), int64
        Each >= 1.
    targets : ndarray of shape (n_samples, T + 2), int64, or None, default=None
        Token targets: :data:`BOS`, the target ids, :data:`EOS`, then
        :data:`PAD`. None without token targets, and at prediction.
    """

    def __init__(self, ids, lengths, targets=None):
        super().__init__(ids, lengths)
        self.targets = targets

    @property
    def ids(self):
        return self.values

    def _take(self, rows):
        lengths = self.lengths[rows]
        targets = None
        if self.targets is not None:
            targets = self.targets[rows]
            targets = targets[:, : _longest((targets != PAD).sum(1))]
        return TokenSequences(self.ids[rows, : _longest(lengths)], lengths, targets)


class TokenSequenceInput:
    """One sample is a sequence of tokens: a string (characters) or a 1-D int array.

    Validates X (and y) identically in ``fit`` and ``predict``, learns the
    vocabularies in ``fit``, maps tokens to ids after the reserved ones
    (:class:`TokenSequences`) and makes
    :class:`~sklears_neural.core.data.TokenData`. In ``fit`` (``reset``) it
    sets on the estimator ``vocabulary_`` (``{"input": {token: id}}``, plus
    ``"output"`` with token targets), ``n_features_in_ = 1`` (one token
    per step), and the private ``_input_type`` (and ``_output_type``),
    ``"str"`` or ``"int"``, which later calls must match. Every input
    sequence needs at least one token; token targets may be empty.

    Parameters
    ----------
    handle_unknown : {"error", "unk"}, default="error"
        What an input token not seen in fit does: raise (naming it), or
        become the unknown id :data:`UNK`. Unknown target tokens always
        raise: a model cannot output them.
    token_targets : bool, default=False
        Whether y is token sequences too, with their own vocabulary
        (``vocabulary_["output"]``), framed by :data:`BOS` and :data:`EOS`
        and batched for teacher forcing (sequence to sequence). False:
        y is per-sequence targets (labels, values), checked as the other
        kinds check them.
    """

    layout = "tokens"

    def __init__(self, handle_unknown="error", token_targets=False):
        self.handle_unknown = handle_unknown
        self.token_targets = token_targets

    @staticmethod
    def _check_type(estimator, kind, fitted, name):
        if kind != fitted:
            said = {"str": "strings", "int": "integer arrays"}
            raise ValueError(
                f"{name} holds {said[kind]}, but {_owner(estimator)} was fitted on "
                f"{said[fitted]}. Pass {name} as in fit."
            )

    def validate(self, estimator, X, *, reset):
        """X as :class:`TokenSequences` (no targets); learns ``vocabulary_`` in fit."""
        if isinstance(X, TokenSequences):
            return X
        owner = _owner(estimator)
        kind, sequences = read_token_sequences(X, name="X", owner=owner)
        for i, seq in enumerate(sequences):
            if len(seq) == 0:
                raise ValueError(
                    f"Sequence {i} of X is empty; every input sequence needs at least "
                    "one token."
                )
        if reset:
            estimator.vocabulary_ = {"input": learn_vocabulary(sequences)}
            if self.token_targets:
                estimator.vocabulary_["output"] = {}
            estimator._input_type = kind
            estimator.n_features_in_ = 1
            estimator.__dict__.pop("feature_names_in_", None)
        else:
            self._check_type(estimator, kind, estimator._input_type, "X")
        ids = tokens_to_ids(sequences, estimator.vocabulary_["input"],
                            unknown=self.handle_unknown, name="X", owner=owner)
        return TokenSequences(*pad_ids(ids))

    def validate_with_targets(self, estimator, X, y, *, reset, y_numeric=False):
        """``(X, y)`` validated; with token targets, learns their vocabulary in fit.

        Returns
        -------
        X : TokenSequences
            Carrying the target ids with token targets.
        y : ndarray
            Per-sequence targets as given, or with token targets the ids
            ``(n_samples, T + 2)`` (as ``X.targets``).
        """
        owner = _owner(estimator)
        if y is None:
            raise ValueError(
                f"This {owner} estimator requires y to be passed, but the target y "
                "is None."
            )
        X = self.validate(estimator, X, reset=reset)
        if not self.token_targets:
            return X, _check_targets(X, y, y_numeric)
        kind, sequences = read_token_sequences(y, name="y", owner=owner)
        _check_n_samples(len(X), len(sequences))
        if reset:
            estimator.vocabulary_["output"] = learn_vocabulary(sequences)
            estimator._output_type = kind
        else:
            self._check_type(estimator, kind, estimator._output_type, "y")
        ids = tokens_to_ids(sequences, estimator.vocabulary_["output"], unknown="error",
                            name="y", owner=owner)
        targets, _ = pad_ids(ids, before=(BOS,), after=(EOS,))
        return TokenSequences(X.ids, X.lengths, targets), targets

    def dataset(self, X, y=None, sample_weight=None, *, dtype, device,
                target_dtype=None):
        """A :class:`~sklears_neural.core.data.TokenData` over ``X``."""
        return TokenData(X, y, sample_weight, dtype=dtype, device=device,
                         target_dtype=target_dtype)

    def example_inputs(self, estimator, *, n_samples=1, n_steps=1, dtype=torch.float32,
                       device="cpu"):
        """A batch's inputs as the network receives them, from ``vocabulary_``.

        The core probes a loaded network with it
        (:func:`~sklears_neural.core.persistence.example_inputs`): sources
        of ``n_steps`` copies of the largest input id and, with token
        targets, decoder inputs ``BOS`` then the largest output id, so a
        vocabulary larger than the saved embeddings fails there. ``dtype``
        is unused: ids are int64.

        Returns
        -------
        tuple of Tensor
            ``(src, src_lengths)``, or with token targets ``(src,
            src_lengths, tgt_in, tgt_lengths)``; lengths on the CPU.

        Raises
        ------
        ValueError
            If ``vocabulary_`` is missing or malformed.
        """
        vocabulary = vars(estimator).get("vocabulary_")
        keys = {"input", "output"} if self.token_targets else {"input"}
        if not (isinstance(vocabulary, dict) and set(vocabulary) == keys
                and all(isinstance(v, dict) for v in vocabulary.values())):
            said = "the input and output vocabularies" if self.token_targets else (
                "the input vocabulary")
            raise ValueError(
                f"vocabulary_ is {vocabulary!r:.50}, not a dict of {said}."
            )
        top_in = N_SPECIAL + len(vocabulary["input"]) - 1
        src = torch.full((n_samples, n_steps), max(top_in, UNK), dtype=torch.long,
                         device=device)
        src_lengths = torch.full((n_samples,), n_steps, dtype=torch.long)
        if not self.token_targets:
            return src, src_lengths
        top_out = max(EOS, N_SPECIAL + len(vocabulary["output"]) - 1)
        tgt_in = torch.tensor([BOS, top_out], dtype=torch.long, device=device)
        return (src, src_lengths, tgt_in.expand(n_samples, 2).contiguous(),
                torch.full((n_samples,), 2, dtype=torch.long))

    def tags(self, tags):
        tags.input_tags.two_d_array = False
        tags.input_tags.sparse = False
        tags.input_tags.string = True
        if self.token_targets:
            tags.target_tags.required = True
        return tags
