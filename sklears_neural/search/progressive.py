"""ProgressiveSearch: grow architectures from simple to complex, led by a
performance predictor trained on the candidates evaluated so far."""

from numbers import Integral

import numpy as np
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklears_neural.core._compat import HasMethods, Interval
from sklears_neural.search._base import BaseSearch, _check_space, _key
from sklears_neural.search._space import ArchitectureSpace

__all__ = ["ProgressiveSearch"]


class ProgressiveSearch(BaseSearch):
    """Grow architectures step by step; a learned predictor picks which.

    The search starts from the shallowest architectures of the space.
    At each step it fits ``predictor`` (a regressor) on the features of
    every candidate evaluated so far (depth, widths, activation, log
    parameter count, hyper-parameters, budget) against their
    cross-validated scores; lists the expansions of the ``beam_width``
    best candidates (one layer widened, or one layer appended:
    :meth:`ArchitectureSpace.grow`); and evaluates the ``beam_width``
    expansions with the highest predicted score. Children keep their
    parent's hyper-parameters. This is the loop of progressive neural
    architecture search (Liu et al., 2018) over layer stacks.

    Parameters
    ----------
    estimator : estimator object
        The estimator searched around, e.g. ``MLPClassifier(max_iter=60)``.
    architecture : ArchitectureSpace or None, default=None
        The space to grow in; None is ``ArchitectureSpace()``.
    param_distributions : dict or None, default=None
        Hyper-parameters drawn at random for each starting architecture
        and inherited by its expansions.
    n_steps : int, default=3
        Growth steps after the start.
    beam_width : int, default=3
        Candidates grown from, and expansions evaluated, per step.
    n_initial : int or None, default=None
        Starting architectures (drawn from the shallowest ones); None is
        ``2 * beam_width``.
    predictor : regressor or None, default=None
        Learns score from features; None is ``StandardScaler`` then
        ``Ridge(alpha=1.0)``, which extrapolates to larger nets than it has
        seen (a tree model would not).
    scoring, cv, n_jobs, pre_dispatch, refit, random_state, verbose, error_score, \
factor, min_resources, resource
        See :class:`~sklears_neural.search.BaseSearch`. With ``factor`` the
        budget is a predictor feature, so scores at every rung teach it and
        it predicts at the full budget.

    Attributes
    ----------
    predictor_ : regressor
        The predictor fitted on every evaluation.
    predictor_history_ : list of dict
        Quality per step, measured on that step's candidates after they
        were evaluated: ``step``, ``n_train`` (evaluations it learned
        from), ``n_expansions`` (candidates it ranked), ``n_evaluated``,
        ``mae`` (mean absolute error of predicted vs cross-validated
        score) and ``spearman`` (rank correlation; NaN with fewer than 2
        or constant values).
    cv_results_, best_estimator_, best_params_, best_architecture_, best_score_, \
best_index_, n_splits_, refit_time_, multimetric_, scorer_
        See :class:`~sklears_neural.search.BaseSearch`; ``cv_results_`` has
        ``step`` and ``predicted_score`` columns.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.search import ArchitectureSpace, ProgressiveSearch
    >>> X, y = load_digits(return_X_y=True)
    >>> search = ProgressiveSearch(
    ...     MLPClassifier(max_iter=10),
    ...     ArchitectureSpace(n_layers=(1, 2), widths=(8, 16, 32), activations=None),
    ...     n_steps=1, beam_width=2, cv=2, random_state=0,
    ... ).fit(X[:300] / 16, y[:300])
    >>> search.cv_results_["step"].tolist()
    [0.0, 0.0, 0.0, 1.0, 1.0]
    >>> [len(a) for a in search.cv_results_["param_hidden_layer_sizes"]]
    [1, 1, 1, 2, 2]
    """

    _parameter_constraints = {
        **BaseSearch._parameter_constraints,
        "architecture": [ArchitectureSpace, None],
        "param_distributions": [dict, None],
        "n_steps": [Interval(Integral, 0, None, closed="left")],
        "beam_width": [Interval(Integral, 1, None, closed="left")],
        "n_initial": [Interval(Integral, 1, None, closed="left"), None],
        "predictor": [HasMethods(["fit", "predict"]), None],
    }

    def __init__(self, estimator, architecture=None, param_distributions=None, *, n_steps=3,
                 beam_width=3, n_initial=None, predictor=None, scoring=None, cv=3,
                 n_jobs=None, pre_dispatch="2*n_jobs", refit=True, random_state=None,
                 verbose=0, error_score=np.nan, factor=None, min_resources=None,
                 resource="max_iter"):
        super().__init__(
            estimator, scoring=scoring, cv=cv, n_jobs=n_jobs, pre_dispatch=pre_dispatch,
            refit=refit, random_state=random_state, verbose=verbose,
            error_score=error_score, factor=factor, min_resources=min_resources,
            resource=resource,
        )
        self.architecture = architecture
        self.param_distributions = param_distributions
        self.n_steps = n_steps
        self.beam_width = beam_width
        self.n_initial = n_initial
        self.predictor = predictor

    def _architecture_names(self):
        return (self.architecture or ArchitectureSpace()).names

    def _features(self, params, budget, space, architecture, context):
        row = architecture.features(params) + space.features(params)
        if context.n_features is not None and context.n_outputs is not None:
            row.append(np.log10(architecture.n_weights(
                params, context.n_features, context.n_outputs)))
        if self.factor is not None:
            row.append(np.log2(budget))
        return row

    def _run_search(self, evaluate, rng, context):
        space, architecture = _check_space(
            self.param_distributions, self.architecture or ArchitectureSpace()
        )
        start = architecture.smallest()
        n_initial = self.n_initial or 2 * self.beam_width
        start = [start[i] for i in sorted(rng.permutation(len(start))[:n_initial])]
        candidates = [{**space.sample(rng), **params} for params in start]
        seen = {_key(params) for params in candidates}
        evaluated = list(zip(candidates, evaluate(candidates, extra={"step": 0})))
        full = context.full_budget
        self.predictor_history_ = []
        features = lambda params, budget: self._features(  # noqa: E731
            params, budget, space, architecture, context)
        for step in range(1, self.n_steps + 1):
            predictor = self._fit_predictor(evaluated, features)
            # Grow from the best candidates that still have unseen expansions:
            # a beam whose children all did worse moves on to the next best.
            expansions, n_parents = [], 0
            for params, _ in sorted(evaluated, key=lambda pair: _order(pair[1])):
                fresh = [{**params, **grown} for grown in architecture.grow(params)]
                fresh = [child for child in fresh if _key(child) not in seen]
                if fresh:
                    seen.update(_key(child) for child in fresh)
                    expansions.extend(fresh)
                    n_parents += 1
                if n_parents == self.beam_width:
                    break
            if not expansions:
                break
            predicted = predictor.predict(np.array([features(c, full) for c in expansions]))
            chosen = np.argsort(-predicted, kind="stable")[: self.beam_width]
            children = [expansions[i] for i in chosen]
            records = evaluate(children, extra={"step": step,
                                                "predicted_score": [float(predicted[i])
                                                                    for i in chosen]})
            # Judge the predictor at the budget each child reached.
            reached = predictor.predict(np.array(
                [features(c, r["n_resources"]) for c, r in zip(children, records)]))
            actual = np.array([r["score"] for r in records], dtype=float)
            self.predictor_history_.append(
                _quality(step, len(evaluated), len(expansions), reached, actual))
            evaluated.extend(zip(children, records))
        self.predictor_ = self._fit_predictor(evaluated, features)

    def _fit_predictor(self, evaluated, features):
        pairs = [(params, record) for params, record in evaluated if np.isfinite(record["score"])]
        predictor = clone(self.predictor) if self.predictor is not None else make_pipeline(
            StandardScaler(), Ridge(alpha=1.0))
        if not pairs:
            raise ValueError(
                "Every starting candidate failed, so the performance predictor has nothing "
                "to learn from; see the FitFailedWarning for the error."
            )
        X = np.array([features(params, record["n_resources"]) for params, record in pairs])
        y = np.array([record["score"] for _, record in pairs])
        return predictor.fit(X, y)


def _order(record):
    """Sort key: full-budget first, then best score (NaN last)."""
    score = record["score"]
    budget = record["n_resources"] if record["n_resources"] is not None else 0
    return (-budget, np.inf if np.isnan(score) else -score)


def _quality(step, n_train, n_expansions, predicted, actual):
    keep = np.isfinite(actual)
    predicted, actual = predicted[keep], actual[keep]
    spearman = float("nan")
    if len(actual) >= 2 and np.ptp(actual) > 0 and np.ptp(predicted) > 0:
        spearman = float(spearmanr(predicted, actual).statistic)
    return {
        "step": step, "n_train": n_train, "n_expansions": n_expansions,
        "n_evaluated": int(keep.sum()),
        "mae": float(np.mean(np.abs(predicted - actual))) if len(actual) else float("nan"),
        "spearman": spearman,
    }
