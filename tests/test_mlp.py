"""MLPClassifier / MLPRegressor: drop-in behaviour, fidelity and bad input."""

import io
import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import xlogy
from sklearn.base import clone
from sklearn.datasets import load_digits, load_iris, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklears_neural import MLPClassifier, MLPRegressor
from sklears_neural.callbacks import Callback
from sklears_neural.exceptions import TrainingDivergedError
from tests.conftest import DEVICES

ESTIMATORS = [MLPClassifier, MLPRegressor]

X_digits, y_digits = load_digits(n_class=3, return_X_y=True)
X_digits = X_digits[:200] / 16.0
y_digits = y_digits[:200]
X_iris, y_iris = load_iris(return_X_y=True)
X_iris = StandardScaler().fit_transform(X_iris)
X_reg, y_reg = make_regression(n_samples=200, n_features=10, noise=1.0, random_state=0)
y_reg = y_reg / y_reg.std()


def _data_for(Estimator):
    if Estimator is MLPClassifier:
        return X_digits, y_digits
    return X_reg, y_reg


def _weights(est):
    return [p.detach().clone() for p in est.module_.parameters()]


def _quiet_fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


# -- learning --------------------------------------------------------------


@pytest.mark.parametrize("solver", ["lbfgs", "adam", "sgd"])
def test_classifier_learns_digits(solver, global_random_seed):
    clf = MLPClassifier(
        hidden_layer_sizes=(50,), solver=solver, max_iter=150,
        learning_rate_init=0.1 if solver == "sgd" else 0.01,
        random_state=global_random_seed,
    )
    _quiet_fit(clf, X_digits, y_digits)
    assert clf.score(X_digits, y_digits) > 0.95


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_regressor_learns(solver, global_random_seed):
    reg = MLPRegressor(
        hidden_layer_sizes=(50,), solver=solver, max_iter=300,
        learning_rate_init=0.01, random_state=global_random_seed,
    )
    _quiet_fit(reg, X_reg, y_reg)
    assert reg.score(X_reg, y_reg) > 0.95


def test_multilabel_classification(global_random_seed):
    rng = np.random.RandomState(0)
    X = rng.randn(200, 6)
    Y = np.column_stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0, X[:, 3] < 0.5]).astype(int)
    clf = MLPClassifier(solver="lbfgs", hidden_layer_sizes=(30,),
                        random_state=global_random_seed, max_iter=300)
    _quiet_fit(clf, X, Y)
    assert clf.out_activation_ == "logistic"
    assert clf.predict(X).shape == Y.shape
    assert clf.predict_proba(X).shape == Y.shape
    assert clf.score(X, Y) > 0.9


def test_string_and_pandas_labels():
    labels = np.array(["setosa", "versicolor", "virginica"])[y_iris]
    clf = MLPClassifier(solver="lbfgs", random_state=0, max_iter=300)
    _quiet_fit(clf, pd.DataFrame(X_iris, columns=list("abcd")), pd.Series(labels))
    assert list(clf.classes_) == list(labels[np.unique(y_iris, return_index=True)[1]])
    predicted = clf.predict(pd.DataFrame(X_iris, columns=list("abcd")))
    assert predicted.dtype == labels.dtype
    assert np.mean(predicted == labels) > 0.95


def test_binary_probabilities_are_float64_and_consistent():
    y = (y_digits == 1).astype(int)
    clf = _quiet_fit(MLPClassifier(max_iter=30, random_state=0), X_digits, y)
    proba = clf.predict_proba(X_digits)
    assert proba.dtype == np.float64
    assert proba.shape == (len(y), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(clf.predict(X_digits), clf.classes_[proba.argmax(1)])
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X_digits)), proba)


