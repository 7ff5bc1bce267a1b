"""Prediction latency of our MLPs beside eager torch, ONNX Runtime and scikit-learn.

One process times ``predict`` on batches of 1, 100 and 10,000 rows for one
network, an MLP 64 -> 256 -> 128 -> 10 with ReLU and float32 weights,
trained briefly by scikit-learn and copied into ours with
``MLPClassifier.from_sklearn``, so every runner holds the same weights:

``sklears``
    ``MLPClassifier.predict`` with ``inference_backend="torch"``: input
    check, forward pass (the float64 plan or torch, see
    ``sklears_neural.core.inference``), softmax and labels in float64.
``sklears_onnxruntime``
    The same with ``inference_backend="onnxruntime"`` (the export happens in
    the warm-up, untimed). Reported as missing without onnxruntime.
``eager``
    ``with torch.no_grad(): module(torch.from_numpy(x))`` on the same module:
    logits only, no checks. The baseline of the ratios.
``inference_mode``
    The same under ``torch.inference_mode()``.
``sklearn``
    ``sklearn.neural_network.MLPClassifier.predict`` (NumPy, float32).

Every runner gets the same C-contiguous float32 array. Each time is the best
over ``--repeats`` rounds of the mean of enough calls to fill a short time
budget; rounds interleave the runners, so a burst of load on a shared
machine hits them alike. ``--variants`` adds what the design of the torch
backend was chosen from: the float64 NumPy plan alone, the module in float64,
``torch.jit.trace`` + ``freeze``, and ``torch.compile``.

Usage::

    python benchmarks/bench_inference.py                     # 7 rounds
    python benchmarks/bench_inference.py --output inference.md
    python benchmarks/bench_inference.py --variants          # + the design variants
    python benchmarks/bench_inference.py --quick             # smoke test, < 30 s
"""

import argparse
import copy
import datetime
import os
import platform
import sys
import time
import warnings

import numpy as np
import sklearn
import torch
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from threadpoolctl import threadpool_limits

# The scripts run as files (python benchmarks/x.py) and are loaded by path in
# tests; either way their folder holds the shared helper, and the checkout's
# root holds sklears_neural when it is not installed (appended, so that an
# installed copy wins).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.append(os.path.dirname(_HERE))

import sklears_neural  # noqa: E402
from sklears_neural import MLPClassifier  # noqa: E402
from sklears_neural.core.plan import compile_plan, use_plan  # noqa: E402

from _machine import cpu_model  # noqa: E402

try:  # optional backend
    import onnxruntime
except ImportError:  # pragma: no cover - depends on the environment
    onnxruntime = None

N_FEATURES, HIDDEN, N_CLASSES = 64, (256, 128), 10
BATCH_SIZES = (1, 100, 10_000)
RUNNERS = ("sklears", "sklears_onnxruntime", "eager", "inference_mode", "sklearn")
VARIANTS = ("plan_float64", "torch_float64", "jit_freeze", "compile")
#: Runners that need a package the library does not require.
OPTIONAL = ("sklears_onnxruntime",)
SEED = 0

LABELS = {
    "sklears": "sklears_neural predict (torch backend)",
    "sklears_onnxruntime": "sklears_neural predict (onnxruntime backend)",
    "eager": "eager torch module, no_grad",
    "inference_mode": "torch module, inference_mode",
    "sklearn": f"scikit-learn {sklearn.__version__} MLPClassifier.predict",
    "plan_float64": "float64 NumPy plan alone",
    "torch_float64": "torch module in float64, inference_mode",
    "jit_freeze": "torch.jit.trace + freeze, inference_mode",
    "compile": "torch.compile (inductor), inference_mode",
}


def make_models():
    """scikit-learn's fitted MLP and ours with the same weights."""
    X, y = make_classification(
        2000, N_FEATURES, n_informative=32, n_classes=N_CLASSES, random_state=SEED
    )
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    sk = SkMLPClassifier(HIDDEN, max_iter=3, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y)
    ours = MLPClassifier.from_sklearn(sk)
    return sk, ours


