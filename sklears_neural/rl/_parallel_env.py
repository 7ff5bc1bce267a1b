"""PettingZoo parallel environments for the multi-agent trainer.

What :mod:`sklears_neural.rl._env` is to the single-agent agents: accept
an environment or a factory (refusing AEC and single-agent ones with the
conversion to use), describe its agents' spaces as plain data, and encode
observation dicts as padded arrays.
"""

import numpy as np

from sklears_neural.rl._env import import_pettingzoo

__all__ = ["describe_agents", "make_parallel_env"]


def _is_aec(env):
    try:
        from pettingzoo import AECEnv
    except ImportError:  # pragma: no cover - depends on the install
        return False
    # A wrapped parallel env (parallel_to_aec) unwraps to the parallel one:
    # the object itself decides.
    return isinstance(env, AECEnv)


def make_parallel_env(env):
    """A ``pettingzoo.ParallelEnv`` from an instance or a callable returning one.

    Raises
    ------
    TypeError
        For an AEC environment (with the conversion to use), a single-agent
        gymnasium environment (with the agents to use), or anything else.
    """
    ParallelEnv = import_pettingzoo("MultiAgentTrainer").ParallelEnv
    # A class is a factory too, though it has an env's methods.
    factory = isinstance(env, type) or (callable(env) and not _looks_like_env(env))
    made = env() if factory else env
    if _is_aec(made):
        raise TypeError(
            f"MultiAgentTrainer needs a PettingZoo ParallelEnv, got the AEC "
            f"(turn-based) environment {type(made).__name__}. Convert it with "
            "pettingzoo.utils.conversions.aec_to_parallel(env), or make it with "
            "the environment module's parallel_env() instead of env()."
        )
    if isinstance(made, ParallelEnv) or _looks_like_env(made):
        if not hasattr(made, "possible_agents"):
            raise TypeError(
                f"MultiAgentTrainer needs a PettingZoo ParallelEnv, got "
                f"{type(made).__name__}, which has no possible_agents. A single-agent "
                "gymnasium environment trains with sklears_neural.rl's single-agent "
                "agents (DQNAgent, ActorCriticAgent)."
            )
        return made
    raise TypeError(
        "MultiAgentTrainer.fit needs a PettingZoo ParallelEnv or a callable that "
        f"returns one, got {type(made).__name__}."
    )


def _looks_like_env(obj):
    return all(hasattr(obj, name) for name in ("reset", "step", "action_space"))


def _observation_spec(space, agent):
    """``("discrete", n, start)`` or ``("box", size)``: how to flatten ``space``."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return ("discrete", int(space.n), int(space.start))
    if isinstance(space, (spaces.Box, spaces.MultiBinary)):
        return ("box", int(np.prod(space.shape)))
    raise TypeError(
        f"MultiAgentTrainer supports Box, Discrete and MultiBinary observation spaces; "
        f"{agent}'s is {space}. Flatten it first (gymnasium.spaces.flatten_space and "
        "a wrapper that flattens the observations) or give the environment a Box space."
    )


def _check_action_space(space, agent):
    from gymnasium import spaces

    if not isinstance(space, spaces.Discrete):
        raise TypeError(
            f"MultiAgentTrainer supports Discrete action spaces only; {agent}'s action "
            f"space is {space}. Discretize the actions (a fixed set of values behind "
            "a Discrete space), or train continuous control with the single-agent "
            "ActorCriticAgent."
        )
    if space.start != 0:
        raise TypeError(
            f"{agent}'s Discrete action space starts at {space.start}; "
            "MultiAgentTrainer needs actions 0 .. n-1."
        )
    return int(space.n)


def describe_agents(env):
    """Plain data on ``env``'s agents: what the networks and encoders need.

    Returns
    -------
    dict
        ``agents`` (names), ``observation_specs`` (see :func:`_observation_spec`),
        ``n_actions``, ``state_size`` and ``uses_state`` (the environment has a
        ``state_space``).
    """
    agents = list(env.possible_agents)
    if not agents:
        raise ValueError("The environment has no possible_agents.")
    specs = [_observation_spec(env.observation_space(a), a) for a in agents]
    n_actions = [_check_action_space(env.action_space(a), a) for a in agents]
    state_space = getattr(env, "state_space", None)
    n_obs = max(spec[1] for spec in specs)
    if state_space is not None:
        state_size = _observation_spec(state_space, "the environment's state")[1]
    else:
        state_size = len(agents) * n_obs
    return {"agents": agents, "observation_specs": specs, "n_actions": n_actions,
            "state_size": state_size, "uses_state": state_space is not None}


class _Encoder:
    """Observation dicts to padded arrays, and the global state.

    Parameters
    ----------
    agents : list of str
    observation_specs : list of tuple
        One :func:`_observation_spec` per agent.
    uses_state : bool
        Read ``env.state()``; else the state is the padded observations,
        concatenated in agent order.
    """

    def __init__(self, agents, observation_specs, uses_state):
        self.agents = list(agents)
        self.specs = [tuple(spec) for spec in observation_specs]
        self.n_obs = max(spec[1] for spec in self.specs)
        self.uses_state = uses_state

    def encode(self, index, observation):
        """One agent's observation as flat float32 of its own size."""
        spec = self.specs[index]
        if spec[0] == "discrete":
            vector = np.zeros(spec[1], dtype=np.float32)
            vector[int(observation) - spec[2]] = 1.0
            return vector
        vector = np.asarray(observation, dtype=np.float32).reshape(-1)
        if vector.size != spec[1]:
            raise ValueError(
                f"{self.agents[index]}'s observation has {vector.size} values; its "
                f"observation space has {spec[1]}."
            )
        return vector

    def observations(self, observation_dict):
        """``(n_agents, n_obs)`` zero-padded observations, and the alive mask
        (1 for the agents present in ``observation_dict``)."""
        out = np.zeros((len(self.agents), self.n_obs), np.float32)
        alive = np.zeros(len(self.agents), np.float32)
        for i, agent in enumerate(self.agents):
            if agent in observation_dict:
                vector = self.encode(i, observation_dict[agent])
                out[i, :vector.size] = vector
                alive[i] = 1.0
        return out, alive

    def state(self, env, observations):
        if self.uses_state:
            return np.asarray(env.state(), dtype=np.float32).reshape(-1)
        return observations.reshape(-1)
