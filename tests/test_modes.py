"""Prediction from many threads, and beside a fit in another thread (core/modes.py)."""

import pickle
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning

from sklears_neural import MLPClassifier, MLPRegressor
from sklears_neural.core import inference, modes
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.plan import Plan

X, y = make_classification(n_samples=3000, n_features=20, n_informative=6, n_classes=3,
                           random_state=0)
X = X.astype(np.float32)

# Every layer whose forward pass reads the training flag: dropout drops units,
# batch norm updates its running statistics, spectral norm runs power iteration.
FLAG_READERS = [
    {"dropout": 0.5},
    {"batch_norm": True},
    {"spectral_norm": True},
    {"dropout": 0.3, "layer_norm": True, "residual": "add"},
]


def _fit(random_state, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier((32, 16), max_iter=3, random_state=random_state,
                             **params).fit(X, y)


def _state(clf):
    return {k: v.clone() for k, v in clf.module_.state_dict().items()}


@pytest.mark.parametrize("params", FLAG_READERS, ids=str)
@pytest.mark.parametrize("fresh_from_pickle", [False, True])
def test_predict_from_eight_threads_is_identical_and_changes_nothing(
    params, fresh_from_pickle, global_random_seed
):
    clf = _fit(global_random_seed, **params)
    if fresh_from_pickle:
        # An unpickled module is built in training mode: the first
        # predictions, all at once, must still run in evaluation mode.
        clf = pickle.loads(pickle.dumps(clf))
    reference = pickle.loads(pickle.dumps(clf))
    expected_labels = reference.predict(X)  # 3,000 rows: the torch path
    expected_proba = reference.predict_proba(X[:7])  # the float64 plan
    before = _state(clf)

    def predict(i):
        if i % 2:
            return "labels", clf.predict(X)
        return "proba", clf.predict_proba(X[:7])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(predict, range(48)))

    wrong_labels = [int((out != expected_labels).sum()) for kind, out in results
                    if kind == "labels"]
    assert wrong_labels == [0] * 24
    for kind, out in results:
        if kind == "proba":
            np.testing.assert_array_equal(out, expected_proba)
    after = _state(clf)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in clf.module_.modules())


def test_a_fit_leaves_its_module_in_evaluation_mode():
    clf = _fit(0, dropout=0.2)
    assert not any(m.training for m in clf.module_.modules())
    clf.partial_fit(X[:100], y[:100])
    assert not any(m.training for m in clf.module_.modules())


def _partial_fits(clf, n_calls, started=None):
    for i in range(n_calls):
        clf.partial_fit(X[i * 100:(i + 1) * 100], y[i * 100:(i + 1) * 100],
                        classes=np.unique(y))
        if started is not None:
            started.set()


@pytest.mark.parametrize("params", [{"dropout": 0.5}, {"batch_norm": True}], ids=str)
def test_prediction_beside_a_fit_in_another_thread_does_not_disturb_it(params):
    # Reference: the same partial_fit calls with no one predicting.
    alone = MLPClassifier((32, 16), random_state=0, **params)
    _partial_fits(alone, 20)

    busy = MLPClassifier((32, 16), random_state=0, **params)
    started, outputs = threading.Event(), []
    trainer = threading.Thread(target=_partial_fits, args=(busy, 20, started))
    trainer.start()
    started.wait()
    while trainer.is_alive():
        # Both paths: small batches (plan) and large ones (torch).
        outputs.append(busy.predict_proba(X[:5]))
        outputs.append(busy.predict_proba(X))
    trainer.join()

    # Training was not disturbed: bit-identical weights.
    want, got = _state(alone), _state(busy)
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert len(outputs) >= 2
    for out in outputs:
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)


def test_a_fit_waits_for_predictions_already_running():
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    order = []
    entered, release = threading.Event(), threading.Event()

    def predict():
        with modes.predicting(module, lambda: list(module.modules())) as situation:
            order.append(("predict", situation, module.training))
            entered.set()
            release.wait()
            order.append(("predict ends", module[1].training))

    def fit():
        with modes.training(module):
            module.train()
            order.append(("fit", module.training))

    predictor = threading.Thread(target=predict)
    predictor.start()
    entered.wait()
    fitter = threading.Thread(target=fit)
    fitter.start()
    fitter.join(timeout=0.2)
    assert fitter.is_alive()  # waiting for the prediction
    release.set()
    predictor.join()
    fitter.join()
    assert order == [
        ("predict", modes.FREE, False),
        ("predict ends", False),
        ("fit", True),
    ]
    assert not module.training  # back to rest after the fit


def test_regressor_predictions_agree_across_threads():
    Xr = X[:, :5].astype(np.float64)
    target = Xr @ np.arange(1.0, 6.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = MLPRegressor(hidden_layer_sizes=(16,), dropout=0.5, batch_norm=True, max_iter=3,
                           random_state=0).fit(Xr, target)
    expected = pickle.loads(pickle.dumps(reg)).predict(Xr)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: reg.predict(Xr), range(32)))
    for out in results:
        np.testing.assert_array_equal(out, expected)


def test_a_prediction_cut_short_by_ctrl_c_does_not_block_the_next_fit():
    clf = _fit(0)
    done = threading.Event()

    def interrupted_then_fit():
        # __enter__ without __exit__: a Ctrl-C that lands between them.
        modes.predicting(clf.module_, lambda: []).__enter__()
        clf.partial_fit(X[:100], y[:100])
        done.set()

    worker = threading.Thread(target=interrupted_then_fit, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done.is_set()
    assert id(clf.module_) not in modes._READERS  # the fit cleared it


class _Square(torch.nn.Module):
    """A layer the float64 plan has no step for."""

    def forward(self, x):
        return x * x


class _NoPlanClassifier(MLPClassifier):
    """An MLP with the base's hook: a family without a float64 plan."""

    _prediction_plan = BaseNeuralEstimator._prediction_plan


@pytest.mark.parametrize("plan", ["plan", "unknown-layer", "no-hook"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_outputs_beside_a_fit_equal_the_float64_forward(plan, sparse, monkeypatch):
    ran = []
    for method in ("__call__", "sparse"):
        real = getattr(Plan, method)
        monkeypatch.setattr(Plan, method, lambda self, part, real=real: (
            ran.append(part.shape[0]) or real(self, part)))
    clf = _fit(0, dropout=0.5)
    if plan == "unknown-layer":
        clf.module_.layers[1] = _Square()
    elif plan == "no-hook":
        clf.__class__ = _NoPlanClassifier
    rows = X[:300].astype(np.float64)
    reference = clf.module_.double().eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(rows)).numpy()
    clf.module_.float().train()  # as during a fit: the flags stay the fit's
    got = inference._outputs_beside_fit(
        clf, clf.module_, sp.csr_matrix(rows) if sparse else rows
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert all(m.training for m in clf.module_.modules())
    # The family's plan where it has one, else a float64 copy of the module.
    assert ran == ([300] if plan == "plan" else [])
