"""Optimizers by name, built from an estimator's scikit-learn parameters.

``solver`` names a factory ``factory(params, est, **settings) ->
torch.optim.Optimizer``; ``"lbfgs"`` maps to ``None`` because it runs
through SciPy (see :meth:`~sklears_neural.core.trainer.Trainer.fit_lbfgs`),
exactly as scikit-learn's does.

A solver reads its hyperparameters from the estimator (``learning_rate_init``,
``momentum``, ``beta_1``, ...). A composite option gives settings that win
over the estimator's attributes, or that the estimator has no parameter for:
``solver=("lars", {"trust_coefficient": 0.01})``,
``solver={"name": "adamw", "weight_decay": 0.05}``.

========= ============================================ ==============================
solver    estimator attributes read                    extra settings (default)
========= ============================================ ==============================
sgd       learning_rate_init, momentum,                -
          nesterovs_momentum
adam      learning_rate_init, beta_1, beta_2, epsilon  amsgrad (False)
adamw     as adam, plus weight_decay                   amsgrad (False)
nadam     as adam, plus weight_decay                   momentum_decay (0.004)
radam     as adam, plus weight_decay                   -
rmsprop   learning_rate_init, beta_2 (the squared-     centered (False)
          gradient decay), momentum, epsilon
adagrad   learning_rate_init, epsilon                  lr_decay (0.0),
                                                       initial_accumulator_value (0.0)
lars      learning_rate_init, momentum, weight_decay,  trust_coefficient (0.001),
          epsilon                                      nesterov (False),
                                                       exclude_1d (True)
lamb      learning_rate_init, beta_1, beta_2,          clamp_value (10.0),
          epsilon, weight_decay                        bias_correction (True),
                                                       exclude_1d (True)
lbfgs     none here (SciPy's L-BFGS-B reads max_iter,  -
          max_fun and tol)
========= ============================================ ==============================

Every estimator attribute may also be given as a setting of the same name
(``solver=("adam", {"beta_1": 0.8})``). ``weight_decay`` is *decoupled*
weight decay (AdamW's), read with ``getattr(est, "weight_decay", 0.0)``;
``alpha`` keeps scikit-learn's meaning, an L2 penalty in the loss.
``nadam`` and ``radam`` use torch's ``decoupled_weight_decay=True``.
For ``lars`` the trust ratio makes each layer move by about
``learning_rate_init * trust_coefficient * ||w||`` per step, so a
``learning_rate_init`` of order one is usual.
"""

import torch
from torch.optim import optimizer as torch_optimizer

from sklears_neural.core import inference
from sklears_neural.core.optimizers import LAMB, LARS
from sklears_neural.core.resolve import Resolver, split_option
from sklears_neural.core.schedules import LEARNING_RATES

__all__ = [
    "SOLVERS", "LEARNING_RATES", "apply_hyperparameters", "direct_step", "make_optimizer",
]


def _get(est, name, setting, default=None):
    """The option's ``setting`` when it was given, else ``est.<name>``."""
    if setting is not None:
        return setting
    return getattr(est, name, default)


# Settings that pick kernels, not the arithmetic: ``apply_hyperparameters``
# leaves them as the optimizer was built.
_KERNEL_SETTINGS = frozenset({"fused", "foreach", "capturable", "differentiable"})


def _fused_or_foreach(optimizer_class, params, **settings):
    """``optimizer_class`` with its fused kernel where torch has one, else foreach.

    The fused kernel updates every parameter in one pass per tensor, instead
    of one pass per arithmetic operation: it takes a third off the training
    step of a small MLP on the CPU (the optimizer is most of the per-step
    overhead there). torch < 2.4 has no CPU fused kernels; some dtypes or
    devices have none either: those fall back to the multi-tensor (foreach)
    kernels. Both compute the same update up to floating-point rounding.
    """
    params = list(params)
    try:
        return optimizer_class(params, fused=True, **settings)
    except (RuntimeError, ValueError):
        return optimizer_class(params, foreach=True, **settings)


