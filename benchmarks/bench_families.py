"""Time per epoch of the CNN, RNN, Transformer and bring-your-own families.

Each family's network is trained on the same data, from the same initial
weights, with the same optimizer (Adam, lr 1e-3, betas 0.9/0.999, eps 1e-8,
no weight decay), batch size 128, float32 and shuffled batches, by:

``hand``
    The loop a competent PyTorch user writes: the data as tensors in
    memory, ``randperm`` per epoch, index batches, ``zero_grad``, forward,
    ``F.cross_entropy``, ``backward``, ``step``, with ``torch.optim.Adam``'s
    defaults. Sequences of one length go to the network without lengths.
``hand + lengths``
    (sequence families only) The same loop calling ``module(x, lengths)``
    as our estimators do: it tells what packing (RNN) or padding masks
    (Transformer) cost on sequences that need neither.
``sklears``
    Our estimator (``CNNClassifier``, ``RNNClassifier``,
    ``TransformerClassifier``, ``NeuralNetClassifier``) with ``alpha=0``
    (the same objective), ``tol=0`` and ``n_iter_no_change=inf`` (every
    epoch runs), ``random_state=0``.
``skorch``
    ``skorch.NeuralNetClassifier`` given the module instance, with
    ``CrossEntropyLoss``, ``train_split=None``, shuffled batches through its
    default ``DataLoader``, ``verbose=0`` (reported as missing when skorch
    cannot be imported).

Workloads, all on scikit-learn's digits (1,797 samples, pixels / 16,
float32, 15 batches per epoch):

``CNN``
    ``CNNClassifier``'s default ``ConvNet`` (two stages of two 3x3
    convolutions with batch norm, 32 then 64 channels, max pooling, global
    average pooling) on ``(1, 8, 8)`` images.
``RNN``
    ``RNNClassifier``'s ``RecurrentNet``: one LSTM layer, hidden 64, last
    state, on the images read row by row, ``(n, 8, 8)`` sequences.
``Transformer``
    ``TransformerClassifier``'s default ``TransformerNet`` (d_model 64, 4
    heads, 2 pre-LN layers, feed-forward 128, dropout 0.1, sinusoidal
    positions, mean pooling) on the same sequences.
``BYO MLP``
    ``NeuralNetClassifier`` with a user's module (:class:`SmallMLP`, 64 ->
    128 -> 64 -> 10, ReLU) on the 64 pixels.

Our estimator's initial weights (drawn from its ``random_state``) are read
by a callback when training begins and loaded into the hand loops' and
skorch's copies of the module, so every runner starts from them (a strict
``load_state_dict``: the architectures are the same tensor for tensor).

Timing: our estimator and skorch each run a fit of ``--epochs`` epochs with
a clock callback; at the end of each of their epochs the callback records
that epoch's time (from the end of the previous one, so each library's
per-epoch work counts, its setup before the first epoch does not), then runs
one epoch of each hand loop, timed on its own. The hand loops' epochs thus
alternate with ours and skorch's, and a change in the machine's load hits
them alike within a second. The first epoch of every fit and loop is a
warm-up and is dropped; the table gives the median of the others over all
repeats (the order of ours and skorch rotates from repeat to repeat). Thread
counts are set with ``torch.set_num_threads`` (and threadpoolctl for BLAS).

Agreement: before the timings, each runner trains one epoch *without*
shuffling (dropout off in the Transformer) from the same weights; the
largest difference between the outputs (logits, on the training data) of
the hand loop's network and ours (and skorch's) is reported, next to how
far that epoch moved the hand loop's outputs. Float rounding gives
differences of ~1e-6; a different computation (another loss, learning rate,
batch split) one of the size of the move.

Usage::

    python benchmarks/bench_families.py                     # 1 and 2 threads
    python benchmarks/bench_families.py --output doc/benchmarks.md
    python benchmarks/bench_families.py --threads 1 --repeats 9
    python benchmarks/bench_families.py --profile           # + cProfile of ours
    python benchmarks/bench_families.py --quick             # smoke test, seconds
"""

