"""Weight initialization schemes by name, drawn from a caller's generator.

:data:`WEIGHT_INITS` maps names to initializers and :func:`initialize_`
applies one to every ``nn.Linear`` / convolution of a module. Every draw comes
from the ``generator`` passed in (torch's ``nn.init`` functions take it), so
an estimator seeded by ``random_state`` gets the same weights on every fit
and never advances the caller's global random stream.

Gains
-----
``he_*`` and ``xavier_*`` scale by a gain that follows the activation the
layer feeds (``gain=None``, the default), as ``torch.nn.init.calculate_gain``
recommends; pass ``gain=<float>`` to override it:

=========================================== ==============================
activation                                  gain
=========================================== ==============================
identity, logistic, selu                    1 (SELU: LeCun's self-normalizing
                                            setting, not torch's 3/4)
tanh                                        5/3
relu, elu, gelu, silu, mish, softplus       sqrt(2) (the ReLU-like ones
                                            share ReLU's gain)
leaky_relu, prelu                           sqrt(2 / (1 + slope^2)), slope =
                                            ``negative_slope`` / ``init``
=========================================== ==============================

So ``he_normal`` after ReLU has std ``sqrt(2 / fan_in)`` (He et al., 2015)
and ``xavier_uniform`` after tanh has bound ``5/3 * sqrt(6 / (fan_in +
fan_out))`` (torch's advice). ``lecun_*``, ``orthogonal`` and
``truncated_normal`` default to gain 1 whatever the activation;
``variance_scaling`` takes Keras' ``scale`` instead.

Normal draws of ``he_normal``, ``xavier_normal`` and ``lecun_normal`` are
plain (untruncated) normals, as in torch; Keras' truncated variants are
``("variance_scaling", {"scale": 2.0, "distribution": "truncated_normal"})``
and so on.
"""

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from sklears_neural.core.resolve import ACTIVATIONS, Resolver, split_option

__all__ = [
    "WEIGHT_INITS",
    "activation_gain",
    "check_weight_init",
    "fans",
    "initialize_",
]

# Keras: std of a standard normal truncated to [-2, 2], so the truncated
# draws end with the variance asked for.
_TRUNCATED_STD = 0.87962566103423978
_FAN_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")


def fans(tensor):
    """``(fan_in, fan_out)`` of a weight of shape ``(out, in, *kernel)``.

    As torch: a convolution kernel counts ``in * prod(kernel)`` inputs and
    ``out * prod(kernel)`` outputs per unit.
    """
    if tensor.ndim < 2:
        raise ValueError(
            f"Fans need a weight with at least 2 dimensions, got shape {tuple(tensor.shape)}."
        )
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def activation_gain(activation):
    """The gain of ``he_*`` and ``xavier_*`` for a layer feeding ``activation``.

    Parameters
    ----------
    activation : str or (str, dict)
        A name or composite option of
        :data:`~sklears_neural.core.resolve.ACTIVATIONS`.

    Returns
    -------
    float
        See the table in the module docstring.
    """
    name = ACTIVATIONS.canonical(activation)
    _, settings = split_option(activation)
    if name in ("identity", "logistic", "selu"):
        return 1.0
    if name == "tanh":
        return 5.0 / 3.0
    if name in ("leaky_relu", "prelu"):
        slope = settings.get("negative_slope" if name == "leaky_relu" else "init",
                             0.01 if name == "leaky_relu" else 0.25)
        return math.sqrt(2.0 / (1.0 + float(slope) ** 2))
    return math.sqrt(2.0)


def _gain(gain, activation, default=None):
    if gain is not None:
        return float(gain)
    return activation_gain(activation) if default is None else default


def _check_mode(mode, allowed):
    if mode not in allowed:
        raise ValueError(
            f"Unknown fan mode {mode!r}. Valid modes are: {', '.join(allowed)}."
        )


def _fan(mode, fan_in, fan_out):
    _check_mode(mode, _FAN_MODES)
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]