def _sgd(params, est, *, learning_rate_init=None, momentum=None,
         nesterovs_momentum=None):
    momentum = _get(est, "momentum", momentum)
    nesterov = _get(est, "nesterovs_momentum", nesterovs_momentum)
    return _fused_or_foreach(
        torch.optim.SGD,
        params,
        lr=_get(est, "learning_rate_init", learning_rate_init),
        momentum=momentum,
        # torch refuses Nesterov without momentum; scikit-learn's formula
        # reduces to plain SGD there, so that is what we run.
        nesterov=bool(nesterov and momentum > 0),
    )


def _adam(params, est, *, learning_rate_init=None, beta_1=None, beta_2=None,
          epsilon=None, amsgrad=False):
    return _fused_or_foreach(
        torch.optim.Adam,
        params,
        lr=_get(est, "learning_rate_init", learning_rate_init),
        betas=(_get(est, "beta_1", beta_1), _get(est, "beta_2", beta_2)),
        eps=_get(est, "epsilon", epsilon),
        amsgrad=amsgrad,
    )


def _adamw(params, est, *, learning_rate_init=None, beta_1=None, beta_2=None,
           epsilon=None, weight_decay=None, amsgrad=False):
    return _fused_or_foreach(
        torch.optim.AdamW,
        params,
        lr=_get(est, "learning_rate_init", learning_rate_init),
        betas=(_get(est, "beta_1", beta_1), _get(est, "beta_2", beta_2)),
        eps=_get(est, "epsilon", epsilon),
        weight_decay=_get(est, "weight_decay", weight_decay, 0.0),
        amsgrad=amsgrad,
    )


def _nadam(params, est, *, learning_rate_init=None, beta_1=None, beta_2=None,
           epsilon=None, weight_decay=None, momentum_decay=0.004):
    return torch.optim.NAdam(
        params,
        lr=_get(est, "learning_rate_init", learning_rate_init),
        betas=(_get(est, "beta_1", beta_1), _get(est, "beta_2", beta_2)),
        eps=_get(est, "epsilon", epsilon),
        weight_decay=_get(est, "weight_decay", weight_decay, 0.0),
        momentum_decay=momentum_decay,
        decoupled_weight_decay=True,
        foreach=True,
    )


def _radam(params, est, *, learning_rate_init=None, beta_1=None, beta_2=None,
           epsilon=None, weight_decay=None):
    return torch.optim.RAdam(
        params,
        lr=_get(est, "learning_rate_init", learning_rate_init),
        betas=(_get(est, "beta_1", beta_1), _get(est, "beta_2", beta_2)),
        eps=_get(est, "epsilon", epsilon),
        weight_decay=_get(est, "weight_decay", weight_decay, 0.0),
        decoupled_weight_decay=True,
        foreach=True,
    )


def _rmsprop(params, est, *, learning_rate_init=None, beta_2=None, momentum=None,
             epsilon=None, centered=False):
    return torch.optim.RMSprop(
        params,
        lr=_get(est, "learning_rate_init", learning_rate_init),
        alpha=_get(est, "beta_2", beta_2),
        eps=_get(est, "epsilon", epsilon),
        momentum=_get(est, "momentum", momentum),
        centered=centered,
        foreach=True,
    )


def _adagrad(params, est, *, learning_rate_init=None, epsilon=None, lr_decay=0.0,
             initial_accumulator_value=0.0):
    return _fused_or_foreach(
        torch.optim.Adagrad,
        params,
        lr=_get(est, "learning_rate_init", learning_rate_init),
        eps=_get(est, "epsilon", epsilon),
        lr_decay=lr_decay,
        initial_accumulator_value=initial_accumulator_value,
    )


