"""The base of every agent: scikit-learn's contract around an environment loop.

:class:`BaseAgent` is to agents what ``BaseNeuralEstimator`` is to the
supervised families, on the same core: networks are
:class:`~sklears_neural.core.layers.ModuleSpec` s declared in ``_networks``
(so pickle, ``save``/``load`` and checkpoints keep them), optimizers come
from the core's solver names, and every update goes through the core
:class:`~sklears_neural.core.trainer.Trainer`'s loop API (``begin`` /
``step`` / ``end_epoch`` / ``end``), so gradient clipping, callbacks,
``verbose`` and ``history_`` are those of every other family. One history
record is one finished episode.

A family writes three hooks:

``_build_module(spaces)``
    The trained network, as a ``ModuleSpec``, from an
    :class:`~sklears_neural.rl._env.EnvSpaces`.
``_learn(env, observations, budget, trainer, log)``
    The interaction loop on a vector environment (already reset, seeded):
    step it, call ``self._check_rewards`` on each reward batch,
    ``log.step(...)`` after each step, ``trainer.step(loss)`` per update and
    ``log.add_losses(...)``; return when ``budget`` timesteps are done or
    ``log.should_stop``.
``_act(observations, deterministic)``
    Actions for a batch of observation features, a tensor; used by
    ``predict`` and ``score``.

and may override ``_setup_networks(spaces)`` (more networks: a target
copy), ``_after_restore()`` and ``_n_envs()``.

The fit itself is shared: ``fit`` makes the environment and calls
``_fit_or_roll_back``, which calls ``_fit_on(env, budget)``; that describes
the spaces and hands over to ``_train``, the one training loop (networks,
history, callbacks, the core trainer, seeding, ``_learn``, and what happens
on Ctrl-C, a bad reward or a diverging loss). An agent on another
environment API (``MultiAgentTrainer`` on PettingZoo) overrides ``fit``'s
environment making, ``_fit_on`` and ``_reset_env(env, seed)``, and reuses
the rest.
"""

import copy
import math
import warnings
from collections import deque
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core._compat import (
    CallbackList,
    Interval,
    PositiveIntSequence,
    ResolvableName,
    _fit_context,
)
from sklears_neural.core.callbacks import EarlyStopping, EpochLogger, ProgressBar
from sklears_neural.core.estimator import _takes_generator
from sklears_neural.core.history import History
from sklears_neural.core.noise import set_generator
from sklears_neural.core.optim import SOLVERS, make_optimizer
from sklears_neural.core.persistence import PicklableStateMixin, SaveLoadMixin
from sklears_neural.core.resolve import ACTIVATIONS, resolve_device, split_option
from sklears_neural.core.seeding import draw_seed, torch_generator
from sklears_neural.core.trainer import Trainer
from sklears_neural.exceptions import TrainingDivergedError
from sklears_neural.rl import _env

__all__ = ["BaseAgent", "EpisodeLog", "NonFiniteRewardError", "AUTO_GPU_PARAMETERS"]

#: Episodes in the running mean recorded as ``mean_return``.
RECENT_EPISODES = 10

#: ``device="auto"`` puts a network on the GPU only from this many
#: parameters on. An agent's updates are small batches and its acting is
#: one observation at a time: below this, the transfers and kernel launches
#: cost more than the arithmetic saves (a (64, 64) MLP acts about 3x faster
#: on the CPU).
AUTO_GPU_PARAMETERS = 1_000_000

# What the core's solvers read from an estimator that agents do not take as
# parameters: each solver gets those of these it takes, as settings of a
# composite solver option (a user's settings win).
_OPTIMIZER_DEFAULTS = {
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1e-8,
    "momentum": 0.9,
    "nesterovs_momentum": True,
    "weight_decay": 0.0,
}


class NonFiniteRewardError(ValueError, FloatingPointError):
    """The environment returned a NaN or infinite reward.

    The agent keeps the weights learned before that step (it is fitted and
    predicts); ``timestep`` is the 1-based timestep of the bad reward.
    """

    def __init__(self, message, *, timestep):
        super().__init__(message)
        self.timestep = timestep


class _SolverSettings:
    """The agent's attributes with ``solver`` replaced by a complete composite."""

    def __init__(self, agent, solver):
        self.__dict__.update(vars(agent))
        self.solver = solver