def test_multi_output_and_poisson_regression(global_random_seed):
    Y = np.column_stack([y_reg, -2 * y_reg])
    reg = _quiet_fit(MLPRegressor(solver="lbfgs", random_state=global_random_seed,
                                  max_iter=300), X_reg, Y)
    assert reg.predict(X_reg).shape == (200, 2)
    assert reg.score(X_reg, Y) > 0.95

    counts = np.random.RandomState(0).poisson(np.exp(0.5 * X_reg[:, 0]))
    poisson = _quiet_fit(MLPRegressor(loss="poisson", solver="lbfgs", max_iter=200,
                                      random_state=global_random_seed), X_reg, counts)
    assert poisson.out_activation_ == "exp"
    assert (poisson.predict(X_reg) > 0).all()
    mean_model = np.mean((counts - counts.mean()) ** 2)
    assert np.mean((counts - poisson.predict(X_reg)) ** 2) < mean_model
    with pytest.raises(ValueError, match="negative"):
        MLPRegressor(loss="poisson").fit(X_reg, -counts - 1)


# -- the scikit-learn contract, measured ------------------------------------


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_partial_fit_k_times_equals_fit_k_epochs(Estimator):
    X, y = _data_for(Estimator)
    params = dict(shuffle=False, random_state=0, hidden_layer_sizes=(20,),
                  batch_size=50)
    full = _quiet_fit(Estimator(max_iter=5, **params), X, y)
    stepped = Estimator(**params)
    for _ in range(5):
        if Estimator is MLPClassifier:
            stepped.partial_fit(X, y, classes=np.unique(y))
        else:
            stepped.partial_fit(X, y)
    for a, b in zip(_weights(full), _weights(stepped)):
        assert torch.equal(a, b)
    assert stepped.t_ == full.t_ == 5 * len(X)
    np.testing.assert_allclose(stepped.loss_curve_, full.loss_curve_, rtol=1e-6)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_warm_start_continues_optimizer_state(Estimator):
    X, y = _data_for(Estimator)
    params = dict(shuffle=False, random_state=0, hidden_layer_sizes=(20,))
    straight = _quiet_fit(Estimator(max_iter=4, **params), X, y)
    resumed = _quiet_fit(Estimator(max_iter=2, warm_start=True, **params), X, y)
    step_count = resumed._optimizer.state_dict()["state"][0]["step"].item()
    _quiet_fit(resumed, X, y)
    assert resumed._optimizer.state_dict()["state"][0]["step"].item() == 2 * step_count
    for a, b in zip(_weights(straight), _weights(resumed)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_unit_sample_weight_equals_no_weight(Estimator):
    X, y = _data_for(Estimator)
    est = Estimator(max_iter=10, random_state=0)
    plain = _quiet_fit(clone(est), X, y)
    weighted = _quiet_fit(clone(est), X, y, sample_weight=np.ones(len(X)))
    for a, b in zip(_weights(plain), _weights(weighted)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_sample_weight_zero_equals_removing_samples():
    keep = np.arange(len(X_digits)) % 3 != 0
    weights = keep.astype(float)
    est = MLPClassifier(solver="lbfgs", random_state=0, precision="float64", max_iter=50)
    removed = _quiet_fit(clone(est), X_digits[keep], y_digits[keep])
    zeroed = _quiet_fit(clone(est), X_digits, y_digits, sample_weight=weights)
    np.testing.assert_allclose(
        removed.predict_proba(X_digits), zeroed.predict_proba(X_digits), atol=1e-8
    )


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_same_seed_same_model_other_seed_other_model(Estimator):
    X, y = _data_for(Estimator)
    fit = lambda seed: _quiet_fit(Estimator(max_iter=5, random_state=seed), X, y)  # noqa: E731
    torch_state = torch.random.get_rng_state()
    a, b, c = fit(0), fit(0), fit(1)
    # The caller's global generator is untouched.
    assert torch.equal(torch_state, torch.random.get_rng_state())
    method = "predict_proba" if Estimator is MLPClassifier else "predict"
    np.testing.assert_array_equal(getattr(a, method)(X), getattr(b, method)(X))
    assert not np.array_equal(getattr(a, method)(X), getattr(c, method)(X))


@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize("dumps", ["pickle", "joblib"])
def test_persistence_round_trip_is_exact(Estimator, dumps):
    X, y = _data_for(Estimator)
    est = _quiet_fit(Estimator(max_iter=5, random_state=0), X, y)
    if dumps == "pickle":
        restored = pickle.loads(pickle.dumps(est))
    else:
        buffer = io.BytesIO()
        joblib.dump(est, buffer)
        buffer.seek(0)
        restored = joblib.load(buffer)
    method = "predict_proba" if Estimator is MLPClassifier else "predict"
    assert np.array_equal(getattr(est, method)(X), getattr(restored, method)(X))
    # The restored model keeps training where the original would.
    est.partial_fit(X, y)
    restored.partial_fit(X, y)
    for a, b in zip(_weights(est), _weights(restored)):
        assert torch.equal(a, b)


def test_pickled_state_holds_numpy_not_tensors():
    est = _quiet_fit(MLPClassifier(max_iter=3, random_state=0), X_digits, y_digits)
    state = est.__getstate__()

    def walk(obj):
        assert not isinstance(obj, (torch.Tensor, torch.nn.Module, torch.Generator))
        if isinstance(obj, dict):
            for value in obj.values():
                walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)

    walk(state)
    assert isinstance(state["module_"]["layers.0.weight"], np.ndarray)
    # Restoring did not alter the live estimator.
    assert isinstance(est.module_, torch.nn.Module)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_model_selection_tools(Estimator):
    X, y = _data_for(Estimator)
    est = Estimator(hidden_layer_sizes=(20,), max_iter=20, learning_rate_init=0.01,
                    random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(est, X, y, cv=3)
        search = GridSearchCV(
            est, {"alpha": [1e-4, 1e-1]}, cv=2, n_jobs=2,
        ).fit(X, y)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    assert search.best_estimator_.n_features_in_ == X.shape[1]
    assert search.best_score_ > 0.5
    assert clone(est).get_params() == est.get_params()
    assert "MLP" in est._repr_html_()


def test_feature_names_and_pandas_output_pipeline():
    frame = pd.DataFrame(X_iris, columns=["sl", "sw", "pl", "pw"])
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, random_state=0))
    pipe.set_output(transform="pandas")
    _quiet_fit(pipe, frame, y_iris)
    np.testing.assert_array_equal(pipe[-1].feature_names_in_, frame.columns)
    clf = _quiet_fit(MLPClassifier(max_iter=5, random_state=0), frame, y_iris)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        clf.predict(X_iris)
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame.rename(columns={"sl": "other"}))


