"""Reinforcement-learning agents as estimators: ``fit(env)``, ``predict(obs)``, ``score(env)``.

The agents speak Gymnasium (multi-agent: PettingZoo's parallel API), both in
the ``rl`` extra: ``pip install 'sklears-neural[rl]'``. This package imports
without them; an agent is loaded on first access, and a missing extra raises
an ImportError that names it.
"""

import importlib

__all__ = [
    "DQNAgent",
    "REINFORCEAgent",
    "ActorCriticAgent",
    "MultiAgentTrainer",
    "RepeatedMatrixGame",
    "CooperativeGrid",
    "NonFiniteRewardError",
]

# Public name -> (module, the third-party packages it needs).
_LAZY = {
    "DQNAgent": ("sklears_neural.rl.dqn", ("gymnasium",)),
    "REINFORCEAgent": ("sklears_neural.rl.policy_gradient", ("gymnasium",)),
    "ActorCriticAgent": ("sklears_neural.rl.policy_gradient", ("gymnasium",)),
    "MultiAgentTrainer": ("sklears_neural.rl.multi_agent", ("gymnasium", "pettingzoo")),
    "RepeatedMatrixGame": ("sklears_neural.rl.envs", ("gymnasium", "pettingzoo")),
    "CooperativeGrid": ("sklears_neural.rl.envs", ("gymnasium", "pettingzoo")),
    "NonFiniteRewardError": ("sklears_neural.rl._base", ()),
}


def _require(packages, name):
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError as exc:
            raise ImportError(
                f"sklears_neural.rl.{name} needs {package}, which is not installed: "
                "pip install 'sklears-neural[rl]'."
            ) from exc


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'sklears_neural.rl' has no attribute {name!r}")
    module, packages = _LAZY[name]
    _require(packages, name)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
