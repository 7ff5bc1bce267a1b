"""RNNClassifier / RNNRegressor, and the per-step targets both sequence families share.

models/_sequence.py (per-step targets, their masked loss, prediction
formats) is tested here with the recurrent network, whose fits are cheapest;
test_transformer.py checks it once for its own family.
"""

import pickle
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_param_validation,
    parametrize_with_checks,
)

import sklears_neural
from sklears_neural.models.rnn import RNNClassifier, RNNRegressor
from tests.conftest import DEVICES, replaced_float32_weight_check

_digits_X, _digits_y = load_digits(return_X_y=True)
# Each image read row by row: 8 steps of 8 pixels.
DIGITS_X = _digits_X.reshape(-1, 8, 8) / 16.0
DIGITS_Y = _digits_y

SMALL = dict(hidden_size=16)


def _ragged(n, rng, n_features=2, low=3, high=12):
    lengths = rng.randint(low, high, n)
    return [rng.normal(size=(length, n_features)) for length in lengths]


def _quiet(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


def _adding_task(n, n_steps, rng):
    """The adding problem as labels: do the two marked values sum past 1?

    Feature 0 holds uniform values, feature 1 marks one step in each half
    (Hochreiter & Schmidhuber, 1997). The answer needs the values at both
    marks, wherever they are; the mean of the steps says little about it.
    """
    values = rng.uniform(size=(n, n_steps))
    marks = np.zeros((n, n_steps))
    rows = np.arange(n)
    marks[rows, rng.randint(0, n_steps // 2, size=n)] = 1.0
    marks[rows, rng.randint(n_steps // 2, n_steps, size=n)] = 1.0
    y = ((values * marks).sum(axis=1) > 1.0).astype(int)
    return np.stack([values, marks], axis=2), y


def _mean_over_time_baseline(X, y, X_test, y_test):
    baseline = LogisticRegression().fit(X.mean(axis=1), y)
    return baseline.score(X_test.mean(axis=1), y_test)


# -- scikit-learn's checks -----------------------------------------------------

CHECKED = [
    RNNClassifier(hidden_size=8, max_iter=60, learning_rate_init=0.02),
    RNNRegressor(hidden_size=16, cell="gru", pooling="mean", max_iter=60,
                 learning_rate_init=0.02),
]


@parametrize_with_checks(CHECKED, xfail_strict=True)
def test_sklearn_compatible_estimator(estimator, check):
    if replaced_float32_weight_check(estimator, check):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("estimator", CHECKED, ids=repr)
def test_param_validation(estimator):
    check_param_validation(type(estimator).__name__, estimator)


# -- measured tasks --------------------------------------------------------------


def _digits_split():
    return train_test_split(DIGITS_X, DIGITS_Y, test_size=0.25, stratify=DIGITS_Y,
                            random_state=0)


def test_digits_rows_as_sequences_fast(global_random_seed):
    # 25 epochs of a 32-unit LSTM: ~0.93 measured; defaults in the slow test.
    X_train, X_test, y_train, y_test = _digits_split()
    clf = RNNClassifier(hidden_size=32, learning_rate_init=5e-3, max_iter=25,
                        random_state=global_random_seed)
    _quiet(clf, X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.88


@pytest.mark.slow
def test_digits_rows_as_sequences_default(global_random_seed):
    # Default settings. Measured (seed 42, one thread): accuracy 0.96 after
    # the 200 epochs, 6.5 s of CPU time.
    X_train, X_test, y_train, y_test = _digits_split()
    start = time.process_time()
    clf = _quiet(RNNClassifier(random_state=global_random_seed), X_train, y_train)
    assert time.process_time() - start < 60
    assert clf.score(X_test, y_test) >= 0.95


MEMORY_SETTINGS = dict(hidden_size=32, batch_size=32, learning_rate_init=0.01,
                       clip_grad_norm=1.0)


def test_long_memory_adding_fast(global_random_seed):
    # Attention pooling reads the marked steps directly and learns in a few
    # hundred steps (0.84-0.98 measured over 4 seeds, 2-3 s); the slow test
    # asks the final state to carry both values across the sequence.
    rng = np.random.RandomState(global_random_seed)
    X, y = _adding_task(600, 50, rng)
    X_test, y_test = _adding_task(500, 50, rng)
    clf = _quiet(RNNClassifier(**MEMORY_SETTINGS, pooling="additive", max_iter=30,
                               random_state=global_random_seed), X, y)
    assert _mean_over_time_baseline(X, y, X_test, y_test) < 0.65
    assert clf.score(X_test, y_test) >= 0.75


@pytest.mark.slow
def test_long_memory_adding(global_random_seed):
    # The final state must carry both marked values across the sequence.
    # Measured over seeds 0-3: 0.95-0.98 after 40 epochs (6-11 s of CPU);
    # the mean-over-time logistic regression scores 0.57.
    rng = np.random.RandomState(global_random_seed)
    X, y = _adding_task(2000, 50, rng)
    X_test, y_test = _adding_task(500, 50, rng)
    clf = _quiet(RNNClassifier(**MEMORY_SETTINGS, max_iter=40,
                               random_state=global_random_seed), X, y)
    assert _mean_over_time_baseline(X, y, X_test, y_test) < 0.65
    assert clf.score(X_test, y_test) >= 0.9


# -- ragged input, padding, attention ------------------------------------------------


def test_ragged_list_trains_and_predicts(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    X = _ragged(100, rng)
    y = np.array([int(x[:, 0].sum() > 0) for x in X])
    clf = _quiet(RNNClassifier(**SMALL, max_iter=40, learning_rate_init=0.01,
                               random_state=global_random_seed), X, y)
    assert clf.n_features_in_ == 2
    assert clf.predict(X).shape == (100,)
    assert clf.score(X, y) >= 0.9


@pytest.mark.parametrize("settings", [
    dict(pooling="last"),
    dict(pooling="last", bidirectional=True, num_layers=2),
    dict(pooling="max", cell="gru", bidirectional=True, merge="sum"),
    dict(pooling="additive"),
    dict(pooling="multi_head", num_heads=2, cell="rnn"),
    dict(pooling="scaled_dot", hierarchical=3),
    dict(per_step=True),
], ids=repr)
def test_padding_never_leaks(settings, global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    X = _ragged(40, rng, low=2, high=15)
    per_step = settings.get("per_step", False)
    y = [rng.randint(0, 3, len(x)) for x in X] if per_step else rng.randint(0, 3, 40)
    clf = _quiet(RNNClassifier(**SMALL, max_iter=2, random_state=global_random_seed,
                               **settings), X, y)
    short = int(np.argmin([len(x) for x in X]))
    alone = clf.predict_proba([X[short]])[0]
    # <= 32 rows run a float64 copy of the network, more the float32 one.
    np.testing.assert_allclose(clf.predict_proba(X[:10] + [X[short]])[10], alone,
                               atol=1e-12)
    np.testing.assert_allclose(clf.predict_proba(X)[short], alone, atol=1e-6)


@pytest.mark.parametrize("settings", [
    dict(pooling="additive"), dict(pooling="multi_head", num_heads=2),
    dict(pooling="multiplicative", hierarchical=4),
], ids=repr)
def test_get_attention(settings, global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    X = _ragged(30, rng, low=2, high=11)
    y = rng.randint(0, 2, 30)
    clf = _quiet(RNNClassifier(**SMALL, max_iter=2, random_state=global_random_seed,
                               **settings), X, y)
    weights = clf.get_attention(X)
    lengths = np.array([len(x) for x in X])
    valid = np.arange(lengths.max())[None, :] < lengths[:, None]
    if settings["pooling"] == "multi_head":
        assert weights.shape == (30, 2, lengths.max())
        weights = weights.transpose(1, 0, 2)  # heads first: each is (n, T)
    else:
        weights = weights[None]
    for w in weights:
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
        assert np.all(w[~valid] == 0.0)
    # The network's own weights in float64, one sequence alone.
    net = clf.module_.double()
    try:
        with torch.no_grad():
            ref = net.forward_with_attention(torch.as_tensor(X[5])[None])[1].steps[0]
    finally:
        clf.module_.float()
    np.testing.assert_allclose(clf.get_attention([X[5]])[0], ref.numpy(), atol=1e-10)


# -- per-step targets (models/_sequence.py) -----------------------------------


def _running_sign(X):
    # A label per step that needs the previous step: sign of x_t + x_{t-1}.
    return [np.where(x[:, 0] + np.concatenate([[0.0], x[:-1, 0]]) > 0, "up", "down")
            for x in X]


def test_per_step_classifier_learns_and_returns_per_step(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    X = _ragged(120, rng, n_features=1, low=4, high=12)
    y = _running_sign(X)
    clf = _quiet(RNNClassifier(**SMALL, per_step=True, learning_rate_init=0.01,
                               max_iter=40, random_state=global_random_seed), X, y)
    assert list(clf.classes_) == ["down", "up"]
    predictions = clf.predict(X)
    assert [p.shape for p in predictions] == [(len(x),) for x in X]
    flat_true, flat_pred = np.concatenate(y), np.concatenate(predictions)
    assert clf.score(X, y) == np.mean(flat_true == flat_pred)
    assert clf.score(X, y) >= 0.9
    probabilities = clf.predict_proba(X[:3])
    assert [p.shape for p in probabilities] == [(len(x), 2) for x in X[:3]]
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X[:3])[1]),
                               probabilities[1], rtol=1e-12)
    # Equal lengths in a 3-D array: arrays (n, T[, n_classes]) back.
    X_fixed = rng.normal(size=(5, 6, 1))
    assert clf.predict(X_fixed).shape == (5, 6)
    assert clf.predict_proba(X_fixed).shape == (5, 6, 2)


def test_per_step_regressor_multi_output(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    X = rng.normal(size=(80, 7, 2))
    y = np.cumsum(X, axis=1)  # (80, 7, 2): a running sum per feature
    reg = _quiet(RNNRegressor(**SMALL, per_step=True, learning_rate_init=0.01,
                              max_iter=60, random_state=global_random_seed), X, y)
    assert reg.n_outputs_ == 2
    assert reg.predict(X).shape == (80, 7, 2)
    assert reg.score(X, y) >= 0.9


def test_per_step_loss_is_the_mean_over_valid_steps(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    X = _ragged(12, rng, low=2, high=9)
    y = [rng.randint(0, 3, len(x)) for x in X]
    w = rng.uniform(0.5, 2.0, size=12)
    # One batch and a step too small to move the weights: loss_ is the loss
    # of the initial network.
    clf = _quiet(RNNClassifier(**SMALL, per_step=True, alpha=0.0, precision="float64",
                               learning_rate_init=1e-12, max_iter=1, shuffle=False,
                               random_state=global_random_seed), X, y, sample_weight=w)
    with torch.no_grad():
        per_sequence = [
            F.cross_entropy(clf.module_(torch.as_tensor(x)[None])[0],
                            torch.as_tensor(t))
            for x, t in zip(X, y)
        ]
    expected = np.average([v.item() for v in per_sequence], weights=w)
    np.testing.assert_allclose(clf.loss_, expected, rtol=1e-9)


def test_per_step_lbfgs(global_random_seed):
    # The full-batch solver goes through the same masked loss.
    rng = np.random.RandomState(global_random_seed)
    X = _ragged(50, rng, n_features=1, low=3, high=10)
    y = [np.cumsum(x[:, 0]) for x in X]
    reg = _quiet(RNNRegressor(hidden_size=8, per_step=True, solver="lbfgs", max_iter=50,
                              random_state=global_random_seed), X, y)
    assert reg.score(X, y) >= 0.95


def test_per_step_targets_past_a_sequence_are_ignored(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    X = _ragged(30, rng, n_features=1, low=2, high=8)
    longest = max(len(x) for x in X)
    predictions = []
    for fill in (0.0, 1e6):
        y = np.full((30, longest), fill)
        for i, x in enumerate(X):
            y[i, : len(x)] = np.cumsum(x[:, 0])
        reg = _quiet(RNNRegressor(**SMALL, per_step=True, max_iter=3,
                                  random_state=global_random_seed), X, y)
        predictions.append(np.concatenate(reg.predict(X)))
    assert np.array_equal(predictions[0], predictions[1])


def test_per_step_early_stopping_and_partial_fit(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    X = _ragged(100, rng, n_features=1, low=3, high=10)
    y = _running_sign(X)
    clf = _quiet(RNNClassifier(**SMALL, per_step=True, early_stopping=True,
                               max_iter=15, learning_rate_init=0.02,
                               random_state=global_random_seed), X, y)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert all(0.0 <= s <= 1.0 for s in clf.validation_scores_)
    # Accuracy over the held-out sequences' steps, after some learning.
    assert clf.best_validation_score_ > 0.7
    streamed = RNNClassifier(**SMALL, per_step=True, random_state=global_random_seed)
    losses = [streamed.partial_fit(X, y, classes=["down", "up"]).loss_
              for _ in range(5)]
    assert losses[-1] < losses[0]


def test_per_step_errors():
    rng = np.random.RandomState(0)
    X = _ragged(10, rng)
    with pytest.raises(ValueError, match="per_step=True needs a target per time step"):
        RNNClassifier(per_step=True).fit(X, rng.randint(0, 2, 10))
    y = [np.zeros(len(x)) for x in X]
    y[3] = np.zeros(len(X[3]) + 1)
    with pytest.raises(ValueError, match="The targets of sequence 3 have shape"):
        RNNRegressor(per_step=True).fit(X, y)
    with pytest.raises(ValueError, match="y has 4 steps per sequence"):
        RNNRegressor(per_step=True).fit(X, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="class_weight"):
        RNNClassifier(per_step=True, class_weight="balanced").fit(
            X, [np.arange(len(x)) % 2 for x in X])
    with pytest.raises(ValueError, match="hierarchical"):
        RNNClassifier(per_step=True, hierarchical=2).fit(
            X, [np.zeros(len(x)) for x in X])


# -- persistence, export, threads, determinism ---------------------------------


def _fitted_small(seed, **params):
    rng = np.random.RandomState(seed)
    X = _ragged(40, rng)
    y = np.array([int(x[:, 0].sum() > 0) for x in X])
    clf = _quiet(RNNClassifier(**SMALL, max_iter=3, random_state=seed, **params), X, y)
    return clf, X, y


def test_pickle_and_save_load_exact(tmp_path, global_random_seed):
    clf, X, _ = _fitted_small(global_random_seed, pooling="additive",
                              bidirectional=True)
    expected = clf.predict_proba(X)
    restored = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(restored.predict_proba(X), expected)
    clf.save(tmp_path / "model")
    loaded = sklears_neural.load(tmp_path / "model")
    assert type(loaded) is RNNClassifier
    assert np.array_equal(loaded.predict_proba(X), expected)
    assert np.array_equal(loaded.get_attention(X), clf.get_attention(X))


@pytest.mark.slow
def test_onnx_export_says_why_not(global_random_seed):
    # Slow: torch.onnx tries to trace the packed sequences first (5-10 s).
    pytest.importorskip("onnxscript")
    clf, _, _ = _fitted_small(global_random_seed)
    with pytest.raises(ValueError, match="Cannot export RNNClassifier to ONNX.*"
                                         "inference_backend='torch'"):
        clf.to_onnx()


def test_predict_from_eight_threads_equals_one(global_random_seed):
    clf, X, _ = _fitted_small(global_random_seed)
    batches = [X[:5], X, X[3:9], X[::-1]]  # float64 and float32 paths
    expected = [clf.predict_proba(b) for b in batches]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: clf.predict_proba(batches[i % 4]), range(32)))
    for i, result in enumerate(results):
        assert np.array_equal(result, expected[i % 4])


def test_random_state_fixes_the_fit(global_random_seed):
    first, X, _ = _fitted_small(global_random_seed, dropout=0.2, num_layers=2)
    second, _, _ = _fitted_small(global_random_seed, dropout=0.2, num_layers=2)
    other, _, _ = _fitted_small(global_random_seed + 1, dropout=0.2, num_layers=2)
    assert np.array_equal(first.predict_proba(X), second.predict_proba(X))
    assert not np.allclose(first.predict_proba(X), other.predict_proba(X))


def test_warm_start_continues_the_fit(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    X = _ragged(60, rng)
    y = np.array([int(x[:, 0].sum() > 0) for x in X])
    # Two warm fits of 4 epochs are one fit of 8.
    warm = RNNClassifier(**SMALL, max_iter=4, warm_start=True,
                         random_state=global_random_seed)
    _quiet(warm, X, y)
    _quiet(warm, X, y)
    whole = _quiet(RNNClassifier(**SMALL, max_iter=8, random_state=global_random_seed),
                   X, y)
    np.testing.assert_allclose(warm.predict_proba(X), whole.predict_proba(X), atol=1e-6)
    # A changed architecture is not continued.
    with pytest.raises(ValueError, match="architecture parameters changed"):
        warm.set_params(hidden_size=8).partial_fit(X, y)


def test_pipeline_with_scaler_on_flat_rows(global_random_seed):
    X_train, X_test, y_train, y_test = _digits_split()
    pipe = make_pipeline(
        StandardScaler(),
        RNNClassifier(hidden_size=32, input_shape=(8, 8), max_iter=20,
                      learning_rate_init=5e-3, random_state=global_random_seed),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X_train.reshape(len(X_train), 64), y_train)
    assert pipe.score(X_test.reshape(len(X_test), 64), y_test) >= 0.85


@pytest.mark.parametrize("name, identity, active", [
    ("jitter", {"std": 0.0}, {"std": 0.5}),
    ("time_warp", {"sigma": 0.0}, {"sigma": 0.5}),
    ("window_slice", {"fraction": 1.0}, {"fraction": 0.5}),
    ("permutation", {"n_segments": 1}, {"n_segments": 4}),
])
def test_augment_sequences(name, identity, active, global_random_seed):
    # The same draws either way: only what the augmentation does differs.
    plain, X, _ = _fitted_small(global_random_seed, augment=(name, identity),
                                learning_rate_init=0.02)
    augmented = [_fitted_small(global_random_seed, augment=(name, active),
                               learning_rate_init=0.02)[0] for _ in range(2)]
    assert np.array_equal(augmented[0].predict_proba(X), augmented[1].predict_proba(X))
    assert np.abs(augmented[0].predict_proba(X) - plain.predict_proba(X)).max() > 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_device_per_step_and_attention(device, global_random_seed):
    # Lengths stay on the CPU for packing while the batch is on the device.
    rng = np.random.RandomState(global_random_seed)
    X = _ragged(40, rng, n_features=1, low=2, high=12)
    y = _running_sign(X)
    clf = _quiet(RNNClassifier(**SMALL, per_step=True, max_iter=3, device=device,
                               random_state=global_random_seed), X, y)
    short = int(np.argmin([len(x) for x in X]))
    np.testing.assert_allclose(clf.predict_proba(X)[short],
                               clf.predict_proba([X[short]])[0], atol=1e-6)
    pooled = RNNClassifier(**SMALL, pooling="additive", max_iter=2, device=device,
                           random_state=global_random_seed)
    _quiet(pooled, X, rng.randint(0, 2, 40))
    np.testing.assert_allclose(pooled.get_attention(X).sum(axis=1), 1.0, atol=1e-6)


# -- errors ---------------------------------------------------------------------


def test_errors_name_the_problem():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(20, 6, 3))
    y = rng.randint(0, 2, 20)
    with pytest.raises(ValueError, match="deterministic objective"):
        RNNClassifier(**SMALL, dropout=0.1, num_layers=2, solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="different numbers of features per step"):
        RNNClassifier(**SMALL).fit([np.zeros((4, 2)), np.zeros((5, 3))], [0, 1])
    with pytest.raises(ValueError, match="Sequence 1 of X is empty"):
        RNNClassifier(**SMALL).fit([np.zeros((4, 2)), np.zeros((0, 2))], [0, 1])
    X_nan = X.copy()
    X_nan[3, 2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        RNNClassifier(**SMALL).fit(X_nan, y)
    clf = _quiet(RNNClassifier(**SMALL, max_iter=1), X, y)
    with pytest.raises(ValueError, match="X has 2 features per step, but "
                                         "RNNClassifier was fitted with 3"):
        clf.predict([x[:, :2] for x in X])
    with pytest.raises(ValueError, match="infinity"):
        clf.predict(np.where(X_nan == X_nan, X, np.inf))
    with pytest.raises(ValueError, match="pooling='last' has no attention weights"):
        clf.get_attention(X)
    with pytest.raises(ValueError, match="num_heads=3"):
        RNNClassifier(**SMALL, pooling="multi_head", num_heads=3).fit(X, y)
