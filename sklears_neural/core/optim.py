"""Optimizers by name, built from an estimator's scikit-learn parameters.

``solver`` names a factory ``factory(params, estimator) -> torch.optim.Optimizer``;
``"lbfgs"`` maps to ``None`` because it runs through SciPy (see
:meth:`~sklears_neural.core.trainer.Trainer.fit_lbfgs`), exactly as
scikit-learn's does.
"""

import torch

from sklears_neural.core.resolve import Resolver

__all__ = ["SOLVERS", "LEARNING_RATES", "make_optimizer", "apply_hyperparameters"]


def _sgd(params, est):
    return torch.optim.SGD(
        params,
        lr=est.learning_rate_init,
        momentum=est.momentum,
        # torch refuses Nesterov without momentum; scikit-learn's formula
        # reduces to plain SGD there, so that is what we run.
        nesterov=bool(est.nesterovs_momentum and est.momentum > 0),
        foreach=True,
    )


def _adam(params, est):
    return torch.optim.Adam(
        params,
        lr=est.learning_rate_init,
        betas=(est.beta_1, est.beta_2),
        eps=est.epsilon,
        foreach=True,
    )


SOLVERS = Resolver("solver", {"sgd": _sgd, "adam": _adam, "lbfgs": None})

# scikit-learn's schedules; they apply to solver="sgd" only, as in scikit-learn.
LEARNING_RATES = Resolver(
    "learning_rate schedule",
    {"constant": "constant", "invscaling": "invscaling", "adaptive": "adaptive"},
)


def make_optimizer(module, est):
    """A fresh optimizer for ``module`` from ``est.solver`` and its settings.

    Parameters
    ----------
    module : torch.nn.Module
    est : BaseNeuralEstimator

    Returns
    -------
    torch.optim.Optimizer or None
        ``None`` for ``solver="lbfgs"``.
    """
    factory = SOLVERS(est.solver)
    if factory is None:
        return None
    return factory([p for p in module.parameters() if p.requires_grad], est)


def apply_hyperparameters(optimizer, est):
    """Write the estimator's current settings into a kept optimizer.

    ``warm_start`` keeps the optimizer's state (moments, step counts) but a
    user may have changed ``learning_rate_init`` or ``beta_1`` with
    ``set_params`` in between: the new values win, the state stays.
    """
    fresh = make_optimizer(torch.nn.Linear(1, 1), est)
    defaults = fresh.param_groups[0]
    for group in optimizer.param_groups:
        for key, value in defaults.items():
            if key != "params":
                group[key] = value
