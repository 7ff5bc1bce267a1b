"""BaseSearch: the GridSearchCV-like contract every searcher of this package shares.

A searcher writes one method, ``_run_search(evaluate, rng, context)``,
that proposes batches of candidate parameter dicts and calls
``evaluate(candidates)``; the base cross-validates them (in parallel,
halving bad ones when ``factor`` is set), records every evaluation in
``cv_results_``, picks and refits the best, and delegates prediction to
it.
"""

import math
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.exceptions import FitFailedWarning
from sklearn.metrics import check_scoring, get_scorer, get_scorer_names
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state, get_tags, indexable
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core._compat import HasMethods, Interval, StrOptions, _fit_context
from sklears_neural.search._space import ArchitectureSpace, ParamSpace
from sklears_neural.search._trials import plan_devices, run_trials

__all__ = ["BaseSearch"]

#: Estimator parameters reported as the architecture when no
#: :class:`ArchitectureSpace` names them.
ARCHITECTURE_PARAMS = ("hidden_layer_sizes", "activation", "layers")


def _make_scorers(estimator, scoring):
    """``({name: scorer}, multimetric)`` from a ``scoring`` parameter."""
    if scoring is None or isinstance(scoring, str) or callable(scoring):
        return {"score": check_scoring(estimator, scoring)}, False
    if isinstance(scoring, dict):
        items = scoring.items()
    else:
        names = list(scoring)
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise ValueError(
                f"scoring as a list must hold distinct metric names, got {scoring!r}."
            )
        items = ((n, n) for n in names)
    scorers = {
        name: get_scorer(value) if isinstance(value, str) else value for name, value in items
    }
    if not scorers:
        raise ValueError("scoring is an empty dict; pass None to use estimator.score.")
    return scorers, True


def _check_space(param_distributions, architecture):
    """``(ParamSpace, ArchitectureSpace or None)``, with overlaps refused."""
    if architecture is not None and not isinstance(architecture, ArchitectureSpace):
        raise TypeError(
            f"architecture must be an ArchitectureSpace or None, got {architecture!r}."
        )
    space = ParamSpace(param_distributions)
    if architecture is not None:
        shared = sorted(set(space.names) & set(architecture.names))
        if shared:
            raise ValueError(
                f"{shared} are set by the architecture space and also listed in "
                "param_distributions; keep them in one place."
            )
    if architecture is None and not space.names:
        raise ValueError(
            "Nothing to search: pass architecture=ArchitectureSpace(...) and/or "
            "param_distributions={...}."
        )
    return space, architecture


def _draw_candidates(space, architecture, rng, n_candidates, seen=()):
    """Up to ``n_candidates`` distinct random candidates not in ``seen``."""
    keys = {_key(c) for c in seen}
    candidates = []
    for _ in range(20 * n_candidates):
        params = space.sample(rng)
        if architecture is not None:
            params.update(architecture.sample(rng))
        if _key(params) not in keys:
            keys.add(_key(params))
            candidates.append(params)
            if len(candidates) == n_candidates:
                break
    return candidates


def _key(params):
    """A hashable, order-free identity of a parameter dict."""
    return tuple(sorted((name, repr(value)) for name, value in params.items()))


def _estimator_has(attr):
    """``available_if`` check: the fitted best estimator (or, before fit,
    the template) must have ``attr``, and only a refitted search predicts."""

    def check(self):
        if not self.refit:
            raise AttributeError(
                f"{type(self).__name__} was built with refit=False, so it has no "
                f"fitted estimator to call {attr} on. Fit one yourself with "
                "best_params_, or search with refit=True."
            )
        getattr(self.best_estimator_ if hasattr(self, "best_estimator_") else self.estimator,
                attr)
        return True

    return check


class _Context:
    """What ``_run_search`` may read about the data and the budget."""

    def __init__(self, n_samples, n_features, n_outputs, full_budget):
        self.n_samples = n_samples
        self.n_features = n_features
        self.n_outputs = n_outputs
        self.full_budget = full_budget


