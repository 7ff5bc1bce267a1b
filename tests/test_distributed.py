"""Data-parallel training (``strategy="ddp"``) in 2 processes over loopback.

One ``torchrun`` launch fits several estimators in 2 processes (gloo); each
result must equal the same fit in this single process, in float64, within
1e-6 (the gradients are the same sums in another order).
"""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from sklears_neural import GAN, MLPClassifier

# What each process runs: the same data, the same estimators, and rank 0
# writes what it learned (rank 1 writes its own, to show they agree).
SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_distributed import estimators, data, learned

    out = {{}}
    for name, est in estimators(strategy="ddp").items():
        X, y, w = data(name)
        est.fit(X, y, sample_weight=w)
        out.update(learned(name, est))
    np.savez(sys.argv[1] + f"-rank{{dist.get_rank()}}.npz", **out)
    dist.destroy_process_group()
""")


def data(name):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = X[:301] / 16.0, y[:301]  # 301 rows: batches split unevenly
    if name == "weighted_regressor":
        w = np.random.default_rng(0).uniform(0.2, 2.0, len(y))
        return X, y.astype(float), w
    if name == "autoencoder":
        return X, None, None
    return X, y, None


def estimators(strategy):
    from sklears_neural import Autoencoder, MLPClassifier, MLPRegressor

    common = dict(precision="float64", random_state=0, strategy=strategy)
    return {
        # The fused step, shuffled, a batch the ranks split 19/18, L2.
        "classifier": MLPClassifier(hidden_layer_sizes=(16,), batch_size=37, max_iter=6, alpha=1e-3,
                                    **common),
        # Weighted shares, clipping, a validation split and early stopping.
        "weighted_regressor": MLPRegressor(
            hidden_layer_sizes=(12,), batch_size=50, max_iter=40, alpha=1e-2, clip_grad_norm=1.0,
            early_stopping=True, validation_fraction=0.2, n_iter_no_change=3,
            **common),
        # A family's own objective through autograd, with its own penalty,
        # and a last batch of one row (one rank's share is empty).
        "autoencoder": Autoencoder(n_components=4, hidden_layer_sizes=(16,),
                                   batch_size=60, max_iter=4, alpha=1e-3,
                                   shuffle=False, **common),
    }


def learned(name, est):
    out = {f"{name}/loss_curve": np.asarray(est.loss_curve_),
           f"{name}/n_iter": np.asarray(est.n_iter_)}
    for key, value in est.module_.state_dict().items():
        out[f"{name}/{key}"] = value.numpy()
    return out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp")
    script = path / "train.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
         str(script), str(path / "out")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [dict(np.load(path / f"out-rank{r}.npz")) for r in (0, 1)]


def test_two_processes_equal_one_within_1e6(two_process_results):
    rank0, rank1 = two_process_results
    single = {}
    for name, est in estimators(strategy=None).items():
        X, y, w = data(name)
        est.fit(X, y, sample_weight=w)
        single.update(learned(name, est))
    assert rank0.keys() == single.keys()
    for key, expected in single.items():
        np.testing.assert_allclose(rank0[key], expected, rtol=0, atol=1e-6, err_msg=key)
        # Both ranks end with the same model.
        np.testing.assert_array_equal(rank1[key], rank0[key], err_msg=key)
    # Early stopping ran and stopped alike on both ranks, before max_iter.
    assert int(rank0["weighted_regressor/n_iter"]) < 40


def test_shares_split_every_batch_once():
    from sklears_neural.core.distributed import DataParallel

    for world in (1, 2, 3, 5):
        for n in (1, 2, 7, 37, 64):
            shares = []
            for rank in range(world):
                dp = DataParallel.__new__(DataParallel)
                dp.rank, dp.world_size = rank, world
                shares.append(dp.share(n))
            rows = [i for s in shares for i in range(s.start, s.stop)]
            assert rows == list(range(n))
            sizes = [s.stop - s.start for s in shares]
            assert max(sizes) - min(sizes) <= 1


def test_ddp_without_a_launcher_says_how_to_launch(monkeypatch):
    for variable in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(variable, raising=False)
    X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2
    est = MLPClassifier(strategy="ddp", max_iter=2)
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node"):
        est.fit(X, y)
    assert not hasattr(est, "module_")


@pytest.mark.parametrize("est, match", [
    (MLPClassifier(strategy="ddp", solver="lbfgs"), "solver='lbfgs'"),
    (GAN(strategy="ddp"), "discriminator_"),
    (MLPClassifier(strategy="dp"), "strategy"),
])
def test_ddp_refuses_what_it_cannot_split(est, match):
    X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2
    with pytest.raises(ValueError, match=match):
        est.fit(X, y)


def test_penalty_share_is_per_context():
    from sklears_neural.core.regularization import penalty_share, weight_penalty

    w = [torch.ones(2, 2)]
    with penalty_share(0.25):
        assert float(weight_penalty(w, 2.0)) == pytest.approx(1.0)
    assert float(weight_penalty(w, 2.0)) == pytest.approx(4.0)
