"""Learning-rate schedules by name, and the :class:`LRScheduler` callback.

An estimator's ``learning_rate`` names a schedule. scikit-learn's three
keep their meaning and apply to ``solver="sgd"`` only, as in scikit-learn;
the estimator runs them itself (``"invscaling"`` with
:class:`~sklears_neural.core.callbacks.InverseScalingLR`, ``"adaptive"``
with ``EarlyStopping(lr_reduce_factor=5)``). The others drive any
mini-batch solver through a torch scheduler, wrapped in :class:`LRScheduler`.
"Steps" says whether the schedule advances once per epoch or per batch:

=========== ===== ========================== ==================================
name        steps torch scheduler            settings (default)
=========== ===== ========================== ==================================
constant    -     none                       -
invscaling  -     scikit-learn's, sgd only   -
adaptive    -     scikit-learn's, sgd only   -
step        epoch ``StepLR``                 step_size (ceil(max_iter / 3)),
                                             gamma (0.1)
exponential epoch ``ExponentialLR``          gamma (0.01 ** (1 / max_iter): the
                                             rate ends 100 times lower)
cosine      epoch ``CosineAnnealingLR``;     eta_min (0.0), T_max (max_iter),
                  ``CosineAnnealing-         T_0 (None: no restarts),
                  WarmRestarts`` given T_0   T_mult (1)
cyclic      batch ``CyclicLR``, triangular   base_lr (learning_rate_init),
                                             max_lr (10 * base_lr),
                                             step_size_up (4 epochs of batches),
                                             step_size_down (step_size_up),
                                             cycle_momentum (False)
one_cycle   batch ``OneCycleLR``             max_lr (learning_rate_init),
                                             pct_start (0.3), total_steps
                                             (max_iter * batches per epoch),
                                             div_factor (25.0), final_div_factor
                                             (1e4), anneal_strategy ("cos"),
                                             three_phase (False),
                                             cycle_momentum (False)
=========== ===== ========================== ==================================

Settings come with a composite option: ``learning_rate=("step", {"step_size":
10, "gamma": 0.5})`` or ``{"name": "cosine", "T_0": 10}``. ``cosine``
without restarts and ``one_cycle`` end: after ``T_max`` epochs (resp.
``total_steps`` steps) the rate stays at its last value instead of
rising again. ``cycle_momentum`` defaults to ``False`` (torch's default is
``True``) so a schedule changes the learning rate and nothing else, and
works with solvers that have no momentum (adagrad).

Warmup
------
``warmup_iters`` counts **optimizer steps** (mini-batches), whatever the
schedule's own cadence: the first ``warmup_iters`` steps use the scheduled
rate times ``k / warmup_iters`` for ``k = 1, ..., warmup_iters``, then the
scheduled rate itself. The schedule's own clock is not delayed (the ramp
multiplies it), so ``step`` still decays at the same epochs, and the ramp
composes exactly with every schedule: :class:`LRScheduler` keeps the rate
the torch scheduler computed and only the optimizer sees the ramped one.
torch's ``SequentialLR`` cannot do this: it needs the warmup and the
schedule to step at one cadence (batches vs epochs here) and starts the
schedule's clock after the warmup.
"""

import copy
import inspect
import math
from numbers import Integral
from typing import NamedTuple

from torch.optim import lr_scheduler

from sklears_neural.core import checks
from sklears_neural.core._compat import InvalidParameterError
from sklears_neural.core.callbacks import Callback
from sklears_neural.core.resolve import Resolver, split_option

__all__ = ["LEARNING_RATES", "LRScheduler", "make_schedule"]

# What a schedule factory receives from its caller, besides its own settings.
_CONTEXT = ("optimizer", "learning_rate_init", "max_iter", "steps_per_epoch")
# scikit-learn's own schedules, run by the estimator (solver="sgd" only).
_ESTIMATOR_RUN = ("invscaling", "adaptive")


