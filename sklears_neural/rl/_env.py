"""Environments for the agents: resolve, seed, vectorize, describe spaces.

Everything an agent needs from Gymnasium goes through this module, so the
rest of :mod:`sklears_neural.rl` never imports it at module level and the
package imports without the ``rl`` extra.

The ``env`` argument of ``fit`` and ``score`` is one of:

- an id string, made with ``gymnasium.make``;
- a ``gymnasium.Env`` instance, used as it is (``fit`` resets and steps it);
- a callable that takes no argument and returns an ``Env`` (needed for
  several environments at once, ``n_envs > 1``);
- a sequence holding exactly one of the above: what scikit-learn's model
  selection passes as the rows of ``X`` (``GridSearchCV`` over agents).
"""

from dataclasses import dataclass

import numpy as np

__all__ = [
    "EnvSpaces",
    "describe_spaces",
    "import_gymnasium",
    "import_pettingzoo",
    "make_env",
    "make_vector_env",
    "unwrap_env_argument",
]

_INSTALL_HINT = "pip install 'sklears-neural[rl]'"


def import_gymnasium():
    """The ``gymnasium`` module, or an ImportError that says which extra to install."""
    try:
        import gymnasium
    except ImportError as exc:
        raise ImportError(
            "The reinforcement-learning agents need gymnasium, which is not "
            f"installed: {_INSTALL_HINT}."
        ) from exc
    return gymnasium


def import_pettingzoo(user="the multi-agent trainer"):
    """The ``pettingzoo`` module, or an ImportError that says which extra to install.

    ``user`` names what needs it, in the message.
    """
    try:
        import pettingzoo
    except ImportError as exc:
        raise ImportError(
            f"PettingZoo is required by {user} and is not installed: {_INSTALL_HINT}."
        ) from exc
    return pettingzoo


def unwrap_env_argument(env):
    """``env``, or its only element when it is a sequence of one (model selection).

    Raises
    ------
    ValueError
        If ``env`` is an empty sequence, or one of several different
        environments.
    """
    if isinstance(env, (str, bytes)) or callable(env) or _is_env(env):
        return env
    if isinstance(env, np.ndarray):
        env = env.ravel().tolist()
    if isinstance(env, (list, tuple)):
        distinct = []
        for item in env:
            if not any(item is d or (isinstance(item, str) and item == d)
                       for d in distinct):
                distinct.append(item)
        if len(distinct) != 1:
            raise ValueError(
                f"env is a sequence of {len(env)} items holding {len(distinct)} "
                "different environments; an agent trains on one. Pass one "
                "environment id, Env or factory (a sequence of one is accepted "
                "for scikit-learn's model selection)."
            )
        return distinct[0]
    return env


def _is_env(obj):
    gymnasium = import_gymnasium()
    return isinstance(obj, gymnasium.Env)


def make_env(env, *, owner="agent", render_mode=None):
    """An ``Env`` instance from an id, an ``Env`` or a factory.

    Parameters
    ----------
    env : str, gymnasium.Env, callable or sequence of one of them
    owner : str, default="agent"
        Named in error messages.
    render_mode : str or None, default=None
        Passed to ``gymnasium.make`` for id strings.

    Returns
    -------
    gymnasium.Env

    Raises
    ------
    ValueError
        If an id is unknown to Gymnasium (the message names the id).
    TypeError
        If ``env`` is none of the accepted kinds, or a factory returns
        something that is not an ``Env``.
    """
    gymnasium = import_gymnasium()
    env = unwrap_env_argument(env)
    if isinstance(env, str):
        try:
            kwargs = {} if render_mode is None else {"render_mode": render_mode}
            return gymnasium.make(env, **kwargs)
        except gymnasium.error.Error as exc:
            raise ValueError(
                f"{owner}: gymnasium cannot make the environment {env!r} ({exc}). "
                "Pass a registered id (gymnasium.pprint_registry() lists them), "
                "an Env instance, or a callable that returns one."
            ) from None
    if isinstance(env, gymnasium.Env):
        return env
    if callable(env):
        made = env()
        if not isinstance(made, gymnasium.Env):
            raise TypeError(
                f"{owner}: the env factory {env!r:.80} returned a "
                f"{type(made).__name__}, not a gymnasium.Env."
            )
        return made
    raise TypeError(
        f"{owner}: env must be a gymnasium id string, a gymnasium.Env, or a "
        f"callable returning one; got {type(env).__name__}."
    )


def make_vector_env(env, n_envs, *, owner="agent"):
    """``n_envs`` copies of ``env`` in one ``SyncVectorEnv`` (same-step autoreset).

    With same-step autoreset a finished environment is reset inside the
    ``step`` that ended it: the returned observation starts the next
    episode, and ``info["final_obs"]`` holds the last one, from which a
    truncated episode is bootstrapped.

    Parameters
    ----------
    env : str, gymnasium.Env, callable or sequence of one of them
        An ``Env`` instance only when ``n_envs == 1``: copies need an id or
        a factory.
    n_envs : int
    owner : str, default="agent"

    Returns
    -------
    gymnasium.vector.SyncVectorEnv
    """
    gymnasium = import_gymnasium()
    env = unwrap_env_argument(env)
    if isinstance(env, gymnasium.Env):
        if n_envs != 1:
            raise ValueError(
                f"{owner}: n_envs={n_envs} needs {n_envs} copies of the environment, "
                "but env is one Env instance. Pass its id string or a callable that "
                "makes a new one (e.g. lambda: MyEnv()), or set n_envs=1."
            )
        instance = env
        factories = [lambda: instance]
    else:
        # Fail on a bad id or factory here, with make_env's message, and use
        # the instance as the first copy.
        first = make_env(env, owner=owner)
        factories = [lambda: first] + [
            (lambda: make_env(env, owner=owner)) for _ in range(n_envs - 1)
        ]
    return gymnasium.vector.SyncVectorEnv(
        factories, autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP
    )


