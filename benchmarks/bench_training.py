"""Training speed of our MLPs beside a raw-torch floor, a hand loop and the peers.

One process times, on the same data, architecture (MLP, hidden layers
(256, 128), ReLU), optimizer (Adam, lr 1e-3, betas 0.9/0.999, eps 1e-8), batch
size and number of epochs:

``gemm``
    The GEMM floor: each step's matrix products and nothing else (three
    forward ``addmm``, three weight-gradient and two input-gradient ``mm``
    on preallocated buffers and contiguous slices of the data), no
    activation, loss, optimizer or shuffling. What the step's arithmetic
    costs on this machine; every other runner is reported as a multiple of it.
``floor``
    The same forward/backward matmuls and Adam update written as raw torch
    ops on preallocated tensors: no autograd, no ``nn.Module``, no optimizer
    object. Each epoch gathers the shuffled data once into a preallocated
    buffer and walks contiguous slices of it. The whole step's arithmetic,
    not a target any framework can reach.
``hand``
    A minimal hand-written PyTorch loop: ``nn.Sequential``, ``randperm`` per
    epoch, index batches, ``F.cross_entropy`` (``F.mse_loss`` for regression),
    ``torch.optim.Adam``.
``sklears``
    ``sklears_neural.MLPClassifier`` / ``MLPRegressor`` (``alpha=0``,
    ``tol=0``, ``n_iter_no_change=inf`` so it runs every epoch).
``sklearn``
    ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor``, same
    settings. Input is float32 and scikit-learn computes in the input dtype.
``skorch``
    ``skorch.NeuralNetClassifier`` / ``NeuralNetRegressor`` with the hand
    loop's module, Adam, ``train_split=None``, shuffled batches (optional:
    reported as "skorch not installed" when it cannot be imported).

Only ``fit`` is timed; the training score (accuracy or R^2 on the training
data) is computed afterwards, untimed. The runners are interleaved (each
repeat runs every runner once), and each starts only when the threads the
previous one left are quiet: scikit-learn's OpenBLAS threads spin for a while
after it returns, and slowed the next runner by 40% in one measured table.
Min and median of ``--repeats`` are reported. Every runner sees
the same standardized float32 arrays and starts from ``random_state`` 0 (the
torch runners under a forked, seeded global RNG).

Memory: "peak +MiB" is measured apart from the timings, each runner and
workload in a fresh process (forked from a server that has only imported the
libraries, see ``_memory.py``): the process builds the workload's data, makes
a warm-up fit on 200 other rows (thread pools, lazy imports), hands the
heap's free pages back to the kernel, then reads the kernel's peak resident
set size over the measured ``fit`` minus the resident set size just before
it. The data itself is therefore not counted; copies of it that a runner
makes are. No sampling: the kernel's high-water mark is reset before the fit
(``/proc/self/clear_refs``). Read in the timing process, the same number is
~0, because later fits reuse memory that earlier ones left in the
allocators' caches. "memory x hand loop" divides by the hand loop's peak.

The RBM section (``bench_rbm.py``) compares ``sklears_neural.BernoulliRBM``
with scikit-learn's on the same data and settings.

Usage::

    python benchmarks/bench_training.py                     # full, 3 repeats
    python benchmarks/bench_training.py --output doc/benchmarks.md   # the page
    python benchmarks/bench_training.py --quick             # smoke test, < 1 min
    python benchmarks/bench_training.py --no-memory         # timings only
"""

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import threading
import time
import warnings

import numpy as np
import sklearn
import torch
import torch.nn.functional as F
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from threadpoolctl import threadpool_limits
from torch import nn
from torch.optim.adam import adam as adam_step

# The scripts run as files (python benchmarks/x.py) and are loaded by path in
# tests; either way their folder holds the shared helpers, and the checkout's
# root holds sklears_neural when it is not installed (appended, so that an
# installed copy wins).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.append(os.path.dirname(_HERE))

import sklears_neural  # noqa: E402
from sklears_neural import MLPClassifier, MLPRegressor  # noqa: E402

import bench_rbm  # noqa: E402
from _machine import cpu_model  # noqa: E402
from _memory import ForkServer, PeakRSS  # noqa: E402

try:  # optional peer
    import skorch
