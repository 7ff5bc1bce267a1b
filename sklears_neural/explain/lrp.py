"""Layer-wise relevance propagation (LRP) for chains of linear, conv and pooling layers.

LRP (Bach et al., 2015; Montavon et al., 2019) explains one raw network
output ``f_t(x)`` by handing it back layer by layer, from the output to the
input, in proportion to each input's contribution to each layer output. The
relevances of the input features then (nearly) sum to ``f_t(x)``.

The network is run once with forward hooks that record, for every layer
module, its input ``a`` and output ``z``; relevance then walks that record
backwards. Each linear layer (``nn.Linear``, ``nn.ConvNd``, eval-mode
``nn.BatchNormNd``, the pooling layers) applies a rule; activations
(ReLU family), dropout, ``Flatten`` and ``Identity`` hand relevance through
unchanged. Anything else (recurrent cells, attention, ``LayerNorm``,
residual blocks) has no rule here and raises a TypeError that points to
:class:`~sklears_neural.explain.IntegratedGradients`.
"""

from numbers import Real

import numpy as np
import torch
from sklearn.base import is_classifier
from torch import nn

from sklears_neural.core._compat import Interval, InvalidParameterError, StrOptions
from sklears_neural.core.layers import ResidualBlock
from sklears_neural.core.noise import NoiseLayer
from sklears_neural.explain._base import GradientExplainer
from sklears_neural.explain._model import TorchModel, split_pipeline
from sklears_neural.explain.gradients import RELU_FAMILY
from sklears_neural.nn.attention import AttentionPooling, MultiHeadAttention
from sklears_neural.nn.conv import ResidualConvBlock
from sklears_neural.nn.recurrent import RecurrentEncoder
from sklears_neural.nn.transformer import TransformerEncoderLayer

__all__ = ["LRP"]

#: Layers with a propagation rule. ``WEIGHTED`` ones take the alpha-beta
#: rule when asked; the others (pooling, batch norm) always use epsilon.
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
EPSILON_ONLY = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
#: Layers relevance passes through as it is (elementwise, or a reshape).
PASS_THROUGH = (
    *RELU_FAMILY, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.Identity, nn.Flatten, nn.Unflatten, NoiseLayer,
)
#: Containers whose children are visited; any other module with children
#: must be a layer above, or is refused.
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

#: Blocks whose forward combines branches or loops: never a chain.
_BRANCHING = (
    ResidualBlock, ResidualConvBlock, MultiHeadAttention, AttentionPooling,
    TransformerEncoderLayer, RecurrentEncoder, nn.RNNBase, nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
)

#: Pipeline steps that scale each feature on its own, so relevance of the
#: network's input feature j is relevance of the pipeline's input feature j.
_ELEMENTWISE_STEPS = ("StandardScaler", "RobustScaler", "MinMaxScaler", "MaxAbsScaler")


def _divide(relevance, z, epsilon):
    """``relevance / (z + epsilon * sign(z))``, sign(0) = 1 (captum's stabilizer).

    A zero denominator (``epsilon=0`` and no contribution at all) gives 0:
    nothing flows back through a neuron that nothing flowed into.
    """
    z = z.detach()
    denominator = z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    safe = torch.where(denominator == 0, 1.0, denominator)
    return torch.where(denominator == 0, 0.0, relevance / safe)


def _weighted_sum(module, a, weight):
    """The layer's linear map of ``a`` with ``weight`` instead of its own, no bias."""
    if isinstance(module, nn.Linear):
        return nn.functional.linear(a, weight)
    return module._conv_forward(a, weight, None)


def epsilon_rule(module, a, z, relevance, epsilon):
    """``R_in = a * J^T (R_out / (z + eps sign z))``, J the layer's Jacobian.

    For a linear layer ``z_j = sum_i a_i w_ij + b_j`` this is
    ``R_i = sum_j a_i w_ij / (z_j + eps sign z_j) * R_j``. ``z`` is the
    recorded output (with its bias), still attached to the graph from ``a``.
    """
    (grad,) = torch.autograd.grad(z, a, _divide(relevance, z, epsilon), retain_graph=True)
    return a * grad


