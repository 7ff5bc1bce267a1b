"""NeuralNetClassifier / NeuralNetRegressor: the user's own nn.Module on the core."""

import importlib.util
import pickle
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.datasets import load_digits, load_iris, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_estimator_repr,
    check_get_params_invariance,
    check_param_validation,
    check_set_params,
    parametrize_with_checks,
)
from torch import nn

import sklears_neural
from sklears_neural.callbacks import Callback
from sklears_neural.core._compat import InvalidParameterError
from sklears_neural.core.config import from_config
from sklears_neural.core.optim import SOLVERS
from sklears_neural.core.registry import register_module
from sklears_neural.exceptions import PersistenceWarning
from sklears_neural.models.neural_net import NeuralNetClassifier, NeuralNetRegressor
from tests.test_common import _dense_and_sparse
from tests.conftest import DEVICES, assert_weights_equal_repeats, replaced_float32_weight_check

ROOT = Path(__file__).parents[1]

X_iris, y_iris = load_iris(return_X_y=True)
X_iris = StandardScaler().fit_transform(X_iris)
X_digits, y_digits = load_digits(return_X_y=True)
X_digits = X_digits[:600] / 16.0
y_digits = y_digits[:600]
X_reg, y_reg = make_regression(n_samples=200, n_features=6, n_targets=2, noise=1.0,
                               random_state=0)
y_reg = y_reg / y_reg.std(axis=0)


# -- modules of the kind users write ----------------------------------------------


@register_module
class NetTestMLP(nn.Module):
    """One hidden layer; its widths come from the data."""

    def __init__(self, n_features_in, n_outputs, hidden=16, dropout=0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(n_features_in, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, n_outputs),
        )

    def forward(self, x):
        return self.body(x)


@register_module
class NetTestCNN(nn.Module):
    """A small CNN on (C, 8, 8) images; ``in_channels`` comes from the data."""

    def __init__(self, in_channels, n_outputs, width=8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(width * 16, n_outputs),
        )

    def forward(self, x):
        return self.body(x)


@register_module
class NetTestSequential(nn.Sequential):
    """A plain Sequential stack, the aliases ``input_dim``/``output_dim``."""

    def __init__(self, input_dim, output_dim, hidden=8):
        super().__init__(
            nn.Linear(input_dim, hidden), nn.Tanh(), nn.Linear(hidden, output_dim)
        )


@register_module
class NetTestFixedInit(nn.Module):
    """Weights from a formula, so a hand-written reference starts from the same."""

    def __init__(self, n_features_in, n_outputs, hidden=5):
        super().__init__()
        self.hidden = nn.Linear(n_features_in, hidden)
        self.out = nn.Linear(hidden, n_outputs)
        with torch.no_grad():
            for i, p in enumerate(self.parameters()):
                values = torch.arange(p.numel(), dtype=torch.float64) + i
                p.copy_(0.4 * torch.sin(values).reshape(p.shape))

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


class NetTestUnregistered(NetTestMLP):
    """Module level, not decorated: ``save`` registers it for this process."""


class NetTestTensorArgument(nn.Module):
    """Takes a tensor argument: trains and pickles, cannot be saved as JSON."""

    def __init__(self, n_features_in, n_outputs, scale):
        super().__init__()
        self.linear = nn.Linear(n_features_in, n_outputs)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, x):
        return self.linear(x * self.scale)


class NetTestSqueezed(nn.Module):
    """Squeezes its output to 1-D, as regression code often does."""

    def __init__(self, n_features_in):
        super().__init__()
        self.linear = nn.Linear(n_features_in, 1)

    def forward(self, x):
        return self.linear(x).squeeze(-1)