import argparse
import cProfile
import datetime
import io
import os
import platform
import pstats
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

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
from sklears_neural.callbacks import Callback  # noqa: E402
from sklears_neural.models.cnn import CNNClassifier  # noqa: E402
from sklears_neural.models.neural_net import NeuralNetClassifier  # noqa: E402
from sklears_neural.models.rnn import RNNClassifier  # noqa: E402
from sklears_neural.models.transformer import TransformerClassifier  # noqa: E402
from sklears_neural.nn.conv import ConvNet  # noqa: E402
from sklears_neural.nn.recurrent import RecurrentNet  # noqa: E402
from sklears_neural.nn.transformer import TransformerNet  # noqa: E402

from _machine import cpu_model, write_section  # noqa: E402

try:  # optional peer
    import skorch
    from skorch.callbacks import Callback as SkorchCallback
except ImportError:  # pragma: no cover - depends on the environment
    skorch = None
    SkorchCallback = object

LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
BATCH = 128
SEED = 0
N_CLASSES = 10
RUNNERS = ("hand", "hand_lengths", "sklears", "skorch")
LABELS = {
    "hand": "hand loop",
    "hand_lengths": "hand + lengths",
    "sklears": "sklears_neural",
    "skorch": "skorch",
}

BEGIN = "<!-- generated by benchmarks/bench_families.py: begin -->"
END = "<!-- generated by benchmarks/bench_families.py: end -->"


# --------------------------------------------------------------------------
# The user's module of the bring-your-own workload
# --------------------------------------------------------------------------


class SmallMLP(nn.Module):
    """A user's MLP: ``n_features_in -> 128 -> 64 -> n_outputs``, ReLU."""

    def __init__(self, n_features_in=64, n_outputs=10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features_in, 128), nn.ReLU(),
            nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, n_outputs),
        )

    def forward(self, x):
        return self.net(x)


# --------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------


def _fit_settings(epochs, shuffle, callbacks):
    """Our estimators' settings: the hand loop's objective and optimizer."""
    return dict(
        solver="adam", alpha=0.0, batch_size=BATCH, learning_rate_init=LR,
        beta_1=BETAS[0], beta_2=BETAS[1], epsilon=EPS, max_iter=epochs,
        tol=0.0, n_iter_no_change=np.inf, shuffle=shuffle, random_state=SEED,
        precision="float32", callbacks=callbacks,
    )


def _transformer_kwargs(dropout):
    """``TransformerClassifier``'s default network, as ``TransformerNet`` arguments."""
    defaults = TransformerClassifier().get_params()
    names = ("d_model", "num_heads", "num_layers", "dim_feedforward", "activation",
             "norm_first", "positional", "max_len", "pooling")
    kwargs = {name: defaults[name] for name in names}
    kwargs["dropout"] = defaults["dropout"] if dropout is None else dropout
    return kwargs


def _rnn_defaults():
    params = RNNClassifier().get_params()
    names = ("cell", "hidden_size", "num_layers", "pooling")
    return {name: params[name] for name in names}


@dataclass
class Family:
    """One workload: its estimator, the same network built by hand, its data.

    ``estimator(settings, deterministic)`` and ``module(deterministic)``:
    ``deterministic`` turns dropout off (the agreement check).
    """

    name: str
    description: str
    shape: tuple
    sequence: bool
    estimator: Callable
    module: Callable


def _families():
    rnn = _rnn_defaults()
    return {
        "cnn": Family(
            "CNN",
            "CNNClassifier's default ConvNet, (1, 8, 8) images",
            (1, 8, 8),
            False,
            lambda settings, deterministic: CNNClassifier(**settings),
            lambda deterministic: ConvNet([1, 8, 8], N_CLASSES),
        ),
        "rnn": Family(
            "RNN",
            f"RNNClassifier, {rnn['cell'].upper()} hidden {rnn['hidden_size']}, "
            "(8, 8) sequences",
            (8, 8),
            True,
            lambda settings, deterministic: RNNClassifier(**settings),
            lambda deterministic: RecurrentNet(
                8, N_CLASSES, rnn["cell"], hidden_size=rnn["hidden_size"],
                num_layers=rnn["num_layers"], pooling=rnn["pooling"],
            ),
        ),
        "transformer": Family(
            "Transformer",
            "TransformerClassifier's default TransformerNet, (8, 8) sequences",
            (8, 8),
            True,
            lambda settings, deterministic: TransformerClassifier(
                **settings, **({"dropout": 0.0} if deterministic else {})
            ),
            lambda deterministic: TransformerNet(
                8, N_CLASSES, **_transformer_kwargs(0.0 if deterministic else None)
            ),
        ),
        "byo_mlp": Family(
            "BYO MLP",
            "NeuralNetClassifier(SmallMLP): 64 -> 128 -> 64 -> 10, flat pixels",
            (64,),
            False,
            lambda settings, deterministic: NeuralNetClassifier(SmallMLP, **settings),
            lambda deterministic: SmallMLP(64, N_CLASSES),
        ),
    }