def _lars(params, est, *, learning_rate_init=None, momentum=None, weight_decay=None,
          epsilon=None, trust_coefficient=0.001, nesterov=False, exclude_1d=True):
    return LARS(
        params,
        lr=_get(est, "learning_rate_init", learning_rate_init),
        momentum=_get(est, "momentum", momentum),
        weight_decay=_get(est, "weight_decay", weight_decay, 0.0),
        trust_coefficient=trust_coefficient,
        eps=_get(est, "epsilon", epsilon),
        nesterov=nesterov,
        exclude_1d=exclude_1d,
    )


def _lamb(params, est, *, learning_rate_init=None, beta_1=None, beta_2=None,
          epsilon=None, weight_decay=None, clamp_value=10.0, bias_correction=True,
          exclude_1d=True):
    return LAMB(
        params,
        lr=_get(est, "learning_rate_init", learning_rate_init),
        betas=(_get(est, "beta_1", beta_1), _get(est, "beta_2", beta_2)),
        eps=_get(est, "epsilon", epsilon),
        weight_decay=_get(est, "weight_decay", weight_decay, 0.0),
        clamp_value=clamp_value,
        bias_correction=bias_correction,
        exclude_1d=exclude_1d,
    )


SOLVERS = Resolver(
    "solver",
    {
        "sgd": _sgd,
        "adam": _adam,
        "adamw": _adamw,
        "nadam": _nadam,
        "radam": _radam,
        "rmsprop": _rmsprop,
        "adagrad": _adagrad,
        "lars": _lars,
        "lamb": _lamb,
        "lbfgs": None,
    },
)
"""Solvers by name: ``factory(params, est, **settings)``, or ``None`` for lbfgs.

See the module docstring for what each reads and the settings it takes.
"""


def make_optimizer(module, est):
    """A fresh optimizer for ``module`` from ``est.solver`` and its settings.

    Parameters
    ----------
    module : torch.nn.Module
    est : BaseNeuralEstimator
        Or any object with the estimator's attributes; ``est.solver`` is a
        name or a composite ``(name, {settings})`` / ``{"name": ..., ...}``.

    Returns
    -------
    torch.optim.Optimizer or None
        ``None`` for ``solver="lbfgs"``.

    Raises
    ------
    ValueError
        If the solver is unknown, a setting is not one it takes (the
        message lists those it takes), or a value is out of range.
    """
    if SOLVERS(est.solver) is None:
        _, settings = split_option(est.solver)
        if settings:
            raise ValueError(
                f"solver 'lbfgs' takes no settings, got {sorted(settings)}. It is "
                "tuned with the estimator's max_iter, max_fun and tol."
            )
        return None
    params = [p for p in module.parameters() if p.requires_grad]
    return SOLVERS.build(est.solver, params=params, est=est)


def apply_hyperparameters(optimizer, est):
    """Write the estimator's current settings into a kept optimizer.

    ``warm_start`` keeps the optimizer's state (moments, step counts) but a
    user may have changed ``learning_rate_init`` or ``beta_1`` with
    ``set_params`` in between: the new values win, the state stays. This
    includes the settings of a composite ``solver``.
    """
    fresh = make_optimizer(torch.nn.Linear(1, 1), est)
    if fresh is None:
        return
    defaults = fresh.param_groups[0]
    for group in optimizer.param_groups:
        for key, value in defaults.items():
            if key != "params" and key not in _KERNEL_SETTINGS:
                group[key] = value


# -- the optimizer step without Optimizer.step ----------------------------------

def _hooked(optimizer):
    """Whether anything watches ``optimizer.step``: then it must be called.

    The prediction caches' own global hook does not count: the direct step
    tells them itself (``inference.note_optimizer_step``).
    """
    patched = optimizer.__dict__.get("step")
    return bool(
        (patched is not None and not getattr(patched, "_wrapped_by_lr_sched", False))
        or optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        or torch_optimizer._global_optimizer_pre_hooks
        or any(not inference.is_cache_hook(hook)
               for hook in torch_optimizer._global_optimizer_post_hooks.values())
    )


