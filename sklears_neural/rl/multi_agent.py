"""Multi-agent reinforcement learning on PettingZoo's parallel API.

:class:`MultiAgentTrainer` trains one policy per agent of a
``pettingzoo.ParallelEnv`` with the PPO clipped objective, in one of three
modes that differ only in what the networks see:

- ``"independent"``: every agent has an actor and a critic of its own, each
  reading that agent's observation (independent PPO).
- ``"shared"``: one actor and one critic for all agents, reading the
  agent's observation with a one-hot agent id appended (parameter sharing).
- ``"centralized"``: one actor per agent on its own observation, and one
  critic that reads the global state, ``env.state()`` where the environment
  defines it, else every agent's observation concatenated (MAPPO-style:
  centralized training, decentralized execution).

Observations of different sizes are zero-padded to the largest; an agent's
own actor (independent and centralized modes) gives the padding zero weight
gradients, and in the shared mode the agent id tells the padding apart.
Actions are discrete; agents with fewer actions than the largest action
space have the missing logits masked out.
"""

import copy
import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from torch import nn

from sklearn.utils.validation import check_is_fitted

from sklears_neural.core._compat import Interval, StrOptions, _fit_context
from sklears_neural.core.callbacks import EpochLogger, ProgressBar
from sklears_neural.core.history import History
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.registry import register_estimator, register_module
from sklears_neural.core.seeding import draw_seed, torch_generator
from sklears_neural.core.trainer import Trainer
from sklears_neural.exceptions import TrainingDivergedError
from sklears_neural.rl import _env
from sklears_neural.rl._base import (
    BaseAgent,
    EpisodeLog,
    NonFiniteRewardError,
    _LossDiverged,
)

__all__ = ["MultiAgentTrainer"]

MODES = ("independent", "shared", "centralized")


# -- networks ----------------------------------------------------------------


class AgentStack(nn.Module):
    """MLPs for several agents evaluated in one batched product.

    ``n_heads`` sets of weights, each an MLP ``n_inputs -> hidden -> n_outputs``.
    Input ``(batch, n_agents, n_inputs)`` maps to ``(batch, n_agents,
    n_outputs)``: with ``n_heads == n_agents`` agent ``i`` runs head ``i``
    (separate parameters), with ``n_heads == 1`` every agent runs the same
    head (parameter sharing).

    Parameters
    ----------
    n_heads : int
    n_inputs : int
    hidden_layer_sizes : list of int
    n_outputs : int
    activation : {"tanh", "relu"}
    output_gain : float
        Gain of the orthogonal initialization of the last layer (0.01 for
        policy logits, so every policy starts close to uniform; 1 for values).
    """

    def __init__(self, n_heads, n_inputs, hidden_layer_sizes, n_outputs, activation,
                 output_gain):
        super().__init__()
        sizes = [n_inputs, *hidden_layer_sizes, n_outputs]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(n_heads, fan_in, fan_out))
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:])
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n_heads, 1, fan_out)) for fan_out in sizes[1:]
        )
        self.activation = {"tanh": torch.tanh, "relu": torch.relu}[activation]
        self.output_gain = output_gain
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        gain = math.sqrt(2.0)
        last = len(self.weights) - 1
        with torch.no_grad():
            for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
                for head in weight:
                    # (fan_in, fan_out): transposed, as orthogonal_ wants rows out.
                    nn.init.orthogonal_(head.T, gain=self.output_gain if layer == last
                                        else gain, generator=generator)
                bias.zero_()

    def forward(self, inputs):
        # (batch, agents, in) -> (agents, batch, in); a head dim of 1 broadcasts.
        hidden = inputs.transpose(0, 1)
        last = len(self.weights) - 1
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            hidden = torch.matmul(hidden, weight) + bias
            if layer < last:
                hidden = self.activation(hidden)
        return hidden.transpose(0, 1)