# Initializers: ``fn(tensor, *, fan_in, fan_out, generator, activation, **settings)``,
# in place, no return value. ``fan_in``/``fan_out`` are those of the layer's
# weight (also when ``tensor`` is its bias, for "sklearn").


def xavier_uniform_(tensor, *, fan_in, fan_out, generator, activation, gain=None):
    """Glorot uniform: ``U(-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    bound = _gain(gain, activation) * math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(tensor, -bound, bound, generator=generator)


def xavier_normal_(tensor, *, fan_in, fan_out, generator, activation, gain=None):
    """Glorot normal: ``N(0, s^2)``, ``s = gain * sqrt(2 / (fan_in + fan_out))``."""
    std = _gain(gain, activation) * math.sqrt(2.0 / (fan_in + fan_out))
    nn.init.normal_(tensor, 0.0, std, generator=generator)


def he_uniform_(tensor, *, fan_in, fan_out, generator, activation, mode="fan_in",
                gain=None):
    """He (Kaiming) uniform: ``U(-b, b)``, ``b = gain * sqrt(3 / fan)``."""
    _check_mode(mode, _FAN_MODES[:2])
    bound = _gain(gain, activation) * math.sqrt(3.0 / _fan(mode, fan_in, fan_out))
    nn.init.uniform_(tensor, -bound, bound, generator=generator)


def he_normal_(tensor, *, fan_in, fan_out, generator, activation, mode="fan_in",
               gain=None):
    """He (Kaiming) normal: ``N(0, s^2)``, ``s = gain / sqrt(fan)``."""
    _check_mode(mode, _FAN_MODES[:2])
    std = _gain(gain, activation) / math.sqrt(_fan(mode, fan_in, fan_out))
    nn.init.normal_(tensor, 0.0, std, generator=generator)


def lecun_uniform_(tensor, *, fan_in, fan_out, generator, activation, gain=1.0):
    """LeCun uniform: ``U(-b, b)``, ``b = gain * sqrt(3 / fan_in)``."""
    bound = float(gain) * math.sqrt(3.0 / fan_in)
    nn.init.uniform_(tensor, -bound, bound, generator=generator)


def lecun_normal_(tensor, *, fan_in, fan_out, generator, activation, gain=1.0):
    """LeCun normal: ``N(0, s^2)``, ``s = gain / sqrt(fan_in)``."""
    nn.init.normal_(tensor, 0.0, float(gain) / math.sqrt(fan_in), generator=generator)


def orthogonal_(tensor, *, fan_in, fan_out, generator, activation, gain=1.0):
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al., 2013), via torch."""
    nn.init.orthogonal_(tensor, gain=float(gain), generator=generator)


def truncated_normal_(tensor, *, fan_in, fan_out, generator, activation, mean=0.0,
                      std=0.05):
    """``N(mean, std^2)`` redrawn outside ``mean +- 2 std`` (Keras' defaults)."""
    mean, std = float(mean), float(std)
    nn.init.trunc_normal_(tensor, mean, std, mean - 2.0 * std, mean + 2.0 * std,
                          generator=generator)


