"""Policy-gradient agents: REINFORCE with a learned baseline, and A2C with GAE.

Both train one :class:`ActorCriticNetwork` (a policy head and a value head,
one optimizer) on rollouts of the environment, with the loss

.. math::

    L = -\\frac{1}{T}\\sum_t \\hat A_t \\log \\pi(a_t \\mid s_t)
        + c_v \\frac{1}{T}\\sum_t (V(s_t) - \\hat R_t)^2
        - c_e \\frac{1}{T}\\sum_t H(\\pi(\\cdot \\mid s_t))

where REINFORCE takes Monte-Carlo returns of whole episodes
(:math:`\\hat R_t = G_t`, :math:`\\hat A_t = G_t - V(s_t)`) and A2C takes
generalized advantage estimates over ``n_steps`` of ``n_envs`` environments
(see :func:`gae_advantages`).
"""

import math
from numbers import Integral, Real

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sklears_neural.core._compat import Interval
from sklears_neural.core.layers import MLP, ModuleSpec
from sklears_neural.core.registry import register_estimator, register_module
from sklears_neural.rl._base import BaseAgent
from sklears_neural.rl._fused import PlainForward

__all__ = ["ActorCriticAgent", "ActorCriticNetwork", "REINFORCEAgent", "gae_advantages"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@register_module
class ActorCriticNetwork(nn.Module):
    """A policy MLP and a value MLP side by side.

    Parameters
    ----------
    n_inputs : int
    hidden_layer_sizes : list of int
        Hidden layers of each of the two MLPs.
    n_actions : int
        Logits of a Categorical policy, or the mean's width of a Gaussian one.
    activation : str or (str, dict), default="tanh"
    continuous : bool, default=False
        A Gaussian policy with a state-independent learned log standard
        deviation (``log_std``, one per action component).
    log_std_init : float, default=0.0

    Notes
    -----
    :meth:`reset_parameters` draws the weights as the reference A2C and
    PPO code does (OpenAI Baselines, Stable-Baselines3): orthogonal
    matrices (Saxe et al., 2013) with gain :math:`\\sqrt 2` in the hidden
    layers, 0.01 in the policy's output layer and 1 in the value's, and
    zero biases. The small policy head starts the policy near uniform (or
    a Gaussian's mean near 0), whatever the observation, so early updates
    are not spent undoing an arbitrary preference (Andrychowicz et al.,
    2021, "What matters in on-policy reinforcement learning?").

    Shapes
    ------
    - input: ``(batch, n_inputs)``
    - output: ``(policy, value)``: ``(batch, n_actions)`` logits or means,
      and ``(batch,)`` state values.
    """

    def __init__(self, n_inputs, hidden_layer_sizes, n_actions, activation="tanh",
                 continuous=False, log_std_init=0.0):
        super().__init__()
        hidden = [int(s) for s in hidden_layer_sizes]
        self.policy = MLP(n_inputs, hidden, int(n_actions), activation)
        self.value = MLP(n_inputs, hidden, 1, activation)
        self.continuous = bool(continuous)
        if self.continuous:
            self.log_std = nn.Parameter(torch.full((int(n_actions),), float(log_std_init)))

    #: Gains of the orthogonal output layers (see Notes).
    POLICY_HEAD_GAIN = 0.01
    VALUE_HEAD_GAIN = 1.0

    @torch.no_grad()
    def reset_parameters(self, generator=None):
        """Draw both MLPs' weights from ``generator`` (see Notes), layer by
        layer, the policy's first; ``log_std`` keeps its start."""
        for mlp, head_gain in ((self.policy, self.POLICY_HEAD_GAIN),
                               (self.value, self.VALUE_HEAD_GAIN)):
            linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
            for i, linear in enumerate(linears):
                gain = head_gain if i == len(linears) - 1 else math.sqrt(2)
                nn.init.orthogonal_(linear.weight, gain=gain, generator=generator)
                linear.bias.zero_()

    def forward(self, x):
        return self.policy(x), self.value(x).squeeze(-1)


def gae_advantages(rewards, values, next_values, terminated, dones, gamma, gae_lambda):
    """Generalized advantage estimates (Schulman et al., 2016) of a rollout.

    Parameters
    ----------
    rewards, values, next_values : torch.Tensor of shape (n_steps, n_envs)
        ``values[t] = V(s_t)``; ``next_values[t] = V(s'_t)``, the value of
        the observation the step led to (an ended episode's last one, not
        the next episode's first).
    terminated, dones : torch.Tensor of bool, shape (n_steps, n_envs)
        Whether the episode terminated (no bootstrap), and whether it ended
        at all (terminated or truncated: advantages do not flow back across).
    gamma, gae_lambda : float

    Returns
    -------
    advantages : torch.Tensor of shape (n_steps, n_envs)
        ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_(t+1)`` with
        ``delta_t = r_t + gamma * (1 - terminated_t) * V(s'_t) - V(s_t)``,
        and ``A`` after the last step taken as 0 (its ``delta`` already
        bootstraps from ``V(s'_t)``). The value targets are
        ``advantages + values``.
    """
    not_terminated = (~terminated).to(values.dtype)
    carry = (~dones).to(values.dtype) * (gamma * gae_lambda)
    deltas = rewards + gamma * not_terminated * next_values - values
    advantages = torch.empty_like(values)
    running = torch.zeros_like(values[0])
    for t in range(len(rewards) - 1, -1, -1):
        running = deltas[t] + carry[t] * running
        advantages[t] = running
    return advantages


class _PolicyGradientAgent(BaseAgent):
    """What REINFORCE and A2C share: the network, acting, the loss."""

    _observation_kinds = ("box", "discrete")
    _action_kinds = ("discrete", "continuous")

    _parameter_constraints: dict = {
        **BaseAgent._parameter_constraints,
        "ent_coef": [Interval(Real, 0, None, closed="left")],
        "vf_coef": [Interval(Real, 0, None, closed="left")],
        "normalize_advantage": ["boolean"],
        "log_std_init": [Interval(Real, None, None, closed="neither")],
    }

    def _build_module(self, spaces):
        sizes = self.hidden_layer_sizes
        hidden = [int(sizes)] if isinstance(sizes, Integral) else [int(s) for s in sizes]
        return ModuleSpec(ActorCriticNetwork, {
            "n_inputs": spaces.n_features, "hidden_layer_sizes": hidden,
            "n_actions": spaces.n_actions, "activation": self.activation,
            "continuous": spaces.action_kind == "continuous",
            "log_std_init": float(self.log_std_init),
        })

    def _continuous(self):
        return self.action_kind_ == "continuous"

    def _sample(self, policy_out):
        """Sampled actions (a tensor) from the policy head's output."""
        if self._continuous():
            noise = torch.randn(policy_out.shape, generator=self._generator)
            return policy_out + self.module_.log_std.exp() * noise.to(policy_out.device)
        probabilities = torch.softmax(policy_out, dim=-1)
        return torch.multinomial(probabilities, 1, generator=self._generator).squeeze(1)

    def _log_prob_entropy(self, policy_out, actions):
        if self._continuous():
            log_std = self.module_.log_std
            z = (actions - policy_out) / log_std.exp()
            log_prob = (-0.5 * z.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)
            entropy = (0.5 + _LOG_SQRT_2PI + log_std).sum().expand(len(actions))
            return log_prob, entropy
        log_p = F.log_softmax(policy_out, dim=-1)
        log_prob = log_p.gather(1, actions.unsqueeze(1)).squeeze(1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        return log_prob, entropy

    def _env_actions(self, actions):
        """Actions as the environment takes them: clipped to a Box's bounds."""
        array = actions.cpu().numpy()
        if self._continuous():
            array = np.clip(array, self.action_low_, self.action_high_).astype(np.float32)
            return array.reshape(len(array), *self.action_shape_)
        return array

    def _act(self, observations, deterministic):
        policy_out, _ = self.module_(observations)
        if deterministic:
            if self._continuous():
                low = torch.as_tensor(self.action_low_, dtype=policy_out.dtype,
                                      device=policy_out.device)
                high = torch.as_tensor(self.action_high_, dtype=policy_out.dtype,
                                       device=policy_out.device)
                return torch.minimum(torch.maximum(policy_out, low), high)
            return policy_out.argmax(dim=-1)
        actions = self._sample(policy_out)
        if self._continuous():
            return torch.as_tensor(self._env_actions(actions).reshape(len(actions), -1))
        return actions

    def _loss(self, features, actions, advantages, returns, log):
        policy_out, values = self.module_(features)
        log_prob, entropy = self._log_prob_entropy(policy_out, actions)
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -(advantages * log_prob).mean()
        value_loss = F.mse_loss(values, returns)
        entropy = entropy.mean()
        loss = policy_loss + self.vf_coef * value_loss - self.ent_coef * entropy
        log.add_losses(loss=loss, policy_loss=policy_loss, value_loss=value_loss,
                       entropy=entropy)
        return loss

    def _rollout(self, env, observations, n_steps, log, until_done=False):
        """``n_steps`` steps of every environment, with the policy sampling.

        ``until_done`` ends the rollout after the first step that ends an
        episode.

        Returns
        -------
        batch : dict of torch.Tensor
            ``features`` (T, N, F), ``actions``, ``rewards``, ``values``,
            ``next_values``, ``terminated``, ``dones`` (T, N).
        observations : ndarray
            The observations to continue from.
        """
        device = self.device_
        features, actions, rewards, values = [], [], [], []
        terminated_steps, done_steps, final = [], [], []
        forward = self._acting_forward()

        def to_features(observations):
            return torch.from_numpy(self._feature_array(observations)).to(device)

        x = to_features(observations)
        for t in range(n_steps):
            with torch.no_grad():
                policy_out, value = forward(x)
                action = self._sample(policy_out)
            observations, reward, terminated, truncated, info = env.step(
                self._env_actions(action))
            reward = np.asarray(reward, dtype=np.float64)
            self._check_rewards(reward, log.timesteps + 1)
            done = np.logical_or(terminated, truncated)
            features.append(x)
            actions.append(action)
            values.append(value)
            rewards.append(torch.as_tensor(reward, dtype=torch.float32))
            terminated_steps.append(torch.as_tensor(np.asarray(terminated)))
            done_steps.append(torch.as_tensor(done))
            for i in np.flatnonzero(done):
                final.append((t, i, info["final_obs"][i]))
            x = to_features(observations)
            log.step(reward, done)
            if log.should_stop or (until_done and done.any()):
                break
        with torch.no_grad():
            last_value = self.module_(x)[1]
            values_t = torch.stack(values)
            next_values = torch.cat([values_t[1:], last_value[None]])
            if final:
                # An ended episode's own last observation: its value is the
                # bootstrap of a truncation (a termination multiplies it by 0).
                final_values = self.module_(self._features(np.stack([f[2] for f in final])))[1]
                rows = torch.as_tensor([f[0] for f in final])
                cols = torch.as_tensor([f[1] for f in final])
                next_values[rows, cols] = final_values
        batch = {
            "features": torch.stack(features),
            "actions": torch.stack(actions),
            "rewards": torch.stack(rewards).to(device),
            "values": values_t,
            "next_values": next_values,
            "terminated": torch.stack(terminated_steps).to(device),
            "dones": torch.stack(done_steps).to(device),
        }
        return batch, observations

    def _acting_forward(self):
        """``module_``'s forward for acting: written out for plain MLPs on the
        CPU (:mod:`~sklears_neural.rl._fused`; the same kernels, so the same
        numbers, without a module call per step), else the module."""
        policy = PlainForward.for_module(self.module_.policy)
        value = PlainForward.for_module(self.module_.value)
        if policy is None or value is None:
            return self.module_
        return lambda x: (policy(x), value(x).squeeze(-1))

    def _update(self, batch, gae_lambda, trainer, log):
        advantages = gae_advantages(
            batch["rewards"], batch["values"], batch["next_values"],
            batch["terminated"], batch["dones"], self.gamma, gae_lambda,
        )
        returns = advantages + batch["values"]
        n = advantages.numel()
        features = batch["features"].reshape(n, -1)
        actions = batch["actions"].reshape(n, *batch["actions"].shape[2:])
        loss = self._loss(features, actions, advantages.reshape(n), returns.reshape(n), log)
        trainer.step(loss)


@register_estimator
class ActorCriticAgent(_PolicyGradientAgent):
    """Advantage actor-critic (A2C) with GAE, on several environments at once.

    Every ``n_steps`` steps of ``n_envs`` environments make one update of a
    policy and a value network, with generalized advantage estimates.
    Discrete actions are Categorical; Box actions Gaussian with a learned,
    state-independent standard deviation, clipped to the Box for the
    environment.

    Parameters
    ----------
    hidden_layer_sizes : array-like of int, default=(64, 64)
        Hidden layers of the policy MLP and of the value MLP.
    activation : str or (str, dict), default="tanh"
    solver : str or (str, dict), default="adam"
        Optimizer, by the core's solver names (not "lbfgs").
    learning_rate_init : float, default=1e-3
    gamma : float, default=0.99
        Discount factor.
    total_timesteps : int, default=100_000
        Environment steps (over all environments) ``fit`` trains for when
        it is not given them.
    n_envs : int, default=8
        Environments stepped together (gymnasium's ``SyncVectorEnv``).
    n_steps : int, default=8
        Steps of each environment per update.
    gae_lambda : float, default=1.0
        GAE's lambda: 1 gives the ``n_steps``-step returns of the original
        A2C (Mnih et al., 2016), bootstrapped from the value after the
        rollout, 0 one-step TD errors. The rollout is short, so the bootstrap
        already bounds the variance; lambda < 1 cuts it further at the price
        of the critic's bias (0.95 suits PPO's rollouts of thousands of steps).
    ent_coef : float, default=0.0
        Weight of the policy's entropy bonus (exploration).
    vf_coef : float, default=0.5
        Weight of the value loss.
    normalize_advantage : bool, default=False
        Standardize the advantages of each update.
    log_std_init : float, default=0.0
        Initial log standard deviation of a Gaussian policy (Box actions).
    clip_grad_norm : float or None, default=0.5
        Rescale each update's gradients to this global L2 norm at most.
    keep_best : bool, default=True
        At the end of ``fit``, keep the weights from when the running mean
        of the last 10 training episodes' returns (``mean_return`` in
        ``history_``) was highest, rather than the final ones: value-based
        and policy-gradient learning can unlearn a working policy late in
        training. It runs the core's ``EarlyStopping`` (which never stops
        here) with ``restore_best_weights``. False keeps the final weights.
    device : str or torch.device, default="auto"
        "auto" keeps networks under 1,000,000 parameters on the CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the sampled actions and the environments.
    verbose : int, default=0
        1 prints each episode's return; 2 adds a progress bar.
    callbacks : list of Callback or None, default=None
        Called by the core trainer; one epoch is one episode.

    Attributes
    ----------
    module_ : ActorCriticNetwork
        Orthogonally initialized, the policy starting near uniform (see
        its Notes).
    history_ : History
        One record per finished episode (of any environment):
        ``episode_return``, ``episode_length``, ``timesteps`` and the mean
        ``loss``, ``policy_loss``, ``value_loss``, ``entropy`` of the
        updates since the previous record.
    n_timesteps_, n_episodes_ : int
    n_features_in_ : int
    observation_shape_ : tuple of int
    discrete_observations_ : int or None
    action_kind_ : {"discrete", "continuous"}
    n_actions_ : int
        Discrete actions, or the components of a Box action.
    action_shape_ : tuple of int
    action_low_, action_high_ : ndarray or None
        A Box's bounds (flattened).
    callbacks_ : list of Callback
    """

    _parameter_constraints: dict = {
        **_PolicyGradientAgent._parameter_constraints,
        "n_envs": [Interval(Integral, 1, None, closed="left")],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "gae_lambda": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(
        self,
        hidden_layer_sizes=(64, 64),
        *,
        activation="tanh",
        solver="adam",
        learning_rate_init=1e-3,
        gamma=0.99,
        total_timesteps=100_000,
        n_envs=8,
        n_steps=8,
        gae_lambda=1.0,
        ent_coef=0.0,
        vf_coef=0.5,
        normalize_advantage=False,
        log_std_init=0.0,
        clip_grad_norm=0.5,
        keep_best=True,
        device="auto",
        random_state=None,
        verbose=0,
        callbacks=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.gamma = gamma
        self.total_timesteps = total_timesteps
        self.n_envs = n_envs
        self.n_steps = n_steps
        self.gae_lambda = gae_lambda
        self.ent_coef = ent_coef
        self.vf_coef = vf_coef
        self.normalize_advantage = normalize_advantage
        self.log_std_init = log_std_init
        self.clip_grad_norm = clip_grad_norm
        self.keep_best = keep_best
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    def _learn(self, env, observations, budget, trainer, log):
        while log.timesteps < budget and not log.should_stop:
            steps = min(self.n_steps, math.ceil((budget - log.timesteps) / env.num_envs))
            batch, observations = self._rollout(env, observations, steps, log)
            self._update(batch, self.gae_lambda, trainer, log)


@register_estimator
class REINFORCEAgent(_PolicyGradientAgent):
    """Monte-Carlo policy gradient (REINFORCE) with a learned value baseline.

    Runs ``episodes_per_update`` whole episodes with the current policy,
    then takes one gradient step on ``-(G_t - V(s_t)) log pi(a_t | s_t)``
    (plus the value loss and the entropy bonus), where ``G_t`` is the
    discounted return from ``t`` to the episode's end (a truncated episode
    bootstraps from the value of its last observation).

    Parameters
    ----------
    hidden_layer_sizes : array-like of int, default=(64, 64)
        Hidden layers of the policy MLP and of the value MLP (the baseline).
    activation : str or (str, dict), default="tanh"
    solver : str or (str, dict), default="adam"
        Optimizer, by the core's solver names (not "lbfgs").
    learning_rate_init : float, default=1e-3
    gamma : float, default=0.99
        Discount factor.
    total_timesteps : int, default=100_000
        Environment steps ``fit`` trains for when it is not given them.
    episodes_per_update : int, default=4
        Whole episodes per gradient step.
    ent_coef : float, default=0.01
        Weight of the policy's entropy bonus (exploration).
    vf_coef : float, default=0.5
        Weight of the value (baseline) loss.
    normalize_advantage : bool, default=True
        Standardize the advantages of each update.
    log_std_init : float, default=0.0
        Initial log standard deviation of a Gaussian policy (Box actions).
    clip_grad_norm : float or None, default=1.0
        Rescale each update's gradients to this global L2 norm at most.
    keep_best : bool, default=True
        At the end of ``fit``, keep the weights from when the running mean
        of the last 10 training episodes' returns (``mean_return`` in
        ``history_``) was highest, rather than the final ones: value-based
        and policy-gradient learning can unlearn a working policy late in
        training. It runs the core's ``EarlyStopping`` (which never stops
        here) with ``restore_best_weights``. False keeps the final weights.
    device : str or torch.device, default="auto"
        "auto" keeps networks under 1,000,000 parameters on the CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the sampled actions and the environment.
    verbose : int, default=0
        1 prints each episode's return; 2 adds a progress bar.
    callbacks : list of Callback or None, default=None
        Called by the core trainer; one epoch is one episode.

    Attributes
    ----------
    module_ : ActorCriticNetwork
        The policy and its baseline.
    history_ : History
        One record per episode: ``episode_return``, ``episode_length``,
        ``timesteps`` and the ``loss``, ``policy_loss``, ``value_loss``,
        ``entropy`` of the last update before it.
    n_timesteps_, n_episodes_ : int
    n_features_in_ : int
    observation_shape_ : tuple of int
    discrete_observations_ : int or None
    action_kind_ : {"discrete", "continuous"}
    n_actions_ : int
    action_shape_ : tuple of int
    action_low_, action_high_ : ndarray or None
    callbacks_ : list of Callback
    """

    _parameter_constraints: dict = {
        **_PolicyGradientAgent._parameter_constraints,
        "episodes_per_update": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        hidden_layer_sizes=(64, 64),
        *,
        activation="tanh",
        solver="adam",
        learning_rate_init=1e-3,
        gamma=0.99,
        total_timesteps=100_000,
        episodes_per_update=4,
        ent_coef=0.01,
        vf_coef=0.5,
        normalize_advantage=True,
        log_std_init=0.0,
        clip_grad_norm=1.0,
        keep_best=True,
        device="auto",
        random_state=None,
        verbose=0,
        callbacks=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.gamma = gamma
        self.total_timesteps = total_timesteps
        self.episodes_per_update = episodes_per_update
        self.ent_coef = ent_coef
        self.vf_coef = vf_coef
        self.normalize_advantage = normalize_advantage
        self.log_std_init = log_std_init
        self.clip_grad_norm = clip_grad_norm
        self.keep_best = keep_best
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    def _n_envs(self):
        return 1

    def _learn(self, env, observations, budget, trainer, log):
        while log.timesteps < budget and not log.should_stop:
            batches, episodes = [], 0
            while (episodes < self.episodes_per_update and log.timesteps < budget
                   and not log.should_stop):
                # One episode to its end (or to the budget, then bootstrapped).
                batch, observations = self._episode(env, observations, budget, log)
                batches.append(batch)
                episodes += 1
            merged = {key: torch.cat([b[key] for b in batches]) for key in batches[0]}
            # lambda = 1: the advantages are Monte-Carlo returns minus the baseline.
            self._update(merged, 1.0, trainer, log)

    def _episode(self, env, observations, budget, log):
        # One episode to its end, or to the budget (then bootstrapped from
        # the value of the observation reached).
        return self._rollout(env, observations, budget - log.timesteps, log,
                             until_done=True)