FAMILIES = _families()


def make_data(n_samples=None):
    """Digits as float32 pixels in [0, 1] and int64 labels (the first ``n_samples``)."""
    X, y = load_digits(return_X_y=True)
    if n_samples is not None:
        X, y = X[:n_samples], y[:n_samples]
    return np.ascontiguousarray(X / 16.0, dtype=np.float32), y.astype(np.int64)


# --------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------


def _fresh_module(family, state, deterministic=False):
    module = family.module(deterministic)
    module.load_state_dict(state, strict=True)
    return module


class HandLoop:
    """The hand-written loop over tensors in memory, one epoch per :meth:`epoch`.

    Parameters
    ----------
    family : Family
    X : ndarray of shape (n_samples, *family.shape), float32
    y : ndarray of shape (n_samples,), int64
    state : dict
        Initial ``state_dict`` of the network.
    shuffle : bool, default=True
    deterministic : bool, default=False
        Dropout off.
    with_lengths : bool, default=False
        Call ``model(x, lengths)`` (every length the full one), as our
        sequence estimators do.
    """

    def __init__(self, family, X, y, state, *, shuffle=True, deterministic=False,
                 with_lengths=False):
        self.model = _fresh_module(family, state, deterministic)
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        n = len(self.X)
        self.lengths = (torch.full((n,), X.shape[1], dtype=torch.int64)
                        if with_lengths else None)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, betas=BETAS,
                                    eps=EPS)
        self.gen = torch.Generator().manual_seed(SEED)
        self.shuffle = shuffle

    def epoch(self):
        model, opt, X, y, lengths = self.model, self.opt, self.X, self.y, self.lengths
        n = len(X)
        model.train()
        if self.shuffle:
            order = torch.randperm(n, generator=self.gen)
        else:
            order = torch.arange(n)
        for start in range(0, n, BATCH):
            idx = order[start:start + BATCH]
            opt.zero_grad()
            out = model(X[idx]) if lengths is None else model(X[idx], lengths[idx])
            loss = F.cross_entropy(out, y[idx])
            loss.backward()
            opt.step()


class _Clock:
    """Epoch times of the runner it is attached to, hand-loop epochs in between.

    At the end of each of the runner's epochs it records that epoch's time
    (since the start of training or the end of the hand epochs run last),
    then runs one epoch of each hand loop in ``loops``, timed on its own.
    The runner's and the hand loops' epochs thus alternate, and a change in
    the machine's load hits both within a second. ``initial_state`` keeps
    the module's state when training begins (our estimators only).
    """

    def __init__(self, loops=None):
        self.loops = loops
        self.times = []
        self.loop_times = {name: [] for name in loops or {}}
        self.initial_state = None
        self._mark = None

    def __deepcopy__(self, memo):
        # Our estimators train with deep copies of their callbacks: this
        # clock (and its hand loops) must stay the object the benchmark reads.
        return self

    def _start(self):
        self._mark = time.perf_counter()

    def _tick(self):
        self.times.append(time.perf_counter() - self._mark)
        names = list(self.loop_times)
        if len(self.times) % 2 == 0:  # alternate which hand loop goes first
            names.reverse()
        for name in names:
            t0 = time.perf_counter()
            self.loops[name].epoch()
            self.loop_times[name].append(time.perf_counter() - t0)
        self._mark = time.perf_counter()


class _Stamps(_Clock, Callback):
    """The clock as a callback of our estimators."""

    def on_train_begin(self, trainer, **kwargs):
        self.initial_state = {k: v.detach().clone()
                              for k, v in trainer.module.state_dict().items()}
        self._start()

    def on_epoch_end(self, trainer, **kwargs):
        self._tick()


