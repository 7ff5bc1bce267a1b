"""5-fold cross-validated scores of our MLPs beside scikit-learn's.

Both libraries run the same protocol on scikit-learn's bundled data sets:
``make_pipeline(StandardScaler(), Estimator(random_state=seed))`` with every
other parameter at its default (``hidden_layer_sizes=(100,)``, ``adam``,
``max_iter=200``), scored by ``cross_validate`` on one fixed set of splits,
``StratifiedKFold(5, shuffle=True, random_state=0)`` for the classifiers and
``KFold(5, shuffle=True, random_state=0)`` for diabetes. ``seed`` (the model's
``random_state``) varies, the splits do not.

Diabetes's target runs from 25 to 346: on that scale the default regressor
(learning rate 1e-3, 200 epochs) is still far from converged and R^2 measures
how far training got, not the model. Both regressors are therefore wrapped in
``TransformedTargetRegressor(transformer=StandardScaler())``, which fits on the
standardized target and predicts in the original units.

Usage::

    python benchmarks/accuracy_vs_sklearn.py                 # 5 data sets, seed 0
    python benchmarks/accuracy_vs_sklearn.py --seeds 0 1 2 --output doc/accuracy.md
    python benchmarks/accuracy_vs_sklearn.py --quick         # iris + wine, seed 0
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np
import sklearn
import torch
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    load_wine,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

# The scripts run as files (python benchmarks/x.py) and are loaded by path in
# tests; either way their folder holds the shared helper, and the checkout's
# root holds sklears_neural when it is not installed (appended, so that an
# installed copy wins).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.append(os.path.dirname(_HERE))

import sklears_neural  # noqa: E402
from sklears_neural import MLPClassifier, MLPRegressor  # noqa: E402

from _machine import cpu_model  # noqa: E402

# name -> (loader, task)
DATASETS = {
    "iris": (load_iris, "classification"),
    "wine": (load_wine, "classification"),
    "breast_cancer": (load_breast_cancer, "classification"),
    "digits": (load_digits, "classification"),
    "diabetes": (load_diabetes, "regression"),
}
QUICK_DATASETS = ["iris", "wine"]
LIBRARIES = {
    "sklearn": {"classification": SkMLPClassifier, "regression": SkMLPRegressor},
    "ours": {"classification": MLPClassifier, "regression": MLPRegressor},
}
N_SPLITS = 5
SPLIT_SEED = 0
# One point is 0.01 of accuracy or of R^2.
POINTS = 100.0


def make_model(library, task, seed, **params):
    """The pipeline scored for ``library`` ("sklearn" or "ours") on ``task``.

    ``params`` go to the MLP on top of ``random_state=seed``; the benchmark
    passes none (every default kept).
    """
    estimator = LIBRARIES[library][task](random_state=seed, **params)
    model = make_pipeline(StandardScaler(), estimator)
    if task == "regression":
        model = TransformedTargetRegressor(
            regressor=model, transformer=StandardScaler()
        )
    return model


def make_cv(task):
    """The fixed splits: stratified for classifiers, plain for regression."""
    if task == "classification":
        return StratifiedKFold(N_SPLITS, shuffle=True, random_state=SPLIT_SEED)
    return KFold(N_SPLITS, shuffle=True, random_state=SPLIT_SEED)


def _mlp_of(model):
    """The MLP inside a fitted (possibly target-transformed) pipeline."""
    if isinstance(model, TransformedTargetRegressor):
        model = model.regressor_
    return model[-1]


def evaluate(dataset, library, seed):
    """Cross-validate one library on one data set with one model seed.

    Returns
    -------
    dict
        ``scores`` (per fold), ``fit_time`` (seconds per fold), ``n_iter``
        (epochs run per fold) and ``metric``.
    """
    loader, task = DATASETS[dataset]
    X, y = loader(return_X_y=True)
    with warnings.catch_warnings():
        # Both libraries may stop at max_iter=200 on some folds; that is
        # part of the default protocol being measured.
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        result = cross_validate(
            make_model(library, task, seed),
            X,
            y,
            cv=make_cv(task),
            scoring="accuracy" if task == "classification" else "r2",
            return_estimator=True,
            n_jobs=None,
        )
    return {
        "metric": "accuracy" if task == "classification" else "R^2",
        "scores": result["test_score"],
        "fit_time": result["fit_time"],
        "n_iter": np.array([_mlp_of(m).n_iter_ for m in result["estimator"]]),
    }


def warm_up():
    """One small fit per library, so no timed fold pays one-time start-up costs.

    The first torch optimizer built in a process imports ``torch._dynamo``
    (about 2-6 s on a loaded 2-core machine); without this, that lands in
    the first fold of the first data set.
    """
    X, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        for library in LIBRARIES:
            make_model(library, "classification", 0, max_iter=2).fit(X, y)


def run(datasets, seeds, log=print):
    """All results, as ``results[dataset][seed][library]``."""
    results = {}
    for dataset in datasets:
        results[dataset] = {}
        for seed in seeds:
            row = {lib: evaluate(dataset, lib, seed) for lib in LIBRARIES}
            results[dataset][seed] = row
            sk, ours = row["sklearn"], row["ours"]
            log(
                f"  {dataset:<14} seed={seed}  sklearn {_pm(sk['scores'])} "
                f"({_cost(sk)})  ours {_pm(ours['scores'])} ({_cost(ours)})"
            )
    return results


def _n_samples(dataset):
    return DATASETS[dataset][0](return_X_y=True)[0].shape[0]


def _cost(result):
    return (
        f"{result['fit_time'].mean():.2f} s/fold, "
        f"{result['n_iter'].mean():.0f} epochs"
    )


def _pm(scores):
    return f"{POINTS * scores.mean():.2f} ± {POINTS * scores.std():.2f}"


def _diff(row):
    return POINTS * (row["ours"]["scores"].mean() - row["sklearn"]["scores"].mean())


def main_table(results, seed):
    """Markdown table of one seed: scores in points, difference, time per fold."""
    lines = [
        "| Data set | Metric | scikit-learn | sklears-neural | Ours − sklearn "
        "(points) | Fit s/fold (sklearn) | Fit s/fold (ours) "
        "| Epochs (sklearn / ours) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for dataset, by_seed in results.items():
        row = by_seed[seed]
        sk, ours = row["sklearn"], row["ours"]
        lines.append(
            f"| {dataset} | {sk['metric']} | {_pm(sk['scores'])} "
            f"| {_pm(ours['scores'])} "
            f"| {_diff(row):+.2f} | {sk['fit_time'].mean():.2f} "
            f"| {ours['fit_time'].mean():.2f} "
            f"| {sk['n_iter'].mean():.0f} / {ours['n_iter'].mean():.0f} |"
        )
    return "\n".join(lines)


def spread_table(results, seeds):
    """Markdown table over seeds: range of 5-fold means per library, and the gap."""
    seeds_txt = ", ".join(str(s) for s in seeds)
    lines = [
        f"| Data set | scikit-learn, seeds {seeds_txt} "
        f"| sklears-neural, seeds {seeds_txt} "
        "| Ours − sklearn per seed (points) | Mean gap |",
        "|---|---:|---:|---:|---:|",
    ]
    for dataset, by_seed in results.items():
        sk = [POINTS * by_seed[s]["sklearn"]["scores"].mean() for s in seeds]
        ours = [POINTS * by_seed[s]["ours"]["scores"].mean() for s in seeds]
        diffs = [_diff(by_seed[s]) for s in seeds]
        lines.append(
            f"| {dataset} | {min(sk):.2f} – {max(sk):.2f} "
            f"| {min(ours):.2f} – {max(ours):.2f} "
            f"| {', '.join(f'{d:+.2f}' for d in diffs)} | {np.mean(diffs):+.2f} |"
        )
    return "\n".join(lines)


def _library_revision():
    """Short commit of the checkout, ``+dirty`` if the library is edited.

    "unknown" outside a git checkout.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "sklears_neural")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def environment():
    """One line describing the machine and versions."""
    return (
        f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores visible, "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s) "
        "(NumPy BLAS limited to the same), "
        f"scikit-learn {sklearn.__version__}, "
        f"sklears-neural {sklears_neural.__version__} "
        f"(commit {_library_revision()}), "
        f"numpy {np.__version__}, Python {platform.python_version()}"
    )


