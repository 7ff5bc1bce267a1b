"""EvolutionarySearch: a population of architectures bred by mutation and crossover."""

from numbers import Integral, Real

import numpy as np
from scipy.stats import rankdata

from sklears_neural.core._compat import Interval, StrOptions
from sklears_neural.search._base import BaseSearch, _check_space, _draw_candidates, _key
from sklears_neural.search._space import ArchitectureSpace

__all__ = ["EvolutionarySearch", "pareto_fronts"]

#: Objective name -> (record field, +1 to maximize / -1 to minimize).
OBJECTIVES = {"score": ("score", 1.0), "n_params": ("n_params", -1.0),
              "latency": ("latency_ms", -1.0)}


def pareto_fronts(costs):
    """Front number of each point, all objectives minimized (0: non-dominated).

    Parameters
    ----------
    costs : array-like of shape (n_points, n_objectives)
        NaN counts as the worst value.

    Returns
    -------
    ndarray of shape (n_points,)
        0 for the points no other point dominates, 1 for those only front
        0 dominates, and so on.

    Examples
    --------
    >>> pareto_fronts([[1, 5], [2, 2], [3, 3], [5, 1]]).tolist()
    [0, 0, 1, 0]
    """
    costs = np.asarray(costs, dtype=float)
    costs = np.where(np.isnan(costs), np.inf, costs)
    fronts = np.full(len(costs), -1)
    front = 0
    while (fronts < 0).any():
        left = np.flatnonzero(fronts < 0)
        sub = costs[left]
        # a dominates b: no worse everywhere and better somewhere
        dominated = [
            bool(np.any(np.all(sub <= point, axis=1) & np.any(sub < point, axis=1)))
            for point in sub
        ]
        fronts[left[~np.array(dominated)]] = front
        front += 1
    return fronts


