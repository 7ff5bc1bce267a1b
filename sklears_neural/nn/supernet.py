"""Weight-sharing supernets for architecture search over the MLP family.

One :class:`SuperMLP` holds ``max_layers`` fully connected layers at the
largest candidate width. Every architecture the searchers consider is a
slice of it:

- a *discrete* architecture (:meth:`SuperMLP.forward_discrete`) is a list
  of per-layer choices, each a width ``w`` (the first ``w`` units of that
  layer, reading the first units its input has) or ``None`` (the layer is
  skipped: an identity), plus one hidden activation, since an
  :class:`~sklears_neural.MLPClassifier` has one activation for all
  layers. ENAS children and once-for-all subnets run this way;
- a *mixed* architecture (:meth:`SuperMLP.forward_mixed`) weighs every
  choice of every layer by probabilities, as DARTS does:
  :class:`MixedLayer` computes the layer once at full width and masks it.

:func:`extract_mlp` copies a discrete architecture's slices into the
ordinary :class:`~sklears_neural.core.layers.MLP` of a fitted estimator,
so the result predicts, saves and pickles like any estimator. The
searchers live in :mod:`sklears_neural.search`.
"""

import math
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import clone
from torch import nn

from sklears_neural.core.history import History
from sklears_neural.core.noise import set_generator
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.seeding import torch_generator

__all__ = ["MixedLayer", "SuperMLP", "SupernetTask", "extract_mlp", "check_family"]

#: Choice meaning "skip this layer" in a discrete architecture.
SKIP = None


def check_family(estimator, searcher, families=("mlp",)):
    """The family name of ``estimator``, or a ValueError naming those supported.

    Parameters
    ----------
    estimator : estimator object
    searcher : str
        The searcher's name, for the message.
    families : tuple of {"mlp", "cnn"}, default=("mlp",)
        The families this searcher takes.

    Returns
    -------
    family : str
    """
    from sklears_neural.models.cnn import _BaseCNN
    from sklears_neural.models.mlp import _BaseMLP

    names = {"mlp": "MLPClassifier, MLPRegressor", "cnn": "CNNClassifier, CNNRegressor"}
    if isinstance(estimator, _BaseMLP) and "mlp" in families:
        return "mlp"
    if isinstance(estimator, _BaseCNN) and "cnn" in families:
        return "cnn"
    supported = ", ".join(names[f] for f in families)
    raise ValueError(
        f"{searcher} shares weights between candidates, which it can do for the "
        f"families {supported}; got {type(estimator).__name__}. Use "
        "EvolutionarySearch, ProgressiveSearch or HyperbandSearch for other estimators."
    )


def _check_activations(activations, owner):
    """Canonical activation names; ones with parameters are refused."""
    if isinstance(activations, str) or not len(activations):
        raise ValueError(f"{owner} activations must be a non-empty list of names, "
                         f"got {activations!r}.")
    names = []
    for name in activations:
        module = ACTIVATIONS.build(name)
        if any(True for _ in module.parameters()):
            raise ValueError(
                f"{owner} shares one activation module across widths, so it takes "
                f"activations without parameters; {name!r} learns some. Choose from "
                f"{sorted(n for n in ACTIVATIONS.names if n != 'prelu')}."
            )
        names.append(ACTIVATIONS.to_json(name))
    return names


def check_widths(widths, owner, what="widths"):
    """Sorted distinct positive ints (widths or depths), or a ValueError."""
    if (isinstance(widths, (str, Integral)) or not len(widths)
            or not all(isinstance(w, Integral) and w >= 1 for w in widths)):
        raise ValueError(f"{owner} {what} must be a non-empty list of positive ints, "
                         f"got {widths!r}.")
    return sorted({int(w) for w in widths})


