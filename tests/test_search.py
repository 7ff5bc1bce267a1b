"""Tests of sklears_neural.search: the searchers' contract, early stopping,
devices, reproducibility, and small accuracy bounds.

Most mechanics are checked on ``KnownScore``, an estimator that trains
nothing and scores a known function of its architecture: it makes a
search's outcome predictable and the tests fast. Real networks are
trained where training is the point (halving counts epochs, refit,
accuracy).
"""

import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from joblib import parallel_config
from scipy.stats import loguniform
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import load_digits, make_friedman1
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklears_neural import MLPClassifier, MLPRegressor
from sklears_neural.callbacks import Callback
from sklears_neural.core._compat import InvalidParameterError
from sklears_neural.search import (
    ArchitectureSpace,
    EvolutionarySearch,
    HyperbandSearch,
    ProgressiveSearch,
)
from sklears_neural.search._trials import plan_devices, split_into_chains
from sklears_neural.search.evolutionary import pareto_fronts
from sklears_neural.search.halving import halving_rungs, hyperband_brackets

X_DIGITS, Y_DIGITS = load_digits(return_X_y=True)
X_DIGITS = X_DIGITS / 16.0
X_SMALL, Y_SMALL = X_DIGITS[:300], Y_DIGITS[:300]
X_TOY = np.random.RandomState(0).rand(30, 3)
Y_TOY = np.arange(30) % 2
BEST_WIDTH = 96  # KnownScore's best total width


class KnownScore(ClassifierMixin, BaseEstimator):
    """Trains nothing; ``score`` is a known function of the architecture.

    Best: two layers summing to ``best_width`` units, tanh, alpha 1e-3.
    The score grows with the epochs trained (``len(history_)``, which
    warm fits extend), so a longer budget never ranks a candidate lower.
    ``log`` (a path) gets one line per fit: device, start, end.
    """

    def __init__(self, hidden_layer_sizes=(16,), activation="relu", alpha=1e-4, max_iter=12,
                 warm_start=False, random_state=None, device="cpu", log=None, fail_above=None,
                 best_width=BEST_WIDTH):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.random_state = random_state
        self.device = device
        self.log = log
        self.fail_above = fail_above
        self.best_width = best_width

    def fit(self, X, y, sample_weight=None):
        start = time.time()
        if self.fail_above is not None and sum(self.hidden_layer_sizes) > self.fail_above:
            raise RuntimeError("this architecture does not fit")
        if sample_weight is not None and len(sample_weight) != len(X):
            raise ValueError("sample_weight was not cut to the fold")
        kept = self.history_ if self.warm_start and hasattr(self, "history_") else []
        self.history_ = kept + [{"epoch": len(kept) + i + 1} for i in range(self.max_iter)]
        self.coef_ = np.zeros(sum(self.hidden_layer_sizes))
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        self.quality_ = self.quality(self.get_params())
        if self.log is not None:
            time.sleep(0.01)
            with open(self.log, "a") as handle:
                handle.write(f"{self.device} {start} {time.time()}\n")
        return self

    @staticmethod
    def quality(params):
        widths = params["hidden_layer_sizes"]
        return (
            -abs(np.log2(sum(widths)) - np.log2(params.get("best_width", BEST_WIDTH))) - 0.2 * abs(len(widths) - 2)
            + 0.1 * (params["activation"] == "tanh") - 0.1 * abs(np.log10(params["alpha"]) + 3)
        )

    def predict(self, X):
        return np.full(len(X), self.classes_[0])

    def score(self, X, y=None, sample_weight=None):
        return self.quality_ - 1.0 / len(self.history_)


SPACE = ArchitectureSpace(n_layers=(1, 3), widths=(8, 16, 32, 64, 128))
ALPHAS = {"alpha": [1e-5, 1e-4, 1e-3, 1e-2]}


def _mlp(**params):
    return MLPClassifier(hidden_layer_sizes=(16,), max_iter=8, random_state=0, **params)


# -- spaces, halving schedule, devices: plain functions ------------------------


