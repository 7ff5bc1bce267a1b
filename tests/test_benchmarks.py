"""Smoke tests of the benchmark scripts, and of how they measure memory.

Runs each script's ``--quick`` mode in-process and checks the shape of what
it reports (a row per runner or configuration, finite numbers), not the
speed: times on a shared 2-core machine say nothing reliable in a test. The
memory helper (``benchmarks/_memory.py``) is checked against allocations of
known size, since the pages only report what it measures.
``bench_inference.py --quick`` is tested with the inference code, in
tests/test_inference.py.
"""

import contextlib
import importlib.util
import io
import math
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
MiB = 2**20


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load("bench_training")
scale = _load("bench_scale")
# Loading a script puts benchmarks/ on sys.path: the helpers import by name.
from _memory import ForkServer, PeakRSS  # noqa: E402


def _numbers(rows):
    """Every cell of a table's body that reads as a number, as floats."""
    out = []
    for row in rows[1:]:
        for cell in row[1:]:
            try:
                out.append(float(cell.replace(",", "")))
            except ValueError:
                pass
    return out


# One test per script run, each its own --quick run: pytest-xdist would
# compute a module-scoped fixture once per worker that runs a test using it.
# One torch thread: with two, torch's OpenMP workers spin-wait and a 2-core
# machine shared with another pytest worker ran --quick in 38 s instead of
# 9 s. main() restores the thread count it found.


def test_training_quick():
    """bench_training.py --quick: MLP tables, the RBM tables, the page."""
    results = bench.main(["--quick", "--threads", "1"], log=lambda *a: None)
    _check_mlp_results(results["mlp"])
    _check_ours_trains_as_well_as_the_hand_loop(results["mlp"][0])
    _check_rbm_results(results["rbm"])
    _check_markdown(results)


def _check_mlp_results(results):
    assert [r["workload"] for r in results] == [
        "classification",
        "regression",
        "small batch",
    ]
    for result in results:
        rows = {row["runner"]: row for row in result["rows"]}
        assert list(rows) == list(bench.RUNNERS)
        for name, row in rows.items():
            if row.get("missing"):  # skorch is optional
                assert name == "skorch"
                continue
            assert 0 < row["time"] <= row["median"]
            assert all(t > 0 for t in row["times"])
            if name == "gemm":  # matrix products only: nothing to score
                assert row["score"] is None
            else:
                assert 0.0 < row["score"] <= 1.0
            # measured in a child process, with the kernel's exact peak
            assert row["rss"] >= 0 and row["rss_exact"]
        table = bench.table_rows(result)
        assert len(table) == 1 + len(bench.RUNNERS)
        assert table[0][-2:] == ["peak +MiB", "memory x hand loop"]
        assert table[0][4] == "x GEMM floor" and table[1][4] == "1.00"
        numbers = _numbers(table)
        assert numbers and all(math.isfinite(x) for x in numbers)


def test_wait_until_quiet_waits_for_a_spinning_thread():
    """The harness starts a runner only once the threads left behind stop."""
    import threading
    import time

    stop_at = time.monotonic() + 0.4

    def spin():
        while time.monotonic() < stop_at:
            pass

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        assert bench.wait_until_quiet(timeout=3.0)
        assert time.monotonic() >= stop_at  # it waited for the spinner
    finally:
        thread.join()
    started = time.monotonic()
    assert bench.wait_until_quiet()  # nothing spins: back within a few intervals
    assert time.monotonic() - started < 0.5


def _check_ours_trains_as_well_as_the_hand_loop(result):
    # Quick classification (4000 x 64, 10 classes, batch 256, 1 epoch = 16
    # Adam steps), measured on the 2-core machine: hand loop 0.3902, ours
    # 0.3795 training accuracy (chance is 0.10). Our default init is
    # scikit-learn's, the hand loop's PyTorch's, so after 16 steps they agree
    # only roughly; 0.05 is 200 of 4000 samples.
    rows = {row["runner"]: row for row in result["rows"]}
    assert rows["sklears"]["score"] > 0.2
    assert abs(rows["sklears"]["score"] - rows["hand"]["score"]) < 0.05


def _check_rbm_results(results):
    assert [r["workload"] for r in results] == ["digits", "binary"]
    for result in results:
        assert [row["runner"] for row in result["rows"]] == ["sklears", "sklearn"]
        for row in result["rows"]:
            assert row["time"] > 0 and row["rss"] >= 0
            # n_features * log P(v_i | v_-i): negative and finite
            assert -result["n_features"] * 50 < row["score"] < 0
        table = bench.bench_rbm.table_rows(result)
        assert len(table) == 3
        assert all(math.isfinite(x) for x in _numbers(table))