class _SkorchStamps(_Clock, SkorchCallback):
    """The clock as a skorch callback."""

    def initialize(self):
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self._start()

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self._tick()


def fit_ours(family, X, y, epochs, shuffle=True, deterministic=False, loops=None):
    """Our estimator; returns (module, clock), hand loops stepped in between."""
    clock = _Stamps(loops)
    est = family.estimator(_fit_settings(epochs, shuffle, [clock]), deterministic)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    return est.module_, clock


def fit_skorch(family, X, y, epochs, state, shuffle=True, deterministic=False,
               loops=None):
    """skorch's NeuralNetClassifier around an instance of the same module."""
    clock = _SkorchStamps(loops)
    net = skorch.NeuralNetClassifier(
        _fresh_module(family, state, deterministic),
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        optimizer__betas=BETAS,
        optimizer__eps=EPS,
        lr=LR,
        batch_size=BATCH,
        max_epochs=epochs,
        train_split=None,
        iterator_train__shuffle=shuffle,
        callbacks=[("clock", clock)],
        verbose=0,
    )
    net.fit(X, y)
    return net.module_, clock


def fit_hand(family, X, y, epochs, state, shuffle=True, deterministic=False,
             with_lengths=False):
    """The hand loop on its own; returns (module, epoch times)."""
    loop = HandLoop(family, X, y, state, shuffle=shuffle, deterministic=deterministic,
                    with_lengths=with_lengths)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        loop.epoch()
        times.append(time.perf_counter() - t0)
    return loop.model, times


def _runners(family):
    names = [r for r in RUNNERS if r != "hand_lengths" or family.sequence]
    return [r for r in names if r != "skorch" or skorch is not None]


def _initial_state(family, X, y, deterministic=False):
    """Our estimator's initial weights (one epoch of it runs to read them)."""
    _, clock = fit_ours(family, X, y, 1, deterministic=deterministic)
    return clock.initial_state


def _fit(runner, family, X, y, epochs, state, shuffle=True, deterministic=False,
         loops=None):
    """One fit of ``runner``; returns (module, clock or epoch times).

    ``loops``: hand loops to step between the epochs of ours or skorch.
    """
    # skorch, torch's dropout and the hand loops draw from the global RNG:
    # a seeded fork of it, so that the caller's stream is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        if runner == "sklears":
            return fit_ours(family, X, y, epochs, shuffle, deterministic, loops)
        if runner == "skorch":
            return fit_skorch(family, X, y, epochs, state, shuffle, deterministic,
                              loops)
        return fit_hand(family, X, y, epochs, state, shuffle, deterministic,
                        with_lengths=runner == "hand_lengths")


def _outputs(module, X):
    """The network's outputs (logits) for ``X`` in evaluation mode, float64."""
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(X)).double()


def agreement(family, X, y, epochs=1):
    """One unshuffled epoch of each runner from the same weights, dropout off.

    The runners are compared by their networks' outputs on the training
    data afterwards, not by their weights: parameters that get no gradient
    but rounding noise (the key bias of attention, which softmax ignores)
    take Adam steps of noise that differ between Adam kernels yet change no
    output.

    Returns
    -------
    dict
        ``{runner: max |f_runner(X) - f_hand(X)|}`` for every runner but the
        hand loop, and ``"moved"``: ``max |f_hand(X) - f_initial(X)|``, how
        far the epoch moved the outputs (the scale a real disagreement, such
        as another loss or learning rate, would have).
    """
    state = _initial_state(family, X, y, deterministic=True)
    hand, _ = _fit("hand", family, X, y, epochs, state, shuffle=False,
                   deterministic=True)
    reference = _outputs(hand, X)
    initial = _outputs(_fresh_module(family, state, True), X)
    out = {"moved": float((reference - initial).abs().max())}
    for runner in _runners(family):
        if runner == "hand":
            continue
        module, _ = _fit(runner, family, X, y, epochs, state, shuffle=False,
                         deterministic=True)
        out[runner] = float((_outputs(module, X) - reference).abs().max())
    return out


def _accuracy(module, X, y):
    return float((_outputs(module, X).argmax(1).numpy() == y).mean())


