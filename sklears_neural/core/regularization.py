"""Weight penalties added to the training objective.

``alpha`` keeps scikit-learn's meaning: an L2 penalty ``alpha / 2 * ||W||^2``
on weight matrices (not biases), divided by the batch's total sample weight.
``l1_ratio`` mixes in L1 the way scikit-learn's ``SGDClassifier`` does
(elastic net): ``alpha * (l1_ratio * ||W||_1 + (1 - l1_ratio) / 2 * ||W||^2)``,
so ``l1_ratio=0`` is exactly scikit-learn's MLP penalty.

In data-parallel training every rank's objective holds the penalty, and the
ranks' gradients are summed: inside :func:`penalty_share` each counts its
share of it, so the sum counts it once.
"""

import contextlib
import contextvars

import torch

from sklears_neural.core.flat import weight_layout

__all__ = [
    "add_penalty_gradient_", "add_penalty_value", "current_penalty_share", "penalized_parameters",
    "penalty_gradient", "penalty_share", "penalty_value", "weight_penalty",
]

_SHARE = contextvars.ContextVar("sklears_neural_penalty_share", default=1.0)


@contextlib.contextmanager
def penalty_share(share):
    """Within the block, :func:`weight_penalty` is ``share`` of itself.

    A context variable, so predictions and fits in other threads keep the
    whole penalty.

    Parameters
    ----------
    share : float
        ``1 / world_size`` for each rank of a data-parallel fit.
    """
    token = _SHARE.set(float(share))
    try:
        yield
    finally:
        _SHARE.reset(token)


def current_penalty_share():
    """The share :func:`penalty_share` set here (1.0 outside it)."""
    return _SHARE.get()


def penalized_parameters(module):
    """The parameters a weight penalty applies to: matrices and kernels.

    One-dimensional parameters (biases, normalization scales, PReLU slopes)
    are left out, as scikit-learn leaves out intercepts.
    """
    return [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]


def weight_penalty(params, alpha, l1_ratio=0.0):
    """``alpha * (l1_ratio * sum|w| + (1 - l1_ratio) / 2 * sum w^2)``.

    One autograd node for all the weights: the value comes from multi-tensor
    reductions (one ``dot`` where the weights are laid out in one buffer, see
    :mod:`~sklears_neural.core.flat`) and the gradient, ``alpha * (l1_ratio * sign(w) + (1 -
    l1_ratio) * w)``, from multi-tensor updates. Written with per-tensor
    ``pow``/``abs``/``sum`` it is a dozen nodes, which cost an MLP's training
    step about 15% on the CPU.

    Parameters
    ----------
    params : list of torch.Tensor
    alpha : float
    l1_ratio : float, default=0.0

    Returns
    -------
    torch.Tensor
        A scalar; the caller divides it by the batch weight. Inside
        :func:`penalty_share`, that share of it.
    """
    flat = weight_layout(params)
    weights = None if flat is None else flat.weights.detach()
    return _WeightPenalty.apply(float(alpha) * _SHARE.get(), float(l1_ratio), weights,
                                *params)


def _flat_value(weights, alpha, l1_ratio):
    """The penalty of one flat buffer of weights (zeros between them count nothing)."""
    penalty = weights.new_zeros(())
    if l1_ratio < 1.0:
        penalty = penalty + 0.5 * (1.0 - l1_ratio) * torch.dot(weights, weights)
    if l1_ratio > 0.0:
        penalty = penalty + l1_ratio * weights.abs().sum()
    return alpha * penalty


def add_penalty_value(loss, params, alpha, l1_ratio, denominator):
    """``loss + penalty_value(params, alpha, l1_ratio) / denominator``.

    For an L2 penalty on weights laid out in one buffer and a number for
    ``denominator``: one ``dot`` and one scaled ``add`` (the constants are
    folded into the add's scale), instead of half a dozen scalar operations.
    """
    if l1_ratio == 0.0 and not isinstance(denominator, torch.Tensor):
        flat = weight_layout(params)
        if flat is not None:
            with torch.no_grad():
                weights = flat.weights
                return torch.add(loss, torch.dot(weights, weights),
                                 alpha=0.5 * alpha / denominator)
    return loss + penalty_value(params, alpha, l1_ratio) / denominator


def penalty_value(params, alpha, l1_ratio=0.0):
    """:func:`weight_penalty`'s value, outside autograd.

    One ``dot`` over the weights where they are laid out in one buffer
    (:mod:`~sklears_neural.core.flat`), else multi-tensor norms.
    """
    with torch.no_grad():
        flat = weight_layout(params)
        if flat is not None:
            return _flat_value(flat.weights, alpha, l1_ratio)
        penalty = params[0].new_zeros(())
        if l1_ratio < 1.0:
            norms = torch.stack(torch._foreach_norm(params, 2))
            penalty = penalty + 0.5 * (1.0 - l1_ratio) * norms.square().sum()
        if l1_ratio > 0.0:
            penalty = penalty + l1_ratio * torch.stack(torch._foreach_norm(params, 1)).sum()
        return alpha * penalty


def penalty_gradient(params, scale, l1_ratio=0.0):
    """``scale * (l1_ratio * sign(w) + (1 - l1_ratio) * w)`` for each weight.

    ``scale`` (a float or a 0-d tensor) is ``alpha`` times the upstream
    gradient, divided by the batch weight where the caller divides.
    """
    with torch.no_grad():
        if l1_ratio < 1.0:
            grads = torch._foreach_mul(params, scale * (1.0 - l1_ratio))
        else:
            grads = [torch.zeros_like(p) for p in params]
        if l1_ratio > 0.0:
            signs = torch._foreach_sign(params)
            torch._foreach_mul_(signs, scale * l1_ratio)
            torch._foreach_add_(grads, signs)
        return grads


def add_penalty_gradient_(grads, params, scale, l1_ratio=0.0):
    """``grads += penalty_gradient(params, scale, l1_ratio)``, in place."""
    with torch.no_grad():
        torch._foreach_add_(grads, penalty_gradient(params, scale, l1_ratio))


class _WeightPenalty(torch.autograd.Function):
    """One autograd node for the penalty of ``params``.

    ``weights`` is their flat buffer where they are laid out in one
    (:mod:`~sklears_neural.core.flat`), else None: the value is then one
    ``dot``. The gradient is the multi-tensor update either way: views of
    one result tensor would each cost a Python call, and autograd copies a
    view it cannot take over as it is.
    """

    @staticmethod
    def forward(ctx, alpha, l1_ratio, weights, *params):
        ctx.alpha, ctx.l1_ratio = alpha, l1_ratio
        ctx.save_for_backward(*params)
        if weights is not None:
            return _flat_value(weights, alpha, l1_ratio)
        return penalty_value(params, alpha, l1_ratio)

    @staticmethod
    def backward(ctx, grad_output):
        grads = penalty_gradient(ctx.saved_tensors, grad_output * ctx.alpha, ctx.l1_ratio)
        return (None, None, None, *grads)