# -- fidelity to scikit-learn ------------------------------------------------


@pytest.mark.parametrize(
    "target", ["multiclass", "binary", "multilabel"],
)
def test_from_sklearn_classifier_matches(target, global_random_seed):
    X = X_iris
    y = {
        "multiclass": y_iris,
        "binary": (y_iris == 2).astype(int),
        "multilabel": np.column_stack([y_iris == 0, X[:, 0] > 0]).astype(int),
    }[target]
    sk = SkMLPClassifier(hidden_layer_sizes=(15, 7), activation="tanh", max_iter=50,
                         random_state=global_random_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y)
    ours = MLPClassifier.from_sklearn(sk, precision="float64")
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X),
                               rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
    assert ours.score(X, y) == pytest.approx(sk.score(X, y), abs=1e-6)
    for a, b in zip(ours.coefs_, sk.coefs_):
        np.testing.assert_array_equal(a, b)
    assert ours.n_layers_ == sk.n_layers_ and ours.out_activation_ == sk.out_activation_


@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_from_sklearn_regressor_matches(loss, global_random_seed):
    y = np.abs(y_reg) if loss == "poisson" else y_reg
    sk = SkMLPRegressor(loss=loss, hidden_layer_sizes=(20,), max_iter=50,
                        random_state=global_random_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X_reg, y)
    ours = MLPRegressor.from_sklearn(sk, precision="float64")
    np.testing.assert_allclose(ours.predict(X_reg), sk.predict(X_reg), rtol=1e-6,
                               atol=1e-6)
    # Our training objective equals scikit-learn's loss formula on the same
    # weights: half squared error / half Poisson deviance plus alpha's L2 term.
    p = sk.predict(X_reg)
    if loss == "poisson":
        data_term = np.mean(xlogy(y, y / p) - y + p)
    else:
        data_term = 0.5 * np.mean((y - p) ** 2)
    l2 = 0.5 * sk.alpha * sum((w**2).sum() for w in sk.coefs_) / len(y)
    inputs = torch.from_numpy(X_reg)
    targets = torch.from_numpy(y.reshape(-1, 1))
    with torch.no_grad():
        objective = ours._objective()(ours.module_, inputs, targets, None).item()
    assert objective == pytest.approx(data_term + l2, rel=1e-10)


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "squared", "poisson"])
def test_fused_mean_loss_equals_the_mean_of_per_sample_losses(kind):
    rng = np.random.RandomState(0)
    output = torch.from_numpy(rng.randn(50, 3))
    if kind == "multiclass":
        est, target = MLPClassifier(), torch.from_numpy(rng.randint(0, 3, 50))
    elif kind in ("binary", "multilabel"):
        est = MLPClassifier()
        target = torch.from_numpy(rng.randint(0, 2, (50, 1 if kind == "binary" else 3)))
        target, output = target.double(), output[:, :target.shape[1]]
    else:
        est = MLPRegressor()
        est.out_activation_ = "exp" if kind == "poisson" else "identity"
        target = torch.from_numpy(np.abs(rng.randn(50, 3)))
    expected = est._loss(output, target).mean()
    assert float(expected) > 0.1
    torch.testing.assert_close(est._mean_loss(output, target), expected, rtol=1e-12, atol=0)


