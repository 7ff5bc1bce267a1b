"""Sparse input: the same results as the same data dense, without making it dense.

Tolerances, measured on these data (300 x 500, 2% of values set):

- float64 paths (the plan, the float64 torch fallback): sparse-times-dense
  sums a row's products in another order than BLAS, ~1e-16 on
  probabilities; asserted to 1e-12.
- float32 forward passes (the torch path, validation): ~5e-8 on
  probabilities, a few float32 roundings (eps = 1.2e-7); asserted to 1e-6.
- L-BFGS in float64: coefficients within ~3e-14 after 10-13 iterations, on
  the sparse-tensor and on the chunked objective alike; asserted to 1e-9
  (rounding that the line searches amplify, still 5 orders under any real
  difference). In float32 they drift by ~4e-6 (the same amplification of
  float32 rounding), so float32 fits are compared through their
  probabilities, to 1e-4.
- Mini-batch solvers: each batch is made dense in the same dtype as dense
  input, so the fits are identical (asserted exactly).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from sklears_neural import MLPClassifier, MLPRegressor
from sklears_neural.core import data as data_module
from sklears_neural.core import onnx_runtime
from sklears_neural.core.data import ArrayData, rows_independent, takes_sparse
from sklears_neural.core.layers import MLP
from sklears_neural.core.plan import unknown_layers, use_plan
from tests.conftest import CUDA

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_SAMPLES, N_FEATURES = 300, 500


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    # SciPy's L-BFGS-B calls BLAS between torch's passes; with two OpenBLAS
    # threads on a two-core machine beside torch's, its setulb took ~85 ms
    # per call instead of ~1 ms (6 s against 0.1 s for a 30-iteration fit).
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def problem():
    rng = np.random.RandomState(0)
    X = sp.random(N_SAMPLES, N_FEATURES, density=0.02, format="csr", random_state=rng)
    X = (X * 3).tocsr()
    dense = X.toarray()
    score = dense[:, :50].sum(axis=1)
    y = (score > np.median(score)).astype(np.int64)
    return X, dense, y


def _coefs(est):
    return np.concatenate(
        [p.detach().double().cpu().numpy().ravel() for p in est.module_.parameters()]
    )


CHUNK_ROWS = 50


@pytest.fixture
def small_chunks(monkeypatch):
    """Dense chunks of 50 rows of float32 features: 6 chunks of the 300 rows."""
    monkeypatch.setattr(data_module, "DENSE_CHUNK_BYTES", CHUNK_ROWS * N_FEATURES * 4)


# -- which modules take sparse input ---------------------------------------------


def test_takes_sparse_and_rows_independent():
    plain = MLP(5, [4], 2)
    assert takes_sparse(plain) and rows_independent(plain)
    assert takes_sparse(nn.Sequential(nn.Linear(5, 2), nn.ReLU()))
    assert not takes_sparse(MLP(5, [4], 2, residual="add"))  # the block reads x twice
    assert not takes_sparse(nn.Sequential(nn.LayerNorm(5), nn.Linear(5, 2)))
    assert not takes_sparse(MLP(5, [4], 2).to(torch.bfloat16))  # no sparse kernel
    noisy = MLP(5, [4], 2, noise="gaussian")
    assert not takes_sparse(noisy.train()) and takes_sparse(noisy.eval())
    checkpointed = MLP(5, [4], 2, gradient_checkpointing=True)
    assert not takes_sparse(checkpointed.train()) and takes_sparse(checkpointed.eval())
    # Chunks of rows would change a training forward pass of these.
    assert not rows_independent(MLP(5, [4], 2, batch_norm=True).train())
    assert rows_independent(MLP(5, [4], 2, batch_norm=True).eval())
    assert not rows_independent(MLP(5, [4], 2, spectral_norm=True).train())
    assert rows_independent(MLP(5, [4], 2, residual="concat", layer_norm=True))


def test_array_data_keeps_sparse_and_chunks(problem, small_chunks):
    X, dense, y = problem
    data = ArrayData(X.tocsc(), y, None, dtype=torch.float32,
                     device=torch.device("cpu"), target_dtype=torch.long)
    assert data.sparse and sp.isspmatrix_csr(data.X) and data.X.dtype == np.float32
    slices = data.chunks()
    assert [s.stop - s.start for s in slices] == [CHUNK_ROWS] * 6
    index = torch.tensor([5, 299, 0])
    assert torch.equal(data.batch(index)[0], torch.tensor(dense[[5, 299, 0]],
                                                          dtype=torch.float32))
    X_sparse, _, _ = data.all(keep_sparse=True)
    assert X_sparse.layout == torch.sparse_csr
    assert torch.equal(X_sparse.to_dense(), torch.tensor(dense, dtype=torch.float32))


def test_duplicates_are_summed_and_the_input_left_alone(problem):
    X, dense, y = problem
    # Every value split in two entries, the second run of a row's columns
    # in reverse order: duplicates and unsorted indices.
    bounds = zip(X.indptr[:-1], X.indptr[1:])
    pieces = [(X.indices[a:b], X.data[a:b] / 2) for a, b in bounds]
    messy = sp.csr_matrix(
        (np.concatenate([np.r_[half, half[::-1]] for _, half in pieces]),
         np.concatenate([np.r_[cols, cols[::-1]] for cols, _ in pieces]),
         2 * X.indptr),
        shape=X.shape,
    )
    assert not messy.has_canonical_format and messy.nnz == 2 * X.nnz
    est = MLPClassifier((8,), max_iter=5, random_state=0).fit(dense, y)
    np.testing.assert_allclose(est.predict_proba(messy), est.predict_proba(dense),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(est.predict_proba(messy[:5]),
                               est.predict_proba(dense[:5]), rtol=0, atol=1e-12)
    assert messy.nnz == 2 * X.nnz  # not summed in place
    refit = MLPClassifier((8,), max_iter=5, random_state=0).fit(messy, y)
    np.testing.assert_allclose(_coefs(refit), _coefs(est), rtol=0, atol=1e-6)
    assert messy.nnz == 2 * X.nnz


# -- fit -----------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_stochastic_fit_equals_dense(problem, solver, fmt):
    X, dense, y = problem
    kwargs = dict(solver=solver, max_iter=10, batch_size=32, random_state=0)
    ref = MLPClassifier((16,), **kwargs).fit(dense, y)
    est = MLPClassifier((16,), **kwargs).fit(X.asformat(fmt), y)
    np.testing.assert_array_equal(_coefs(est), _coefs(ref))
    assert est.loss_curve_ == ref.loss_curve_


@pytest.mark.parametrize("residual", [None, "add"])
def test_early_stopping_validation_equals_dense(problem, residual, monkeypatch):
    # residual="add": the 30 validation rows go through in 3 dense chunks of
    # 10; without: as one sparse tensor.
    monkeypatch.setattr(data_module, "DENSE_CHUNK_BYTES", 10 * N_FEATURES * 4)
    X, dense, y = problem
    kwargs = dict(early_stopping=True, max_iter=15, n_iter_no_change=20,
                  residual=residual, random_state=0)
    ref = MLPClassifier((16,), **kwargs).fit(dense, y)
    est = MLPClassifier((16,), **kwargs).fit(X.tocsc(), y)
    np.testing.assert_array_equal(_coefs(est), _coefs(ref))
    assert est.validation_scores_ == ref.validation_scores_
    np.testing.assert_allclose(est.validation_loss_curve_, ref.validation_loss_curve_,
                               rtol=1e-6)


@pytest.mark.parametrize(
    "options, fmt",
    [
        ({}, "csr"),  # all rows as one sparse tensor
        ({"batch_norm": True}, "csc"),  # the same: batch statistics over all rows
        ({"residual": "add"}, "csc"),  # chunks of dense rows, objective added up
        ({"residual": "concat", "gradient_checkpointing": True}, "csr"),  # chunks
    ],
    ids=["sparse-tensor", "batch-norm", "chunks", "chunks-checkpointing"],
)
def test_lbfgs_equals_dense(problem, options, fmt, small_chunks):
    X, dense, y = problem
    kwargs = dict(solver="lbfgs", max_iter=30, precision="float64", random_state=0,
                  **options)
    ref = MLPClassifier((16,), **kwargs).fit(dense, y)
    est = MLPClassifier((16,), **kwargs).fit(X.asformat(fmt), y)
    assert est.n_iter_ == ref.n_iter_ > 5
    np.testing.assert_allclose(_coefs(est), _coefs(ref), rtol=0, atol=1e-9)
    np.testing.assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=1e-12)


def test_lbfgs_chunks_weighted_regression(problem, small_chunks):
    # Sample weights, the first two chunks weightless (left out of the sum);
    # a regressor's penalty and loss share the weights' total.
    X, dense, _ = problem
    rng = np.random.RandomState(1)
    y = dense[:, :20].sum(axis=1) + rng.randn(N_SAMPLES)
    weights = rng.uniform(0.5, 2.0, N_SAMPLES)
    weights[:20] = 0
    kwargs = dict(solver="lbfgs", max_iter=30, alpha=0.1, residual="add",
                  precision="float64", random_state=0)
    ref = MLPRegressor(hidden_layer_sizes=(16,), **kwargs)
    ref.fit(dense, y, sample_weight=weights)
    est = MLPRegressor(hidden_layer_sizes=(16,), **kwargs)
    est.fit(X, y, sample_weight=weights)
    assert est.n_iter_ == ref.n_iter_ > 5
    np.testing.assert_allclose(_coefs(est), _coefs(ref), rtol=0, atol=1e-9)
    np.testing.assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=1e-12)


@pytest.mark.parametrize("residual", [None, "add"])
def test_lbfgs_float32_predictions_equal_dense(problem, residual, small_chunks):
    X, dense, y = problem
    kwargs = dict(solver="lbfgs", max_iter=30, residual=residual, random_state=0)
    ref = MLPClassifier((16,), **kwargs).fit(dense, y)
    est = MLPClassifier((16,), **kwargs).fit(X, y)
    np.testing.assert_allclose(est.predict_proba(dense), ref.predict_proba(dense),
                               rtol=0, atol=1e-4)


# -- predict -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(problem):
    X, dense, y = problem
    return {
        residual: MLPClassifier((16,), max_iter=20, residual=residual,
                                random_state=0).fit(dense, y)
        for residual in (None, "add")
    }


@pytest.mark.parametrize("residual", [None, "add"])
@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize(
    "rows, atol",
    [(1, 1e-12), (20, 1e-12), (N_SAMPLES, 1e-6)],  # plan, plan, torch path
)
def test_predict_equals_dense(problem, fitted, residual, fmt, rows, atol, small_chunks):
    X, dense, y = problem
    est = fitted[residual]
    assert use_plan(20, est.n_features_in_ * 16)
    assert not use_plan(N_SAMPLES, est.n_features_in_ * 16)
    part = X[:rows].asformat(fmt)
    np.testing.assert_allclose(est.predict_proba(part), est.predict_proba(dense[:rows]),
                               rtol=0, atol=atol)
    np.testing.assert_array_equal(est.predict(part), est.predict(dense[:rows]))


class _Softsign(nn.Module):
    """A layer the plan has no step for."""

    def forward(self, x):
        return x / (1 + x.abs())


@pytest.mark.parametrize("residual", [None, "add"])
def test_predict_float64_fallback_equals_dense(problem, residual, small_chunks):
    X, dense, y = problem
    est = MLPClassifier((16,), max_iter=20, residual=residual,
                        random_state=0).fit(dense, y)
    with torch.no_grad():
        if residual is None:
            est.module_.layers[1] = _Softsign()
        else:
            est.module_.layers[0].body[1] = _Softsign()
    assert unknown_layers(est.module_) == ["_Softsign"]
    for rows, atol in [(20, 1e-12), (N_SAMPLES, 1e-6)]:
        np.testing.assert_allclose(est.predict_proba(X[:rows].tocsc()),
                                   est.predict_proba(dense[:rows]), rtol=0, atol=atol)


def test_predict_onnxruntime_path_densifies_bounded_chunks(problem, monkeypatch,
                                                           small_chunks):
    # The session stands in for ONNX Runtime (an export takes seconds; the
    # graph itself is tested in test_onnx.py): it records the rows it gets.
    X, dense, y = problem
    est = MLPClassifier((16,), max_iter=20, random_state=0).fit(dense, y)
    seen = []

    class Session:
        def run(self, names, feeds):
            part = feeds["X"]
            seen.append(part.shape[0])
            assert part.dtype == np.float32 and part.flags.c_contiguous
            with torch.inference_mode():
                return [est.module_(torch.from_numpy(part)).numpy()]

    monkeypatch.setattr(onnx_runtime, "_onnxruntime", lambda: None)
    monkeypatch.setattr(onnx_runtime, "model_bytes", lambda estimator, entry: b"")
    monkeypatch.setattr(onnx_runtime, "_session", lambda onnxruntime, model: Session())
    est.set_params(inference_backend="onnxruntime")
    expected = est.predict_proba(dense)
    assert seen == [N_SAMPLES]
    seen.clear()
    # float32 outputs of 50-row chunks against one 300-row pass: 1e-6.
    np.testing.assert_allclose(est.predict_proba(X.tocsc()), expected,
                               rtol=0, atol=1e-6)
    assert seen == [CHUNK_ROWS] * 6


# -- memory --------------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, time, warnings
    import numpy as np, scipy.sparse as sp, torch
    from sklears_neural import MLPClassifier

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # 70,000 x 100,000: 26 GiB dense in float32, 8.4 MB of values here.
    n, d, nnz = 70_000, 100_000, 700_000
    rng = np.random.RandomState(0)
    X = sp.csr_matrix(
        (rng.rand(nnz), (rng.randint(0, n, nnz), rng.randint(0, d, nnz))),
        shape=(n, d),
    )
    y = np.asarray(X[:, :1000].sum(axis=1)).ravel() > 0.01
    # Warm up torch, L-BFGS and the predict paths on 50 rows of the same width.
    MLPClassifier((10,), solver="lbfgs", max_iter=2, random_state=0).fit(
        X[:50], y[:50]).predict(X[:50])
    start = peak_mb()
    t = time.perf_counter()
    clf = MLPClassifier((10,), solver="lbfgs", max_iter=5, random_state=0).fit(X, y)
    fit_s = time.perf_counter() - t
    fit_peak = peak_mb()
    t = time.perf_counter()
    proba = clf.predict_proba(X)
    predict_s = time.perf_counter() - t
    assert proba.shape == (n, 2) and np.isfinite(proba).all()
    print(fit_peak - start, peak_mb() - start, fit_s, predict_s)
    """
)


