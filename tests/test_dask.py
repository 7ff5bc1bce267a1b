"""Search and cross-validation on a dask cluster through joblib's dask backend.

Nothing of ours knows about dask: scikit-learn's ``GridSearchCV`` and
``cross_val_score`` send their fits through joblib, and ``with
joblib.parallel_backend("dask")`` sends them to the cluster's workers, which
unpickle our estimators, fit and return them. The results must be the ones
a single process computes.
"""

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score

from sklears_neural import MLPClassifier

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def client():
    # Two worker processes of one thread each: what a cluster's machines are.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:400] / 16.0, y[:400]


def test_grid_search_on_two_dask_workers_equals_one_process(client, digits):
    X, y = digits
    grid = {"hidden_layer_sizes": [(16,), (32,)], "alpha": [1e-4, 1e-2]}
    est = MLPClassifier(batch_size=32, max_iter=10, learning_rate_init=0.01,
                        random_state=0)
    local = GridSearchCV(est, grid, cv=3).fit(X, y)
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(est, grid, cv=3, n_jobs=-1).fit(X, y)
    # The workers did the fits...
    assert sum(client.run(lambda: 1).values()) == 2
    # ...and found the same scores, to the bit: same seeds, same arithmetic.
    np.testing.assert_array_equal(remote.cv_results_["mean_test_score"],
                                  local.cv_results_["mean_test_score"])
    assert remote.best_params_ == local.best_params_
    assert remote.best_score_ > 0.8
    np.testing.assert_array_equal(remote.predict(X), local.predict(X))


def test_cross_val_score_on_dask_workers(client, digits):
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(16,), batch_size=32, max_iter=5,
                        random_state=1)
    expected = cross_val_score(est, X, y, cv=4)
    with joblib.parallel_backend("dask"):
        scores = cross_val_score(est, X, y, cv=4, n_jobs=-1)
    np.testing.assert_array_equal(scores, expected)