except ImportError:  # pragma: no cover - depends on the environment
    skorch = None

HIDDEN = (256, 128)
LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
SEED = 0
RUNNERS = ("gemm", "floor", "hand", "sklears", "sklearn", "skorch")


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------


def workloads(quick=False, epochs=None):
    """(name, task, n_samples, batch_size, epochs) of each workload."""
    if quick:
        specs = [
            ("classification", "classification", 4000, 256, 1),
            ("regression", "regression", 4000, 256, 1),
            ("small batch", "classification", 1000, 32, 1),
        ]
    else:
        specs = [
            ("classification", "classification", 50_000, 256, 5),
            ("regression", "regression", 50_000, 256, 5),
            ("small batch", "classification", 10_000, 32, 5),
        ]
    if epochs is not None:
        specs = [(n, t, s, b, epochs) for n, t, s, b, _ in specs]
    return specs


def make_data(task, n_samples, n_features=64, n_classes=10):
    """Standardized float32 ``X`` (and ``y``: int64 labels or float32 target)."""
    if task == "classification":
        X, y = make_classification(
            n_samples,
            n_features,
            n_informative=32,
            n_redundant=16,
            n_classes=n_classes,
            random_state=SEED,
        )
        y = y.astype(np.int64)
    else:
        X, y = make_regression(
            n_samples, n_features, n_informative=32, noise=10.0, random_state=SEED
        )
        y = ((y - y.mean()) / y.std()).astype(np.float32)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    return np.ascontiguousarray(X), y


def _n_out(task, y):
    return int(y.max()) + 1 if task == "classification" else 1


def _module(n_in, n_out, hidden=HIDDEN):
    """``Linear, ReLU, ..., Linear``: the MLP every torch runner trains."""
    sizes = [n_in, *hidden]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], n_out))


def _score(task, y, pred):
    if task == "classification":
        return float(np.mean(pred == y))
    return float(r2_score(y, pred))


def _predict_torch(task, forward, X):
    with torch.no_grad():
        out = forward(torch.from_numpy(X))
    if task == "classification":
        return out.argmax(1).numpy()
    return out[:, 0].numpy()


# --------------------------------------------------------------------------
# Runners: each returns a callable X -> predictions (for the untimed score)
# --------------------------------------------------------------------------


def relu_backward_(grad, activation):
    """``grad *= (activation > 0)`` in place, in one pass (autograd's kernel)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, activation, 0, grad_input=grad)


def fit_gemm(task, X, y, batch_size, epochs):
    """Only the step's matrix products, on preallocated buffers (no predictor)."""
    n, d = X.shape
    c = _n_out(task, y)
    gen = torch.Generator().manual_seed(SEED)
    Xt = torch.from_numpy(X)
    sizes = [d, *HIDDEN, c]
    weights = [torch.empty(i, o).uniform_(-0.1, 0.1, generator=gen)
               for i, o in zip(sizes[:-1], sizes[1:])]
    biases = [torch.zeros(o) for o in sizes[1:]]
    grads = [torch.empty_like(W) for W in weights]
    outputs = [torch.empty(batch_size, o) for o in sizes[1:]]
    deltas = [torch.empty(batch_size, o) for o in sizes[1:-1]]
    for _ in range(epochs):
        for start in range(0, n, batch_size):
            a = Xt[start : start + batch_size]
            k = a.shape[0]
            inputs = [a]
            for W, b, z in zip(weights, biases, outputs):
                inputs.append(torch.addmm(b, inputs[-1], W, out=z[:k]))
            g = inputs[-1]
            for i in range(len(weights) - 1, -1, -1):
                torch.mm(inputs[i].t(), g, out=grads[i])
                if i:
                    g = torch.mm(g, weights[i].t(), out=deltas[i - 1][:k])
    return None


