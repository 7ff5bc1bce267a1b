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

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core._compat import Interval, StrOptions, _fit_context
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.seeding import draw_seed
from sklears_neural.rl import _env
from sklears_neural.rl._base import BaseAgent
from sklears_neural.rl._multi_agent_networks import (  # noqa: F401 (AgentStack: public)
    AgentStack,
    MultiAgentActorCritic,
    _NumpyPolicy,
)
from sklears_neural.rl._parallel_env import _Encoder, describe_agents, make_parallel_env

__all__ = ["MultiAgentTrainer"]

MODES = ("independent", "shared", "centralized")


# -- rollouts ----------------------------------------------------------------


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
        self._fit_or_roll_back(parallel_env, budget, close=parallel_env is not env_arg)
        return self

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

    def _fit_on(self, env, budget):
        spaces = describe_agents(env)
        self.agents_ = spaces["agents"]
        self.observation_specs_ = spaces["observation_specs"]
        self.action_counts_ = spaces["n_actions"]
        self.state_size_ = spaces["state_size"]
        self.uses_state_ = spaces["uses_state"]
        # One stream of joint steps: an episode ends for the whole team.
        self._train(env, budget, spaces, n_envs=1)

    def _reset_env(self, env, seed):
        for offset, agent in enumerate(self.agents_):
            env.action_space(agent).seed(seed + offset)
        observations, _ = env.reset(seed=seed)
        return observations

    def _learn(self, env, observation_dict, budget, trainer, log):
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