def test_architecture_space_moves_stay_in_the_space():
    rng = np.random.RandomState(0)
    space = ArchitectureSpace(n_layers=(2, 3), widths=(8, 32, 16), activations=("relu", "tanh"))
    seen_depths = set()
    for _ in range(300):
        first, second = space.sample(rng), space.sample(rng)
        for params in (first, space.mutate(first, rng), space.crossover(first, second, rng)):
            widths = params["hidden_layer_sizes"]
            assert 2 <= len(widths) <= 3 and set(widths) <= {8, 16, 32}
            assert params["activation"] in ("relu", "tanh")
            seen_depths.add(len(widths))
    assert seen_depths == {2, 3}
    # A mutation changes exactly one thing.
    parent = {"hidden_layer_sizes": (8, 16), "activation": "relu"}
    changes = [
        (space.mutate(parent, rng)["hidden_layer_sizes"] != (8, 16))
        + (space.mutate(parent, rng)["activation"] != "relu")
        for _ in range(50)
    ]
    assert max(changes) <= 2 and sum(changes) > 0


def test_grow_only_adds_capacity():
    space = ArchitectureSpace(n_layers=(1, 2), widths=(8, 16, 32), activations=None)
    assert space.smallest() == [{"hidden_layer_sizes": (w,)} for w in (8, 16, 32)]
    parent = {"hidden_layer_sizes": (16,)}
    grown = space.grow(parent)
    assert grown == [{"hidden_layer_sizes": (32,)}, {"hidden_layer_sizes": (16, 8)},
                     {"hidden_layer_sizes": (16, 16)}, {"hidden_layer_sizes": (16, 32)}]
    assert all(space.n_weights(g, 10, 3) > space.n_weights(parent, 10, 3) for g in grown)
    assert space.grow({"hidden_layer_sizes": (32, 32)}) == []  # deepest and widest


@pytest.mark.parametrize("bad, match", [
    ({"n_layers": (0, 2)}, "n_layers"),
    ({"n_layers": (3, 2)}, "n_layers"),
    ({"widths": ()}, "widths"),
    ({"widths": (8, 0)}, "widths"),
    ({"activations": ()}, "activations"),
])
def test_architecture_space_rejects_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        ArchitectureSpace(**bad)


def test_halving_schedules():
    assert halving_rungs(7, 60, 3) == [7, 21, 60]
    assert halving_rungs(1, 27, 3) == [1, 3, 9, 27]
    assert halving_rungs(2, 10, 2) == [2, 4, 10]  # 8 is within sqrt(2) of 10: left out
    assert halving_rungs(10, 10, 3) == [10]
    with pytest.raises(ValueError, match="min_resources"):
        halving_rungs(11, 10, 3)
    brackets = hyperband_brackets(81, 3)
    assert brackets == [(81, 1), (34, 3), (15, 9), (8, 27), (5, 81)]


def test_pareto_fronts():
    costs = [[1, 5], [2, 2], [3, 3], [5, 1], [4, 4], [2, 2]]
    assert pareto_fronts(costs).tolist() == [0, 0, 1, 0, 2, 0]  # equal points share a front
    assert pareto_fronts([[2, np.nan], [2, 3]]).tolist() == [1, 0]  # NaN is worst


def test_device_plan_gives_each_worker_its_own_card():
    assert plan_devices("cuda", n_jobs=4, device_count=2) == ["cuda:0", "cuda:1"]
    assert plan_devices("cuda", n_jobs=-1, device_count=3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert plan_devices("cuda", n_jobs=2, device_count=8) == ["cuda:0", "cuda:1"]
    assert plan_devices("auto", n_jobs=2, device_count=2) == ["cuda:0", "cuda:1"]
    assert plan_devices("cuda:1", n_jobs=4, device_count=2) == ["cuda:1"]
    assert plan_devices("auto", n_jobs=2, device_count=0) is None
    assert plan_devices("cpu", n_jobs=2, device_count=2) is None
    chains = split_into_chains(7, 3)
    assert sorted(i for chain in chains for i in chain) == list(range(7))
    assert [len(chain) for chain in chains] == [3, 2, 2]


def test_cuda_trials_never_share_a_card(tmp_path, monkeypatch):
    # No GPU here: a fake count of 2, and an estimator that only logs the
    # device it was given and when it trained.
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    log = tmp_path / "trials.log"
    search = HyperbandSearch(
        KnownScore(device="cuda", log=str(log)), ALPHAS, architecture=SPACE, n_brackets=1,
        factor=2, max_resources=4, n_jobs=4, cv=2, random_state=0, refit=False,
    )
    with parallel_config(backend="threading"):  # the same dispatch, without process start-up
        search.fit(X_TOY, Y_TOY)
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 2 * len(search.cv_results_["params"])
    assert {device for device, _, _ in lines} == {"cuda:0", "cuda:1"}
    for card in ("cuda:0", "cuda:1"):
        spans = sorted((float(a), float(b)) for device, a, b in lines if device == card)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))