class MixedLayer(nn.Module):
    """One hidden layer of the supernet: a max-width linear map.

    The candidate operations of the layer are ``act(linear(x))`` keeping
    the first ``w`` units, for every width ``w`` and activation ``act``,
    and (when the layer may be skipped) the identity. They all share
    this one weight matrix, sliced.

    Parameters
    ----------
    n_inputs : int
        Input width (the previous layer's largest width, or the features).
    max_width : int
        Output width of the shared linear map.
    """

    def __init__(self, n_inputs, max_width):
        super().__init__()
        self.linear = nn.Linear(int(n_inputs), int(max_width))

    def forward_discrete(self, x, width, activation):
        """``activation(x W[:width, :d].T + b[:width])``, d the width of ``x``.

        Shapes: ``x`` is ``(batch, d)``, the result ``(batch, width)``.
        """
        weight = self.linear.weight[:width, : x.shape[1]]
        return activation(F.linear(x, weight, self.linear.bias[:width]))

    def operation(self, x, width, activation):
        """One candidate operation as the mixture sees it, ``(batch, max_width)``.

        ``activation(linear(x))`` with units past ``width`` zeroed: the
        max-width map, masked. It equals :meth:`forward_discrete` zero-padded
        up to float rounding (the two matrix products are blocked
        differently, ~1e-7 in float32).
        """
        out = activation(self.linear(x))
        mask = torch.zeros(out.shape[1], dtype=out.dtype, device=out.device)
        mask[:width] = 1
        return out * mask

    def forward_mixed(self, x, width_weights, masks, activation_weights, activations,
                      skip_weight=None):
        """The DARTS mixed operation, ``(batch, max_width)``.

        ``sum_{a, w} p_a p_w act_a(linear(x)) * mask_w + p_skip x``: the
        linear map runs once at full width; ``masks`` (``(n_widths,
        max_width)``, ones on the first ``w`` units) select each width.
        With one-hot weights it is the chosen operation, zero-padded to
        ``max_width``.

        Parameters
        ----------
        x : Tensor of shape (batch, n_inputs)
        width_weights : Tensor of shape (n_widths,)
        masks : Tensor of shape (n_widths, max_width)
        activation_weights : Tensor of shape (n_activations,)
        activations : list of nn.Module
        skip_weight : Tensor of shape () or None
        """
        pre = self.linear(x)
        mixed = sum(p * act(pre) for p, act in zip(activation_weights, activations))
        out = mixed * (width_weights @ masks)
        if skip_weight is not None:
            out = out + skip_weight * x
        return out


class SuperMLP(nn.Module):
    """A weight-sharing MLP: ``max_layers`` hidden layers of ``max_width``.

    Parameters
    ----------
    n_inputs : int
        Features.
    n_outputs : int
        Raw outputs (the estimator's ``n_outputs_``).
    max_layers : int
        Hidden layers at most.
    max_width : int
        Units of each hidden layer at most.
    activations : list of str
        Candidate hidden activations (parameter-free ones).

    Shapes
    ------
    - input: ``(batch, n_inputs)``
    - output: ``(batch, n_outputs)``
    """

    def __init__(self, n_inputs, n_outputs, max_layers, max_width, activations=("relu",)):
        super().__init__()
        self.activation_names = _check_activations(activations, "SuperMLP")
        self.max_width = int(max_width)
        self.hidden = nn.ModuleList(
            MixedLayer(n_inputs if i == 0 else max_width, max_width) for i in range(max_layers)
        )
        self.output = nn.Linear(int(max_width), int(n_outputs))
        self.activations = nn.ModuleList(ACTIVATIONS.build(a) for a in self.activation_names)

    def reset_parameters(self, generator=None):
        """scikit-learn's Glorot-uniform draw, at the full widths."""
        for linear in [layer.linear for layer in self.hidden] + [self.output]:
            fan_out, fan_in = linear.weight.shape
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            with torch.no_grad():
                linear.weight.uniform_(-bound, bound, generator=generator)
                linear.bias.uniform_(-bound, bound, generator=generator)

    def activation(self, name):
        """The shared activation module called ``name``."""
        return self.activations[self.activation_names.index(ACTIVATIONS.to_json(name))]

    def forward_discrete(self, x, choices, activation):
        """One architecture: ``choices[i]`` a width or None (skip layer ``i``).

        Layers past ``len(choices)`` are not used (elastic depth).
        """
        act = self.activation(activation)
        for layer, width in zip(self.hidden, choices):
            if width is not SKIP:
                x = layer.forward_discrete(x, width, act)
        return F.linear(x, self.output.weight[:, : x.shape[1]], self.output.bias)

    def forward_mixed(self, x, width_weights, activation_weights, widths):
        """DARTS: every layer a mixture (see :meth:`MixedLayer.forward_mixed`).

        ``width_weights[i]`` has one probability per width, plus a last one
        for skip on layers after the first.
        """
        masks = _width_masks(widths, self.max_width, x)
        acts = list(self.activations)
        for i, (layer, weights) in enumerate(zip(self.hidden, width_weights)):
            skip = weights[len(widths)] if i > 0 else None
            x = layer.forward_mixed(x, weights[: len(widths)], masks, activation_weights,
                                    acts, skip)
        return self.output(x)

    def forward(self, x):
        """The largest architecture, first activation."""
        return self.forward_discrete(x, [self.max_width] * len(self.hidden),
                                     self.activation_names[0])