def test_from_sklearn_model_keeps_training():
    sk = SkMLPClassifier(hidden_layer_sizes=(10,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X_iris, y_iris)
    warm = MLPClassifier.from_sklearn(sk, warm_start=True)
    _quiet_fit(warm, X_iris, y_iris)
    assert warm.n_iter_ == 5 and len(warm.loss_curve_) == 10
    stepped = MLPClassifier.from_sklearn(sk)
    stepped.partial_fit(X_iris, y_iris)
    assert stepped.t_ == sk.t_ + len(X_iris)


def test_from_sklearn_requires_fitted_model():
    with pytest.raises(ValueError, match="not fitted"):
        MLPClassifier.from_sklearn(SkMLPClassifier())


# -- training features --------------------------------------------------------


def test_early_stopping_records_validation_and_restores_best(global_random_seed):
    clf = MLPClassifier(early_stopping=True, max_iter=60, n_iter_no_change=5,
                        random_state=global_random_seed)
    _quiet_fit(clf, X_digits, y_digits)
    assert len(clf.validation_scores_) == len(clf.validation_loss_curve_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    assert all(np.isfinite(clf.validation_loss_curve_))
    if clf.converged_:
        assert clf.n_iter_ < 60


def test_partial_fit_with_early_stopping_signals_convergence(global_random_seed):
    clf = MLPClassifier(early_stopping=True, n_iter_no_change=2, tol=0.5,
                        random_state=global_random_seed)
    classes = np.unique(y_digits)
    for call in range(1, 10):
        clf.partial_fit(X_digits, y_digits, classes=classes)
        assert len(clf.validation_scores_) == call
        if clf.converged_:
            break
    # tol=0.5 cannot be met: patience (2) runs out on the 4th call.
    assert clf.converged_ and call == 4


def test_adaptive_learning_rate_divides_by_five():
    clf = MLPClassifier(solver="sgd", learning_rate="adaptive", learning_rate_init=0.1,
                        tol=10.0, n_iter_no_change=1, max_iter=5, random_state=0)
    _quiet_fit(clf, X_digits, y_digits)
    # Every epoch misses tol=10: patience 1 runs out every second epoch.
    assert clf._optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 25)


def test_invscaling_follows_samples_seen():
    clf = MLPClassifier(solver="sgd", learning_rate="invscaling", power_t=0.5,
                        learning_rate_init=0.5, max_iter=3, random_state=0)
    _quiet_fit(clf, X_digits, y_digits)
    assert clf._optimizer.param_groups[0]["lr"] == pytest.approx(0.5 / (clf.t_ + 1) ** 0.5)


def test_callbacks_see_every_epoch_and_can_stop():
    class StopAtThree(Callback):
        def __init__(self):
            self.epochs, self.batches = [], 0

        def on_batch_end(self, trainer, *, batch_loss, **kwargs):
            self.batches += 1

        def on_epoch_end(self, trainer, **kwargs):
            self.epochs.append(trainer.history[-1]["epoch"])
            trainer.should_stop = len(self.epochs) == 3

    stopper = StopAtThree()
    clf = MLPClassifier(max_iter=50, batch_size=50, callbacks=[stopper], random_state=0)
    clf.fit(X_digits, y_digits)
    used = clf.callbacks_[0]
    assert used.epochs == [1, 2, 3] and clf.n_iter_ == 3
    assert used.batches == 3 * 4
    # fit trains with a copy: the parameter itself is never mutated.
    assert stopper.epochs == [] and clf.callbacks[0] is stopper
    # L-BFGS honours the stop flag too.
    lbfgs = MLPClassifier(solver="lbfgs", callbacks=[StopAtThree()], max_iter=50,
                          random_state=0)
    lbfgs.fit(X_digits, y_digits)
    assert lbfgs.n_iter_ == 3 and lbfgs.callbacks_[0].epochs == [1, 2, 3]


def test_verbose_prints_sklearn_lines(capsys):
    _quiet_fit(MLPClassifier(max_iter=2, verbose=True, random_state=0), X_digits, y_digits)
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "Iteration 2, loss = " in out


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("verbose", [2, 10])
def test_verbose_above_1_prints_sklearn_lines_and_a_progress_bar(capsys, solver, verbose):
    # scikit-learn prints its lines for any verbose > 0; users grep for them.
    _quiet_fit(MLPClassifier(solver=solver, max_iter=3, verbose=verbose,
                             random_state=0), X_digits, y_digits)
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("Iteration ")]
    assert [line.split(",")[0] for line in lines] == [
        "Iteration 1", "Iteration 2", "Iteration 3"
    ]
    assert "/3" in err and "train_loss=" in err


