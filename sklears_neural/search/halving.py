"""Successive halving: stop bad trials early, for any estimator.

A batch of candidates is trained on a small budget of a *resource*;
the best ``1/factor`` go on to ``factor`` times more, until the survivors
reach the full budget. The resource is

- ``"max_iter"`` (epochs for our networks): survivors *continue* training
  through ``warm_start`` where the estimator has it (ours do, and two warm
  fits of ``k`` epochs equal one fit of ``2k``), so a candidate stopped at
  the first rung really trained fewer epochs;
- ``"n_samples"``: each rung trains on a larger seeded subset of every
  training fold, from scratch (this works for any scikit-learn estimator);
- any other integer parameter of the estimator (``n_estimators``, ...),
  set per rung, retrained from scratch.

:class:`HyperbandSearch` runs Hyperband's brackets of successive halving
over random candidates. The other searchers of this package take the same
``factor``/``min_resources``/``resource`` parameters and halve each batch
they evaluate (a generation, a growth step).
"""

import math
from numbers import Integral

import numpy as np

from sklears_neural.core._compat import Interval
from sklears_neural.search._base import BaseSearch, _check_space, _draw_candidates

__all__ = ["HyperbandSearch", "halving_rungs", "hyperband_brackets"]


def halving_rungs(min_resources, max_resources, factor):
    """Budgets of the rungs: ``min_resources * factor**k``, ending at ``max_resources``.

    Parameters
    ----------
    min_resources, max_resources : int
        Budget of the first and of the last rung.
    factor : int
        Growth of the budget from one rung to the next (and the share of
        candidates kept, ``1 / factor``).

    Returns
    -------
    list of int
        Increasing budgets; the last one is ``max_resources``.

    Examples
    --------
    >>> halving_rungs(7, 60, 3)
    [7, 21, 60]
    >>> halving_rungs(50, 60, 3)
    [60]
    """
    if not 1 <= min_resources <= max_resources:
        raise ValueError(
            f"min_resources={min_resources} must be between 1 and max_resources="
            f"{max_resources}."
        )
    rungs = []
    budget = min_resources
    # A rung within sqrt(factor) of the full budget would cost nearly as much
    # as the last one and decide little: it is left out.
    while max_resources / budget >= math.sqrt(factor):
        rungs.append(int(budget))
        budget *= factor
    rungs.append(int(max_resources))
    return rungs


def hyperband_brackets(max_resources, factor, min_resources=1):
    """Hyperband's brackets: ``(n_candidates, first_budget)`` per bracket.

    The most aggressive bracket starts many candidates on ``min_resources``;
    the last trains few on the full budget from the start. Each bracket
    costs about the same.

    Examples
    --------
    >>> hyperband_brackets(27, 3)
    [(27, 1), (12, 3), (6, 9), (4, 27)]
    """
    s_max = int(math.floor(math.log(max_resources / min_resources, factor) + 1e-9))
    brackets = []
    for s in range(s_max, -1, -1):
        n = int(math.ceil((s_max + 1) / (s + 1) * factor ** s))
        budget = max(min_resources, int(round(max_resources * factor ** (-s))))
        brackets.append((n, budget))
    return brackets


class HyperbandSearch(BaseSearch):
    """Random search with Hyperband's early stopping of bad trials.

    Each bracket draws random candidates (architecture and
    hyper-parameters) and runs successive halving on them; brackets go
    from many candidates on a small budget to few on the full one.

    Parameters
    ----------
    estimator : estimator object
        The estimator searched around; candidates are ``clone(estimator)``
        with parameters set.
    param_distributions : dict or None, default=None
        ``{name: list of values or scipy.stats distribution}``.
    architecture : ArchitectureSpace or None, default=None
        Layer stacks to draw candidates from.
    n_brackets : int or None, default=None
        How many of Hyperband's brackets to run, most aggressive first;
        None runs all of them.
    factor : int, default=3
        Budget growth per rung; ``1 / factor`` of the candidates go on.
    min_resources : int or None, default=None
        Budget of the first rung of the most aggressive bracket; None is
        ``max_resources / factor**2`` (three rungs).
    max_resources : int or None, default=None
        The full budget; None reads the estimator's ``resource`` parameter
        (``max_iter``), or the training-fold size for ``"n_samples"``.
    resource : str, default="max_iter"
        See :mod:`sklears_neural.search.halving`.
    scoring, cv, n_jobs, pre_dispatch, refit, random_state, verbose, error_score
        As in :class:`~sklearn.model_selection.GridSearchCV`; see
        :class:`~sklears_neural.search.BaseSearch`.

    Attributes
    ----------
    brackets_ : list of (int, int)
        ``(n_candidates, first budget)`` of each bracket run.
    cv_results_, best_estimator_, best_params_, best_architecture_, best_score_, \
best_index_, n_splits_, refit_time_, multimetric_, scorer_
        See :class:`~sklears_neural.search.BaseSearch`.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.search import ArchitectureSpace, HyperbandSearch
    >>> X, y = load_digits(return_X_y=True)
    >>> search = HyperbandSearch(
    ...     MLPClassifier(max_iter=9, random_state=0),
    ...     architecture=ArchitectureSpace(n_layers=(1, 2), widths=(16, 32, 64)),
    ...     n_brackets=1, random_state=0, cv=2,
    ... ).fit(X[:300] / 16, y[:300])
    >>> search.brackets_
    [(9, 1)]
    >>> import numpy as np  # candidates trained per budget: 9 for 1 epoch, 3 for 3, 1 for 9
    >>> np.unique(search.cv_results_["n_resources"], return_counts=True)
    (array([1, 3, 9]), array([9, 3, 1]))
    """

    _parameter_constraints = {
        **BaseSearch._parameter_constraints,
        "param_distributions": [dict, None],
        "architecture": "no_validation",
        "n_brackets": [Interval(Integral, 1, None, closed="left"), None],
        "max_resources": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, estimator, param_distributions=None, *, architecture=None,
                 n_brackets=None, factor=3, min_resources=None, max_resources=None,
                 resource="max_iter", scoring=None, cv=3, n_jobs=None,
                 pre_dispatch="2*n_jobs", refit=True, random_state=None, verbose=0,
                 error_score=np.nan):
        super().__init__(
            estimator, scoring=scoring, cv=cv, n_jobs=n_jobs, pre_dispatch=pre_dispatch,
            refit=refit, random_state=random_state, verbose=verbose,
            error_score=error_score, factor=factor, min_resources=min_resources,
            resource=resource,
        )
        self.param_distributions = param_distributions
        self.architecture = architecture
        self.n_brackets = n_brackets
        self.max_resources = max_resources

    def _full_budget(self, context, splits=None):
        return self.max_resources or super()._full_budget(context, splits)

    def _run_search(self, evaluate, rng, context):
        space, architecture = _check_space(self.param_distributions, self.architecture)
        full = self._full_budget(context)
        low = self.min_resources or max(1, full // self.factor ** 2)
        brackets = hyperband_brackets(full, self.factor, min(low, full))
        self.brackets_ = brackets[: self.n_brackets] if self.n_brackets else brackets
        for number, (n_candidates, first_budget) in enumerate(self.brackets_):
            candidates = _draw_candidates(space, architecture, rng, n_candidates)
            evaluate(candidates, min_resources=first_budget, extra={"bracket": number})