def _width_masks(widths, max_width, like):
    masks = torch.zeros(len(widths), max_width, dtype=like.dtype, device=like.device)
    for row, width in enumerate(widths):
        masks[row, :width] = 1
    return masks


def discrete_sizes(choices):
    """``hidden_layer_sizes`` of a discrete architecture (skips removed)."""
    return tuple(int(w) for w in choices if w is not SKIP)


def n_parameters(n_inputs, sizes, n_outputs):
    """Weights and biases of a plain MLP with hidden ``sizes``."""
    widths = [n_inputs, *sizes, n_outputs]
    return int(sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:])))


class SupernetTask:
    """The estimator's own targets, loss and score, for training a supernet.

    Validates ``X, y`` with ``template``'s training-data check (so labels
    are encoded as the estimator encodes them) and keeps the fitted label
    state to hand to extracted estimators.

    Parameters
    ----------
    template : MLPClassifier or MLPRegressor
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
    """

    def __init__(self, template, X, y):
        shell = clone(template)
        X, targets, _ = shell._validate_training_data(
            X, y, None, reset=True, incremental=False, classes=None)
        shell.n_outputs_ = shell._n_outputs_for(targets)
        shell.out_activation_ = shell._output_activation()
        self.shell = shell
        self.is_classifier = hasattr(shell, "classes_")
        self.X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        self.targets = torch.as_tensor(
            targets if targets.dtype.kind == "i" else targets.astype(np.float32))
        self.n_features = self.X.shape[1]
        self.n_outputs = int(shell.n_outputs_)

    def loss(self, output, target):
        """The estimator's mean training loss (no weight penalty)."""
        return self.shell._mean_loss(output, target)

    def score(self, output, target):
        """Accuracy (classifiers: exact match of every label) or R^2."""
        with torch.no_grad():
            if self.is_classifier:
                if target.ndim == 1:
                    return float((output.argmax(1) == target).double().mean())
                return float(((output > 0) == (target > 0.5)).all(1).double().mean())
            residual = ((target - output) ** 2).sum(0)
            total = ((target - target.mean(0)) ** 2).sum(0).clamp_min(1e-12)
            return float((1 - residual / total).mean())

    def split(self, validation_fraction, rng):
        """``(train, valid)`` index tensors: a seeded shuffle, stratified for
        classes so that a small validation part sees every class."""
        n = len(self.X)
        n_valid = int(round(validation_fraction * n))
        if not 1 <= n_valid < n:
            raise ValueError(
                f"validation_fraction={validation_fraction} leaves {n_valid} of {n} "
                "samples for validation; it must leave at least one on each side."
            )
        order = rng.permutation(n)
        if self.is_classifier and self.targets.ndim == 1:
            labels = self.targets.numpy()[order]
            # Interleave classes so each takes its share of the validation part.
            rank = np.empty(n)
            for label in np.unique(labels):
                where = np.flatnonzero(labels == label)
                rank[where] = (np.arange(len(where)) + rng.rand()) / len(where)
            order = order[np.argsort(rank, kind="stable")]
        valid = np.sort(order[:n_valid])
        train = np.sort(order[n_valid:])
        return torch.as_tensor(train), torch.as_tensor(valid)

    def new_supernet(self, max_layers, max_width, activations, seed):
        """A :class:`SuperMLP` for this data, drawn from ``seed``."""
        net = SuperMLP(self.n_features, self.n_outputs, max_layers, max_width, activations)
        net.reset_parameters(generator=torch.Generator().manual_seed(int(seed)))
        return net