class NetTestOwnReset(nn.Module):
    """``reset_parameters(self)`` without a generator, as torch's layers have."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.weight, std=0.1)

    def forward(self, x):
        return x @ self.weight.T


def _fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


# -- scikit-learn's checks -----------------------------------------------------------

CHECKED = [
    NeuralNetClassifier(NetTestMLP, max_iter=10, learning_rate_init=0.05),
    NeuralNetRegressor(NetTestMLP, max_iter=10, learning_rate_init=0.05),
]

INIT_REASON = (
    "passes the name of **module_params (module_params=-1) as a keyword; only "
    "module__<name> keywords are taken, any other is a TypeError, as Python "
    "raises for an unknown keyword"
)
def _expected_failed_checks(estimator):
    return {"check_do_not_raise_errors_in_init_or_set_params": INIT_REASON}


@parametrize_with_checks(CHECKED, expected_failed_checks=_expected_failed_checks,
                         xfail_strict=True)
def test_sklearn_compatible_estimator(estimator, check):
    if replaced_float32_weight_check(estimator, check):
        return
    check(estimator)


@pytest.mark.parametrize("estimator, sparse_X", _dense_and_sparse(CHECKED),
                         ids=lambda v: type(v).__name__ if not isinstance(v, bool) else
                         ("sparse" if v else "dense"))
def test_float32_sample_weight_equivalence(estimator, sparse_X):
    assert_weights_equal_repeats(estimator, sparse_X)


@pytest.mark.parametrize("estimator", CHECKED, ids=lambda e: type(e).__name__)
def test_param_validation(estimator):
    check_param_validation(type(estimator).__name__, estimator)


@pytest.mark.parametrize("Estimator", [NeuralNetClassifier, NeuralNetRegressor])
def test_module_params_follow_get_params_set_params_clone_repr(Estimator):
    est = Estimator(NetTestMLP, module__hidden=7, max_iter=3)
    for check in (check_set_params, check_get_params_invariance, check_estimator_repr):
        check(Estimator.__name__, est)
    assert est.get_params()["module__hidden"] == 7
    assert "module__hidden=7" in repr(est)
    copy = clone(est)
    assert copy.module__hidden == 7 and copy.module is NetTestMLP
    # A new argument, and the others untouched.
    copy.set_params(module__dropout=0.5, max_iter=4)
    assert (copy.module__dropout, copy.module__hidden, copy.max_iter) == (0.5, 7, 4)
    assert "module__dropout" not in est.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'hidden'"):
        copy.set_params(hidden=3)


# -- the module and its arguments -------------------------------------------------


def test_widths_come_from_the_data(global_random_seed):
    rs = global_random_seed
    multiclass = NeuralNetClassifier(NetTestMLP, max_iter=1, random_state=rs)
    _fit(multiclass, X_iris, y_iris)
    assert multiclass.module_.body[0].in_features == 4
    assert multiclass.module_.body[-1].out_features == 3
    binary = _fit(NeuralNetClassifier(NetTestMLP, max_iter=1, random_state=rs),
                  X_iris, y_iris == 2)
    assert binary.module_.body[-1].out_features == 1
    labels = np.column_stack([y_iris == 0, y_iris == 1, y_iris == 2, y_iris > 0])
    multilabel = _fit(NeuralNetClassifier(NetTestMLP, max_iter=1, random_state=rs),
                      X_iris, labels.astype(int))
    assert multilabel.module_.body[-1].out_features == 4
    reg = _fit(NeuralNetRegressor(NetTestSequential, max_iter=1, random_state=rs),
               X_reg, y_reg)
    assert (reg.module_[0].in_features, reg.module_[2].out_features) == (6, 2)
    assert reg._module_spec_.kwargs == {"input_dim": 6, "output_dim": 2}
    # What the user gives wins; the data fills the rest.
    given = _fit(NeuralNetClassifier(NetTestMLP, module__hidden=3, max_iter=1,
                                     random_state=rs), X_iris, y_iris)
    expected = {"hidden": 3, "n_features_in": 4, "n_outputs": 3}
    assert given._module_spec_.kwargs == expected


def test_module_instance_is_refused_with_the_fix():
    with pytest.raises(InvalidParameterError,
                       match=r"the class itself, not an instance: pass its constructor "
                             r"arguments as module__<name>=value"):
        NeuralNetClassifier(NetTestMLP(4, 3)).fit(X_iris, y_iris)
    with pytest.raises(InvalidParameterError, match="Got None instead"):
        NeuralNetClassifier().fit(X_iris, y_iris)


def test_unknown_keywords_are_type_errors_with_hints():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'modul'\. "
                                        r"Did you mean 'module'\?"):
        NeuralNetClassifier(NetTestMLP, modul=3)
    with pytest.raises(TypeError, match=r"'hidden'.*take the prefix module__ "
                                        r"\(module__hidden=value\)"):
        NeuralNetRegressor(NetTestMLP, hidden=3)


def test_module_arguments_are_checked_against_its_signature():
    with pytest.raises(InvalidParameterError,
                       match=r"NetTestMLP takes no argument 'hiden' \(given as "
                             r"module__hiden.*Did you mean module__hidden\?"):
        NeuralNetClassifier(NetTestMLP, module__hiden=3).fit(X_iris, y_iris)
    with pytest.raises(InvalidParameterError,
                       match=r"NetTestTensorArgument needs the argument 'scale': pass "
                             r"module__scale=\.\.\."):
        NeuralNetClassifier(NetTestTensorArgument).fit(X_iris, y_iris)


def test_a_module_that_cannot_take_the_data_names_itself_and_the_shape():
    with pytest.raises(ValueError,
                       match=r"NetTestMLP failed on a batch of shape \(150, 4\) "
                             r"\(RuntimeError: mat1 and mat2.*module__n_features_in "
                             r"overrides what the data says"):
        NeuralNetClassifier(NetTestMLP, module__n_features_in=5).fit(X_iris, y_iris)
    with pytest.raises(ValueError,
                       match=r"NetTestMLP returned an output of shape \(150, 5\) for a "
                             r"batch of shape \(150, 4\); NeuralNetClassifier needs a "
                             r"tensor of shape \(150, 3\): one logit per class"):
        NeuralNetClassifier(NetTestMLP, module__n_outputs=5).fit(X_iris, y_iris)
    with pytest.raises(ValueError, match=r"needs a tensor of shape \(150, 1\): one "
                                         r"logit, of class True \(binary targets\)"):
        NeuralNetClassifier(NetTestMLP, module__n_outputs=2).fit(X_iris, y_iris == 1)
    with pytest.raises(ValueError, match=r"returned an output of shape \(200,\).*"
                                         r"needs a tensor of shape \(200, 1\).*do "
                                         r"not squeeze"):
        NeuralNetRegressor(NetTestSqueezed).fit(X_reg, y_reg[:, 0])
    with pytest.raises(ValueError, match=r"NetTestCNN failed on a batch of shape "
                                         r"\(150, 1, 2, 2\).*samples of shape "
                                         r"\(1, 2, 2\)"):
        NeuralNetClassifier(NetTestCNN, input_shape=(1, 2, 2)).fit(X_iris, y_iris)
    # A failed first fit leaves the estimator unfitted.
    est = NeuralNetClassifier(NetTestMLP, module__n_outputs=5)
    with pytest.raises(ValueError):
        est.fit(X_iris, y_iris)
    assert not hasattr(est, "module_")


def test_a_module_with_its_own_reset_parameters(global_random_seed):
    reg = _fit(NeuralNetRegressor(NetTestOwnReset, solver="lbfgs",
                                  random_state=global_random_seed), X_reg, y_reg)
    assert reg.score(X_reg, y_reg) > 0.95


# -- training ------------------------------------------------------------------------


def _reference(task, X, y, epochs, lr):
    """Full-batch gradient descent in a hand-written torch loop, float64."""
    module = NetTestFixedInit(X.shape[1], 3 if task == "clf" else 2).double()
    X_t = torch.from_numpy(X)
    y_t = torch.from_numpy(y)
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    for _ in range(epochs):
        out = module(X_t)
        loss = (F.cross_entropy(out, y_t) if task == "clf"
                else 0.5 * ((out - y_t) ** 2).sum(1).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = module(X_t)
        return (torch.softmax(out, 1) if task == "clf" else out).numpy()


@pytest.mark.parametrize("task", ["clf", "reg"])
def test_training_equals_a_hand_written_torch_loop(task):
    X, y = (X_iris, y_iris) if task == "clf" else (X_reg, y_reg)
    Estimator = NeuralNetClassifier if task == "clf" else NeuralNetRegressor
    settings = dict(solver="sgd", momentum=0.0, nesterovs_momentum=False,
                    learning_rate_init=0.1, batch_size=len(X), shuffle=False,
                    max_iter=15, tol=0.0, n_iter_no_change=np.inf, alpha=0.0,
                    precision="float64", random_state=0)
    ours = _fit(Estimator(NetTestFixedInit, **settings), X, y)
    predict = ours.predict_proba if task == "clf" else ours.predict
    expected = _reference(task, X, y, epochs=15, lr=0.1)
    np.testing.assert_allclose(predict(X), expected, rtol=0, atol=1e-10)
    # Negative control: the L2 penalty changes the result.
    other = _fit(Estimator(NetTestFixedInit, **{**settings, "alpha": 0.1}), X, y)
    other_predict = other.predict_proba if task == "clf" else other.predict
    assert np.abs(other_predict(X) - expected).max() > 1e-4


@pytest.mark.parametrize("solver", SOLVERS.names)
def test_every_solver_trains_the_module(solver, global_random_seed):
    lr = {"sgd": 0.1, "lars": 5.0, "adagrad": 0.1, "rmsprop": 0.003,
          "radam": 0.1}.get(solver, 0.05)
    clf = NeuralNetClassifier(NetTestMLP, solver=solver, max_iter=30,
                              learning_rate_init=lr, random_state=global_random_seed)
    _fit(clf, X_iris, y_iris)
    assert clf.loss_curve_[-1] < 0.75 * clf.loss_curve_[0]
    assert clf.score(X_iris, y_iris) > 0.75


def test_learns_digits_mlp_and_cnn(global_random_seed):
    X_test, y_test = load_digits(return_X_y=True)
    X_test, y_test = X_test[1200:] / 16.0, y_test[1200:]
    mlp = NeuralNetClassifier(NetTestMLP, module__hidden=32, learning_rate_init=0.01,
                              max_iter=40, random_state=global_random_seed)
    _fit(mlp, X_digits, y_digits)
    assert mlp.score(X_test, y_test) > 0.88
    cnn = NeuralNetClassifier(NetTestCNN, input_shape=(1, 8, 8), max_iter=20,
                              learning_rate_init=0.01, random_state=global_random_seed)
    _fit(cnn, X_digits, y_digits)
    assert cnn.input_shape_ == (1, 8, 8) and cnn.n_features_in_ == 64
    assert cnn.module_.body[0].in_channels == 1
    assert cnn.score(X_test, y_test) > 0.85


def test_image_input_flat_with_input_shape_or_nd(global_random_seed):
    settings = dict(max_iter=2, random_state=global_random_seed)
    flat = _fit(NeuralNetClassifier(NetTestCNN, input_shape=(1, 8, 8), **settings),
                X_digits, y_digits)
    images = X_digits.reshape(-1, 1, 8, 8)
    nd = _fit(NeuralNetClassifier(NetTestCNN, **settings), images, y_digits)
    assert nd.input_shape_ == (1, 8, 8)
    np.testing.assert_array_equal(flat.predict_proba(X_digits),
                                  nd.predict_proba(images))
    # Flat rows predict through the fitted sample shape too.
    np.testing.assert_array_equal(nd.predict_proba(X_digits), nd.predict_proba(images))
    # Three channels: in_channels follows the data.
    rgb = _fit(NeuralNetClassifier(NetTestCNN, **settings),
               np.repeat(images, 3, axis=1), y_digits)
    assert rgb.module_.body[0].in_channels == 3
    # Back to 2-D rows on the same estimator: tabular again.
    nd.set_params(module=NetTestMLP)
    _fit(nd, X_digits, y_digits)
    assert nd.input_shape_ is None and nd.module_.body[0].in_features == 64
    with pytest.raises(ValueError, match="to_onnx exports models of 2-D rows"):
        flat.to_onnx()


def test_pipeline_with_a_scaler_before_flat_image_rows(global_random_seed):
    pipe = make_pipeline(
        StandardScaler(),
        NeuralNetClassifier(NetTestCNN, input_shape=(1, 8, 8), learning_rate_init=0.01,
                            max_iter=10, random_state=global_random_seed),
    )
    _fit(pipe, X_digits, y_digits)
    assert pipe.score(X_digits, y_digits) > 0.9


def test_grid_search_over_module_arguments(global_random_seed):
    search = GridSearchCV(
        NeuralNetClassifier(NetTestMLP, learning_rate_init=0.05, max_iter=20,
                            random_state=global_random_seed),
        param_grid={"module__hidden": [1, 16]}, cv=3,
    )
    _fit(search, X_iris, y_iris)
    assert search.best_params_ == {"module__hidden": 16}
    assert search.best_estimator_.module_.body[0].out_features == 16
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > 0.85 and scores[1] > scores[0]


def test_random_state_fixes_dropout_and_leaves_the_global_stream(global_random_seed):
    # nn.Dropout draws from torch's global generator: whatever state that
    # is in, a seed gives the same fit, and the global stream is as it was.
    settings = dict(module__dropout=0.5, max_iter=5)
    fits = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        est = NeuralNetClassifier(NetTestMLP, random_state=global_random_seed,
                                  **settings)
        fits.append(_fit(est, X_iris, y_iris))
        assert torch.equal(torch.get_rng_state(), before)
    np.testing.assert_array_equal(fits[0].predict_proba(X_iris),
                                  fits[1].predict_proba(X_iris))
    other = _fit(NeuralNetClassifier(NetTestMLP, random_state=global_random_seed + 1,
                                     **settings), X_iris, y_iris)
    assert not np.array_equal(fits[0].predict_proba(X_iris),
                              other.predict_proba(X_iris))


@pytest.mark.parametrize("device", DEVICES)
def test_fits_on_every_device(device, global_random_seed):
    fits = [
        _fit(NeuralNetClassifier(NetTestMLP, module__dropout=0.3, max_iter=10,
                                 learning_rate_init=0.05, device=device,
                                 random_state=global_random_seed),
             X_iris, y_iris)
        for _ in range(2)
    ]
    assert next(fits[0].module_.parameters()).device.type == device
    np.testing.assert_array_equal(fits[0].predict_proba(X_iris),
                                  fits[1].predict_proba(X_iris))
    assert fits[0].score(X_iris, y_iris) > 0.75


def test_partial_fit_warm_start_and_architecture_changes(global_random_seed):
    est = NeuralNetClassifier(NetTestMLP, module__hidden=8, learning_rate_init=0.01,
                              random_state=global_random_seed)
    classes = np.unique(y_iris)
    for _ in range(4):
        est.partial_fit(X_iris, y_iris, classes=classes)
    assert est.t_ == 4 * len(X_iris) and len(est.loss_curve_) == 4
    assert est.loss_curve_[-1] < est.loss_curve_[0]
    est.set_params(module__hidden=9)
    with pytest.raises(ValueError,
                       match=r"architecture parameters changed.*hidden: 8 -> 9"):
        est.partial_fit(X_iris, y_iris)

    warm = NeuralNetClassifier(NetTestMLP, warm_start=True, max_iter=5,
                               learning_rate_init=0.01, random_state=global_random_seed)
    _fit(warm, X_iris, y_iris)
    first = list(warm.loss_curve_)
    weights = warm.module_.body[0].weight.detach().clone()
    _fit(warm, X_iris, y_iris)
    assert len(warm.history_) == 10 and warm.loss_curve_[:5] == first
    assert not torch.equal(weights, warm.module_.body[0].weight)
    warm.set_params(module__hidden=4)
    with pytest.warns(UserWarning, match="a new network was built"):
        _fit(warm, X_iris, y_iris)
    assert warm.module_.body[0].out_features == 4


def test_early_stopping_keeps_the_best_epoch(global_random_seed):
    est = NeuralNetClassifier(NetTestMLP, early_stopping=True, learning_rate_init=0.05,
                              max_iter=200, n_iter_no_change=5,
                              random_state=global_random_seed)
    _fit(est, X_digits, y_digits)
    assert est.n_iter_ < 200
    assert len(est.validation_scores_) == est.n_iter_
    assert est.best_validation_score_ == max(est.validation_scores_) > 0.9


def test_callbacks_and_augmentation(global_random_seed):
    class Count(Callback):
        def __init__(self):
            self.epochs = 0

        def on_epoch_end(self, trainer, **kwargs):
            self.epochs += 1

    settings = dict(max_iter=4, random_state=global_random_seed)
    est = _fit(NeuralNetRegressor(NetTestMLP, callbacks=[Count()], **settings),
               X_reg, y_reg)
    assert est.callbacks_[0].epochs == 4
    plain = _fit(NeuralNetRegressor(NetTestMLP, **settings), X_reg, y_reg)
    augment = ("gaussian_noise", {"std": 0.5})
    noisy = [_fit(NeuralNetRegressor(NetTestMLP, augment=augment, **settings),
                  X_reg, y_reg) for _ in range(2)]
    np.testing.assert_array_equal(noisy[0].predict(X_reg), noisy[1].predict(X_reg))
    assert np.abs(noisy[0].predict(X_reg) - plain.predict(X_reg)).max() > 1e-4


def test_predictions_from_threads_equal_one_thread(global_random_seed):
    est = _fit(NeuralNetClassifier(NetTestMLP, max_iter=3,
                                   random_state=global_random_seed), X_digits, y_digits)
    expected = est.predict_proba(X_digits)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: est.predict_proba(X_digits), range(16)))
    for result in results:
        np.testing.assert_array_equal(result, expected)


# -- persistence --------------------------------------------------------------------


def test_pickle_round_trip_is_exact(global_random_seed):
    est = _fit(NeuralNetClassifier(NetTestMLP, module__hidden=6, max_iter=3,
                                   random_state=global_random_seed), X_iris, y_iris)
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy.predict_proba(X_iris), est.predict_proba(X_iris))
    assert copy.module__hidden == 6
    # A tensor argument cannot be saved as JSON, but trains and pickles.
    tensor = NeuralNetClassifier(NetTestTensorArgument, module__scale=torch.ones(4),
                                 max_iter=2, random_state=global_random_seed)
    _fit(tensor, X_iris, y_iris)
    copy = pickle.loads(pickle.dumps(tensor))
    np.testing.assert_array_equal(copy.predict_proba(X_iris),
                                  tensor.predict_proba(X_iris))


@pytest.mark.parametrize("Estimator", [NeuralNetClassifier, NeuralNetRegressor])
def test_save_load_round_trip_is_exact(Estimator, tmp_path, global_random_seed):
    X, y = (X_iris, y_iris) if Estimator is NeuralNetClassifier else (X_reg, y_reg)
    est = _fit(Estimator(NetTestMLP, max_iter=3, random_state=global_random_seed), X, y)
    est.save(tmp_path / "model.zip")
    loaded = sklears_neural.load(tmp_path / "model.zip")
    predict = "predict_proba" if Estimator is NeuralNetClassifier else "predict"
    np.testing.assert_array_equal(getattr(loaded, predict)(X), getattr(est, predict)(X))
    # The class is written by its registered name, and found by it again.
    assert loaded.module == "NetTestMLP" and type(loaded.module_) is NetTestMLP
    assert est.module is NetTestMLP  # saving does not change the estimator
    # It continues training as the saved one does.
    for model in (est, loaded):
        model.partial_fit(X, y)
    np.testing.assert_array_equal(getattr(loaded, predict)(X), getattr(est, predict)(X))


def test_save_load_of_an_image_model(tmp_path, global_random_seed):
    est = _fit(NeuralNetClassifier(NetTestCNN, input_shape=(1, 8, 8), max_iter=2,
                                   random_state=global_random_seed), X_digits, y_digits)
    est.save(tmp_path / "cnn")
    loaded = sklears_neural.load(tmp_path / "cnn")
    np.testing.assert_array_equal(loaded.predict_proba(X_digits),
                                  est.predict_proba(X_digits))
    assert loaded.input_shape_ == (1, 8, 8)


def test_save_load_with_module_arguments(tmp_path, global_random_seed):
    est = _fit(NeuralNetClassifier(NetTestMLP, module__hidden=5, max_iter=2,
                                   random_state=global_random_seed), X_iris, y_iris)
    est.save(tmp_path / "model.zip")
    loaded = sklears_neural.load(tmp_path / "model.zip")
    assert loaded.module__hidden == 5
    np.testing.assert_array_equal(loaded.predict_proba(X_iris),
                                  est.predict_proba(X_iris))


def test_get_config_names_the_module_class():
    est = NeuralNetRegressor(NetTestMLP, max_iter=7)
    config = est.get_config()
    assert config["params"]["module"] == "NetTestMLP"
    rebuilt = from_config(config)
    assert rebuilt.module == "NetTestMLP" and rebuilt.max_iter == 7
    assert rebuilt._module_class() is NetTestMLP


def test_save_registers_a_module_level_class_for_this_process(tmp_path):
    est = _fit(NeuralNetClassifier(NetTestUnregistered, max_iter=1, random_state=0),
               X_iris, y_iris)
    with pytest.warns(PersistenceWarning,
                      match=r"registered it as 'NetTestUnregistered' for this process "
                            r"only.*decorate the class with @register_module"):
        est.save(tmp_path / "model.zip")
    loaded = sklears_neural.load(tmp_path / "model.zip")
    assert type(loaded.module_) is NetTestUnregistered
    with warnings.catch_warnings():
        warnings.simplefilter("error", PersistenceWarning)
        est.save(tmp_path / "again.zip")  # registered now: no second warning


def test_save_refuses_what_no_process_could_load(tmp_path):
    class Local(nn.Module):
        def __init__(self, n_features_in, n_outputs):
            super().__init__()
            self.linear = nn.Linear(n_features_in, n_outputs)

        def forward(self, x):
            return self.linear(x)

    est = _fit(NeuralNetClassifier(Local, max_iter=1, random_state=0), X_iris, y_iris)
    with pytest.raises(TypeError, match=r"Local is defined inside a function.*"
                                        r"decorate it with @register_module \(from "
                                        r"sklears_neural\.core\.registry import "
                                        r"register_module\)"):
        est.save(tmp_path / "local.zip")
    tensor = NeuralNetClassifier(NetTestTensorArgument, module__scale=torch.ones(4),
                                 max_iter=1, random_state=0)
    _fit(tensor, X_iris, y_iris)
    with pytest.raises(TypeError, match=r"module__scale holds a torch\.Tensor.*pickle "
                                        r"the estimator instead"):
        tensor.save(tmp_path / "tensor.zip")
    assert not list(tmp_path.iterdir())


def test_load_in_a_fresh_process_needs_the_module_imported(tmp_path, monkeypatch):
    (tmp_path / "user_nets.py").write_text(textwrap.dedent("""
        from torch import nn
        from sklears_neural.core.registry import register_module

        @register_module
        class FreshProcessNet(nn.Module):
            def __init__(self, n_features_in, n_outputs):
                super().__init__()
                self.linear = nn.Linear(n_features_in, n_outputs)

            def forward(self, x):
                return self.linear(x)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_nets

    est = _fit(NeuralNetClassifier(user_nets.FreshProcessNet, max_iter=2,
                                   random_state=0), X_iris, y_iris)
    est.save(tmp_path / "model.zip")
    np.save(tmp_path / "X.npy", X_iris)
    script = textwrap.dedent(f"""
        import numpy as np
        import sklears_neural
        from sklears_neural.exceptions import ModelFileError
        path = {str(tmp_path / "model.zip")!r}
        try:
            sklears_neural.load(path)
        except ModelFileError as exc:
            print("refused:", exc)
        import user_nets  # registers FreshProcessNet
        model = sklears_neural.load(path)
        np.save({str(tmp_path / "proba.npy")!r},
                model.predict_proba(np.load({str(tmp_path / "X.npy")!r})))
    """)
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout
    assert "Got 'FreshProcessNet' instead" in done.stdout
    assert "before load, import the module that defines the class" in done.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "proba.npy"),
                                  est.predict_proba(X_iris))