def make_runners(sk, ours, names):
    """``name -> callable(x)``; ``None`` for a runner whose package is missing."""
    module = ours.module_.eval()

    def eager(x):
        with torch.no_grad():
            return module(torch.from_numpy(x))

    def inference_mode(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    runners = {
        "sklears": ours.predict,
        "eager": eager,
        "inference_mode": inference_mode,
        "sklearn": sk.predict,
        "sklears_onnxruntime": None,
    }
    if onnxruntime is not None:
        ort = copy.deepcopy(ours).set_params(inference_backend="onnxruntime")
        runners["sklears_onnxruntime"] = ort.predict
    if any(name in VARIANTS for name in names):
        runners.update(_variants(module))
    return {name: runners[name] for name in names}


def _variants(module):
    plan = compile_plan(module)
    double = copy.deepcopy(module).double().eval()
    example = torch.zeros(4, N_FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notes
        frozen = torch.jit.freeze(
            torch.jit.trace(copy.deepcopy(module), example).eval()
        )
    compiled = torch.compile(copy.deepcopy(module), dynamic=True)

    def run(fn, dtype=torch.float32):
        def call(x):
            with torch.inference_mode():
                return fn(torch.from_numpy(x).to(dtype))

        return call

    return {
        "plan_float64": plan,
        "torch_float64": run(double, torch.float64),
        "jit_freeze": run(frozen),
        "compile": run(compiled),
    }


def time_runners(runners, X, repeats, budget):
    """Best-of-``repeats`` seconds per call of each runner on ``X``."""
    per_round = budget / max(1, repeats)
    calls = {}
    for name, fn in runners.items():
        if fn is None:
            continue
        for _ in range(2):  # warm-up: lazy compilation, caches, the ONNX export
            fn(X)
        start = time.perf_counter()
        fn(X)
        one = time.perf_counter() - start
        calls[name] = max(1, int(per_round / max(one, 1e-7)))
    best = {name: None for name in runners}
    for _ in range(repeats):
        for name, n in calls.items():
            fn = runners[name]
            start = time.perf_counter()
            for _ in range(n):
                fn(X)
            elapsed = (time.perf_counter() - start) / n
            best[name] = elapsed if best[name] is None else min(best[name], elapsed)
    return best


def same_labels(ours, runners, X):
    """Share of rows where each runner of our model gives the eager module's label.

    The timed runners must compute the same thing: labels from their outputs
    (the argmax of a module's logits) against the eager module's. The
    scikit-learn runner is another model and is left out.
    """
    def labels(out):
        if isinstance(out, torch.Tensor):
            return ours.classes_[np.argmax(out.float().numpy(), axis=1)]
        return np.asarray(out)

    reference = labels(runners["eager"](X))
    return {
        name: float(np.mean(labels(fn(X)) == reference))
        for name, fn in runners.items()
        if fn is not None and name != "sklearn"
    }


def run(args, log=print):
    names = list(RUNNERS) + (list(VARIANTS) if args.variants else [])
    sk, ours = make_models()
    runners = make_runners(sk, ours, names)
    X_all = np.ascontiguousarray(
        np.random.RandomState(SEED)
        .randn(max(BATCH_SIZES), N_FEATURES)
        .astype(np.float32)
    )
    macs = compile_plan(ours.module_).macs
    budget = 0.3 if args.quick else 2.0
    results = []
    for rows in BATCH_SIZES:
        X = X_all[:rows]
        times = time_runners(runners, X, args.repeats, budget)
        path = "float64 plan" if use_plan(rows, macs) else "torch float32"
        results.append({"rows": rows, "times": times, "path": path,
                        "agreement": same_labels(ours, runners, X)})
        log(
            f"  {rows:6d} rows ({path}): "
            + ", ".join(f"{name} {_us(t)}" for name, t in times.items())
        )
    agree = float(np.mean(ours.predict(X_all[:1000]) == sk.predict(X_all[:1000])))
    log(f"  sklears and scikit-learn predictions agree on {agree:.1%} of 1000 rows")
    return results


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def _rows(n):
    return f"{n:,} row{'s' if n > 1 else ''}"


def _us(seconds):
    return "n/a" if seconds is None else f"{seconds * 1e6:,.0f} us"


def table_rows(results):
    """Rows of strings: runner, then time and ratio to eager per batch size."""
    header = ["runner"]
    for result in results:
        rows = result["rows"]
        header += [f"{_rows(rows)} (us)", "x eager"]
    out = [header]
    for name in results[0]["times"]:
        line = [LABELS[name]]
        for result in results:
            t, eager = result["times"][name], result["times"]["eager"]
            if t is None:
                line += ["not installed", ""]
            else:
                line += [f"{t * 1e6:,.1f}", f"{t / eager:.2f}"]
        out.append(line)
    return out


def render_text(results):
    rows = table_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        )
        for r in rows
    )


