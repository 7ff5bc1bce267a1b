"""Prediction path: the input check, the float64 plan, its cache, the backend parameter.

The plan (``core/plan.py``) must compute what the module computes in
float64, for every layer an MLP can hold, and be rebuilt whenever the
weights change. Nothing here times anything: the benchmark's smoke test
checks the shape of its report only.
"""

import copy
import importlib.util
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.validation import validate_data
from torch import nn

import sklears_neural
from sklears_neural import MLPClassifier, MLPRegressor
from sklears_neural.core import inference, modes, tasks
from sklears_neural.callbacks import Callback
from sklears_neural.core._compat import InvalidParameterError
from sklears_neural.core.config import from_config
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.layers import MLP, set_generator
from sklears_neural.core.noise import NOISES
from sklears_neural.core.plan import (
    PLAN_MAX_MACS,
    PLAN_MIN_ROWS,
    Plan,
    compile_plan,
    unknown_layers,
    use_plan,
)
from sklears_neural.core.resolve import ACTIVATIONS

X_digits, y_digits = load_digits(n_class=4, return_X_y=True)
X_digits = X_digits[:240] / 16.0
y_digits = y_digits[:240]
X_reg, y_reg = make_regression(n_samples=200, n_features=8, noise=1.0, random_state=0)
y_reg = y_reg / y_reg.std()


def _quiet_fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


def _float64_forward(module, X):
    """The reference: the module itself, copied to float64, in evaluation mode."""
    reference = copy.deepcopy(module).double().eval()
    with torch.no_grad():
        return reference(torch.as_tensor(X, dtype=torch.float64)).numpy()


def _randomize(module, seed, n_inputs):
    """Every parameter and batch-norm statistic drawn at random, so that no
    affine or statistic is the identity it starts as; then one training-mode
    pass, which moves spectral norm's vectors (its power iteration)."""
    generator = torch.Generator().manual_seed(seed)
    set_generator(module, generator)
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if not tensor.is_floating_point() or name.endswith(("_u", "_v")):
                continue
            values = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            if name.endswith("running_var"):
                values = values.abs() + 0.5
            tensor.copy_(
                values * 0.5
                if name.endswith(("weight", "bias", "original"))
                else values
            )
        module.train()
        module(torch.randn(16, n_inputs, generator=generator))
    return module.eval()


# -- the plan, layer by layer -----------------------------------------------------

ACTIVATION_OPTIONS = [
    *ACTIVATIONS.names,
    ("leaky_relu", {"negative_slope": 0.2}),
    ("prelu", {"per_channel": True}),
    ("elu", {"alpha": 0.7}),
    ("gelu", {"approximate": "tanh"}),
    ("softplus", {"beta": 2.0, "threshold": 3.0}),
]

LAYER_OPTIONS = [
    {"batch_norm": True},
    {"layer_norm": True},
    {"residual": "add"},
    {"residual": "concat"},
    {"residual": "gated"},
    {"spectral_norm": True},
    {"dropout": 0.3},
    {"gradient_checkpointing": True},
    *({"noise": name} for name in NOISES.names),
    {
        "residual": "gated",
        "batch_norm": True,
        "spectral_norm": True,
        "noise": "gaussian",
        "dropout": 0.2,
        "activation": ("prelu", {"per_channel": True}),
    },
    {"residual": "concat", "layer_norm": True, "activation": "mish"},
]


def _option_id(option):
    return json.dumps(option, sort_keys=True) if not isinstance(option, str) else option