def complete_solver(solver):
    """``(name, settings)`` with every default the solver reads filled in.

    Raises
    ------
    ValueError
        For ``"lbfgs"``: agents train by gradient steps on fresh data.
    """
    name, settings = split_option(solver)
    name = SOLVERS.canonical(name)
    factory = SOLVERS(name)
    if factory is None:
        raise ValueError(
            f"solver={solver!r} is not available to agents: they take gradient "
            "steps on data they keep collecting, which L-BFGS cannot. Use a "
            "stochastic solver such as 'adam' (the default), 'rmsprop' or 'sgd'."
        )
    import inspect

    accepted = inspect.signature(factory).parameters
    defaults = {k: v for k, v in _OPTIMIZER_DEFAULTS.items() if k in accepted}
    return name, {**defaults, **settings}


class EpisodeLog:
    """Running returns of a vector environment's episodes, one record per episode.

    Parameters
    ----------
    trainer : Trainer
        Finished episodes become its history records (``end_epoch``).
    n_envs : int
    on_record : callable or None, default=None
        ``on_record()`` after each record, before the callbacks see it: the
        agent snapshots its weights there.

    Attributes
    ----------
    timesteps : int
        Environment steps so far, over all environments.
    should_stop : bool
        A callback asked to end training.
    """

    def __init__(self, trainer, n_envs, *, on_record=None):
        self.trainer = trainer
        self.returns = np.zeros(n_envs)
        self.recent = deque(maxlen=RECENT_EPISODES)
        self.lengths = np.zeros(n_envs, dtype=np.int64)
        self.timesteps = 0
        self.should_stop = False
        self._losses = {}
        self._on_record = on_record

    def add_losses(self, **losses):
        """Keep detached scalar losses of one update; averaged per record.

        No host sync here: the tensors are read once per record.
        """
        for key, value in losses.items():
            self._losses.setdefault(key, []).append(value.detach())

    def step(self, rewards, dones, **extra):
        """Count one step of every environment; record the episodes that ended.

        Parameters
        ----------
        rewards : ndarray of shape (n_envs,)
        dones : ndarray of bool of shape (n_envs,)
            Terminated or truncated.
        **extra : float
            Added to each record of this step (``epsilon=...``).
        """
        self.returns += rewards
        self.lengths += 1
        self.timesteps += len(rewards)
        if not dones.any():
            return
        losses = {
            key: torch.stack(values).float().mean().item()
            for key, values in self._losses.items() if values
        }
        self._losses = {}
        for i in np.flatnonzero(dones):
            self.recent.append(float(self.returns[i]))
            record = {
                "episode_return": float(self.returns[i]),
                "mean_return": float(np.mean(self.recent)),
                "episode_length": int(self.lengths[i]),
                "timesteps": int(self.timesteps),
                **losses,
                **{k: float(v) for k, v in extra.items()},
            }
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            if bad:
                raise _LossDiverged(bad, self.timesteps)
            self.returns[i] = 0.0
            self.lengths[i] = 0
            if self._on_record is not None:
                self._on_record()
            if self.trainer.end_epoch(record, samples=record["episode_length"]):
                self.should_stop = True


class _LossDiverged(Exception):
    def __init__(self, keys, timestep):
        super().__init__(keys, timestep)
        self.keys = keys
        self.timestep = timestep


