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
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from sklears_neural.core.callbacks import Callback
from sklears_neural.core.history import History
from sklears_neural.exceptions import TrainingDivergedError

__all__ = ["Trainer"]

_DIVERGED_HINT = (
    "Scale the inputs (e.g. StandardScaler), lower learning_rate_init, or "
    "raise alpha."
)


def _overrides(callback, hook):
    return getattr(type(callback), hook) is not getattr(Callback, hook)


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

    Attributes
    ----------
    should_stop : bool
        Set by a callback to end training after the current epoch.
    samples_seen : int
    history : History
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
    ):
        self.module = module
        self.objective = objective
        self.optimizer = optimizer
        self.callbacks = list(callbacks)
        self.generator = generator
        self.history = History() if history is None else history
        self.samples_seen = samples_seen
        self.should_stop = False
        self._batch_callbacks = [
            cb for cb in self.callbacks if _overrides(cb, "on_batch_end")
        ]

    # -- weights -----------------------------------------------------------

    def snapshot(self):
        """A detached copy of the module's ``state_dict``."""
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

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
            f"The training loss became NaN or infinite in epoch {epoch}. "
            + _DIVERGED_HINT,
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
        self.should_stop = False
        last_finite = self.snapshot()
        self._call("on_train_begin")
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
        self._call("on_train_end")
        return self

    def _run_epoch(self, data, batch_size, shuffle, evaluate, last_finite):
        module, optimizer, objective = self.module, self.optimizer, self.objective
        n = data.n_samples
        epoch = len(self.history) + 1
        self._call("on_epoch_begin")
        module.train()
        if shuffle:
            order = torch.randperm(n, generator=self.generator).to(data.device)
        # Summed on the device; read once per epoch, not once per batch.
        total = torch.zeros((), dtype=torch.float64, device=data.device)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            index = order[start:stop] if shuffle else slice(start, stop)
            X, y, w = data.batch(index)
            optimizer.zero_grad(set_to_none=True)
            loss = objective(module, X, y, w)
            loss.backward()
            optimizer.step()
            total += loss.detach() * (stop - start)
            for cb in self._batch_callbacks:
                cb.on_batch_end(self, batch_loss=loss.detach())
        train_loss = total.item() / n
        if not math.isfinite(train_loss):
            self._diverged(epoch, last_finite)
        self.samples_seen += n
        record = {"epoch": epoch, "train_loss": train_loss}
        if evaluate is not None:
            module.eval()
            record.update(evaluate())
        self.history.append(record)
        last_finite = self.snapshot()
        self._call("on_epoch_end")
        return last_finite

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
        """
        module, objective = self.module, self.objective
        params = [p for p in module.parameters() if p.requires_grad]
        X, y, w = data.all()
        module.train()
        state = {"calls": 0, "last_finite": self.snapshot()}

        def loss_and_grad(flat):
            vector_to_parameters(
                torch.as_tensor(flat, dtype=params[0].dtype, device=params[0].device),
                params,
            )
            for p in params:
                p.grad = None
            loss = objective(module, X, y, w)
            loss.backward()
            grad = parameters_to_vector([p.grad for p in params])
            state["calls"] += 1
            return loss.item(), grad.detach().cpu().numpy().astype(np.float64)

        def on_iteration(intermediate_result):
            iteration = len(self.history) + 1
            fun = float(intermediate_result.fun)
            if not math.isfinite(fun):
                # Raising here ends SciPy's loop too.
                self._diverged(iteration, state["last_finite"])
            self.history.append({"epoch": iteration, "train_loss": fun})
            state["last_finite"] = self.snapshot()
            self._call("on_epoch_end")

        x0 = parameters_to_vector(params).detach().cpu().numpy().astype(np.float64)
        self._call("on_train_begin")
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
        self._call("on_train_end")
        return result
