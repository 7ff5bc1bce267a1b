"""A training step for plain MLPs with the backward pass written out.

Autograd records every operation of the forward pass and replays it
backwards; for a small MLP that bookkeeping, not the arithmetic, is most of
a step (a batch of 32 through a (256, 128) network spends about half its
time in it). A plain MLP -- ``Linear`` layers and an elementwise activation,
no dropout, normalization, residual, noise or spectral norm -- has a
backward pass of a few matrix products, so :class:`FusedMLPStep` computes
it directly into preallocated buffers and the gradients the optimizer reads.

The gradients equal autograd's up to floating-point rounding (tested to
1e-12 in float64); anything the step does not cover runs through autograd.
"""

import torch
import torch.nn.functional as F
from torch import nn

from sklears_neural.core.layers import MLP
from sklears_neural.core.regularization import (
    add_penalty_gradient_,
    add_penalty_value,
    current_penalty_share,
)

__all__ = ["FusedMLPStep", "LOSS_KINDS", "backpropagate_"]

#: Output losses with a closed-form gradient ``dloss/doutput``.
LOSS_KINDS = ("softmax_cross_entropy", "logistic_cross_entropy", "squared_error")

# Activation modules whose derivative is a function of their output.
_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity)


def _plain_layers(module):
    """``[(linear, activation or None), ...]`` for a plain MLP, else None."""
    if not isinstance(module, MLP) or module.gradient_checkpointing:
        # Checkpointing is a memory choice the user made: keep autograd's.
        return None
    layers, pairs = list(module.layers), []
    for item in layers:
        if type(item) is nn.Linear and not nn.utils.parametrize.is_parametrized(item):
            pairs.append([item, None])
        elif isinstance(item, _ACTIVATIONS) and pairs and pairs[-1][1] is None:
            pairs[-1][1] = item
        else:
            return None
    if not pairs or pairs[-1][1] is not None:
        return None  # the output layer is a bare Linear
    return [tuple(pair) for pair in pairs]


def _activate_(z, activation):
    if isinstance(activation, nn.ReLU):
        z.relu_()
    elif isinstance(activation, nn.Tanh):
        z.tanh_()
    elif isinstance(activation, nn.Sigmoid):
        z.sigmoid_()


def _times_derivative(grad, a, activation):
    """``grad * activation'(z)``, written with the activation's output ``a``.

    The same fused kernels autograd's backward runs (one pass each, where
    ``masked_fill_(a <= 0, 0)`` takes two and was 7x slower on a 32-row batch).
    """
    if isinstance(activation, nn.ReLU):
        return torch.ops.aten.threshold_backward(grad, a, 0)
    if isinstance(activation, nn.Tanh):
        return torch.ops.aten.tanh_backward(grad, a)
    if isinstance(activation, nn.Sigmoid):
        return torch.ops.aten.sigmoid_backward(grad, a)
    return grad


def backpropagate_(layers, inputs, grad, grads, *, l2_scale=None):
    """A plain MLP's backward pass from ``grad`` = dloss/doutput, into ``grads``.

    Fills each layer's ``(weight_grad, bias_grad)`` of ``grads`` and sets
    them as the parameters' ``.grad``; the kernels autograd's backward runs,
    in its order. Families with a loss of their own (DQN's TD loss) write
    only the loss gradient and call this.

    Parameters
    ----------
    layers : list of (nn.Linear, activation module or None)
    inputs : list of torch.Tensor
        Each layer's input: the batch, then the previous layers' outputs.
    grad : torch.Tensor
        dloss/d(last layer's output), shape (rows, outputs).
    grads : list of (torch.Tensor, torch.Tensor)
    l2_scale : float or None, default=None
        Folds an L2 penalty's gradient, ``l2_scale * W``, into each weight
        gradient's product (one ``addmm`` instead of a ``mm`` and an add).
    """
    for i in range(len(layers) - 1, -1, -1):
        linear, _ = layers[i]
        weight_grad, bias_grad = grads[i]
        if l2_scale is None:
            torch.mm(grad.t(), inputs[i], out=weight_grad)
        else:
            torch.addmm(linear.weight, grad.t(), inputs[i], beta=l2_scale, out=weight_grad)
        torch.sum(grad, 0, out=bias_grad)
        linear.weight.grad, linear.bias.grad = weight_grad, bias_grad
        if i > 0:
            # dloss/d(previous activation), then through its derivative.
            grad = _times_derivative(torch.mm(grad, linear.weight), inputs[i],
                                     layers[i - 1][1])


