"""Architecture and hyper-parameter search as scikit-learn meta-estimators.

Each searcher takes the estimator it searches around as its first
parameter, trains candidates through ``clone``/``set_params`` with
cross-validation, and then behaves like
:class:`~sklearn.model_selection.GridSearchCV`: ``best_estimator_``,
``best_params_``, ``best_architecture_``, ``cv_results_``, and
``predict``/``predict_proba``/``score`` of the best candidate. They work
with any estimator of this library (and any scikit-learn estimator);
:class:`ArchitectureSpace` describes MLP layer stacks.

- :class:`EvolutionarySearch`: mutation, crossover and selection, with a
  multi-objective ``pareto_front_``.
- :class:`ProgressiveSearch`: grows architectures, led by a learned
  performance predictor.
- :class:`HyperbandSearch`: random candidates under Hyperband's early
  stopping.
- :class:`DARTSSearch`, :class:`ENASSearch`, :class:`OnceForAllNetwork`:
  weight-sharing searchers for the MLP and CNN families (imported on
  first use).

Every searcher stops bad trials early with ``factor=`` (successive halving
over epochs or samples), runs trials in parallel with ``n_jobs``, and
gives each worker its own GPU when the estimator trains on CUDA.
"""

import importlib

from sklears_neural.search._base import BaseSearch
from sklears_neural.search._space import ArchitectureSpace
from sklears_neural.search.evolutionary import EvolutionarySearch
from sklears_neural.search.halving import HyperbandSearch
from sklears_neural.search.progressive import ProgressiveSearch

# The weight-sharing searchers build supernets; their modules load on first use.
_WEIGHT_SHARING = {
    "DARTSSearch": "darts",
    "ENASSearch": "enas",
    "OnceForAllNetwork": "once_for_all",
}

__all__ = [
    "ArchitectureSpace",
    "BaseSearch",
    "EvolutionarySearch",
    "HyperbandSearch",
    "ProgressiveSearch",
    *_WEIGHT_SHARING,
]


def __getattr__(name):
    if name in _WEIGHT_SHARING:
        module = importlib.import_module(f"sklears_neural.search.{_WEIGHT_SHARING[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
