"""Single-agent RL: the agents' contract, their parts, and what they learn."""

import pickle

import numpy as np
import pytest
import torch

gymnasium = pytest.importorskip("gymnasium")

from sklearn.base import clone  # noqa: E402

from sklears_neural.rl import _env  # noqa: E402
from sklears_neural.rl import DQNAgent, NonFiniteRewardError  # noqa: E402


def test_package_exports_lazily():
    import sklears_neural.rl as rl

    assert rl.DQNAgent is DQNAgent
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        rl.Nope  # noqa: B018


def test_missing_gymnasium_names_the_extra(monkeypatch):
    import sys

    import sklears_neural.rl as rl

    # A None entry makes ``import gymnasium`` fail, as if it were not installed.
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    monkeypatch.delitem(rl.__dict__, "DQNAgent", raising=False)
    with pytest.raises(ImportError, match=r"DQNAgent needs gymnasium.*"
                                          r"pip install 'sklears-neural\[rl\]'"):
        rl.DQNAgent  # noqa: B018
    with pytest.raises(ImportError, match=r"sklears-neural\[rl\]"):
        _env.import_gymnasium()


def test_env_argument_kinds():
    made = _env.make_env("CartPole-v1")
    assert isinstance(made, gymnasium.Env)
    assert _env.make_env(made) is made
    assert isinstance(_env.make_env(lambda: gymnasium.make("CartPole-v1")), gymnasium.Env)
    assert _env.unwrap_env_argument(["CartPole-v1", "CartPole-v1"]) == "CartPole-v1"
    with pytest.raises(ValueError, match="2 different environments"):
        _env.unwrap_env_argument(["CartPole-v1", "Acrobot-v1"])
    with pytest.raises(ValueError, match="cannot make the environment 'NoSuchEnv-v0'"):
        _env.make_env("NoSuchEnv-v0")
    with pytest.raises(TypeError, match="returned a int"):
        _env.make_env(lambda: 3)
    with pytest.raises(TypeError, match="got float"):
        _env.make_env(1.5)
    with pytest.raises(ValueError, match="n_envs=2 needs 2 copies"):
        _env.make_vector_env(made, 2)
    assert _env.make_vector_env("CartPole-v1", 3).num_envs == 3


def test_unsupported_spaces_are_refused_by_name():
    with pytest.raises(ValueError, match=r"DQNAgent does not support the action space "
                                         r"Box\(-2.0, 2.0, \(1,\).*supports Discrete"):
        DQNAgent(random_state=0).fit("Pendulum-v1", total_timesteps=10)

    class TextObservations(gymnasium.Env):
        observation_space = gymnasium.spaces.Text(5)
        action_space = gymnasium.spaces.Discrete(2)

    with pytest.raises(ValueError, match=r"observation space Text.*supports Box"):
        DQNAgent(random_state=0).fit(TextObservations(), total_timesteps=10)
