"""Fit time and pseudo-likelihood of our BernoulliRBM beside scikit-learn's.

Both estimators get the same data (float32; ``--dtype float64`` for float64)
and the same ``n_components``,
``learning_rate``, ``batch_size``, ``n_iter`` and ``random_state=0``:

``digits``
    ``load_digits`` scaled to [0, 1] (divided by 16), 1797 x 64, with the
    settings of scikit-learn's RBM example (100 components, learning rate
    0.06, batches of 10, 10 sweeps): many tiny batches, where the cost of a
    torch call rather than the arithmetic sets the pace.
``binary``
    A generated binary set, 20000 x 256: 20 random prototypes, each bit of a
    sample flipped with probability 0.1; 256 components, learning rate 0.05,
    batches of 100, 5 sweeps: fewer, larger matrix products.

Only ``fit`` is timed, ``--repeats`` times per runner, the runners
interleaved (one fit of each per round, so a burst of load on a shared
machine hits both) with a pause between fits, in which the BLAS threads of
the previous fit stop spinning; tables give the min and the median. The
score is the mean of
``score_samples`` on the training data (the pseudo-likelihood: each library
flips one random bit per sample with its own random stream, so the two means
differ by sampling noise as well as by the fitted weights). The two libraries
draw their Gibbs samples from different generators (torch's, numpy's), so
their chains and weights differ even at the same seed.

Memory ("peak +MiB") is measured as in ``bench_training.py``: each fit in a
fresh process, after a warm-up fit on 100 other rows, peak resident set size
during ``fit`` minus the resident set size before it.

This page's tables are part of doc/benchmarks.md (``bench_training.py``
writes them); run alone, the script prints them.

Usage::

    python benchmarks/bench_rbm.py              # both data sets, 3 repeats
    python benchmarks/bench_rbm.py --quick      # smoke test, a few seconds
    python benchmarks/bench_rbm.py --dtype float64   # the data as float64
"""

import argparse
import os
import sys
import time

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_digits
from sklearn.neural_network import BernoulliRBM as SkBernoulliRBM
from threadpoolctl import threadpool_limits

# Run as a file or loaded by path: the folder holds the helpers, the
# checkout's root holds sklears_neural when it is not installed.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.append(os.path.dirname(_HERE))

import sklears_neural  # noqa: E402
from sklears_neural import BernoulliRBM  # noqa: E402

from _memory import ForkServer, PeakRSS  # noqa: E402

SEED = 0
RUNNERS = ("sklears", "sklearn")
LABELS = {
    "sklears": f"sklears_neural {sklears_neural.__version__}",
    "sklearn": f"scikit-learn {sklearn.__version__}",
}
ESTIMATORS = {"sklears": BernoulliRBM, "sklearn": SkBernoulliRBM}


def workloads(quick=False):
    """``(name, rows, params)`` of each workload; ``rows`` None means all."""
    if quick:
        return [
            ("digits", 500, dict(n_components=32, learning_rate=0.06,
                                 batch_size=10, n_iter=1)),
            ("binary", 2000, dict(n_components=64, learning_rate=0.05,
                                  batch_size=100, n_iter=1)),
        ]
    return [
        ("digits", None, dict(n_components=100, learning_rate=0.06,
                              batch_size=10, n_iter=10)),
        ("binary", 20_000, dict(n_components=256, learning_rate=0.05,
                                batch_size=100, n_iter=5)),
    ]


def make_data(name, rows=None, dtype=np.float32):
    """Data in [0, 1] of workload ``name``, ``rows`` rows, of ``dtype``.

    Both libraries compute in the dtype of ``X`` (float32 or float64).
    """
    if name == "digits":
        X = load_digits().data / 16.0
        return np.ascontiguousarray(X[:rows], dtype=dtype)
    rng = np.random.default_rng(SEED)
    n, n_features, n_prototypes = rows or 20_000, 256, 20
    prototypes = rng.random((n_prototypes, n_features)) < 0.5
    flips = rng.random((n, n_features)) < 0.1
    X = prototypes[rng.integers(0, n_prototypes, n)] ^ flips
    return X.astype(dtype)


def fit(runner, X, params):
    return ESTIMATORS[runner](random_state=SEED, **params).fit(X)


#: Seconds between two timed fits: OpenBLAS's threads spin for a while
#: after a call returns, and slowed the next runner by 40% in one table.
PAUSE = 0.2


def time_runners(X, params, repeats):
    """Fit times of every runner, interleaved; min, median, pseudo-likelihood."""
    times = {runner: [] for runner in RUNNERS}
    models = {}
    for _ in range(repeats):
        for runner in RUNNERS:
            time.sleep(PAUSE)
            t0 = time.perf_counter()
            models[runner] = fit(runner, X, params)
            times[runner].append(time.perf_counter() - t0)
    return [
        {
            "runner": runner,
            "time": min(times[runner]),
            "median": float(np.median(times[runner])),
            "times": times[runner],
            "score": float(np.mean(models[runner].score_samples(X))),
        }
        for runner in RUNNERS
    ]


def run_timings(quick, repeats, log=print, dtype=np.float32):
    """Time both runners on every workload, in this process."""
    for runner in RUNNERS:  # one-time costs (torch's first calls) untimed
        fit(runner, make_data("binary", 100, dtype), dict(n_components=8, n_iter=1))
    results = []
    for name, rows, params in workloads(quick):
        X = make_data(name, rows, dtype)
        result = {"workload": name, "data_rows": rows, "n_samples": X.shape[0],
                  "n_features": X.shape[1], "params": params,
                  "dtype": np.dtype(dtype).name, "rows": []}
        for row in time_runners(X, params, repeats):
            result["rows"].append(row)
            log(f"  rbm {name:8s} {row['runner']:8s} min {row['time']:8.3f} s  "
                f"median {row['median']:8.3f} s  "
                f"pseudo-likelihood {row['score']:.3f}")
        results.append(result)
    return results