@pytest.mark.parametrize(
    "options",
    [{"activation": a} for a in ACTIVATION_OPTIONS] + LAYER_OPTIONS,
    ids=_option_id,
)
def test_plan_equals_the_float64_forward(options, global_random_seed):
    options = dict(options)
    activation = options.pop("activation", "tanh")
    # Widths change (projections) and repeat (identity skips).
    module = _randomize(
        MLP(5, [7, 7, 4], 3, activation, **options), global_random_seed, 5
    )
    rng = np.random.RandomState(global_random_seed)
    # Wide inputs reach softplus's threshold and the saturated ends.
    X = np.vstack([rng.randn(40, 5) * 3, rng.randn(2, 5) * 30])
    plan = compile_plan(module)
    assert plan is not None, unknown_layers(module)
    expected = _float64_forward(module, X)
    np.testing.assert_allclose(plan(X), expected, rtol=1e-12, atol=1e-12)
    # One row runs as a vector (matrix-vector products): the same numbers.
    by_row = np.vstack([plan(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(by_row, expected, rtol=1e-12, atol=1e-12)
    # float32 input is cast exactly.
    X32 = X.astype(np.float32)
    np.testing.assert_allclose(
        plan(X32), _float64_forward(module, X32), rtol=1e-12, atol=1e-12
    )


def test_every_named_layer_has_a_step():
    # A new activation or noise in the resolver tables needs a plan step,
    # or its models silently take the slower torch float64 fallback.
    for option in ACTIVATION_OPTIONS:
        assert unknown_layers(MLP(3, [4], 2, option)) == [], option
    for name in NOISES.names:
        assert unknown_layers(MLP(3, [4], 2, noise=name)) == [], name


def test_plan_does_not_write_to_its_input_or_share_the_weights():
    module = _randomize(MLP(4, [6], 2, "relu", residual="concat"), 0, 4)
    X = np.random.RandomState(0).randn(5, 4)
    before = X.copy()
    out = compile_plan(module)(X)
    np.testing.assert_array_equal(X, before)
    out[:] = 0.0  # the result is the caller's to keep
    np.testing.assert_allclose(
        compile_plan(module)(X), _float64_forward(module, X), rtol=1e-12
    )


class _Square(nn.Module):
    def forward(self, x):
        return x * x


def test_an_unknown_layer_falls_back_to_float64_torch():
    clf = _quiet_fit(
        MLPClassifier((8,), max_iter=5, random_state=0), X_digits, y_digits
    )
    clf.module_.layers[1] = _Square()  # swapping a layer is seen by the cache
    assert unknown_layers(clf.module_) == ["_Square"]
    assert compile_plan(clf.module_) is None
    X = X_digits[:30]
    full = clf._raw_outputs(X)
    np.testing.assert_allclose(
        full, _float64_forward(clf.module_, X), rtol=1e-12, atol=1e-12
    )
    by_row = np.vstack([clf._raw_outputs(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(by_row, full, rtol=1e-12, atol=1e-12)


# -- which path runs ------------------------------------------------------------------


def test_a_model_the_plan_cannot_translate_runs_large_batches_in_torch_chunks(monkeypatch):
    """A conv stack has no nn.Linear multiply-adds to count: it once took the
    unchunked float64 path for any batch size."""
    clf = _quiet_fit(MLPClassifier((8,), max_iter=2, random_state=0), X_digits, y_digits)
    clf.module_ = nn.Sequential(  # no nn.Linear: zero counted multiply-adds
        nn.Unflatten(1, (1, 64)), nn.Conv1d(1, 8, kernel_size=3, padding=1),
        nn.ReLU(), nn.Conv1d(8, 4, kernel_size=64), nn.Flatten(),
    )
    assert compile_plan(clf.module_) is None
    X = np.resize(X_digits, (10_000, 64)).astype(np.float32)
    float64_rows, chunks = [], []
    real_float64, real_tensor = inference._float64_outputs, inference._tensor
    monkeypatch.setattr(inference, "_float64_outputs", lambda module, entry, X: (
        float64_rows.append(X.shape[0]) or real_float64(module, entry, X)))
    monkeypatch.setattr(inference, "_tensor", lambda part, *args: (
        chunks.append(part.shape[0]) or real_tensor(part, *args)))
    monkeypatch.setattr(inference, "PREDICT_CHUNK", 4096)

    out = clf._raw_outputs(X)
    assert float64_rows == [] and chunks == [4096, 4096, 1808]
    with torch.no_grad():
        expected = clf.module_(torch.from_numpy(X)).double().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    # The few rows of scikit-learn's invariance checks stay float64.
    clf._raw_outputs(X[:20])
    assert float64_rows == [20]



def test_large_cpu_batches_run_in_chunks_whose_activations_fit_in_cache(monkeypatch):
    """The widest layer's activations of a chunk stay within CACHE_CHUNK_BYTES
    per thread; the outputs are the single pass's within float32 rounding."""
    clf = _quiet_fit(MLPClassifier((256, 128), max_iter=2, random_state=0),
                     X_digits, y_digits)
    X = np.resize(X_digits, (10_000, 64)).astype(np.float32)
    chunks, real_tensor = [], inference._tensor
    monkeypatch.setattr(inference, "_tensor", lambda part, *args: (
        chunks.append(part.shape[0]) or real_tensor(part, *args)))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        out = clf._raw_outputs(X)
    finally:
        torch.set_num_threads(threads)
    # 1 MiB of float32 rows 256 wide: 1,024 rows per chunk on one thread.
    assert chunks == [1024] * 9 + [784]
    with torch.no_grad():
        expected = clf.module_(torch.from_numpy(X)).double().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # Never below 256 rows, and at most PREDICT_CHUNK.
    monkeypatch.setattr(inference, "CACHE_CHUNK_BYTES", 1)
    chunks.clear()
    clf._raw_outputs(X[:600])
    assert chunks == [256, 256, 88]


def test_small_batches_are_float64_and_large_ones_the_module_dtype():
    reg = _quiet_fit(
        MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=5, random_state=0),
        X_reg,
        y_reg,
    )
    macs = compile_plan(reg.module_).macs
    assert macs == 8 * 64 + 64 * 64 + 64
    small = PLAN_MIN_ROWS
    large = PLAN_MAX_MACS // macs + 1
    assert use_plan(small, macs) and not use_plan(large, macs)
    X = np.random.RandomState(0).randn(large, 8)
    # Small: the float64 forward, independent of the rest of the batch.
    np.testing.assert_allclose(
        reg._raw_outputs(X[:small]),
        _float64_forward(reg.module_, X[:small]),
        rtol=1e-12,
        atol=1e-12,
    )
    # Large: the float32 module, as eager torch runs it.
    with torch.no_grad():
        expected = reg.module_(torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    np.testing.assert_array_equal(reg._raw_outputs(X), expected)


class _NoPlanRegressor(MLPRegressor):
    """An MLP with the base's hook: a family without a float64 plan."""

    _prediction_plan = BaseNeuralEstimator._prediction_plan


def test_the_plan_is_the_mlp_familys_hook():
    reg = _quiet_fit(MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0),
                     X_reg, y_reg)
    plan = reg._prediction_plan(reg.module_)
    assert isinstance(plan, Plan) and plan.macs == 8 * 16 + 16
    X = X_reg[:50]
    np.testing.assert_allclose(plan(X), _float64_forward(reg.module_, X),
                               rtol=1e-12, atol=1e-12)
    # The base has none: a family opts in.
    assert BaseNeuralEstimator._prediction_plan(reg, reg.module_) is None


def test_a_family_without_a_plan_runs_float64_for_small_batches_only():
    """The default hook: the float64 module up to PLAN_MIN_ROWS rows, the
    module itself beyond, where the MLP's plan would still run."""
    mlp = _quiet_fit(MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0),
                     X_reg, y_reg)
    planless = copy.deepcopy(mlp)
    planless.__class__ = _NoPlanRegressor
    X = np.random.RandomState(0).randn(200, 8)
    assert use_plan(len(X), compile_plan(mlp.module_).macs)  # the MLP's plan runs
    float64 = _float64_forward(mlp.module_, X)
    small = X[:PLAN_MIN_ROWS]
    np.testing.assert_allclose(planless._raw_outputs(small), float64[:PLAN_MIN_ROWS],
                               rtol=1e-12, atol=1e-12)
    by_row = np.vstack([planless._raw_outputs(small[i:i + 1]) for i in range(len(small))])
    np.testing.assert_allclose(by_row, float64[:PLAN_MIN_ROWS], rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        float32 = mlp.module_(torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    np.testing.assert_array_equal(planless._raw_outputs(X), float32)
    np.testing.assert_allclose(mlp._raw_outputs(X), float64, rtol=1e-12, atol=1e-12)
    assert not np.allclose(float32, float64, rtol=1e-12, atol=1e-12)  # they differ


class _CountingRegressor(MLPRegressor):
    """Counts the calls of its plan hook (in a class list: not in __dict__)."""

    calls = []

    def _prediction_plan(self, module):
        self.calls.append(module)
        return super()._prediction_plan(module)


def test_the_plan_hook_is_asked_once_per_module_state():
    reg = _quiet_fit(_CountingRegressor(hidden_layer_sizes=(8,), max_iter=3,
                                        random_state=0), X_reg, y_reg)
    _CountingRegressor.calls.clear()
    X = X_reg[:10]
    first = reg._raw_outputs(X)
    np.testing.assert_array_equal(reg._raw_outputs(X), first)
    reg.predict(X_reg[:3])
    assert _CountingRegressor.calls == [reg.module_]
    with torch.no_grad():
        reg.module_.linears[0].weight.mul_(2.0)
    _assert_current(reg, X)
    assert len(_CountingRegressor.calls) == 2


def test_the_plan_is_compiled_only_for_a_batch_that_takes_it():
    # A plan holds float64 copies of the weights: a 100M-parameter model
    # predicting 256 rows once made one (+770 MiB) that it never ran.
    reg = _quiet_fit(_CountingRegressor(hidden_layer_sizes=(64, 64), max_iter=3,
                                        random_state=0), X_reg, y_reg)
    _CountingRegressor.calls.clear()
    macs = 8 * 64 + 64 * 64 + 64
    large = PLAN_MAX_MACS // macs + 1
    X = np.random.RandomState(0).randn(large, 8)
    assert not use_plan(large, macs)
    with torch.no_grad():
        expected = reg.module_(torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    np.testing.assert_array_equal(reg._raw_outputs(X), expected)
    assert _CountingRegressor.calls == []
    np.testing.assert_allclose(reg._raw_outputs(X[:PLAN_MIN_ROWS]),
                               _float64_forward(reg.module_, X[:PLAN_MIN_ROWS]),
                               rtol=1e-12, atol=1e-12)
    assert _CountingRegressor.calls == [reg.module_]
    # Compiled once, the plan still leaves large batches to the module.
    np.testing.assert_array_equal(reg._raw_outputs(X), expected)
    assert len(_CountingRegressor.calls) == 1


def test_a_compiled_plan_runs_without_registering_with_the_module(monkeypatch):
    # The plan computes on its own float64 copies: once compiled, a dense
    # batch it takes skips modes.predicting (~3 us of a one-row predict).
    reg = _quiet_fit(MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0),
                     X_reg, y_reg)
    X = X_reg[:5]
    first = reg._raw_outputs(X)
    np.testing.assert_allclose(first, _float64_forward(reg.module_, X),
                               rtol=1e-12, atol=1e-12)
    entered, predicting = [], modes.predicting

    def counting(*args):
        entered.append(len(args))
        return predicting(*args)

    monkeypatch.setattr(modes, "predicting", counting)
    np.testing.assert_array_equal(reg._raw_outputs(X), first)
    assert entered == []
    # A module put in training mode takes the full path, which rests it.
    reg.module_.train()
    np.testing.assert_array_equal(reg._raw_outputs(X), first)
    assert entered == [2] and not any(m.training for m in reg.module_.modules())
    # Sparse input takes the full path too (plan.sparse).
    reg._raw_outputs(sp.csr_matrix(X))
    assert len(entered) == 2


def test_scikit_learn_check_sizes_take_the_plan():
    # check_methods_subset_invariance and check_methods_sample_order_invariance
    # compare 20-row batches with single rows at 1e-7 / 1e-9: both must be float64.
    assert PLAN_MIN_ROWS >= 20
    assert use_plan(20, macs=10**9)


def test_float64_models_take_float64_on_both_paths():
    reg = _quiet_fit(
        MLPRegressor(
            hidden_layer_sizes=(32,), max_iter=5, precision="float64", random_state=0
        ),
        X_reg,
        y_reg,
    )
    X = np.random.RandomState(1).randn(40_000, 8)  # beyond the plan's budget
    assert not use_plan(len(X), compile_plan(reg.module_).macs)
    np.testing.assert_allclose(
        reg._raw_outputs(X), _float64_forward(reg.module_, X), rtol=1e-12, atol=1e-12
    )


def test_sparse_and_dense_input_agree():
    clf = _quiet_fit(
        MLPClassifier((8,), max_iter=5, random_state=0), X_digits, y_digits
    )
    for rows in (5, len(X_digits)):
        X = X_digits[:rows]
        np.testing.assert_array_equal(
            clf.predict_proba(sp.csr_matrix(X)), clf.predict_proba(X)
        )


# -- the cache ---------------------------------------------------------------------


def _assert_current(est, X=X_digits[:25]):
    """Predictions come from the weights the module holds now."""
    np.testing.assert_allclose(
        est._raw_outputs(X), _float64_forward(est.module_, X), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("solver", ["adam", "sgd", "adamw", "lbfgs"])
def test_cache_follows_training(solver, global_random_seed):
    clf = _quiet_fit(
        MLPClassifier((8,), solver=solver, max_iter=3, random_state=global_random_seed),
        X_digits,
        y_digits,
    )
    _assert_current(clf)
    if solver != "lbfgs":
        # Fused optimizers do not bump version counters; the training-mode
        # forward hook drops the entry.
        before = clf._raw_outputs(X_digits[:25])
        clf.partial_fit(X_digits, y_digits)
        assert not np.array_equal(before, clf._raw_outputs(X_digits[:25]))
        _assert_current(clf)
    before = clf._raw_outputs(X_digits[:25])
    _quiet_fit(clf.set_params(warm_start=True), X_digits, y_digits)
    assert not np.array_equal(before, clf._raw_outputs(X_digits[:25]))
    _assert_current(clf)


class _PredictEachEpoch(Callback):
    """Predicts with the estimator in training, between optimizer steps."""

    def __init__(self, est, X):
        self.est, self.X, self.seen = est, X, []

    def __deepcopy__(self, memo):  # fit copies its callbacks: keep this one
        return self

    def on_epoch_end(self, trainer, **kwargs):
        modes = [m.training for m in trainer.module.modules()]
        got = self.est._raw_outputs(self.X)
        assert [m.training for m in trainer.module.modules()] == modes
        self.seen.append((got, _float64_forward(trainer.module, self.X)))


@pytest.mark.parametrize("rows", [5, 5000])  # the plan, then the module itself
@pytest.mark.parametrize("dropout", [0.0, 0.1])  # the fused step, then autograd
def test_predictions_inside_a_fit_follow_the_steps(rows, dropout):
    X = np.random.RandomState(0).randn(rows, 64)
    clf = MLPClassifier((16,), dropout=dropout, max_iter=4, random_state=0)
    clf.set_params(callbacks=[_PredictEachEpoch(clf, X)])
    _quiet_fit(clf, X_digits, y_digits)
    seen = clf.callbacks[0].seen
    assert len(seen) == 4
    for got, expected in seen:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(seen[0][0], seen[-1][0])


def test_cache_follows_edits_and_loads():
    clf = _quiet_fit(
        MLPClassifier((8,), max_iter=3, random_state=0), X_digits, y_digits
    )
    weight = clf.module_.layers[0].weight
    _assert_current(clf)
    with torch.no_grad():  # an in-place edit: the version counter moves
        weight.mul_(2.0)
    _assert_current(clf)
    state = {k: v * 0.5 for k, v in clf.module_.state_dict().items()}
    clf.module_.load_state_dict(state)  # copy_ in place
    _assert_current(clf)
    clf.module_.load_state_dict({k: v * 3 for k, v in state.items()}, assign=True)
    _assert_current(clf)  # new tensors
    clf.module_.layers[0].bias.data = torch.zeros(8)  # storage swapped
    _assert_current(clf)
    clf.module_.double()  # a dtype change swaps every storage
    _assert_current(clf)
    del clf.module_.layers[1]  # a deleted layer (the ReLU) fires no hook
    _assert_current(clf)
    # The one edit torch does not count: through .data, in place.
    clf.module_.layers[0].weight.data.mul_(-1.0)
    inference.clear_cache(clf)
    _assert_current(clf)


def test_cache_after_pickle_save_and_load(tmp_path):
    clf = _quiet_fit(
        MLPClassifier((8,), max_iter=3, random_state=0), X_digits, y_digits
    )
    expected = clf.predict_proba(X_digits[:25])
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X_digits[:25]), expected)
    clf.save(tmp_path / "model")
    loaded = sklears_neural.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(X_digits[:25]), expected)
    # The restored module is a new object: editing it does not touch the original.
    with torch.no_grad():
        loaded.module_.layers[0].weight.zero_()
    _assert_current(loaded)
    np.testing.assert_array_equal(clf.predict_proba(X_digits[:25]), expected)


def test_prediction_leaves_the_estimator_dict_alone():
    # scikit-learn's check_dict_unchanged, on the cached path too.
    clf = _quiet_fit(
        MLPClassifier((8,), max_iter=3, random_state=0), X_digits, y_digits
    )
    before = dict(clf.__dict__)
    for _ in range(2):
        clf.predict(X_digits[:3])
        clf.predict_proba(X_digits)
    assert clf.__dict__ == before


# -- input checks ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted():
    return _quiet_fit(
        MLPClassifier((8,), max_iter=3, random_state=0), X_digits, y_digits
    )


def _message(call):
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        np.full((2, 64), np.nan),
        np.full((1, 64), np.inf),
        np.full((1, 64), -np.inf, dtype=np.float32),
        np.zeros((3, 65)),
        np.zeros((0, 64)),
        np.zeros(64),
        np.full((1, 64), np.nan, dtype=np.float16),
    ],
    ids=["nan", "inf", "-inf-float32", "features", "no-rows", "1d", "nan-float16"],
)
def test_bad_input_gets_scikit_learns_message(fitted, bad):
    expected = _message(
        lambda: validate_data(
            fitted,
            bad,
            accept_sparse=["csr", "csc"],
            dtype=(np.float64, np.float32),
            reset=False,
        )
    )
    assert _message(lambda: fitted.predict(bad)) == expected
    assert _message(lambda: fitted.predict_proba(bad)) == expected


def test_finite_values_whose_sum_overflows_are_accepted(fitted):
    X = np.full((2, 64), np.finfo(np.float32).max / 4, dtype=np.float32)
    assert fitted.predict_proba(X).shape == (2, 4)


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("n_rows", [2, 20_000])
def test_inputs_beyond_float32_are_refused_whatever_the_batch_size(Estimator, n_rows):
    """Once 2 rows (plan) were finite and 20,000 rows (float32 module) NaN."""
    y = y_reg if Estimator is MLPRegressor else (y_reg > 0)
    est = _quiet_fit(Estimator(hidden_layer_sizes=(8,), max_iter=5, random_state=0),
                     X_reg, y)
    X = np.resize(X_reg, (n_rows, X_reg.shape[1])) * 1e39
    with pytest.raises(ValueError, match=r"beyond the largest float32.*"
                       r"precision='float64'"):
        est.predict(X)
    with pytest.raises(ValueError, match="beyond the largest float32"):
        est.predict(sp.csr_matrix(X))
    # Within range, and in a float64 model, the same rows are accepted.
    assert np.isfinite(est.predict(X / 1e10)).all()
    est64 = _quiet_fit(clone(est).set_params(precision="float64"), X_reg, y)
    assert est64.predict(X).shape[0] == n_rows


def test_outputs_that_overflow_float32_are_computed_in_float64():
    """Finite inputs whose outputs overflow the float32 module: large batches
    get the float64 plan's answer, not inf."""
    reg = _quiet_fit(MLPRegressor(hidden_layer_sizes=(4,), activation="identity",
                                  max_iter=2, random_state=0), X_reg, y_reg)
    with torch.no_grad():
        for linear in reg.module_.linears:
            linear.weight.fill_(1e20)
    X = np.resize(np.abs(X_reg), (20_000, X_reg.shape[1]))  # the torch path
    small = np.concatenate([reg.predict(X[i:i + 20]) for i in range(0, 20_000, 20)])
    assert np.isfinite(small).all()
    np.testing.assert_allclose(reg.predict(X), small, rtol=1e-12)


@pytest.mark.parametrize(
    "strings",
    [np.array([["1.5"] * 64]), [["1.5"] * 64], np.array([[b"1"] * 64])],
    ids=["str-array", "str-list", "bytes"],
)
def test_numeric_strings_are_refused_as_scikit_learn_does(fitted, strings):
    with pytest.raises(ValueError, match="not compatible with arrays of bytes/strings"):
        fitted.predict(strings)


def test_other_inputs_go_through_validate_data(fitted):
    X = X_digits[:5]
    expected = fitted.predict_proba(X)
    np.testing.assert_array_equal(fitted.predict_proba(X.tolist()), expected)
    np.testing.assert_array_equal(fitted.predict_proba(X.astype(object)), expected)
    np.testing.assert_array_equal(fitted.predict_proba(np.asfortranarray(X)), expected)


def test_unfitted_raises_not_fitted():
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        MLPClassifier().predict(X_digits[:1])


def test_feature_names_are_still_checked():
    columns = [f"f{i}" for i in range(X_digits.shape[1])]
    frame = pd.DataFrame(X_digits, columns=columns)
    clf = _quiet_fit(MLPClassifier((8,), max_iter=3, random_state=0), frame, y_digits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = clf.predict_proba(frame.iloc[:4])
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        np.testing.assert_array_equal(clf.predict_proba(X_digits[:4]), expected)
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(frame.iloc[:4, ::-1])


# -- labels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "y",
    [
        np.array([0, 1, 2, 1]),
        np.array(["b", "a", "c", "a"]),
        np.array([3, 7, 3, 7]),
        np.array(["yes", "no", "no", "yes"], dtype=object),
        np.array([5, 5, 5]),
        np.array([[0, 1, 1], [1, 0, 1], [0, 0, 1]]),
    ],
    ids=[
        "multiclass",
        "strings",
        "binary",
        "binary-objects",
        "one-class",
        "multilabel",
    ],
)
def test_labels_equal_label_binarizer(y):
    binarizer = LabelBinarizer().fit(y)
    rng = np.random.RandomState(0)
    width = max(binarizer.transform(y[:1]).shape[1], 1)
    P = rng.rand(50, width)
    P[:5] = 0.5  # thresholds and argmax ties
    if width == 1:
        P = P.ravel()
    got = tasks.labels_from_probabilities(binarizer, P)
    expected = binarizer.inverse_transform(P)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "y",
    [
        np.array([0, 1, 2, 1]),
        np.array(["b", "a", "c", "a"]),
        np.array([3, 7, 3, 7]),
        np.array([5, 5, 5]),
        np.array([[0, 1, 1], [1, 0, 1], [0, 0, 1]]),
    ],
    ids=["multiclass", "strings", "binary", "one-class", "multilabel"],
)
def test_labels_from_logits_equal_labels_from_probabilities(y):
    clf = MLPClassifier()
    clf._label_binarizer = LabelBinarizer().fit(y)
    n_outputs = 1 if clf._label_binarizer.y_type_ == "binary" else 3
    logits = np.random.RandomState(0).randn(200, n_outputs) * 5
    logits[:5] = 0.0  # ties and the threshold itself
    probabilities = clf._probabilities(logits)
    if n_outputs == 1:
        probabilities = probabilities.ravel()
    expected = clf._label_binarizer.inverse_transform(probabilities)
    got = tasks.labels_from_outputs(clf._label_binarizer, logits)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_labels_of_sparse_targets_stay_sparse():
    y = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 1], [0, 0, 1]]))
    binarizer = LabelBinarizer(sparse_output=True).fit(y)
    P = np.random.RandomState(0).rand(4, 3)
    assert tasks.labels_from_outputs(binarizer, P) is None  # sparse output
    got = tasks.labels_from_probabilities(binarizer, P)
    assert sp.issparse(got)
    np.testing.assert_array_equal(
        got.toarray(), binarizer.inverse_transform(P).toarray()
    )