class _Plan(NamedTuple):
    """What a schedule factory returns."""

    scheduler: object  # a torch LRScheduler, or None for a constant rate
    step_every: str  # "epoch" or "batch"
    horizon: object  # scheduler steps after which the rate is held, or None


# -- checks --------------------------------------------------------------------


def _owner(schedule):
    return f"the {schedule!r} schedule"


def _check_int(schedule, setting, value, low=1):
    return checks.check_int(_owner(schedule), setting, value, low=low)


def _check_real(schedule, setting, value, *, low=0, low_open=True, high=None):
    # Rates and factors: positive unless said otherwise, below an open high.
    return checks.check_real(_owner(schedule), setting, value, low=low,
                             low_open=low_open, high=high, high_open=True)


def _check_bool(schedule, setting, value):
    return checks.check_bool(_owner(schedule), setting, value)


def _needs(schedule, setting, value, what):
    """``value``, or an error saying which setting supplies the missing ``what``."""
    if value is None:
        raise ValueError(
            f"The {schedule!r} schedule needs {what} to set {setting!r}, and the "
            f"trainer did not say. Pass it: LRScheduler({schedule!r}, "
            f"{setting}=...), or choose the schedule with the estimator's "
            f"learning_rate parameter, which knows max_iter and the batches per epoch."
        )
    return value


# -- schedule factories --------------------------------------------------------
# ``factory(optimizer, *, learning_rate_init, max_iter, steps_per_epoch,
# **settings) -> _Plan``. ``max_iter`` (epochs) and ``steps_per_epoch`` may be
# None when a user callback meets a trainer that does not pass them.


def _constant(optimizer, *, learning_rate_init, max_iter, steps_per_epoch):
    return _Plan(None, "epoch", None)


def _invscaling(optimizer, *, learning_rate_init, max_iter, steps_per_epoch):
    return _Plan(None, "epoch", None)


def _adaptive(optimizer, *, learning_rate_init, max_iter, steps_per_epoch):
    return _Plan(None, "epoch", None)


def _step(optimizer, *, learning_rate_init, max_iter, steps_per_epoch, step_size=None,
          gamma=0.1):
    if step_size is None:
        step_size = math.ceil(_needs("step", "step_size", max_iter, "max_iter") / 3)
    step_size = _check_int("step", "step_size", step_size)
    gamma = _check_real("step", "gamma", gamma)
    return _Plan(lr_scheduler.StepLR(optimizer, step_size, gamma), "epoch", None)


def _exponential(optimizer, *, learning_rate_init, max_iter, steps_per_epoch,
                 gamma=None):
    if gamma is None:
        gamma = 0.01 ** (1.0 / _needs("exponential", "gamma", max_iter, "max_iter"))
    gamma = _check_real("exponential", "gamma", gamma)
    return _Plan(lr_scheduler.ExponentialLR(optimizer, gamma), "epoch", None)


def _cosine(optimizer, *, learning_rate_init, max_iter, steps_per_epoch, eta_min=0.0,
            T_max=None, T_0=None, T_mult=1):
    eta_min = _check_real("cosine", "eta_min", eta_min, low_open=False)
    T_mult = _check_int("cosine", "T_mult", T_mult)
    if T_0 is not None:
        if T_max is not None:
            raise ValueError(
                "The 'cosine' schedule takes T_max (one annealing, no restarts) or "
                "T_0 (warm restarts every T_0 epochs, times T_mult), not both."
            )
        T_0 = _check_int("cosine", "T_0", T_0)
        scheduler = lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0, T_mult=T_mult, eta_min=eta_min
        )
        return _Plan(scheduler, "epoch", None)
    if T_mult != 1:
        raise ValueError(
            "The 'cosine' schedule's setting 'T_mult' needs warm restarts: "
            "give T_0 too."
        )
    if T_max is None:
        T_max = _needs("cosine", "T_max", max_iter, "max_iter")
    T_max = _check_int("cosine", "T_max", T_max)
    scheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max, eta_min=eta_min)
    return _Plan(scheduler, "epoch", T_max)


