"""Building blocks shared by model families, and the module spec they return.

:class:`MLP` is the fully connected network of the MLP estimators; its
options (normalization, dropout, noise, residual connections, spectral
normalization, gradient checkpointing) are plain keyword values, so a
:class:`ModuleSpec` can store them and rebuild the same network.

Randomness
----------
Nothing here draws from torch's global generator once an estimator owns the
module: weights come from :func:`~sklears_neural.core.init.initialize_`
(``MLP.reset_parameters(generator=...)``) and dropout / noise masks from the
generator given to :func:`set_generator` (see
:mod:`sklears_neural.core.noise`). Gradient checkpointing replays a block's
masks and buffers exactly, so it changes memory use, never results.
"""

from dataclasses import dataclass, field
from numbers import Real

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sklears_neural.core.init import check_weight_init, initialize_
from sklears_neural.core.noise import NOISES, Dropout, NoiseLayer, set_generator
from sklears_neural.core.registry import register_module
from sklears_neural.core.resolve import ACTIVATIONS, Resolver

__all__ = [
    "ModuleSpec",
    "MLP",
    "ResidualBlock",
    "AddResidual",
    "ConcatResidual",
    "GatedResidual",
    "RESIDUALS",
    "checkpoint_modules",
    "set_generator",
]


@dataclass(frozen=True)
class ModuleSpec:
    """How to build a family's module: a class and JSON-able keyword arguments.

    Families return one from ``_build_module``; the estimator keeps it as
    fitted state, so a pickled (or, later, saved) estimator rebuilds the
    same architecture from plain data and loads the weights into it.

    Parameters
    ----------
    module_class : type
        A ``torch.nn.Module`` subclass whose ``__init__`` takes ``kwargs``.
    kwargs : dict
        Plain Python values only (ints, floats, strings, lists).
    """

    module_class: type
    kwargs: dict = field(default_factory=dict)

    def build(self, generator=None):
        """A new module.

        torch layers draw their default initialization from the global
        generator. Building runs on a forked global stream, seeded from
        ``generator`` when one is given, so a module without its own
        ``reset_parameters(generator=...)`` still starts from weights fixed
        by the estimator's ``random_state``; the caller's global stream is
        left as it was.

        Parameters
        ----------
        generator : torch.Generator or None, default=None
        """
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                seed = torch.randint(2**62, (1,), generator=generator).item()
                torch.manual_seed(seed)
            return self.module_class(**self.kwargs)


class ResidualBlock(nn.Module):
    """One hidden layer ``f`` with a skip connection from its input.

    Subclasses say how the skip path and ``f(x)`` combine (:meth:`combine`)
    and the output width. With ``noise``, the block's input is corrupted
    first, so both paths see the noisy input.

    Parameters
    ----------
    n_inputs : int
        Width ``d_in`` of the block's input.
    n_units : int
        Width ``d_out`` of ``f(x)``.
    body : sequence of nn.Module
        ``f``: an ``nn.Linear(d_in, d_out)`` first (the layer's main-path
        linear), then normalization, activation, dropout.
    noise : nn.Module or None, default=None
        Applied to the input before both paths.

    Attributes
    ----------
    n_outputs : int
        Width of the block's output.
    """

    def __init__(self, n_inputs, n_units, body, *, noise=None):
        super().__init__()
        self.n_inputs = int(n_inputs)
        self.n_units = int(n_units)
        self.noise = noise
        self.body = nn.Sequential(*body)
        if not isinstance(self.body[0], nn.Linear):
            raise ValueError("A residual block's body must start with its nn.Linear.")

    @property
    def linear(self):
        """The main-path ``nn.Linear(d_in, d_out)`` inside ``f``."""
        return self.body[0]

    @property
    def n_outputs(self):
        return self.n_units

    def _projection(self):
        # Identity when widths match; else a bias-free linear map d_in -> d_out.
        if self.n_inputs == self.n_units:
            return nn.Identity()
        return nn.Linear(self.n_inputs, self.n_units, bias=False)

    def forward(self, x):
        if self.noise is not None:
            x = self.noise(x)
        return self.combine(x, self.body(x))

    def combine(self, x, fx):
        """The block's output from its input ``x`` and ``fx = f(x)``."""
        raise NotImplementedError


class AddResidual(ResidualBlock):
    """``y = P x + f(x)``: ``P`` the identity when ``d_in == d_out``, else a learned projection.

    Shapes
    ------
    - input: ``(batch, d_in)``
    - output: ``(batch, d_out)``

    Attributes
    ----------
    projection : nn.Identity or nn.Linear(d_in, d_out, bias=False)
    """

    def __init__(self, n_inputs, n_units, body, *, noise=None):
        super().__init__(n_inputs, n_units, body, noise=noise)
        self.projection = self._projection()

    def combine(self, x, fx):
        return self.projection(x) + fx


class ConcatResidual(ResidualBlock):
    """``y = [x, f(x)]``, concatenated along features (DenseNet-style).

    The width grows: the next layer takes ``d_in + d_out`` inputs.

    Shapes
    ------
    - input: ``(batch, d_in)``
    - output: ``(batch, d_in + d_out)``
    """

    @property
    def n_outputs(self):
        return self.n_inputs + self.n_units

    def combine(self, x, fx):
        return torch.cat([x, fx], dim=-1)