class BaseSearch(MetaEstimatorMixin, BaseEstimator):
    """Base of the searchers: cross-validated trials, records, refit.

    Parameters
    ----------
    estimator : estimator object
        The estimator searched around. Candidates are ``clone(estimator)``
        with their parameters set, so any scikit-learn estimator works;
        an :class:`ArchitectureSpace` needs one whose parameters take
        layer widths (our MLPs).
    scoring : str, callable, list, dict or None, default=None
        As in :class:`~sklearn.model_selection.GridSearchCV`: None uses
        ``estimator.score``; a list or dict gives several metrics, and
        ``refit`` then names the one that decides.
    cv : int, cross-validation generator or iterable, default=3
        As in scikit-learn (stratified folds for classifiers). Three, not
        five, folds by default: searches train many candidates.
    n_jobs : int or None, default=None
        Trials run in parallel (joblib). With an estimator on
        ``device="cuda"`` each worker owns one GPU and runs its trials one
        after another, so at most ``torch.cuda.device_count()`` workers.
    pre_dispatch : int or str, default="2*n_jobs"
        How many trials joblib dispatches ahead (bounds memory).
    refit : bool, str or callable, default=True
        Refit the best candidate on all of ``X``; a metric name with
        multi-metric ``scoring``; or ``callable(cv_results_) -> index``.
    random_state : int, RandomState or None, default=None
        Seeds the search; when set and the estimator's ``random_state``
        is None, the candidates get one seed drawn from it, so a seeded
        search is reproducible.
    verbose : int, default=0
        Print a line per evaluated batch.
    error_score : "raise" or float, default=np.nan
        Score recorded for a trial whose fit fails (with a
        ``FitFailedWarning``); "raise" raises instead.
    factor : int or None, default=None
        Successive halving of each batch: only the best ``1/factor`` of
        the candidates go on to ``factor`` times more budget. None trains
        every candidate on the full budget.
    min_resources : int or None, default=None
        Budget of the first rung; None is ``full / factor**2``.
    resource : str, default="max_iter"
        What a budget counts: ``"max_iter"`` (epochs; survivors continue
        through ``warm_start``), ``"n_samples"`` (rows of each training
        fold) or another integer parameter of the estimator.

    Attributes
    ----------
    cv_results_ : dict of ndarray
        One entry per evaluation (a candidate at one budget):
        ``params``, ``param_<name>``, ``split<k>_test_<metric>``,
        ``mean_test_<metric>``, ``std_test_<metric>``,
        ``rank_test_<metric>`` (full-budget rows rank first),
        ``mean_fit_time``, ``std_fit_time``, ``mean_score_time``,
        ``std_score_time``, ``n_params``, ``mean_latency_ms`` (one
        ``predict`` of 64 rows), ``n_epochs`` (epochs trained, mean over
        folds), ``n_resources``, ``rung``, ``candidate`` and the
        searcher's own columns. ``pandas.DataFrame(cv_results_)`` reads it.
    best_estimator_ : estimator
        The best candidate refit on all data (with ``refit``).
    best_params_ : dict
        Parameters of the best candidate.
    best_architecture_ : dict
        The architecture part of the best candidate's parameters
        (layer widths, activation), including values it kept from
        ``estimator``.
    best_score_ : float
        Mean cross-validated score of the best candidate.
    best_index_ : int
        Its row in ``cv_results_``.
    scorer_ : callable or dict
        The scorer(s) used.
    multimetric_ : bool
        Whether several metrics were scored.
    n_splits_ : int
        Cross-validation splits.
    refit_time_ : float
        Seconds to refit the best candidate.
    classes_ : ndarray of shape (n_classes,)
        The best estimator's classes (classifiers, after refit).
    n_features_in_ : int
        Features seen by the best estimator (after refit).
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit"])],
        "scoring": [StrOptions(set(get_scorer_names())), callable, list, tuple, set, dict, None],
        "cv": ["cv_object"],
        "n_jobs": [Integral, None],
        "pre_dispatch": [Integral, str],
        "refit": ["boolean", str, callable],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "error_score": [StrOptions({"raise"}), Real],
        "factor": [Interval(Integral, 2, None, closed="left"), None],
        "min_resources": [Interval(Integral, 1, None, closed="left"), None],
        "resource": [str],
    }

    def __init__(self, estimator, *, scoring=None, cv=3, n_jobs=None, pre_dispatch="2*n_jobs",
                 refit=True, random_state=None, verbose=0, error_score=np.nan, factor=None,
                 min_resources=None, resource="max_iter"):
        self.estimator = estimator
        self.scoring = scoring
        self.cv = cv
        self.n_jobs = n_jobs
        self.pre_dispatch = pre_dispatch
        self.refit = refit
        self.random_state = random_state
        self.verbose = verbose
        self.error_score = error_score
        self.factor = factor
        self.min_resources = min_resources
        self.resource = resource

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = inner.classifier_tags
        tags.regressor_tags = inner.regressor_tags
        tags.input_tags.sparse = inner.input_tags.sparse
        tags.non_deterministic = inner.non_deterministic
        return tags

    # -- the search ---------------------------------------------------------

    def _run_search(self, evaluate, rng, context):
        """Propose candidates and call ``evaluate(list of dicts, ...)``.

        ``evaluate`` returns, per candidate, a dict of its last record:
        ``row`` (index into the results), ``score`` (mean score of the
        deciding metric, NaN on failure), ``n_resources``, ``n_params``
        and ``latency_ms``.
        """
        raise NotImplementedError(f"{type(self).__name__} must define _run_search.")

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, *, groups=None, **fit_params):
        """Run the search, then refit the best candidate on all of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Training data, in any form the estimator takes.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
            Targets.
        groups : array-like of shape (n_samples,), default=None
            Group labels for group-aware ``cv`` splitters.
        **fit_params
            Passed to the estimator's ``fit``; per-sample arrays (such as
            ``sample_weight``) are cut to each training fold.

        Returns
        -------
        self : object
        """
        estimator = self.estimator
        scorers, self.multimetric_ = _make_scorers(estimator, self.scoring)
        self._refit_metric = self._check_refit(scorers)
        X, y, groups = indexable(X, y, groups)
        splits = list(check_cv(self.cv, y, classifier=is_classifier(estimator))
                      .split(X, y, groups))
        self.n_splits_ = len(splits)
        rng = check_random_state(self.random_state)
        self._template = clone(estimator)
        template_params = self._template.get_params()
        if (self.random_state is not None and "random_state" in template_params
                and template_params["random_state"] is None):
            self._template.set_params(random_state=int(rng.randint(np.iinfo(np.int32).max)))
        n_samples = len(X) if not hasattr(X, "shape") else X.shape[0]
        context = _Context(
            n_samples=n_samples,
            n_features=X.shape[1] if getattr(X, "ndim", 0) == 2 else None,
            n_outputs=self._n_outputs(y),
            full_budget=None,
        )
        context.full_budget = self._full_budget(context, splits)
        self._splits, self._scorers = splits, scorers
        self._data = (X, y, fit_params)
        self._subsets = self._sample_orders(splits, rng)
        self._rows = []
        self._devices = self._plan_devices()
        try:
            self._run_search(self._evaluate, rng, context)
        finally:
            del self._data, self._splits, self._subsets
        if not self._rows:
            raise ValueError(
                f"{type(self).__name__} evaluated no candidate; widen the search space."
            )
        self.cv_results_ = self._format_results(self._rows)
        self.scorer_ = scorers if self.multimetric_ else scorers["score"]
        self._select_best(context)
        if self.refit:
            self._refit(X, y, fit_params)
        return self

    def _check_refit(self, scorers):
        """The metric that decides, checking ``refit`` against ``scoring``."""
        if not self.multimetric_:
            return "score"
        if callable(self.refit) or self.refit is False:
            return None
        if isinstance(self.refit, str) and self.refit in scorers:
            return self.refit
        raise ValueError(
            f"With several metrics, refit must name one of {sorted(scorers)}, be False or "
            f"a callable; got refit={self.refit!r}."
        )

    @staticmethod
    def _n_outputs(y):
        if y is None:
            return None
        y = np.asarray(y)
        if y.ndim == 2:
            return y.shape[1]
        if y.dtype.kind in "OUSb" or (y.dtype.kind in "iu"):
            return len(np.unique(y))
        return 1

    def _full_budget(self, context, splits=None):
        """The budget every surviving candidate gets in the end."""
        if self.resource == "n_samples":
            splits = splits if splits is not None else self._splits
            return int(min(len(train) for train, _ in splits))
        params = self._template.get_params()
        if self.resource not in params:
            if self.factor is None:
                return None
            raise ValueError(
                f"resource={self.resource!r} is not a parameter of "
                f"{type(self.estimator).__name__}; use resource='n_samples', or one of its "
                f"integer parameters such as 'max_iter'."
            )
        value = params[self.resource]
        if self.factor is not None and (not isinstance(value, Integral) or value < 1):
            raise ValueError(
                f"resource={self.resource!r} needs a positive integer {self.resource} on the "
                f"estimator, got {value!r}."
            )
        return value

    def _sample_orders(self, splits, rng):
        """A seeded order of each training fold, for ``resource="n_samples"``."""
        if self.resource != "n_samples":
            return None
        return [rng.permutation(train) for train, _ in splits]

    def _plan_devices(self):
        params = self._template.get_params()
        if "device" not in params:
            return None
        import torch  # only estimators with a device parameter get here

        return plan_devices(params["device"], self.n_jobs, torch.cuda.device_count())

    def _deciding_metric(self):
        return self._refit_metric or next(iter(self._scorers))

    def _evaluate(self, candidates, *, min_resources=None, extra=None):
        """Cross-validate ``candidates`` (successive halving when ``factor``
        is set) and record each evaluation. See ``_run_search``."""
        candidates = [dict(c) for c in candidates]
        if not candidates:
            return []
        full = self._full_budget(None)
        if self.factor is None:
            rungs = [full]
        else:
            from sklears_neural.search.halving import halving_rungs

            first = min_resources or self.min_resources or max(1, full // self.factor ** 2)
            rungs = halving_rungs(min(first, full), full, self.factor)
        first_id = 1 + max((r["candidate"] for r in self._rows), default=-1)
        metric = self._deciding_metric()
        alive = list(range(len(candidates)))
        fitted = {}
        last = [None] * len(candidates)
        for rung, budget in enumerate(rungs):
            final = rung == len(rungs) - 1
            tasks = [
                self._task(candidates[i], split, budget, rungs[rung - 1] if rung else None,
                           fitted.get((i, split)), keep=not final, quiet=not final)
                for i in alive for split in range(self.n_splits_)
            ]
            outs = run_trials(tasks, n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch,
                              devices=self._devices)
            fitted = {}
            for position, i in enumerate(alive):
                folds = outs[position * self.n_splits_:(position + 1) * self.n_splits_]
                for split, out in enumerate(folds):
                    if out["estimator"] is not None:
                        fitted[(i, split)] = out["estimator"]
                last[i] = self._record(
                    candidates[i], folds, first_id + i, rung, budget, extra, i,
                    resource_in_params=self.factor is not None,
                )
            self._warn_failures(outs)
            if self.verbose:
                scores = [self._rows[last[i]]["scores"][metric] for i in alive]
                print(f"[{type(self).__name__}] rung {rung}: {len(alive)} candidates x "
                      f"{self.n_splits_} folds at {self.resource}={budget}; best "
                      f"{metric} {np.nanmax(scores) if not np.all(np.isnan(scores)) else np.nan:.4f}")
            if final:
                break
            keep = max(1, math.ceil(len(alive) / self.factor))
            alive = sorted(alive, key=lambda i: -_finite(self._rows[last[i]]["scores"][metric]))
            alive = sorted(alive[:keep])
            fitted = {k: v for k, v in fitted.items() if k[0] in alive}
        return [
            {
                "row": row,
                "score": self._rows[row]["scores"][metric],
                "n_resources": self._rows[row]["n_resources"],
                "n_params": self._rows[row]["n_params"],
                "latency_ms": self._rows[row]["latency_ms"],
            }
            for row in last
        ]

    def _task(self, params, split, budget, previous_budget, previous, *, keep, quiet):
        """``(args, kwargs)`` of one trial: a candidate on one split at one budget."""
        X, y, fit_params = self._data
        train, test = self._splits[split]
        params = dict(params)
        continue_params = None
        if self.factor is not None:
            if self.resource == "n_samples":
                train = np.sort(self._subsets[split][:budget])
            else:
                params[self.resource] = budget
                if (previous is not None and self.resource == "max_iter"
                        and "warm_start" in self._template.get_params()):
                    continue_params = {"warm_start": True, "max_iter": budget - previous_budget}
                else:
                    previous = None
        if continue_params is None:
            previous = None
        # Continuation needs the fitted estimator back from the worker.
        keep = keep and self.factor is not None and self.resource == "max_iter" and (
            "warm_start" in self._template.get_params()
        )
        args = (self._template, X, y, train, test)
        kwargs = {"params": params, "scorers": self._scorers, "fit_params": fit_params,
                  "previous": previous, "continue_params": continue_params,
                  "keep_estimator": keep, "error_score": self.error_score, "quiet": quiet}
        return args, kwargs

    def _record(self, params, folds, candidate, rung, budget, extra, position,
                resource_in_params):
        row = {
            "params": {**params, self.resource: budget}
            if resource_in_params and self.resource != "n_samples" else dict(params),
            "candidate": candidate,
            "rung": rung,
            "n_resources": budget,
            "split_scores": {name: [f["scores"][name] for f in folds] for name in self._scorers},
            "fit_time": [f["fit_time"] for f in folds],
            "score_time": [f["score_time"] for f in folds],
            "n_params": float(np.nanmean([f["n_params"] for f in folds]))
            if not all(np.isnan(f["n_params"]) for f in folds) else np.nan,
            "latency_ms": _nanmean([f["latency_ms"] for f in folds]),
            "n_epochs": _nanmean([f["n_epochs"] for f in folds]),
            "extra": {
                key: (value[position] if isinstance(value, (list, tuple)) else value)
                for key, value in (extra or {}).items()
            },
        }
        row["scores"] = {name: _nanmean(values) for name, values in row["split_scores"].items()}
        self._rows.append(row)
        return len(self._rows) - 1

    def _warn_failures(self, outs):
        errors = [out["error"] for out in outs if out["error"] is not None]
        if errors and all(
            not np.isfinite(score) for row in self._rows for score in row["scores"].values()
        ):
            # Nothing has worked yet: the data or the settings are at fault,
            # not one candidate. Raise the trials' own error (its type is what
            # callers catch), noting that every trial failed.
            note = f"All {len(errors)} trials of {type(self).__name__} failed so far."
            error = next((out.get("exception") for out in reversed(outs)
                          if out.get("exception") is not None), None)
            if error is None:
                raise ValueError(f"{note} The last error:\n{errors[-1]}")
            if hasattr(error, "add_note"):
                error.add_note(note)
            raise error
        if errors:
            warnings.warn(
                f"{len(errors)} of {len(outs)} trials failed and scored "
                f"error_score={self.error_score!r}. The last error:\n{errors[-1]}",
                FitFailedWarning,
            )

    # -- results ------------------------------------------------------------

    def _format_results(self, rows):
        n_rows = len(rows)
        results = {}
        params = np.empty(n_rows, dtype=object)
        params[:] = [row["params"] for row in rows]
        names = sorted({name for row in rows for name in row["params"]})
        for name in names:
            column = np.ma.MaskedArray(np.empty(n_rows, dtype=object), mask=True)
            for i, row in enumerate(rows):
                if name in row["params"]:
                    column[i] = row["params"][name]
            results[f"param_{name}"] = column
        results["params"] = params
        budgets = np.array([_finite(row["n_resources"] if row["n_resources"] is not None else 0)
                            for row in rows], dtype=float)
        for metric in self._scorers:
            per_split = np.array([row["split_scores"][metric] for row in rows], dtype=float)
            for split in range(per_split.shape[1]):
                results[f"split{split}_test_{metric}"] = per_split[:, split]
            means = np.array([row["scores"][metric] for row in rows], dtype=float)
            results[f"mean_test_{metric}"] = means
            results[f"std_test_{metric}"] = np.array([
                np.nanstd(row) if np.isfinite(row).any() else np.nan for row in per_split])
            results[f"rank_test_{metric}"] = _rank(budgets, means)
        for key in ("fit_time", "score_time"):
            values = np.array([row[key] for row in rows], dtype=float)
            results[f"mean_{key}"] = values.mean(axis=1)
            results[f"std_{key}"] = values.std(axis=1)
        results["n_params"] = np.array([row["n_params"] for row in rows], dtype=float)
        results["mean_latency_ms"] = np.array([row["latency_ms"] for row in rows], dtype=float)
        results["n_epochs"] = np.array([row["n_epochs"] for row in rows], dtype=float)
        results["n_resources"] = np.array(
            [-1 if row["n_resources"] is None else row["n_resources"] for row in rows])
        results["rung"] = np.array([row["rung"] for row in rows])
        results["candidate"] = np.array([row["candidate"] for row in rows])
        for key in sorted({key for row in rows for key in row["extra"]}):
            values = [row["extra"].get(key) for row in rows]
            if all(v is None or (isinstance(v, Real) and not isinstance(v, bool)) for v in values):
                results[key] = np.array([np.nan if v is None else v for v in values], dtype=float)
            else:
                column = np.empty(n_rows, dtype=object)
                column[:] = values
                results[key] = column
        return results

    def _select_best(self, context):
        results = self.cv_results_
        if callable(self.refit):
            index = self.refit(results)
            if not isinstance(index, Integral) or not 0 <= index < len(results["params"]):
                raise IndexError(
                    f"refit={self.refit!r} returned {index!r}; it must return a row index of "
                    f"cv_results_ between 0 and {len(results['params']) - 1}."
                )
            self.best_index_ = int(index)
        elif self._refit_metric is None:
            return  # several metrics and refit=False: no best, as in scikit-learn
        else:
            ranks = results[f"rank_test_{self._refit_metric}"]
            self.best_index_ = int(np.flatnonzero(ranks == ranks.min())[0])
            self.best_score_ = float(results[f"mean_test_{self._refit_metric}"][self.best_index_])
        self.best_params_ = dict(results["params"][self.best_index_])
        full = {**self._template.get_params(deep=False), **self.best_params_}
        names = (
            self._architecture_names() or [n for n in ARCHITECTURE_PARAMS if n in full]
        )
        self.best_architecture_ = {name: full[name] for name in names if name in full}

    def _architecture_names(self):
        architecture = getattr(self, "architecture", None)
        return architecture.names if isinstance(architecture, ArchitectureSpace) else None

    def _refit(self, X, y, fit_params):
        import time

        best = clone(self._template).set_params(**self.best_params_)
        start = time.perf_counter()
        if y is None:
            best.fit(X, **fit_params)
        else:
            best.fit(X, y, **fit_params)
        self.refit_time_ = time.perf_counter() - start
        self.best_estimator_ = best

    # -- delegation to the best estimator -----------------------------------

    @available_if(_estimator_has("score"))
    def score(self, X, y=None, **params):
        """Score of the best estimator with the deciding scorer.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
        **params
            Passed to the scorer.

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        if self.multimetric_:
            if self._refit_metric is None:
                raise AttributeError(
                    "score needs a metric: refit with several metrics is a callable; "
                    "score the best_estimator_ with the metric you want."
                )
            scorer = self.scorer_[self._refit_metric]
        else:
            scorer = self.scorer_
        return scorer(self.best_estimator_, X, y, **params)

    @available_if(_estimator_has("predict"))
    def predict(self, X):
        """Predictions of the best estimator, ``ndarray of shape (n_samples,)``."""
        check_is_fitted(self)
        return self.best_estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities of the best estimator, ``ndarray of shape (n_samples, n_classes)``."""
        check_is_fitted(self)
        return self.best_estimator_.predict_proba(X)

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X):
        """Log-probabilities of the best estimator, ``ndarray of shape (n_samples, n_classes)``."""
        check_is_fitted(self)
        return self.best_estimator_.predict_log_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """Decision function of the best estimator."""
        check_is_fitted(self)
        return self.best_estimator_.decision_function(X)

    @available_if(_estimator_has("transform"))
    def transform(self, X):
        """Transform of the best estimator."""
        check_is_fitted(self)
        return self.best_estimator_.transform(X)

    @available_if(_estimator_has("inverse_transform"))
    def inverse_transform(self, X):
        """Inverse transform of the best estimator."""
        check_is_fitted(self)
        return self.best_estimator_.inverse_transform(X)

    @available_if(_estimator_has("score_samples"))
    def score_samples(self, X):
        """``score_samples`` of the best estimator, ``ndarray of shape (n_samples,)``."""
        check_is_fitted(self)
        return self.best_estimator_.score_samples(X)

    @property
    def classes_(self):
        """Class labels of the best estimator (classifiers, after refit)."""
        _estimator_has("classes_")(self)
        return self.best_estimator_.classes_

    @property
    def n_features_in_(self):
        """Number of features the best estimator saw (after refit)."""
        if not hasattr(self, "best_estimator_"):
            raise AttributeError(
                f"{type(self).__name__} has no n_features_in_ before it is fitted with "
                "refit=True."
            )
        return self.best_estimator_.n_features_in_

    def __sklearn_is_fitted__(self):
        return hasattr(self, "cv_results_")


def _finite(value):
    """NaN (a failed trial) ranks below every real score."""
    return -np.inf if value is None or np.isnan(value) else value


def _nanmean(values):
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _rank(budgets, means):
    """Rank 1 is best: rows at a larger budget first, then higher scores;
    ties share the smallest rank."""
    keys = list(zip(budgets, [_finite(m) for m in means]))
    return np.array([1 + sum(other > key for other in keys) for key in keys], dtype=np.int32)


class SupernetSearchMixin:
    """What the weight-sharing searchers (DARTS, ENAS) set up alike."""

    def _supernet_data(self, rng):
        """``(family, widths, task, (train, valid), seed)`` for a supernet search."""
        from sklears_neural.nn.supernet import SupernetTask, check_family, check_widths

        X, y, _ = self._data
        name = type(self).__name__
        family = check_family(self.estimator, name, ("mlp", "cnn"))
        widths = check_widths(self.widths, name)
        task = SupernetTask(self._template, X, y)
        split = task.split(self.validation_fraction, rng)
        return family, widths, task, split, int(rng.randint(np.iinfo(np.int32).max))
