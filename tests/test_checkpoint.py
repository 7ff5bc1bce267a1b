"""Checkpoint: exact resume in a fresh process, and survival of SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

import sklears_neural
from sklears_neural import MLPClassifier
from sklears_neural.callbacks import Callback, Checkpoint
from sklears_neural.core import serialization

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The run that gets interrupted and the run that does not: dropout, a cosine
# schedule, early stopping (its validation split and best weights) and
# shuffling all draw on state a resume must restore.
SETUP = textwrap.dedent(
    """
    import warnings
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklears_neural import MLPClassifier
    warnings.simplefilter("ignore", ConvergenceWarning)
    X, y = load_digits(n_class=5, return_X_y=True)
    X, y = X[:400] / 16.0, y[:400]
    PARAMS = dict(hidden_layer_sizes=(32,), max_iter=10, batch_size=64, dropout=0.1,
                  learning_rate="cosine", learning_rate_init=0.01, early_stopping=True,
                  n_iter_no_change=50, random_state=0)
    """
)


class _StopAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, **kwargs):
        trainer.should_stop = len(trainer.history) == self.epoch


def _python(code, **kwargs):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, **kwargs)


def test_resume_in_a_fresh_process_is_bit_identical(tmp_path):
    namespace = {}
    exec(SETUP, namespace)
    X, y, params = namespace["X"], namespace["y"], namespace["PARAMS"]
    path = tmp_path / "ckpt.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        straight = MLPClassifier(**params).fit(X, y)
        MLPClassifier(**params, callbacks=[Checkpoint(path), _StopAt(5)]).fit(X, y)
    assert sklears_neural.load(path).n_iter_ == 5

    resumed_file = tmp_path / "resumed.zip"
    # Bit-identical needs the same kernels: the same number of threads.
    result = _python(SETUP + textwrap.dedent(f"""
        import torch
        torch.set_num_threads({torch.get_num_threads()})
        import sklears_neural
        est = sklears_neural.load({str(path)!r})
        est.set_params(warm_start=True).fit(X, y)
        est.save({str(resumed_file)!r})
    """))
    assert result.returncode == 0, result.stderr
    resumed = sklears_neural.load(resumed_file)
    for a, b in zip(straight.module_.parameters(), resumed.module_.parameters()):
        assert torch.equal(a, b)
    assert resumed.n_iter_ == straight.n_iter_ == 10
    assert resumed.loss_curve_ == straight.loss_curve_
    assert resumed.validation_scores_ == straight.validation_scores_
    np.testing.assert_array_equal(resumed.predict_proba(X), straight.predict_proba(X))


def test_without_the_saved_state_a_restart_differs(tmp_path):
    # Negative control: resuming by plain warm start from the weights alone
    # (fresh optimizer, schedule and generator) does not reproduce the run.
    namespace = {}
    exec(SETUP, namespace)
    X, y, params = namespace["X"], namespace["y"], namespace["PARAMS"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        straight = MLPClassifier(**params).fit(X, y)
        half = MLPClassifier(**{**params, "max_iter": 5}).fit(X, y)
        half.set_params(warm_start=True).fit(X, y)
    assert not all(torch.equal(a, b) for a, b in
                   zip(straight.module_.parameters(), half.module_.parameters()))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_while_writing_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.zip"
    marker = tmp_path / "writing"
    child = SETUP + textwrap.dedent(f"""
        import os, time
        from sklears_neural.callbacks import Checkpoint
        from sklears_neural.core import serialization
        real_replace = os.replace
        calls = []

        def slow_replace(src, dst):
            calls.append(dst)
            if len(calls) == 3:  # the third checkpoint: the temp file is written
                open({str(marker)!r}, "w").close()
                time.sleep(60)
            real_replace(src, dst)

        serialization.os.replace = slow_replace
        MLPClassifier(**PARAMS, callbacks=[Checkpoint({str(path)!r})]).fit(X, y)
    """)
    process = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert process.poll() is None, "the child ended before its third write"
            assert time.time() < deadline
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers, "the killed write should have left its temporary file"
    # The file at `path` is the complete second checkpoint.
    survivor = sklears_neural.load(path)
    assert survivor.n_iter_ == 2 and len(survivor.history_) == 2
    # Once the leftover is older than any write takes, the next save of the
    # same file removes it.
    long_ago = time.time() - serialization.STALE_TEMP_SECONDS - 60
    for name in leftovers:
        os.utime(tmp_path / name, (long_ago, long_ago))
    survivor.save(path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert sklears_neural.load(path).n_iter_ == 2


def test_checkpoints_remove_stale_temporary_files_and_nothing_else(tmp_path):
    path = tmp_path / "ckpt.zip"
    stale = [".tmp-ckpt.zip-0123abcd.part", ".tmp-ckpt.zip-89abcdef.part"]
    # A checkpoint being written by another process right now.
    fresh = [".tmp-ckpt.zip-fedcba98.part"]
    others = ["notes.txt", ".tmp-notes", ".tmp-other.zip-0123abcd.part",
              ".tmp-ckpt.zip-0123abcd.part.bak", ".tmp-ckpt.zip-0123.part",
              "ckpt.zip.bak"]
    for name in stale + fresh + others:
        (tmp_path / name).write_bytes(b"x")
    long_ago = time.time() - serialization.STALE_TEMP_SECONDS - 60
    for name in stale + others:
        os.utime(tmp_path / name, (long_ago, long_ago))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier((4,), max_iter=2, random_state=0,
                      callbacks=[Checkpoint(path)]).fit(np.eye(4), [0, 1, 0, 1])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ckpt.zip", *fresh, *others])
    assert sklears_neural.load(path).n_iter_ == 2


def test_checkpoint_options_are_checked():
    with pytest.raises(ValueError, match=".zip"):
        Checkpoint("model.ckpt")
    with pytest.raises(ValueError, match="every"):
        Checkpoint("m.zip", every=0)
    with pytest.raises(ValueError, match="stochastic solver"):
        MLPClassifier(solver="lbfgs", callbacks=[Checkpoint("m.zip")]).fit(
            np.eye(4), [0, 1, 0, 1]
        )
