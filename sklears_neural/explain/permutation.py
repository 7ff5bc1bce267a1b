"""Permutation importance: how much a score drops when a feature is shuffled."""

from numbers import Integral, Real

import numpy as np
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import HasMethods, Interval

from sklears_neural.explain._base import Explainer
from sklears_neural.explain._explanation import Explanation
from sklears_neural.explain._model import PredictFunction

__all__ = ["PermutationImportance"]


class PermutationImportance(Explainer):
    """Permutation feature importance of any fitted estimator (a global method).

    The importance of feature ``j`` (Breiman, 2001; Fisher et al., 2019) is
    how much the estimator's score on ``(X, y)`` drops when column ``j`` of
    ``X`` is shuffled, breaking its link to the target:

    .. math::

        i_j = s(X, y) - \\frac{1}{K} \\sum_{k=1}^{K} s(X^{(j, k)}, y)

    over ``K = n_repeats`` shuffles ``X^(j,k)``. Computed by scikit-learn's
    :func:`sklearn.inspection.permutation_importance`, which this wraps
    into an :class:`Explanation`, for samples of any layout: images and 3-D
    sequences are shuffled value by value (a value of one sample moves to
    another sample, at the same position).

    Explains a **score** (``scoring``), not an output: a classifier's
    accuracy and a regressor's ``R^2`` by default. It needs the true
    targets: ``explain(X, y)``.

    Parameters
    ----------
    estimator : fitted estimator or Pipeline
    scoring : str, callable, list, tuple, dict or None, default=None
        As in scikit-learn: None is the estimator's ``score``. Several
        scorers give ``values`` a last axis, one per scorer
        (``output_names``).
    n_repeats : int, default=5
        Shuffles per feature.
    max_samples : int or float, default=1.0
        Samples drawn (without replacement) to score each repeat: an int
        count or a fraction of ``X``.
    random_state : None, int or RandomState, default=None
        Seeds the shuffles.
    n_jobs : int or None, default=None
        Features scored in parallel (scikit-learn's joblib processes).

    See Also
    --------
    KernelShapExplainer : per-sample attributions of an output.

    Notes
    -----
    Cost: ``1 + n_features * n_repeats`` scorings of ``max_samples`` rows.
    Correlated features share their importance: shuffling one leaves its
    information in the others, so both can look unimportant.

    The :class:`Explanation` has one row: ``values`` are the mean
    importances ``i_j``, ``base_values`` the score of the unshuffled data,
    and the extras ``importances_std`` (shaped like ``values``) and
    ``importances`` (``values``' shape with ``n_repeats`` inserted before a
    scorers axis) are scikit-learn's ``importances_std`` and ``importances``.
    ``values`` is ``(1, n_features)`` for rows, ``(1, *sample_shape)`` for
    images and sequences, with a last axis of scorers when there are several.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklears_neural.explain import PermutationImportance
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X, y)
    >>> explanation = PermutationImportance(model, random_state=0).explain(X, y)
    >>> explanation.values.shape, explanation.importances.shape
    ((1, 4), (1, 4, 5))
    >>> int(explanation.values.argmax())  # petal length
    2
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["predict"])],
        "scoring": [str, callable, list, tuple, dict, None],
        "n_repeats": [Interval(Integral, 1, None, closed="left")],
        "max_samples": [Interval(Integral, 1, None, closed="left"),
                        Interval(Real, 0, 1, closed="right")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
    }

    def __init__(self, estimator, *, scoring=None, n_repeats=5, max_samples=1.0,
                 random_state=None, n_jobs=None):
        self.estimator = estimator
        self.scoring = scoring
        self.n_repeats = n_repeats
        self.max_samples = max_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def explain(self, X, y=None, target=None, *, sample_weight=None):
        """Importance of each feature of ``X`` for the estimator's score on ``(X, y)``.

        Parameters
        ----------
        X : array-like
            Samples in the layout the estimator takes (a pipeline's raw
            input); pandas column names become ``feature_names``.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The true targets. Required.
        target : None
            Not used: the method explains a score over every output, not
            one output. Present for the shared signature.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Weights of the samples in the score.

        Returns
        -------
        Explanation
            One row (global importances).
        """
        self._validate_params()
        if y is None:
            raise ValueError(
                "PermutationImportance measures how much the score on (X, y) drops "
                "when a feature is shuffled: pass the true targets, explain(X, y)."
            )
        if target is not None:
            raise ValueError(
                f"PermutationImportance explains a score over every output; "
                f"target={target!r} does not apply. Use a per-sample method "
                "(KernelShapExplainer, LimeExplainer) to explain one output."
            )
        return self._explain_scored(X, y, sample_weight)

    def _explain_scored(self, X, y, sample_weight):
        f = PredictFunction(self.estimator, "auto")  # checks fitted; names, shape
        rows, names = f.prepare(X)
        shape = f.sample_shape
        estimator, data = self.estimator, X
        if len(shape) > 1:  # shuffle flat values; the estimator sees samples
            estimator = Pipeline([
                ("unflatten",
                 FunctionTransformer(_unflatten, kw_args={"shape": shape})),
                ("estimator", self.estimator),
            ])
            data = rows
        elif not hasattr(X, "iloc"):
            data = rows
        result = permutation_importance(
            estimator, data, y, scoring=self.scoring, n_repeats=self.n_repeats,
            n_jobs=self.n_jobs, random_state=self.random_state,
            sample_weight=sample_weight, max_samples=self.max_samples,
        )
        baseline = _baseline(estimator, data, y, self.scoring, sample_weight)
        if isinstance(self.scoring, (list, tuple, dict)):
            scorers = list(result)
            mean = np.stack([result[s].importances_mean for s in scorers], axis=-1)
            std = np.stack([result[s].importances_std for s in scorers], axis=-1)
            every = np.stack([result[s].importances for s in scorers], axis=-1)
            values = mean.reshape((1, *shape, len(scorers)))
            base_values = np.array([[baseline[s] for s in scorers]])
            output, output_names = "score", scorers
        else:
            mean, std, every = (result.importances_mean, result.importances_std,
                                result.importances)
            values = mean.reshape((1, *shape))
            base_values = np.array([baseline])
            output = self.scoring if isinstance(self.scoring, str) else "score"
            output_names = [output]
        return Explanation(
            values, base_values=base_values, data=None, feature_names=names,
            output_names=output_names, targets=None, output=output,
            method=type(self).__name__, feature_shape=shape, layout=f.layout,
            importances_std=std.reshape(values.shape),
            importances=every.reshape(
                (*values.shape[:1 + len(shape)], *every.shape[1:])),
        )

    def _explain(self, X, target):  # explain() is overridden: it needs y
        raise NotImplementedError


def _unflatten(rows, shape):
    return np.asarray(rows).reshape((len(rows), *shape))


def _baseline(estimator, X, y, scoring, sample_weight):
    """The score(s) of the unshuffled data, as ``permutation_importance`` takes them."""
    from sklearn.metrics import check_scoring

    scorer = check_scoring(estimator, scoring=scoring)
    kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
    score = scorer(estimator, X, y, **kwargs)
    return score if isinstance(score, dict) else float(score)