class BaseAgent(SaveLoadMixin, PicklableStateMixin, BaseEstimator):
    """Base class of the agents; do not instantiate it directly.

    Subclasses declare their parameters in ``__init__`` and
    ``_parameter_constraints`` and write ``_build_module``, ``_learn`` and
    ``_act`` (see the module docstring).
    """

    #: The trained network and its optimizer; a family adds entries (a
    #: target copy shares the spec: ``{"spec": "_module_spec_"}``).
    _networks = {
        "module_": {"spec": "_module_spec_", "optimizer": "_optimizer",
                    "solver": "_optimizer_solver"},
    }
    #: Observation and action spaces the family supports (see
    #: :func:`~sklears_neural.rl._env.describe_spaces`).
    _observation_kinds = ("box", "discrete")
    _action_kinds = ("discrete",)

    _parameter_constraints: dict = {
        "hidden_layer_sizes": [PositiveIntSequence()],
        "activation": [ResolvableName(ACTIVATIONS)],
        "solver": [ResolvableName(SOLVERS)],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "gamma": [Interval(Real, 0, 1, closed="both")],
        "total_timesteps": [Interval(Integral, 1, None, closed="left")],
        "clip_grad_norm": [None, Interval(Real, 0, None, closed="neither")],
        "keep_best": ["boolean"],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callbacks": [None, CallbackList()],
    }

    # -- hooks --------------------------------------------------------------

    def _build_module(self, spaces):
        """The trained network, a ModuleSpec, for ``spaces`` (an EnvSpaces)."""
        raise NotImplementedError

    def _learn(self, env, observations, budget, trainer, log):
        """Run the interaction loop for ``budget`` timesteps (see module docstring)."""
        raise NotImplementedError

    def _act(self, observations, deterministic):
        """Actions (a tensor) for a batch of observation features."""
        raise NotImplementedError

    def _n_envs(self):
        """Environments stepped together."""
        return int(getattr(self, "n_envs", 1))

    def _setup_networks(self, spaces, device):
        """Build ``module_`` and its optimizer; a family adds its other networks."""
        spec = self._build_module(spaces)
        self.module_ = self._build_network(spec, device)
        self._module_spec_ = spec
        self._optimizer_solver = complete_solver(self.solver)
        self._optimizer = make_optimizer(
            self.module_, _SolverSettings(self, self._optimizer_solver)
        )

    def _after_restore(self):
        """Called after ``module_`` went back to earlier weights (a divergence)."""

    # -- fit ------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, env, total_timesteps=None):
        """Train the agent by interacting with ``env``.

        Parameters
        ----------
        env : str, gymnasium.Env or callable
            A Gymnasium id (``"CartPole-v1"``), an ``Env`` instance, or a
            callable that returns a new ``Env`` (needed for ``n_envs > 1``).
            A sequence holding one of them is accepted too, as scikit-learn's
            model selection passes it.
        total_timesteps : int or None, default=None
            Environment steps to train for (over all environments); None
            uses the ``total_timesteps`` parameter.

        Returns
        -------
        self : object
            The trained agent.

        Raises
        ------
        NonFiniteRewardError
            If the environment returns a NaN or infinite reward; the agent
            keeps the weights learned before that step.
        TrainingDivergedError
            If a loss becomes NaN or infinite; the agent keeps the weights
            it had at the end of the last recorded episode.
        """
        budget = self._budget(total_timesteps)
        env_arg = _env.unwrap_env_argument(env)
        vector_env = _env.make_vector_env(env_arg, self._n_envs(),
                                          owner=type(self).__name__)
        # A vector env over the caller's own Env instance would close it too.
        self._fit_or_roll_back(
            vector_env, budget,
            close=not isinstance(env_arg, _env.import_gymnasium().Env))
        return self

    def _budget(self, total_timesteps):
        """``total_timesteps`` of ``fit``, checked, or the parameter's."""
        if total_timesteps is None:
            return self.total_timesteps
        if (isinstance(total_timesteps, Integral)
                and not isinstance(total_timesteps, bool) and total_timesteps >= 1):
            return int(total_timesteps)
        raise ValueError(
            f"total_timesteps must be an int >= 1 or None, got {total_timesteps!r}."
        )

    def _fit_or_roll_back(self, env, budget, *, close):
        """``_fit_on(env, budget)``; any failure but a bad reward or loss undoes it.

        What was learned before a non-finite reward or loss stays: the agent
        is fitted. Anything else (a bad environment, Ctrl-C before training
        starts, a bug) leaves the agent as it was. ``close`` closes ``env``
        after.
        """
        saved = dict(self.__dict__)
        try:
            self._fit_on(env, budget)
        except (NonFiniteRewardError, TrainingDivergedError):
            raise
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise
        finally:
            if close:
                env.close()

    def _fit_on(self, vector_env, budget):
        spaces = _env.describe_spaces(
            vector_env.single_observation_space, vector_env.single_action_space,
            owner=type(self).__name__, observations=self._observation_kinds,
            actions=self._action_kinds,
        )
        self._set_space_attributes(spaces)
        self._train(vector_env, budget, spaces, n_envs=vector_env.num_envs)

    def _reset_env(self, env, seed):
        """Seed ``env``'s first reset and its action space; the first observations."""
        env.action_space.seed(seed)
        observations, _ = env.reset(seed=seed)
        return observations

    def _train(self, env, budget, spaces, *, n_envs):
        """The training every agent shares, on an environment already described.

        Builds the networks for ``spaces`` (``_setup_networks``), the
        history, the callbacks (copies of ``callbacks``, plus ``keep_best``'s
        and ``verbose``'s) and the core :class:`Trainer`; seeds and resets
        ``env`` (``_reset_env``); runs ``_learn``, which records episodes of
        ``n_envs`` parallel streams in an :class:`EpisodeLog`; and ends
        training, keeping the weights of the last recorded episode where a
        loss diverged.
        """
        self._generator = torch_generator(self.random_state)
        self._setup_networks(spaces, self.device)
        self.history_ = History()
        self.n_timesteps_ = 0
        self.callbacks_ = [copy.deepcopy(cb) for cb in self.callbacks or []]
        callbacks = list(self.callbacks_)
        if getattr(self, "keep_best", False):
            # The core's early stopping, never stopping, keeps the weights of
            # the best running mean of training returns and restores them
            # when training ends.
            best = EarlyStopping(monitor="mean_return", patience=math.inf, tol=0.0,
                                 lower_is_better=False, restore_best_weights=True)
            callbacks.insert(0, best)
        if self.verbose:
            callbacks.insert(0, EpochLogger(keys=("episode_return", "timesteps")))
            if self.verbose >= 2:
                callbacks.insert(1, ProgressBar(unit="episode"))
        trainer = Trainer(
            self.module_, None, self._optimizer, callbacks=callbacks,
            generator=self._generator, history=self.history_,
            clip_grad_norm=self.clip_grad_norm,
        )

        def checkpoint(path):
            with warnings.catch_warnings():
                # The callbacks (the Checkpoint among them) are not data.
                warnings.filterwarnings("ignore", message=".*callbacks.*")
                self.save(path)

        trainer.checkpoint = checkpoint
        last_good = {"state": trainer.snapshot()}

        def on_record():
            last_good["state"] = trainer.snapshot(into=last_good["state"])
            self.n_timesteps_ = log.timesteps

        log = EpisodeLog(trainer, n_envs, on_record=on_record)
        observations = self._reset_env(env, draw_seed(self._generator))
        self.module_.train()
        trainer.begin()
        try:
            self._learn(env, observations, budget, trainer, log)
        except KeyboardInterrupt:
            # As the core: Ctrl-C ends training, and the agent keeps what it
            # learned so far.
            warnings.warn("Training interrupted by user.")
        except NonFiniteRewardError:
            self._finish(trainer, log)
            raise
        except _LossDiverged as exc:
            trainer.restore(last_good["state"])
            self._after_restore()
            self._finish(trainer, log)
            raise TrainingDivergedError(
                f"{type(self).__name__}: the training loss ({', '.join(exc.keys)}) "
                f"became NaN or infinite by timestep {exc.timestep}; the agent keeps "
                "the weights of the last recorded episode. Lower learning_rate_init, "
                "set clip_grad_norm, or scale the rewards.",
                epoch=len(self.history_) + 1,
                last_finite_state={
                    k: v.cpu().numpy() for k, v in last_good["state"].items()},
            ) from None
        self._finish(trainer, log)

    def _finish(self, trainer, log):
        trainer.end()
        if any(isinstance(cb, EarlyStopping) and cb.best_state is not None
               and cb.restore_best_weights for cb in trainer.callbacks):
            self._after_restore()
        self.module_.eval()
        self.n_timesteps_ = int(log.timesteps)
        self.n_episodes_ = len(self.history_)

    def _set_space_attributes(self, spaces):
        self.observation_shape_ = (
            () if spaces.observation_kind == "discrete" else spaces.observation_shape
        )
        self.discrete_observations_ = spaces.n_observation_values
        self.n_features_in_ = spaces.n_features
        self.action_kind_ = spaces.action_kind
        self.n_actions_ = spaces.n_actions
        self.action_shape_ = spaces.action_shape
        self.action_low_ = spaces.action_low
        self.action_high_ = spaces.action_high

    def _build_network(self, spec, device):
        """A network from ``spec``, its weights drawn from the agent's generator.

        ``device="auto"`` keeps it on the CPU below
        :data:`AUTO_GPU_PARAMETERS` parameters.
        """
        module = spec.build(generator=self._generator)
        if _takes_generator(getattr(module, "reset_parameters", None)):
            module.reset_parameters(generator=self._generator)
        set_generator(module, self._generator)
        return module.to(self._resolve_device(module, device))

    @staticmethod
    def _resolve_device(module, device):
        if device == "auto":
            n_parameters = sum(p.numel() for p in module.parameters())
            if torch.cuda.is_available() and n_parameters >= AUTO_GPU_PARAMETERS:
                return torch.device("cuda")
            return torch.device("cpu")
        return resolve_device(device)

    @property
    def device_(self):
        """The device the networks are on."""
        check_is_fitted(self, "module_")
        return next(self.module_.parameters()).device

    # -- acting ---------------------------------------------------------------

    def _feature_array(self, observations):
        """Float32 features of shape (n, n_features_in_) of a batch, in NumPy.

        Discrete observations are one-hot encoded.
        """
        if self.discrete_observations_ is not None:
            index = np.asarray(observations, dtype=np.int64).reshape(-1)
            out = np.zeros((len(index), self.discrete_observations_), dtype=np.float32)
            out[np.arange(len(index)), index] = 1.0
            return out
        array = np.asarray(observations, dtype=np.float32)
        return array.reshape(len(array), -1)

    def _features(self, observations):
        """:meth:`_feature_array` as a tensor on the network's device."""
        device = next(self.module_.parameters()).device
        return torch.from_numpy(self._feature_array(observations)).to(device)

    def _check_rewards(self, rewards, timestep):
        """Raise NonFiniteRewardError if a reward of this step is NaN or infinite."""
        if not np.isfinite(rewards).all():
            raise NonFiniteRewardError(
                f"{type(self).__name__}: the environment returned the reward "
                f"{rewards[~np.isfinite(rewards)][0]} at timestep {timestep}. The agent "
                "keeps the weights learned before that step. Fix the environment's "
                "reward, or wrap it (gymnasium.wrappers.TransformReward) to replace "
                "non-finite values.",
                timestep=timestep,
            )

    def predict(self, observation, deterministic=True):
        """The agent's action for one observation, or actions for a batch.

        Parameters
        ----------
        observation : array-like
            One observation (shape ``observation_shape_``), or a batch of them
            (shape ``(n, *observation_shape_)``).
        deterministic : bool, default=True
            The greedy / most likely action; False samples from the policy
            (and draws from the agent's generator).

        Returns
        -------
        action : int, ndarray of shape action_shape_, or ndarray of shape (n, ...)
            One action for one observation (an int for discrete actions), an
            array of actions for a batch.
        """
        check_is_fitted(self, "module_")
        array = np.asarray(observation)
        shape = tuple(self.observation_shape_)
        if array.shape == shape:
            single, batch = True, array[None]
        elif array.ndim == len(shape) + 1 and array.shape[1:] == shape:
            single, batch = False, array
        else:
            raise ValueError(
                f"{type(self).__name__}.predict expects one observation of shape "
                f"{shape} or a batch of shape (n, {', '.join(map(str, shape))}), "
                f"got shape {array.shape}."
            )
        with torch.no_grad():
            actions = self._act(self._features(batch), bool(deterministic)).cpu().numpy()
        if self.action_kind_ == "discrete":
            actions = actions.astype(np.int64)
            return int(actions[0]) if single else actions
        actions = actions.reshape(len(batch), *self.action_shape_)
        return actions[0] if single else actions

    def score(self, env, y=None, *, n_episodes=10, seed=None):
        """Mean return of ``n_episodes`` episodes of deterministic actions.

        Parameters
        ----------
        env : str, gymnasium.Env or callable
            As in :meth:`fit` (a fresh environment is made from an id or a
            factory, and closed after).
        y : None
            Ignored; there for scikit-learn's model selection.
        n_episodes : int, default=10
        seed : int or None, default=None
            Seeds the first reset; None uses ``random_state`` when it is an
            int, so repeated scores of one agent are equal.

        Returns
        -------
        float
        """
        check_is_fitted(self, "module_")
        return float(np.mean(self._episode_returns(env, n_episodes, seed)))

    def _episode_returns(self, env, n_episodes, seed):
        if not (isinstance(n_episodes, Integral) and n_episodes >= 1):
            raise ValueError(f"n_episodes must be an int >= 1, got {n_episodes!r}.")
        env_arg = _env.unwrap_env_argument(env)
        instance = _env.make_env(env_arg, owner=type(self).__name__)
        if seed is None and isinstance(self.random_state, Integral):
            seed = int(self.random_state)
        returns = []
        try:
            observation, _ = instance.reset(seed=seed)
            for _ in range(n_episodes):
                total, done = 0.0, False
                while not done:
                    action = self.predict(observation)
                    observation, reward, terminated, truncated, _ = instance.step(action)
                    total += float(reward)
                    done = terminated or truncated
                returns.append(total)
                observation, _ = instance.reset()
        finally:
            if not isinstance(env_arg, _env.import_gymnasium().Env):
                instance.close()
        return np.asarray(returns)
