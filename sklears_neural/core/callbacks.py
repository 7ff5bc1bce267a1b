"""Callbacks: small objects the trainer calls at fixed points of the loop.

Every hook is a no-op taking the trainer plus ``**kwargs``; a callback
overrides only what it needs. Stopping is a value: a callback sets
``trainer.should_stop = True`` and the loop ends after the current epoch
(at once when set from ``on_batch_end``). Hooks that are not overridden are
never called, so unused callbacks cost nothing in the batch loop.

Options are checked when a callback is built: a bad value raises scikit-learn's
``InvalidParameterError`` (both a ``ValueError`` and a ``TypeError``), naming
the option, the callback, what is accepted and what came.
"""

import copy
import inspect
import math
import sys
import warnings

import torch

from sklears_neural.core import checks
from sklears_neural.exceptions import ConvergenceWarning

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "EpochLogger",
    "GradientStats",
    "InverseScalingLR",
    "ProgressBar",
    "TerminateOnNaN",
]


class Callback:
    """Base class of all callbacks: every hook does nothing.

    Hooks receive the :class:`~sklears_neural.core.trainer.Trainer`, whose
    ``module``, ``optimizer``, ``history`` and ``should_stop`` they may read
    and change.
    """

    def __repr__(self):
        # As scikit-learn's estimators: the options that differ from their
        # defaults, so ``MLPClassifier(callbacks=[...])`` prints readably.
        shown = []
        for name, param in inspect.signature(type(self).__init__).parameters.items():
            if name == "self" or param.kind in (
                param.VAR_POSITIONAL, param.VAR_KEYWORD
            ):
                continue
            if not hasattr(self, name):
                return object.__repr__(self)
            value = getattr(self, name)
            try:
                is_default = value is param.default or (
                    type(value) is type(param.default) and bool(value == param.default)
                )
            except (TypeError, ValueError):
                is_default = False
            if not is_default:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def on_train_begin(self, trainer, **kwargs):
        """Called once before the first epoch of a ``fit`` / ``partial_fit``.

        The trainer may pass ``max_epochs`` (the most epochs this call runs)
        and ``n_batches`` (mini-batches per epoch) as keyword arguments.
        """

    def on_epoch_begin(self, trainer, **kwargs):
        """Called before each epoch."""

    def on_backward_end(self, trainer, **kwargs):
        """Called after ``loss.backward()``, before ``optimizer.step()``.

        The gradients are in ``p.grad`` for every parameter ``p`` of
        ``trainer.module``, and the weights are still those the batch loss
        was computed with. Overriding this hook makes the loop call it for
        every mini-batch; the full-batch L-BFGS solver never calls it.
        """

    def on_batch_end(self, trainer, *, batch_loss, **kwargs):
        """Called after each optimizer step with the batch loss (a tensor).

        Overriding this hook makes the loop call it for every batch; read
        ``batch_loss.item()`` only if needed, as it waits for the device.
        Setting ``trainer.should_stop`` here ends training at once: the
        interrupted epoch is not recorded.
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
        self._check_options()
        self.reset()

    def _check_options(self):
        # Checked here rather than when training starts: the mistake shows
        # where the callback was written, not epochs into a fit.
        owner = type(self).__name__
        if not isinstance(self.monitor, str):
            checks.fail(owner, "monitor", "a history key (a str)", self.monitor)
        if self.patience != math.inf:
            checks.check_int(owner, "patience", self.patience, low=0)
        checks.check_real(owner, "tol", self.tol, low=0)
        checks.check_options(owner, "restore_on", self.restore_on, {"end", "stop"})
        if self.lr_reduce_factor is not None:
            checks.check_real(owner, "lr_reduce_factor", self.lr_reduce_factor, low=1,
                              low_open=True)
        checks.check_real(owner, "min_lr", self.min_lr, low=0)

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
            # A ValueError before any weight is kept: the estimator rolls the
            # whole fit back.
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, which this fit does not "
                f"record (it records {sorted(trainer.history[-1])}). Validation "
                "keys (valid_loss, valid_score) are recorded only with "
                "early_stopping=True on the estimator, which sets "
                "validation_fraction of the data aside; or monitor the training "
                "loss: EarlyStopping(monitor='train_loss')."
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


def _display_keys(record):
    """Record keys shown by default: numbers, neither "epoch" nor namespaced."""
    return [
        key for key, value in record.items()
        if key != "epoch" and "/" not in key and isinstance(value, (int, float))
        and not isinstance(value, bool)
    ]


def _import_tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError(
            "ProgressBar (and verbose >= 2) needs tqdm, a dependency of "
            "sklears-neural that is missing here: `pip install tqdm`."
        ) from exc
    return tqdm


class ProgressBar(Callback):
    """Show a tqdm progress bar on stderr, with the latest record as postfix.

    One bar per ``fit`` (or ``partial_fit``) call. It advances once per epoch,
    or once per mini-batch with ``unit="batch"``; after every epoch its
    postfix shows the newest entries of ``trainer.history[-1]``
    (``train_loss=0.1234, valid_score=0.95``). It closes when training ends,
    a Ctrl-C included.

    The estimators add one when ``verbose >= 2``; ``verbose=1`` keeps
    scikit-learn's printed lines and ``verbose=0`` prints nothing.

    Parameters
    ----------
    unit : {"epoch", "batch"}, default="epoch"
        What one step of the bar is. ``"batch"`` is for long epochs; it
        reads no batch loss, so it adds no device synchronization. A solver
        without mini-batches (L-BFGS) counts epochs either way.
    keys : sequence of str or None, default=None
        Record keys shown in the postfix, when present. ``None`` shows every
        number of the record except ``"epoch"`` and namespaced keys holding
        a ``"/"`` (such as :class:`GradientStats`' ``"grad_norm/..."``).
    leave : bool, default=True
        Keep the finished bar on screen.

    Notes
    -----
    The bar's length is ``max_epochs`` (times ``n_batches`` for
    ``unit="batch"``) as the trainer passes them to ``on_train_begin``;
    without them the bar counts without a total. The bar object lives only
    during training: a pickled or copied callback never carries it.

    Examples
    --------
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.callbacks import ProgressBar
    >>> MLPClassifier(callbacks=[ProgressBar(unit="batch")])
    MLPClassifier(callbacks=[ProgressBar(unit='batch')])
    """

    def __init__(self, unit="epoch", *, keys=None, leave=True):
        checks.check_options(type(self).__name__, "unit", unit, {"epoch", "batch"})
        if keys is not None and (
            isinstance(keys, str) or not all(isinstance(k, str) for k in keys)
        ):
            checks.fail(type(self).__name__, "keys", "None or a sequence of str "
                        "(record keys such as 'train_loss')", keys)
        checks.check_bool(type(self).__name__, "leave", leave)
        _import_tqdm()
        self.unit = unit
        self.keys = keys
        self.leave = leave
        self._bar = None
        self._per_batch = False

    def __getstate__(self):
        state = dict(self.__dict__)
        # A live bar holds a stream and a lock: neither pickles nor copies.
        state["_bar"] = None
        return state

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_begin(self, trainer, *, max_epochs=None, n_batches=None, **kwargs):
        # A bar left open by a fit that raised is closed here.
        self._close()
        # Without mini-batches (L-BFGS) the bar counts epochs.
        self._per_batch = self.unit == "batch" and n_batches is not None
        total = max_epochs
        if self._per_batch:
            total = None if max_epochs is None else max_epochs * n_batches
        self._bar = _import_tqdm()(
            total=total,
            unit="batch" if self._per_batch else "epoch",
            leave=self.leave,
            file=sys.stderr,
            # tqdm's default (None) hides the bar whenever stderr is not a
            # terminal; the caller asked for a bar, so always draw it.
            disable=False,
            dynamic_ncols=True,
        )

    def on_epoch_begin(self, trainer, **kwargs):
        if self._per_batch and self._bar is not None:
            epoch = len(trainer.history) + 1
            self._bar.set_description(f"epoch {epoch}", refresh=False)

    def on_batch_end(self, trainer, **kwargs):
        if self._per_batch and self._bar is not None:
            self._bar.update(1)

    def on_epoch_end(self, trainer, **kwargs):
        if self._bar is None:
            return
        record = trainer.history[-1]
        keys = _display_keys(record) if self.keys is None else self.keys
        postfix = {
            key: f"{record[key]:.4g}" for key in keys
            if isinstance(record.get(key), (int, float))
        }
        self._bar.set_postfix(postfix, refresh=False)
        if self._per_batch:
            self._bar.refresh()
        else:
            self._bar.update(1)

    def on_train_end(self, trainer, **kwargs):
        self._close()


class TerminateOnNaN(Callback):
    """Stop training at the first mini-batch whose loss is NaN or infinite.

    Training then ends cleanly (``trainer.should_stop = True``; nothing is
    raised): the weights, and the optimizer state, go back to what they
    were at the beginning of that epoch, which are the weights of the last
    recorded epoch. The estimator stays fitted with finite weights, its
    history ends at the last finite epoch, and a
    :class:`~sklearn.exceptions.ConvergenceWarning` says which epoch and batch
    diverged.

    Without this callback, a non-finite epoch loss raises
    :class:`~sklears_neural.exceptions.TrainingDivergedError` at the end of
    the epoch instead. Other callbacks still end training as usual: with
    ``early_stopping=True`` the best epoch's weights come back last. The
    full-batch L-BFGS solver runs no mini-batches, so there this callback
    does nothing and a divergence raises.

    Parameters
    ----------
    restore_weights : bool, default=True
        Put back the weights and optimizer state of the beginning of the
        epoch. ``False`` leaves the module as the non-finite step left it.

    Attributes
    ----------
    stopped : bool
        Whether this callback ended the last training call.
    stopped_epoch : int or None
        1-based epoch in which the loss stopped being finite.
    stopped_batch : int or None
        1-based mini-batch of that epoch.

    Notes
    -----
    Checking a batch reads ``batch_loss.item()``, which waits for the device
    once per mini-batch. On a CPU that costs next to nothing; on an
    accelerator it stops the host from queueing the next batch ahead. With
    ``restore_weights`` the callback also copies the weights and optimizer
    state once per epoch.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.callbacks import TerminateOnNaN
    >>> X, y = load_iris(return_X_y=True)
    >>> stopper = TerminateOnNaN()
    >>> clf = MLPClassifier(max_iter=20, random_state=0, callbacks=[stopper])
    >>> clf = clf.fit(X, y)
    >>> stopper.stopped, stopper.stopped_epoch
    (False, None)
    """

    def __init__(self, restore_weights=True):
        checks.check_bool(type(self).__name__, "restore_weights", restore_weights)
        self.restore_weights = restore_weights
        self.stopped = False
        self.stopped_epoch = None
        self.stopped_batch = None
        self._saved = None
        self._batch = 0

    def __getstate__(self):
        state = dict(self.__dict__)
        # The epoch-begin copy of the weights is scratch of one training call.
        state["_saved"] = None
        return state

    def on_train_begin(self, trainer, **kwargs):
        self.stopped = False
        self.stopped_epoch = None
        self.stopped_batch = None

    def on_epoch_begin(self, trainer, **kwargs):
        self._batch = 0
        if self.restore_weights:
            optimizer = getattr(trainer, "optimizer", None)
            self._saved = (
                trainer.snapshot(),
                None if optimizer is None else copy.deepcopy(optimizer.state_dict()),
            )

    def on_batch_end(self, trainer, *, batch_loss, **kwargs):
        if self.stopped:
            return
        self._batch += 1
        if math.isfinite(batch_loss.item()):
            return
        self.stopped = True
        self.stopped_epoch = len(trainer.history) + 1
        self.stopped_batch = self._batch
        trainer.should_stop = True
        self._restore(trainer)
        warnings.warn(
            f"The training loss became NaN or infinite in epoch "
            f"{self.stopped_epoch}, batch {self.stopped_batch}; training stopped "
            + (
                "and the weights of the last finite epoch were restored. "
                if self.restore_weights and self._saved is not None
                else "with the weights of the diverged step. "
            )
            + "Scale the inputs (e.g. StandardScaler), lower learning_rate_init, "
            "or raise alpha.",
            ConvergenceWarning,
        )

    def _restore(self, trainer):
        if not self.restore_weights or self._saved is None:
            return
        weights, optimizer_state = self._saved
        trainer.restore(weights)
        if optimizer_state is not None:
            trainer.optimizer.load_state_dict(optimizer_state)

    def on_train_end(self, trainer, **kwargs):
        # Weights are not part of this callback's lasting state.
        self._saved = None


class GradientStats(Callback):
    """Record per-parameter gradient norms and update/weight ratios per epoch.

    After every epoch, ``trainer.history[-1]`` gains, for each trainable
    parameter ``name`` of the module (``"layers.0.weight"``, ...):

    - ``"grad_norm/<name>"``: the L2 norm of its gradient, averaged over the
      epoch's mini-batches;
    - ``"update_ratio/<name>"`` (with ``update_ratio=True``): the L2 norm of
      the optimizer step it received divided by the L2 norm of the weights
      before that step, averaged over the epoch's mini-batches.

    Values are Python floats, so the history still pickles and dumps to
    JSON.

    Parameters
    ----------
    update_ratio : bool, default=True
        Also record update/weight ratios. Each mini-batch then copies the
        weights once before the optimizer step.

    Notes
    -----
    For a parameter :math:`W` with gradient :math:`g_b` on mini-batch
    :math:`b` of an epoch of :math:`B` batches,

    .. math::

        \\text{grad\\_norm} = \\frac{1}{B} \\sum_b \\lVert g_b \\rVert_2,
        \\qquad
        \\text{update\\_ratio} = \\frac{1}{B} \\sum_b
        \\frac{\\lVert W_{b+1} - W_b \\rVert_2}{\\lVert W_b \\rVert_2}.

    Batches where a value is not finite (a step that loss scaling skipped)
    or, for the ratio, where :math:`\\lVert W_b \\rVert_2 = 0` (biases
    initialized at zero) are left out of the mean; a parameter with no such
    batch records NaN. Gradients are read in ``on_backward_end``, as the
    backward pass left them: before clipping, after loss-scale unscaling.

    Sums stay on the device; the callback reads them once per epoch, so it
    adds no per-batch host synchronization. The full-batch L-BFGS solver
    runs no mini-batch steps: there the callback records nothing and warns.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.callbacks import GradientStats
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=20, random_state=0,
    ...                     callbacks=[GradientStats()]).fit(X, y)
    >>> sorted(k for k in clf.history_[-1] if k.endswith("layers.0.weight"))
    ['grad_norm/layers.0.weight', 'update_ratio/layers.0.weight']
    >>> bool(clf.history_.to_frame()["grad_norm/layers.0.weight"].gt(0).all())
    True
    """

    def __init__(self, update_ratio=True):
        checks.check_bool(type(self).__name__, "update_ratio", update_ratio)
        self.update_ratio = update_ratio
        self._reset()
        self._epochs = self._backward_calls = 0

    def _reset(self):
        self._names = None
        self._params = None
        self._sums = None
        self._before = None
        self._n_batches = 0

    def __getstate__(self):
        state = dict(self.__dict__)
        # Parameters and device sums belong to one epoch of one fit.
        state.update(_names=None, _params=None, _sums=None, _before=None, _n_batches=0)
        return state

    def on_train_begin(self, trainer, **kwargs):
        self._reset()
        self._epochs = self._backward_calls = 0

    def on_epoch_begin(self, trainer, **kwargs):
        self._reset()

    def on_backward_end(self, trainer, **kwargs):
        self._backward_calls += 1
        if self._params is None:
            named = [(n, p) for n, p in trainer.module.named_parameters()
                     if p.requires_grad]
            if not named:
                return
            self._names = [n for n, _ in named]
            self._params = [p for _, p in named]
            # float32 at least, so half-precision norms do not overflow.
            dtype = torch.float32
            for p in self._params:
                dtype = torch.promote_types(dtype, p.dtype)
            # Rows: grad-norm sum, its count, ratio sum, its count.
            self._sums = torch.zeros(4, len(named), dtype=dtype,
                                     device=self._params[0].device)
        dtype = self._sums.dtype
        grads = [p.grad for p in self._params]
        if any(g is None for g in grads):
            zero = self._sums.new_zeros(())
            norms = torch.stack([
                zero if g is None else torch.linalg.vector_norm(g, dtype=dtype)
                for g in grads
            ])
        else:
            norms = torch.stack(torch._foreach_norm(grads, 2, dtype=dtype))
        self._accumulate(0, norms)
        if self.update_ratio:
            self._before = [p.detach().clone() for p in self._params]
        self._n_batches += 1

    def _accumulate(self, row, values, valid=None):
        finite = torch.isfinite(values)
        if valid is not None:
            finite &= valid
        self._sums[row] += torch.where(finite, values, 0.0)
        self._sums[row + 1] += finite

    def on_batch_end(self, trainer, **kwargs):
        if self._before is None:
            return
        after = [p.detach() for p in self._params]
        steps = torch._foreach_sub(after, self._before)
        dtype = self._sums.dtype
        step_norms = torch.stack(torch._foreach_norm(steps, 2, dtype=dtype))
        weight_norms = torch.stack(torch._foreach_norm(self._before, 2, dtype=dtype))
        nonzero = weight_norms > 0
        ratios = step_norms / torch.where(nonzero, weight_norms, 1.0)
        self._accumulate(2, ratios, nonzero)
        self._before = None

    def on_epoch_end(self, trainer, **kwargs):
        self._epochs += 1
        if not self._n_batches:
            return
        # One device read per epoch: (4, n_params) -> lists of floats.
        sums, counts = self._sums[0::2], self._sums[1::2]
        means = (sums / counts).tolist()
        record = trainer.history[-1]
        for name, value in zip(self._names, means[0]):
            record[f"grad_norm/{name}"] = float(value)
        if self.update_ratio:
            for name, value in zip(self._names, means[1]):
                record[f"update_ratio/{name}"] = float(value)
        self._reset()

    def on_train_end(self, trainer, **kwargs):
        self._reset()
        if self._epochs and not self._backward_calls:
            warnings.warn(
                "GradientStats recorded nothing: this training ran no mini-batch "
                "steps (solver='lbfgs' has none). Use solver='adam' or 'sgd'.",
                UserWarning,
            )


class Checkpoint(Callback):
    """Write the whole training state to one file every few epochs, atomically.

    The file is what ``est.save(path)`` writes (``config.json`` and
    ``model.safetensors`` in a zip, loaded by :func:`sklears_neural.load`
    without pickle), plus what an exact resume needs: optimizer moments,
    learning-rate schedule, early-stopping state, the generator (data order,
    dropout masks) and the epoch reached. Each write goes to a temporary
    file that then replaces ``path`` in one rename, so a process killed while
    writing leaves the previous checkpoint intact. The temporary file such a
    kill leaves behind is removed by a later successful write once no one
    has written to it for an hour
    (:data:`~sklears_neural.core.serialization.STALE_TEMP_SECONDS`: a save
    still running in another process is never disturbed).

    To resume, in a fresh process::

        est = sklears_neural.load(path)
        est.set_params(warm_start=True).fit(X, y)  # runs the epochs that were left

    With the same data this gives bit-identical weights to the run that was
    never interrupted, on the CPU with the same number of torch threads
    (reductions split differently across threads round differently; CUDA
    kernels may not be deterministic at all).

    Parameters
    ----------
    path : str or os.PathLike
        Target file; must end in ".zip".
    every : int, default=1
        Write after every ``every``-th epoch (counted over the history).

    Attributes
    ----------
    n_written : int
        Checkpoints written so far.
    """

    def __init__(self, path, *, every=1):
        if not str(path).lower().endswith(".zip"):
            raise ValueError(
                f"Checkpoint path must end in '.zip' (one file replaced atomically), "
                f"got {str(path)!r}."
            )
        checks.check_int("Checkpoint", "every", every, low=1)
        self.path = path
        self.every = every
        self.n_written = 0

    def on_train_begin(self, trainer, **kwargs):
        if getattr(trainer, "checkpoint", None) is None:
            raise ValueError(
                "Checkpoint needs a stochastic solver (sgd, adam, ...): this training "
                "loop cannot write its state (L-BFGS runs inside SciPy)."
            )

    def on_epoch_end(self, trainer, **kwargs):
        if len(trainer.history) % self.every == 0:
            trainer.checkpoint(self.path)
            self.n_written += 1
