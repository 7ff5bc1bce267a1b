"""The fit loop, and nothing else.

The :class:`Trainer` sees tensors, a module, an objective, an optimizer and
callbacks; it knows no model family and no scikit-learn. The estimator layer
builds all of those and reads the results back from ``trainer.history``.
"""

import math
import warnings

import numpy as np
import scipy.optimize
import torch
from sklearn.exceptions import ConvergenceWarning
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from sklears_neural.core.callbacks import Callback
from sklears_neural.core.data import rows_independent, takes_sparse
from sklears_neural.core.history import History
from sklears_neural.core.flat import FlatParameters
from sklears_neural.core.optim import direct_step
from sklears_neural.core.regularization import penalty_share
from sklears_neural.exceptions import TrainingDivergedError

__all__ = ["Trainer"]

_DIVERGED_HINT = (
    "Scale the inputs (e.g. StandardScaler), lower learning_rate_init, or "
    "raise alpha."
)


def _overrides(callback, hook):
    """Whether ``callback`` implements ``hook`` (base hooks are no-ops, skipped)."""
    return getattr(type(callback), hook, None) not in (None, getattr(Callback, hook, None))


def _recompute_batch_norm_statistics(module, forward):
    """Running statistics of batch norm layers, from one pass at the final weights.

    Every loss evaluation of L-BFGS's line search runs in training mode and
    moves the running averages, trial points that were rejected included,
    so after the solve they describe no weights in particular (a fit with
    zero training error predicted 29-49% right). The solution was trained
    on the statistics of all rows at once; one pass over all rows with a
    cumulative average (``momentum=None``) sets the running statistics to
    exactly those.
    """
    layers = [m for m in module.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              and m.track_running_stats]
    if not layers:
        return
    momenta = [m.momentum for m in layers]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        with torch.no_grad():
            forward()
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum


def _clip_grad_norm_(params, max_norm):
    """``torch.nn.utils.clip_grad_norm_`` for parameters of one device and dtype.

    The same operations in the same order (bit for bit its result), less
    the grouping of the tensors it does on every call.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    torch._foreach_mul_(grads, torch.clamp(float(max_norm) / (total + 1e-6), max=1.0))


def _weighted_mean(losses, sizes, distributed=None):
    """Mean of batch-mean ``losses`` weighted by batch ``sizes``, in float64.

    With ``distributed``, each loss is a rank's part of its batch's loss, and
    the ranks' totals are summed.
    """
    if not losses:
        return math.nan
    weights = torch.tensor(sizes, dtype=torch.float64, device=losses[0].device)
    total = torch.stack(losses).to(torch.float64) @ weights
    if distributed is not None:
        distributed.all_reduce_sum(total)
    return total.item() / sum(sizes)


class Trainer:
    """Run epochs of mini-batch optimization, or one L-BFGS solve.

    Parameters
    ----------
    module : torch.nn.Module
        Already on its device and dtype.
    objective : callable
        ``objective(module, X, y, sample_weight) -> loss``: the scalar that
        is minimized, penalties included, averaged over the batch.
    optimizer : torch.optim.Optimizer or None
        ``None`` for :meth:`fit_lbfgs`.
    callbacks : sequence of Callback, default=()
    generator : torch.Generator or None, default=None
        Source of the per-epoch permutations.
    history : History or None, default=None
        Records are appended to it; a new one is made if ``None``.
    samples_seen : int, default=0
        Training samples processed by earlier calls (``t_``), so schedules
        continue across ``partial_fit``.
    clip_grad_norm : float or None, default=None
        Rescale the gradients so their global L2 norm is at most this.
    clip_grad_value : float or None, default=None
        Clamp every gradient element to ``[-value, value]``.
    autocast_dtype : torch.dtype or None, default=None
        Run forward and loss under ``torch.autocast`` in this dtype (mixed
        precision); parameters and optimizer state stay in their own dtype.
    grad_scaler : torch.amp.GradScaler or None, default=None
        Loss scaling for float16 autocast: steps whose gradients overflow
        are skipped and counted in ``history[-1]["skipped_steps"]``.
    train_step : callable or None, default=None
        ``train_step(X, y, sample_weight) -> loss`` that fills the
        parameters' ``.grad`` itself (see :mod:`~sklears_neural.core.fused`;
        they are reset before it, unless its ``overwrites_gradients`` is
        true),
        used instead of ``objective`` + ``backward`` where given. Not with
        autocast or a grad scaler.
    augment : callable or None, default=None
        ``augment(inputs, generator) -> inputs`` applied to each training
        batch's inputs before the step (see :mod:`~sklears_neural.core.augment`);
        draws from ``generator``, so a seeded fit and its resume repeat it.
    stop_on_divergence : bool, default=False
        An epoch whose loss is not finite ends training, with a
        ``ConvergenceWarning``, on the weights of the last finite epoch
        (callbacks such as EarlyStopping then restore their best), instead
        of raising :class:`~sklears_neural.exceptions.TrainingDivergedError`.
    distributed : DataParallel or None, default=None
        Data-parallel training (:mod:`~sklears_neural.core.distributed`):
        every rank runs the same epochs on the same data, takes its share of
        each batch, and the gradients are summed across the ranks before
        clipping and the step.

    Attributes
    ----------
    should_stop : bool
        Set by a callback to end training after the current epoch.
    samples_seen : int
    history : History
    checkpoint : callable or None
        ``checkpoint(path)`` writes the complete training state (weights,
        optimizer, schedule, generator, history, epoch) so that the fit can
        resume bit for bit; set by the estimator for stochastic solvers.
    """

    def __init__(
        self,
        module,
        objective,
        optimizer,
        *,
        callbacks=(),
        generator=None,
        history=None,
        samples_seen=0,
        clip_grad_norm=None,
        clip_grad_value=None,
        autocast_dtype=None,
        grad_scaler=None,
        train_step=None,
        augment=None,
        stop_on_divergence=False,
        distributed=None,
    ):
        self.module = module
        self.objective = objective
        self.optimizer = optimizer
        self.callbacks = list(callbacks)
        self.generator = generator
        self.history = History() if history is None else history
        self.samples_seen = samples_seen
        self.should_stop = False
        # Set by the estimator: ``checkpoint(path)`` writes the whole training
        # state (see callbacks.Checkpoint).
        self.checkpoint = None
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self._clipping = clip_grad_norm is not None or clip_grad_value is not None
        self.autocast_dtype = autocast_dtype
        self.grad_scaler = grad_scaler
        if train_step is not None and (autocast_dtype is not None or grad_scaler is not None):
            raise ValueError("train_step computes its own gradients: not with autocast.")
        self.train_step = train_step
        self._reset_gradients = not getattr(train_step, "overwrites_gradients", False)
        self.augment = augment
        self.stop_on_divergence = stop_on_divergence
        self.distributed = distributed
        # The part of the global batch this rank's gradients stand for.
        self._share_fraction = 1.0
        self._broadcast_buffers = distributed is not None and any(
            True for _ in module.buffers()
        )
        self._batch_callbacks = [
            cb for cb in self.callbacks if _overrides(cb, "on_batch_end")
        ]
        self._backward_callbacks = [
            cb for cb in self.callbacks if _overrides(cb, "on_backward_end")
        ]
        self._params = (
            [] if optimizer is None
            else [p for group in optimizer.param_groups for p in group["params"]]
        )
        # The parameters in one buffer (core.flat); a step that computes its
        # own gradients writes them into a second one, which clipping and
        # the optimizer's kernel then take whole.
        self.flat = FlatParameters.flatten(self._params) if self._params else None
        self._flat_grads = None
        if self.flat is not None and hasattr(train_step, "use_gradients"):
            self._flat_grads = self.flat.gradients()
            train_step.use_gradients(self._flat_grads)
        # The optimizer's kernel called directly where that is exact.
        self._optimizer_step = (
            None if optimizer is None
            else direct_step(optimizer, self.flat) or optimizer.step
        )
        # clip_grad_norm_'s foreach arithmetic without its per-call grouping
        # by device and dtype (half of a small MLP's clipped step is that
        # bookkeeping), where there is one group.
        groups = {(p.device.type, p.device, p.dtype) for p in self._params}
        self._lean_clip = len(groups) == 1 and next(iter(groups))[0] in ("cpu", "cuda")

    # -- weights -----------------------------------------------------------

    def snapshot(self, into=None):
        """A detached copy of the module's ``state_dict``.

        Parameters
        ----------
        into : dict or None, default=None
            An earlier snapshot to overwrite in place, which saves holding
            two copies of the weights while the new one is taken.
        """
        state = self.module.state_dict()
        if into is None or into.keys() != state.keys() or any(
            into[k].shape != v.shape or into[k].dtype != v.dtype for k, v in state.items()
        ):
            return {k: v.detach().clone() for k, v in state.items()}
        with torch.no_grad():
            for k, v in state.items():
                into[k].copy_(v)
        return into

    def restore(self, state):
        """Load a :meth:`snapshot` back into the module, in place."""
        with torch.no_grad():
            for name, tensor in self.module.state_dict().items():
                tensor.copy_(state[name])

    def _call(self, hook, **kwargs):
        for cb in self.callbacks:
            getattr(cb, hook)(self, **kwargs)

    def _diverged(self, epoch, last_finite):
        if last_finite is not None:
            self.restore(last_finite)
            payload = {k: v.cpu().numpy() for k, v in last_finite.items()}
        else:
            payload = None
        raise TrainingDivergedError(
            # scikit-learn's words first: code that matches them keeps working.
            "Solver produced non-finite parameter weights. The input data may "
            f"contain large values and need to be preprocessed. The training loss "
            f"became NaN or infinite in epoch {epoch}. " + _DIVERGED_HINT,
            epoch=epoch,
            last_finite_state=payload,
        )

    # -- mini-batch optimization -------------------------------------------

    def fit(self, data, *, max_epochs, batch_size, shuffle=True, evaluate=None):
        """Run up to ``max_epochs`` epochs over ``data``.

        Parameters
        ----------
        data : ArrayData
        max_epochs : int
        batch_size : int
        shuffle : bool, default=True
        evaluate : callable or None, default=None
            Called after each epoch with no argument; returns a dict of
            extra record entries (``{"valid_loss": ..., "valid_score": ...}``).

        Raises
        ------
        TrainingDivergedError
            If an epoch's loss is not finite; the module is reset to the
            weights of the last finite epoch first.
        """
        last_finite = self.snapshot()
        self.begin(max_epochs=max_epochs,
                   n_batches=math.ceil(data.n_samples / batch_size))
        try:
            for _ in range(max_epochs):
                last_finite = self._run_epoch(data, batch_size, shuffle, evaluate,
                                              last_finite)
                if self.should_stop:
                    break
        except KeyboardInterrupt:
            # As scikit-learn: Ctrl-C ends training, and the model keeps what
            # it learned so far instead of losing it.
            warnings.warn("Training interrupted by user.")
        self.end()
        return self

    # -- loops of the caller's own (RL rollouts, alternating updates) --------

    def begin(self, *, max_epochs=None, n_batches=None):
        """Start training: clear ``should_stop``, run ``on_train_begin``.

        :meth:`fit` calls it; a loop that is not epochs over a dataset (an
        agent's rollouts) calls it, then :meth:`step` per update and
        :meth:`end_epoch` per unit it records (an episode), then :meth:`end`,
        and so gets the callbacks, clipping, loss scaling and history of
        every other family.

        Parameters
        ----------
        max_epochs, n_batches : int or None, default=None
            Passed to the callbacks (a progress bar's totals), where known.
        """
        self.should_stop = False
        self._call("on_train_begin", max_epochs=max_epochs, n_batches=n_batches)

    def begin_epoch(self):
        """Run ``on_epoch_begin`` (a unit of the caller's loop starts)."""
        self._call("on_epoch_begin")

    def step(self, loss, *, backward=True):
        """One optimizer step on a loss the caller computed.

        The step of :meth:`fit`'s batches: the trainer's parameters' old
        gradients are dropped, ``loss`` is back-propagated (scaled where a
        grad scaler is set), then ``on_backward_end`` callbacks, clipping,
        the optimizer's step and ``on_batch_end`` callbacks.

        Parameters
        ----------
        loss : torch.Tensor
            A scalar with a graph to the optimizer's parameters.
        backward : bool, default=True
            False where the caller has put the gradients in the parameters'
            ``.grad`` itself (a written-out backward pass, like
            :mod:`~sklears_neural.core.fused`'s): the step starts at the
            callbacks and clipping, and ``loss`` is only what the callbacks
            see. Not with a grad scaler.

        Returns
        -------
        bool
            False where loss scaling skipped the step (gradient overflow).
        """
        if backward:
            for p in self._params:
                p.grad = None
            skipped = self._backward_and_step(loss)
        elif self.grad_scaler is not None:
            raise ValueError("step(backward=False) takes ready gradients: not with "
                             "a grad scaler, which must scale the loss first.")
        else:
            skipped = self._clip_and_step()
        for cb in self._batch_callbacks:
            cb.on_batch_end(self, batch_loss=loss.detach())
        return not skipped

    def end_epoch(self, record, *, samples=0):
        """Record one unit of the caller's loop and run ``on_epoch_end``.

        Parameters
        ----------
        record : dict
            The entries of the history record (``{"episode_return": ...}``);
            ``"epoch"`` (the record's 1-based number) is added first.
        samples : int, default=0
            Samples (timesteps) the unit consumed, added to
            :attr:`samples_seen`.

        Returns
        -------
        bool
            :attr:`should_stop`: whether a callback asked to end training.
        """
        self.samples_seen += samples
        self.history.append({"epoch": len(self.history) + 1, **record})
        self._call("on_epoch_end")
        return self.should_stop

    def end(self):
        """End training: drop the gradients, run ``on_train_end``."""
        # The gradients are of no use after training and weigh as much as
        # the weights.
        for p in self._params:
            p.grad = None
        self._call("on_train_end")

    def _run_epoch(self, data, batch_size, shuffle, evaluate, last_finite):
        module = self.module
        n = data.n_samples
        epoch = len(self.history) + 1
        self._call("on_epoch_begin")
        module.train()
        distributed = self.distributed
        by_index = False
        if shuffle:
            order = torch.randperm(n, generator=self.generator).to(data.device)
            if distributed is not None:
                distributed.broadcast_order(order)
            # The epoch's rows in its order, gathered once: each batch is
            # then a slice of it, not a gather of its own.
            gathered = (data.gathered(order, batch_size) if hasattr(data, "gathered")
                        else None)
            if gathered is None:
                by_index = True
            else:
                data = gathered
        # Batch losses stay on the device and are summed once per epoch: no
        # host sync and no arithmetic per batch.
        losses, sizes = [], []
        skipped = 0
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            index = order[start:stop] if by_index else slice(start, stop)
            if distributed is None:
                X, y, w = data.batch(index)
                loss, was_skipped = self._batch_step(X, y, w)
                batch_loss = loss.detach()
            else:
                batch_loss, was_skipped = self._distributed_batch_step(data, index)
            if was_skipped:
                # An overflow that loss scaling skipped is not a divergence.
                skipped += 1
            else:
                losses.append(batch_loss)
                sizes.append(stop - start)
            if self._batch_callbacks and distributed is not None:
                # Every rank's callbacks see the batch's loss, so that they
                # decide alike (a rank that stopped alone would hang the rest).
                batch_loss = distributed.all_reduce_sum(batch_loss.clone())
            for cb in self._batch_callbacks:
                cb.on_batch_end(self, batch_loss=batch_loss)
            if self.should_stop:
                # A batch callback (TerminateOnNaN) ended training mid-epoch:
                # the partial epoch is not recorded, nor is it a divergence.
                return last_finite
        train_loss = _weighted_mean(losses, sizes, distributed)
        if not math.isfinite(train_loss):
            if not self.stop_on_divergence:
                self._diverged(epoch, last_finite)
            self.restore(last_finite)
            warnings.warn(
                f"The training loss became NaN or infinite in epoch {epoch}: "
                "training stopped on the weights of the last finite epoch (and "
                "early stopping's best ones). " + _DIVERGED_HINT,
                ConvergenceWarning,
            )
            self.should_stop = True
            return last_finite
        self.samples_seen += n
        record = {"epoch": epoch, "train_loss": train_loss}
        if self.grad_scaler is not None:
            record["skipped_steps"] = skipped
        if evaluate is not None:
            module.eval()
            record.update(evaluate())
        self.history.append(record)
        last_finite = self.snapshot(into=last_finite)
        self._call("on_epoch_end")
        return last_finite

    def _batch_step(self, X, y, w):
        """Augment, gradients, step on one batch: ``(loss, skipped)``."""
        if self.augment is not None:
            X = self.augment(X, self.generator)
        # optimizer.zero_grad(set_to_none=True) without its profiler record
        # and hooks, which cost a small batch's step 3%; not for a step that
        # overwrites every gradient itself (FusedMLPStep).
        if self._reset_gradients:
            for p in self._params:
                p.grad = None
        if self.train_step is not None:
            loss = self.train_step(X, y, w)
            return loss, self._clip_and_step()
        loss = self._forward_loss(X, y, w)
        return loss, self._backward_and_step(loss)

    def _distributed_batch_step(self, data, index):
        """This rank's share of one batch: ``(its part of the loss, skipped)``.

        See :mod:`~sklears_neural.core.distributed` for why the loss is
        scaled by the share's fraction and the penalty by ``1 / active``.
        """
        distributed = self.distributed
        n_batch = (index.stop - index.start) if isinstance(index, slice) else len(index)
        share = distributed.share(n_batch)
        if isinstance(index, slice):
            index = slice(index.start + share.start, index.start + share.stop)
        else:
            index = index[share]
        X = y = w = None
        if share.stop > share.start:
            X, y, w = data.batch(index)
        fraction, penalty, active = distributed.batch_shares(
            share.stop - share.start, n_batch, w,
            weighted=getattr(data, "w", None) is not None,
        )
        self._share_fraction = fraction
        if active:
            with penalty_share(penalty):
                loss, skipped = self._batch_step(X, y, w)
            loss = loss.detach() * fraction
        else:
            # No rows here (a batch smaller than the ranks, or of zero
            # weight): zero gradients in the sum, the same step as the rest.
            for p in self._params:
                p.grad = None
            skipped = self._clip_and_step()
            loss = torch.zeros((), dtype=torch.float64, device=distributed.device)
        if self._broadcast_buffers:
            distributed.broadcast_buffers(self.module)
        return loss, skipped

    def _forward_loss(self, X, y, w):
        if self.autocast_dtype is None:
            return self.objective(self.module, X, y, w)
        # The module's device: a batch's inputs may be a tuple (sequences
        # and their lengths, which stay on the CPU).
        param = next(self.module.parameters(), None)
        device_type = "cpu" if param is None else param.device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype):
            return self.objective(self.module, X, y, w)

    def _backward_and_step(self, loss):
        """Backward, clip, step; returns 1 if loss scaling skipped the step."""
        if self.grad_scaler is None:
            loss.backward()
        else:
            self.grad_scaler.scale(loss).backward()
            if self._clipping or self._backward_callbacks:
                # Callbacks and clipping see the true gradients.
                self.grad_scaler.unscale_(self.optimizer)
        return self._clip_and_step()

    def _clip_and_step(self):
        """Callbacks, clipping and the optimizer step on the gradients in place."""
        optimizer, scaler = self.optimizer, self.grad_scaler
        if self.distributed is not None:
            self.distributed.all_reduce_gradients(self._params, self._share_fraction)
        for cb in self._backward_callbacks:
            cb.on_backward_end(self)
        if self._clipping:
            self._clip()
        if scaler is None:
            self._optimizer_step()
            return 0
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        # The scale only shrinks after an overflow, whose step was skipped.
        return int(scaler.get_scale() < scale)

    def _clip(self):
        """Clip the gradients by value, then by their global norm."""
        views = self._flat_grads
        if views is not None and self.flat.grads_in_place(views):
            # The same rules on the one gradient buffer.
            grad = self.flat.grad
            if self.clip_grad_value is not None:
                grad.clamp_(-self.clip_grad_value, self.clip_grad_value)
            if self.clip_grad_norm is not None:
                norm = torch.linalg.vector_norm(grad)
                grad.mul_(torch.clamp(float(self.clip_grad_norm) / (norm + 1e-6), max=1.0))
            return
        if self.clip_grad_value is not None:
            torch.nn.utils.clip_grad_value_(self._params, self.clip_grad_value)
        if self.clip_grad_norm is not None:
            if self._lean_clip:
                _clip_grad_norm_(self._params, self.clip_grad_norm)
            else:
                torch.nn.utils.clip_grad_norm_(self._params, self.clip_grad_norm)

    # -- full-batch L-BFGS --------------------------------------------------

    def fit_lbfgs(self, data, *, max_iter, max_fun, tol, verbose=False):
        """Minimize the full-batch objective with SciPy's L-BFGS-B.

        This is the solver scikit-learn's ``solver="lbfgs"`` runs, with
        torch computing the loss and its gradient, in float64 on the host
        side of SciPy.

        Parameters
        ----------
        data : ArrayData
        max_iter : int
            L-BFGS iterations (``maxiter``).
        max_fun : int
            Loss evaluations (``maxfun``).
        tol : float
            Projected-gradient tolerance (``gtol``).
        verbose : bool, default=False

        Returns
        -------
        result : scipy.optimize.OptimizeResult

        Notes
        -----
        Sparse input is never made dense whole. A module that
        :func:`~sklears_neural.core.data.takes_sparse` gets all rows as one
        torch sparse tensor (its first ``Linear`` multiplies sparse by
        dense). Any other module whose rows are independent
        (:func:`~sklears_neural.core.data.rows_independent`) is evaluated
        on dense row chunks of bounded size (:meth:`ArrayData.chunks`),
        with a backward pass per chunk accumulating the gradient. That
        relies on the objective's contract: with sample weights ``v``, it
        is ``(sum(v * loss) + penalty) / sum(v)`` (scikit-learn's, see
        ``BaseNeuralEstimator._objective``). With ``w_c`` the weights of
        chunk ``c`` of ``k`` (ones when unweighted), ``W_c = sum(w_c)``
        and ``S_c = sum(w_c * loss)``, the chunk is given the weights
        ``k * w_c``, so its value is ``(k * S_c + penalty) / (k * W_c)``:
        the penalty's share shrinks to ``1 / k`` while the loss's mean is
        unchanged. Added up with the weights ``W_c / sum(W)``, the values
        give ``(S + penalty) / sum(W)``, the full-batch objective, to float
        rounding; the gradients likewise. A module with batch normalization
        or another layer that couples rows in training gets all rows dense
        in one pass, as dense input does.
        """
        module, objective = self.module, self.objective
        params = [p for p in module.parameters() if p.requires_grad]
        module.train()
        pieces = None
        if data.sparse and not takes_sparse(module) and rows_independent(module):
            pieces = self._lbfgs_pieces(data)
        if pieces is None:
            # One pass over all rows (sparse ones as a torch sparse tensor
            # where the module takes it).
            X, y, w = data.all(keep_sparse=data.sparse and takes_sparse(module))
        state = {"calls": 0, "last_finite": self.snapshot()}

        def objective_and_backward():
            if pieces is None:
                loss = objective(module, X, y, w)
                loss.backward()
                return loss.item()
            total = 0.0
            for rows, weights, share in pieces:
                # Only this chunk is dense, and autograd frees it with its
                # graph after the backward pass.
                X_rows, y_rows, _ = data.batch(rows)
                loss = objective(module, X_rows, y_rows, weights)
                (loss * share).backward()
                total += share * loss.item()
            return total

        def loss_and_grad(flat):
            vector_to_parameters(
                torch.as_tensor(flat, dtype=params[0].dtype, device=params[0].device),
                params,
            )
            for p in params:
                p.grad = None
            loss = objective_and_backward()
            grad = parameters_to_vector([p.grad for p in params])
            state["calls"] += 1
            return loss, grad.detach().cpu().numpy().astype(np.float64)

        def on_iteration(intermediate_result):
            iteration = len(self.history) + 1
            fun = float(intermediate_result.fun)
            if not math.isfinite(fun):
                # Raising here ends SciPy's loop too.
                self._diverged(iteration, state["last_finite"])
            self.history.append({"epoch": iteration, "train_loss": fun})
            state["last_finite"] = self.snapshot()
            self._call("on_epoch_end")
            if self.should_stop:
                # SciPy ends the minimization on StopIteration from a callback.
                raise StopIteration
            self._call("on_epoch_begin")

        x0 = parameters_to_vector(params).detach().cpu().numpy().astype(np.float64)
        self.should_stop = False
        self._call("on_train_begin", max_epochs=max_iter)
        self._call("on_epoch_begin")
        result = scipy.optimize.minimize(
            loss_and_grad,
            x0,
            method="L-BFGS-B",
            jac=True,
            callback=on_iteration,
            options={"maxfun": max_fun, "maxiter": max_iter, "gtol": tol},
        )
        if not math.isfinite(result.fun):
            self._diverged(len(self.history) + 1, state["last_finite"])
        with torch.no_grad():
            vector_to_parameters(
                torch.as_tensor(result.x, dtype=params[0].dtype).to(params[0].device),
                params,
            )
        if pieces is None:
            _recompute_batch_norm_statistics(module, lambda: objective(module, X, y, w))
        self._call("on_train_end")
        return result

    @staticmethod
    def _lbfgs_pieces(data):
        """The row chunks of :meth:`fit_lbfgs`'s chunked objective, or None.

        Parameters
        ----------
        data : ArrayData
            Sparse.

        Returns
        -------
        list of (slice, torch.Tensor, float) or None
            ``(rows, weights, share)`` per chunk: the weights to pass to the
            objective (``k * w_c``) and the chunk's share ``W_c / sum(W)``
            of the total (see :meth:`fit_lbfgs`). Chunks whose weights are
            all zero add nothing and are left out. None where one chunk
            holds every row, or where weights of mixed signs sum to zero in
            a chunk or overall (the objective divides by that sum): then
            all rows go in one pass.
        """
        slices = data.chunks()
        if len(slices) == 1:
            return None
        kept = []
        for rows in slices:
            if data.w is None:
                kept.append((rows, None, float(rows.stop - rows.start)))
                continue
            weights = data.w[rows]
            if not bool(weights.any()):
                continue
            total = weights.sum(dtype=torch.float64).item()
            if total == 0.0:
                return None
            kept.append((rows, weights, total))
        grand = math.fsum(total for _, _, total in kept)
        if grand == 0.0:
            return None
        k = len(kept)
        pieces = []
        for rows, weights, total in kept:
            if weights is None:
                weights = torch.full((rows.stop - rows.start,), float(k),
                                     dtype=data.dtype, device=data.device)
            else:
                weights = weights * k
            pieces.append((rows, weights, total / grand))
        return pieces