# -- ONNX ----------------------------------------------------------------------------


def test_to_onnx_of_a_sequential_module(global_random_seed):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    est = _fit(NeuralNetClassifier(NetTestSequential, max_iter=3,
                                   random_state=global_random_seed), X_iris, y_iris)
    session = onnxruntime.InferenceSession(est.to_onnx())
    labels, probabilities = session.run(
        ["label", "probabilities"], {"X": X_iris.astype(np.float32)}
    )
    np.testing.assert_allclose(probabilities, est.predict_proba(X_iris), atol=1e-5)
    assert np.mean(labels == est.predict(X_iris)) > 0.99


# -- the benchmark ------------------------------------------------------------------


def test_benchmark_quick_run_reports_every_runner():
    spec = importlib.util.spec_from_file_location(
        "bench_neural_net", ROOT / "benchmarks" / "bench_neural_net.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    results = bench.main(["--quick", "--threads", "1"], log=lambda *args: None)
    assert torch.get_num_threads() == threads
    assert [r["workload"] for r in results] == ["MLP on digits",
                                                "CNN on digits (1, 8, 8)"]
    for result in results:
        runners = [row["runner"] for row in result["rows"]]
        assert runners[:3] == ["hand", "hand_fused", "sklears"]
        for row in result["rows"]:
            assert row["epoch_s"] > 0 and row["cpu_s"] > 0 and 0 <= row["accuracy"] <= 1
        assert result["rows"][0]["ratio"] == 1.0
    page = bench.render_markdown(results, "test machine", 1)
    assert page.count("| runner | ms per epoch |") == 2