def test_wide_sparse_fit_and_predict_stay_sparse():
    # Peak resident memory in a fresh process: torch's allocations do not
    # show in tracemalloc. Before sparse support this fit added ~26 GiB
    # (and failed), the prediction ~1.4 GiB per chunk of 65,536 rows.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    fit_mb, total_mb, fit_s, predict_s = map(float, result.stdout.split())
    # Measured: ~40 MB for the fit (L-BFGS history for 1M parameters: 16
    # MB), under ~60 MB overall; dense, one chunk alone would be 1.7 GB.
    assert fit_mb < 250 and total_mb < 250, (fit_mb, total_mb)
    assert fit_s < 20 and predict_s < 5, (fit_s, predict_s)


@CUDA
def test_cuda_sparse_equals_dense(problem, small_chunks):
    # The same paths on a GPU: cuSPARSE for the first layer, dense chunks to
    # the device for residual modules.
    X, dense, y = problem
    for options in ({}, {"residual": "add"}):
        for kwargs in (dict(solver="adam", early_stopping=True, max_iter=10),
                       dict(solver="lbfgs", precision="float64", max_iter=20)):
            params = dict(device="cuda", random_state=0, **options, **kwargs)
            ref = MLPClassifier((16,), **params).fit(dense, y)
            est = MLPClassifier((16,), **params).fit(X, y)
            atol = 1e-9 if kwargs["solver"] == "lbfgs" else 0
            np.testing.assert_allclose(_coefs(est), _coefs(ref), rtol=0, atol=atol)
            np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(dense),
                                       rtol=0, atol=1e-6)
