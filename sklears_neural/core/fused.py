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

__all__ = [
    "ActivationBuffers",
    "FusedMLPStep",
    "LOSS_KINDS",
    "PlainLayers",
    "backpropagate_",
]

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


def _relu_backward(grad, a):
    return torch.ops.aten.threshold_backward(grad, a, 0)


def _activation_kernels(activation):
    """``(activate_, derivative)`` of a layer's activation module, or ``(None, None)``.

    ``activate_(z)`` applies it in place; ``derivative(grad, a)`` is
    ``grad * activation'(z)`` written with the output ``a``: the fused kernels
    autograd's backward runs (one pass each, where ``masked_fill_(a <= 0, 0)``
    takes two and was 7x slower on a 32-row batch).
    """
    if isinstance(activation, nn.ReLU):
        return torch.Tensor.relu_, _relu_backward
    if isinstance(activation, nn.Tanh):
        return torch.Tensor.tanh_, torch.ops.aten.tanh_backward
    if isinstance(activation, nn.Sigmoid):
        return torch.Tensor.sigmoid_, torch.ops.aten.sigmoid_backward
    return None, None


class PlainLayers:
    """A plain MLP's parameters and activation kernels, looked up once.

    What a written-out pass needs per layer, resolved at construction: a
    32-row step spent a fifth of its time beyond the kernels in type checks
    and module attribute lookups. The parameters are the module's own
    ``Parameter`` objects, which stay the same through training, and the
    forward pass reads views of the weights transposed once (a DQN fit, a
    forward per environment step, was 6% slower transposing at each call).
    Those views follow in-place updates (optimizer steps, restores) but not
    a swap of a parameter's data, which :mod:`~sklears_neural.core.flat`
    makes when it lays the parameters out: build it after that.

    Parameters
    ----------
    layers : list of (nn.Linear, activation module or None)
        As :func:`_plain_layers` returns them.
    """

    def __init__(self, layers):
        self.layers = layers
        self.weights = [linear.weight for linear, _ in layers]
        with torch.no_grad():
            self.transposed = [weight.t() for weight in self.weights]
        self.biases = [linear.bias for linear, _ in layers]
        kernels = [_activation_kernels(activation) for _, activation in layers]
        self.activations = [activate for activate, _ in kernels]
        self.derivatives = [derivative for _, derivative in kernels]
        self.widths = [linear.out_features for linear, _ in layers]

    def forward_into(self, x, outputs):
        """The layers on ``x``, each output into its buffer of ``outputs``.

        Returns the last output. ``nn.Linear``'s kernel (``addmm``), then
        the activation in place: the same numbers as the module's forward.
        """
        for weight_t, bias, activate_, z in zip(self.transposed, self.biases,
                                                self.activations, outputs):
            torch.addmm(bias, x, weight_t, out=z)
            if activate_ is not None:
                activate_(z)
            x = z
        return x

    def forward(self, x):
        """The layers on ``x``, into new tensors (callers that keep them)."""
        for weight_t, bias, activate_ in zip(self.transposed, self.biases,
                                             self.activations):
            x = torch.addmm(bias, x, weight_t)
            if activate_ is not None:
                activate_(x)
        return x


class ActivationBuffers:
    """Each layer's output buffer, grown to the largest batch seen.

    A shorter batch gets views of the leading rows.

    Parameters
    ----------
    widths : list of int
        The layers' output widths (:attr:`PlainLayers.widths`).
    """

    def __init__(self, widths):
        self.widths = widths
        self.rows = 0
        self.buffers = []

    def get(self, rows, like):
        """Buffers of ``rows`` rows, of ``like``'s dtype and device."""
        if rows > self.rows:
            self.buffers = [like.new_empty((rows, width)) for width in self.widths]
            self.rows = rows
        if rows == self.rows:
            return self.buffers
        return [buffer[:rows] for buffer in self.buffers]