class FusedMLPStep:
    """Loss and gradients of a plain MLP's training objective, without autograd.

    Build it with :meth:`for_module`, which returns ``None`` where the module
    or the loss is not covered. Calling it on a batch fills every
    parameter's ``.grad`` (reusing the same tensors from step to step) and
    returns the batch loss, like ``objective(...).backward()`` would.

    Parameters
    ----------
    layers : list of (nn.Linear, activation module or None)
    loss_kind : {"softmax_cross_entropy", "logistic_cross_entropy", "squared_error"}
        The per-sample loss, averaged over the batch (weighted by
        ``sample_weight`` when given): cross-entropy of a softmax over
        class indices; binary cross-entropy of one logistic output per
        label, summed over labels; half the squared error summed over
        outputs.
    penalized : list of torch.Tensor
        The weights the elastic-net penalty applies to.
    alpha, l1_ratio : float
        The penalty, divided by the batch weight as in the objective.
    """

    def __init__(self, layers, loss_kind, penalized, alpha, l1_ratio):
        if loss_kind not in LOSS_KINDS:
            raise ValueError(f"loss_kind must be one of {LOSS_KINDS}, got {loss_kind!r}.")
        self.layers = layers
        self.loss_kind = loss_kind
        self.penalized = penalized
        self.alpha = float(alpha)
        self.l1_ratio = float(l1_ratio)
        self._rows = 0
        self._buffers = []
        self._minus_one = torch.empty(0, 1)
        # A pure L2 penalty on exactly the layers' weights: its gradient,
        # alpha * W / n, is folded into each weight-gradient product (one
        # addmm instead of a mm and two multi-tensor passes).
        self._fold_l2 = (
            self.alpha > 0 and self.l1_ratio == 0.0
            and {id(p) for p in penalized} == {id(linear.weight) for linear, _ in layers}
        )
        # The optimizer reads p.grad; these tensors are reused every step.
        self._grads = [
            (torch.empty_like(linear.weight), torch.empty_like(linear.bias))
            for linear, _ in layers
        ]

    def use_gradients(self, views):
        """Write the gradients into ``views`` (``{parameter: tensor}``) from now on.

        The trainer passes the views of its flat gradient buffer (see
        :mod:`~sklears_neural.core.flat`).
        """
        self._grads = [(views[linear.weight], views[linear.bias])
                       for linear, _ in self.layers]

    @classmethod
    def for_module(cls, module, loss_kind, *, penalized=(), alpha=0.0, l1_ratio=0.0):
        """A step for ``module``, or None where autograd must run it."""
        layers = _plain_layers(module)
        if layers is None or loss_kind not in LOSS_KINDS:
            return None
        return cls(layers, loss_kind, list(penalized), alpha, l1_ratio)

    def _activation_buffers(self, rows, like):
        # Sized for the largest batch seen; shorter batches use leading rows.
        if rows > self._rows:
            self._buffers = [
                like.new_empty((rows, linear.out_features)) for linear, _ in self.layers
            ]
            self._rows = rows
        return [buffer[:rows] for buffer in self._buffers]

    @torch.no_grad()
    def __call__(self, X, y, w=None):
        """Fill the gradients for batch ``(X, y, w)``; return its loss (0-d)."""
        outputs = self._activation_buffers(X.shape[0], X)
        inputs = [X, *outputs[:-1]]
        for (linear, activation), a, z in zip(self.layers, inputs, outputs):
            torch.addmm(linear.bias, a, linear.weight.t(), out=z)
            _activate_(z, activation)

        logits = outputs[-1]
        loss, grad = self._loss_and_gradient(logits, y, w)
        penalized = self.alpha and self.penalized
        # The folded scale must be a number: a weighted batch's w.sum() is
        # read back only on the CPU, where that costs nothing. Weighted and
        # unweighted batches then round alike, so weights equal repetitions.
        fold = penalized and self._fold_l2 and (w is None or w.device.type == "cpu")
        if penalized:
            if w is None:
                denominator = X.shape[0]
            else:
                denominator = float(w.sum()) if fold else w.sum()
            # A data-parallel rank's share of the penalty (see regularization).
            alpha = self.alpha * current_penalty_share()

        backpropagate_(self.layers, inputs, grad, self._grads,
                       l2_scale=alpha / denominator if fold else None)

        if penalized:
            loss = add_penalty_value(loss, self.penalized, alpha, self.l1_ratio, denominator)
            if not fold:
                add_penalty_gradient_(
                    [p.grad for p in self.penalized], self.penalized,
                    alpha / denominator, self.l1_ratio,
                )
        return loss

    def _minus_ones(self, rows, like):
        kept = self._minus_one
        if kept.shape[0] < rows or kept.dtype != like.dtype or kept.device != like.device:
            self._minus_one = like.new_full((rows, 1), -1.0)
        return self._minus_one[:rows]

    def _loss_and_gradient(self, logits, y, w):
        """The batch loss and ``dloss/dlogits`` (a new tensor)."""
        n = logits.shape[0]
        if self.loss_kind == "softmax_cross_entropy":
            log_p = torch.log_softmax(logits, dim=1)
            per_sample = F.nll_loss(log_p, y, reduction="none")
            # softmax - one_hot(y), written over log_p.
            grad = log_p.exp_().scatter_add_(1, y[:, None], self._minus_ones(n, logits))
        elif self.loss_kind == "logistic_cross_entropy":
            per_sample = F.binary_cross_entropy_with_logits(
                logits, y, reduction="none"
            ).sum(dim=1)
            grad = torch.sigmoid(logits).sub_(y)
        else:
            grad = logits - y
            per_sample = 0.5 * grad.square().sum(dim=1)
        if w is None:
            return per_sample.mean(), grad.div_(n)
        total = w.sum()
        return (per_sample * w).sum() / total, grad.mul_((w / total)[:, None])
