"""What the sequence families (RNN, Transformer) share: input and per-step targets.

X is one sequence per sample (see :class:`~sklears_neural.core.inputs.SequenceInput`):
a 3-D array ``(n_samples, n_steps, n_features)``, a list of ``(n_steps_i,
n_features)`` or ``(n_steps_i,)`` arrays of any lengths, or flat 2-D rows
(univariate sequences, or reshaped by ``input_shape``). Batches are padded to
their longest sequence and carry the lengths.

Targets are one per sequence by default, handled by the task mixins of
:mod:`sklears_neural.core.tasks` unchanged. With ``per_step=True`` there is
one per valid step:

- ``y`` is an array ``(n_samples, n_steps)`` or ``(n_samples, n_steps,
  n_outputs)`` whose second axis is the longest sequence of X (steps past a
  sequence's length are ignored), or a list of ``(n_steps_i,)`` /
  ``(n_steps_i, n_outputs)`` arrays matching each sequence's length;
- the task mixin sees the valid steps as rows: labels are encoded
  (``classes_``), checked and scored exactly as for a sequence-to-one model;
- the targets are padded again with a value no real target takes (class
  index -1, or NaN), which is how the loss finds the padding: it averages the
  mixin's per-row loss over each sequence's valid steps, so every sequence
  counts once in the mean over a batch, whatever its length;
- ``predict`` returns a list of per-step arrays for a list X, an array
  ``(n_samples, n_steps[, ...])`` for array X; ``score`` counts each valid
  step once (weighted by its sequence's ``sample_weight``).

Per-step is a parameter rather than guessed from ``y``: a ``(n_samples, 8)``
target is 8 outputs per sequence or one per step of an 8-step sequence, and
only the user knows which.
"""

import numpy as np
import torch
from sklearn.utils.validation import check_array, check_is_fitted

from sklears_neural.core._compat import _check_sample_weight
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.inputs import PaddedSequences, SequenceInput
from sklears_neural.core.tasks import NeuralClassifierMixin, NeuralRegressorMixin

__all__ = [
    "SEQUENCE_PARAMETERS",
    "SequenceClassifierMixin",
    "SequenceRegressorMixin",
    "StepTargetsInput",
]

#: numpydoc entries of the parameters every sequence family has.
SEQUENCE_PARAMETERS = {
    "per_step": """\
per_step : bool, default=False
    One target per time step instead of one per sequence: ``y`` is
    ``(n_samples, n_steps[, n_outputs])`` or a list of ``(n_steps_i,
    [n_outputs])`` arrays matching the sequences' lengths; ``predict``
    returns per-step predictions (a list for list ``X``). The loss is the
    mean over each sequence's valid steps; padding never counts.""",
    "input_shape": """\
input_shape : tuple of (int, int) or None, default=None
    ``(n_steps, n_features)`` that flat 2-D rows are reshaped to (row-major),
    so the model can follow a ``StandardScaler`` in a ``Pipeline``. None:
    flat rows are univariate sequences of ``n_columns`` steps. 3-D arrays
    and lists of sequences ignore it.""",
}

_NO_CLASS = -1  # class index of padded steps


def _valid_mask(lengths, n_steps):
    """``(n_samples, n_steps)`` bool: True where a step lies within its sequence."""
    return np.arange(n_steps)[None, :] < np.asarray(lengths)[:, None]