def _cyclic(optimizer, *, learning_rate_init, max_iter, steps_per_epoch, base_lr=None,
            max_lr=None, step_size_up=None, step_size_down=None, cycle_momentum=False):
    base_lr = _check_real(
        "cyclic", "base_lr", learning_rate_init if base_lr is None else base_lr
    )
    if max_lr is None:
        max_lr = 10.0 * base_lr
    max_lr = _check_real("cyclic", "max_lr", max_lr)
    if step_size_up is None:
        step_size_up = 4 * _needs(
            "cyclic", "step_size_up", steps_per_epoch, "the batches per epoch"
        )
    step_size_up = _check_int("cyclic", "step_size_up", step_size_up)
    if step_size_down is not None:
        step_size_down = _check_int("cyclic", "step_size_down", step_size_down)
    scheduler = lr_scheduler.CyclicLR(
        optimizer,
        base_lr=base_lr,
        max_lr=max_lr,
        step_size_up=step_size_up,
        step_size_down=step_size_down,
        mode="triangular",
        cycle_momentum=_check_bool("cyclic", "cycle_momentum", cycle_momentum),
    )
    return _Plan(scheduler, "batch", None)


def _one_cycle(optimizer, *, learning_rate_init, max_iter, steps_per_epoch, max_lr=None,
               pct_start=0.3, total_steps=None, div_factor=25.0, final_div_factor=1e4,
               anneal_strategy="cos", three_phase=False, cycle_momentum=False):
    max_lr = _check_real(
        "one_cycle", "max_lr", learning_rate_init if max_lr is None else max_lr
    )
    if total_steps is None:
        epochs = _needs("one_cycle", "total_steps", max_iter, "max_iter")
        batches = _needs("one_cycle", "total_steps", steps_per_epoch,
                         "the batches per epoch")
        total_steps = epochs * batches
    total_steps = _check_int("one_cycle", "total_steps", total_steps, low=2)
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(
            "The 'one_cycle' schedule's setting 'anneal_strategy' must be 'cos' or "
            f"'linear'. Got {anneal_strategy!r} instead."
        )
    scheduler = lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=_check_real("one_cycle", "pct_start", pct_start, high=1.0),
        div_factor=_check_real("one_cycle", "div_factor", div_factor),
        final_div_factor=_check_real("one_cycle", "final_div_factor", final_div_factor),
        anneal_strategy=anneal_strategy,
        three_phase=_check_bool("one_cycle", "three_phase", three_phase),
        cycle_momentum=_check_bool("one_cycle", "cycle_momentum", cycle_momentum),
    )
    # The last step uses the last value; stepping past it would anneal on.
    return _Plan(scheduler, "batch", total_steps - 1)


LEARNING_RATES = Resolver(
    "learning_rate schedule",
    {
        "constant": _constant,
        "invscaling": _invscaling,
        "adaptive": _adaptive,
        "step": _step,
        "exponential": _exponential,
        "cosine": _cosine,
        "cyclic": _cyclic,
        "one_cycle": _one_cycle,
    },
    aliases={
        "cosine_annealing": "cosine",
        "onecycle": "one_cycle",
        "exp": "exponential",
    },
)
"""Learning-rate schedules by name; see the module docstring for each one's settings.

Entries are factories ``factory(optimizer, *, learning_rate_init, max_iter,
steps_per_epoch, **settings)``; use :func:`make_schedule` or
:class:`LRScheduler` rather than calling them.
"""


def _settings_taken(canonical):
    factory = LEARNING_RATES(canonical)
    return [p for p in inspect.signature(factory).parameters if p not in _CONTEXT]


def _check_settings(canonical, settings):
    accepted = _settings_taken(canonical)
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown setting(s) {unknown} for learning_rate schedule {canonical!r}. "
            f"It takes: {', '.join(sorted(accepted)) or 'no settings'}."
        )