def variance_scaling_(tensor, *, fan_in, fan_out, generator, activation, scale=1.0,
                      mode="fan_in", distribution="truncated_normal"):
    """Keras' ``VarianceScaling``: variance ``scale / n``, ``n`` the fan of ``mode``.

    "truncated_normal" draws ``N(0, s^2)`` truncated to ``+-2 s`` with
    ``s = sqrt(scale / n) / 0.8796...`` (so the draws have variance
    ``scale / n``); "normal" uses ``s = sqrt(scale / n)``; "uniform" draws
    ``U(-b, b)``, ``b = sqrt(3 * scale / n)``. "untruncated_normal" is
    accepted for "normal", as in Keras.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
        raise ValueError(f"variance_scaling 'scale' must be a float > 0, got {scale!r}.")
    if distribution == "untruncated_normal":
        distribution = "normal"
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(
            f"Unknown variance_scaling distribution {distribution!r}. Valid names "
            f"are: {', '.join(_DISTRIBUTIONS)}."
        )
    variance = float(scale) / max(1.0, _fan(mode, fan_in, fan_out))
    if distribution == "uniform":
        bound = math.sqrt(3.0 * variance)
        nn.init.uniform_(tensor, -bound, bound, generator=generator)
    elif distribution == "normal":
        nn.init.normal_(tensor, 0.0, math.sqrt(variance), generator=generator)
    else:
        std = math.sqrt(variance) / _TRUNCATED_STD
        nn.init.trunc_normal_(tensor, 0.0, std, -2.0 * std, 2.0 * std, generator=generator)


def sklearn_(tensor, *, fan_in, fan_out, generator, activation, factor=None):
    """scikit-learn's MLP scheme: ``U(-b, b)``, ``b = sqrt(factor / (fan_in + fan_out))``.

    ``factor`` defaults to 2 for a logistic activation and 6 otherwise, as
    in ``sklearn.neural_network.MLPClassifier._init_coef``; the same bound
    (from the weight's fans) is used for the bias.
    """
    if factor is None:
        factor = 2.0 if ACTIVATIONS.canonical(activation) == "logistic" else 6.0
    bound = math.sqrt(float(factor) / (fan_in + fan_out))
    nn.init.uniform_(tensor, -bound, bound, generator=generator)


WEIGHT_INITS = Resolver(
    "weight_init",
    {
        "xavier_uniform": xavier_uniform_,
        "xavier_normal": xavier_normal_,
        "he_uniform": he_uniform_,
        "he_normal": he_normal_,
        "lecun_uniform": lecun_uniform_,
        "lecun_normal": lecun_normal_,
        "orthogonal": orthogonal_,
        "truncated_normal": truncated_normal_,
        "variance_scaling": variance_scaling_,
        "sklearn": sklearn_,
    },
    aliases={
        "glorot_uniform": "xavier_uniform",
        "glorot_normal": "xavier_normal",
        "kaiming_uniform": "he_uniform",
        "kaiming_normal": "he_normal",
        "scikit-learn": "sklearn",
    },
)
"""Weight initializers by name, with settings: ``("he_normal", {"mode": "fan_out"})``.

=================== ============================================= ==========================
name (aliases)      draw                                          settings
=================== ============================================= ==========================
xavier_uniform      ``U(+-gain * sqrt(6 / (fan_in + fan_out)))``  gain=None (activation's)
(glorot_uniform)
xavier_normal       ``N(0, gain^2 * 2 / (fan_in + fan_out))``     gain=None
(glorot_normal)
he_uniform          ``U(+-gain * sqrt(3 / fan))``                 mode="fan_in", gain=None
(kaiming_uniform)
he_normal           ``N(0, gain^2 / fan)``                        mode="fan_in", gain=None
(kaiming_normal)
lecun_uniform       ``U(+-gain * sqrt(3 / fan_in))``              gain=1.0
lecun_normal        ``N(0, gain^2 / fan_in)``                     gain=1.0
orthogonal          ``gain * Q``, ``Q`` (semi-)orthogonal          gain=1.0
truncated_normal    ``N(mean, std^2)`` within ``mean +- 2 std``    mean=0.0, std=0.05
variance_scaling    Keras' ``VarianceScaling``                    scale=1.0, mode="fan_in",
                                                                  distribution=
                                                                  "truncated_normal"
sklearn             ``U(+-sqrt(factor / (fan_in + fan_out)))``,   factor=None (2 logistic,
(scikit-learn)      weights and biases                            else 6)
=================== ============================================= ==========================

``mode`` is "fan_in" or "fan_out" ("fan_avg" too for variance_scaling).
Each entry is called as ``fn(tensor, fan_in=, fan_out=, generator=,
activation=, **settings)``; use :func:`initialize_` to apply one to a module.
"""

# Schemes that also draw the biases; the others set them to zero.
_DRAWS_BIASES = frozenset({"sklearn"})


def _initialized_layers(module):
    return [
        m for m in module.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]


def _weight_of(layer):
    """The weight tensor to write: the original one under a parametrization."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def check_weight_init(option, activation="relu"):
    """Raise ``ValueError`` now if ``option`` is not a usable initializer.

    Runs it once on a small throwaway tensor, so an unknown name, an unknown
    setting or a bad setting value is reported before any model is built.

    Returns
    -------
    str
        The canonical name.
    """
    name = WEIGHT_INITS.canonical(option)
    probe = torch.empty(3, 2)
    WEIGHT_INITS.build(option, tensor=probe, fan_in=2, fan_out=3,
                       generator=torch.Generator().manual_seed(0), activation=activation)
    return name


@torch.no_grad()
def initialize_(module, scheme="sklearn", *, activation="relu", generator):
    """Re-initialize every ``nn.Linear`` and convolution in ``module``, in place.

    Weights are drawn with ``scheme``; biases are set to zero, except with
    "sklearn", which draws them as scikit-learn does (same bound as the
    weights, weight then bias, layer by layer). Layers are visited in
    ``module.modules()`` order, so a fixed seed always gives the same
    weights. Under spectral normalization the original weight is drawn and
    the power-iteration vectors ``u``, ``v`` are redrawn from ``generator``
    too (torch draws them from the global generator). Normalization layers
    and PReLU are reset to their (deterministic) defaults.

    Parameters
    ----------
    module : torch.nn.Module
    scheme : str or (str, dict), default="sklearn"
        A name or composite option of :data:`WEIGHT_INITS`.
    activation : str or (str, dict), default="relu"
        The hidden activation: sets the default gain (see the module
        docstring) and scikit-learn's factor.
    generator : torch.Generator or None
        Source of every draw; ``None`` uses torch's default generator, as
        ``torch.nn.init`` does.

    Returns
    -------
    module : torch.nn.Module

    Raises
    ------
    ValueError
        If ``scheme`` or one of its settings is unknown or invalid.
    """
    name = WEIGHT_INITS.canonical(scheme)
    for layer in _initialized_layers(module):
        weight = _weight_of(layer)
        fan_in, fan_out = fans(weight)
        context = dict(fan_in=fan_in, fan_out=fan_out, generator=generator,
                       activation=activation)
        WEIGHT_INITS.build(scheme, tensor=weight, **context)
        if layer.bias is not None:
            if name in _DRAWS_BIASES:
                WEIGHT_INITS.build(scheme, tensor=layer.bias, **context)
            else:
                layer.bias.zero_()
        if parametrize.is_parametrized(layer, "weight"):
            for p in layer.parametrizations.weight:
                if hasattr(p, "_u") and hasattr(p, "_v"):
                    _reset_spectral_norm(p, weight, generator)
    for m in module.modules():
        if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                          nn.PReLU)):
            m.reset_parameters()
    return module


def _reset_spectral_norm(parametrization, weight, generator, n_iterations=15):
    """Redraw spectral norm's ``u``, ``v`` from ``generator``, then iterate as torch does."""
    matrix = (
        parametrization._reshape_weight_to_matrix(weight)
        if hasattr(parametrization, "_reshape_weight_to_matrix")
        else weight.flatten(1)
    )
    eps = getattr(parametrization, "eps", 1e-12)
    u, v = parametrization._u, parametrization._v
    nn.init.normal_(u, generator=generator)
    nn.init.normal_(v, generator=generator)
    u.copy_(nn.functional.normalize(u, dim=0, eps=eps))
    v.copy_(nn.functional.normalize(v, dim=0, eps=eps))
    for _ in range(n_iterations):
        u.copy_(nn.functional.normalize(matrix @ v, dim=0, eps=eps))
        v.copy_(nn.functional.normalize(matrix.mH @ u, dim=0, eps=eps))