def time_family(family, X, y, epochs, repeats, log):
    """Epoch times of every runner; returns one result dict.

    Each repeat fits ours and skorch (in an order that rotates), and one
    epoch of each hand loop runs after each of their epochs (see
    :class:`_Clock`). The first epoch of every fit and loop is dropped.
    """
    # The initial weights, and a warm-up of every runner (lazy imports,
    # thread pools, allocator caches), untimed.
    state = _initial_state(family, X, y)
    runners = _runners(family)
    for runner in runners:
        _fit(runner, family, X, y, 1, state)
    hands = [r for r in runners if r.startswith("hand")]
    hosts = [r for r in runners if r not in hands]
    epoch_times = {r: [] for r in runners}
    accuracy = {}
    for rep in range(repeats):
        shift = rep % len(hosts)
        for host in hosts[shift:] + hosts[:shift]:
            loops = {name: HandLoop(family, X, y, state,
                                    with_lengths=name == "hand_lengths")
                     for name in hands}
            module, clock = _fit(host, family, X, y, epochs, state, loops=loops)
            if len(clock.times) != epochs:
                raise RuntimeError(f"{host} ran {len(clock.times)} epochs of {epochs}")
            epoch_times[host] += clock.times[1:]
            accuracy[host] = _accuracy(module, X, y)
            for name, loop in loops.items():
                epoch_times[name] += clock.loop_times[name][1:]
                accuracy[name] = _accuracy(loop.model, X, y)
    rows = []
    for runner in runners:
        rows.append({
            "runner": runner,
            "median": statistics.median(epoch_times[runner]),
            "times": epoch_times[runner],
            "accuracy": accuracy[runner],
        })
        log(f"  {family.name:12s} {runner:13s} {1e3 * rows[-1]['median']:8.1f} "
            f"ms/epoch  train accuracy {accuracy[runner]:.3f}")
    return {"family": family, "rows": rows,
            "n_params": sum(p.numel() for p in family.module(False).parameters())}


# --------------------------------------------------------------------------
# Profile of our estimator
# --------------------------------------------------------------------------


class _Profiled(Callback):
    """Runs a cProfile profiler from the first epoch to the end of training."""

    def __init__(self, profiler=None):
        self.profiler = profiler

    def __deepcopy__(self, memo):
        return self  # the estimator's copy must be the benchmark's profiler

    def on_train_begin(self, trainer, **kwargs):
        self.profiler.enable()

    def on_train_end(self, trainer, **kwargs):
        self.profiler.disable()


