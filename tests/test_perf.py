"""Performance regression: our MLPClassifier's fit against a hand-written loop
and against the GEMM floor.

Times ``sklears_neural.MLPClassifier.fit``, the hand-written PyTorch loop and
the GEMM floor (the step's matrix products and nothing else) of
``benchmarks/bench_training.py`` (the same functions as doc/benchmarks.md)
on the same data, best of 3 each, interleaved (hand, ours, hand, ours, ...)
so that a load change on the machine hits both alike, and fails when ours
takes more than 1.15 times the hand loop's time, or more than 2.5 (batch
256) or 3.5 (batch 32) times the GEMM floor's.

Marked ``perf`` and deselected by default (see setup.cfg): timings need a
quiet machine. Run it with::

    python -m pytest -q tests/test_perf.py -m perf

It uses one torch thread (the suite's setting, tests/conftest.py), so that
another process on the 2-core machine slows both runners alike instead of
stalling OpenMP barriers. About 15 s.
"""

import importlib.util
import time
import warnings
from pathlib import Path

import pytest
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

pytestmark = pytest.mark.perf

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "bench_training.py"
MAX_RATIO = 1.15
# The floor ratios the training step was built to (issue 15): measured 1.38x
# and 2.76x with one thread on the 2-core machine under load.
MAX_FLOOR_RATIO = {256: 2.5, 32: 3.5}
REPEATS = 3


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_training", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()


def _best_times(fitters, X, y, batch_size, epochs):
    """Best of ``REPEATS`` fit times per fitter, runs interleaved."""
    times = {name: [] for name in fitters}
    for _ in range(REPEATS):
        for name, fit in fitters.items():
            with bench._seeded():
                t0 = time.perf_counter()
                fit("classification", X, y, batch_size, epochs)
                times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}, times


def _ratio_to(reference, n_samples, batch_size, epochs):
    """Ours over ``reference`` (a runner of bench_training), and all the times."""
    fitters = {reference: bench.FITTERS[reference], "sklears": bench.fit_sklears}
    X, y = bench.make_data("classification", n_samples)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # One-time costs (lazy imports, thread pools) out of the timings.
        for fit in fitters.values():
            with bench._seeded():
                fit("classification", X[:300], y[:300], 64, 1)
        best, times = _best_times(fitters, X, y, batch_size, epochs)
    return best["sklears"] / best[reference], times


# (n_samples, batch_size, epochs): the page's classification workload, and
# its small-batch one where per-step overhead weighs most; sized so that one
# fit takes ~0.5-1 s on one thread.
WORKLOADS = pytest.mark.parametrize(
    "n_samples, batch_size, epochs",
    [(20_000, 256, 2), (8_000, 32, 1)],
    ids=["batch 256", "batch 32"],
)


@WORKLOADS
def test_fit_is_within_15_percent_of_the_hand_loop(n_samples, batch_size, epochs):
    ratio, times = _ratio_to("hand", n_samples, batch_size, epochs)
    assert ratio <= MAX_RATIO, (
        f"MLPClassifier.fit took {ratio:.2f}x the hand-written loop "
        f"(limit {MAX_RATIO}); seconds per run: {times}. Rerun on a quiet "
        "machine before chasing it."
    )


@WORKLOADS
def test_fit_is_within_its_multiple_of_the_gemm_floor(n_samples, batch_size, epochs):
    ratio, times = _ratio_to("gemm", n_samples, batch_size, epochs)
    limit = MAX_FLOOR_RATIO[batch_size]
    assert ratio <= limit, (
        f"MLPClassifier.fit took {ratio:.2f}x the GEMM floor (limit {limit}); "
        f"seconds per run: {times}. Rerun on a quiet machine before chasing it."
    )