# -- the GridSearchCV contract --------------------------------------------------


def test_results_records_and_delegation():
    search = EvolutionarySearch(
        _mlp(), ArchitectureSpace(n_layers=(1, 2), widths=(8, 16, 32)), ALPHAS,
        population_size=4, n_generations=1, cv=2, random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X_SMALL, Y_SMALL)
    results = search.cv_results_
    n_rows = len(results["params"])
    assert n_rows == 4 + 2  # 4 drawn, 2 bred beside 2 elites
    frame = pd.DataFrame(results)
    assert frame.shape[0] == n_rows
    for key in ("mean_test_score", "std_test_score", "rank_test_score", "split0_test_score",
                "split1_test_score", "mean_fit_time", "std_fit_time", "mean_score_time",
                "n_params", "mean_latency_ms", "n_epochs", "param_hidden_layer_sizes",
                "param_alpha", "generation"):
        assert len(results[key]) == n_rows, key
    assert np.allclose(results["mean_test_score"],
                       (results["split0_test_score"] + results["split1_test_score"]) / 2)
    best = search.best_index_
    assert results["rank_test_score"][best] == 1
    assert search.best_score_ == results["mean_test_score"].max()
    assert search.best_params_ == results["params"][best]
    assert search.best_architecture_ == {
        "hidden_layer_sizes": search.best_params_["hidden_layer_sizes"],
        "activation": search.best_params_["activation"],
    }
    assert search.n_splits_ == 2 and search.refit_time_ > 0
    # parameter count of an MLP: (64 + 1) * h1 + ... + (h_last + 1) * 10
    for params, count in zip(results["params"], results["n_params"]):
        sizes = [64, *params["hidden_layer_sizes"], 10]
        assert count == sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    fitted = search.best_estimator_
    assert fitted.get_params()["hidden_layer_sizes"] == search.best_params_["hidden_layer_sizes"]
    X_test = X_DIGITS[1000:1100]
    np.testing.assert_array_equal(search.predict(X_test), fitted.predict(X_test))
    np.testing.assert_array_equal(search.predict_proba(X_test), fitted.predict_proba(X_test))
    assert search.score(X_test, Y_DIGITS[1000:1100]) == fitted.score(X_test, Y_DIGITS[1000:1100])
    np.testing.assert_array_equal(search.classes_, np.arange(10))
    assert search.n_features_in_ == 64
    assert not hasattr(search, "transform")  # MLPClassifier has none


def test_refit_false_keeps_the_records_but_predicts_nothing():
    search = ProgressiveSearch(
        KnownScore(), SPACE, n_steps=1, beam_width=2, refit=False, random_state=0, cv=2,
    ).fit(X_TOY, Y_TOY)
    assert not hasattr(search, "best_estimator_")
    assert search.best_params_ == search.cv_results_["params"][search.best_index_]
    assert not hasattr(search, "predict")
    with pytest.raises(AttributeError, match="has no attribute 'predict'") as raised:
        search.predict(X_TOY)
    assert "refit=False" in str(raised.value.__cause__)


def test_refit_callable_and_multimetric():
    def smallest(results):
        return int(np.argmin(results["n_params"]))

    search = EvolutionarySearch(
        KnownScore(), SPACE, population_size=4, n_generations=1, refit=smallest,
        random_state=0, cv=2,
    ).fit(X_TOY, Y_TOY)
    assert search.best_index_ == smallest(search.cv_results_)
    assert not hasattr(search, "best_score_")
    metrics = {"known": lambda est, X, y: est.score(X, y), "accuracy": "accuracy"}
    search = HyperbandSearch(
        KnownScore(), ALPHAS, architecture=SPACE, n_brackets=1, factor=3, refit="known",
        scoring=metrics, random_state=0, cv=2,
    ).fit(X_TOY, Y_TOY)
    assert search.multimetric_ and set(search.scorer_) == {"known", "accuracy"}
    assert "mean_test_accuracy" in search.cv_results_
    assert search.best_score_ == search.cv_results_["mean_test_known"][search.best_index_]
    assert search.score(X_TOY, Y_TOY) == search.best_estimator_.score(X_TOY, Y_TOY)
    with pytest.raises(ValueError, match="refit must name one of"):
        HyperbandSearch(KnownScore(), ALPHAS, scoring=metrics, refit=True).fit(X_TOY, Y_TOY)
    with pytest.raises(IndexError, match="row index"):
        HyperbandSearch(KnownScore(), ALPHAS, refit=lambda r: 10**6, cv=2).fit(X_TOY, Y_TOY)