class EvolutionarySearch(BaseSearch):
    """Evolve architectures and hyper-parameters: mutation, crossover, selection.

    A random population is cross-validated; each generation keeps the
    ``n_elite`` fittest and breeds the rest from parents chosen by
    ``selection``: a child is a crossover of two parents (with
    ``crossover_rate``) or a copy of one, then mutated. Children already
    evaluated are bred again, so every evaluation is a new candidate.

    Parameters
    ----------
    estimator : estimator object
        The estimator searched around, e.g. ``MLPClassifier(max_iter=60)``.
    architecture : ArchitectureSpace or None, default=None
        Layer stacks to evolve. None with ``param_distributions=None``
        searches ``ArchitectureSpace()``.
    param_distributions : dict or None, default=None
        Hyper-parameters to evolve with it, ``{name: list or scipy.stats
        distribution}``.
    population_size : int, default=8
        Candidates per generation (the first is drawn at random).
    n_generations : int, default=4
        Generations bred after the first.
    selection : {"tournament", "roulette", "rank"}, default="tournament"
        How parents are picked: the fittest of ``tournament_size`` drawn
        at random; with chance proportional to fitness (shifted to be
        positive); or with chance proportional to fitness rank.
    tournament_size : int, default=3
        Entrants per tournament.
    crossover_rate : float, default=0.5
        Chance a child has two parents.
    mutation_rate : float, default=0.5
        Chance of one architecture move, and chance each hyper-parameter
        is redrawn.
    n_elite : int, default=2
        Fittest members kept unchanged into the next generation.
    objectives : tuple of {"score", "n_params", "latency"}, default=("score", "n_params")
        What fitness rewards: the cross-validated score, few parameters,
        a fast ``predict`` (ms for 64 rows, measured, so a search using it
        is not reproducible). With more than one, fitness is the Pareto
        front (non-dominated sorting), then the score within a front.
    scoring, cv, n_jobs, pre_dispatch, refit, random_state, verbose, error_score, \
factor, min_resources, resource
        See :class:`~sklears_neural.search.BaseSearch`. With ``factor``,
        each generation is evaluated by successive halving, and a child
        stopped early keeps the score it had then as its fitness.

    Attributes
    ----------
    pareto_front_ : list of dict
        The non-dominated full-budget candidates under ``objectives``,
        best score first: ``index`` (row of ``cv_results_``), ``params``,
        ``score``, ``n_params``, ``latency_ms``.
    population_ : list of dict
        Parameters of the last generation.
    cv_results_, best_estimator_, best_params_, best_architecture_, best_score_, \
best_index_, n_splits_, refit_time_, multimetric_, scorer_
        See :class:`~sklears_neural.search.BaseSearch`; ``cv_results_`` has a
        ``generation`` column.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.search import ArchitectureSpace, EvolutionarySearch
    >>> X, y = load_digits(return_X_y=True)
    >>> search = EvolutionarySearch(
    ...     MLPClassifier(max_iter=10),
    ...     ArchitectureSpace(n_layers=(1, 2), widths=(8, 16, 32)),
    ...     population_size=4, n_generations=1, cv=2, random_state=0,
    ... ).fit(X[:300] / 16, y[:300])
    >>> search.cv_results_["generation"].tolist()  # 4 drawn, 2 bred beside 2 elites
    [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    >>> sorted(search.best_architecture_)
    ['activation', 'hidden_layer_sizes']
    """

    _parameter_constraints = {
        **BaseSearch._parameter_constraints,
        "architecture": [ArchitectureSpace, None],
        "param_distributions": [dict, None],
        "population_size": [Interval(Integral, 2, None, closed="left")],
        "n_generations": [Interval(Integral, 0, None, closed="left")],
        "selection": [StrOptions({"tournament", "roulette", "rank"})],
        "tournament_size": [Interval(Integral, 1, None, closed="left")],
        "crossover_rate": [Interval(Real, 0, 1, closed="both")],
        "mutation_rate": [Interval(Real, 0, 1, closed="both")],
        "n_elite": [Interval(Integral, 0, None, closed="left")],
        "objectives": [tuple, list],
    }

    def __init__(self, estimator, architecture=None, param_distributions=None, *,
                 population_size=8, n_generations=4, selection="tournament",
                 tournament_size=3, crossover_rate=0.5, mutation_rate=0.5, n_elite=2,
                 objectives=("score", "n_params"), scoring=None, cv=3, n_jobs=None,
                 pre_dispatch="2*n_jobs", refit=True, random_state=None, verbose=0,
                 error_score=np.nan, factor=None, min_resources=None, resource="max_iter"):
        super().__init__(
            estimator, scoring=scoring, cv=cv, n_jobs=n_jobs, pre_dispatch=pre_dispatch,
            refit=refit, random_state=random_state, verbose=verbose,
            error_score=error_score, factor=factor, min_resources=min_resources,
            resource=resource,
        )
        self.architecture = architecture
        self.param_distributions = param_distributions
        self.population_size = population_size
        self.n_generations = n_generations
        self.selection = selection
        self.tournament_size = tournament_size
        self.crossover_rate = crossover_rate
        self.mutation_rate = mutation_rate
        self.n_elite = n_elite
        self.objectives = objectives

    def _check_objectives(self):
        objectives = tuple(self.objectives)
        unknown = sorted(set(objectives) - set(OBJECTIVES))
        if unknown or not objectives or "score" not in objectives or len(set(objectives)) != len(
                objectives):
            raise ValueError(
                f"objectives must be distinct names among {sorted(OBJECTIVES)} including "
                f"'score', got {self.objectives!r}."
            )
        if self.n_elite >= self.population_size:
            raise ValueError(
                f"n_elite={self.n_elite} must be smaller than population_size="
                f"{self.population_size}, or no child is ever bred."
            )
        return objectives

    def _architecture_names(self):
        architecture = self.architecture
        if architecture is None and self.param_distributions is None:
            architecture = ArchitectureSpace()
        return architecture.names if architecture is not None else None

    def _run_search(self, evaluate, rng, context):
        objectives = self._check_objectives()
        architecture = self.architecture
        if architecture is None and self.param_distributions is None:
            architecture = ArchitectureSpace()
        space, architecture = _check_space(self.param_distributions, architecture)
        population = _draw_candidates(space, architecture, rng, self.population_size)
        members = list(zip(population, evaluate(population, extra={"generation": 0})))
        everyone = list(members)
        seen = {_key(params) for params, _ in members}
        for generation in range(1, self.n_generations + 1):
            fitness = self._fitness([record for _, record in members], objectives)
            elite = np.argsort(-fitness, kind="stable")[: self.n_elite]
            children = self._breed(members, fitness, space, architecture, rng, seen)
            if not children:
                break
            records = evaluate(children, extra={"generation": generation})
            members = [members[i] for i in elite] + list(zip(children, records))
            everyone.extend(zip(children, records))
        self.population_ = [dict(params) for params, _ in members]
        self.pareto_front_ = self._pareto_front(everyone, objectives, context.full_budget)

    def _fitness(self, records, objectives):
        """One number per member, larger is fitter."""
        scores = np.array([record["score"] for record in records], dtype=float)
        finite = np.isfinite(scores)
        floor = scores[finite].min() - 1 if finite.any() else 0.0
        scores = np.where(finite, scores, floor)
        if len(objectives) == 1:
            return scores
        costs = np.column_stack([
            -OBJECTIVES[name][1] * np.array([r[OBJECTIVES[name][0]] for r in records], float)
            for name in objectives
        ])
        spread = scores.max() - scores.min()
        within = (scores - scores.min()) / spread if spread > 0 else np.zeros_like(scores)
        # A whole front apart, at most half a front for the score inside one.
        return -pareto_fronts(costs) + 0.5 * within

    def _select(self, fitness, rng):
        """Index of one parent."""
        n = len(fitness)
        if self.selection == "tournament":
            entrants = rng.choice(n, size=min(self.tournament_size, n), replace=False)
            return int(entrants[np.argmax(fitness[entrants])])
        if self.selection == "roulette":
            weights = fitness - fitness.min()
            # The least fit keeps a small chance, as in a wheel with no empty slot.
            weights = weights + 0.1 * (weights.max() if weights.max() > 0 else 1.0)
        else:
            weights = rankdata(fitness)
        return int(rng.choice(n, p=weights / weights.sum()))

    def _breed(self, members, fitness, space, architecture, rng, seen):
        n_children = self.population_size - min(self.n_elite, len(members))
        children = []
        for _ in range(20 * n_children):
            if len(children) == n_children:
                break
            first = members[self._select(fitness, rng)][0]
            if rng.rand() < self.crossover_rate:
                second = members[self._select(fitness, rng)][0]
                child = space.crossover(first, second, rng)
                if architecture is not None:
                    child.update(architecture.crossover(first, second, rng))
            else:
                child = dict(first)
            child = self._mutate(child, space, architecture, rng)
            # A copy of an evaluated candidate teaches nothing: mutate until new.
            for _ in range(5):
                if _key(child) not in seen:
                    break
                child = self._mutate(child, space, architecture, rng, force=True)
            if _key(child) not in seen:
                seen.add(_key(child))
                children.append(child)
        return children

    def _mutate(self, params, space, architecture, rng, force=False):
        params = space.mutate(params, rng, self.mutation_rate) if space.names else dict(params)
        if architecture is not None and (force or rng.rand() < self.mutation_rate):
            params.update(architecture.mutate(params, rng))
        elif force and space.names:
            params = space.mutate(params, rng, 1.0)
        return params

    def _pareto_front(self, everyone, objectives, full_budget):
        done = [(params, record) for params, record in everyone
                if self.factor is None or record["n_resources"] == full_budget]
        if not done:
            return []
        names = objectives if len(objectives) > 1 else ("score",)
        costs = [[-OBJECTIVES[n][1] * record[OBJECTIVES[n][0]] for n in names]
                 for _, record in done]
        fronts = pareto_fronts(costs)
        front = [
            {"index": record["row"], "params": dict(self._rows[record["row"]]["params"]),
             "score": record["score"], "n_params": record["n_params"],
             "latency_ms": record["latency_ms"]}
            for (params, record), number in zip(done, fronts) if number == 0
        ]
        return sorted(front, key=lambda entry: -_finite_score(entry["score"]))


def _finite_score(value):
    return -np.inf if np.isnan(value) else value
