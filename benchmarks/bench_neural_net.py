"""Training speed of a user's own module: NeuralNetClassifier vs skorch vs a hand loop.

One process trains the same ``nn.Module`` classes on the same data with the
same optimizer (Adam, lr 1e-3, betas 0.9/0.999, eps 1e-8, no weight decay),
batch size 128 and number of epochs:

``hand``
    The loop a PyTorch user writes: ``randperm`` per epoch, index batches,
    ``F.cross_entropy``, ``torch.optim.Adam``, ``zero_grad``/``backward``/``step``.
``hand_fused``
    The same loop with ``torch.optim.Adam(fused=True)``, the Adam kernel the
    core picks: what is left between it and ``sklears`` is the estimator's
    own overhead (validation, batching, bookkeeping).
``sklears``
    ``sklears_neural``'s ``NeuralNetClassifier(module)`` with ``alpha=0``
    (the same objective), ``tol=0`` and ``n_iter_no_change=inf`` (every epoch
    runs), ``shuffle=True``.
``skorch``
    ``skorch.NeuralNetClassifier(module)`` with ``CrossEntropyLoss``,
    ``train_split=None`` (no validation split) and shuffled batches through its
    default ``DataLoader``, ``verbose=0``.

Workloads: scikit-learn's digits (1,797 images of 8 x 8 pixels, scaled to
[0, 1], float32), through a small MLP on the 64 pixels and a small CNN on
``(1, 8, 8)`` images. Each runner's ``fit`` is timed whole (module building
and data conversion included) and divided by the epochs: seconds per epoch.
The runners take turns within each repeat, so a burst of load on a shared
machine hits them alike, and the median of the repeats is reported, of the
wall clock and of the process's CPU time (which other processes disturb
less); the training accuracy, computed afterwards, checks that each one
learned. With more threads than idle cores, torch's worker threads wait on
each other and the wall clock says more about the machine than the code:
compare within one table, on a quiet machine.

Usage::

    python benchmarks/bench_neural_net.py                # 1 and 2 threads, 5 repeats
    python benchmarks/bench_neural_net.py --threads 1 --repeats 9
    python benchmarks/bench_neural_net.py --quick        # smoke test, seconds
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits
from torch import nn

# Run as a file or loaded by path in tests: this folder holds the helpers,
# the checkout's root holds sklears_neural when it is not installed.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.append(os.path.dirname(_HERE))

import sklears_neural  # noqa: E402
from sklears_neural.models.neural_net import NeuralNetClassifier  # noqa: E402

from _machine import cpu_model  # noqa: E402

try:  # optional peer
    import skorch
except ImportError:  # pragma: no cover - depends on the environment
    skorch = None

LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
BATCH = 128
SEED = 0
RUNNERS = ("hand", "hand_fused", "sklears", "skorch")


class SmallMLP(nn.Module):
    """64 -> 128 -> 64 -> classes, ReLU."""

    def __init__(self, n_features_in=64, n_outputs=10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features_in, 128), nn.ReLU(),
            nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, n_outputs),
        )

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3 x 3 convolutions (8, 16 channels), each max-pooled, then a linear layer."""

    def __init__(self, in_channels=1, n_outputs=10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 2 * 2, n_outputs),
        )

    def forward(self, x):
        return self.net(x)


def workloads(quick=False):
    """(name, module class, sample shape, epochs)."""
    epochs = (1, 1) if quick else (20, 10)
    return [
        ("MLP on digits", SmallMLP, (64,), epochs[0]),
        ("CNN on digits (1, 8, 8)", SmallCNN, (1, 8, 8), epochs[1]),
    ]


def make_data(shape, quick=False):
    X, y = load_digits(return_X_y=True)
    if quick:
        X, y = X[:300], y[:300]
    X = (X / 16.0).astype(np.float32).reshape((len(X), *shape))
    return X, y.astype(np.int64)