def backpropagate_(net, inputs, grad, grads, *, l2_scale=None):
    """A plain MLP's backward pass from ``grad`` = dloss/doutput, into ``grads``.

    Fills each layer's ``(weight_grad, bias_grad)`` of ``grads`` and makes
    them the parameters' ``.grad``; the kernels autograd's backward runs,
    in its order. Families with a loss of their own (DQN's TD loss) write
    only the loss gradient and call this.

    Parameters
    ----------
    net : PlainLayers
    inputs : list of torch.Tensor
        Each layer's input: the batch, then the previous layers' outputs.
    grad : torch.Tensor
        dloss/d(last layer's output), shape (rows, outputs).
    grads : list of (torch.Tensor, torch.Tensor)
    l2_scale : float or None, default=None
        Folds an L2 penalty's gradient, ``l2_scale * W``, into each weight
        gradient's product (one ``addmm`` instead of a ``mm`` and an add).
    """
    weights, biases, derivatives = net.weights, net.biases, net.derivatives
    for i in range(len(weights) - 1, -1, -1):
        weight, bias = weights[i], biases[i]
        weight_grad, bias_grad = grads[i]
        if l2_scale is None:
            torch.mm(grad.t(), inputs[i], out=weight_grad)
        else:
            torch.addmm(weight, grad.t(), inputs[i], beta=l2_scale, out=weight_grad)
        torch.sum(grad, 0, out=bias_grad)
        # The same tensors every step: set only when they are not there yet.
        if weight.grad is not weight_grad:
            weight.grad = weight_grad
        if bias.grad is not bias_grad:
            bias.grad = bias_grad
        if i > 0:
            # dloss/d(previous activation), then through its derivative.
            grad = torch.mm(grad, weight)
            derivative = derivatives[i - 1]
            if derivative is not None:
                grad = derivative(grad, inputs[i])


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

    #: Every parameter's gradient is written whole, into the same tensors
    #: each step: the trainer need not reset them before the step.
    overwrites_gradients = True

    def __init__(self, layers, loss_kind, penalized, alpha, l1_ratio):
        if loss_kind not in LOSS_KINDS:
            raise ValueError(f"loss_kind must be one of {LOSS_KINDS}, got {loss_kind!r}.")
        self.layers = layers
        self._net = PlainLayers(layers)
        self.loss_kind = loss_kind
        self.penalized = penalized
        self.alpha = float(alpha)
        self.l1_ratio = float(l1_ratio)
        self._outputs = ActivationBuffers(self._net.widths)
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
        :mod:`~sklears_neural.core.flat`), once it has laid the parameters
        out there: the layers' transposed weights are taken again.
        """
        self._net = PlainLayers(self.layers)
        self._grads = [(views[linear.weight], views[linear.bias])
                       for linear, _ in self.layers]

    @classmethod
    def for_module(cls, module, loss_kind, *, penalized=(), alpha=0.0, l1_ratio=0.0):
        """A step for ``module``, or None where autograd must run it."""
        layers = _plain_layers(module)
        if layers is None or loss_kind not in LOSS_KINDS:
            return None
        return cls(layers, loss_kind, list(penalized), alpha, l1_ratio)

    @torch.no_grad()
    def __call__(self, X, y, w=None):
        """Fill the gradients for batch ``(X, y, w)``; return its loss (0-d)."""
        outputs = self._outputs.get(X.shape[0], X)
        logits = self._net.forward_into(X, outputs)
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

        backpropagate_(self._net, [X, *outputs[:-1]], grad, self._grads,
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
            if w is None:
                # The mean in the same kernel, as autograd's cross_entropy.
                loss = F.nll_loss(log_p, y)
            else:
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
            if self.loss_kind != "softmax_cross_entropy":
                loss = per_sample.mean()
            return loss, grad.div_(n)
        total = w.sum()
        return (per_sample * w).sum() / total, grad.mul_((w / total)[:, None])