def _flat_step_targets(y, lengths, n_steps, owner, *, numeric):
    """The valid steps of per-step targets, sequence after sequence.

    Parameters
    ----------
    y : array-like or list of array-like
    lengths : ndarray of shape (n_samples,)
    n_steps : int
        Padded length of X (its longest sequence).
    owner : str
    numeric : bool
        Whether targets must be numbers (regression).

    Returns
    -------
    ndarray of shape (sum(lengths),) or (sum(lengths), n_outputs)
    """
    n_samples = len(lengths)
    ragged = not hasattr(y, "ndim") or (isinstance(y, np.ndarray) and y.dtype == object)
    if not ragged:
        y = np.asarray(y)
        if y.ndim < 2:
            raise ValueError(
                "per_step=True needs a target per time step: y of shape (n_samples, "
                "n_steps) or (n_samples, n_steps, n_outputs), or a list of "
                f"per-sequence arrays; got y of shape {y.shape}. For one target per "
                "sequence, set per_step=False."
            )
        if y.shape[0] != n_samples:
            raise ValueError(
                "Found input variables with inconsistent numbers of samples: "
                f"[{n_samples}, {y.shape[0]}]"
            )
        if y.shape[1] != n_steps:
            raise ValueError(
                f"y has {y.shape[1]} steps per sequence, but the sequences of X are "
                f"{n_steps} steps long (the longest). Give y one target per step, or "
                "a list of arrays matching each sequence's length."
            )
        flat = y[_valid_mask(lengths, n_steps)]
    else:
        items = list(y)
        if len(items) != n_samples:
            raise ValueError(
                "Found input variables with inconsistent numbers of samples: "
                f"[{n_samples}, {len(items)}]"
            )
        items = [np.asarray(item) for item in items]
        for i, (item, length) in enumerate(zip(items, lengths)):
            if item.ndim not in (1, 2) or item.shape[0] != length:
                raise ValueError(
                    f"The targets of sequence {i} have shape {item.shape}, but the "
                    f"sequence has {length} steps: per_step=True needs ({length},) or "
                    f"({length}, n_outputs) targets for it."
                )
        if len({item.shape[1:] for item in items}) > 1:
            raise ValueError(
                "The per-step targets have different numbers of outputs per step: "
                f"{sorted({item.shape[1:] for item in items})}. Every step needs the "
                "same outputs."
            )
        flat = np.concatenate(items)
    return check_array(flat, ensure_2d=False, dtype="numeric" if numeric else None,
                       input_name="y", estimator=owner)


def _pad_steps(flat, lengths, n_steps):
    """Flat valid-step targets back to ``(n_samples, n_steps, ...)``, padded.

    Padding takes a value no target takes: class index -1, or NaN.
    """
    fill = np.nan if np.issubdtype(flat.dtype, np.floating) else _NO_CLASS
    out = np.full((len(lengths), n_steps, *flat.shape[1:]), fill, dtype=flat.dtype)
    out[_valid_mask(lengths, n_steps)] = flat
    return out


def _valid_steps_of(target):
    """``(batch, steps)`` bool mask of padded per-step targets (tensor or ndarray)."""
    if target.dtype.is_floating_point if isinstance(target, torch.Tensor) else (
        np.issubdtype(target.dtype, np.floating)
    ):
        valid = target == target  # False at NaN only
        return valid if valid.ndim == 2 else valid[..., 0]
    return target >= 0


class StepTargetsInput(SequenceInput):
    """:class:`SequenceInput` whose targets have one row per valid time step.

    ``validate_with_targets`` returns X and the valid steps of ``y`` as rows
    ``(sum(lengths), ...)``, sequence after sequence, so a task mixin
    encodes and checks them as it would targets of one row per sample.
    """

    def __init__(self, input_shape=None):
        super().__init__(input_shape=input_shape, per_step=True)

    def validate_with_targets(self, estimator, X, y, *, reset, y_numeric=False):
        X = self.validate(estimator, X, reset=reset)
        return X, _flat_step_targets(y, X.lengths, X.shape[1],
                                     estimator, numeric=y_numeric)


class _ValidSteps:
    """Validated sequences for prediction, and how to give flat step results back.

    The task mixins' ``predict``/``predict_proba`` receive this instead of
    X: ``_raw_outputs`` turns it into one row of outputs per valid step, so
    the mixin computes labels and probabilities per step unchanged, and
    :meth:`unflatten` regroups them by sequence.
    """

    def __init__(self, sequences, ragged):
        self.sequences = sequences
        self.ragged = ragged
        self.lengths = np.asarray(sequences.lengths)
        self.mask = _valid_mask(self.lengths, sequences.shape[1])

    def flatten(self, outputs):
        # outputs: (n_samples, n_steps', ...) with n_steps' <= n_steps.
        return outputs[self.mask[:, : outputs.shape[1]]]

    def unflatten(self, flat):
        if self.ragged:
            return np.split(flat, np.cumsum(self.lengths)[:-1])
        return flat.reshape(len(self.lengths), self.mask.shape[1], *flat.shape[1:])


