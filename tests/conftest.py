"""Shared test settings.

``global_random_seed`` works like scikit-learn's fixture: 42 by default;
``SKLEARS_TESTS_GLOBAL_RANDOM_SEED=all`` runs seeds 0-99 and ``=3`` or
``=0-9`` pick seeds, so tolerances are set for the worst seed, not a lucky
one. Tests pass it as ``random_state``; nothing seeds global RNGs.
"""

import os

import pytest
import torch
from threadpoolctl import threadpool_limits

# Tests fit small models: a second intra-op thread only waits at barriers,
# and on a busy two-core machine (or beside a second pytest-xdist worker)
# made tiny fits 10-50x slower. One thread for the whole suite.
torch.set_num_threads(1)
# The same for NumPy's BLAS (SciPy's L-BFGS-B, the float64 plan): two BLAS
# threads beside torch's made a small L-BFGS fit 60x slower on this machine.
threadpool_limits(1)


def _seeds():
    spec = os.environ.get("SKLEARS_TESTS_GLOBAL_RANDOM_SEED", "42").strip()
    if spec == "all":
        return list(range(100))
    if "-" in spec:
        low, high = (int(part) for part in spec.split("-"))
        return list(range(low, high + 1))
    return [int(spec)]


def pytest_generate_tests(metafunc):
    if "global_random_seed" in metafunc.fixturenames:
        metafunc.parametrize("global_random_seed", _seeds())


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA device; skipped when none is present"
    )


CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine"
)
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