@dataclass(frozen=True)
class EnvSpaces:
    """What an agent needs to know of an environment's spaces.

    Attributes
    ----------
    observation_shape : tuple of int
        Shape of one observation as the networks see it (a ``Discrete``
        observation becomes a one-hot vector of its ``n`` values).
    observation_kind : {"box", "discrete"}
    n_observation_values : int or None
        ``n`` of a ``Discrete`` observation space, else None.
    action_kind : {"discrete", "continuous"}
    n_actions : int
        Number of discrete actions, or the number of action components of a
        ``Box`` (its flattened size).
    action_shape : tuple of int
        ``()`` for discrete actions.
    action_low, action_high : ndarray or None
        Bounds of a ``Box`` action space, flattened; None for discrete.
    """

    observation_shape: tuple
    observation_kind: str
    n_observation_values: object
    action_kind: str
    n_actions: int
    action_shape: tuple
    action_low: object = None
    action_high: object = None

    @property
    def n_features(self):
        """Width of a flattened observation: the networks' input."""
        return int(np.prod(self.observation_shape)) if self.observation_shape else 1


_OBSERVATION_WORDS = {
    "box": "Box (real vectors or arrays)",
    "discrete": "Discrete (one-hot encoded)",
}
_ACTION_WORDS = {
    "discrete": "Discrete",
    "continuous": "Box (continuous, clipped to its bounds)",
}


def describe_spaces(observation_space, action_space, *, owner,
                    observations=("box", "discrete"), actions=("discrete",)):
    """Check the spaces against what an agent supports, and describe them.

    Parameters
    ----------
    observation_space, action_space : gymnasium.spaces.Space
    owner : str
        The agent's class name, for messages.
    observations : sequence of {"box", "discrete"}
        Observation spaces the agent supports.
    actions : sequence of {"discrete", "continuous"}
        Action spaces the agent supports.

    Returns
    -------
    EnvSpaces

    Raises
    ------
    ValueError
        If a space is not supported: the message names the space and what
        the agent supports.
    """
    spaces = import_gymnasium().spaces

    def refuse(which, space, supported, words):
        accepted = ", ".join(words[k] for k in supported)
        raise ValueError(
            f"{owner} does not support the {which} space {space!r:.120}: it "
            f"supports {accepted}. Wrap the environment to convert it (e.g. "
            "gymnasium.wrappers.FlattenObservation for Dict/Tuple observations)."
        )

    if isinstance(observation_space, spaces.Box) and "box" in observations:
        if not np.issubdtype(observation_space.dtype, np.number):
            refuse("observation", observation_space, observations, _OBSERVATION_WORDS)
        observation = dict(observation_shape=tuple(int(d) for d in observation_space.shape),
                           observation_kind="box", n_observation_values=None)
    elif isinstance(observation_space, spaces.Discrete) and "discrete" in observations:
        n = int(observation_space.n)
        observation = dict(observation_shape=(n,), observation_kind="discrete",
                           n_observation_values=n)
    else:
        refuse("observation", observation_space, observations, _OBSERVATION_WORDS)

    if isinstance(action_space, spaces.Discrete) and "discrete" in actions:
        if int(action_space.start) != 0:
            raise ValueError(
                f"{owner} needs a Discrete action space starting at 0, got "
                f"{action_space!r}. Wrap the environment to shift its actions."
            )
        action = dict(action_kind="discrete", n_actions=int(action_space.n),
                      action_shape=())
    elif isinstance(action_space, spaces.Box) and "continuous" in actions:
        low = np.asarray(action_space.low, dtype=np.float64).ravel()
        high = np.asarray(action_space.high, dtype=np.float64).ravel()
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError(
                f"{owner} needs a bounded Box action space (actions are clipped "
                f"to it), got {action_space!r:.120} with infinite bounds. Wrap the "
                "environment to give it bounds (gymnasium.wrappers.ClipAction "
                "reads them too)."
            )
        action = dict(action_kind="continuous", n_actions=int(low.size),
                      action_shape=tuple(int(d) for d in action_space.shape),
                      action_low=low, action_high=high)
    else:
        refuse("action", action_space, actions, _ACTION_WORDS)
    return EnvSpaces(**observation, **action)


def seed_env(env, seed):
    """Reset ``env`` with ``seed`` and seed its action space; returns the reset output.

    Gymnasium's rule: seed once, at the first reset; later resets continue
    the environment's own generator.
    """
    env.action_space.seed(seed)
    return env.reset(seed=seed)