# The optimizers whose fused kernel is called directly: type -> (kernel,
# the state's per-parameter tensors in the kernel's order, whether it
# counts steps).
def _kernels():
    return {
        torch.optim.Adam: ("adam", ("exp_avg", "exp_avg_sq"), True),
        torch.optim.AdamW: ("adam", ("exp_avg", "exp_avg_sq"), True),
        torch.optim.SGD: ("sgd", ("momentum_buffer",), False),
        torch.optim.Adagrad: ("adagrad", ("sum",), True),
    }


def direct_step(optimizer, flat=None):
    """``optimizer``'s step as one call of its fused kernel, or None.

    ``Optimizer.step`` wraps the kernel in bookkeeping (profiler records,
    hooks, grouping the tensors by device and dtype, per-parameter state
    lookups) that costs a small MLP's training step more than its matrix
    products do. For a fused Adam, AdamW, SGD or Adagrad of one parameter
    group on one device and dtype, the returned function calls the same
    kernel with the same arguments, so the weights and the state are bit for
    bit those of ``optimizer.step()``; the state stays in
    ``optimizer.state``, where pickling, checkpoints and ``state_dict`` read
    it.

    With ``flat`` (the parameters laid out in one buffer, see
    :mod:`~sklears_neural.core.flat`) and the gradients in its gradient
    buffer, the state's tensors are moved into buffers of the same layout
    (``optimizer.state`` then holds views of them, the same values) and the
    kernel runs once on whole buffers: elementwise, so the same numbers.

    It calls ``optimizer.step()`` itself where the kernel alone would not do
    the same: before the state exists (the first step creates it), when a
    parameter has no gradient (``step`` skips it), and when hooks or a
    patched ``step`` (other than a torch LR scheduler's call counter, which
    it keeps informed) watch the step.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    flat : FlatParameters or None, default=None

    Returns
    -------
    callable or None
        ``step()``; None for other optimizers (call ``optimizer.step()``).
    """
    spec = _kernels().get(type(optimizer))
    if spec is None or len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if not group.get("fused") or group.get("capturable") or group.get("differentiable"):
        return None
    params = list(group["params"])
    if not params or len({(p.device, p.dtype) for p in params}) != 1 or any(
        p.is_complex() for p in params
    ):
        return None
    if flat is not None and {id(p) for p in flat.params} != {id(p) for p in params}:
        flat = None
    return _DirectStep(optimizer, group, params, spec, flat)