def measure_memory(runner, name, rows, params, threads, dtype="float32"):
    """Peak RSS above the start of one ``fit``, in this (fresh) process."""
    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        X = make_data(name, rows, dtype)
        fit(runner, make_data("binary", 100, dtype), dict(params, n_iter=1))  # warm-up
        with PeakRSS() as peak:
            fit(runner, X, params)
    return peak.as_dict()


def measure_memory_all(results, threads, server, log=print):
    """Add ``rss`` (bytes) to every row, each fit in a fresh process of ``server``."""
    for result in results:
        for row in result["rows"]:
            peak = server.call(__file__, "measure_memory", runner=row["runner"],
                               name=result["workload"], rows=result["data_rows"],
                               params=result["params"], threads=threads,
                               dtype=result.get("dtype", "float32"))
            row["rss"] = peak["delta"]
            log(f"  rbm {result['workload']:8s} {row['runner']:8s} "
                f"peak +{peak['delta'] / 2**20:8.1f} MiB")


def caption(result):
    p = result["params"]
    return (
        f"BernoulliRBM, {result['workload']}: {result['n_samples']} x "
        f"{result['n_features']}, {p['n_components']} components, learning "
        f"rate {p['learning_rate']}, batch {p['batch_size']}, {p['n_iter']} "
        f"sweep(s), {result.get('dtype', 'float32')}"
    )


def table_rows(result):
    """Rows of strings: runner, times (min, median), their ratios to
    scikit-learn's, score, RSS, RSS ratio."""
    rows = {r["runner"]: r for r in result["rows"]}
    ref = rows["sklearn"]
    header = ["runner", "fit time, min (s)", "median (s)", "x scikit-learn (min)",
              "x scikit-learn (median)", "pseudo-likelihood", "peak +MiB",
              "memory x scikit-learn"]
    out = [header]
    for name in RUNNERS:
        r = rows[name]
        rss = r.get("rss")
        out.append([
            LABELS[name],
            f"{r['time']:.3f}",
            f"{r.get('median', r['time']):.3f}",
            f"{r['time'] / ref['time']:.2f}",
            f"{r.get('median', r['time']) / ref.get('median', ref['time']):.2f}",
            f"{r['score']:.3f}",
            "n/a" if rss is None else f"{rss / 2**20:.1f}",
            memory_ratio(rss, ref.get("rss")),
        ])
    return out


def memory_ratio(rss, reference):
    """``rss / reference`` as text; '-' below 1 MiB, where RSS cannot resolve it."""
    if rss is None or reference is None:
        return "n/a"
    if min(rss, reference) < 2**20:
        return "-"
    return f"{rss / reference:.2f}"


def render_text(results):
    lines = []
    for result in results:
        rows = table_rows(result)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["", caption(result)]
        for r in rows:
            lines.append("  ".join(c.rjust(w) if i else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def markdown_section(results):
    """The RBM part of doc/benchmarks.md, as a list of lines."""
    lines = [
        "",
        "## BernoulliRBM beside scikit-learn's",
        "",
        "`sklears_neural.BernoulliRBM` and `sklearn.neural_network.BernoulliRBM` "
        "with the same `n_components`, `learning_rate`, `batch_size`, `n_iter` "
        "and `random_state=0`, on the same data, of the dtype in each table's "
        "caption (both libraries compute in it): `digits` is "
        "`load_digits` divided by 16 (the settings of scikit-learn's RBM "
        "example), `binary` 20 random binary prototypes with each bit flipped "
        "with probability 0.1. Fit times are the min and the median of "
        "`--repeats` fits per runner, the runners interleaved with a pause "
        "between fits (`benchmarks/bench_rbm.py`); "
        "`pseudo-likelihood` is the mean of `score_samples` on the training "
        "data. The libraries draw Gibbs samples from different generators "
        "(torch's, numpy's), so their chains and weights differ at the same "
        "seed, and the pseudo-likelihood flips a random bit per sample with "
        "each library's own stream: read a difference of a few tenths as noise.",
    ]
    for result in results:
        rows = table_rows(result)
        lines += ["", f"### {caption(result)}", ""]
        lines.append("| " + " | ".join(rows[0]) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed fits per runner, the best is kept "
                        "(default 3, 1 with --quick)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch intra-op threads and BLAS threads (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="small data, one sweep, 1 repeat: a smoke test")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory measurements")
    parser.add_argument("--dtype", choices=("float32", "float64"),
                        default="float32",
                        help="dtype of the data, which both libraries compute "
                        "in (default float32)")
    parser.add_argument("--markdown", action="store_true",
                        help="also print the doc/benchmarks.md section")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    return args


def main(argv=None, log=print):
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(args.threads):
            results = run_timings(args.quick, args.repeats, log,
                                  getattr(args, "dtype", "float32"))
        if args.memory:
            with ForkServer() as server:
                measure_memory_all(results, args.threads, server, log)
    finally:  # main() is also called from the tests: leave torch as found
        torch.set_num_threads(previous_threads)
    log(render_text(results))
    if getattr(args, "markdown", False):
        log("\n".join(markdown_section(results)))
    return results


if __name__ == "__main__":
    main()
