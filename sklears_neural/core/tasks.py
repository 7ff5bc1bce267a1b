"""Task mixins: what a classifier or a regressor adds to the base estimator.

They own the targets: label encoding, the per-sample loss (and its fused
mean), how raw outputs become probabilities and predictions, and the
validation score. A family combines one with
:class:`~sklears_neural.core.estimator.BaseNeuralEstimator` and its own
``_build_module``::

    class MLPClassifier(NeuralClassifierMixin, ClassifierMixin, _BaseMLP): ...
"""

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import column_or_1d
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.metaestimators import available_if

from sklears_neural.core._compat import (
    StrOptions,
    _check_partial_fit_first_call,
    _check_sample_weight,
    _fit_context,
)

__all__ = [
    "NeuralClassifierMixin",
    "NeuralRegressorMixin",
    "NeuralUnsupervisedMixin",
    "labels_from_outputs",
    "labels_from_probabilities",
]


def _validate_with_targets(estimator, X, y, *, reset, y_numeric=False):
    """X through the family's input kind, y checked alongside it."""
    if y is None:
        raise ValueError(
            f"This {type(estimator).__name__} estimator requires y to be passed, "
            "but the target y is None."
        )
    return estimator._input_kind().validate_with_targets(
        estimator, X, y, reset=reset, y_numeric=y_numeric
    )


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
        return classes[probabilities.argmax(axis=1)]
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
        # The method: np.argmax's dispatch costs a one-row predict 1 us more.
        return classes[outputs.argmax(axis=1)]
    if kind == "multilabel-indicator":
        return (outputs > 0).astype(np.intp)
    if kind == "binary" and outputs.shape[1] == 1:
        if len(classes) == 1:
            return np.repeat(classes[0], len(outputs))
        return classes[(outputs[:, 0] > 0).astype(np.intp)]
    return None