class GatedResidual(ResidualBlock):
    """``y = g * f(x) + (1 - g) * P x`` with a learned gate ``g = sigmoid(W_g x + b_g)``.

    A highway layer: ``g`` chooses, per unit, between the transformed and the
    carried input. ``P`` is as in :class:`AddResidual`.

    Shapes
    ------
    - input: ``(batch, d_in)``
    - output: ``(batch, d_out)``

    Attributes
    ----------
    projection : nn.Identity or nn.Linear(d_in, d_out, bias=False)
    gate : nn.Linear(d_in, d_out)
    """

    def __init__(self, n_inputs, n_units, body, *, noise=None):
        super().__init__(n_inputs, n_units, body, noise=noise)
        self.projection = self._projection()
        self.gate = nn.Linear(self.n_inputs, self.n_units)

    def combine(self, x, fx):
        g = torch.sigmoid(self.gate(x))
        return g * fx + (1.0 - g) * self.projection(x)


RESIDUALS = Resolver(
    "residual",
    {"add": AddResidual, "concat": ConcatResidual, "gated": GatedResidual},
    aliases={"sum": "add", "highway": "gated", "dense": "concat"},
)
"""Residual connections of :class:`MLP` by name."""


def checkpoint_modules(modules, x):
    """Run ``modules`` in sequence on ``x`` under ``torch.utils.checkpoint``.

    The backward pass recomputes the block instead of storing its
    activations. The recomputation replays the block exactly: noise layers
    draw from copies of their generators taken before the forward pass (the
    generators then end where a plain forward would leave them), and buffers
    (batch-norm running statistics, spectral-norm vectors) are set back to
    their values before the forward pass for the replay and restored after
    it. Results, gradients and buffers equal those of a plain forward.

    Parameters
    ----------
    modules : sequence of nn.Module
    x : torch.Tensor

    Returns
    -------
    torch.Tensor
    """
    layers = [
        m for module in modules for m in module.modules()
        if isinstance(m, NoiseLayer) and m.generator is not None
    ]
    generators = {id(m.generator): m.generator for m in layers}
    starts = {key: g.get_state() for key, g in generators.items()}
    buffers = [b for module in modules for b in module.buffers()]
    with torch.no_grad():
        before = [b.clone() for b in buffers]
    ends = {}
    calls = [0]

    def run(inputs):
        calls[0] += 1
        replaying = calls[0] > 1
        owned = [(m, m.generator) for m in layers]
        replicas = {}
        for key, g in generators.items():
            replicas[key] = torch.Generator(device=g.device)
            replicas[key].set_state(starts[key])
        after = None
        try:
            if replaying:
                with torch.no_grad():
                    after = [b.clone() for b in buffers]
                    for b, value in zip(buffers, before):
                        b.copy_(value)
            for m, g in owned:
                m.generator = replicas[id(g)]
            out = inputs
            for module in modules:
                out = module(out)
            if not replaying:
                ends.update({key: r.get_state() for key, r in replicas.items()})
            return out
        finally:
            # Also runs when the replay is stopped early (checkpoint's early_stop).
            for m, g in owned:
                m.generator = g
            if after is not None:
                with torch.no_grad():
                    for b, value in zip(buffers, after):
                        b.copy_(value)

    out = checkpoint(run, x, use_reentrant=False)
    for key, g in generators.items():
        g.set_state(ends[key])
    return out


