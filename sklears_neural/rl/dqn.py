"""Deep Q-learning: DQN, Double DQN, dueling heads, prioritized and n-step replay."""

from numbers import Integral, Real

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sklears_neural.core._compat import Interval, StrOptions
from sklears_neural.core.layers import MLP, ModuleSpec
from sklears_neural.core.registry import register_estimator, register_module
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.seeding import draw_seed
from sklears_neural.rl._base import BaseAgent
from sklears_neural.rl._fused import GreedyActor, TDStep
from sklears_neural.rl.buffers import (
    NStepCollector,
    PrioritizedReplayBuffer,
    ReplayBuffer,
)

__all__ = ["DQNAgent", "DuelingQNetwork"]


@register_module
class DuelingQNetwork(nn.Module):
    """Q-values as a state value plus centred advantages (Wang et al., 2016).

    ``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``, with ``V`` and ``A``
    two linear heads on a shared MLP trunk.

    Parameters
    ----------
    n_inputs : int
    hidden_layer_sizes : list of int
        The trunk's layers; at least one.
    n_actions : int
    activation : str or (str, dict), default="relu"

    Shapes
    ------
    - input: ``(batch, n_inputs)``
    - output: ``(batch, n_actions)``
    """

    def __init__(self, n_inputs, hidden_layer_sizes, n_actions, activation="relu"):
        super().__init__()
        sizes = [int(s) for s in hidden_layer_sizes]
        if not sizes:
            raise ValueError("A dueling network needs at least one hidden layer.")
        self.trunk = MLP(n_inputs, sizes[:-1], sizes[-1], activation)
        self.trunk_activation = ACTIVATIONS.build(activation, width=sizes[-1])
        self.value = nn.Linear(sizes[-1], 1)
        self.advantage = nn.Linear(sizes[-1], int(n_actions))

    def forward(self, x):
        h = self.trunk_activation(self.trunk(x))
        advantage = self.advantage(h)
        return self.value(h) + advantage - advantage.mean(dim=1, keepdim=True)