# -- the callback --------------------------------------------------------------


class LRScheduler(Callback):
    """Run a learning-rate schedule, with an optional linear warmup, during training.

    Give a schedule name from :data:`LEARNING_RATES` (with its settings) or
    any factory ``factory(optimizer, **settings) -> torch LRScheduler``.
    The callback binds to the trainer's optimizer when training begins,
    steps the schedule after every optimizer step (``"batch"`` schedules)
    or every epoch (``"epoch"`` schedules), and writes the learning rate of
    each epoch's last optimizer step (first parameter group) into
    ``trainer.history[-1]["lr"]``.

    Parameters
    ----------
    schedule : str, (str, dict), dict or callable
        A name such as ``"cosine"``, a composite ``("step", {"step_size": 5})``,
        or a callable such as
        ``functools.partial(torch.optim.lr_scheduler.StepLR, step_size=5)``.
        scikit-learn's ``"invscaling"`` and ``"adaptive"`` are not available
        here (use :class:`~sklears_neural.core.callbacks.InverseScalingLR` or
        ``EarlyStopping(lr_reduce_factor=...)``); ``"constant"`` only makes
        sense with ``warmup_iters``.
    step_every : {"epoch", "batch"} or None, default=None
        When a callable schedule steps; ``None`` means ``"epoch"``. Named
        schedules have their own cadence and take ``None`` only.
    warmup_iters : int, default=0
        Optimizer steps (mini-batches) of linear warmup: step ``k`` (1-based)
        of the first ``warmup_iters`` uses the scheduled rate times
        ``k / warmup_iters``. The schedule's clock is not delayed.
    **settings
        Settings of the schedule, merged over those of a composite
        ``schedule``. Named schedules that depend on the run's length
        (``cosine``'s ``T_max``, ``one_cycle``'s ``total_steps``, the
        defaults of ``step``, ``exponential`` and ``cyclic``) read it from
        the ``max_epochs`` and ``n_batches`` the trainer passes to
        ``on_train_begin``, and ask for the setting when it passes none.

    Notes
    -----
    The schedule starts when the callback first meets an optimizer, and
    continues while training runs with that optimizer (``partial_fit``).
    Meeting a different optimizer (a new ``fit``), or :meth:`reset`, starts
    it over from the optimizer's current learning rate. State saved with
    :meth:`state_dict` (or kept through pickling or ``copy.deepcopy``)
    is restored onto the next optimizer it meets, which should hold the
    matching optimizer state. ``sklearn.base.clone`` gives a fresh,
    unstarted copy.

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from sklears_neural.core.schedules import LRScheduler
    >>> w = torch.nn.Parameter(torch.zeros(1))
    >>> opt = torch.optim.SGD([w], lr=0.1)
    >>> trainer = SimpleNamespace(optimizer=opt, history=[])
    >>> sched = LRScheduler("step", step_size=2, gamma=0.5)
    >>> sched.on_train_begin(trainer)
    >>> for epoch in range(5):
    ...     opt.step()
    ...     sched.on_batch_end(trainer, batch_loss=None)
    ...     trainer.history.append({})
    ...     sched.on_epoch_end(trainer)
    >>> [record["lr"] for record in trainer.history]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    """

    def __init__(self, schedule, *, step_every=None, warmup_iters=0, **settings):
        self.schedule = schedule
        self.step_every = step_every
        self.warmup_iters = warmup_iters
        self.settings = settings
        self._check_options()
        self._unbind()
        self._pending = None

    # -- options ---------------------------------------------------------------

    def _check_options(self):
        if (
            isinstance(self.warmup_iters, bool)
            or not isinstance(self.warmup_iters, Integral)
            or self.warmup_iters < 0
        ):
            raise InvalidParameterError(
                "The 'warmup_iters' parameter of LRScheduler must be an int >= 0 "
                f"(optimizer steps). Got {self.warmup_iters!r} instead."
            )
        if callable(self.schedule) and not isinstance(self.schedule, str):
            if self.step_every not in (None, "epoch", "batch"):
                raise InvalidParameterError(
                    "The 'step_every' parameter of LRScheduler must be a str among "
                    f"['batch', 'epoch'] or None. Got {self.step_every!r} instead."
                )
            return
        name, _ = split_option(self.schedule)
        if name is None:
            raise InvalidParameterError(
                "The 'schedule' parameter of LRScheduler must be a schedule name "
                f"({', '.join(LEARNING_RATES.names)}), a (name, {{settings}}) "
                "tuple, or a callable optimizer -> torch LRScheduler. Got "
                f"{self.schedule!r} instead."
            )
        canonical = LEARNING_RATES.canonical(self.schedule)
        if canonical in _ESTIMATOR_RUN:
            raise ValueError(
                f"The {canonical!r} schedule is scikit-learn's and the estimator "
                "runs it (learning_rate=..., solver='sgd'). As a callback use "
                "InverseScalingLR or EarlyStopping(lr_reduce_factor=...)."
            )
        if self.step_every is not None:
            raise InvalidParameterError(
                f"The 'step_every' parameter of LRScheduler applies to callable "
                f"schedules only; {canonical!r} has its own cadence. Leave it None."
            )
        _check_settings(canonical, self._option()[1])

    def _option(self):
        """``(canonical name, merged settings)`` of a named schedule."""
        _, settings = split_option(self.schedule)
        return LEARNING_RATES.canonical(self.schedule), {**settings, **self.settings}

    def _name(self):
        if callable(self.schedule) and not isinstance(self.schedule, str):
            return None
        return self._option()[0]

    def __repr__(self):
        args = [repr(self.schedule)]
        if self.step_every is not None:
            args.append(f"step_every={self.step_every!r}")
        if self.warmup_iters:
            args.append(f"warmup_iters={self.warmup_iters!r}")
        args += [f"{k}={v!r}" for k, v in self.settings.items()]
        return f"{type(self).__name__}({', '.join(args)})"

    # -- binding to an optimizer -----------------------------------------------

    def _unbind(self):
        self._optimizer = None
        self._scheduler = None
        self._every = None
        self._horizon = None
        self._context = None
        self._base_lrs = None
        self._steps = 0
        self._scaled = False
        self._last_lr = None

    def reset(self):
        """Forget the schedule's progress: the next training starts it over.

        The next optimizer met is scheduled from its current learning rate;
        state waiting to be restored (from :meth:`load_state_dict` or
        unpickling) is dropped.
        """
        self._unbind()
        self._pending = None

    def _bind(self, optimizer, context, base_lrs):
        groups = optimizer.param_groups
        if len(base_lrs) != len(groups):
            raise ValueError(
                f"This schedule was saved for {len(base_lrs)} parameter group(s); the "
                f"optimizer has {len(groups)}."
            )
        # Every scheduler is built from these: a kept optimizer may hold a
        # stale "initial_lr" that torch would otherwise reuse.
        for group, lr in zip(groups, base_lrs):
            group["lr"] = lr
            group["initial_lr"] = lr
        if self._name() is None:
            scheduler = self.schedule(optimizer, **self.settings)
            if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau) or not isinstance(
                scheduler, lr_scheduler.LRScheduler
            ):
                raise TypeError(
                    "LRScheduler's schedule must return a torch.optim.lr_scheduler "
                    f"scheduler other than ReduceLROnPlateau; got {type(scheduler)!r}. "
                    "For a rate that drops on a plateau use EarlyStopping("
                    "lr_reduce_factor=...)."
                )
            plan = _Plan(scheduler, self.step_every or "epoch", None)
        else:
            plan = LEARNING_RATES.build(self._option(), optimizer=optimizer, **context)
        self._unbind()
        self._optimizer = optimizer
        self._scheduler, self._every, self._horizon = plan
        self._context = dict(context)
        self._base_lrs = list(base_lrs)

    def _start(self, optimizer, context, base_lrs):
        """Bind to ``optimizer`` and start the schedule from its first value."""
        self._bind(optimizer, context, base_lrs)
        self._write()

    def _restore(self, optimizer, state):
        if state.get("schedule") != self._name():
            raise ValueError(
                f"This state is for schedule {state.get('schedule')!r}, not "
                f"{self._name()!r}."
            )
        self._bind(optimizer, state["context"], state["base_lrs"])
        self._steps = state["steps"]
        self._scaled = state["scaled"]
        self._last_lr = state["last_lr"]
        if self._scheduler is not None:
            self._scheduler.load_state_dict(copy.deepcopy(state["scheduler"]))
        # Building the scheduler moved the rates; put back the saved ones.
        for group, lr in zip(optimizer.param_groups, state["lrs"]):
            group["lr"] = lr

    # -- the rate --------------------------------------------------------------

    def _factor(self):
        """Warmup multiplier of the next optimizer step."""
        if not self.warmup_iters:
            return 1.0
        return min(1.0, (self._steps + 1) / self.warmup_iters)

    def _scheduled(self):
        if self._scheduler is None:
            return self._base_lrs
        return self._scheduler.get_last_lr()

    def _write(self):
        """Set the rates the optimizer uses: the scheduled ones, ramped in warmup.

        Outside warmup nothing is written, so a change made by someone else
        (a user, another callback) stands until the schedule next steps.
        """
        factor = self._factor()
        if factor < 1.0 or self._scaled:
            for group, lr in zip(self._optimizer.param_groups, self._scheduled()):
                group["lr"] = lr * factor
            self._scaled = factor < 1.0

    def _advance(self):
        scheduler = self._scheduler
        if scheduler is not None and (
            self._horizon is None or scheduler.last_epoch < self._horizon
        ):
            if self._scaled:
                # torch's recursive formulas read group["lr"]: show them the
                # rate they computed, not the ramped one.
                groups = self._optimizer.param_groups
                for group, lr in zip(groups, scheduler.get_last_lr()):
                    group["lr"] = lr
                self._scaled = False
            scheduler.step()
        self._write()

    # -- hooks -----------------------------------------------------------------

    def on_train_begin(self, trainer, **kwargs):
        optimizer = trainer.optimizer
        if optimizer is None:
            raise ValueError(
                "LRScheduler needs a mini-batch solver (sgd, adam, ...); "
                "solver='lbfgs' has no learning rate to schedule."
            )
        if optimizer is self._optimizer:
            return
        if self._pending is not None:
            state, self._pending = self._pending, None
            self._restore(optimizer, state)
            return
        context = {
            "learning_rate_init": optimizer.param_groups[0]["lr"],
            "max_iter": kwargs.get("max_epochs"),
            "steps_per_epoch": kwargs.get("n_batches"),
        }
        self._start(optimizer, context, [g["lr"] for g in optimizer.param_groups])

    def on_batch_end(self, trainer, *, batch_loss, **kwargs):
        if self._optimizer is None:
            return
        self._last_lr = self._optimizer.param_groups[0]["lr"]
        self._steps += 1
        if self._every == "batch":
            self._advance()
        else:
            self._write()

    def on_epoch_end(self, trainer, **kwargs):
        if self._optimizer is None:
            return
        lr = self._last_lr if self._last_lr is not None else (
            self._optimizer.param_groups[0]["lr"]
        )
        trainer.history[-1]["lr"] = float(lr)
        if self._every == "epoch":
            self._advance()

    # -- state -----------------------------------------------------------------

    def state_dict(self):
        """Everything needed to continue the schedule exactly, as plain data.

        Returns
        -------
        state : dict or None
            ``None`` when the schedule has not started. Restoring it needs
            the optimizer's own state too (moments, and the rates in its
            parameter groups).
        """
        if self._optimizer is None:
            return copy.deepcopy(self._pending)
        scheduler = None
        if self._scheduler is not None:
            scheduler = copy.deepcopy(self._scheduler.state_dict())
        return {
            "schedule": self._name(),
            "steps": self._steps,
            "scaled": self._scaled,
            "last_lr": self._last_lr,
            "base_lrs": list(self._base_lrs),
            "context": dict(self._context),
            "lrs": [group["lr"] for group in self._optimizer.param_groups],
            "scheduler": scheduler,
        }

    def load_state_dict(self, state):
        """Continue from a :meth:`state_dict`, now or on the next optimizer met.

        Parameters
        ----------
        state : dict or None
            ``None`` (the state of an unstarted schedule) drops any state
            waiting to be restored and leaves a started schedule as it is.
        """
        if state is None:
            self._pending = None
        elif self._optimizer is None:
            self._pending = copy.deepcopy(state)
        else:
            self._restore(self._optimizer, state)

    def __getstate__(self):
        state = dict(self.__dict__)
        if self._optimizer is not None:
            # The optimizer and torch scheduler belong to the training run;
            # their state travels as plain data and is restored on rebinding.
            state["_pending"] = self.state_dict()
        state["_optimizer"] = None
        state["_scheduler"] = None
        return state

    def __sklearn_clone__(self):
        return type(self)(
            copy.deepcopy(self.schedule),
            step_every=self.step_every,
            warmup_iters=self.warmup_iters,
            **copy.deepcopy(self.settings),
        )