def fit_floor(task, X, y, batch_size, epochs):
    """Raw torch ops, manual gradients, manual Adam, preallocated buffers."""
    n, d = X.shape
    c = _n_out(task, y)
    gen = torch.Generator().manual_seed(SEED)
    Xt = torch.from_numpy(X)
    if task == "classification":
        Yt = F.one_hot(torch.from_numpy(y), c).float()
    else:
        Yt = torch.from_numpy(y).reshape(-1, 1)
    # Parameters as (in, out) matrices, PyTorch's default Linear init.
    sizes = [d, *HIDDEN, c]
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / fan_in**0.5
        W = torch.empty(fan_in, fan_out).uniform_(-bound, bound, generator=gen)
        b = torch.empty(fan_out).uniform_(-bound, bound, generator=gen)
        params += [W, b]
    W1, b1, W2, b2, W3, b3 = params
    grads = [torch.empty_like(p) for p in params]
    gW1, gb1, gW2, gb2, gW3, gb3 = grads
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    steps = [torch.zeros(()) for _ in params]
    # Activation buffers, sliced for the last (short) batch.
    Xs, Ys = torch.empty_like(Xt), torch.empty_like(Yt)
    h1 = torch.empty(batch_size, HIDDEN[0])
    h2 = torch.empty(batch_size, HIDDEN[1])
    z3 = torch.empty(batch_size, c)
    d2 = torch.empty(batch_size, HIDDEN[1])
    d1 = torch.empty(batch_size, HIDDEN[0])
    mx = torch.empty(batch_size, 1)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        torch.index_select(Xt, 0, perm, out=Xs)
        torch.index_select(Yt, 0, perm, out=Ys)
        for start in range(0, n, batch_size):
            xb, yb = Xs[start : start + batch_size], Ys[start : start + batch_size]
            k = xb.shape[0]
            a1, a2, a3 = h1[:k], h2[:k], z3[:k]
            g2, g1 = d2[:k], d1[:k]
            # forward
            torch.addmm(b1, xb, W1, out=a1).relu_()
            torch.addmm(b2, a1, W2, out=a2).relu_()
            torch.addmm(b3, a2, W3, out=a3)
            # dLoss/dlogits, written over the logits
            if task == "classification":  # softmax cross-entropy, batch mean
                torch.amax(a3, 1, keepdim=True, out=mx[:k])
                a3.sub_(mx[:k]).exp_()
                a3.div_(a3.sum(1, keepdim=True)).sub_(yb).div_(k)
            else:  # mean squared error
                a3.sub_(yb).mul_(2.0 / k)
            # backward
            torch.mm(a2.t(), a3, out=gW3)
            torch.sum(a3, 0, out=gb3)
            relu_backward_(torch.mm(a3, W3.t(), out=g2), a2)
            torch.mm(a1.t(), g2, out=gW2)
            torch.sum(g2, 0, out=gb2)
            relu_backward_(torch.mm(g2, W2.t(), out=g1), a1)
            torch.mm(xb.t(), g1, out=gW1)
            torch.sum(g1, 0, out=gb1)
            # Adam: torch's fused kernel (one pass per tensor), as the fastest
            # optimizer step torch offers.
            adam_step(params, grads, m, v, [], steps, fused=True, amsgrad=False,
                      beta1=BETAS[0], beta2=BETAS[1], lr=LR, weight_decay=0.0,
                      eps=EPS, maximize=False)

    def forward(x):
        h = torch.relu(torch.addmm(b1, x, W1))
        h = torch.relu(torch.addmm(b2, h, W2))
        return torch.addmm(b3, h, W3)

    return lambda X_: _predict_torch(task, forward, X_)


