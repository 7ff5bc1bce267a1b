"""Once-for-all on digits: extracted and fine-tuned subnets against the default MLP.

The protocol of doc/nas.md ("## Measured"): ``load_digits``, pixels / 16,
stratified 70/30 splits with seeds 0-4; on each, ``MLPClassifier(random_state=0)``
and ``OnceForAllNetwork(MLPClassifier(random_state=0), random_state=0)``
fitted on the training part and scored on the test part. For every split
the supernet is trained once; the rows are then

``ranked``
    ``best_estimator_`` (the ranking of ``OnceForAllNetwork``: within one
    standard error of the best validation accuracy, the lowest validation
    loss), extracted and, per ``--fine-tune`` value, ``extract(fine_tune=n)``
    of the same subnet (at most ``n`` epochs of the estimator's own ``fit``,
    warm-started on the whole training part);
``accuracy only``
    the same for the subnet with the best validation accuracy alone (the
    ranking before; fewer parameters first on ties).

Run pinned to one core with one torch thread for timings comparable with
doc/nas.md::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/bench_nas.py
    python benchmarks/bench_nas.py --splits 0 --fine-tune 10   # quicker
"""

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from sklears_neural import MLPClassifier
from sklears_neural.search import OnceForAllNetwork


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--fine-tune", type=int, nargs="+", default=[5, 10, 50, 200])
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rows = {}

    def put(name, seed, value):
        rows.setdefault(name, {})[seed] = value

    times = []
    for seed in args.splits:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.3, random_state=seed, stratify=y)
        put("default MLPClassifier", seed,
            MLPClassifier(random_state=0).fit(X_train, y_train).score(X_test, y_test))
        start = time.perf_counter()
        ofa = OnceForAllNetwork(MLPClassifier(random_state=0), random_state=0).fit(
            X_train, y_train)
        times.append(time.perf_counter() - start)
        subnets = ofa.subnets_
        by_accuracy = np.lexsort((subnets["n_params"], -subnets["valid_score"]))[0]
        picks = {"ranked": ofa.best_estimator_.hidden_layer_sizes,
                 "accuracy only": tuple(subnets["hidden_layer_sizes"][by_accuracy])}
        for label, sizes in picks.items():
            for n in [0, *args.fine_tune]:
                est = ofa.extract(hidden_layer_sizes=sizes, fine_tune=n,
                                  X=X_train, y=y_train)
                name = f"{label}, " + (f"fine_tune={n}" if n else "not retrained")
                put(name, seed, est.score(X_test, y_test))
        print(f"split {seed}: {ofa.fit_time_:.1f} s, ranked {picks['ranked']}, "
              f"accuracy only {picks['accuracy only']}", flush=True)
    default = np.array([rows["default MLPClassifier"][s] for s in args.splits])
    print(f"\nsearch time: median {np.median(times):.1f} s "
          f"({min(times):.1f}-{max(times):.1f})")
    print(f"{'model':40s} {'splits':30s} {'mean':>7s} {'gain':>8s} {'worst':>7s}")
    for name, scores in rows.items():
        values = np.array([scores[s] for s in args.splits])
        gain = values - default
        print(f"{name:40s} {' '.join(f'{v:.3f}' for v in values):30s} "
              f"{values.mean():7.4f} {gain.mean():+8.4f} {gain.min():+7.3f}")


if __name__ == "__main__":
    main()