def render_markdown(results, seeds, argv, total_seconds, env):
    """The whole doc/accuracy.md page; ``env`` is :func:`environment` at the start."""
    first = seeds[0]
    today = datetime.date.today().isoformat()
    command = "python benchmarks/accuracy_vs_sklearn.py " + " ".join(argv)
    parts = [
        "# Accuracy beside scikit-learn",
        "",
        "Five-fold cross-validated scores of `sklears_neural.MLPClassifier` / "
        "`MLPRegressor` beside `sklearn.neural_network`'s, on scikit-learn's bundled "
        "data sets. Scores are in points (1 point = 0.01 of accuracy or of R²); "
        "the target is to stay no more than 1 point below scikit-learn.",
        "",
        "## Protocol",
        "",
        "- Model: `make_pipeline(StandardScaler(), Estimator(random_state=seed))`, "
        "every other parameter at its default in both libraries "
        "(`hidden_layer_sizes=(100,)`, `activation=\"relu\"`, `solver=\"adam\"`, "
        "`learning_rate_init=0.001`, `batch_size=\"auto\"`, `max_iter=200`, "
        "`tol=1e-4`, `n_iter_no_change=10`; ours trains in float32, its default).",
        f"- Splits: `StratifiedKFold({N_SPLITS}, shuffle=True, "
        f"random_state={SPLIT_SEED})` for the classifiers, "
        f"`KFold({N_SPLITS}, shuffle=True, random_state={SPLIT_SEED})`"
        " for diabetes; the same splits for both libraries and every model seed. "
        "Scored with `cross_validate` (accuracy; R² for diabetes).",
        "- Diabetes: the raw target runs from 25 to 346, and on that scale "
        "scikit-learn's default regressor is still far from converged after 200 "
        "epochs, so R² would measure how far training got rather than the model. "
        "Both regressors are therefore wrapped, identically, in "
        "`TransformedTargetRegressor(regressor=pipeline, "
        "transformer=StandardScaler())`: "
        "they fit the standardized target and predict in the original units.",
        "- Both libraries stop at `max_iter` on most folds (see the Epochs column); "
        "that is the default protocol, so the script silences `ConvergenceWarning` "
        "by category, for both.",
        "- \"Fit s/fold\" is `cross_validate`'s mean `fit_time`; \"Epochs\" is the "
        "mean `n_iter_` over the 5 folds. Each library first fits once untimed, so the "
        "one-time cost of the first torch optimizer in a process (it imports "
        "`torch._dynamo`, several seconds here) is not charged to a fold. The "
        "machine is shared and its load varied during the run: read the times as "
        "rough.",
        "",
        f"## Results, model seed {first}",
        "",
        "Mean ± standard deviation over the 5 folds.",
        "",
        main_table(results, first),
        "",
    ]
    if len(seeds) > 1:
        worst = min(_diff(by_seed[s]) for by_seed in results.values() for s in seeds)
        own_range = max(
            POINTS * np.ptp([by_seed[s][lib]["scores"].mean() for s in seeds])
            for by_seed in results.values()
            for lib in LIBRARIES
        )
        sizes = ", ".join(
            f"{100.0 / _n_samples(name):.2f} on {name} ({_n_samples(name)})"
            for name in results
            if DATASETS[name][1] == "classification"
        )
        parts += [
            f"## Spread across model seeds {', '.join(str(s) for s in seeds)}",
            "",
            "Splits fixed, model `random_state` varied. Columns 2-3: lowest – "
            "highest 5-fold mean of each library; then the gap per seed.",
            "",
            spread_table(results, seeds),
            "",
            "Across these seeds the largest shortfall of ours against scikit-learn is "
            f"{-min(worst, 0.0):.2f} points, while a library's own 5-fold mean "
            f"moves by up to {own_range:.2f} points from one seed to another. For "
            "scale, one test sample is worth 100/n points of the 5-fold mean: "
            f"{sizes}.",
            "",
        ]
    parts += [
        "## Machine and regeneration",
        "",
        f"Run on {today}: {env}. "
        f"Total wall time {total_seconds / 60:.1f} min.",
        "",
        "Regenerate this page with",
        "",
        "```bash",
        command,
        "```",
        "",
        "`--quick` runs iris and wine only, one seed (well under a minute); "
        "`--threads` sets torch's (and NumPy's BLAS) thread count, 1 by default.",
        "",
        "`tests/test_accuracy.py` holds two checks. The slow one "
        "(`python -m pytest -m slow tests/test_accuracy.py`) reruns this table for "
        "model seed 0 and requires ours >= scikit-learn - 1 point on every data set. "
        "The default suite runs a few-second version: iris and wine, 3 folds, the "
        "model seed taken from `global_random_seed`, with a 2.5-point tolerance "
        "measured over seeds 0-99 (see the test), plus a negative control: a model "
        "trained for a quarter of the epochs must fail it.",
        "",
    ]
    return "\n".join(parts)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true",
        help=f"only {', '.join(QUICK_DATASETS)}, first seed only",
    )
    parser.add_argument(
        "--datasets", nargs="+", choices=sorted(DATASETS), default=None,
        help="data sets to run (default: all five, or the quick subset)",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0],
        help="model random_state values; the first fills the main table (default: 0)",
    )
    parser.add_argument(
        "--threads", type=int, default=1,
        help=(
            "torch.set_num_threads, and the BLAS/OpenMP limit for scikit-learn's "
            "NumPy side; 1 is fastest for these small models on a shared 2-core "
            "machine (default: 1)"
        ),
    )
    parser.add_argument(
        "--output", default=None,
        help="write the markdown page here (e.g. doc/accuracy.md)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    datasets = args.datasets or (QUICK_DATASETS if args.quick else list(DATASETS))
    seeds = args.seeds[:1] if args.quick else args.seeds
    env = environment()
    print(env)
    start = time.perf_counter()
    with threadpool_limits(limits=args.threads):
        warm_up()
        results = run(datasets, seeds)
    total = time.perf_counter() - start
    print()
    print(
        f"Model seed {seeds[0]} "
        f"(scores in points, mean ± std over {N_SPLITS} folds):"
    )
    print(main_table(results, seeds[0]))
    if len(seeds) > 1:
        print()
        print(spread_table(results, seeds))
    print(f"\nTotal {total:.1f} s")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(render_markdown(results, seeds, argv, total, env))
        print(f"Wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