class _DirectStep:
    """See :func:`direct_step`."""

    def __init__(self, optimizer, group, params, spec, flat):
        self.optimizer, self.group, self.params = optimizer, group, params
        self.kind, keys, self.counts_steps = spec
        if self.kind == "sgd" and group["momentum"] == 0:
            keys = ()  # plain SGD keeps no state
        if self.kind == "adam" and group["amsgrad"]:
            keys = (*keys, "max_exp_avg_sq")
        self.keys = keys
        self.flat = flat
        self._cached_for = None  # (state object, first parameter's state dict)
        self._state_lists = None
        self._flat_state = None
        self._grad_views = None if flat is None or flat.grad is None else flat.gradients()

    def __call__(self):
        optimizer = self.optimizer
        if _hooked(optimizer):
            return optimizer.step()
        lists = self._cached_state()
        flat = None if lists is None else self._flat_lists()
        if flat is None:
            grads = [p.grad for p in self.params]
            if lists is None or any(g is None for g in grads):
                self._cached_for = None  # the state may change in step()
                return optimizer.step()
        optimizer._opt_called = True  # what an LR scheduler's wrapper records
        state_lists, steps = self._state_lists  # adopting the state renews them
        if flat is not None:
            if steps:
                self._step_counters.add_(1)
            self._kernel(*flat, steps[:1])  # equal: every parameter took every step
        else:
            if steps:
                torch._foreach_add_(steps, 1)
            self._kernel(self.params, grads, state_lists, steps)
        inference.note_optimizer_step()  # what the caches' hook on step() counts
        return None

    def _cached_state(self):
        """``(state tensors per key, step counters)`` while the state is unchanged, or None."""
        state = self.optimizer.state
        first = state.get(self.params[0])
        if self._cached_for is not None and self._cached_for[0] is state and (
                self._cached_for[1] is first):
            return self._state_lists
        p_states = [state.get(p) for p in self.params]
        if self.keys and any(not s or any(s.get(k) is None for k in self.keys)
                             for s in p_states):
            return None  # the first step makes the state
        if self.counts_steps and any(not s or "step" not in s for s in p_states):
            return None
        state_lists = [[s[k] for s in p_states] for k in self.keys]
        steps = [s["step"] for s in p_states] if self.counts_steps else []
        self._state_lists = (state_lists, steps)
        self._cached_for = (state, first)
        self._flat_state = None
        return self._state_lists

    def _flat_lists(self):
        """``([data], [grad], [[state buffer], ...])`` of the flat layout, or None."""
        flat, views = self.flat, self._grad_views
        if flat is None or views is None or not flat.grads_in_place(views):
            return None
        if self._flat_state is None:
            state_lists, steps = self._state_lists
            if steps and len({float(s) for s in steps}) != 1:
                # A parameter skipped steps: per tensor until the state changes.
                self._flat_state = False
            else:
                buffers = self._adopt(state_lists)
                self._flat_state = ([flat.data], [flat.grad], [[b] for b in buffers])
        return self._flat_state or None

    def _adopt(self, state_lists):
        """Move the state's tensors into buffers laid out as the parameters.

        The step counters too: each parameter's ``"step"`` becomes a 0-d
        view of one vector, so that one ``add_`` counts a step for all of
        them (a ``_foreach_add_`` over the parameters cost a 32-row MLP step
        4%), while ``optimizer.step()`` still counts each view once.
        """
        flat, state = self.flat, self.optimizer.state
        buffers = []
        with torch.no_grad():
            for key, tensors in zip(self.keys, state_lists):
                buffer = torch.zeros_like(flat.data)  # zeros between the views
                views = flat.views(buffer)
                for p, tensor in zip(self.params, tensors):
                    views[p].copy_(tensor)
                    state[p][key] = views[p]
                buffers.append(buffer)
            if self.counts_steps:
                counters = torch.stack([state[p]["step"] for p in self.params])
                for i, p in enumerate(self.params):
                    state[p]["step"] = counters[i]
                self._step_counters = counters
        # The cached lists now name the views.
        self._cached_for = None
        self._cached_state()
        return buffers

    def _kernel(self, params, grads, state_lists, steps):
        group = self.group
        if self.kind == "adam":
            exp_avgs, exp_avg_sqs, *maxes = state_lists
            beta1, beta2 = group["betas"]
            kernel = (torch._fused_adamw_ if group.get("decoupled_weight_decay")
                      else torch._fused_adam_)
            kernel(params, grads, exp_avgs, exp_avg_sqs, maxes[0] if maxes else [], steps,
                   amsgrad=group["amsgrad"], lr=group["lr"], beta1=beta1, beta2=beta2,
                   weight_decay=group["weight_decay"], eps=group["eps"],
                   maximize=group["maximize"], grad_scale=None, found_inf=None)
        elif self.kind == "sgd":
            torch._fused_sgd_(params, grads, state_lists[0] if state_lists else [],
                              weight_decay=group["weight_decay"],
                              momentum=group["momentum"], lr=group["lr"],
                              dampening=group["dampening"], nesterov=group["nesterov"],
                              maximize=group["maximize"], is_first_step=False,
                              grad_scale=None, found_inf=None)
        else:
            torch._fused_adagrad_(params, grads, state_lists[0], steps, lr=group["lr"],
                                  lr_decay=group["lr_decay"],
                                  weight_decay=group["weight_decay"], eps=group["eps"],
                                  maximize=group["maximize"], grad_scale=None,
                                  found_inf=None)
