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

Every searcher stops bad trials early with ``factor=`` (successive halving
over epochs or samples), runs trials in parallel with ``n_jobs``, and
gives each worker its own GPU when the estimator trains on CUDA.
"""

from sklears_neural.search._base import BaseSearch
from sklears_neural.search._space import ArchitectureSpace
from sklears_neural.search.evolutionary import EvolutionarySearch
from sklears_neural.search.halving import HyperbandSearch
from sklears_neural.search.progressive import ProgressiveSearch

__all__ = [
    "ArchitectureSpace",
    "BaseSearch",
    "EvolutionarySearch",
    "HyperbandSearch",
    "ProgressiveSearch",
]