def alpha_beta_rule(module, a, relevance, alpha, beta, epsilon):
    """``R_i = sum_j (alpha (a_i w_ij)^+ / z_j^+ - beta (a_i w_ij)^- / z_j^-) R_j``.

    ``z_j^+`` (``z_j^-``) sums the positive (negative) contributions
    ``a_i w_ij``; biases are left out. With ``alpha - beta = 1`` a layer
    conserves relevance at each neuron with contributions of both signs; a
    neuron with positive contributions only hands back ``alpha R_j``
    (``beta = 0`` conserves wherever ``z_j^+ > 0``).
    """
    weight = module.weight.detach()
    a_pos = a.detach().clamp(min=0).requires_grad_(True)
    a_neg = a.detach().clamp(max=0).requires_grad_(True)
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    shares = []
    for same, cross in ((w_pos, w_neg), (w_neg, w_pos)):  # positive, then negative part
        # (a w)^+ = a^+ w^+ + a^- w^-;  (a w)^- = a^+ w^- + a^- w^+
        part = _weighted_sum(module, a_pos, same) + _weighted_sum(module, a_neg, cross)
        share = _divide(relevance, part, epsilon)
        grads = torch.autograd.grad(part, (a_pos, a_neg), share)
        shares.append(a_pos.detach() * grads[0] + a_neg.detach() * grads[1])
    positive, negative = shares
    return alpha * positive - beta * negative


def layer_units(module):
    """The layers of ``module``, in registration order.

    Raises a TypeError naming the first module without a rule.
    """
    units = []

    def visit(m, name):
        if isinstance(m, WEIGHTED + EPSILON_ONLY + PASS_THROUGH):
            units.append(m)
            return
        children = list(m.named_children())
        if not children or not (isinstance(m, CONTAINERS) or _plain_chain(m)):
            inside = sorted({type(leaf).__name__ for leaf in m.modules()
                             if leaf is not m and not list(leaf.children())})
            made_of = f", made of {', '.join(inside)}" if inside else ""
            raise TypeError(
                f"LRP has no propagation rule for {type(m).__name__} "
                f"({name or 'the network'}{made_of}). It propagates relevance through "
                "chains of Linear, Conv1d/2d/3d, BatchNorm (evaluation mode), "
                "average and max pooling, ReLU-family activations, Dropout, "
                "Flatten and Identity; recurrent cells, attention, LayerNorm and "
                "residual blocks have no rule here. Use IntegratedGradients, which "
                "explains any differentiable network."
            )
        for child_name, child in children:
            visit(child, f"{name}.{child_name}" if name else child_name)

    visit(module, "")
    return units


def _plain_chain(module):
    """Whether the children of ``module`` may be visited as a chain of layers.

    Blocks known to combine branches (skip connections, attention, gates) or
    to loop (recurrent cells) are refused by class. Other modules, ours (MLP,
    ConvNet) and users', are checked at run time instead: the recorded
    layers must feed one another (see :func:`_check_chain`).
    """
    return not isinstance(module, _BRANCHING)


def _check_chain(records, network_input, output):
    """Each recorded layer must take the previous one's output (or a view of it)."""
    previous, previous_name = network_input, "the network input"
    for module, a, z in records:
        if not _same_storage(a, previous):
            raise TypeError(
                f"LRP follows a chain of layers, but the input of "
                f"{type(module).__name__} is not the output of {previous_name}: the network's forward computes "
                "something outside its modules there (a skip connection, a functional "
                "op such as F.relu, a sum). Use IntegratedGradients for such networks."
            )
        previous, previous_name = z, type(module).__name__
    if not _same_storage(output, previous):
        raise TypeError(
            f"LRP follows a chain of layers, but the network's output is not the output "
            f"of its last layer ({previous_name}). Use IntegratedGradients for such "
            "networks."
        )


def _same_storage(a, b):
    return a.numel() == b.numel() and a.data_ptr() == b.data_ptr()


