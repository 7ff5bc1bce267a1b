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

Adding a kind (graphs, environments) means writing ``validate``,
``dataset`` and ``tags`` for it here; the estimator layer does not change.
"""

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_array, validate_data

from sklears_neural.core.data import ArrayData, SequenceData

__all__ = [
    "TABULAR",
    "ArrayInput",
    "PaddedSequences",
    "SequenceInput",
    "TabularInput",
    "check_input_shape",
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
    if y.shape[0] != len(X):
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{len(X)}, {y.shape[0]}]"
        )
    return y


class PaddedSequences:
    """Sequences of varying lengths, zero-padded into one array.

    Indexable like an array along samples (``seqs[rows]``), so scikit-learn's
    splitters and ``_safe_indexing`` take it as they take X.

    Parameters
    ----------
    values : ndarray of shape (n_samples, max_length, n_features)
        Zero beyond each sequence's length.
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
        lengths = self.lengths[rows]
        longest = int(lengths.max()) if len(lengths) else 0
        return PaddedSequences(self.values[rows, :longest], lengths)

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
            ndim = getattr(X, "ndim", None)
            if ndim is None or (isinstance(X, np.ndarray) and X.dtype == object):
                values, lengths = self._ragged(X, owner)
            elif ndim == 2:
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
                    f"{owner} takes X as a 3-D array (n_samples, n_steps, "
                    "n_features), a list of (n_steps_i, n_features) arrays, or flat "
                    f"2-D rows; got {ndim} dimensions, shape {X.shape}."
                )
        if values.shape[1] == 0:
            raise ValueError(f"X has sequences of 0 steps; {owner} needs at least one.")
        width = values.shape[2]
        if reset:
            if values.ndim == 3 and getattr(X, "ndim", None) != 2:
                estimator.__dict__.pop("feature_names_in_", None)
            estimator.n_features_in_ = int(width)
        elif width != estimator.n_features_in_:
            raise ValueError(
                f"X has {width} features per step, but {owner} was fitted with "
                f"{estimator.n_features_in_} features per step."
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