def fit_hand(task, X, y, batch_size, epochs, hidden=HIDDEN):
    """The loop a PyTorch user writes in ten lines (also bench_scale's reference)."""
    n = X.shape[0]
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    if task == "regression":
        yt = yt.reshape(-1, 1)
    model = _module(X.shape[1], _n_out(task, y), hidden)
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS)
    loss_fn = F.cross_entropy if task == "classification" else F.mse_loss
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            loss = loss_fn(model(Xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return lambda X_: _predict_torch(task, model, X_)


def _sk_params(batch_size, epochs):
    return dict(
        hidden_layer_sizes=HIDDEN,
        activation="relu",
        solver="adam",
        alpha=0.0,
        batch_size=batch_size,
        learning_rate_init=LR,
        beta_1=BETAS[0],
        beta_2=BETAS[1],
        epsilon=EPS,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=np.inf,
        shuffle=True,
        random_state=SEED,
    )


def fit_sklears(task, X, y, batch_size, epochs):
    cls = MLPClassifier if task == "classification" else MLPRegressor
    model = cls(**_sk_params(batch_size, epochs)).fit(X, y)
    return model.predict


def fit_sklearn(task, X, y, batch_size, epochs):
    cls = SkMLPClassifier if task == "classification" else SkMLPRegressor
    model = cls(**_sk_params(batch_size, epochs)).fit(X, y)
    return model.predict


def fit_skorch(task, X, y, batch_size, epochs):
    common = dict(
        module=_module,
        module__n_in=X.shape[1],
        module__n_out=_n_out(task, y),
        optimizer=torch.optim.Adam,
        optimizer__betas=BETAS,
        optimizer__eps=EPS,
        lr=LR,
        batch_size=batch_size,
        max_epochs=epochs,
        train_split=None,
        iterator_train__shuffle=True,
        verbose=0,
    )
    if task == "classification":
        net = skorch.NeuralNetClassifier(criterion=nn.CrossEntropyLoss, **common)
        net.fit(X, y)
        return net.predict
    net = skorch.NeuralNetRegressor(criterion=nn.MSELoss, **common)
    net.fit(X, y.reshape(-1, 1))
    return lambda X_: net.predict(X_)[:, 0]


FITTERS = {
    "gemm": fit_gemm,
    "floor": fit_floor,
    "hand": fit_hand,
    "sklears": fit_sklears,
    "sklearn": fit_sklearn,
    "skorch": fit_skorch,
}

LABELS = {
    "gemm": "matrix products only (GEMM floor)",
    "floor": "raw torch ops, fused Adam",
    "hand": "hand-written PyTorch loop",
    "sklears": f"sklears_neural {sklears_neural.__version__}",
    "sklearn": f"scikit-learn {sklearn.__version__}",
    "skorch": f"skorch {skorch.__version__}" if skorch is not None else "skorch",
}


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded():
    """Seed the global torch RNG (skorch uses it) without leaking the seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        yield


def _other_threads_cpu_ticks():
    """CPU time (clock ticks) of this process's threads other than the caller."""
    me = threading.get_native_id()
    total = 0
    for entry in os.scandir("/proc/self/task"):
        if int(entry.name) == me:
            continue
        try:
            with open(f"/proc/self/task/{entry.name}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def wait_until_quiet(interval=0.05, timeout=3.0):
    """Return once the other threads used no CPU for ``interval`` seconds.

    BLAS and OpenMP pools spin-wait after a call returns; a runner started
    then shares the cores with them. Returns whether quiet was reached
    before ``timeout`` (without ``/proc``, it only sleeps).
    """
    if not os.path.isdir("/proc/self/task"):
        time.sleep(4 * interval)
        return True
    deadline = time.monotonic() + timeout
    before = _other_threads_cpu_ticks()
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = _other_threads_cpu_ticks()
        if now == before:
            return True
        before = now
    return False


def time_runners(names, task, X, y, batch_size, epochs, repeats):
    """Interleaved timings: each repeat fits every runner once, in turn.

    Returns one row per runner: min and median fit time, all times, and
    the training score (None for the GEMM floor, which predicts nothing).
    """
    times = {name: [] for name in names}
    predicts = {}
    for _ in range(repeats):
        for name in names:
            wait_until_quiet()
            with _seeded():
                t0 = time.perf_counter()
                predicts[name] = FITTERS[name](task, X, y, batch_size, epochs)
                times[name].append(time.perf_counter() - t0)
    return [
        {
            "runner": name,
            "time": min(times[name]),
            "median": statistics.median(times[name]),
            "times": times[name],
            "score": None if predicts[name] is None else _score(task, y, predicts[name](X)),
        }
        for name in names
    ]


def warm_up(runners, log):
    """A tiny fit of each runner, so that lazy imports and one-time
    initializations (torch's op dispatch, skorch's imports) are not timed."""
    for task in ("classification", "regression"):
        X, y = make_data(task, 300)
        for name in runners:
            with _seeded():
                FITTERS[name](task, X, y, 64, 1)
    log("warm-up done")


# Memory: each measurement runs in a fresh child of a fork server (see
# _memory.py); measure_memory is what the child runs.

# Imported once by the fork server: the first torch.optim optimizer of a
# process imports torch._dynamo (~800 modules, 2-4 s on this machine), which
# every child would otherwise repeat.
FORK_PRELOAD = ["torch._dynamo"]


def measure_memory(runner, task, n_samples, batch_size, epochs, threads):
    """Peak RSS above the start of one ``fit``, in this (fresh) process.

    The data is made first, so it is part of the baseline; a warm-up fit on
    200 other rows pays the one-time costs (thread pools, lazy imports) and
    leaves allocator caches the size of a 200-row fit, not of the measured one.
    """
    torch.set_num_threads(threads)
    with threadpool_limits(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        X, y = make_data(task, n_samples)
        X_warm, y_warm = make_data(task, 200)
        with _seeded():
            FITTERS[runner](task, X_warm, y_warm, min(batch_size, 64), 1)
        del X_warm, y_warm
        with _seeded(), PeakRSS() as peak:
            FITTERS[runner](task, X, y, batch_size, epochs)
    return peak.as_dict()


def measure_memory_all(results, threads, server, log):
    """Add ``rss`` (bytes) to every row, each fit in a fresh process of ``server``."""
    for result in results:
        for row in result["rows"]:
            if row.get("missing"):
                continue
            peak = server.call(
                __file__,
                "measure_memory",
                runner=row["runner"],
                task=result["task"],
                n_samples=result["n_samples"],
                batch_size=result["batch_size"],
                epochs=result["epochs"],
                threads=threads,
            )
            row["rss"], row["rss_exact"] = peak["delta"], peak["exact"]
            log(f"  {result['workload']:15s} {row['runner']:8s} "
                f"peak +{peak['delta'] / 2**20:8.1f} MiB")


def run(args, log=print):
    """Timings (MLPs, then RBMs) in this process, then the memory runs.

    Returns ``{"mlp": [...], "rbm": [...]}``, one result per workload.
    """
    runners = [r for r in RUNNERS if r != "skorch" or skorch is not None]
    warm_up(runners, log)
    results = []
    for wname, task, n, batch_size, epochs in workloads(args.quick, args.epochs):
        X, y = make_data(task, n)
        timed = {row["runner"]: row for row in time_runners(
            runners, task, X, y, batch_size, epochs, args.repeats)}
        rows = []
        for name in RUNNERS:
            if name not in timed:
                rows.append({"runner": name, "time": None, "missing": True})
                log(f"  {wname:15s} {name:8s} skorch not installed")
                continue
            row = timed[name]
            rows.append(row)
            score = "" if row["score"] is None else f"score {row['score']:.4f}"
            log(f"  {wname:15s} {name:8s} min {row['time']:8.3f} s  "
                f"median {row['median']:8.3f} s  {score}")
        results.append(
            {
                "workload": wname,
                "task": task,
                "n_samples": n,
                "n_features": X.shape[1],
                "n_outputs": _n_out(task, y),
                "batch_size": batch_size,
                "epochs": epochs,
                "rows": rows,
            }
        )
    rbm_results = bench_rbm.run_timings(args.quick, args.repeats, log)
    # After all the timings: the children would compete with them for the cores.
    if args.memory:
        with ForkServer(preload=FORK_PRELOAD) as server:
            measure_memory_all(results, args.threads, server, log)
            bench_rbm.measure_memory_all(rbm_results, args.threads, server, log)
    return {"mlp": results, "rbm": rbm_results}


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def environment(threads):
    skorch_v = skorch.__version__ if skorch is not None else "not installed"
    return (
        f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores visible, "
        f"torch {torch.__version__} with {threads} thread(s) "
        f"(BLAS of numpy limited to {threads} via threadpoolctl), "
        f"scikit-learn {sklearn.__version__}, sklears_neural "
        f"{sklears_neural.__version__}, skorch {skorch_v}, "
        f"numpy {np.__version__}, Python {platform.python_version()}"
    )


def _loadavg():
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def table_rows(result):
    """Rows of strings: runner, min and median time, /hand, /GEMM floor, score, RSS."""
    rows = {r["runner"]: r for r in result["rows"]}
    hand, gemm = rows["hand"], rows["gemm"]
    metric = "train accuracy" if result["task"] == "classification" else "train R^2"
    header = ["runner", "fit time (s), min", "median", "x hand loop", "x GEMM floor",
              metric, "peak +MiB", "memory x hand loop"]
    out = [header]
    for name in RUNNERS:
        r = rows[name]
        if r.get("missing"):
            out.append([LABELS[name], "skorch not installed", "", "", "", "", "", ""])
            continue
        rss = r.get("rss")
        out.append(
            [
                LABELS[name],
                f"{r['time']:.3f}",
                f"{r['median']:.3f}",
                f"{r['time'] / hand['time']:.2f}",
                f"{r['time'] / gemm['time']:.2f}",
                "-" if r["score"] is None else f"{r['score']:.4f}",
                "n/a" if rss is None else f"{rss / 2**20:.1f}",
                bench_rbm.memory_ratio(rss, hand.get("rss")),
            ]
        )
    return out


def _caption(result):
    return (
        f"{result['workload']}: {result['task']}, {result['n_samples']} x "
        f"{result['n_features']} -> {result['n_outputs']} output(s), batch "
        f"{result['batch_size']}, {result['epochs']} epoch(s)"
    )


def render_text(results):
    lines = []
    for result in results["mlp"]:
        rows = table_rows(result)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines.append(_caption(result))
        for r in rows:
            lines.append("  ".join(c.rjust(w) if i else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))))
    lines.append(bench_rbm.render_text(results["rbm"]))
    return "\n".join(lines)


def _markdown_table(rows):
    return (
        ["| " + " | ".join(rows[0]) + " |",
         "|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|"]
        + ["| " + " | ".join(r) + " |" for r in rows[1:]]
    )


def render_markdown(results, args, argv, env, total_seconds):
    cmd = " ".join(["python benchmarks/bench_training.py", *argv])
    lines = [
        "# Training speed and memory beside the peers",
        "",
        "Regenerate this page (tables and text; 5 to 15 minutes on the 2-core "
        "machine, depending on what else runs there: run it when the machine "
        "is otherwise idle):",
        "",
        "    python benchmarks/bench_training.py --output doc/benchmarks.md",
        "",
        "This run: `benchmarks/bench_training.py` on "
        f"{datetime.date.today().isoformat()} in {total_seconds:.0f} s, as "
        f"`{cmd}`.",
        "",
        f"Machine: {env}.",
        "",
        "Related pages: [inference latency and ONNX export](inference.md), "
        "[scaling to large data and models](scaling.md).",
        "",
        "Every runner trains the same MLP (hidden layers (256, 128), ReLU) with "
        "Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8), no weight decay, the same "
        "batch size and number of epochs, on the same standardized float32 "
        "data (`make_classification` with 10 classes, or `make_regression` "
        "with the target standardized). Times are of `fit` "
        f"only, min and median of {args.repeats}, all runners in one process, "
        "interleaved (each repeat runs every runner once), each started when "
        "the threads of the one before are quiet (BLAS and OpenMP pools "
        "spin-wait after a call returns); the score is on the training data, "
        "computed afterwards. `x hand loop` and `x GEMM floor` divide the min "
        "times by the hand-written loop's and the GEMM floor's.",
        "",
        "* **matrix products only (GEMM floor)**: each step's forward `addmm`s "
        "and backward `mm`s on preallocated buffers and slices of the data, "
        "nothing else (no activation, loss, optimizer or shuffling): what the "
        "arithmetic of a step costs on this machine.",
        "* **raw torch ops, fused Adam**: the same matmuls plus ReLU masks, "
        "loss gradient and torch's fused Adam kernel as raw torch ops on "
        "preallocated tensors, "
        "no autograd or modules; the data is gathered once per epoch in "
        "shuffled order. The whole step's arithmetic, not a reachable target.",
        "* **hand-written PyTorch loop**: `nn.Sequential`, `randperm` per "
        "epoch, index batches, `F.cross_entropy` / `F.mse_loss`, "
        "`torch.optim.Adam`.",
        "* **sklears_neural** and **scikit-learn**: `MLPClassifier` / "
        "`MLPRegressor` with `alpha=0`, `tol=0`, `n_iter_no_change=inf`, "
        "`shuffle=True`, `random_state=0`. scikit-learn computes in the "
        "input's float32 with numpy (BLAS threads limited to the same count).",
        "* **skorch**: `NeuralNetClassifier` / `NeuralNetRegressor` with the "
        "hand loop's module, `CrossEntropyLoss` / `MSELoss`, "
        "`train_split=None`, shuffled batches through its default "
        "`DataLoader`.",
        "",
        "`peak +MiB` is measured apart from the timings, each runner and "
        "workload in a fresh process (forked from a server that has only "
        "imported the libraries): the process makes the data, runs a warm-up "
        "fit on 200 other rows (thread pools, lazy imports), hands the free "
        "pages of its heap back to the kernel (`malloc_trim`, so that memory "
        "the fit reuses from earlier garbage counts), then reports the "
        "kernel's peak resident set size during the measured `fit` minus the "
        "resident set size just before it (the peak mark is reset through "
        "`/proc/self/clear_refs`, so no peak is missed). The data is in the "
        "baseline; copies a runner makes of it are counted. `memory x hand "
        "loop` divides by the hand loop's peak; it shows `-` when either is "
        "under 1 MiB, too little for a ratio to mean anything. "
        "Not counted: the one-time cost of a process's first torch optimizer, "
        "which imports `torch._dynamo` (2-4 s and about 70 MiB on this "
        "machine, for every torch-based runner alike).",
        "",
        "The regression scores differ by loss scale too: the hand loop, the "
        "raw ops and skorch minimise the mean squared error, scikit-learn and "
        "sklears_neural half of it; Adam's normalisation cancels that "
        "factor, so the runs take comparable steps.",
        "",
        "The machine has 2 cores and may be shared: compare the ratios within "
        "one table rather than times across runs, and rerun when the load "
        "average above is much over the thread count.",
        "",
        "## Performance-regression test",
        "",
        "`tests/test_perf.py` times `sklears_neural.MLPClassifier` against the "
        "hand-written loop and the GEMM floor above (the same functions), best "
        "of 3 each, interleaved, with one thread, and fails when ours is more "
        "than 1.15x slower than the hand loop, or more than 2.5x (batch 256) or "
        "3.5x (batch 32) the GEMM floor. It is marked `perf` and deselected by "
        "default (`setup.cfg`); run it on a quiet machine (about a minute):",
        "",
        "    python -m pytest -q tests/test_perf.py -m perf",
    ]
    for result in results["mlp"]:
        lines += ["", f"## {_caption(result)}", ""]
        lines += _markdown_table(table_rows(result))
    lines += bench_rbm.markdown_section(results["rbm"])
    lines.append("")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed fits per runner, interleaved; min and median "
                        "are reported (default 5, 1 with --quick)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch intra-op threads and BLAS threads (default 2)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override every MLP workload's number of epochs")
    parser.add_argument("--quick", action="store_true",
                        help="small data, 1 epoch, 1 repeat: a smoke test")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory runs (the column shows n/a)")
    parser.add_argument("--output", default=None,
                        help="write the markdown page to this file")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    return args


#: Sections other scripts write into the same page (bench_families.py), kept
#: when this one rewrites it.
_OTHER_SECTIONS = "<!-- generated by benchmarks/bench_families.py: begin -->"


def _kept_sections(path):
    """The other scripts' sections of the page at ``path``, from their marker on."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    start = text.find(_OTHER_SECTIONS)
    return "" if start < 0 else "\n" + text[start:]


def main(argv=None, log=print):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        env = environment(args.threads)
        log(env)
        load_before = _loadavg()
        t0 = time.perf_counter()
        with threadpool_limits(args.threads), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            results = run(args, log=log)
        total = time.perf_counter() - t0
        env += (f"; 1-minute load average {load_before} before the run, "
                f"{_loadavg()} after")
    finally:  # main() is also called from the tests: leave torch as found
        torch.set_num_threads(previous_threads)
    log(render_text(results))
    if args.output:
        page = render_markdown(results, args, argv, env, total)
        kept = _kept_sections(args.output)  # read before the file is rewritten
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(page + kept)
        log(f"\nwrote {args.output}")
    return results


if __name__ == "__main__":
    main()