def batches(indices, batch_size, generator):
    """Shuffled mini-batches of ``indices`` (a tensor), from ``generator``."""
    order = indices[torch.randperm(len(indices), generator=generator)]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def extract_mlp(template, task, supernet, choices, activation):
    """A fitted MLP estimator whose network is ``supernet``'s slice.

    Nothing is retrained: the weights of the chosen widths are copied into
    a fresh :class:`~sklears_neural.core.layers.MLP` built by the
    estimator's own ``_build_module``, and the fitted attributes are set as
    ``from_sklearn`` sets them, so the estimator predicts, continues
    training (``warm_start``), saves and pickles as if it had been fitted.

    Parameters
    ----------
    template : MLPClassifier or MLPRegressor
        Unfitted; its other parameters are kept.
    task : SupernetTask
    supernet : SuperMLP
    choices : list of int or None
    activation : str

    Returns
    -------
    estimator : MLPClassifier or MLPRegressor
    """
    sizes = discrete_sizes(choices)
    est = clone(template).set_params(hidden_layer_sizes=sizes, activation=activation)
    shell = task.shell
    for name in ("classes_", "_label_binarizer", "feature_names_in_"):
        if hasattr(shell, name):
            setattr(est, name, getattr(shell, name))
    est.n_features_in_ = task.n_features
    est.n_outputs_ = shell.n_outputs_
    est.out_activation_ = shell.out_activation_
    spec = est._build_module(task.n_features, est.n_outputs_)
    module = spec.build()
    used = [layer for layer, width in zip(supernet.hidden, choices) if width is not SKIP]
    linears = module.linears
    with torch.no_grad():
        for target, layer in zip(linears[:-1], used):
            out, into = target.weight.shape
            target.weight.copy_(layer.linear.weight[:out, :into])
            target.bias.copy_(layer.linear.bias[:out])
        out, into = linears[-1].weight.shape
        linears[-1].weight.copy_(supernet.output.weight[:, :into])
        linears[-1].bias.copy_(supernet.output.bias)
    module.eval()
    est.module_ = module
    est._module_spec_ = spec
    est._generator = torch_generator(est.random_state)
    set_generator(module, est._generator)
    est._reset_training_state()
    est._record(History(), 0, 0)
    est.converged_ = True
    return est


def check_plain_mlp(estimator, owner):
    """Refuse MLP options that add layers a supernet slice does not have."""
    extra = [name for name in ("batch_norm", "layer_norm", "spectral_norm")
             if estimator.get_params()[name]]
    extra += [name for name in ("residual", "noise") if estimator.get_params()[name] is not None]
    if extra:
        raise ValueError(
            f"{owner} copies plain linear layers out of its supernet, but the estimator "
            f"sets {extra}, which add layers the supernet does not have. Unset them "
            "(dropout is fine)."
        )


_CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class MixedConv(nn.Module):
    """One convolution layer of :class:`SuperCNN`: a max-channel conv per kernel size.

    The candidate operations are ``act(conv_k(x))`` keeping the first
    ``c`` channels, for every kernel size ``k`` and channel count ``c``,
    and (after the first layer) the identity. Channel counts share one
    weight tensor per kernel size, sliced; "same" padding keeps the
    spatial size, so every operation has one output shape.

    Parameters
    ----------
    ndim : {1, 2, 3}
        Spatial dimensions.
    in_channels : int
    max_channels : int
    kernel_sizes : list of int
        Odd sizes.
    """

    def __init__(self, ndim, in_channels, max_channels, kernel_sizes):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim]
        self.ndim = ndim
        self.kernel_sizes = [int(k) for k in kernel_sizes]
        self.convs = nn.ModuleList(
            conv(int(in_channels), int(max_channels), k, padding=k // 2)
            for k in self.kernel_sizes
        )

    def operation(self, x, channels, kernel_index, activation):
        """A candidate as the mixture sees it: ``act(conv_k(x))``, channels
        past ``channels`` zeroed, ``(batch, max_channels, *spatial)``."""
        out = activation(self.convs[kernel_index](x))
        mask = torch.zeros(out.shape[1], dtype=out.dtype, device=out.device)
        mask[:channels] = 1
        return out * mask.view(1, -1, *[1] * self.ndim)

    def forward_discrete(self, x, channels, kernel_index, activation):
        """The sliced convolution, ``(batch, channels, *spatial)``."""
        conv = self.convs[kernel_index]
        weight = conv.weight[:channels, : x.shape[1]]
        return activation(_CONVS[self.ndim](x, weight, conv.bias[:channels],
                                            padding=conv.padding))

    def forward_mixed(self, x, channel_weights, masks, kernel_weights, activation,
                      skip_weight=None):
        """``sum_{k, c} p_k p_c act(conv_k(x)) * mask_c + p_skip x``."""
        mixed = sum(p * activation(conv(x)) for p, conv in zip(kernel_weights, self.convs))
        out = mixed * (channel_weights @ masks).view(1, -1, *[1] * self.ndim)
        if skip_weight is not None:
            out = out + skip_weight * x
        return out


class SuperCNN(nn.Module):
    """A weight-sharing CNN: ``max_layers`` mixed convolutions, global
    average pooling, a linear output layer.

    Parameters
    ----------
    input_shape : list of int
        ``(channels, *spatial)`` of one sample.
    n_outputs : int
    max_layers : int
    max_channels : int
    kernel_sizes : list of int
        Odd candidate kernel sizes.
    activation : str
        The estimator's activation (one, as in its ``ConvNet``).

    Shapes
    ------
    - input: ``(batch, *input_shape)``
    - output: ``(batch, n_outputs)``
    """

    def __init__(self, input_shape, n_outputs, max_layers, max_channels, kernel_sizes,
                 activation="relu"):
        super().__init__()
        if any(k % 2 == 0 or k < 1 for k in kernel_sizes):
            raise ValueError(
                f"SuperCNN kernel_sizes must be odd (\"same\" padding keeps every "
                f"candidate's output shape), got {list(kernel_sizes)}."
            )
        ndim = len(input_shape) - 1
        self.ndim = ndim
        self.max_channels = int(max_channels)
        self.layers = nn.ModuleList(
            MixedConv(ndim, input_shape[0] if i == 0 else max_channels, max_channels,
                      kernel_sizes) for i in range(max_layers)
        )
        self.output = nn.Linear(int(max_channels), int(n_outputs))
        self.activation_name = _check_activations([activation], "SuperCNN")[0]
        self.act = ACTIVATIONS.build(self.activation_name)

    def reset_parameters(self, generator=None):
        """He-uniform weights (the CNNs' default), zero biases."""
        for module in [conv for layer in self.layers for conv in layer.convs] + [self.output]:
            fan_in = module.weight[0].numel()
            bound = math.sqrt(6.0 / fan_in)
            with torch.no_grad():
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.zero_()

    def _head(self, x):
        pooled = x.mean(dim=tuple(range(2, 2 + self.ndim)))
        return F.linear(pooled, self.output.weight[:, : pooled.shape[1]], self.output.bias)

    def forward_discrete(self, x, choices, kernel_indices):
        """``choices[i]`` channels or None (skip), ``kernel_indices[i]`` into
        the kernel sizes."""
        for layer, channels, k in zip(self.layers, choices, kernel_indices):
            if channels is not SKIP:
                x = layer.forward_discrete(x, channels, k, self.act)
        return self._head(x)

    def forward_mixed(self, x, channel_weights, kernel_weights, channels):
        """DARTS: per layer a mixture over ``channels`` (plus skip, last,
        after the first layer) and one over kernel sizes."""
        masks = _width_masks(channels, self.max_channels, x)
        for i, (layer, cw, kw) in enumerate(zip(self.layers, channel_weights, kernel_weights)):
            skip = cw[len(channels)] if i > 0 else None
            x = layer.forward_mixed(x, cw[: len(channels)], masks, kw, self.act, skip)
        return self._head(x)