@register_estimator
class DQNAgent(BaseAgent):
    """Deep Q-network agent for discrete actions.

    Learns ``Q(s, a)`` from replayed transitions with the Huber loss against
    ``r + gamma^n max_a Q_target(s', a)``, acting epsilon-greedily with a
    linearly decaying epsilon. Double DQN, dueling heads, n-step returns and
    prioritized replay are parameters.

    Parameters
    ----------
    hidden_layer_sizes : array-like of int, default=(64, 64)
        Hidden layers of the Q-network.
    activation : str or (str, dict), default="relu"
        Hidden activation (any name of the MLPs' ``activation``).
    solver : str or (str, dict), default="adam"
        Optimizer, by the core's solver names (not "lbfgs").
    learning_rate : {"constant", "linear"}, default="linear"
        "linear" anneals the step size from ``learning_rate_init`` to 0 over
        the ``total_timesteps`` of the fit, which keeps a policy that works
        late in training from being unlearned; "constant" keeps it.
    learning_rate_init : float, default=2.3e-3
        Initial step size of the optimizer.
    gamma : float, default=0.99
        Discount factor.
    total_timesteps : int, default=50_000
        Environment steps ``fit`` trains for when it is not given them.
    buffer_size : int, default=100_000
        Replay capacity, in transitions.
    learning_starts : int, default=1_000
        Steps of acting before the first update.
    batch_size : int, default=128
        Transitions per update.
    train_freq : int, default=256
        Environment steps between rounds of updates (vector steps of all
        ``n_envs``).
    gradient_steps : int, default=128
        Updates in each round. Rounds of many updates cost less time than
        one update every few steps (the network stays in the cache, acting
        runs undisturbed) for the same number of updates.
    target_update_interval : int, default=10
        Steps between copies into the target network, when ``tau == 1``.
    tau : float, default=1.0
        1 copies the Q-network into the target every
        ``target_update_interval`` steps (hard update); below 1, the target
        moves ``tau`` of the way after every update (Polyak averaging).
    exploration_fraction : float, default=0.16
        Fraction of ``total_timesteps`` over which epsilon decays linearly.
    exploration_initial_eps : float, default=1.0
    exploration_final_eps : float, default=0.04
    double_q : bool, default=True
        Double DQN: the online network picks the next action, the target
        network values it (less overestimation).
    dueling : bool, default=False
        A :class:`DuelingQNetwork` instead of a plain MLP.
    n_step : int, default=1
        Steps of real rewards in each target before bootstrapping.
    prioritized_replay : bool, default=False
        Sample transitions in proportion to their TD error (see
        :class:`~sklears_neural.rl.buffers.PrioritizedReplayBuffer`).
    prioritized_replay_alpha : float, default=0.6
        How much priorities count (0: uniform).
    prioritized_replay_beta : float, default=0.4
        Initial importance-sampling exponent, annealed linearly to 1 over
        ``total_timesteps``.
    clip_grad_norm : float or None, default=10.0
        Rescale each update's gradients to this global L2 norm at most.
    keep_best : bool, default=True
        At the end of ``fit``, keep the weights from when the running mean
        of the last 10 training episodes' returns (``mean_return`` in
        ``history_``) was highest, rather than the final ones: value-based
        and policy-gradient learning can unlearn a working policy late in
        training. It runs the core's ``EarlyStopping`` (which never stops
        here) with ``restore_best_weights``. False keeps the final weights.
    n_envs : int, default=1
        Environments stepped together (gymnasium's ``SyncVectorEnv``).
    device : str or torch.device, default="auto"
        "auto" keeps networks under 1,000,000 parameters on the CPU, where a
        small MLP acts and learns faster than on a GPU.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the exploration, the replay sampling and the
        environments: equal seeds give equal returns.
    verbose : int, default=0
        1 prints each episode's return; 2 adds a progress bar.
    callbacks : list of Callback or None, default=None
        Called by the core trainer: one epoch is one episode
        (``EarlyStopping(monitor="episode_return")``, ``Checkpoint``, ...).

    Attributes
    ----------
    module_ : torch.nn.Module
        The Q-network.
    target_ : torch.nn.Module
        The target network.
    history_ : History
        One record per finished episode: ``episode_return``,
        ``episode_length``, ``timesteps`` (so far), ``loss`` (mean Huber
        loss of the updates since the previous record, once updates start)
        and ``epsilon``.
    n_timesteps_ : int
        Environment steps taken.
    n_episodes_ : int
        Episodes finished.
    n_features_in_ : int
        Width of the observation features (a Discrete observation is one-hot).
    observation_shape_ : tuple of int
        Shape of one observation (``()`` for a Discrete space).
    discrete_observations_ : int or None
        ``n`` of a Discrete observation space.
    action_kind_ : str
        "discrete".
    n_actions_ : int
        Number of actions.
    action_shape_, action_low_, action_high_
        ``()``, None, None (continuous actions only).
    callbacks_ : list of Callback
        The copies of ``callbacks`` this fit ran.
    """

    _networks = {
        **BaseAgent._networks,
        "target_": {"spec": "_module_spec_"},
    }
    _action_kinds = ("discrete",)

    _parameter_constraints: dict = {
        **BaseAgent._parameter_constraints,
        "learning_rate": [StrOptions({"constant", "linear"})],
        "buffer_size": [Interval(Integral, 1, None, closed="left")],
        "learning_starts": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "train_freq": [Interval(Integral, 1, None, closed="left")],
        "gradient_steps": [Interval(Integral, 1, None, closed="left")],
        "target_update_interval": [Interval(Integral, 1, None, closed="left")],
        "tau": [Interval(Real, 0, 1, closed="right")],
        "exploration_fraction": [Interval(Real, 0, 1, closed="both")],
        "exploration_initial_eps": [Interval(Real, 0, 1, closed="both")],
        "exploration_final_eps": [Interval(Real, 0, 1, closed="both")],
        "double_q": ["boolean"],
        "dueling": ["boolean"],
        "n_step": [Interval(Integral, 1, None, closed="left")],
        "prioritized_replay": ["boolean"],
        "prioritized_replay_alpha": [Interval(Real, 0, None, closed="left")],
        "prioritized_replay_beta": [Interval(Real, 0, 1, closed="both")],
        "n_envs": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        hidden_layer_sizes=(64, 64),
        *,
        activation="relu",
        solver="adam",
        learning_rate="linear",
        learning_rate_init=2.3e-3,
        gamma=0.99,
        total_timesteps=50_000,
        buffer_size=100_000,
        learning_starts=1_000,
        batch_size=128,
        train_freq=256,
        gradient_steps=128,
        target_update_interval=10,
        tau=1.0,
        exploration_fraction=0.16,
        exploration_initial_eps=1.0,
        exploration_final_eps=0.04,
        double_q=True,
        dueling=False,
        n_step=1,
        prioritized_replay=False,
        prioritized_replay_alpha=0.6,
        prioritized_replay_beta=0.4,
        clip_grad_norm=10.0,
        keep_best=True,
        n_envs=1,
        device="auto",
        random_state=None,
        verbose=0,
        callbacks=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.gamma = gamma
        self.total_timesteps = total_timesteps
        self.buffer_size = buffer_size
        self.learning_starts = learning_starts
        self.batch_size = batch_size
        self.train_freq = train_freq
        self.gradient_steps = gradient_steps
        self.target_update_interval = target_update_interval
        self.tau = tau
        self.exploration_fraction = exploration_fraction
        self.exploration_initial_eps = exploration_initial_eps
        self.exploration_final_eps = exploration_final_eps
        self.double_q = double_q
        self.dueling = dueling
        self.n_step = n_step
        self.prioritized_replay = prioritized_replay
        self.prioritized_replay_alpha = prioritized_replay_alpha
        self.prioritized_replay_beta = prioritized_replay_beta
        self.clip_grad_norm = clip_grad_norm
        self.keep_best = keep_best
        self.n_envs = n_envs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    # -- networks -------------------------------------------------------------

    def _hidden(self):
        sizes = self.hidden_layer_sizes
        return [int(sizes)] if isinstance(sizes, Integral) else [int(s) for s in sizes]

    def _build_module(self, spaces):
        hidden = self._hidden()
        if self.dueling:
            if not hidden:
                raise ValueError(
                    "dueling=True needs at least one hidden layer for its shared "
                    "trunk; set hidden_layer_sizes, or dueling=False."
                )
            return ModuleSpec(DuelingQNetwork, {
                "n_inputs": spaces.n_features, "hidden_layer_sizes": hidden,
                "n_actions": spaces.n_actions, "activation": self.activation,
            })
        return ModuleSpec(MLP, {
            "n_inputs": spaces.n_features, "hidden_layer_sizes": hidden,
            "n_outputs": spaces.n_actions, "activation": self.activation,
        })

    def _setup_networks(self, spaces, device):
        super()._setup_networks(spaces, device)
        self.target_ = self._module_spec_.build().to(self.device_)
        self.target_.load_state_dict(self.module_.state_dict())
        self.target_.requires_grad_(False)
        self.target_.eval()

    def _after_restore(self):
        self.target_.load_state_dict(self.module_.state_dict())

    def _act(self, observations, deterministic):
        q_values = self.module_(observations)
        if deterministic:
            return q_values.argmax(dim=1)
        # Epsilon-greedy at the final exploration rate.
        greedy = q_values.argmax(dim=1)
        explore = torch.rand(len(greedy), generator=self._generator) < self.exploration_final_eps
        random = torch.randint(self.n_actions_, (len(greedy),), generator=self._generator)
        return torch.where(explore, random.to(greedy.device), greedy)

    # -- learning -------------------------------------------------------------

    def _epsilon(self, step, budget):
        decay_steps = self.exploration_fraction * budget
        if decay_steps <= 0 or step >= decay_steps:
            return self.exploration_final_eps
        fraction = step / decay_steps
        return self.exploration_initial_eps + fraction * (
            self.exploration_final_eps - self.exploration_initial_eps
        )

    def _make_buffer(self, rng):
        capacity = self.buffer_size
        if self.prioritized_replay:
            buffer = PrioritizedReplayBuffer(
                capacity, self.n_features_in_, rng=rng, alpha=self.prioritized_replay_alpha
            )
            buffer.beta = self.prioritized_replay_beta
            return buffer
        return ReplayBuffer(capacity, self.n_features_in_, rng=rng)

    def _loss(self, batch):
        """Huber TD loss of a batch; returns (loss, TD errors).

        A batch without ``weights`` weighs every transition 1.
        """
        q = self.module_(batch["observations"])
        q = q.gather(1, batch["actions"].unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_q_target = self.target_(batch["next_observations"])
            if self.double_q:
                next_actions = self.module_(batch["next_observations"]).argmax(dim=1)
                next_q = next_q_target.gather(1, next_actions.unsqueeze(1)).squeeze(1)
            else:
                next_q = next_q_target.max(dim=1).values
            target = batch["rewards"] + batch["discounts"] * next_q
        losses = F.smooth_l1_loss(q, target, reduction="none")
        if "weights" in batch:
            losses = losses * batch["weights"]
        loss = losses.mean()
        return loss, (q - target).detach()

    def _soft_update(self):
        with torch.no_grad():
            torch._foreach_lerp_(
                list(self.target_.parameters()), list(self.module_.parameters()), self.tau
            )

    def _learn(self, env, observations, budget, trainer, log):
        n_envs = env.num_envs
        rng = np.random.default_rng(draw_seed(self._generator))
        buffer = self._make_buffer(rng)
        # One-step transitions go straight to the buffer, all environments at
        # once; n-step ones wait in a collector per environment.
        collectors = None if self.n_step == 1 else [
            NStepCollector(self.n_step, self.gamma) for _ in range(n_envs)]
        actor = GreedyActor.for_module(self.module_)
        td_step = TDStep.for_modules(self.module_, self.target_, self.double_q)
        features = self._feature_array(observations)
        steps = 0  # vector steps
        updates_due = 0
        copy_every = max(1, self.target_update_interval // n_envs)
        # Whether the Q-network changed since the target last copied it: a
        # copy of unchanged weights is skipped (updates come in rounds, so
        # most scheduled copies would be).
        target_behind = False
        while log.timesteps < budget and not log.should_stop:
            epsilon = self._epsilon(log.timesteps, budget)
            explore = rng.random(n_envs) < epsilon
            actions = rng.integers(0, self.n_actions_, size=n_envs)
            if not explore.all():
                actions = np.where(explore, actions, self._greedy(features, actor))
            next_observations, rewards, terminated, truncated, info = env.step(actions)
            rewards = np.asarray(rewards, dtype=np.float64)
            self._check_rewards(rewards, log.timesteps + 1)
            dones = np.logical_or(terminated, truncated)
            next_features = self._feature_array(next_observations)
            # Same-step autoreset: an ended episode's last observation is in
            # info["final_obs"]; the returned one starts the next episode.
            last_features = next_features
            if dones.any():
                last_features = next_features.copy()
                for i in np.flatnonzero(dones):
                    final = info["final_obs"][i][None]
                    last_features[i] = self._feature_array(final)[0]
            if collectors is None:
                discounts = np.where(terminated, 0.0, self.gamma)
                buffer.add(features, actions, rewards, last_features, discounts)
            else:
                self._collect(collectors, buffer, features, actions, rewards,
                              last_features, terminated, truncated)
            features = next_features
            steps += 1
            log.step(rewards, dones, epsilon=epsilon)

            if log.timesteps >= self.learning_starts and len(buffer) >= self.batch_size:
                updates_due += 1
                if updates_due % self.train_freq == 0:
                    self._update_round(buffer, budget, trainer, log, td_step)
                    target_behind = True
            if self.tau == 1.0 and target_behind and steps % copy_every == 0:
                torch._foreach_copy_(self._target_tensors, self._online_tensors)
                target_behind = False

    def _greedy(self, features, actor):
        """Greedy actions (an ndarray) of a batch of features."""
        if actor is not None:
            return actor(features)
        with torch.no_grad():
            q_values = self.module_(torch.from_numpy(features).to(self.device_))
        return q_values.argmax(dim=1).cpu().numpy()

    @staticmethod
    def _collect(collectors, buffer, features, actions, rewards, last_features,
                 terminated, truncated):
        for i, collector in enumerate(collectors):
            done_steps = collector.step(features[i], actions[i], rewards[i],
                                        last_features[i], bool(terminated[i]),
                                        bool(truncated[i]))
            if done_steps:
                obs, act, ret, nxt, disc = zip(*done_steps)
                buffer.add(np.stack(obs), np.asarray(act), np.asarray(ret),
                           np.stack(nxt), np.asarray(disc))

    @property
    def _online_tensors(self):
        return list(self.module_.state_dict().values())

    @property
    def _target_tensors(self):
        return list(self.target_.state_dict().values())

    def _update_round(self, buffer, budget, trainer, log, td_step):
        """``gradient_steps`` updates on batches replayed from ``buffer``."""
        progress = log.timesteps / budget
        if self.prioritized_replay:
            beta0 = self.prioritized_replay_beta
            buffer.beta = beta0 + (1.0 - beta0) * min(1.0, progress)
        if self.learning_rate == "linear":
            # Anneal to 0 over the budget: late updates cannot undo a policy
            # that already works.
            for group in self._optimizer.param_groups:
                group["lr"] = self.learning_rate_init * max(0.0, 1.0 - progress)
        for batch in self._batches(buffer):
            if td_step is None:
                loss, errors = self._loss(batch)
                trainer.step(loss)
            else:
                loss, errors = td_step(batch)
                trainer.step(loss, backward=False)
            log.add_losses(loss=loss)
            if self.prioritized_replay:
                buffer.update_priorities(batch["indices"], errors.cpu().numpy())
            if self.tau < 1.0:
                self._soft_update()

    def _batches(self, buffer):
        """The round's ``gradient_steps`` batches, one at a time.

        Uniform replay draws them in chunks of up to ~16 MiB of
        observations, each gathered at once (the buffer does not change
        during a round); prioritized replay samples each after the
        previous update's priorities.
        """
        device = self.device_
        if self.prioritized_replay:
            for _ in range(self.gradient_steps):
                yield buffer.sample(self.batch_size, device)
            return
        row_bytes = 8 * self.n_features_in_ + 32
        chunk = max(1, min(self.gradient_steps,
                           (16 << 20) // (row_bytes * self.batch_size)))
        left = self.gradient_steps
        while left > 0:
            n = min(chunk, left)
            left -= n
            many = buffer.sample_many(n, self.batch_size, device)
            indices = many.pop("indices")
            del many["weights"]  # all ones: the unweighted loss is the same
            columns = {key: value.unbind(0) for key, value in many.items()}
            for k in range(n):
                batch = {key: value[k] for key, value in columns.items()}
                batch["indices"] = indices[k]
                yield batch