def fit_hand(module, X, y, epochs, fused=None):
    """The loop a PyTorch user writes in ten lines."""
    model = module()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS,
                           fused=fused)
    gen = torch.Generator().manual_seed(SEED)
    n = len(X)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, BATCH):
            idx = perm[start:start + BATCH]
            loss = F.cross_entropy(model(Xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()

    def predict(X_):
        with torch.no_grad():
            return model(torch.from_numpy(X_)).argmax(1).numpy()

    return predict


def fit_hand_fused(module, X, y, epochs):
    return fit_hand(module, X, y, epochs, fused=True)


def fit_sklears(module, X, y, epochs):
    clf = NeuralNetClassifier(
        module, solver="adam", alpha=0.0, batch_size=BATCH, learning_rate_init=LR,
        beta_1=BETAS[0], beta_2=BETAS[1], epsilon=EPS, max_iter=epochs, tol=0.0,
        n_iter_no_change=np.inf, shuffle=True, random_state=SEED,
    ).fit(X, y)
    return clf.predict


def fit_skorch(module, X, y, epochs):
    net = skorch.NeuralNetClassifier(
        module, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=LR,
        optimizer__betas=BETAS, optimizer__eps=EPS, batch_size=BATCH,
        max_epochs=epochs, train_split=None, iterator_train__shuffle=True, verbose=0,
    ).fit(X, y)
    return net.predict


FITTERS = {"hand": fit_hand, "hand_fused": fit_hand_fused, "sklears": fit_sklears,
           "skorch": fit_skorch}
LABELS = {
    "hand": "hand-written PyTorch loop",
    "hand_fused": "the same loop, Adam(fused=True)",
    "sklears": f"sklears_neural {sklears_neural.__version__} NeuralNetClassifier",
    "skorch": (f"skorch {skorch.__version__} NeuralNetClassifier" if skorch
               else "skorch (not installed)"),
}


@contextlib.contextmanager
def _seeded():
    """The global torch RNG seeded (module init, skorch's shuffling), then restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        yield


def run_workload(name, module, shape, epochs, repeats, quick, log):
    X, y = make_data(shape, quick)
    runners = [r for r in RUNNERS if r != "skorch" or skorch is not None]
    times = {r: [] for r in runners}
    cpu_times = {r: [] for r in runners}
    scores = {}
    for name_ in runners:  # warm-up: lazy imports, thread pools, first optimizer
        with _seeded():
            FITTERS[name_](module, X[:256], y[:256], 1)
    for _ in range(repeats):
        for runner in runners:
            with _seeded():
                t0, c0 = time.perf_counter(), time.process_time()
                predict = FITTERS[runner](module, X, y, epochs)
                times[runner].append((time.perf_counter() - t0) / epochs)
                cpu_times[runner].append((time.process_time() - c0) / epochs)
            scores[runner] = float(np.mean(predict(X) == y))
    rows = []
    hand = statistics.median(times["hand"])
    fused = statistics.median(times["hand_fused"])
    hand_cpu = statistics.median(cpu_times["hand"])
    for runner in runners:
        per_epoch = statistics.median(times[runner])
        cpu = statistics.median(cpu_times[runner])
        rows.append({
            "runner": runner, "epoch_s": per_epoch, "ratio": per_epoch / hand,
            "ratio_fused": per_epoch / fused, "cpu_s": cpu, "cpu_ratio": cpu / hand_cpu,
            "times": times[runner], "cpu_times": cpu_times[runner],
            "accuracy": scores[runner],
        })
    log(f"{name}: " + ", ".join(f"{r['runner']} {r['epoch_s'] * 1e3:.2f} ms/epoch "
                                f"({r['ratio']:.2f}x)" for r in rows))
    return {"workload": name, "n_samples": len(X), "shape": shape, "epochs": epochs,
            "rows": rows}


def run(args, log=print):
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            with threadpool_limits(threads), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                for name, module, shape, epochs in workloads(args.quick):
                    result = run_workload(name, module, shape, epochs, args.repeats,
                                          args.quick, log)
                    result["threads"] = threads
                    results.append(result)
    finally:  # main() is also called from tests: leave torch as found
        torch.set_num_threads(previous)
    return results


def environment():
    try:
        load = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        load = "n/a"
    return (
        f"{cpu_model()}, {os.cpu_count()} cores visible, torch {torch.__version__}, "
        f"sklears_neural {sklears_neural.__version__}, "
        f"skorch {skorch.__version__ if skorch else 'not installed'}; "
        f"1-minute load average {load}"
    )


def table_rows(result):
    out = [["runner", "ms per epoch", "x hand loop", "x fused-Adam loop",
            "CPU ms per epoch", "CPU x hand loop", "train accuracy"]]
    for r in result["rows"]:
        out.append([LABELS[r["runner"]], f"{r['epoch_s'] * 1e3:.2f}",
                    f"{r['ratio']:.2f}", f"{r['ratio_fused']:.2f}",
                    f"{r['cpu_s'] * 1e3:.2f}", f"{r['cpu_ratio']:.2f}",
                    f"{r['accuracy']:.3f}"])
    return out


def render_markdown(results, env, repeats):
    lines = [
        "## Your own module: NeuralNetClassifier beside skorch and a hand loop",
        "",
        f"Machine: {env}. `python benchmarks/bench_neural_net.py`: each "
        f"runner's `fit` time divided by its epochs, median of {repeats} "
        "repeats, runners taking turns; Adam (lr 1e-3), batch 128, no weight "
        "decay, digits scaled to [0, 1] in float32. `x hand loop` divides by "
        "the plain hand loop (torch's default, unfused Adam), `x fused-Adam "
        "loop` by the same loop with `Adam(fused=True)`, the kernel "
        "sklears_neural's core picks. The CPU columns time the process's CPU "
        "(all its threads) instead of the wall clock: with one thread on a "
        "shared machine, the steadier measure of the work done.",
    ]
    for result in results:
        lines += ["", f"### {result['workload']}, {result['n_samples']} samples, "
                      f"{result['epochs']} epochs, {result['threads']} thread(s)", ""]
        rows = table_rows(result)
        lines.append("| " + " | ".join(rows[0]) + " |")
        lines.append("|---|" + "---:|" * (len(rows[0]) - 1))
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch intra-op (and BLAS) thread counts (default 1 2)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed fits per runner, the median is kept (default 5, "
                        "1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="300 samples, 1 epoch, 1 repeat: a smoke test")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    return args


def main(argv=None, log=print):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = environment()
    log(env)
    results = run(args, log=log)
    log(render_markdown(results, environment(), args.repeats))
    return results


if __name__ == "__main__":
    main()
