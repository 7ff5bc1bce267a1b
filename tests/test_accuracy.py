"""Cross-validated accuracy beside scikit-learn's, as in doc/accuracy.md.

The protocol (pipelines, splits, the diabetes target scaling) is the one of
``benchmarks/accuracy_vs_sklearn.py``, loaded from there so that the tests
check what the page reports.
"""

import functools
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_val_score
from threadpoolctl import threadpool_limits

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "accuracy_vs_sklearn.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("accuracy_vs_sklearn", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()

FAST_DATA = {"iris": load_iris(return_X_y=True), "wine": load_wine(return_X_y=True)}
# Fixed splits; only the models' random_state follows global_random_seed.
FAST_CV = StratifiedKFold(3, shuffle=True, random_state=0)
# Measured on the 2-core CPU machine, seeds 0-99, this exact protocol (library
# at commit 5ee2be2): ours minus scikit-learn ranged -2.00..+2.00 points on
# iris (-3..+3 of 150 samples, mean +0.12) and -1.69..+1.68 on wine (-3..+3 of
# 178, mean -0.01). The libraries are level, and one sample is 0.67 / 0.56
# points, so a 1-point bound would fail on seeds where ours is merely unlucky.
# 2.5 points fails at 4 iris or 5 wine samples behind: one to two samples
# beyond the worst seed. The negative control (max_iter=50, a quarter of the
# epochs) lost 3.33-16 points on iris on every seed 0-99, median 9.3, so it
# fails by at least one sample; in a smaller run (seeds 0-7, earlier tree)
# learning_rate_init=3e-4 lost 3.3-9.3 points and max_iter=100 lost 2.7-6.0.
# Wine is too easy to notice slow training and guards against gross errors.
FAST_TOL = 0.025


@pytest.fixture(autouse=True)
def _one_thread():
    # Small models: a second intra-op thread (torch's, or NumPy's BLAS on the
    # scikit-learn side) only adds contention, which on a busy two-core
    # machine makes these fits many times slower. The benchmark runs the same.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _sklearn_accuracy(dataset, seed):
    # Shared by the comparison and its negative control on iris.
    return _cv_accuracy("sklearn", dataset, seed)


def _cv_accuracy(library, dataset, seed, **params):
    X, y = FAST_DATA[dataset]
    model = bench.make_model(library, "classification", seed, **params)
    with warnings.catch_warnings():
        # Default max_iter=200 ends most of these fits, in both libraries.
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        return cross_val_score(model, X, y, cv=FAST_CV).mean()


@pytest.mark.parametrize("dataset", ["iris", "wine"])
def test_accuracy_level_with_sklearn(dataset, global_random_seed):
    reference = _sklearn_accuracy(dataset, global_random_seed)
    ours = _cv_accuracy("ours", dataset, global_random_seed)
    assert ours >= reference - FAST_TOL, (
        f"{dataset}: ours {ours:.4f} vs scikit-learn {reference:.4f}"
    )


def test_accuracy_check_catches_undertrained_model(global_random_seed):
    # Negative control: the same comparison must fail for a model that stops
    # after a quarter of the default epochs, or it could not catch a slower
    # optimizer or an early stop.
    reference = _sklearn_accuracy("iris", global_random_seed)
    short = _cv_accuracy("ours", "iris", global_random_seed, max_iter=50)
    assert short < reference - FAST_TOL, (
        f"iris: max_iter=50 scored {short:.4f} vs scikit-learn {reference:.4f}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(bench.DATASETS))
def test_accuracy_within_one_point_of_sklearn(dataset):
    # The target as doc/accuracy.md states it: model seed 0, 5 folds,
    # no more than 1 point (0.01 of accuracy or R^2) below scikit-learn. A
    # fixed seed: across seeds the gap moves by more than 1 point through
    # noise alone (one iris sample is 0.67 points); the fast tests above run
    # the seed sweep.
    reference = bench.evaluate(dataset, "sklearn", 0)["scores"].mean()
    ours = bench.evaluate(dataset, "ours", 0)["scores"].mean()
    assert ours >= reference - 0.01, (
        f"{dataset}: ours {ours:.4f} vs scikit-learn {reference:.4f}"
    )