# -- the inference_backend parameter -------------------------------------------


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_backend_parameter_is_validated(Estimator):
    X, y = (X_digits, y_digits) if Estimator is MLPClassifier else (X_reg, y_reg)
    with pytest.raises(InvalidParameterError, match="inference_backend"):
        Estimator(inference_backend="tensorrt").fit(X, y)
    est = _quiet_fit(
        Estimator(hidden_layer_sizes=(4,), max_iter=2, random_state=0), X, y
    )
    est.set_params(inference_backend="tensorrt")  # set after fit: checked on use
    with pytest.raises(ValueError, match="Valid names are: onnxruntime, torch"):
        est.predict(X[:2])


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_backend_parameter_round_trips(Estimator, tmp_path):
    est = Estimator(hidden_layer_sizes=(4,), inference_backend="onnxruntime")
    assert est.get_params()["inference_backend"] == "onnxruntime"
    assert clone(est).inference_backend == "onnxruntime"
    assert from_config(est.get_config()).inference_backend == "onnxruntime"
    assert pickle.loads(pickle.dumps(est)).inference_backend == "onnxruntime"
    est.save(tmp_path / "unfitted")
    assert sklears_neural.load(tmp_path / "unfitted").inference_backend == "onnxruntime"


def test_files_and_pickles_without_the_parameter_load_with_torch(tmp_path):
    reg = _quiet_fit(
        MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0), X_reg, y_reg
    )
    expected = reg.predict(X_reg[:5])
    reg.save(tmp_path / "model")
    config_path = tmp_path / "model" / "config.json"
    config = json.loads(config_path.read_text())
    del config["params"]["inference_backend"]  # as written before the parameter
    config_path.write_text(json.dumps(config))
    loaded = sklears_neural.load(tmp_path / "model")
    assert loaded.inference_backend == "torch"
    np.testing.assert_array_equal(loaded.predict(X_reg[:5]), expected)
    old = pickle.loads(pickle.dumps(reg))
    del old.__dict__["inference_backend"]  # an estimator pickled before it existed
    np.testing.assert_array_equal(old.predict(X_reg[:5]), expected)


# -- the benchmark ---------------------------------------------------------------------

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "bench_inference.py"


def test_benchmark_quick_mode_reports_every_runner(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_inference", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    output = tmp_path / "inference.md"
    threads = torch.get_num_threads()
    results = bench.main(
        ["--quick", "--threads", "1", "--output", str(output)], log=lambda *a: None
    )
    assert torch.get_num_threads() == threads  # left as found
    assert [r["rows"] for r in results] == list(bench.BATCH_SIZES)
    for result in results:
        times = result["times"]
        assert list(times) == list(bench.RUNNERS)
        for name, seconds in times.items():
            if seconds is None:  # an optional package is missing
                assert name in bench.OPTIONAL
                continue
            assert seconds > 0
        # The runners compute the same thing: our paths give the eager
        # module's labels (float64 plan vs float32 may split a near-tie).
        agreement = result["agreement"]
        assert "sklears" in agreement and "sklearn" not in agreement
        assert all(share >= 0.99 for share in agreement.values()), agreement
    text = output.read_text()
    assert "| runner |" in text and "Machine:" in text
    assert text.count("\n| ") == 1 + len(bench.RUNNERS)  # header, one line per runner