def make_schedule(option, optimizer, *, learning_rate_init, max_iter, steps_per_epoch,
                  warmup_iters=0):
    """The :class:`LRScheduler` an estimator's ``learning_rate`` asks for, started.

    Parameters
    ----------
    option : str, (str, dict) or dict
        The estimator's ``learning_rate``.
    optimizer : torch.optim.Optimizer
        Its rates are set to ``learning_rate_init``, then to the schedule's
        first value.
    learning_rate_init : float
    max_iter : int
        Epochs of the fit: ``cosine``'s ``T_max``, ``one_cycle``'s length
        and the default decay of ``step`` and ``exponential``.
    steps_per_epoch : int
        Optimizer steps per epoch, ``ceil(n_samples / batch_size)``.
    warmup_iters : int, default=0
        Optimizer steps of linear warmup (see :class:`LRScheduler`).

    Returns
    -------
    LRScheduler or None
        ``None`` for ``"constant"`` without warmup and for scikit-learn's
        ``"invscaling"`` and ``"adaptive"``, which the estimator runs itself
        (for ``solver="sgd"`` only; scikit-learn ignores them otherwise).

    Raises
    ------
    ValueError
        For an unknown name or setting (listing the valid ones), a setting
        out of range, or ``warmup_iters`` with ``"invscaling"`` /
        ``"adaptive"``, whose rules set the rate themselves.
    """
    canonical = LEARNING_RATES.canonical(option)
    if canonical in _ESTIMATOR_RUN:
        _check_settings(canonical, split_option(option)[1])
        if warmup_iters:
            raise ValueError(
                f"warmup_iters={warmup_iters} does not combine with "
                f"learning_rate={canonical!r}, whose rule sets the rate itself. Use "
                "learning_rate='constant' or another schedule, or warmup_iters=0."
            )
        return None
    callback = LRScheduler(option, warmup_iters=warmup_iters)
    if canonical == "constant" and not warmup_iters:
        return None
    context = {
        "learning_rate_init": learning_rate_init,
        "max_iter": max_iter,
        "steps_per_epoch": steps_per_epoch,
    }
    base_lrs = [learning_rate_init] * len(optimizer.param_groups)
    callback._start(optimizer, context, base_lrs)
    return callback