def profile_ours(family, X, y, epochs, top=25):
    """cProfile of one fit of ours, training only: the top functions by own time.

    Setup before the first epoch (validation, building the network) is
    left out. Divided by the number of batches, the times give the core's
    per-batch overhead next to the hand loop's epoch.
    """
    fit_ours(family, X, y, 1)  # warm
    profiler = cProfile.Profile()
    est = family.estimator(_fit_settings(epochs, True, [_Profiled(profiler)]), False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    n_batches = epochs * -(-len(X) // BATCH)
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(top)
    stream.write(f"\n({epochs} epochs, {n_batches} batches: divide by {n_batches} "
                 "for per-batch seconds; cProfile slows Python-heavy code more "
                 "than torch kernels.)\n")
    return stream.getvalue()


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def environment():
    skorch_v = skorch.__version__ if skorch is not None else "not installed"
    return (
        f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores visible, "
        f"torch {torch.__version__}, sklears_neural {sklears_neural.__version__}, "
        f"skorch {skorch_v}, numpy {np.__version__}, Python {platform.python_version()}"
    )


def _loadavg():
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def _ms(seconds):
    return f"{1e3 * seconds:.1f}"


def _difference(x):
    return f"{x:.0e}" if x else "0"


HEADER = ["family", "hand loop (ms/epoch)", "hand + lengths", "sklears_neural",
          "skorch", "ours / hand", "skorch / hand", "max output diff vs hand"]


def table_rows(results, agreements=None):
    """Rows of strings, one per family (see ``HEADER``)."""
    out = [list(HEADER)]
    for result in results:
        family = result["family"]
        rows = {r["runner"]: r for r in result["rows"]}
        hand = rows["hand"]["median"]

        def cell(name):
            return _ms(rows[name]["median"]) if name in rows else "-"

        def ratio(name):
            return f"{rows[name]['median'] / hand:.2f}" if name in rows else "-"

        diffs = "-"
        if agreements is not None and family.name in agreements:
            a = agreements[family.name]
            short = {"sklears": "ours", "hand_lengths": "+lengths"}
            diffs = ", ".join(
                f"{short.get(k, k)} {_difference(v)}"
                for k, v in a.items() if k != "moved"
            ) + f"; the epoch moved them {a['moved']:.0e}"
        out.append([family.name, cell("hand"), cell("hand_lengths"), cell("sklears"),
                    cell("skorch"), ratio("sklears"), ratio("skorch"), diffs])
    return out


def render_text(results_by_threads, agreements):
    lines = []
    for threads, results in results_by_threads.items():
        rows = table_rows(results, agreements)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["", f"{threads} thread(s)"]
        for r in rows:
            lines.append("  ".join(c.rjust(w) if 0 < i < 7 else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def _markdown_table(rows):
    return (["| " + " | ".join(rows[0]) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 2) + ["---"]) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def summary(results):
    """One sentence on a table: which families meet the targets."""
    met, slow, behind, lengths = [], [], [], []
    for result in results:
        rows = {r["runner"]: r["median"] for r in result["rows"]}
        name = result["family"].name
        ours = rows["sklears"] / rows["hand"]
        (met if ours <= 1.05 else slow).append(f"{name} {ours:.2f}x")
        if "skorch" in rows and rows["sklears"] >= rows["skorch"]:
            behind.append(name)
        if "hand_lengths" in rows:
            change = 100 * (rows["hand_lengths"] / rows["hand"] - 1)
            lengths.append(f"{name} {change:+.0f}%")
    text = (f"Within 1.05x of the hand loop: {', '.join(met) or 'none'}; "
            f"slower: {', '.join(slow) or 'none'}.")
    if behind:
        text += f" Not ahead of skorch: {', '.join(behind)}."
    elif results and "skorch" in {r["runner"] for r in results[0]["rows"]}:
        text += " Ahead of skorch in every family."
    if lengths:
        text += (" Passing lengths to the network changes the hand loop's epoch by "
                 f"{', '.join(lengths)}.")
    return text


def render_markdown(results_by_threads, agreements, args, argv, env, total_seconds):
    """The generated section, between the markers."""
    cmd = " ".join(["python benchmarks/bench_families.py", *argv])
    first = next(iter(results_by_threads.values()))
    epochs_timed = args.epochs - 1
    n_samples = len(make_data(args.n_samples)[0])
    lines = [
        BEGIN,
        "## Families: time per epoch against a hand loop and skorch",
        "",
        f"This run: `{cmd}` on {datetime.date.today().isoformat()}, "
        f"{total_seconds:.0f} s, one run. Machine: {env}.",
        "",
        f"Each family's network is trained on digits ({n_samples:,} samples, "
        f"pixels / 16, float32, {-(-n_samples // BATCH)} batches of "
        f"{BATCH} per epoch, shuffled) with Adam (lr 1e-3) from the same initial "
        "weights (our estimator's, loaded into the other runners' copies of the "
        "module) by a hand-written PyTorch loop (tensors in memory, `randperm`, "
        "index batches, `zero_grad`, forward, `F.cross_entropy`, `backward`, "
        "`step`; sequences without lengths), the same loop calling "
        "`module(x, lengths)` as our estimators do (sequence families), our "
        "estimator (`alpha=0`, `tol=0`, every epoch runs) and "
        "`skorch.NeuralNetClassifier` (`train_split=None`, module instance, "
        "`CrossEntropyLoss`). Networks: "
        + "; ".join(f"**{r['family'].name}**: {r['family'].description} "
                    f"({r['n_params']:,} parameters)" for r in first) + ".",
        "",
        f"Times are the median time per epoch in milliseconds, after a warm-up "
        f"epoch in each fit: {epochs_timed} epochs x {args.repeats} repeats for "
        "ours and skorch, and one epoch of each hand loop after each of their "
        "epochs (a callback runs it, timed on its own), so hand and library "
        "epochs alternate and load on the shared machine hits them alike. An "
        "epoch's time runs from the end of the previous one: each library's "
        "per-epoch work counts, its setup before the first epoch does not. "
        "Read differences of a few percent as noise. The target is `ours / "
        "hand` at most 1.05 and below `skorch / hand`. The last "
        "column checks that the runners compute the same thing: after one "
        "unshuffled epoch from the same weights (dropout off), the largest "
        "difference of the network's outputs (logits on the training data) "
        "from the hand loop's, next to how far that epoch moved the hand "
        "loop's outputs.",
        "",
    ]
    for threads, results in results_by_threads.items():
        lines += [f"### torch.set_num_threads({threads})", ""]
        lines += _markdown_table(table_rows(results, agreements))
        lines += ["", summary(results), ""]
    lines += [
        "Our estimators update with torch's fused Adam kernel and the hand "
        "loop with `torch.optim.Adam`'s default; both give the same steps (to "
        "rounding, see the last column). The `hand + lengths` column isolates "
        "what calling the network with lengths costs (packed sequences in the "
        "LSTM, padding masks in the Transformer) on sequences that are all the "
        "same length; our estimators pass no lengths for a batch whose "
        "sequences all fill it (`SequenceData.batch`), so they skip that cost.",
        END,
    ]
    return "\n".join(lines)


def write_output(path, generated):
    """Replace this benchmark's section of ``path``, or append it (the rest is kept)."""
    write_section(path, generated, BEGIN, END)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to time "
                        "(default: 1 2; 1 with --quick)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per fit, the first one untimed "
                        "(default 6, 2 with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="fits of ours and of skorch per workload, the hand "
                        "loops running between their epochs (default 5, 1 with "
                        "--quick)")
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES),
                        default=list(FAMILIES), help="workloads to run (default: all)")
    parser.add_argument("--n-samples", type=int, default=None,
                        help="first rows of digits to use "
                        "(default all 1797; 384 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="384 samples, 2 epochs, 1 repeat, 1 thread: a smoke test")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of one fit of ours per family")
    parser.add_argument("--output", default=None,
                        help="write the section into this markdown file (between "
                        "its markers, else appended)")
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = [1] if args.quick else [1, 2]
    if args.epochs is None:
        args.epochs = 2 if args.quick else 6
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.n_samples is None and args.quick:
        args.n_samples = 384
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is not timed")
    return args


def run(args, log=print):
    """Agreement checks, then the timings for each thread count.

    Returns
    -------
    dict
        ``"agreement"``: ``{family name: {runner: max diff, "moved": ...}}``;
        ``"timings"``: ``{threads: [result per family]}``; ``"profiles"``:
        ``{family name: text}`` with ``--profile``.
    """
    X, y = make_data(args.n_samples)
    families = [FAMILIES[name] for name in args.families]
    data = {f.name: (X.reshape(-1, *f.shape), y) for f in families}
    agreements, timings, profiles = {}, {}, {}
    for family in families:
        agreements[family.name] = agreement(family, *data[family.name])
        log(f"  {family.name:12s} agreement " + ", ".join(
            f"{k} {v:.1e}" for k, v in agreements[family.name].items()))
    for threads in args.threads:
        torch.set_num_threads(threads)
        with threadpool_limits(threads):
            log(f"{threads} thread(s)")
            timings[threads] = [
                time_family(f, *data[f.name], args.epochs, args.repeats, log)
                for f in families
            ]
            if args.profile:
                for family in families:
                    profiles[f"{family.name}, {threads} thread(s)"] = profile_ours(
                        family, *data[family.name], args.epochs)
    return {"agreement": agreements, "timings": timings, "profiles": profiles}


def main(argv=None, log=print):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    previous_threads = torch.get_num_threads()
    try:
        env = environment()
        log(env)
        load_before = _loadavg()
        t0 = time.perf_counter()
        results = run(args, log=log)
        total = time.perf_counter() - t0
        env += (f"; 1-minute load average {load_before} before the run, "
                f"{_loadavg()} after")
    finally:  # main() is also called from the tests: leave torch as found
        torch.set_num_threads(previous_threads)
    log(render_text(results["timings"], results["agreement"]))
    for name, text in results["profiles"].items():
        log(f"\ncProfile of sklears_neural, {name}\n{text}")
    if args.output:
        write_output(args.output, render_markdown(
            results["timings"], results["agreement"], args, argv, env, total))
        log(f"\nwrote {args.output}")
    return results


if __name__ == "__main__":
    main()