def environment(threads):
    ort = onnxruntime.__version__ if onnxruntime is not None else "not installed"
    return (
        f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores visible, "
        f"torch {torch.__version__} with {threads} thread(s) (numpy's BLAS and ONNX "
        f"Runtime limited to {threads} too), onnxruntime {ort}, scikit-learn "
        f"{sklearn.__version__}, sklears_neural {sklears_neural.__version__}, numpy "
        f"{np.__version__}, Python {platform.python_version()}"
    )


def _loadavg():
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def render_markdown(results, args, argv, env, total_seconds):
    cmd = " ".join(["python benchmarks/bench_inference.py", *argv])
    rows = table_rows(results)
    paths = ", ".join(f"{_rows(r['rows'])}: {r['path']}" for r in results)
    lines = [
        "# Prediction latency",
        "",
        "Generated by `benchmarks/bench_inference.py` on "
        f"{datetime.date.today().isoformat()} in {total_seconds:.0f} s:",
        "",
        f"    {cmd}",
        "",
        f"Machine: {env}.",
        "",
        f"One MLP, {N_FEATURES} -> {' -> '.join(map(str, HIDDEN))} -> {N_CLASSES} with "
        "ReLU and float32 weights, the same in every runner (scikit-learn's, copied "
        "with `MLPClassifier.from_sklearn`). Every runner gets the same float32 "
        f"array. Times are per call, the best of {args.repeats} rounds; `x eager` "
        "divides by the eager torch module's time (logits only, no input checks). "
        "The predict runners also check the input and compute labels.",
        "",
        f"Path taken by the torch backend: {paths}.",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    lines += [
        "",
        "The machine may be shared: compare ratios within one table rather than "
        "times across runs, and rerun when the load average is well above the "
        "thread count.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds, the best is kept (default 7, 3 with --quick)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch, BLAS and ONNX Runtime threads (default 2)",
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also time the design variants (plan, float64, jit, compile)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short time budgets, 3 rounds: a smoke test",
    )
    parser.add_argument(
        "--output", default=None, help="write the markdown table to this file"
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    return args


def main(argv=None, log=print):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # before the ONNX Runtime session reads it
    try:
        env = environment(args.threads)
        log(env)
        load_before = _loadavg()
        t0 = time.perf_counter()
        with threadpool_limits(args.threads):
            results = run(args, log=log)
        total = time.perf_counter() - t0
        env += (
            f"; 1-minute load average {load_before} before the run, {_loadavg()} after"
        )
    finally:  # main() is also called from the tests: leave torch as found
        torch.set_num_threads(previous_threads)
    log(render_text(results))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(render_markdown(results, args, argv, env, total))
        log(f"\nwrote {args.output}")
    return results


if __name__ == "__main__":
    main()