class _SequenceTargets:
    """Per-step targets on top of a task mixin (it must come right after in the MRO).

    Sequence-to-one models (``per_step=False``) pass everything through to
    the task mixin.
    """

    def _validate_training_data(self, X, y, sample_weight, *, reset, incremental,
                                classes):
        X, targets, sample_weight = super()._validate_training_data(
            X, y, sample_weight, reset=reset, incremental=incremental, classes=classes
        )
        if self.per_step:
            targets = _pad_steps(targets, X.lengths, X.shape[1])
        return X, targets, sample_weight

    def _n_outputs_for(self, targets):
        # Per step: (n, T) class indices or (n, T, n_outputs) rows.
        return super()._n_outputs_for(targets[0] if self.per_step else targets)

    def _stratify_validation(self, targets):
        return False if self.per_step else super()._stratify_validation(targets)

    def _fused_loss_kind(self):
        return None if self.per_step else super()._fused_loss_kind()

    def _loss(self, output, target):
        if output.ndim != 3:
            return super()._loss(output, target)
        # A validation split keeps y padded to the longest sequence of all
        # of X, while its batches are cut to their own longest.
        target = target[:, : output.shape[1]]
        valid = _valid_steps_of(target)
        batch, steps, width = output.shape
        expanded = valid if target.ndim == 2 else valid.unsqueeze(-1)
        target = torch.where(expanded, target, torch.zeros((), dtype=target.dtype,
                                                             device=target.device))
        per_step = super()._loss(
            output.reshape(batch * steps, width),
            target.reshape(batch * steps, *target.shape[2:]),
        ).reshape(batch, steps)
        per_step = torch.where(valid, per_step, torch.zeros((), dtype=per_step.dtype,
                                                             device=per_step.device))
        counts = valid.sum(dim=1).clamp(min=1).to(per_step.dtype)
        return per_step.sum(dim=1) / counts

    def _mean_loss(self, output, target):
        if output.ndim != 3:
            return super()._mean_loss(output, target)
        return self._loss(output, target).mean()

    def _validation_score(self, outputs, targets, sample_weight, valid_loss):
        if not self.per_step:
            return super()._validation_score(outputs, targets, sample_weight,
                                             valid_loss)
        rows, flat_outputs, flat_targets, flat_weights = 0, [], [], []
        for out in outputs:
            part = targets[rows: rows + len(out), : out.shape[1]]
            valid = _valid_steps_of(part)
            flat_outputs.append(out[valid])
            flat_targets.append(part[valid])
            if sample_weight is not None:
                flat_weights.append(
                    np.repeat(sample_weight[rows: rows + len(out)], valid.sum(axis=1))
                )
            rows += len(out)
        predictions = self._outputs_to_predictions(np.concatenate(flat_outputs))
        weights = None if sample_weight is None else np.concatenate(flat_weights)
        return self._score_predictions(np.concatenate(flat_targets), predictions,
                                       weights)

    # -- prediction ------------------------------------------------------------

    def _valid_steps(self, X):
        check_is_fitted(self, "module_")
        ragged = not hasattr(X, "ndim") or (
            isinstance(X, np.ndarray) and X.dtype == object
        )
        if isinstance(X, PaddedSequences):
            ragged = bool(np.any(X.lengths != X.shape[1]))
        sequences = self._input_kind().validate(self, X, reset=False)
        return _ValidSteps(sequences, ragged)

    def _raw_outputs(self, X, forward=None):
        if isinstance(X, _ValidSteps):
            return X.flatten(super()._raw_outputs(X.sequences, forward))
        return super()._raw_outputs(X, forward)

    def _per_step(self, method, X):
        """``method(X)`` of the task mixin, per valid step and regrouped by sequence."""
        if not self.per_step or isinstance(X, _ValidSteps):
            return method(X)
        steps = self._valid_steps(X)
        return steps.unflatten(method(steps))

    def predict(self, X):
        """Predict for each sequence, or each step with ``per_step=True``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_steps, n_features) or list of arrays
            Sequences: a 3-D array, a list of ``(n_steps_i, n_features)`` or
            ``(n_steps_i,)`` arrays, or flat 2-D rows (see ``input_shape``).

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs), or per step
            With ``per_step=True``: ``(n_samples, n_steps[, n_outputs])`` for
            array X, a list of ``(n_steps_i[, n_outputs])`` arrays for list X.
        """
        return self._per_step(super().predict, X)

    def score(self, X, y, sample_weight=None):
        """The task's score: accuracy or R^2, over sequences or over valid steps.

        With ``per_step=True`` every valid step is one sample of the metric,
        weighted by its sequence's ``sample_weight``.

        Parameters
        ----------
        X : array-like or list of arrays
            Sequences, as for :meth:`predict`.
        y : array-like or list of arrays
            True targets, shaped as in ``fit``.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
        """
        if not self.per_step:
            return super().score(X, y, sample_weight=sample_weight)
        steps = self._valid_steps(X)
        flat = _flat_step_targets(y, steps.lengths, steps.mask.shape[1], self,
                                  numeric=isinstance(self, NeuralRegressorMixin))
        if sample_weight is not None:
            sample_weight = np.repeat(
                _check_sample_weight(sample_weight, steps.sequences), steps.lengths
            )
        return super().score(steps, flat, sample_weight=sample_weight)


