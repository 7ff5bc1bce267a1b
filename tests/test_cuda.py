"""CUDA paths: the whole toolbox on a GPU, agreement with the CPU, and moving models
between devices. Every test is skipped on a machine without CUDA (CI has none); run
this file wherever a GPU is lent."""

import io
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.preprocessing import StandardScaler

from sklears_neural import BernoulliRBM, MLPClassifier, MLPRegressor, load
from sklears_neural.callbacks import Callback, Checkpoint, EarlyStopping
from tests.conftest import CUDA

pytestmark = CUDA

X_cancer, y_cancer = load_breast_cancer(return_X_y=True)
X_cancer = StandardScaler().fit_transform(X_cancer)
X_reg, y_reg = load_diabetes(return_X_y=True)
X_reg = StandardScaler().fit_transform(X_reg)
y_reg = (y_reg - y_reg.mean()) / y_reg.std()
X_digits, y_digits = load_digits(return_X_y=True)
X_digits = X_digits / 16.0


def _fit(est, X, y=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(X, y) if y is not None else est.fit(X)


def _on_cuda(est):
    return all(p.device.type == "cuda" for p in est.module_.parameters())


TOOLBOX = [
    {},
    {"dropout": 0.2},
    {"batch_norm": True},
    {"layer_norm": True, "residual": "add"},
    {"noise": "gaussian"},
    {"spectral_norm": True},
    {"gradient_checkpointing": True},
    {"solver": "sgd", "learning_rate": "adaptive", "learning_rate_init": 0.1},
    {"solver": "lamb", "learning_rate": "cosine", "warmup_iters": 2, "learning_rate_init": 0.1},
    {"solver": "lars", "clip_grad_norm": 1.0, "learning_rate_init": 0.1},
    {"alpha": 1e-3, "l1_ratio": 0.5, "clip_grad_value": 0.5},
    {"precision": "mixed"},
    {"precision": "float64"},
    {"early_stopping": True},
    {"solver": "lbfgs"},
]


@pytest.mark.parametrize("options", TOOLBOX, ids=lambda o: "-".join(map(str, o)) or "default")
def test_toolbox_trains_on_cuda(options):
    params = dict(hidden_layer_sizes=(64, 32), max_iter=30, random_state=0, **options)
    est = _fit(MLPClassifier(device="cuda", **params), X_cancer, y_cancer)
    assert _on_cuda(est)
    on_cpu = _fit(MLPClassifier(device="cpu", **params), X_cancer, y_cancer)
    # Other kernels, same seed: the same quality, not the same bits.
    assert est.score(X_cancer, y_cancer) > max(0.95, on_cpu.score(X_cancer, y_cancer) - 0.02)
    proba = est.predict_proba(X_cancer)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_cuda_and_cpu_agree_on_the_same_weights():
    est = _fit(MLPRegressor(hidden_layer_sizes=(64,), max_iter=20, random_state=0, device="cuda"), X_reg, y_reg)
    on_gpu = est.predict(X_reg)
    est.set_params(device="cpu")
    moved = pickle.loads(pickle.dumps(est))
    # A pickle restores on the device parameter's machine when present; move explicitly.
    moved.module_.to("cpu")
    moved.device = "cpu"
    np.testing.assert_allclose(moved.predict(X_reg), on_gpu, atol=1e-5)


def test_same_seed_same_model_on_cuda():
    first = _fit(MLPClassifier((32,), max_iter=5, random_state=3, device="cuda", dropout=0.1),
                 X_digits, y_digits)
    second = _fit(MLPClassifier((32,), max_iter=5, random_state=3, device="cuda", dropout=0.1),
                  X_digits, y_digits)
    for a, b in zip(first.module_.parameters(), second.module_.parameters()):
        assert torch.equal(a, b)


def test_mixed_precision_uses_a_grad_scaler_on_cuda():
    est = _fit(MLPClassifier((64,), max_iter=30, random_state=0, device="cuda",
                             precision="mixed"), X_digits, y_digits)
    assert est.score(X_digits, y_digits) > 0.95
    assert next(est.module_.parameters()).dtype == torch.float32
    # float16 autocast counts the steps that loss scaling skipped (a few at the start).
    assert all(0 <= entry["skipped_steps"] < 10 for entry in est.history_)


def test_partial_fit_and_warm_start_on_cuda():
    est = MLPClassifier((32,), random_state=0, device="cuda")
    for _ in range(3):
        est.partial_fit(X_digits, y_digits, classes=np.unique(y_digits))
    straight = _fit(MLPClassifier((32,), max_iter=3, random_state=0, device="cuda",
                                  tol=0, n_iter_no_change=1000), X_digits, y_digits)
    for a, b in zip(est.module_.parameters(), straight.module_.parameters()):
        torch.testing.assert_close(a, b)


def test_save_on_cuda_load_anywhere(tmp_path):
    est = _fit(MLPClassifier((32,), max_iter=5, random_state=0, device="cuda"),
               X_digits, y_digits)
    est.save(tmp_path / "model.zip")
    restored = load(tmp_path / "model.zip")
    np.testing.assert_array_equal(restored.predict(X_digits), est.predict(X_digits))
    buffer = io.BytesIO()
    pickle.dump(est, buffer)
    again = pickle.loads(buffer.getvalue())
    assert _on_cuda(again)
    np.testing.assert_allclose(again.predict_proba(X_digits), est.predict_proba(X_digits),
                               atol=1e-12)


class _StopAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, **kwargs):
        trainer.should_stop = len(trainer.history) == self.epoch


def test_checkpoint_resume_on_cuda(tmp_path):
    path = tmp_path / "ckpt.zip"
    params = dict(hidden_layer_sizes=(32,), max_iter=6, random_state=0, device="cuda",
                  dropout=0.1, tol=0, n_iter_no_change=1000)
    straight = _fit(MLPClassifier(**params), X_digits, y_digits)
    _fit(MLPClassifier(**params, callbacks=[Checkpoint(path), _StopAt(3)]), X_digits, y_digits)
    resumed = load(path)
    assert resumed.n_iter_ == 3 and _on_cuda(resumed)
    _fit(resumed.set_params(warm_start=True), X_digits, y_digits)
    assert resumed.n_iter_ == 6
    for a, b in zip(straight.module_.parameters(), resumed.module_.parameters()):
        assert torch.equal(a, b)


def test_early_stopping_callback_on_cuda():
    def fit(device):
        stopping = EarlyStopping(monitor="train_loss", patience=3, tol=1e-2)
        return _fit(MLPClassifier((32,), max_iter=200, random_state=0, device=device,
                                  callbacks=[stopping]), X_digits, y_digits)

    on_gpu, on_cpu = fit("cuda"), fit("cpu")
    assert on_gpu.callbacks_[0].stopped and on_gpu.n_iter_ < 200
    # Other kernels round differently: the same stopping epoch, give or take.
    assert abs(on_gpu.n_iter_ - on_cpu.n_iter_) <= 3


def test_rbm_on_cuda():
    rbm = _fit(BernoulliRBM(n_components=32, n_iter=5, random_state=0, device="cuda"),
               X_digits)
    hidden = rbm.transform(X_digits)
    assert hidden.shape == (len(X_digits), 32) and np.isfinite(hidden).all()
    assert rbm.score_samples(X_digits).mean() > -30