@pytest.mark.parametrize("search, match", [
    (EvolutionarySearch(KnownScore(), objectives=("n_params",)), "objectives"),
    (EvolutionarySearch(KnownScore(), population_size=3, n_elite=3), "n_elite"),
    (ProgressiveSearch(KnownScore(), SPACE, {"hidden_layer_sizes": [(8,)]}), "one place"),
    (HyperbandSearch(KnownScore()), "Nothing to search"),
    (HyperbandSearch(KnownScore(), {"alpha": 0.1}), "list of values"),
    (HyperbandSearch(LogisticRegression(), {"C": [1.0]}, resource="epochs"), "not a parameter"),
])
def test_bad_settings_are_named(search, match):
    with pytest.raises((ValueError, TypeError), match=match):
        search.fit(X_TOY, Y_TOY)


def test_parameters_are_validated():
    with pytest.raises(InvalidParameterError, match="selection"):
        EvolutionarySearch(KnownScore(), selection="best").fit(X_TOY, Y_TOY)
    with pytest.raises(InvalidParameterError, match="factor"):
        ProgressiveSearch(KnownScore(), factor=1).fit(X_TOY, Y_TOY)


def test_failed_trials_score_error_score():
    search = EvolutionarySearch(
        KnownScore(fail_above=100), SPACE, population_size=6, n_generations=1,
        random_state=0, cv=2,
    )
    with pytest.warns(FitFailedWarning, match="does not fit"):
        search.fit(X_TOY, Y_TOY)
    results = search.cv_results_
    too_wide = np.array([sum(p["hidden_layer_sizes"]) > 100 for p in results["params"]])
    assert too_wide.any() and (~too_wide).any()
    assert np.isnan(results["mean_test_score"][too_wide]).all()
    assert np.isfinite(results["mean_test_score"][~too_wide]).all()
    assert sum(search.best_params_["hidden_layer_sizes"]) <= 100
    with pytest.raises(RuntimeError, match="does not fit"):
        clone(search).set_params(error_score="raise").fit(X_TOY, Y_TOY)


def test_fit_params_are_cut_to_each_fold():
    weights = np.linspace(0.5, 1.5, len(X_TOY))
    search = ProgressiveSearch(KnownScore(), SPACE, n_steps=1, beam_width=1, cv=3)
    search.fit(X_TOY, Y_TOY, sample_weight=weights)  # KnownScore raises if not cut
    assert len(search.cv_results_["params"]) == 3


# -- early stopping of bad trials ------------------------------------------------


class CountEpochs(Callback):
    """Counts every epoch any copy of it sees (class-level, one process)."""

    epochs = 0

    def on_epoch_end(self, trainer, **kwargs):
        type(self).epochs += 1


def test_halving_stops_bad_trials_and_continues_survivors():
    CountEpochs.epochs = 0
    estimator = MLPClassifier(hidden_layer_sizes=(16,), max_iter=18, random_state=0,
                              callbacks=[CountEpochs()])
    search = HyperbandSearch(
        estimator, {"learning_rate_init": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]},
        n_brackets=1, factor=3, min_resources=2, cv=2, random_state=0, refit=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X_SMALL, Y_SMALL)
    results = search.cv_results_
    assert sorted(set(results["n_resources"].tolist())) == [2, 6, 18]
    last = {c: i for i, c in enumerate(results["candidate"])}  # each candidate's last row
    epochs = {c: results["n_epochs"][i] for c, i in last.items()}
    reached = {c: results["n_resources"][i] for c, i in last.items()}
    # history_ spans the warm continuations: epochs trained == budget reached.
    assert epochs == {c: float(r) for c, r in reached.items()}
    winners = [c for c in last if reached[c] == 18]
    losers = [c for c in last if reached[c] == 2]
    assert len(winners) == 1 and len(losers) >= 4
    assert all(epochs[c] < epochs[winners[0]] for c in losers)
    # Survivors continued where they stopped: no epoch was trained twice.
    assert CountEpochs.epochs == 2 * sum(epochs.values())
    # The halving kept the best: at every rung, the promoted had the best scores.
    first = results["rung"] == 0
    promoted = np.isin(results["candidate"][first], results["candidate"][results["rung"] == 1])
    scores = results["mean_test_score"][first]
    assert scores[promoted].min() >= scores[~promoted].max()