def test_sgd_divergence_with_early_stopping_ends_training_on_the_best_weights():
    # scikit-learn returns a fitted model here; so do we, with a warning.
    X, y = load_iris(return_X_y=True)
    with pytest.warns(ConvergenceWarning, match="NaN or infinite in epoch"):
        reg = MLPRegressor(solver="sgd", learning_rate_init=10, early_stopping=True,
                           random_state=0).fit(X, y)
    assert np.isfinite(reg.predict(X)).all()
    assert reg.n_iter_ == len(reg.validation_scores_) >= 1
    assert all(np.isfinite(reg.loss_curve_))


def test_sgd_divergence_without_early_stopping_raises_with_sklearn_words():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(TrainingDivergedError,
                       match="^Solver produced non-finite parameter weights"):
        MLPRegressor(solver="sgd", learning_rate_init=10, random_state=0).fit(X, y)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_unit_sample_weights_give_the_unweighted_model_exactly(Estimator):
    y = y_digits if Estimator is MLPClassifier else X_digits[:, 20]
    settings = dict(hidden_layer_sizes=(16,), max_iter=8, early_stopping=True,
                    random_state=0)
    plain = _quiet_fit(Estimator(**settings), X_digits, y)
    weighted = Estimator(**settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted.fit(X_digits, y, sample_weight=np.ones(len(y)))
    assert np.array_equal(plain.predict(X_digits), weighted.predict(X_digits))
    assert plain.validation_scores_ == weighted.validation_scores_


def test_early_stopping_split_error_names_the_original_labels():
    X = np.random.RandomState(0).randn(20, 3)
    y = np.array(["False"] * 19 + ["True"])
    with pytest.raises(ValueError, match=r"too few members are: \['True'\]"):
        MLPClassifier(early_stopping=True).fit(X, y)


def test_convergence_warning_when_max_iter_reached():
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(max_iter=2, random_state=0).fit(X_digits, y_digits)


def test_class_weight_balanced_raises_minority_recall():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(300, 2), rng.randn(20, 2) + 1.5])
    y = np.r_[np.zeros(300), np.ones(20)]
    recall = {}
    for weight in [None, "balanced"]:
        clf = _quiet_fit(MLPClassifier(class_weight=weight, max_iter=100,
                                       random_state=0), X, y)
        recall[weight] = np.mean(clf.predict(X[y == 1]) == 1)
    assert recall["balanced"] > recall[None] + 0.3


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_partial_fit_hidden_for_lbfgs(Estimator):
    assert not hasattr(Estimator(solver="lbfgs"), "partial_fit")
    assert hasattr(Estimator(solver="adam"), "partial_fit")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_devices_and_precisions(Estimator, device):
    X, y = _data_for(Estimator)
    for precision, dtype in [("float32", torch.float32), ("float64", torch.float64)]:
        est = _quiet_fit(Estimator(max_iter=5, device=device, precision=precision,
                                   random_state=0), X, y)
        param = next(est.module_.parameters())
        assert param.device.type == device and param.dtype == dtype
        assert est.predict(X).shape[0] == len(X)
        restored = pickle.loads(pickle.dumps(est))
        assert next(restored.module_.parameters()).device.type == device


