"""Callbacks: small objects the trainer calls at fixed points of the loop.

Every hook is a no-op taking the trainer plus ``**kwargs``; a callback
overrides only what it needs. Stopping is a value: a callback sets
``trainer.should_stop = True`` and the loop ends after the current epoch.
Hooks that are not overridden are never called, so unused callbacks cost
nothing in the batch loop.
"""

import math

__all__ = ["Callback", "EarlyStopping", "EpochLogger", "InverseScalingLR"]


class Callback:
    """Base class of all callbacks: every hook does nothing.

    Hooks receive the :class:`~sklears_neural.core.trainer.Trainer`, whose
    ``module``, ``optimizer``, ``history`` and ``should_stop`` they may read
    and change.
    """

    def on_train_begin(self, trainer, **kwargs):
        """Called once before the first epoch of a ``fit`` / ``partial_fit``."""

    def on_epoch_begin(self, trainer, **kwargs):
        """Called before each epoch."""

    def on_batch_end(self, trainer, *, batch_loss, **kwargs):
        """Called after each optimizer step with the batch loss (a tensor).

        Overriding this hook makes the loop call it for every batch; read
        ``batch_loss.item()`` only if needed, as it waits for the device.
        """

    def on_epoch_end(self, trainer, **kwargs):
        """Called after each epoch, once ``trainer.history[-1]`` is recorded."""

    def on_train_end(self, trainer, **kwargs):
        """Called once after the last epoch, also when a callback stopped early."""


class EarlyStopping(Callback):
    """Stop when a monitored value stops improving; optionally keep the best weights.

    This is scikit-learn's convergence rule: an epoch counts as "no
    improvement" when the monitored value is not better than the best one by
    at least ``tol``; training stops when more than ``patience`` epochs in a
    row count so.

    Parameters
    ----------
    monitor : str, default="valid_loss"
        Key of ``trainer.history[-1]`` to watch (``"train_loss"``,
        ``"valid_loss"``, ``"valid_score"``).
    patience : int or float, default=10
        Number of non-improving epochs tolerated; ``np.inf`` never stops.
    tol : float, default=1e-4
        Minimum change that counts as an improvement.
    lower_is_better : bool or None, default=None
        ``None`` infers it from the name: keys containing "loss" are lower
        is better, others (scores) higher is better.
    restore_best_weights : bool, default=False
        Load the weights of the best epoch when training ends.
    restore_on : {"end", "stop"}, default="end"
        With ``restore_best_weights``: ``"end"`` restores whenever training
        ends (scikit-learn's ``early_stopping``); ``"stop"`` only when this
        callback stopped it (``partial_fit`` loops, where every call "ends").
    lr_reduce_factor : float or None, default=None
        If set, running out of patience first divides every learning rate by
        this factor and resets the count (scikit-learn's
        ``learning_rate="adaptive"``); training stops only once the learning
        rate falls to ``min_lr`` or below.
    min_lr : float, default=1e-6
        See ``lr_reduce_factor``.

    Attributes
    ----------
    best_value : float
        Best monitored value so far.
    best_epoch : int or None
        Index in the history of the best epoch.
    no_improvement_count : int
        Current run of non-improving epochs.
    stopped : bool
        Whether this callback ended training.
    """

    def __init__(
        self,
        monitor="valid_loss",
        patience=10,
        tol=1e-4,
        *,
        lower_is_better=None,
        restore_best_weights=False,
        restore_on="end",
        lr_reduce_factor=None,
        min_lr=1e-6,
        verbose=False,
    ):
        self.monitor = monitor
        self.patience = patience
        self.tol = tol
        self.lower_is_better = lower_is_better
        self.restore_best_weights = restore_best_weights
        self.restore_on = restore_on
        self.lr_reduce_factor = lr_reduce_factor
        self.min_lr = min_lr
        self.verbose = verbose
        self.reset()

    def reset(self):
        """Forget everything seen so far (a new ``fit`` starts over)."""
        self.best_value = None
        self.best_epoch = None
        self.best_state = None
        self.no_improvement_count = 0
        self.stopped = False

    def _lower(self):
        if self.lower_is_better is None:
            return "loss" in self.monitor
        return self.lower_is_better

    def on_epoch_end(self, trainer, **kwargs):
        value = trainer.history[-1].get(self.monitor)
        if value is None:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, which this fit does not "
                f"record. Recorded keys: {sorted(trainer.history[-1])}."
            )
        lower = self._lower()
        sign = 1.0 if lower else -1.0
        best = math.inf if self.best_value is None else sign * self.best_value
        current = sign * value
        # NaN compares False both ways: it counts as no improvement.
        if not current < best - self.tol:
            self.no_improvement_count += 1
        else:
            self.no_improvement_count = 0
        if current < best:
            self.best_value = value
            self.best_epoch = len(trainer.history) - 1
            if self.restore_best_weights:
                self.best_state = trainer.snapshot()
        if self.no_improvement_count > self.patience:
            self._out_of_patience(trainer)

    def _out_of_patience(self, trainer):
        msg = (
            f"{self.monitor.replace('_', ' ').capitalize()} did not improve more "
            f"than tol={self.tol:f} for {self.patience} consecutive epochs."
        )
        if self.lr_reduce_factor is not None:
            lr = trainer.optimizer.param_groups[0]["lr"]
            if lr > self.min_lr:
                for group in trainer.optimizer.param_groups:
                    group["lr"] = group["lr"] / self.lr_reduce_factor
                self.no_improvement_count = 0
                if self.verbose:
                    new_lr = trainer.optimizer.param_groups[0]["lr"]
                    print(f"{msg} Setting learning rate to {new_lr:f}")
                return
            msg += " Learning rate too small."
        if self.verbose:
            print(f"{msg} Stopping.")
        self.stopped = True
        trainer.should_stop = True

    def on_train_end(self, trainer, **kwargs):
        if not self.restore_best_weights or self.best_state is None:
            return
        if self.restore_on == "end" or self.stopped:
            trainer.restore(self.best_state)


class InverseScalingLR(Callback):
    """scikit-learn's ``learning_rate="invscaling"``: ``lr = lr0 / (t + 1) ** power_t``.

    ``t`` is the number of training samples seen so far; the rate is updated
    at the end of every epoch, as scikit-learn's SGD does.

    Parameters
    ----------
    learning_rate_init : float
        ``lr0``.
    power_t : float
        The exponent.
    """

    def __init__(self, learning_rate_init, power_t):
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t

    def on_epoch_end(self, trainer, **kwargs):
        lr = self.learning_rate_init / (trainer.samples_seen + 1) ** self.power_t
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr


class EpochLogger(Callback):
    """Print one line per epoch, in scikit-learn's ``verbose`` format.

    Parameters
    ----------
    keys : sequence of str, default=("train_loss", "valid_score")
        Record keys to print when present.
    """

    _FORMATS = {
        "train_loss": "Iteration {epoch}, loss = {value:.8f}",
        "valid_loss": "Validation loss: {value:f}",
        "valid_score": "Validation score: {value:f}",
    }

    def __init__(self, keys=("train_loss", "valid_score")):
        self.keys = keys

    def on_epoch_end(self, trainer, **kwargs):
        record = trainer.history[-1]
        for key in self.keys:
            if key in record:
                fmt = self._FORMATS.get(key, key + ": {value}")
                print(fmt.format(epoch=record["epoch"], value=record[key]))