class _LRPModel(TorchModel):
    """A :class:`TorchModel` with the network's layer units checked for LRP."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        steps, _ = split_pipeline(self.estimator)
        for name, step in steps:
            if type(step).__name__ not in _ELEMENTWISE_STEPS:
                raise TypeError(
                    f"LRP assigns relevance to the network's input features, and the "
                    f"pipeline step {name!r} ({type(step).__name__}) mixes the "
                    "pipeline's input features into them (only per-feature scalers, "
                    f"{', '.join(_ELEMENTWISE_STEPS)}, keep them apart). Use "
                    "IntegratedGradients, which differentiates through the step."
                )
        if getattr(self.final, "out_activation_", None) == "exp":
            raise TypeError(
                "LRP decomposes the network's raw output, and this regressor predicts "
                "exp(raw output). Use IntegratedGradients to explain the prediction."
            )
        self.network = self.module  # the model's private copy: hooks stay in this call
        self.units = layer_units(self.network)


class LRP(GradientExplainer):
    """Layer-wise relevance propagation of the raw output (a classifier's logit).

    The target output ``R = f_t(x)`` is handed back from layer to layer.
    Through a linear layer ``z_j = sum_i a_i w_ij + b_j`` (Linear, Conv,
    and eval-mode BatchNorm, average and max pooling as the linear maps
    they are at ``x``) the epsilon rule gives input ``i`` the share::

        R_i = sum_j a_i w_ij / (z_j + epsilon * sign(z_j)) * R_j

    and the alpha-beta rule (``rule="alpha_beta"``, Linear and Conv only;
    the other layers keep epsilon) splits positive and negative
    contributions::

        R_i = sum_j (alpha (a_i w_ij)^+ / z_j^+ - beta (a_i w_ij)^- / z_j^-) R_j

    with ``alpha - beta = 1``. ReLU-family activations, dropout, ``Flatten``
    and ``Identity`` pass relevance through. ``values`` are the relevances
    of the input features; ``convergence_delta`` is per sample
    ``sum(values) - f_t(x)``, the relevance biases and ``epsilon`` absorbed
    (zero for a bias-free network as ``epsilon -> 0``). The epsilon rule is
    ``captum.attr.LRP`` with its default rules.

    Explains the **raw output**: a classifier's logit (the log-odds
    ``-z, z`` of a binary one), a regressor's prediction. ``output="auto"``
    means that; ``output="probability"`` is refused, as a probability is no
    sum of layer contributions (use :class:`IntegratedGradients` for it).
    Cost: one forward pass and one backward pass per layer, per sample.

    The network must be a chain of the layers above (our MLPs and CNNs
    without residual blocks; a user module of them); recurrent cells,
    attention, LayerNorm and residual blocks raise a TypeError that names
    the layer. In a pipeline, preprocessing must scale features one by one
    (StandardScaler, RobustScaler, MinMaxScaler, MaxAbsScaler): feature
    ``j``'s relevance is that of its scaled value.

    Parameters
    ----------
    estimator : fitted estimator of sklears_neural, or Pipeline ending in one
    rule : {"epsilon", "alpha_beta"}, default="epsilon"
        Propagation rule of Linear and Conv layers.
    epsilon : float, default=1e-9
        Stabilizer added (with the sign of ``z``) to every denominator;
        larger values absorb relevance of weak or contradictory
        contributions. captum's default.
    alpha, beta : float, default=1.0, 0.0
        Weights of the positive and negative contributions, ``alpha - beta
        = 1``; ``(1, 0)`` propagates positive evidence only (captum's
        ``Alpha1_Beta0_Rule`` on non-negative inputs), ``(2, 1)`` is the
        other common choice.
    output : {"auto", "logit"}, default="auto"
        The raw output; "probability" raises a ValueError.
    batch_size : int or "auto", default="auto"
        Samples per forward/backward pass.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.explain import LRP
    >>> X, y = load_iris(return_X_y=True)
    >>> model = MLPClassifier(max_iter=300, random_state=0).fit(X, y)
    >>> explanation = LRP(model).explain(X[:5])
    >>> explanation.values.shape, explanation.output
    ((5, 4), 'logit')
    """

    _parameter_constraints: dict = {
        **GradientExplainer._parameter_constraints,
        "rule": [StrOptions({"epsilon", "alpha_beta"})],
        "epsilon": [Interval(Real, 0, None, closed="left")],
        "alpha": [Interval(Real, 1, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, estimator, *, rule="epsilon", epsilon=1e-9, alpha=1.0, beta=0.0,
                 output="auto", batch_size="auto"):
        self.estimator = estimator
        self.rule = rule
        self.epsilon = epsilon
        self.alpha = alpha
        self.beta = beta
        self.output = output
        self.batch_size = batch_size

    def _explain(self, X, target):
        if self.rule == "alpha_beta" and not np.isclose(self.alpha - self.beta, 1.0):
            raise InvalidParameterError(
                f"The 'alpha' and 'beta' parameters of LRP must satisfy alpha - beta = 1 "
                f"(conservation of relevance), e.g. alpha=1, beta=0 or alpha=2, beta=1. "
                f"Got alpha={self.alpha!r}, beta={self.beta!r}."
            )
        if self.output == "probability":
            raise ValueError(
                "LRP explains the raw output (a classifier's logit): relevance is "
                "handed back through the network's layers, and the softmax or sigmoid "
                "after them is no layer sum. Use output='auto' or 'logit', or "
                "IntegratedGradients(output='probability') to explain probabilities."
            )
        return super()._explain(X, target)

    def _model(self):
        _, final = split_pipeline(self.estimator)
        output = "logit" if is_classifier(final) else self.output
        return _LRPModel(self.estimator, output, method=type(self).__name__)

    def _attribute(self, model, x, targets, lengths, rows):
        network = model.network
        with torch.no_grad():
            inputs = model.network_inputs(x, lengths)
        if isinstance(inputs, tuple):  # sequences: their layers were refused already
            raise TypeError("LRP takes tabular and image input, not sequences.")
        inputs = inputs.detach().requires_grad_(True)
        records = []
        hooks = [unit.register_forward_hook(
            lambda module, args, out: records.append((module, args[0], out)))
            for unit in model.units]
        try:
            with torch.enable_grad():
                raw = model.final._forward(network, inputs)
        finally:
            for hook in hooks:
                hook.remove()
        _check_chain(records, inputs, raw)
        relevance = self._output_relevance(model, raw.detach(), targets)
        with torch.enable_grad():
            for module, a, z in reversed(records):
                relevance = self._propagate(module, a, z, relevance.reshape(z.shape))
        values = relevance.reshape(x.shape).detach()
        explained = model.outputs_from_raw(raw.detach()).gather(1, targets.view(-1, 1))
        delta = values.reshape(len(x), -1).sum(dim=1) - explained.view(-1)
        return values, {"convergence_delta": delta.cpu().numpy()}

    def _output_relevance(self, model, raw, targets):
        """Relevance at the raw outputs: ``f_t(x)`` at the target's column, 0 elsewhere.

        A binary classifier's explained logits are ``(-z, z)`` of its one raw
        output ``z``: class 0's relevance starts from ``-z`` at that output.
        """
        relevance = torch.zeros_like(raw)
        rows = torch.arange(len(raw), device=raw.device)
        if raw.shape[1] == 1 and model.classifier and len(model.final.classes_) == 2:
            sign = torch.where(targets == 0, -1.0, 1.0).to(raw.dtype)
            relevance[rows, 0] = sign * raw[:, 0]
        else:
            relevance[rows, targets] = raw[rows, targets]
        return relevance

    def _propagate(self, module, a, z, relevance):
        if isinstance(module, PASS_THROUGH):
            return relevance.reshape(a.shape)
        if self.rule == "alpha_beta" and isinstance(module, WEIGHTED):
            return alpha_beta_rule(module, a, relevance, self.alpha, self.beta,
                                   self.epsilon)
        return epsilon_rule(module, a, z, relevance, self.epsilon)