def test_sparse_input_equals_dense():
    import scipy.sparse as sp

    est = MLPClassifier(max_iter=5, random_state=0, shuffle=True)
    dense = _quiet_fit(clone(est), X_digits, y_digits)
    sparse = _quiet_fit(clone(est), sp.csr_matrix(X_digits), y_digits)
    np.testing.assert_allclose(dense.predict_proba(X_digits),
                               sparse.predict_proba(sp.csr_matrix(X_digits)), atol=1e-6)


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_rejected(Estimator, bad):
    X, y = _data_for(Estimator)
    X_bad = X.copy()
    X_bad[3, 2] = bad
    est = Estimator(max_iter=2)
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        est.fit(X_bad, y)
    assert not hasattr(est, "module_")
    if Estimator is MLPRegressor:
        y_bad = y.copy()
        y_bad[0] = bad
        with pytest.raises(ValueError, match="Input y contains (NaN|infinity)"):
            est.fit(X, y_bad)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_wrong_feature_count_and_unfitted(Estimator):
    X, y = _data_for(Estimator)
    with pytest.raises(NotFittedError):
        Estimator().predict(X)
    est = _quiet_fit(Estimator(max_iter=2), X, y)
    with pytest.raises(ValueError, match=f"is expecting {X.shape[1]} features"):
        est.predict(X[:, :-1])


@pytest.mark.parametrize(
    "param, value, match",
    [
        ("activation", "rleu", r"activation.*'identity'.*'relu'.*'tanh'.*Got 'rleu'"),
        ("solver", "adamm", r"solver.*'adam'.*'lbfgs'.*'sgd'.*Got 'adamm'"),
        ("precision", "float16", r"precision.*'float32', 'float64'.*Got 'float16'"),
        ("hidden_layer_sizes", (10, 0), r"hidden_layer_sizes.*all >= 1"),
    ],
)
def test_unknown_option_lists_the_choices(param, value, match):
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**{param: value}).fit(X_iris, y_iris)


def test_option_names_ignore_case_and_separators():
    spelled = _quiet_fit(MLPClassifier(activation="ReLU", solver="ADAM",
                                       learning_rate="Con-stant", max_iter=2,
                                       random_state=0), X_iris, y_iris)
    canonical = _quiet_fit(MLPClassifier(activation="relu", solver="adam", max_iter=2,
                                         random_state=0), X_iris, y_iris)
    np.testing.assert_array_equal(spelled.predict_proba(X_iris),
                                  canonical.predict_proba(X_iris))


def test_unknown_device_says_how_to_fix():
    with pytest.raises(ValueError, match="device"):
        MLPClassifier(device="tpu:0", max_iter=2).fit(X_iris, y_iris)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available.*device='cpu'"):
            MLPClassifier(device="cuda", max_iter=2).fit(X_iris, y_iris)