def test_n_samples_resource_works_for_any_estimator():
    search = HyperbandSearch(
        LogisticRegression(max_iter=300), {"C": [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]},
        resource="n_samples", n_brackets=1, factor=2, cv=2, random_state=0,
    ).fit(X_SMALL, Y_SMALL)
    budgets = sorted(set(search.cv_results_["n_resources"].tolist()))
    assert budgets[-1] == 150 and len(budgets) >= 3
    assert "param_n_samples" not in search.cv_results_
    assert search.cv_results_["rank_test_score"][search.best_index_] == 1
    assert search.cv_results_["n_resources"][search.best_index_] == 150
    assert search.best_params_["C"] >= 0.1  # small C underfits digits badly
    assert search.score(X_DIGITS[1000:], Y_DIGITS[1000:]) > 0.85


def test_halving_in_the_evolution():
    search = EvolutionarySearch(
        KnownScore(max_iter=9), SPACE, ALPHAS, population_size=6, n_generations=2,
        factor=3, random_state=0, cv=2,
    ).fit(X_TOY, Y_TOY)
    results = search.cv_results_
    assert set(results["n_resources"].tolist()) == {1, 3, 9}
    for generation in (0, 1, 2):
        rows = results["generation"] == generation
        # one candidate reaches the full budget per generation
        assert (results["n_resources"][rows] == 9).sum() == 1
    assert search.best_params_["max_iter"] == 9
    assert search.cv_results_["n_resources"][search.best_index_] == 9
    assert all(search.cv_results_["n_resources"][entry["index"]] == 9
               for entry in search.pareto_front_)


# -- the searchers' own behaviour -------------------------------------------------


@pytest.mark.parametrize("selection", ["tournament", "roulette", "rank"])
def test_selection_favours_the_fit(selection):
    search = EvolutionarySearch(KnownScore(), selection=selection, tournament_size=2)
    fitness = np.array([0.0, 1.0, 2.0, 3.0])
    rng = np.random.RandomState(0)
    counts = np.bincount([search._select(fitness, rng) for _ in range(4000)], minlength=4)
    expected = {
        # best of 2 drawn without replacement: P(i) = i / C(4, 2)
        "tournament": np.array([0, 1, 2, 3]) / 6,
        # fitness shifted by a tenth of its range
        "roulette": np.array([0.3, 1.3, 2.3, 3.3]) / 7.2,
        "rank": np.array([1, 2, 3, 4]) / 10,
    }[selection]
    np.testing.assert_allclose(counts / 4000, expected, atol=0.03)


def test_evolution_improves_on_its_random_start(global_random_seed):
    search = EvolutionarySearch(
        KnownScore(), SPACE, ALPHAS, population_size=8, n_generations=6,
        objectives=("score",), random_state=global_random_seed, cv=2,
    ).fit(X_TOY, Y_TOY)
    results = search.cv_results_
    quality = np.array([KnownScore.quality(p) for p in results["params"]])
    start = quality[results["generation"] == 0].max()
    best = KnownScore.quality(search.best_estimator_.get_params())
    assert best == quality.max()
    # The optimum (0.1) is two layers summing to 96 units, tanh, alpha 1e-3;
    # evolution reaches it or gains a tenth over the best random start.
    assert best >= min(0.1, start + 0.1) - 1e-9


def test_pareto_front_of_a_search():
    search = EvolutionarySearch(
        KnownScore(), SPACE, population_size=6, n_generations=3, random_state=0, cv=2,
    ).fit(X_TOY, Y_TOY)
    results = search.cv_results_
    front = search.pareto_front_
    indices = [entry["index"] for entry in front]
    assert search.best_index_ in indices  # the best score is never dominated
    scores, sizes = results["mean_test_score"], results["n_params"]
    for i in indices:
        dominated = (scores >= scores[i]) & (sizes <= sizes[i]) & (
            (scores > scores[i]) | (sizes < sizes[i]))
        assert not dominated.any()
    others = np.setdiff1d(np.arange(len(scores)), indices)
    for j in others:  # and every other candidate is dominated by some member
        assert any(scores[i] >= scores[j] and sizes[i] <= sizes[j] for i in indices)
    assert [e["score"] for e in front] == sorted((e["score"] for e in front), reverse=True)