class SequenceClassifierMixin(_SequenceTargets, NeuralClassifierMixin):
    """The classifier mixin of ``core.tasks``, with per-step labels."""

    def _validate_training_data(self, X, y, sample_weight, *, reset, incremental,
                                classes):
        if self.per_step and self.class_weight is not None:
            raise ValueError(
                "class_weight weighs sequences, but with per_step=True the labels are "
                "per step. Set class_weight=None (sample_weight still weighs whole "
                "sequences)."
            )
        return super()._validate_training_data(
            X, y, sample_weight, reset=reset, incremental=incremental, classes=classes
        )

    def predict_proba(self, X):
        """Probability estimates, per sequence or per step, as float64.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_steps, n_features) or list of arrays

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes), or per step
            Columns follow ``classes_``. With ``per_step=True``: ``(n_samples,
            n_steps, n_classes)`` for array X, a list of ``(n_steps_i,
            n_classes)`` arrays for list X.
        """
        return self._per_step(super().predict_proba, X)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_steps, n_features) or list of arrays

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes), or per step
        """
        return self._per_step(super().predict_log_proba, X)


class SequenceRegressorMixin(_SequenceTargets, NeuralRegressorMixin):
    """The regressor mixin of ``core.tasks``, with per-step targets."""


class BaseSequenceEstimator(BaseNeuralEstimator):
    """Base of the sequence families: input and per-step declarations."""

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "per_step": ["boolean"],
        "input_shape": [None, tuple, list],
    }

    def _input_kind(self):
        if self.per_step:
            return StepTargetsInput(input_shape=self.input_shape)
        return SequenceInput(input_shape=self.input_shape)

    def _step_width(self, n_features_in):
        """Features per time step, the width the network takes.

        ``n_features_in_`` is that width for 3-D and list input; for flat
        2-D rows scikit-learn wants it to be the number of columns, and the
        input kind then records the per-step width as ``n_step_features_``.
        """
        return int(self.__dict__.get("n_step_features_", n_features_in))

    def _check_deterministic(self, dropout):
        if not self._is_stochastic() and dropout > 0:
            raise ValueError(
                "solver='lbfgs' needs a deterministic objective, but "
                f"dropout={dropout} makes it random. Use solver='adam' or 'sgd', or "
                "dropout=0."
            )