@register_module
class MLP(nn.Module):
    """A stack of fully connected layers; the last one has no activation.

    With every option at its default this is scikit-learn's MLP, and the
    layers (and ``state_dict`` keys) are those of earlier versions:
    ``layers = Sequential(Linear, act, Linear, act, ..., Linear)``.

    Parameters
    ----------
    n_inputs : int
        Input width (``n_features_in_``).
    hidden_layer_sizes : list of int
        Widths of the hidden layers, possibly empty.
    n_outputs : int
        Output width (raw scores: logits, or the regression link's input).
    activation : str or (str, dict), default="relu"
        Hidden activation, a name or composite option of ``ACTIVATIONS``;
        each hidden layer gets its own module, built with its width (so
        ``("prelu", {"per_channel": True})`` learns one slope per unit).
    weight_init : str or (str, dict), default="sklearn"
        Initialization used by :meth:`reset_parameters`, from
        :data:`~sklears_neural.core.init.WEIGHT_INITS`.
    dropout : float, default=0.0
        Drop probability after each hidden activation, in ``[0, 1)``; 0
        adds no layer. Masks come from the generator given to
        :func:`set_generator`.
    batch_norm : bool, default=False
        ``BatchNorm1d`` between each hidden linear and its activation.
        Training batches then need at least 2 rows.
    layer_norm : bool, default=False
        ``LayerNorm`` there instead; not both.
    residual : {"add", "concat", "gated"} or None, default=None
        Wrap every hidden layer ``f`` in a skip connection from its input
        ``x`` (``d_in`` wide) to its output (``f(x)`` is ``d_out`` wide):
        "add" gives ``x + f(x)`` (a bias-free projection of ``x`` when
        ``d_in != d_out``), ``(batch, d_out)``; "concat" gives ``[x, f(x)]``,
        ``(batch, d_in + d_out)``, so later layers take the wider input;
        "gated" gives ``g * f(x) + (1 - g) * P x``, ``g`` a learned sigmoid
        gate, ``(batch, d_out)``. See :class:`AddResidual`,
        :class:`ConcatResidual`, :class:`GatedResidual`.
    noise : str, (str, dict) or None, default=None
        A noise layer from :data:`~sklears_neural.core.noise.NOISES` on the
        input of every hidden layer (before its linear, and before the skip
        split with ``residual``), active in training only, e.g.
        ``("gaussian", {"std": 0.1, "schedule": "linear"})``.
    spectral_norm : bool, default=False
        Spectral normalization
        (``torch.nn.utils.parametrizations.spectral_norm``) on every
        ``nn.Linear``: main path, output, projections and gates.
    gradient_checkpointing : bool, default=False
        Recompute each hidden layer in the backward pass instead of storing
        its activations (``torch.utils.checkpoint``, ``use_reentrant=False``);
        in training with gradients only. Results are unchanged (see
        :func:`checkpoint_modules`).

    Shapes
    ------
    - input: ``(batch, n_inputs)``
    - output: ``(batch, n_outputs)``

    Raises
    ------
    ValueError
        On an unknown name, setting or out-of-range value; the message lists
        the choices.
    """

    def __init__(
        self,
        n_inputs,
        hidden_layer_sizes,
        n_outputs,
        activation="relu",
        *,
        weight_init="sklearn",
        dropout=0.0,
        batch_norm=False,
        layer_norm=False,
        residual=None,
        noise=None,
        spectral_norm=False,
        gradient_checkpointing=False,
    ):
        super().__init__()
        check_weight_init(weight_init, activation)
        if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0 <= dropout < 1:
            raise ValueError(f"MLP dropout must be a float in [0, 1), got {dropout!r}.")
        for name, flag in [("batch_norm", batch_norm), ("layer_norm", layer_norm),
                           ("spectral_norm", spectral_norm),
                           ("gradient_checkpointing", gradient_checkpointing)]:
            if not isinstance(flag, bool):
                raise ValueError(f"MLP {name} must be True or False, got {flag!r}.")
        if batch_norm and layer_norm:
            raise ValueError("MLP takes batch_norm or layer_norm, not both.")
        block_class = None if residual is None else RESIDUALS(residual)

        items, spans = [], []
        width = int(n_inputs)
        for size in hidden_layer_sizes:
            size = int(size)
            start = len(items)
            noise_layer = None if noise is None else NOISES.build(noise)
            body = [nn.Linear(width, size)]
            if batch_norm:
                body.append(nn.BatchNorm1d(size))
            if layer_norm:
                body.append(nn.LayerNorm(size))
            body.append(ACTIVATIONS.build(activation, width=size))
            if dropout > 0:
                body.append(Dropout(float(dropout)))
            if block_class is None:
                items.extend(([noise_layer] if noise_layer is not None else []) + body)
                width = size
            else:
                block = block_class(width, size, body, noise=noise_layer)
                items.append(block)
                width = block.n_outputs
            spans.append((start, len(items)))
        items.append(nn.Linear(width, int(n_outputs)))
        self.layers = nn.Sequential(*items)
        if spectral_norm:
            for m in list(self.modules()):
                if isinstance(m, nn.Linear):
                    nn.utils.parametrizations.spectral_norm(m)

        self.activation = activation
        self.weight_init = weight_init
        self.gradient_checkpointing = gradient_checkpointing
        # (start, stop) indices into ``layers`` of each hidden layer.
        self._hidden_spans = spans

    @property
    def linears(self):
        """The main-path ``nn.Linear`` layers, input to output.

        One per hidden layer plus the output layer, so ``len(hidden) + 1``
        (scikit-learn's ``coefs_``). With ``residual``, the projections and
        gates of the blocks are not included (they are
        ``block.projection`` / ``block.gate``), and with "concat" a layer's
        ``in_features`` counts the concatenated inputs. Under
        ``spectral_norm``, ``linear.weight`` is the normalized weight.
        """
        out = []
        for m in self.layers:
            if isinstance(m, ResidualBlock):
                out.append(m.linear)
            elif isinstance(m, nn.Linear):
                out.append(m)
        return out

    def reset_parameters(self, generator=None):
        """Draw every weight with ``weight_init`` from ``generator``.

        See :func:`~sklears_neural.core.init.initialize_`; with the default
        "sklearn" scheme this is scikit-learn's initialization, draw for draw.
        """
        initialize_(self, self.weight_init, activation=self.activation, generator=generator)

    def forward(self, x):
        if not (self.gradient_checkpointing and self.training and torch.is_grad_enabled()):
            return self.layers(x)
        layers = list(self.layers)
        for start, stop in self._hidden_spans:
            x = checkpoint_modules(layers[start:stop], x)
        return layers[-1](x)