def _check_markdown(results):
    args = bench.parse_args(["--quick"])
    text = bench.render_markdown(results, args, ["--quick"], "test machine", 1.0)
    assert text.count("| matrix products only (GEMM floor) |") == len(results["mlp"])
    assert text.count("| scikit-learn ") == len(results["mlp"]) + len(results["rbm"])
    assert "Machine: test machine." in text
    assert "python benchmarks/bench_training.py --output doc/benchmarks.md" in text
    assert "(inference.md)" in text
    assert "tests/test_perf.py -m perf" in text


def test_memory_ratio_is_hidden_below_resolution():
    ratio = bench.bench_rbm.memory_ratio
    assert ratio(3 * MiB, 2 * MiB) == "1.50"
    assert ratio(3 * MiB, MiB // 2) == "-"
    assert ratio(None, MiB) == "n/a"


def test_scale_quick(tmp_path):
    """bench_scale.py --quick: every table, and --output keeps the prose."""
    results = scale.main(["--quick", "--threads", "1"], log=lambda *a: None)
    tables = scale.tables(results)
    plan = results["plan"]
    # two estimators x each point of the sweep
    assert len(tables["samples"]) == 1 + 2 * len(plan["samples"])
    assert len(tables["width"]) == 1 + 2 * len(plan["widths"])
    assert [r[0] for r in tables["large"][1:]] == [
        f"sklears_neural {scale.sklears_neural.__version__}",
        "hand-written PyTorch loop",
    ]
    assert [r[0] for r in tables["activations"][1:]] == [v for v, _ in plan["variants"]]
    for rows in tables.values():
        numbers = _numbers(rows)
        assert numbers and all(math.isfinite(x) and x >= 0 for x in numbers)
    large = results["large"]
    assert large["sklears"]["n_params"] == large["hand"]["n_params"]
    assert len(large["sklears"]["steps"]) == plan["big"]["steps"]
    _check_scale_output(results, tmp_path)


def _check_scale_output(results, tmp_path):
    args = scale.parse_args(["--quick"])
    page = tmp_path / "scaling.md"
    page.write_text(f"# Title\n\nbefore\n\n{scale.BEGIN}\nold\n{scale.END}\n\nafter\n")
    generated = scale.render_generated(results, args, ["--quick"], "test machine", 1.0)
    scale.write_output(str(page), generated)
    text = page.read_text()
    assert text.startswith("# Title\n\nbefore\n\n" + scale.BEGIN)
    assert text.endswith(scale.END + "\n\nafter\n")
    assert "old" not in text and "### Large model" in text
    page.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        scale.write_output(str(page), generated)


def test_distributed_quick(tmp_path):
    """bench_distributed.py --quick: torchrun and dask runs, the page section."""
    pytest.importorskip("distributed")
    distributed_bench = _load("bench_distributed")
    page = tmp_path / "scaling.md"
    page.write_text(f"# Title\n\n{distributed_bench.BEGIN}\nstale\n{distributed_bench.END}\n")
    with contextlib.redirect_stdout(io.StringIO()):
        results = distributed_bench.main(["--quick", "--output", str(page)])
    assert len(results["ddp"]) == 3 and len(results["search"]) == 3
    # Data-parallel training learns what one process learns.
    accuracies = {round(r["accuracy"], 6) for r in results["ddp"].values()}
    assert len(accuracies) == 1
    assert len({r["best_score"] for r in results["search"].values()}) == 1
    text = page.read_text()
    assert "stale" not in text and 'strategy="ddp"' in text


def test_accuracy_quick():
    """accuracy_vs_sklearn.py --quick: iris and wine, both libraries."""
    accuracy = _load("accuracy_vs_sklearn")
    with contextlib.redirect_stdout(io.StringIO()):
        results = accuracy.main(["--quick"])
    assert list(results) == ["iris", "wine"]
    for by_seed in results.values():
        assert list(by_seed) == [0]
        for library, result in by_seed[0].items():
            assert len(result["scores"]) == accuracy.N_SPLITS
            assert all(0.5 < s <= 1.0 for s in result["scores"]), library


def test_families_quick(tmp_path):
    """bench_families.py: every runner computes what the hand loop computes.

    One unshuffled epoch from the same weights (dropout off): the networks'
    outputs agree with the hand loop's to float rounding (measured on 256
    digits: at most 6e-7, skorch exactly), while the epoch moved them by
    2e-2 (RNN) to 1.2 (Transformer), so a different loss, learning rate or
    batch split could not pass. A --quick run of the two cheap families
    checks the table and the section written into a page.
    """
    families = _load("bench_families")
    X, y = families.make_data(256)
    for name in ("cnn", "transformer"):  # batch norm; attention with masks
        family = families.FAMILIES[name]
        agreement = families.agreement(family, X.reshape(-1, *family.shape), y)
        _check_agreement(families, family, agreement)

    page = tmp_path / "benchmarks.md"
    page.write_text("# Title\n\nkept\n")
    argv = ["--quick", "--n-samples", "256", "--families", "rnn", "byo_mlp",
            "--output", str(page)]
    results = families.main(argv, log=lambda *a: None)
    for name, agreement in results["agreement"].items():
        family = next(f for f in families.FAMILIES.values() if f.name == name)
        _check_agreement(families, family, agreement)
    rows = families.table_rows(results["timings"][1], results["agreement"])
    assert [r[0] for r in rows[1:]] == ["RNN", "BYO MLP"]
    # skorch is optional (the bench extra): without it, its two cells are empty.
    with_skorch = importlib.util.find_spec("skorch") is not None and "skorch" in {
        runner for agreement in results["agreement"].values() for runner in agreement
    }
    for row in rows[1:]:
        # hand, (hand + lengths), ours, skorch in ms, then the two ratios
        cells = [c for c in row[1:7] if c != "-"]
        expected = (6 if row[0] == "RNN" else 5) - (0 if with_skorch else 2)
        assert len(cells) == expected, row
        assert all(math.isfinite(float(c)) and float(c) > 0 for c in cells)
    text = page.read_text()
    assert text.startswith("# Title\n\nkept\n\n" + families.BEGIN)
    assert text.count("| RNN |") == 1 and "bench_families.py --quick" in text
    # A second run replaces its section instead of adding one.
    section = families.render_markdown(results["timings"], results["agreement"],
                                       families.parse_args(argv), argv, "m", 1.0)
    families.write_output(str(page), section)
    assert page.read_text().count(families.BEGIN) == 1


def _check_agreement(families, family, agreement):
    expected = {r for r in families._runners(family) if r != "hand"} | {"moved"}
    assert set(agreement) == expected, family.name
    assert agreement["moved"] > 1e-2, family.name
    for runner in expected - {"moved"}:
        assert agreement[runner] < 1e-5, (family.name, runner, agreement)


# -- the memory measurement itself -----------------------------------------

ALLOCATORS = textwrap.dedent(
    """
    import numpy as np
    from _memory import PeakRSS

    def allocate(mib, garbage_mib=0):
        # Garbage first, freed in 64 KiB pieces below a live one, so that
        # glibc keeps the pages in its heap: the measured allocation reuses
        # them, and shows only if PeakRSS returned them to the kernel first.
        garbage = [np.ones(8192) for _ in range(garbage_mib * 16)]
        pin = np.ones(8192)  # noqa: F841 - keeps the heap from shrinking
        del garbage
        with PeakRSS() as peak:
            kept = [np.ones(8192) for _ in range(mib * 16)]
            del kept
        return peak.as_dict()
    """
)


@pytest.mark.parametrize("garbage_mib", [0, 100])
def test_fork_server_measures_a_known_allocation(tmp_path, garbage_mib):
    script = tmp_path / "allocators.py"
    script.write_text(ALLOCATORS)
    # The child imports _memory by name: loading the scripts above put
    # benchmarks/ on sys.path, which the server inherits.
    with ForkServer() as server:
        peak = server.call(str(script), "allocate", mib=50, garbage_mib=garbage_mib)
    assert peak["exact"] and peak["trimmed"]
    # 50 MiB of arrays plus their Python objects and the list, less a few
    # heap pages malloc_trim cannot return. Measured: 49.9-50.0 MiB with or
    # without garbage; 0.0 MiB after the garbage when malloc_trim is skipped.
    assert 49 * MiB <= peak["delta"] < 56 * MiB


def test_fork_server_reports_errors_of_the_child(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text("def fail():\n    raise ValueError('boom')\n")
    with ForkServer() as server:
        with pytest.raises(RuntimeError, match="ValueError: boom"):
            server.call(str(script), "fail")
        # the server survives a failing child
        with pytest.raises(RuntimeError, match="no attribute"):
            server.call(str(script), "missing")


def test_peak_rss_in_process():
    import numpy as np

    with PeakRSS() as peak:
        a = np.ones(20 * MiB // 8)
        del a
    assert peak.delta >= 19 * MiB


def test_explain_quick(tmp_path):
    """bench_explain.py --quick: a row per method and model, shap's k-means summary, the page."""
    explain = _load("bench_explain")
    page = tmp_path / "benchmarks.md"
    page.write_text("# Title\n\nkept\n")
    out = explain.main(["--quick", "--output", str(page)], log=lambda *a: None)
    rows = explain.table_rows(out["results"])
    assert [(r[0], r[1]) for r in rows[1:]] == [
        ("KernelSHAP", "MLP"), ("KernelSHAP", "logistic regression"),
        ("LIME", "MLP"), ("LIME", "logistic regression")]
    for result in out["results"]:
        ours = result["runners"]["ours"]
        # Values within sampling error of a high-budget reference.
        assert ours["best"] > 0 and ours["rms_error"] < 0.3 * result["scale"]
    if out["background"] is not None:  # shap installed: the same summary as shap.kmeans
        assert out["background"] == (0.0, 0.0)
    text = page.read_text()
    assert text.startswith("# Title\n\nkept\n\n" + explain.BEGIN)
    assert text.count("| KernelSHAP |") == 2


def test_generative_quick(tmp_path):
    """bench_generative.py --quick: a row per family, both runners timed, the page."""
    generative = _load("bench_generative")
    page = tmp_path / "benchmarks.md"
    page.write_text("# Title\n\nkept\n")
    results = generative.main(["--quick", "--families", "Autoencoder", "VAE",
                               "--output", str(page)], log=lambda *a: None)
    assert [r["name"] for r in results] == ["Autoencoder", "VAE"]
    for result in results:
        # Both loops ran the same data and epochs: neither side is an order
        # of magnitude off the other (a skipped hand loop would read 0).
        assert 0.1 < result["ours"] / result["hand"] < 10
    text = page.read_text()
    assert text.startswith("# Title\n\nkept\n\n" + generative.BEGIN)
    assert text.count("| Autoencoder |") == 1


def test_gnn_quick(tmp_path):
    """bench_gnn.py --quick: a row per configuration, every hand loop timed, the page."""
    pytest.importorskip("torch_geometric")
    gnn = _load("bench_gnn")
    page = tmp_path / "benchmarks.md"
    page.write_text("# Title\n\nkept\n")
    results = gnn.main(["--quick", "--configs", "GIN + sum", "node GCN (SBM)",
                        "--output", str(page)], log=lambda *a: None)
    assert [r["name"] for r in results] == ["GIN + sum", "node GCN (SBM)"]
    assert set(results[0]) >= {"ours", "dataloader", "pre-collated"}
    for result in results:
        # The same graphs and epochs: no runner an order of magnitude off
        # another (a skipped hand loop would read 0).
        for runner in ("dataloader", "pre-collated"):
            if runner in result:
                assert 0.1 < result["ours"] / result[runner] < 10
    text = page.read_text()
    assert text.startswith("# Title\n\nkept\n\n" + gnn.BEGIN)
    assert text.count("| GIN + sum |") == 1 and text.rstrip().endswith(gnn.END)


def test_rl_quick(tmp_path):
    """bench_rl.py --quick: both libraries train and are evaluated, the page section."""
    pytest.importorskip("stable_baselines3")
    rl = _load("bench_rl")
    page = tmp_path / "benchmarks.md"
    page.write_text("# Title\n\nkept\n")
    results = rl.main(["--quick", "--envs", "CartPole-v1", "--output", str(page)],
                      log=lambda *a: None)
    assert [(r["env"], r["algorithm"]) for r in results] == [
        ("CartPole-v1", "DQN"), ("CartPole-v1", "A2C")]
    for result in results:
        for who in ("ours", "SB3"):
            # CartPole returns are 8..500 per episode; a run that never
            # trained or evaluated would read 0.
            assert 8 <= result[who]["returns"][0] <= 500
            assert result[who]["seconds"][0] > 0
    text = page.read_text()
    assert text.startswith("# Title\n\nkept\n\n" + rl.BEGIN)
    assert text.count("| CartPole-v1 | DQN |") == 1 and text.rstrip().endswith(rl.END)