class NeuralClassifierMixin:
    """Targets of a classifier: labels, log-loss, probabilities.

    Multiclass targets train a softmax over ``n_classes`` outputs;
    binary and multilabel-indicator targets train one logistic output per
    label, as scikit-learn's ``MLPClassifier`` does.
    """

    _parameter_constraints: dict = {
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _validate_training_data(self, X, y, sample_weight, *, reset, incremental,
                                classes):
        X, y = _validate_with_targets(self, X, y, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self._fit_labels(y, incremental=incremental, classes=classes)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        if self.class_weight is not None:
            class_weights = compute_sample_weight(self.class_weight, y)
            sample_weight = (
                class_weights if sample_weight is None else sample_weight * class_weights
            )
        return X, self._encode(y), sample_weight

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Run one epoch over ``X, y``, continuing weights and optimizer state.

        With ``early_stopping=True``, each call holds out
        ``validation_fraction`` of its data, records the held-out score, and
        keeps the best weights; once ``n_iter_no_change`` calls pass without
        improvement, the best weights are restored and ``converged_`` becomes
        True.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Or the input the family takes (see ``fit``).
        y : array-like of shape (n_samples,) or (n_samples, n_classes)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array-like of shape (n_classes,), default=None
            Every class of the stream; required on the first call.

        Returns
        -------
        self : object
        """
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _fit_labels(self, y, *, incremental, classes):
        if incremental and _check_partial_fit_first_call(self, classes):
            # The first partial_fit call learns the label set from `classes`.
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        elif not incremental and (not hasattr(self, "classes_") or not self.warm_start):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
            return
        labels = unique_labels(y)
        if self.warm_start and not incremental:
            if set(labels) != set(self.classes_):
                raise ValueError(
                    "warm_start can only be used where `y` has the same classes as "
                    f"in the previous call to fit. Previously got {self.classes_}, "
                    f"`y` has {labels}"
                )
        elif len(np.setdiff1d(labels, self.classes_, assume_unique=True)):
            raise ValueError(
                f"`y` has classes not in `self.classes_`. `self.classes_` has "
                f"{self.classes_}. 'y' has {labels}."
            )

    def _is_multiclass(self):
        return self._label_binarizer.y_type_ == "multiclass"

    def _encode(self, y):
        if self._is_multiclass():
            # Class indices: cross-entropy on indices is cheaper than one-hot.
            return np.searchsorted(self.classes_, y).astype(np.int64, copy=False)
        return self._label_binarizer.transform(y).astype(np.float64)

    def _target_dtype(self, dtype):
        return torch.long if self._is_multiclass() else dtype

    def _n_outputs_for(self, targets):
        if self._is_multiclass():
            return len(self.classes_)
        return targets.shape[1]

    def _output_activation(self):
        return "softmax" if self._is_multiclass() else "logistic"

    def _stratify_labels(self, targets):
        # The labels themselves, so that an error names them ("Classes with
        # too few members are: ['True']"); the split is the one the encoded
        # values give, as the encoding keeps the sorted order of classes_.
        # Multilabel targets are not stratified, as in scikit-learn.
        if targets.ndim == 1:
            return self.classes_[targets]
        if targets.shape[1] == 1:
            return self.classes_[targets[:, 0].astype(np.intp)]
        return None

    def _loss(self, output, target):
        if target.ndim == 1:
            return F.cross_entropy(output, target, reduction="none")
        return F.binary_cross_entropy_with_logits(
            output, target, reduction="none"
        ).sum(dim=1)

    def _fused_loss_kind(self):
        if self._is_multiclass():
            return "softmax_cross_entropy"
        return "logistic_cross_entropy"

    def _mean_loss(self, output, target):
        if target.ndim == 1:
            return F.cross_entropy(output, target)
        # The mean over samples of a sum over labels.
        return F.binary_cross_entropy_with_logits(output, target) * output.shape[1]

    def _probabilities(self, outputs):
        if self._is_multiclass():
            outputs = outputs - outputs.max(axis=1, keepdims=True)
            np.exp(outputs, out=outputs)
            outputs /= outputs.sum(axis=1, keepdims=True)
            return outputs
        # Clipped like scikit-learn's log-loss: callers (and its checks)
        # expect probabilities strictly inside (0, 1).
        eps = np.finfo(np.float64).eps
        return np.clip(1.0 / (1.0 + np.exp(-outputs)), eps, 1.0 - eps)

    def _outputs_to_predictions(self, outputs):
        # Straight from the logits where that is the same rule: a float64
        # softmax costs as much as the rest of a one-row prediction.
        labels = labels_from_outputs(self._label_binarizer, outputs)
        if labels is not None:
            return labels
        probabilities = self._probabilities(outputs)
        if probabilities.shape[1] == 1:
            probabilities = probabilities.ravel()
        return labels_from_probabilities(self._label_binarizer, probabilities)

    def _score_predictions(self, targets, predictions, sample_weight):
        if targets.ndim == 1 and self._is_multiclass():
            targets = self.classes_[targets]
        else:
            targets = self._label_binarizer.inverse_transform(targets)
        return accuracy_score(targets, predictions, sample_weight=sample_weight)

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Labels from ``classes_``; a 0/1 indicator matrix for multilabel
            targets.
        """
        return self._outputs_to_predictions(self._raw_outputs(X))

    def predict_proba(self, X):
        """Probability estimates, as float64 whatever the compute precision.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``. For multilabel targets, column ``j``
            is the probability of label ``j``.
        """
        probabilities = self._probabilities(self._raw_outputs(X))
        if probabilities.shape[1] == 1:
            p = probabilities.ravel()
            return np.column_stack([1.0 - p, p])
        return probabilities

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        probabilities = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(probabilities, out=probabilities)


class NeuralRegressorMixin:
    """Targets of a regressor: floats, squared error or Poisson deviance."""

    _parameter_constraints: dict = {
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _validate_training_data(self, X, y, sample_weight, *, reset, incremental,
                                classes):
        X, y = _validate_with_targets(self, X, y, reset=reset, y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError(
                "Some value(s) of y are negative which is not allowed for "
                "loss='poisson'. Use loss='squared_error' or shift the targets."
            )
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        targets = y.reshape(-1, 1) if y.ndim == 1 else y
        if not reset and targets.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {targets.shape[1]} outputs but this model was fitted with "
                f"{self.n_outputs_}. Fit a new model (warm_start=False)."
            )
        return X, targets.astype(np.float64, copy=False), sample_weight

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Run one epoch over ``X, y``, continuing weights and optimizer state.

        With ``early_stopping=True``, see
        :meth:`NeuralClassifierMixin.partial_fit`.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Or the input the family takes (see ``fit``).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : object
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def _target_dtype(self, dtype):
        return dtype

    def _n_outputs_for(self, targets):
        return targets.shape[1]

    def _output_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _stratify_labels(self, targets):
        return None

    def _loss(self, output, target):
        if self.out_activation_ == "exp":
            # Half Poisson deviance with a log link: the module outputs log(mu).
            # The xlogy(y, y) - y term is constant; keep it so loss_ matches
            # scikit-learn's value.
            return (
                torch.exp(output) - target * output + torch.xlogy(target, target) - target
            ).sum(dim=1)
        return 0.5 * (output - target).pow(2).sum(dim=1)

    def _fused_loss_kind(self):
        return None if self.out_activation_ == "exp" else "squared_error"

    def _mean_loss(self, output, target):
        if self.out_activation_ == "exp":
            return super()._mean_loss(output, target)
        # Half the squared error summed over outputs, averaged over samples.
        return F.mse_loss(output, target) * (0.5 * output.shape[1])

    def _outputs_to_predictions(self, outputs):
        if self.out_activation_ == "exp":
            outputs = np.exp(outputs)
        return outputs.ravel() if outputs.shape[1] == 1 else outputs

    def _score_predictions(self, targets, predictions, sample_weight):
        if targets.shape[1] == 1:
            targets = targets.ravel()
        if not np.isfinite(predictions).all():
            return np.nan
        return r2_score(targets, predictions, sample_weight=sample_weight)

    def predict(self, X):
        """Predict targets.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            float64 predictions.
        """
        return self._outputs_to_predictions(self._raw_outputs(X))


class NeuralUnsupervisedMixin:
    """Estimators fitted on X alone: ``fit(X)``, then ``transform`` or ``score_samples``.

    The targets of training are the inputs themselves (an autoencoder
    reconstructs them; a density model's loss reads only its output), so
    every toolbox feature (solvers, schedules, early stopping on held-out
    rows, ``partial_fit``, resume, save/load) applies unchanged. A family
    sets the per-sample ``_loss(output, X)`` (default: half the squared
    reconstruction error) and adds ``transform``/``score_samples`` on
    :meth:`~sklears_neural.core.estimator.BaseNeuralEstimator._raw_outputs`
    with its own ``forward``. Early stopping watches minus the held-out
    loss; ``score(X)`` is minus the mean loss, so greater is better, as
    scikit-learn's model selection expects.
    """

    def _validate_training_data(self, X, y, sample_weight, *, reset, incremental,
                                classes):
        X = self._input_kind().validate(self, X, reset=reset)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        return X, X, sample_weight

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, sample_weight=None):
        """Run one epoch over ``X``, continuing weights and optimizer state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Or the input the family takes (see ``fit``).
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : object
        """
        return self._fit(X, None, sample_weight, incremental=True)

    def _target_dtype(self, dtype):
        return dtype

    def _n_outputs_for(self, targets):
        return self.n_features_in_

    def _output_activation(self):
        return "identity"

    def _stratify_labels(self, targets):
        return None

    def _loss(self, output, target):
        return 0.5 * (output - target).pow(2).flatten(1).sum(dim=1)

    def _validation_score(self, outputs, targets, sample_weight, valid_loss):
        return -valid_loss

    def score_samples(self, X):
        """Minus each sample's loss (its reconstruction error, or negative log-likelihood).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Greater is better.
        """
        return -self._sample_losses(X)

    def score(self, X, y=None, sample_weight=None):
        """Minus the mean per-sample loss on ``X`` (weighted by ``sample_weight``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
        """
        return float(np.average(self.score_samples(X), weights=sample_weight))

    def _sample_losses(self, X):
        loss = self._loss

        def forward(module, inputs):
            # The loss per sample, in the dtype the module computes.
            return loss(self._forward(module, inputs), inputs)[:, None]

        return self._raw_outputs(X, forward=forward)[:, 0]