@register_module
class MultiAgentActorCritic(nn.Module):
    """Actors and critic of :class:`MultiAgentTrainer`, for one of its modes.

    Parameters
    ----------
    mode : {"independent", "shared", "centralized"}
    observation_sizes : list of int
        Flattened observation size of each agent.
    n_actions : list of int
        Number of discrete actions of each agent.
    state_size : int
        Size of the global state the centralized critic reads.
    hidden_layer_sizes : list of int
    activation : {"tanh", "relu"}
    """

    def __init__(self, mode, observation_sizes, n_actions, state_size,
                 hidden_layer_sizes,
                 activation):
        super().__init__()
        n_agents = len(observation_sizes)
        self.mode = mode
        self.n_agents = n_agents
        n_inputs = max(observation_sizes) + (n_agents if mode == "shared" else 0)
        heads = 1 if mode == "shared" else n_agents
        self.actor = AgentStack(heads, n_inputs, hidden_layer_sizes, max(n_actions),
                                activation, output_gain=0.01)
        if mode == "centralized":
            self.critic = AgentStack(1, state_size, hidden_layer_sizes, n_agents,
                                     activation, output_gain=1.0)
        else:
            self.critic = AgentStack(heads, n_inputs, hidden_layer_sizes, 1,
                                     activation, output_gain=1.0)
        invalid = torch.zeros(n_agents, max(n_actions), dtype=torch.bool)
        for agent, count in enumerate(n_actions):
            invalid[agent, count:] = True
        self.register_buffer("invalid_actions", invalid, persistent=False)
        self.register_buffer("agent_ids", torch.eye(n_agents), persistent=False)

    def reset_parameters(self, generator=None):
        self.actor.reset_parameters(generator=generator)
        self.critic.reset_parameters(generator=generator)

    def _with_ids(self, observations):
        if self.mode != "shared":
            return observations
        ids = self.agent_ids.to(observations.dtype)
        ids = ids.expand(observations.shape[0], -1, -1)
        return torch.cat([observations, ids], dim=-1)

    def logits(self, observations):
        """``(batch, n_agents, n_obs) -> (batch, n_agents, max_actions)``,
        actions an agent lacks at the dtype's lowest value."""
        logits = self.actor(self._with_ids(observations))
        return logits.masked_fill(self.invalid_actions, torch.finfo(logits.dtype).min)

    def values(self, observations, states):
        """Each agent's value, ``(batch, n_agents)``: from its observation, or
        (centralized) every agent's from the global ``states`` ``(batch, n_state)``."""
        if self.mode == "centralized":
            return self.critic(states.unsqueeze(1)).squeeze(1)
        return self.critic(self._with_ids(observations)).squeeze(-1)

    def forward(self, observations):
        return self.logits(observations)


class _NumpyPolicy:
    """The acting half of a :class:`MultiAgentActorCritic` in NumPy float64.

    A rollout evaluates the networks on one joint observation per step;
    torch's per-call overhead (and its thread pool's wake-ups on a busy
    machine: a 2-thread softmax of 6 numbers measured 1.3 ms against
    1.2 us on one thread) dwarfs the arithmetic there, so acting runs on
    NumPy copies of the weights, taken after every update. Updates, which
    need gradients and see whole minibatches, stay in torch.
    """

    def __init__(self, module):
        def layers(stack):
            return [(w.detach().cpu().double().numpy(),
                     b.detach().cpu().double().numpy())
                    for w, b in zip(stack.weights, stack.biases)]
        self.mode = module.mode
        self.activation = np.tanh if module.actor.activation is torch.tanh else (
            lambda h: np.maximum(h, 0.0))
        self.actor = layers(module.actor)
        self.critic = layers(module.critic)
        self.invalid = module.invalid_actions.cpu().numpy()
        self.ids = np.eye(module.n_agents)
        self.last_action = (~self.invalid).sum(axis=1) - 1

    def _run(self, layers, inputs):
        # (agents, in) -> (agents, 1, in) @ (heads, in, out); heads of 1 broadcast.
        hidden = inputs[:, None, :]
        for layer, (weight, bias) in enumerate(layers):
            hidden = np.matmul(hidden, weight) + bias
            if layer < len(layers) - 1:
                hidden = self.activation(hidden)
        return hidden[:, 0, :]

    def _inputs(self, observations):
        if self.mode == "shared":
            return np.concatenate([observations, self.ids], axis=1)
        return observations

    def probabilities(self, observations):
        """``(n_agents, max_actions)`` action probabilities."""
        logits = self._run(self.actor, self._inputs(observations))
        logits[self.invalid] = -np.inf
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def values(self, observations, state):
        """``(n_agents,)`` values."""
        if self.mode == "centralized":
            return self._run(self.critic, state[None, :])[0]
        return self._run(self.critic, self._inputs(observations))[:, 0]


    def sample(self, probs, rng):
        """One action per agent from ``probs``, by inverting the cumulative sums."""
        draws = rng.random((len(probs), 1))
        actions = (np.cumsum(probs, axis=1) < draws).sum(axis=1)
        # Rounding can leave the cumulative sum a hair below a draw near 1.
        return np.minimum(actions, self.last_action)