def test_divergence_raises_and_leaves_estimator_unfitted():
    X_big = X_reg * 1e20
    reg = MLPRegressor(solver="sgd", learning_rate_init=10.0, max_iter=20, random_state=0)
    with pytest.raises(TrainingDivergedError, match="NaN or infinite") as info:
        reg.fit(X_big, y_reg * 1e20)
    assert not hasattr(reg, "module_") and not hasattr(reg, "n_iter_")
    assert info.value.epoch >= 1
    with pytest.raises(NotFittedError):
        reg.predict(X_reg)


def test_divergence_in_warm_start_keeps_previous_model():
    reg = _quiet_fit(MLPRegressor(solver="sgd", max_iter=3, warm_start=True,
                                  random_state=0), X_reg, y_reg)
    before = reg.predict(X_reg)
    n_iter, curve = reg.n_iter_, list(reg.loss_curve_)
    reg.set_params(learning_rate_init=1e3)
    with pytest.raises(TrainingDivergedError) as info:
        reg.fit(X_reg * 1e20, y_reg * 1e20)
    np.testing.assert_array_equal(reg.predict(X_reg), before)
    assert reg.n_iter_ == n_iter and reg.loss_curve_ == curve
    state = info.value.last_finite_state
    assert state is None or all(np.isfinite(v).all() for v in state.values())


def test_keyboard_interrupt_keeps_what_was_learned():
    class CtrlCAtThree(Callback):
        def on_epoch_end(self, trainer, **kwargs):
            if len(trainer.history) == 3:
                raise KeyboardInterrupt

    clf = MLPClassifier(max_iter=50, batch_size=20, learning_rate_init=0.01,
                        callbacks=[CtrlCAtThree()], random_state=0)
    with pytest.warns(UserWarning, match="interrupted by user"):
        clf.fit(X_digits, y_digits)
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3
    # 30 Adam steps were kept (measured 0.99; chance is 0.33).
    assert clf.score(X_digits, y_digits) > 0.8


def test_partial_fit_after_early_stopping_fit_trains():
    clf = _quiet_fit(MLPClassifier(early_stopping=True, max_iter=30, random_state=0),
                     X_digits, y_digits)
    before = clf.predict_proba(X_digits)
    clf.partial_fit(X_digits, y_digits)
    assert not np.array_equal(before, clf.predict_proba(X_digits))
    assert len(clf.validation_scores_) == clf.history_[-1]["epoch"]


def test_failed_warm_start_restores_the_generator():
    reg = _quiet_fit(MLPRegressor(solver="sgd", max_iter=2, warm_start=True,
                                  random_state=0), X_reg, y_reg)
    state = reg._generator.get_state()
    reg.set_params(learning_rate_init=1e3)
    with pytest.raises(TrainingDivergedError):
        reg.fit(X_reg * 1e20, y_reg * 1e20)
    assert torch.equal(reg._generator.get_state(), state)


def test_refitting_the_same_instance_is_identical():
    clf = MLPClassifier(max_iter=5, random_state=0)
    first = _quiet_fit(clf, X_digits, y_digits).predict_proba(X_digits)
    second = _quiet_fit(clf, X_digits, y_digits).predict_proba(X_digits)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("precision, dtype", [("float32", np.float32),
                                              ("float64", np.float64)])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_training_data_of_the_compute_dtype_is_not_copied(monkeypatch, precision, dtype,
                                                          solver):
    import sklears_neural.core.inputs as inputs_module

    made = []

    class RecordingArrayData(inputs_module.ArrayData):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(inputs_module, "ArrayData", RecordingArrayData)
    X = np.ascontiguousarray(X_digits, dtype=dtype)
    _quiet_fit(MLPClassifier((8,), max_iter=2, precision=precision, solver=solver,
                             random_state=0), X, y_digits)
    # The tensor the trainer batches from is the caller's array itself.
    assert made[0].X.data_ptr() == X.ctypes.data
    # Another dtype is converted to the compute dtype.
    made.clear()
    other = np.ascontiguousarray(X, dtype=np.float64 if dtype == np.float32 else np.float32)
    _quiet_fit(MLPClassifier((8,), max_iter=2, precision=precision, solver=solver,
                             random_state=0), other, y_digits)
    assert made[0].X.dtype == {"float32": torch.float32, "float64": torch.float64}[precision]