def test_seeded_searches_are_reproducible():
    def run(seed, n_jobs=None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return EvolutionarySearch(
                MLPClassifier(max_iter=5), ArchitectureSpace(n_layers=(1, 2), widths=(8, 16)),
                population_size=3, n_generations=1, cv=2, random_state=seed, n_jobs=n_jobs,
            ).fit(X_SMALL[:150], Y_SMALL[:150]).cv_results_

    def stable(results):  # times and latency are measured, not computed
        return {k: v for k, v in results.items() if "time" not in k and "latency" not in k}

    first, again, parallel, other = run(0), run(0), run(0, n_jobs=2), run(1)
    for key, value in stable(first).items():
        np.testing.assert_array_equal(value, stable(again)[key], err_msg=key)
        np.testing.assert_array_equal(value, stable(parallel)[key], err_msg=key)
    assert list(first["params"]) != list(other["params"])


def test_progressive_grows_and_its_predictor_learns():
    # Score grows with total width here (best_width beyond the space), as
    # accuracy tends to with capacity until it saturates.
    search = ProgressiveSearch(
        KnownScore(best_width=1000), SPACE, ALPHAS, n_steps=4, beam_width=3, random_state=0,
        cv=2,
    ).fit(X_TOY, Y_TOY)
    results = search.cv_results_
    steps = results["step"]
    assert np.isnan(results["predicted_score"][steps == 0]).all()
    assert np.isfinite(results["predicted_score"][steps > 0]).all()
    assert all(len(p["hidden_layer_sizes"]) == 1 for p in results["params"][steps == 0])
    # Every later candidate is one growth step from an earlier one.
    for i in np.flatnonzero(steps > 0):
        earlier = results["params"][steps < steps[i]]
        assert any({**p, **g} == results["params"][i] for p in earlier for g in SPACE.grow(p))
    history = search.predictor_history_
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert [h["n_train"] for h in history] == [6, 9, 12, 15]
    assert all(np.isfinite(h["mae"]) for h in history)
    # Growing, the search improves on its starting points by far.
    assert search.best_score_ > results["mean_test_score"][steps == 0].max() + 0.5
    # and the predictor, having seen some growth, ranks the last steps' children.
    assert np.mean([h["spearman"] for h in history[1:]]) > 0


def test_progressive_predictor_ranks_expansions():
    # When the score grows with total width (the best width, 1000, lies
    # beyond the space), the predictor trained on the five one-layer starts
    # ranks their expansions well.
    search = ProgressiveSearch(
        KnownScore(best_width=1000),
        ArchitectureSpace(widths=(8, 16, 32, 64, 128), activations=None),
        n_steps=1, beam_width=5, n_initial=5, random_state=0, cv=2,
    ).fit(X_TOY, Y_TOY)
    assert search.predictor_history_[0]["spearman"] > 0.8
    assert search.predictor_history_[0]["n_expansions"] > 5  # it ranked, not just took all


# -- accuracy: tiny runs here; the measured ones are slow tests --------------------


def test_evolution_on_digits_beats_a_weak_bound(global_random_seed):
    search = EvolutionarySearch(
        MLPClassifier(max_iter=30, learning_rate_init=0.01, random_state=global_random_seed),
        ArchitectureSpace(n_layers=(1, 2), widths=(16, 32, 64)),
        population_size=4, n_generations=1, factor=3, cv=2, random_state=global_random_seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X_DIGITS[:500], Y_DIGITS[:500])
    assert search.best_score_ > 0.8
    assert search.score(X_DIGITS[1000:], Y_DIGITS[1000:]) > 0.85


def _measure(search, default, X_train, y_train, X_test, y_test):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        search.fit(X_train, y_train)
        seconds = time.perf_counter() - start
        baseline = default.fit(X_train, y_train).score(X_test, y_test)
    return search.score(X_test, y_test), baseline, seconds


def _digits_split():
    from sklearn.model_selection import train_test_split

    return train_test_split(X_DIGITS, Y_DIGITS, test_size=0.3, random_state=0,
                            stratify=Y_DIGITS)


def _friedman_split():
    X, y = make_friedman1(n_samples=1000, noise=0.5, random_state=0)
    return X[:700], X[700:], y[:700], y[700:]


_HYPER = {"alpha": loguniform(1e-5, 1e-2), "learning_rate_init": loguniform(3e-4, 1e-2)}
# The runs doc/search.md reports: each searcher's defaults, with and without
# successive halving (factor=3).
SEARCHERS = {
    "evolutionary": lambda est, **kw: EvolutionarySearch(est, ArchitectureSpace(), _HYPER, **kw),
    "evolutionary+halving": lambda est, **kw: EvolutionarySearch(
        est, ArchitectureSpace(), _HYPER, factor=3, **kw),
    "progressive": lambda est, **kw: ProgressiveSearch(
        est, ArchitectureSpace(), {"learning_rate_init": [1e-3, 3e-3]}, **kw),
    "progressive+halving": lambda est, **kw: ProgressiveSearch(
        est, ArchitectureSpace(), {"learning_rate_init": [1e-3, 3e-3]}, factor=3, **kw),
    "hyperband": lambda est, **kw: HyperbandSearch(
        est, _HYPER, architecture=ArchitectureSpace(), **kw),
}


def _report(data, name, search, score, baseline, seconds):
    results = search.cv_results_
    last = {c: i for i, c in enumerate(results["candidate"])}
    epochs = search.n_splits_ * sum(results["n_epochs"][i] for i in last.values())
    print(f"\n{data} {name}: test {score:.4f} vs default {baseline:.4f}; cv {search.best_score_:.4f}; "
          f"{seconds:.0f} s; {len(last)} candidates, {epochs:.0f} epochs trained; "
          f"best {search.best_params_}")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_measured_digits(name):
    X_train, X_test, y_train, y_test = _digits_split()
    search = SEARCHERS[name](MLPClassifier(max_iter=60, random_state=0), random_state=0)
    score, baseline, seconds = _measure(search, MLPClassifier(random_state=0),
                                        X_train / 16, y_train, X_test / 16, y_test)
    _report("digits", name, search, score, baseline, seconds)
    assert score >= baseline - 0.005


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_measured_friedman(name):
    X_train, X_test, y_train, y_test = _friedman_split()
    search = SEARCHERS[name](MLPRegressor(max_iter=100, random_state=0), random_state=0)
    score, baseline, seconds = _measure(search, MLPRegressor(random_state=0),
                                        X_train, y_train, X_test, y_test)
    _report("friedman1 R2", name, search, score, baseline, seconds)
    assert score >= baseline - 0.005


# -- scikit-learn's estimator checks on tiny searchers -------------------------------

# Every check passes for the three searchers (168 passed, 6 skipped: the
# skips are checks that do not apply, such as sparse-only ones). A failure
# to expect would be listed here with its reason.
EXPECTED_FAILURES = {}


def _tiny_searchers():
    # L-BFGS: accurate enough in a few iterations for check_classifiers_train
    net = MLPClassifier(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=30, random_state=0)
    space = ArchitectureSpace(n_layers=(1, 1), widths=(4, 8), activations=None)
    return [
        EvolutionarySearch(net, space, population_size=2, n_elite=1, n_generations=1, cv=2,
                           random_state=0),
        ProgressiveSearch(net, space, n_steps=1, beam_width=1, cv=2, random_state=0),
        HyperbandSearch(net, {"alpha": [1e-4, 1e-3]}, n_brackets=1, cv=2, random_state=0),
    ]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(_tiny_searchers()[2:], expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_sklearn_checks(estimator, check):
    # The shared base through HyperbandSearch: about 10 s on an idle machine.
    check(estimator)


@pytest.mark.slow  # 116 more checks, 20 s idle, 60 s on a loaded machine
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(_tiny_searchers()[:2], expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_sklearn_checks_evolutionary_progressive(estimator, check):
    check(estimator)


@pytest.mark.parametrize("search", _tiny_searchers(), ids=lambda s: type(s).__name__)
def test_check_param_validation(search):
    # parametrize_with_checks does not run it (see tests/test_common.py)
    from sklearn.utils.estimator_checks import check_param_validation

    check_param_validation(type(search).__name__, search)
