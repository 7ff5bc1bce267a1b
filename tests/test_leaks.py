"""Nothing of a model stays in memory after it is gone.

A fitted module must be freed once its estimator is (the prediction cache
once kept every module that had ever predicted), and many fit / predict /
save / load cycles must not grow the process. The long run is behind the
``slow`` marker; the default run does the same cycles fewer times.
"""

import gc
import sys
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score

from sklears_neural import MLPClassifier, MLPRegressor, load
from sklears_neural.core import inference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _memory import rss_bytes, settled_rss_bytes  # noqa: E402

X, y = load_iris(return_X_y=True)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _everything_a_model_does(est, tmp_path, target=y):
    est.fit(X, target)
    est.predict(X[:3])  # the float64 plan
    est.predict(np.repeat(X, 200, axis=0))  # the torch path
    if hasattr(est, "predict_proba"):
        est.predict_proba(X)
    est.save(tmp_path / "model.zip")
    loaded = load(tmp_path / "model.zip")
    loaded.predict(X)
    return loaded


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize(
    "params", [{}, {"batch_norm": True, "dropout": 0.2}, {"spectral_norm": True}],
    ids=str,
)
def test_a_deleted_model_is_freed(cls, params, tmp_path):
    target = y if cls is MLPClassifier else X[:, 0]
    est = cls(hidden_layer_sizes=(8,), max_iter=3, random_state=0, **params)
    loaded = _everything_a_model_does(est, tmp_path, target)
    refs = [weakref.ref(est), weakref.ref(est.module_), weakref.ref(loaded.module_)]
    del est, loaded
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]


def test_cross_validation_leaves_no_module_behind():
    gc.collect()
    before = len(inference._CACHE)
    for _ in range(3):
        cross_val_score(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3,
                                      random_state=0), X, y, cv=5)
    gc.collect()
    assert len(inference._CACHE) == before


def _rss_growth(n_cycles, tmp_path):
    """Settled RSS growth (bytes) over ``n_cycles`` cycles after a warm-up.

    The warm-up cycles let allocator pools, torch's kernels and lazily
    imported modules reach their steady size first.
    """
    def cycle():
        est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0)
        _everything_a_model_does(est, tmp_path)

    for _ in range(20):
        cycle()
    before = settled_rss_bytes()
    for _ in range(n_cycles):
        cycle()
    return settled_rss_bytes() - before


# The bound. Measured on this model (iris, 16 hidden units): before the
# prediction cache held its modules weakly, 200 cycles grew the settled RSS
# by 8.5 MiB (~43 KiB a cycle: a module, its optimizer state, plan, float64
# state and a loaded copy); since, by 0.6 MiB (allocator noise, warnings
# registries). 20 KiB a cycle sits between the two: a leak of any one module
# per cycle fails it, noise does not.
BOUND_PER_CYCLE = 20 * 1024


@pytest.mark.skipif(rss_bytes() is None, reason="needs /proc/self/status")
def test_fit_predict_save_load_cycles_do_not_grow_memory(tmp_path):
    growth = _rss_growth(100, tmp_path)
    assert growth < 100 * BOUND_PER_CYCLE, f"grew {growth / 2**20:.1f} MiB"


@pytest.mark.slow
@pytest.mark.skipif(rss_bytes() is None, reason="needs /proc/self/status")
def test_a_thousand_cycles_do_not_grow_memory(tmp_path):
    growth = _rss_growth(1000, tmp_path)
    assert growth < 1000 * BOUND_PER_CYCLE, f"grew {growth / 2**20:.1f} MiB"
