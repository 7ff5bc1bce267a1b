"""Weight-sharing supernets for architecture search over the MLP and CNN families.

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

:class:`SuperCNN` does the same with "same" convolutions
(:class:`MixedConv`): channel counts are slices, kernel sizes have a
weight each or (``elastic_kernel``) share the largest one.
:func:`extract_mlp` and :func:`extract_cnn` copy a discrete
architecture's slices into the ordinary network of a fitted estimator, so
the result predicts, saves and pickles like any estimator. The searchers
live in :mod:`sklears_neural.search`.
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

__all__ = ["MixedConv", "MixedLayer", "SuperCNN", "SuperMLP", "SupernetTask",
           "check_family", "extract_cnn", "extract_mlp"]

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


def estimator_architecture(estimator, family):
    """The architecture parameters of ``estimator`` itself, as a candidate.

    ``{"hidden_layer_sizes", "activation"}`` for MLPs (sizes as a tuple),
    ``{"layers"}`` for CNNs (None: the family's default network).
    """
    params = estimator.get_params()
    if family == "mlp":
        sizes = params["hidden_layer_sizes"]
        if isinstance(sizes, Integral):
            sizes = (sizes,)
        sizes = tuple(int(w) for w in sizes)
        return {"hidden_layer_sizes": sizes, "activation": params["activation"]}
    layers = params["layers"]
    return {"layers": None if layers is None else list(layers)}


def shortlist_with_estimator(candidates, scores, estimator, family, include):
    """The searched ``candidates`` and their supernet ``scores``, plus the
    estimator's own architecture when ``include`` (score NaN), and which is which.

    Returns
    -------
    candidates, scores, sources : lists
        ``sources[i]`` is ``"search"`` or ``"estimator"``.
    """
    candidates, scores = list(candidates), list(scores)
    sources = ["search"] * len(candidates)
    own = estimator_architecture(estimator, family)
    if include and own not in candidates:
        candidates.append(own)
        scores.append(float("nan"))
        sources.append("estimator")
    return candidates, scores, sources


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


def _fitted_shell(template, task, params):
    """An estimator with ``params`` set and the fitted state of ``task``, and
    its freshly built network (weights still to be copied in)."""
    est = clone(template).set_params(**params)
    shell = task.shell
    for name in ("classes_", "_label_binarizer", "feature_names_in_", "input_shape_",
                 "n_features_in_", "n_outputs_", "out_activation_"):
        if hasattr(shell, name):
            setattr(est, name, getattr(shell, name))
    spec = est._build_module(est.n_features_in_, est.n_outputs_)
    return est, spec


def _finish_fitted(est, spec, module):
    """Set the fitted attributes as ``from_sklearn`` does: a module that
    arrived from elsewhere, nothing trained yet."""
    module.eval()
    est.module_ = module
    est._module_spec_ = spec
    est._generator = torch_generator(est.random_state)
    set_generator(module, est._generator)
    est._reset_training_state()
    est._record(History(), 0, 0)
    est.converged_ = True
    return est


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
    est, spec = _fitted_shell(template, task, {
        "hidden_layer_sizes": discrete_sizes(choices), "activation": activation})
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
    return _finish_fitted(est, spec, module)


def cnn_layers(choices, kernel_sizes, batch_norm=None):
    """The ``layers`` spec of a discrete :class:`SuperCNN` architecture.

    ``choices[i]`` channels or None (skip), ``kernel_sizes[i]`` the kernel
    size (not an index); ``"gap"`` ends it. ``batch_norm=False`` writes
    ``-nobn`` on every convolution (an extracted subnet has no batch norm,
    whatever the estimator's ``batch_norm`` says).
    """
    suffix = "-nobn" if batch_norm is False else ""
    layers = [f"conv{c}-k{k}{suffix}" for c, k in zip(choices, kernel_sizes)
              if c is not SKIP]
    return [*layers, "gap"]


def extract_cnn(template, task, supernet, choices, kernel_indices):
    """A fitted CNN estimator whose network is ``supernet``'s slice.

    As :func:`extract_mlp`: the chosen channels of each convolution (with
    elastic kernels, the kernel as :meth:`MixedConv.kernel_weight` makes
    it) are copied into the plain :class:`~sklears_neural.nn.conv.ConvNet`
    that the estimator builds for ``layers=["conv<c>-k<k>-nobn", ...,
    "gap"]``; nothing is retrained.

    Parameters
    ----------
    template : CNNClassifier or CNNRegressor
    task : SupernetTask
    supernet : SuperCNN
    choices : list of int or None
        Channels per layer, None to skip it (layers past the list are unused).
    kernel_indices : list of int
        Index into ``supernet``'s kernel sizes, per layer.

    Returns
    -------
    estimator : CNNClassifier or CNNRegressor
    """
    sizes = [supernet.layers[0].kernel_sizes[k] for k in kernel_indices]
    est, spec = _fitted_shell(template, task,
                              {"layers": cnn_layers(choices, sizes, batch_norm=False)})
    module = spec.build()
    used = [(layer, c, k)
            for layer, c, k in zip(supernet.layers, choices, kernel_indices)
            if c is not SKIP]
    with torch.no_grad():
        for block, (layer, channels, k) in zip(module.features, used):
            conv = block[0]
            weight, bias = layer.kernel_weight(k)
            conv.weight.copy_(weight[:channels, : conv.weight.shape[1]])
            conv.bias.copy_(bias[:channels])
        head = module.output_layer
        head.weight.copy_(supernet.output.weight[:, : head.weight.shape[1]])
        head.bias.copy_(supernet.output.bias)
    return _finish_fitted(est, spec, module)


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
    """One convolution layer of :class:`SuperCNN`.

    The candidate operations are ``act(conv_k(x))`` keeping the first
    ``c`` channels, for every kernel size ``k`` and channel count ``c``,
    and (after the first layer) the identity. Channel counts share one
    weight tensor, sliced; "same" padding keeps the spatial size, so every
    operation has one output shape. Kernel sizes either have a weight
    tensor each (DARTS and ENAS: different operations), or, with
    ``elastic_kernel``, share the largest one (once-for-all): a ``k``-wide
    kernel is the centre of the next larger one, times a learned
    ``k^ndim x k^ndim`` *kernel transformation matrix* (one per layer and
    size, shared by all channels, identity at the start; Cai et al.,
    2020, section 3.2).

    Parameters
    ----------
    ndim : {1, 2, 3}
        Spatial dimensions.
    in_channels : int
    max_channels : int
    kernel_sizes : list of int
        Odd sizes, increasing.
    elastic_kernel : bool, default=False
        Share the largest kernel among the sizes, as above.
    """

    def __init__(self, ndim, in_channels, max_channels, kernel_sizes,
                 elastic_kernel=False):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim]
        self.ndim = ndim
        self.kernel_sizes = [int(k) for k in kernel_sizes]
        self.elastic_kernel = bool(elastic_kernel)
        sizes = self.kernel_sizes[-1:] if elastic_kernel else self.kernel_sizes
        self.convs = nn.ModuleList(
            conv(int(in_channels), int(max_channels), k, padding=k // 2) for k in sizes
        )
        # transforms[i]: from the centre of size kernel_sizes[i + 1] to
        # kernel_sizes[i] (only with elastic kernels).
        self.transforms = nn.ParameterList(
            nn.Parameter(torch.eye(k ** ndim)) for k in self.kernel_sizes[:-1]
        ) if elastic_kernel else nn.ParameterList()

    def kernel_weight(self, kernel_index):
        """``(weight, bias)`` of the ``kernel_index``-th size at full channels.

        ``weight`` is ``(max_channels, in_channels, k, ..., k)``.
        """
        if not self.elastic_kernel:
            conv = self.convs[kernel_index]
            return conv.weight, conv.bias
        conv = self.convs[0]
        weight = conv.weight
        for i in range(len(self.kernel_sizes) - 2, kernel_index - 1, -1):
            k = self.kernel_sizes[i]
            start = (weight.shape[-1] - k) // 2
            centre = weight[(..., *[slice(start, start + k)] * self.ndim)]
            flat = centre.reshape(*centre.shape[:2], k ** self.ndim)
            weight = (flat @ self.transforms[i]).reshape(centre.shape)
        return weight, conv.bias

    def _conv(self, x, weight, bias, kernel_index):
        k = self.kernel_sizes[kernel_index]
        return _CONVS[self.ndim](x, weight, bias, padding=k // 2)

    def full(self, x, kernel_index):
        """``conv_k(x)`` at every channel, ``(batch, max_channels, *spatial)``."""
        if not self.elastic_kernel:
            return self.convs[kernel_index](x)
        return self._conv(x, *self.kernel_weight(kernel_index), kernel_index)

    def operation(self, x, channels, kernel_index, activation):
        """A candidate as the mixture sees it: ``act(conv_k(x))``, channels
        past ``channels`` zeroed, ``(batch, max_channels, *spatial)``."""
        out = activation(self.full(x, kernel_index))
        mask = torch.zeros(out.shape[1], dtype=out.dtype, device=out.device)
        mask[:channels] = 1
        return out * mask.view(1, -1, *[1] * self.ndim)

    def forward_discrete(self, x, channels, kernel_index, activation):
        """The sliced convolution, ``(batch, channels, *spatial)``."""
        weight, bias = self.kernel_weight(kernel_index)
        weight = weight[:channels, : x.shape[1]]
        return activation(self._conv(x, weight, bias[:channels], kernel_index))

    def forward_mixed(self, x, channel_weights, masks, kernel_weights, activation,
                      skip_weight=None):
        """``sum_{k, c} p_k p_c act(conv_k(x)) * mask_c + p_skip x``."""
        mixed = sum(p * activation(self.full(x, k))
                    for k, p in enumerate(kernel_weights))
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
    elastic_kernel : bool, default=False
        Kernel sizes share the largest kernel, centre-cropped and
        transformed (see :class:`MixedConv`), as once-for-all trains them;
        False gives each size its own weights (DARTS, ENAS).

    Shapes
    ------
    - input: ``(batch, *input_shape)``
    - output: ``(batch, n_outputs)``
    """

    def __init__(self, input_shape, n_outputs, max_layers, max_channels, kernel_sizes,
                 activation="relu", elastic_kernel=False):
        super().__init__()
        if any(k % 2 == 0 or k < 1 for k in kernel_sizes):
            raise ValueError(
                f"SuperCNN kernel_sizes must be odd (\"same\" padding keeps every "
                f"candidate's output shape), got {list(kernel_sizes)}."
            )
        kernel_sizes = sorted(int(k) for k in kernel_sizes)
        ndim = len(input_shape) - 1
        self.ndim = ndim
        self.max_channels = int(max_channels)
        self.layers = nn.ModuleList(
            MixedConv(ndim, input_shape[0] if i == 0 else max_channels, max_channels,
                      kernel_sizes, elastic_kernel) for i in range(max_layers)
        )
        self.output = nn.Linear(int(max_channels), int(n_outputs))
        self.activation_name = _check_activations([activation], "SuperCNN")[0]
        self.act = ACTIVATIONS.build(self.activation_name)

    def reset_parameters(self, generator=None):
        """He-uniform weights (the CNNs' default), zero biases, identity
        kernel transformations."""
        for module in [conv for layer in self.layers for conv in layer.convs] + [self.output]:
            fan_in = module.weight[0].numel()
            bound = math.sqrt(6.0 / fan_in)
            with torch.no_grad():
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.zero_()
        with torch.no_grad():
            for layer in self.layers:
                for matrix in layer.transforms:
                    matrix.copy_(torch.eye(len(matrix)))

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

    def forward(self, x):
        """The largest architecture: every layer, all channels, largest kernel."""
        n = len(self.layers)
        return self.forward_discrete(x, [self.max_channels] * n,
                                     [len(self.layers[0].kernel_sizes) - 1] * n)

    def forward_mixed(self, x, channel_weights, kernel_weights, channels):
        """DARTS: per layer a mixture over ``channels`` (plus skip, last,
        after the first layer) and one over kernel sizes."""
        masks = _width_masks(channels, self.max_channels, x)
        for i, (layer, cw, kw) in enumerate(zip(self.layers, channel_weights, kernel_weights)):
            skip = cw[len(channels)] if i > 0 else None
            x = layer.forward_mixed(x, cw[: len(channels)], masks, kw, self.act, skip)
        return self._head(x)