# -- environments ------------------------------------------------------------


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
    try:
        from pettingzoo import ParallelEnv
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "MultiAgentTrainer needs PettingZoo. Install the rl extra: "
            "pip install 'sklears-neural[rl]'."
        ) from error
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


# -- rollouts and updates ----------------------------------------------------


class _Rollout:
    """``n_steps`` joint steps of every agent, as arrays."""

    def __init__(self, n_steps, n_agents, n_obs, state_size):
        self.observations = np.zeros((n_steps, n_agents, n_obs), np.float32)
        self.states = np.zeros((n_steps, state_size), np.float32)
        self.actions = np.zeros((n_steps, n_agents), np.int64)
        self.values = np.zeros((n_steps, n_agents), np.float32)
        self.rewards = np.zeros((n_steps, n_agents), np.float32)
        # 1 where the agent's episode ended at this step (no bootstrap after).
        self.dones = np.zeros((n_steps, n_agents), np.float32)
        self.alive = np.zeros((n_steps, n_agents), np.float32)

    def advantages(self, last_values, gamma, gae_lambda):
        """GAE(lambda) advantages and the value targets (returns)."""
        n_steps = len(self.rewards)
        advantages = np.zeros_like(self.rewards)
        running = np.zeros(self.rewards.shape[1], np.float32)
        for t in range(n_steps - 1, -1, -1):
            next_values = last_values if t == n_steps - 1 else self.values[t + 1]
            not_done = 1.0 - self.dones[t]
            delta = self.rewards[t] + gamma * next_values * not_done - self.values[t]
            running = (delta + gamma * gae_lambda * not_done * running) * self.alive[t]
            advantages[t] = running
        return advantages, advantages + self.values

    def truncate(self, n_steps):
        """Keep the first ``n_steps`` steps (training stopped mid-rollout)."""
        for name, array in vars(self).items():
            setattr(self, name, array[:n_steps])


def _log_probs(logits, actions):
    """Log-probability of ``actions`` ``(batch, n_agents)`` under ``logits``."""
    log_all = torch.log_softmax(logits, dim=-1)
    return log_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


# -- the estimator -------------------------------------------------------------


@register_estimator
class MultiAgentTrainer(BaseAgent):
    """PPO for every agent of a PettingZoo parallel environment.

    Independent learners, parameter sharing, or decentralized actors with a
    centralized critic (MAPPO-style), chosen by ``mode``; everything else is
    the same PPO, so the modes compare on equal terms.

    Parameters
    ----------
    mode : {"independent", "shared", "centralized"}, default="centralized"
        ``"independent"``: one actor and one critic per agent, each on that
        agent's observation. ``"shared"``: one actor and one critic for all
        agents, on the observation with a one-hot agent id appended.
        ``"centralized"``: one actor per agent on its observation, one
        critic on the global state (``env.state()`` where the environment
        has a ``state_space``, else every agent's observation concatenated)
        with one value output per agent.
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Hidden layers of every actor and critic.
    activation : {"tanh", "relu"}, default="tanh"
    solver : str, default="adam"
        One of the core's stochastic solvers, for actors and critics alike.
    learning_rate_init : float, default=1e-3
    gamma : float, default=0.99
        Discount factor.
    total_timesteps : int, default=50_000
        Joint environment steps ``fit`` trains for (one joint step moves
        every live agent once), unless ``fit`` is given its own.
    n_steps : int, default=256
        Joint steps per rollout; each rollout is followed by one PPO update.
    batch_size : int, default=64
        Joint steps per minibatch: every agent's transition of a step lands
        in the same minibatch, so the centralized critic sees whole states.
    n_epochs : int, default=4
        Passes over each rollout.
    gae_lambda : float, default=0.95
        GAE's lambda.
    clip_range : float, default=0.2
        PPO's clip of the probability ratio.
    ent_coef : float, default=0.01
        Weight of the entropy bonus.
    vf_coef : float, default=0.5
        Weight of the value loss.
    normalize_advantage : bool, default=True
        Standardize the advantages of each minibatch.
    clip_grad_norm : float or None, default=0.5
        Clip the global gradient norm of every update.
    device : str or torch.device, default="auto"
        ``"auto"`` keeps networks this small on the CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the actions drawn during training, the minibatch
        order and ``env.reset(seed=...)``: an int reproduces a fit exactly.
    verbose : int, default=0
        1 logs each episode's return, 2 adds a progress bar.
    callbacks : list of Callback or None, default=None
        Core callbacks; ``on_epoch_end`` runs once per episode.

    Attributes
    ----------
    module_ : MultiAgentActorCritic
        The actors and critic(s).
    agents_ : list of str
        The environment's ``possible_agents``, in the order of the networks.
    observation_specs_ : list of tuple
        Per agent, ``("box", size)`` or ``("discrete", n, start)``.
    action_counts_ : list of int
        Per agent, the size of its Discrete action space.
    state_size_ : int
        Width of the critic's global state (centralized mode).
    uses_state_ : bool
        Whether the global state is ``env.state()`` (else the observations).
    history_ : History
        One record per episode: ``episode_return`` (team return, see
        :meth:`score`), ``episode_length``, ``timesteps``, and the mean
        ``policy_loss``, ``value_loss`` and ``entropy`` of the updates since
        the last record.
    n_timesteps_ : int
        Joint steps taken by the last ``fit``.
    n_episodes_ : int
        Episodes finished in the last ``fit``.
    callbacks_ : list of Callback
        The copies of ``callbacks`` the last ``fit`` trained with.

    Notes
    -----
    Each minibatch minimizes, over the live agents ``i`` of its steps ``t``,

    .. math::

        -\\min(\\rho_{ti} A_{ti}, \\mathrm{clip}(\\rho_{ti}, 1 \\pm \\epsilon) A_{ti})
        + c_v (V_i(\\cdot_t) - R_{ti})^2 - c_e H(\\pi_i(\\cdot \\mid o_{ti}))

    with ``rho`` the probability ratio to the rollout's policy, ``A`` the
    GAE(lambda) advantage of agent ``i``'s own rewards and ``R = A + V``.
    ``V_i`` reads ``o_ti`` (independent), ``(o_ti, onehot(i))`` (shared) or
    the global state ``s_t`` (centralized). A truncated episode is
    bootstrapped from the value of its last observation; a terminated one
    is not. Observations of different sizes are zero-padded to the
    largest: per-agent actors give the padding zero gradients, and the
    shared actor tells agents apart by the id. Acting during rollouts runs
    on NumPy copies of the weights (one joint observation per step is far
    below torch's per-call overhead); updates run in torch.
    """

    _parameter_constraints = {
        # The base's entries for the parameters this class takes (and only
        # those: the base may grow parameters this class does not have).
        **{name: rule for name, rule in BaseAgent._parameter_constraints.items()
           if name in ("hidden_layer_sizes", "solver", "learning_rate_init", "gamma",
                       "total_timesteps", "clip_grad_norm", "device", "random_state",
                       "verbose", "callbacks")},
        "mode": [StrOptions(set(MODES))],
        # The rollouts act in NumPy, which has these two.
        "activation": [StrOptions({"tanh", "relu"})],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_epochs": [Interval(Integral, 1, None, closed="left")],
        "gae_lambda": [Interval(Real, 0, 1, closed="both")],
        "clip_range": [Interval(Real, 0, None, closed="neither")],
        "ent_coef": [Interval(Real, 0, None, closed="left")],
        "vf_coef": [Interval(Real, 0, None, closed="left")],
        "normalize_advantage": ["boolean"],
    }

    def __init__(
        self,
        mode="centralized",
        *,
        hidden_layer_sizes=(64, 64),
        activation="tanh",
        solver="adam",
        learning_rate_init=1e-3,
        gamma=0.99,
        total_timesteps=50_000,
        n_steps=256,
        batch_size=64,
        n_epochs=4,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        normalize_advantage=True,
        clip_grad_norm=0.5,
        device="auto",
        random_state=None,
        verbose=0,
        callbacks=None,
    ):
        self.mode = mode
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.gamma = gamma
        self.total_timesteps = total_timesteps
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.gae_lambda = gae_lambda
        self.clip_range = clip_range
        self.ent_coef = ent_coef
        self.vf_coef = vf_coef
        self.normalize_advantage = normalize_advantage
        self.clip_grad_norm = clip_grad_norm
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    # -- fit -----------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, env, total_timesteps=None):
        """Train every agent's policy by playing ``env``.

        Parameters
        ----------
        env : pettingzoo.ParallelEnv or callable
            A parallel environment, or a callable with no argument that
            returns one (made once, closed after). A sequence holding one of
            them is accepted too, as scikit-learn's model selection passes it.
        total_timesteps : int or None, default=None
            Joint environment steps to train for; None uses the
            ``total_timesteps`` parameter.

        Returns
        -------
        self : MultiAgentTrainer

        Raises
        ------
        TypeError
            If ``env`` is not a parallel environment (an AEC one gets the
            conversion to use), or an agent's action space is not Discrete.
        NonFiniteRewardError
            If the environment returns a NaN or infinite reward; the trainer
            keeps the weights of its last update.
        """
        budget = self._budget(total_timesteps)
        env_arg = _env.unwrap_env_argument(env)
        parallel_env = make_parallel_env(env_arg)
        saved = dict(self.__dict__)
        try:
            self._fit_parallel(parallel_env, budget)
        except (NonFiniteRewardError, TrainingDivergedError):
            raise
        except BaseException:
            # Nothing half-trained looks fitted.
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise
        finally:
            if parallel_env is not env_arg:
                parallel_env.close()
        return self

    def _budget(self, total_timesteps):
        if total_timesteps is None:
            return self.total_timesteps
        if (isinstance(total_timesteps, Integral)
                and not isinstance(total_timesteps, bool) and total_timesteps >= 1):
            return int(total_timesteps)
        raise ValueError(
            f"total_timesteps must be an int >= 1 or None, got {total_timesteps!r}."
        )

    def _build_module(self, spaces):
        return ModuleSpec(MultiAgentActorCritic, {
            "mode": self.mode,
            "observation_sizes": [spec[1] for spec in spaces["observation_specs"]],
            "n_actions": list(spaces["n_actions"]),
            "state_size": int(spaces["state_size"]),
            "hidden_layer_sizes": [int(h) for h in self.hidden_layer_sizes],
            "activation": self.activation,
        })

    def _encoder(self):
        return _Encoder(self.agents_, self.observation_specs_, self.uses_state_)

    def _fit_parallel(self, env, budget):
        # BaseAgent._fit_on's steps, for a parallel environment instead of a
        # gymnasium vector environment.
        spaces = describe_agents(env)
        self.agents_ = spaces["agents"]
        self.observation_specs_ = spaces["observation_specs"]
        self.action_counts_ = spaces["n_actions"]
        self.state_size_ = spaces["state_size"]
        self.uses_state_ = spaces["uses_state"]
        self._generator = torch_generator(self.random_state)
        self._setup_networks(spaces, self.device)
        self.history_ = History()
        self.n_timesteps_ = 0
        self.callbacks_ = [copy.deepcopy(cb) for cb in self.callbacks or []]
        callbacks = list(self.callbacks_)
        if self.verbose:
            callbacks.insert(0, EpochLogger(keys=("episode_return", "timesteps")))
            if self.verbose >= 2:
                callbacks.insert(1, ProgressBar(unit="episode"))
        trainer = Trainer(self.module_, None, self._optimizer, callbacks=callbacks,
                          generator=self._generator, history=self.history_,
                          clip_grad_norm=self.clip_grad_norm)
        last_good = {"state": trainer.snapshot()}

        def on_record():
            last_good["state"] = trainer.snapshot(into=last_good["state"])
            self.n_timesteps_ = log.timesteps

        log = EpisodeLog(trainer, 1, on_record=on_record)
        seed = draw_seed(self._generator)
        for offset, agent in enumerate(self.agents_):
            env.action_space(agent).seed(seed + offset)
        observations, _ = env.reset(seed=seed)
        trainer.begin()
        try:
            self._learn_parallel(env, observations, budget, trainer, log)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        except NonFiniteRewardError:
            self._finish(trainer, log)
            raise
        except _LossDiverged as exc:
            trainer.restore(last_good["state"])
            self._finish(trainer, log)
            raise TrainingDivergedError(
                f"MultiAgentTrainer: the training loss ({', '.join(exc.keys)}) became "
                f"NaN or infinite by timestep {exc.timestep}; the trainer keeps the "
                "weights of the last recorded episode. Lower learning_rate_init, or "
                "scale the rewards.",
                epoch=len(self.history_) + 1,
                last_finite_state={
                    k: v.cpu().numpy() for k, v in last_good["state"].items()},
            ) from None
        self._finish(trainer, log)

    def _learn_parallel(self, env, observation_dict, budget, trainer, log):
        encoder = self._encoder()
        n_agents = len(self.agents_)
        observations, alive = encoder.observations(observation_dict)
        state = encoder.state(env, observations)
        rng = np.random.default_rng(draw_seed(self._generator))
        trainer.begin_epoch()
        while log.timesteps < budget and not log.should_stop:
            n_steps = min(self.n_steps, budget - log.timesteps)
            rollout = _Rollout(n_steps, n_agents, encoder.n_obs, self.state_size_)
            policy = _NumpyPolicy(self.module_)
            for t in range(n_steps):
                actions = policy.sample(policy.probabilities(observations), rng)
                rollout.observations[t] = observations
                rollout.states[t] = state
                rollout.actions[t] = actions
                rollout.values[t] = policy.values(observations, state)
                rollout.alive[t] = alive
                observation_dict, rewards, terminations, truncations, _ = env.step(
                    {a: int(actions[i]) for i, a in enumerate(self.agents_)
                     if alive[i]})
                reward = alive * np.array(
                    [float(rewards.get(a, 0.0)) for a in self.agents_])
                self._check_rewards(reward, log.timesteps + 1)
                terminated = np.array([bool(terminations.get(a, False))
                                       for a in self.agents_]) & (alive > 0)
                truncated = np.array([bool(truncations.get(a, False))
                                      for a in self.agents_])
                truncated &= (alive > 0) & ~terminated
                next_observations, next_alive = encoder.observations(observation_dict)
                rollout.rewards[t] = reward
                if truncated.any():
                    # A time limit is not the end of the task: bootstrap from
                    # the value of the observation the episode was cut at.
                    final = policy.values(next_observations,
                                          encoder.state(env, next_observations))
                    rollout.rewards[t] += self.gamma * final * truncated
                rollout.dones[t] = terminated | truncated
                episode_over = not env.agents
                log.step(np.array([reward.mean()]), np.array([episode_over]))
                if episode_over:
                    trainer.begin_epoch()
                    observation_dict, _ = env.reset()
                    next_observations, next_alive = encoder.observations(
                        observation_dict)
                observations, alive = next_observations, next_alive
                state = encoder.state(env, observations)
                if log.should_stop:
                    rollout.truncate(t + 1)
                    break
            last_values = policy.values(observations, state) * alive
            self._update(rollout, last_values, trainer, log)

    def _update(self, rollout, last_values, trainer, log):
        """``n_epochs`` passes of PPO minibatch steps over ``rollout``."""
        advantages, returns = rollout.advantages(
            last_values, self.gamma, self.gae_lambda)
        device = next(self.module_.parameters()).device

        def tensor(array):
            return torch.as_tensor(array, device=device)

        observations, states = tensor(rollout.observations), tensor(rollout.states)
        actions, alive = tensor(rollout.actions), tensor(rollout.alive)
        advantages, returns = tensor(advantages), tensor(returns)
        module = self.module_
        with torch.no_grad():
            # The log-probabilities the ratios start from, in torch's own
            # arithmetic, so the first minibatch's ratios are exactly 1.
            old_log_probs = _log_probs(module.logits(observations), actions)
        n = len(rollout.rewards)
        for _ in range(self.n_epochs):
            order = torch.randperm(n, generator=self._generator)
            for begin in range(0, n, self.batch_size):
                index = order[begin:begin + self.batch_size].to(device)
                mask = alive[index]
                count = mask.sum().clamp(min=1.0)
                log_all = torch.log_softmax(module.logits(observations[index]), dim=-1)
                log_probs = log_all.gather(-1, actions[index].unsqueeze(-1)).squeeze(-1)
                # Masked actions have probability 0: 0 * log(min) = 0.
                entropy = -((log_all.exp() * log_all).sum(-1) * mask).sum() / count
                adv = advantages[index]
                if self.normalize_advantage:
                    mean = (adv * mask).sum() / count
                    std = (((adv - mean) ** 2 * mask).sum() / count).sqrt()
                    adv = (adv - mean) / (std + 1e-8)
                ratio = torch.exp(log_probs - old_log_probs[index])
                clipped = ratio.clamp(1 - self.clip_range, 1 + self.clip_range)
                surrogate = torch.minimum(ratio * adv, clipped * adv)
                policy_loss = -(surrogate * mask).sum() / count
                values = module.values(observations[index], states[index])
                value_loss = ((values - returns[index]) ** 2 * mask).sum() / count
                loss = policy_loss + self.vf_coef * value_loss - self.ent_coef * entropy
                trainer.step(loss)
                log.add_losses(policy_loss=policy_loss, value_loss=value_loss,
                               entropy=entropy)

    # -- predict and score ---------------------------------------------------

    def predict(self, observations, deterministic=True):
        """Each agent's action for its observation.

        Parameters
        ----------
        observations : dict
            ``{agent: observation}`` for some or all of ``agents_`` (the
            first element of what ``env.reset()`` and ``env.step()`` return).
        deterministic : bool, default=True
            The most probable action; False samples from the policy (and
            draws from the trainer's generator).

        Returns
        -------
        dict
            ``{agent: int}`` for every agent in ``observations``.
        """
        check_is_fitted(self, "module_")
        if not isinstance(observations, dict):
            raise TypeError(
                "MultiAgentTrainer.predict expects a dict {agent: observation}, as "
                f"a parallel environment returns; got {type(observations).__name__}."
            )
        unknown = [a for a in observations if a not in self.agents_]
        if unknown:
            raise ValueError(
                f"predict got observations of unknown agents {unknown}; the trainer "
                f"was fitted on {self.agents_}."
            )
        obs, alive = self._encoder().observations(observations)
        device = next(self.module_.parameters()).device
        with torch.no_grad():
            logits = self.module_.logits(torch.as_tensor(obs, device=device)[None])[0]
            if deterministic:
                actions = logits.argmax(-1)
            else:
                actions = torch.multinomial(torch.softmax(logits, -1), 1,
                                            generator=self._generator)[:, 0]
        return {a: int(actions[i]) for i, a in enumerate(self.agents_) if alive[i]}

    def score(self, env, y=None, *, n_episodes=10, seed=None):
        """Mean team return over ``n_episodes`` episodes of deterministic actions.

        The team return of an episode is the mean over agents of each
        agent's summed reward: the return of the team reward, where every
        agent receives it.

        Parameters
        ----------
        env : pettingzoo.ParallelEnv or callable
            As in :meth:`fit`.
        y : None
            Ignored; there for scikit-learn's model selection.
        n_episodes : int, default=10
        seed : int or None, default=None
            Seeds the first reset; None uses ``random_state`` when it is an
            int, so repeated scores of one trainer are equal.

        Returns
        -------
        float
        """
        check_is_fitted(self, "module_")
        return float(np.mean(self._team_returns(env, n_episodes, seed)))

    def _team_returns(self, env, n_episodes, seed):
        if isinstance(n_episodes, bool) or not (isinstance(n_episodes, Integral)
                                                and n_episodes >= 1):
            raise ValueError(f"n_episodes must be an int >= 1, got {n_episodes!r}.")
        env_arg = _env.unwrap_env_argument(env)
        instance = make_parallel_env(env_arg)
        if seed is None and isinstance(self.random_state, Integral):
            seed = int(self.random_state)
        returns = []
        try:
            observations, _ = instance.reset(seed=seed)
            for _ in range(n_episodes):
                total = 0.0
                while instance.agents:
                    actions = self.predict(
                        {a: observations[a] for a in instance.agents})
                    observations, rewards, _, _, _ = instance.step(actions)
                    total += sum(float(r) for r in rewards.values()) / len(self.agents_)
                returns.append(total)
                observations, _ = instance.reset()
        finally:
            if instance is not env_arg:
                instance.close()
        return np.asarray(returns)
