"""Convolutional networks for 1-D signals, 2-D images and 3-D volumes, from a short spec.

:class:`ConvNet` maps ``(batch, channels, *spatial)`` input to
``(batch, n_outputs)`` raw outputs through a stack of layers written in a
small language: a list whose items are short strings or plain dicts. The
same spec builds 1-, 2- or 3-D layers; the rank follows ``input_shape``.

The spec language
-----------------
A string item is a *head* (a layer type and an optional number) followed by
``-``-separated *options*::

    "conv32"                    32 filters, 3 wide, stride 1, "same" padding
    "conv64-k5-s2-p2-d1-g4"     kernel 5, stride 2, padding 2, dilation 1, 4 groups
    "conv16-k3x5"               a 3x5 kernel (one size per spatial dimension)
    "conv32-same" / "-valid"    padding "same" (stride 1 only) / 0
    "conv32-nobn-tanh"          no batch norm after it, tanh instead of the network's activation
    "conv32-linear"             no activation after it
    "sep64"                     depthwise-separable: a depthwise k x k conv, then a 1x1 conv to 64
    "dw" / "dw2"                depthwise conv (groups = channels), channel multiplier 1 / 2
    "res64" / "res64-s2"        residual block (see below), 64 channels, stride 1 / 2
    "maxpool2" / "avgpool3-s1-p1"   pooling: kernel, stride (default: the kernel), padding
    "adaptiveavg4" / "adaptivemax2x1"  adaptive pooling to a fixed output size
    "gap" / "gmp"               global average / max pooling (adaptive pooling to 1)
    "bn"                        batch norm over the channels (or features, once flat)
    "dropout0.25"               dropout with p = 0.25 (default 0.5)
    "flatten"                   (channels, *spatial) -> features
    "dense128" / "dense64-bn"   fully connected layer (flattens first if needed)
    "relu", "gelu", ...         a standalone activation, any name of ``ACTIVATIONS``

Strings ignore case; a type name ignores ``_`` ("max_pool2", "batch_norm")
and takes aliases: "separable" (sep), "depthwise" (dw), "residual" (res),
"batchnorm" (bn), "act" (activation). ``-`` only separates options, so
activations are written with ``_`` ("conv32-leaky_relu"). Options:

====== ============================ ===================================
option field                         layers
====== ============================ ===================================
k<n>   ``kernel_size``              conv, sep, dw, res
s<n>   ``stride``                   conv, sep, dw, res, maxpool, avgpool
p<n>   ``padding`` (also ``same``,  conv, sep, dw, maxpool, avgpool
       ``valid``, ``psame``)
d<n>   ``dilation``                 conv, sep, dw
g<n>   ``groups``                   conv
bn     ``batch_norm=True``          conv, sep, dw, res, dense
nobn   ``batch_norm=False``         conv, sep, dw, res, dense
<act>  ``activation`` (a name)     conv, sep, dw, res, dense
====== ============================ ===================================

``<n>`` is an int, or one int per spatial dimension joined by ``x``
("k3x5"). Padding "same" keeps the size (stride 1 only); a kernel of even
(dilated) width pads one more at the end than at the start, as torch does.
Without a padding, convolutions pad "same" at stride 1 and half the dilated
kernel otherwise ("conv32-s2" halves the size); pooling pads 0, and its
stride defaults to its kernel.

A dict item names the same fields, with ``"type"`` first; its activation
may carry settings::

    {"type": "conv", "channels": 32, "kernel_size": 3, "stride": 1,
     "padding": "same", "dilation": 1, "groups": 1}
    {"type": "dense", "units": 64, "activation": ["leaky_relu", {"negative_slope": 0.1}]}

:func:`parse_layers` turns either form into *normalized* dicts: canonical
type names, every field filled, sizes as an int (or a list of one int per
spatial dimension when they differ), padding ``"same"`` or ints, activations
in :meth:`~sklears_neural.core.resolve.Resolver.to_json` form. Normalized
dicts parse to themselves, and :func:`format_layers` writes them back as
short strings where one can say it all.

Activation and batch norm
-------------------------
Every conv, sep, dw, res and dense layer carries its own normalization and
activation: ``conv -> [batch norm] -> activation``. Their defaults are the
network's ``activation`` and, for the convolutional layers, its
``batch_norm`` (dense layers default to no batch norm; add "-bn"). A
convolution followed by batch norm has no bias (the norm's shift replaces
it). So ``["conv32", "conv32", "maxpool2", "gap"]`` is a complete network;
"bn" and activation items are for the stacks this convention does not
write (pre-activation orders, batch norm after pooling).

Residual blocks
---------------
``res<C>`` is ResNet's basic block (He et al., 2016)::

    y = act(body(x) + shortcut(x))
    body = conv(k, stride s) -> [bn] -> act -> conv(k, stride 1) -> [bn]

with "same"-style padding (the kernel must be odd) and a shortcut that is
the identity when the input has ``C`` channels and ``s == 1``, else a 1x1
conv with stride ``s`` (and batch norm). With a zero body (its last batch
norm's weight and bias at zero; without batch norm, its last conv's) the
block is ``act(x)``: the identity on the output of a ReLU.

Shapes are traced when a :class:`ConvNet` is built (analytically, no forward
pass): a group count that does not divide the channels, or a convolution or
pooling that would shrink a spatial size below 1, raises ``ValueError``
naming the layer's index and the numbers.

After the stack, the network flattens what is left (unless it is already
flat), applies its ``dropout``, and ends in an ``nn.Linear`` to
``n_outputs``: raw outputs, no output activation.
"""

import copy
import difflib
import math
import re
from torch import nn

from sklears_neural.core import checks
from sklears_neural.core.init import check_weight_init, initialize_
from sklears_neural.core.noise import Dropout
from sklears_neural.core.registry import register_module
from sklears_neural.core.resolve import ACTIVATIONS, Resolver

__all__ = [
    "ConvNet",
    "ResidualConvBlock",
    "LAYER_TYPES",
    "parse_layers",
    "format_layers",
    "default_layers",
]

# A field whose value the user must give, and those the network fills in.
_REQUIRED = object()
_NET_ACTIVATION = object()
_NET_BATCH_NORM = object()
# Padding "same" for stride 1, else half the (dilated) kernel.
_HALF_PADDING = object()

_CONV = {"kernel_size": 3, "stride": 1, "padding": _HALF_PADDING, "dilation": 1}
_FINISH = {"batch_norm": _NET_BATCH_NORM, "activation": _NET_ACTIVATION}
_POOL = {"kernel_size": 2, "stride": None, "padding": 0}  # stride None: the kernel

# Every layer type, its fields in the order of normalized dicts, and their defaults.
_FIELDS = {
    "conv": {"channels": _REQUIRED, **_CONV, "groups": 1, **_FINISH},
    "sep": {"channels": _REQUIRED, **_CONV, **_FINISH},
    "dw": {"multiplier": 1, **_CONV, **_FINISH},
    "res": {"channels": _REQUIRED, "kernel_size": 3, "stride": 1, **_FINISH},
    "maxpool": dict(_POOL),
    "avgpool": dict(_POOL),
    "adaptiveavg": {"output_size": 1},
    "adaptivemax": {"output_size": 1},
    "bn": {},
    "dropout": {"p": 0.5},
    "flatten": {},
    "dense": {"units": _REQUIRED, "batch_norm": False, "activation": _NET_ACTIVATION},
    "activation": {"activation": _REQUIRED},
}

_ALIASES = {
    "separable": "sep", "sepconv": "sep", "depthwise": "dw", "dwconv": "dw",
    "residual": "res", "batchnorm": "bn", "act": "activation",
    "maxpooling": "maxpool", "avgpooling": "avgpool",
    "adaptiveavgpool": "adaptiveavg", "adaptivemaxpool": "adaptivemax",
    "gap": "adaptiveavg", "gmp": "adaptivemax",
}
LAYER_TYPES = Resolver("layer type", {name: name for name in _FIELDS}, aliases=_ALIASES)
"""Layer type names of the spec language, with their aliases.

``gap`` and ``gmp`` are ``adaptiveavg`` / ``adaptivemax``, whose
``output_size`` defaults to 1 (global pooling).
"""

# What the number after a string head sets.
_HEAD_NUMBER = {
    "conv": "channels", "sep": "channels", "res": "channels", "dw": "multiplier",
    "maxpool": "kernel_size", "avgpool": "kernel_size",
    "adaptiveavg": "output_size", "adaptivemax": "output_size",
    "dropout": "p", "dense": "units",
}
_OPTION_LETTERS = {"k": "kernel_size", "s": "stride", "p": "padding", "d": "dilation",
                   "g": "groups"}
# Fields given by the head's number are not options too ("maxpool2-k3").
_STRING_OPTIONS = {
    kind: [letter for letter, field in _OPTION_LETTERS.items()
           if field in fields and _HEAD_NUMBER.get(kind) != field]
    for kind, fields in _FIELDS.items()
}
_SIZE = re.compile(r"\d+(?:x\d+)*")
_HEAD = re.compile(r"([a-z_]+?)(\d[\d.x]*)?")
# Float literals the string form writes and reads back ("0.25", "1.").
_FLOAT = re.compile(r"\d+(?:\.\d*)?")


def _where(index, item):
    """How errors name a layer: its index and (the start of) its item."""
    return f"layer {index} ({item!r:.80})"


# -- parsing -------------------------------------------------------------------------


def _unknown(what, name, valid, where, extra="", candidates=None):
    """Raise for an unknown name: list the ``valid`` ones, suggest the closest."""
    close = difflib.get_close_matches(str(name), candidates or valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown {what} {name!r} in {where}. Valid ones are: {', '.join(valid)}."
        f"{extra}{hint}"
    )


def _size_text(text, ndim, where, field):
    sizes = [int(part) for part in text.split("x")]
    if len(sizes) == 1:
        return sizes[0]
    if len(sizes) != ndim:
        raise ValueError(
            f"{where}: {field} {text!r} gives {len(sizes)} sizes for {ndim} spatial "
            f"dimension(s); give one size or {ndim}."
        )
    return sizes


def _parse_string(text, index, ndim):
    """A spec string -> a dict of the fields it sets (not yet normalized)."""
    where = _where(index, text)
    token = text.strip().lower()
    if ACTIVATIONS.knows(token):
        return {"type": "activation", "activation": token}
    head, *options = token.split("-")
    match = _HEAD.fullmatch(head)
    name, number = (match.group(1), match.group(2)) if match else (head, None)
    if not match or not LAYER_TYPES.knows(name):
        _unknown("layer type", name, [*LAYER_TYPES.names, "gap", "gmp"], where,
                 extra=" An activation name is a layer too: "
                       f"{', '.join(ACTIVATIONS.names)}.",
                 candidates=[*LAYER_TYPES.names, *_ALIASES, *ACTIVATIONS.names])
    kind = LAYER_TYPES.canonical(name)
    out = {"type": kind}
    if number is not None:
        field = _HEAD_NUMBER.get(kind)
        if field is None:
            raise ValueError(f"{where}: {kind!r} takes no number; write {kind!r}.")
        if field == "p":
            if not _FLOAT.fullmatch(number):
                raise ValueError(f"{where}: dropout needs a probability, like 'dropout0.25'.")
            out["p"] = float(number)
        elif not _SIZE.fullmatch(number):
            raise ValueError(f"{where}: {number!r} is not a {field}.")
        elif field in ("kernel_size", "output_size"):
            out[field] = _size_text(number, ndim, where, field)
        else:
            if "x" in number:
                raise ValueError(f"{where}: {field} is one int, got {number!r}.")
            out[field] = int(number)
    letters = _STRING_OPTIONS[kind]
    takes_act = "activation" in _FIELDS[kind] and kind != "activation"
    for option in options:
        field = _OPTION_LETTERS.get(option[:1])
        if option in ("same", "psame", "valid", "pvalid") and "p" in letters:
            out["padding"] = "same" if option.endswith("same") else 0
        elif option in ("bn", "nobn") and "batch_norm" in _FIELDS[kind]:
            out["batch_norm"] = option == "bn"
        elif takes_act and ACTIVATIONS.knows(option):
            out["activation"] = option
        elif option[:1] in letters and _SIZE.fullmatch(option[1:]):
            value = _size_text(option[1:], ndim, where, field)
            if field == "groups" and not isinstance(value, int):
                raise ValueError(f"{where}: {field} is one int, got {option[1:]!r}.")
            out[field] = value
        else:
            valid = [f"{letter}<n>" for letter in letters]
            if "p" in letters:
                valid += ["same", "valid"]
            if "batch_norm" in _FIELDS[kind]:
                valid += ["bn", "nobn"]
            if not valid:
                raise ValueError(f"{where}: {kind!r} takes no options, got {option!r}.")
            extra = (f" Or an activation name: {', '.join(ACTIVATIONS.names)}."
                     if takes_act else "")
            _unknown(f"{kind!r} option", option, valid, where, extra=extra,
                     candidates=valid + (ACTIVATIONS.names if takes_act else []))
    return out


def _check_size(where, name, value, ndim, low):
    """An int >= low, or a list of ``ndim`` such ints; collapsed to an int when all equal."""
    if isinstance(value, (list, tuple)):
        if len(value) != ndim:
            checks.fail(where, name, f"an int >= {low} or a list of {ndim} such ints",
                        value)
        sizes = [checks.check_int(where, name, v, low=low) for v in value]
        return sizes[0] if len(set(sizes)) == 1 else sizes
    return checks.check_int(where, name, value, low=low)


def _normalize(item, index, ndim, activation, batch_norm):
    where = _where(index, item)
    if isinstance(item, str):
        given = _parse_string(item, index, ndim)
    elif isinstance(item, dict):
        if "type" not in item:
            raise ValueError(
                f"{where} has no 'type' key; a dict layer names its type first, like "
                "{'type': 'conv', 'channels': 32}."
            )
        given = dict(item)
        try:
            given["type"] = LAYER_TYPES.canonical(given["type"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    else:
        raise ValueError(
            f"{where} must be a string like 'conv32' or a dict like "
            f"{{'type': 'conv', 'channels': 32}}, got {type(item).__name__}."
        )
    kind = given.pop("type")
    fields = _FIELDS[kind]
    unknown = [key for key in given if key not in fields]
    if unknown:
        if not fields:
            raise ValueError(f"{where}: {kind!r} takes no keys but 'type', got "
                             f"{unknown[0]!r}.")
        _unknown(f"{kind!r} key", unknown[0], list(fields), where)

    out = {"type": kind}
    # Padding last: its default and its checks read the kernel, stride and dilation.
    for field in sorted(fields, key=lambda f: f == "padding"):
        default = fields[field]
        value = given.get(field, default)
        if value is _REQUIRED:
            example = {"channels": f"{kind}32", "units": "dense64", "activation": "relu"}
            raise ValueError(
                f"{where}: {kind!r} needs {field!r}, like {example[field]!r} or "
                f"{{'type': {kind!r}, {field!r}: ...}}."
            )
        if value is _NET_ACTIVATION:
            value = activation
        elif value is _NET_BATCH_NORM:
            value = batch_norm
        if field in ("channels", "units", "multiplier", "groups"):
            value = checks.check_int(where, field, value, low=1)
        elif field in ("kernel_size", "dilation", "output_size"):
            value = _check_size(where, field, value, ndim, 1)
        elif field == "stride":
            if value is None:  # pooling: the kernel
                value = out["kernel_size"]
            value = _check_size(where, field, value, ndim, 1)
        elif field == "padding":
            if value is _HALF_PADDING:
                strides = _expand(out["stride"], ndim)
                if all(s == 1 for s in strides):
                    value = "same"
                else:
                    half = [d * (k - 1) // 2 for k, d in zip(
                        _expand(out["kernel_size"], ndim), _expand(out["dilation"], ndim))]
                    value = half[0] if len(set(half)) == 1 else half
            elif value == "valid":
                value = 0
            elif value == "same":
                if kind in ("maxpool", "avgpool"):
                    checks.fail(where, field, "an int >= 0 or a list of such ints", value)
                if any(s != 1 for s in _expand(out["stride"], ndim)):
                    raise ValueError(
                        f"{where}: padding 'same' needs stride 1, got stride "
                        f"{out['stride']}; give the padding as an int (e.g. 'p1') "
                        "or use stride 1 and pool."
                    )
            else:
                value = _check_size(where, field, value, ndim, 0)
        elif field == "p":
            value = checks.check_real(where, field, value, low=0, high=1, high_open=True)
        elif field == "batch_norm":
            value = checks.check_bool(where, field, value)
        elif field == "activation":
            value = _activation_json(value, where)
        out[field] = value
    out = {"type": kind, **{field: out[field] for field in fields}}
    if kind == "res" and any(k % 2 == 0 for k in _expand(out["kernel_size"], ndim)):
        raise ValueError(
            f"{where}: a residual block needs an odd kernel_size (its padding keeps "
            f"the size), got {out['kernel_size']}."
        )
    return out


def _activation_json(option, where):
    if option is None:
        option = "identity"
    try:
        canonical = ACTIVATIONS.to_json(option)
        ACTIVATIONS.build(option, width=1)  # settings checked now, not at forward
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return canonical


def _expand(value, ndim):
    return [value] * ndim if isinstance(value, int) else list(value)


def parse_layers(layers, *, ndim, activation="relu", batch_norm=True):
    """Normalize a layer spec: strings and dicts to complete plain dicts.

    See the module docstring for the language.

    Parameters
    ----------
    layers : list of (str or dict)
        The spec, e.g. ``["conv32", "maxpool2", {"type": "dense", "units": 64}]``.
    ndim : {1, 2, 3}
        Spatial dimensions of the input; checks per-dimension sizes ("k3x5").
    activation : str or (str, dict), default="relu"
        Activation of layers that give none, from
        :data:`~sklears_neural.core.resolve.ACTIVATIONS`.
    batch_norm : bool, default=True
        Batch norm on conv, sep, dw and res layers that say neither "bn"
        nor "nobn".

    Returns
    -------
    list of dict
        One JSON-able dict per item, ``"type"`` first and every field of
        the type filled; ``parse_layers`` of it returns it unchanged.

    Raises
    ------
    ValueError
        On an unknown type, option or key (the message names the layer's
        index, lists the valid ones and suggests the closest), a missing
        required field, or a value out of range.
    """
    ndim = checks.check_int("parse_layers", "ndim", ndim, low=1, high=3)
    batch_norm = checks.check_bool("parse_layers", "batch_norm", batch_norm)
    activation = _activation_json(activation, "parse_layers' activation")
    if isinstance(layers, (str, dict)) or not isinstance(layers, (list, tuple)):
        raise ValueError(
            f"layers must be a list of strings or dicts, like ['conv32', 'maxpool2'], "
            f"got {layers!r:.80}."
        )
    return [_normalize(item, i, ndim, activation, batch_norm) for i, item in enumerate(layers)]


def _size_string(value):
    return str(value) if isinstance(value, int) else "x".join(map(str, value))


def format_layers(layers, *, ndim, activation="relu", batch_norm=True):
    """Normalized dicts back to short strings, where a string can say it all.

    The inverse of :func:`parse_layers`: for any spec,
    ``parse_layers(format_layers(specs, ...), ...) == specs`` with the same
    ``ndim``, ``activation`` and ``batch_norm``. Fields equal to their
    default are left out; a layer whose activation carries settings stays a
    dict.

    Parameters
    ----------
    layers : list of (str or dict)
        Parsed first, so any spec is accepted.
    ndim, activation, batch_norm
        As in :func:`parse_layers`.

    Returns
    -------
    list of (str or dict)
    """
    specs = parse_layers(layers, ndim=ndim, activation=activation, batch_norm=batch_norm)
    default_act = _activation_json(activation, "format_layers' activation")
    out = []
    for spec in specs:
        kind = spec["type"]
        if kind == "activation":
            act = spec["activation"]
            out.append(act if isinstance(act, str) else copy.deepcopy(spec))
            continue
        # The values a string falls back to when it leaves a field out; the
        # default padding follows the kernel, stride and dilation, and a
        # pooling's stride its kernel.
        required = {f: spec[f] for f in ("channels", "units") if f in spec}
        bare = _normalize({"type": kind, **required}, 0, ndim, default_act, batch_norm)
        if "padding" in spec:
            geometry = {f: spec[f] for f in ("kernel_size", "stride", "dilation") if f in spec}
            bare["padding"] = _normalize({"type": kind, **required, **geometry}, 0, ndim,
                                         default_act, batch_norm)["padding"]
        if kind in ("maxpool", "avgpool"):
            bare["stride"] = spec["kernel_size"]
        number_field = _HEAD_NUMBER.get(kind)
        text = {"adaptiveavg": "gap", "adaptivemax": "gmp"}.get(kind, kind)
        if number_field is not None and (
            spec[number_field] != bare[number_field]
            or number_field in ("channels", "units", "kernel_size")
        ):
            value = spec[number_field]
            if number_field == "p":
                if not _FLOAT.fullmatch(repr(value)):
                    out.append(copy.deepcopy(spec))
                    continue
                text += repr(value)
            else:
                text += _size_string(value)
        parts = [text]
        expressible = True
        for field, value in spec.items():
            if field in ("type", number_field) or value == bare[field]:
                continue
            if field == "padding":
                parts.append("same" if value == "same" else "p" + _size_string(value))
            elif field in _OPTION_LETTERS.values():
                letter = next(k for k, f in _OPTION_LETTERS.items() if f == field)
                parts.append(letter + _size_string(value))
            elif field == "batch_norm":
                parts.append("bn" if value else "nobn")
            elif field == "activation" and isinstance(value, str):
                parts.append(value)
            else:
                expressible = False
        out.append("-".join(parts) if expressible else copy.deepcopy(spec))
    return out


# -- shapes and modules --------------------------------------------------------------


def _conv_out(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _padded_conv(spec, ndim, in_channels, out_channels, groups, bias):
    """``[conv]``, or ``[zero pad, conv]`` for a "same" padding that is not symmetric.

    Symmetric "same" padding is passed as ints, which exporters read
    everywhere. An even dilated kernel pads one more at the end, as torch's
    ``padding="same"`` does, but with an explicit pad: torch warns on every
    forward pass otherwise.
    """
    kernel = _expand(spec["kernel_size"], ndim)
    padding = spec["padding"]
    pad = None
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, _expand(spec["dilation"], ndim))]
        padding = [t // 2 for t in totals]
        if any(t % 2 for t in totals):
            # ConstantPadNd takes (left, right) pairs from the last dimension back.
            pad = [n for t in reversed(totals) for n in (t // 2, t - t // 2)]
            padding = 0
    conv = _conv(ndim, in_channels, out_channels, kernel, stride=spec["stride"],
                 padding=padding, dilation=spec["dilation"], groups=groups, bias=bias)
    if pad is None:
        return [conv]
    return [(nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)[ndim - 1](pad, 0.0), conv]


def _conv_shape(spec, shape, ndim, where):
    """Spatial output sizes of a convolution (or pooling) of ``spec`` on ``shape``."""
    spatial = shape[1:]
    kernel = _expand(spec["kernel_size"], ndim)
    stride = _expand(spec["stride"], ndim)
    dilation = _expand(spec.get("dilation", 1), ndim)
    if spec["padding"] == "same":
        return list(spatial)
    padding = _expand(spec["padding"], ndim)
    out = [_conv_out(n, k, s, p, d)
           for n, k, s, p, d in zip(spatial, kernel, stride, padding, dilation)]
    if min(out) < 1:
        dim = min(range(ndim), key=lambda i: out[i])
        raise ValueError(
            f"{where} shrinks spatial size {spatial[dim]} (dimension {dim}, input "
            f"shape {tuple(shape)}) to {out[dim]}: kernel_size={kernel[dim]}, "
            f"stride={stride[dim]}, padding={padding[dim]}, dilation={dilation[dim]} "
            "need a size of at least "
            f"{dilation[dim] * (kernel[dim] - 1) + 1 - 2 * padding[dim]}. Use a smaller "
            "kernel or stride, more padding, or fewer pooling layers."
        )
    return out


def _norm(ndim, channels):
    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[ndim - 1](channels)


def _conv(ndim, *args, **kwargs):
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d)[ndim - 1](*args, **kwargs)


def _finish(modules, spec, ndim, channels):
    """Append the layer's batch norm and activation (identity adds no module)."""
    if spec["batch_norm"]:
        modules.append(_norm(ndim, channels))
    if ACTIVATIONS.canonical(spec["activation"]) != "identity":
        modules.append(ACTIVATIONS.build(spec["activation"], width=channels))
    return nn.Sequential(*modules)


class ResidualConvBlock(nn.Module):
    """ResNet's basic block: ``y = act(body(x) + shortcut(x))``.

    ``body`` is conv (stride ``s``) -> [batch norm] -> act -> conv ->
    [batch norm]; ``shortcut`` is the identity when the input already has
    ``channels`` channels and ``s == 1``, else a 1x1 conv with stride ``s``
    (and batch norm).

    Parameters
    ----------
    ndim : {1, 2, 3}
        Spatial dimensions.
    in_channels : int
    channels : int
    kernel_size : int or list of int, default=3
        Odd, so that the padding ``(k - 1) / 2`` keeps the size.
    stride : int or list of int, default=1
    batch_norm : bool, default=True
    activation : str or (str, dict), default="relu"

    Shapes
    ------
    - input: ``(batch, in_channels, *spatial)``
    - output: ``(batch, channels, *ceil(spatial / stride))``
    """

    def __init__(self, ndim, in_channels, channels, kernel_size=3, stride=1, *,
                 batch_norm=True, activation="relu"):
        super().__init__()
        kernel = _expand(kernel_size, ndim)
        padding = [(k - 1) // 2 for k in kernel]
        bias = not batch_norm
        body = [_conv(ndim, in_channels, channels, kernel, stride=stride, padding=padding,
                      bias=bias)]
        if batch_norm:
            body.append(_norm(ndim, channels))
        body.append(ACTIVATIONS.build(activation, width=channels))
        body.append(_conv(ndim, channels, channels, kernel, padding=padding, bias=bias))
        if batch_norm:
            body.append(_norm(ndim, channels))
        self.body = nn.Sequential(*body)
        if in_channels == channels and all(s == 1 for s in _expand(stride, ndim)):
            self.shortcut = nn.Identity()
        else:
            shortcut = [_conv(ndim, in_channels, channels, 1, stride=stride, bias=bias)]
            if batch_norm:
                shortcut.append(_norm(ndim, channels))
            self.shortcut = nn.Sequential(*shortcut)
        self.activation = ACTIVATIONS.build(activation, width=channels)

    def forward(self, x):
        return self.activation(self.body(x) + self.shortcut(x))


def _build_layer(spec, shape, ndim, where, dropout):
    """The module of one normalized layer on input ``shape``, and its output shape.

    ``shape`` is ``(channels, *spatial)``, or ``(features,)`` once flat.
    """
    kind = spec["type"]
    flat = len(shape) == 1
    if flat and kind in ("conv", "sep", "dw", "res", "maxpool", "avgpool",
                         "adaptiveavg", "adaptivemax"):
        raise ValueError(
            f"{where} needs (channels, *spatial) input, but an earlier layer flattened "
            f"it to {tuple(shape)}: put convolutions and pooling before 'flatten' and "
            "'dense'."
        )
    channels = shape[0]
    if kind == "conv":
        groups = spec["groups"]
        if channels % groups or spec["channels"] % groups:
            raise ValueError(
                f"{where}: groups={groups} must divide both the input channels "
                f"({channels}) and the output channels ({spec['channels']})."
            )
        spatial = _conv_shape(spec, shape, ndim, where)
        modules = _padded_conv(spec, ndim, channels, spec["channels"], groups,
                               bias=not spec["batch_norm"])
        return _finish(modules, spec, ndim, spec["channels"]), [spec["channels"], *spatial]
    if kind in ("sep", "dw"):
        spatial = _conv_shape(spec, shape, ndim, where)
        out = spec["channels"] if kind == "sep" else channels * spec["multiplier"]
        depth_out = channels if kind == "sep" else out
        modules = _padded_conv(spec, ndim, channels, depth_out, channels,
                               bias=kind == "dw" and not spec["batch_norm"])
        if kind == "sep":
            modules.append(_conv(ndim, channels, out, 1, bias=not spec["batch_norm"]))
        return _finish(modules, spec, ndim, out), [out, *spatial]
    if kind == "res":
        stride = _expand(spec["stride"], ndim)
        spatial = [(n - 1) // s + 1 for n, s in zip(shape[1:], stride)]
        block = ResidualConvBlock(ndim, channels, spec["channels"], spec["kernel_size"],
                                  spec["stride"], batch_norm=spec["batch_norm"],
                                  activation=spec["activation"])
        return block, [spec["channels"], *spatial]
    if kind in ("maxpool", "avgpool"):
        kernel = _expand(spec["kernel_size"], ndim)
        padding = _expand(spec["padding"], ndim)
        if any(2 * p > k for p, k in zip(padding, kernel)):
            raise ValueError(
                f"{where}: pooling padding {spec['padding']} is more than half the "
                f"kernel_size {spec['kernel_size']}; torch pads at most k // 2."
            )
        spatial = _conv_shape(spec, shape, ndim, where)
        pools = {
            "maxpool": (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d),
            "avgpool": (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d),
        }
        pool = pools[kind][ndim - 1](kernel, stride=spec["stride"], padding=padding)
        return pool, [channels, *spatial]
    if kind in ("adaptiveavg", "adaptivemax"):
        pools = {
            "adaptiveavg": (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d),
            "adaptivemax": (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
        }
        size = _expand(spec["output_size"], ndim)
        return pools[kind][ndim - 1](size), [channels, *size]
    if kind == "bn":
        return (nn.BatchNorm1d(channels) if flat else _norm(ndim, channels)), list(shape)
    if kind == "dropout":
        return Dropout(spec["p"]), list(shape)
    if kind == "flatten":
        return nn.Flatten(), [math.prod(shape)]
    if kind == "dense":
        features = math.prod(shape)
        modules = [] if flat else [nn.Flatten()]
        if dropout > 0:
            modules.append(Dropout(dropout))
        modules.append(nn.Linear(features, spec["units"], bias=not spec["batch_norm"]))
        if spec["batch_norm"]:
            modules.append(nn.BatchNorm1d(spec["units"]))
        if ACTIVATIONS.canonical(spec["activation"]) != "identity":
            modules.append(ACTIVATIONS.build(spec["activation"], width=spec["units"]))
        return nn.Sequential(*modules), [spec["units"]]
    # A standalone activation; per-channel PReLU learns one slope per channel.
    return ACTIVATIONS.build(spec["activation"], width=channels), list(shape)


def default_layers(ndim, input_shape):
    """The default spec for inputs of shape ``input_shape``.

    Two stages of two 3-wide "same" convolutions (batch norm and the
    network's activation after each), each stage followed by 2-wide max
    pooling along the dimensions that are at least 4 long (so no size drops
    below 2 and tiny inputs such as ``(1, 4)`` or ``(1, 1)`` still work), then
    global average pooling. Widths are 32 then 64 channels for 1-D and 2-D
    input and 16 then 32 for 3-D, about 65k / 21k parameters.

    Parameters
    ----------
    ndim : {1, 2, 3}
        Spatial dimensions.
    input_shape : list of int
        ``[channels, *spatial]``, ``ndim + 1`` entries.

    Returns
    -------
    list of str
        E.g. ``["conv32", "conv32", "maxpool2", "conv64", "conv64", "maxpool2",
        "gap"]`` for 1x8x8 images.
    """
    ndim = checks.check_int("default_layers", "ndim", ndim, low=1, high=3)
    spatial = _input_shape(input_shape, "default_layers")[1:]
    if len(spatial) != ndim:
        raise ValueError(
            f"default_layers: input_shape {list(input_shape)} has {len(spatial)} spatial "
            f"dimension(s), not ndim={ndim}."
        )
    widths = (16, 32) if ndim == 3 else (32, 64)
    layers = []
    for width in widths:
        layers += [f"conv{width}", f"conv{width}"]
        kernel = [2 if n >= 4 else 1 for n in spatial]
        if max(kernel) > 1:
            layers.append("maxpool" + _size_string(kernel[0] if len(set(kernel)) == 1
                                                   else kernel))
            spatial = [n // k for n, k in zip(spatial, kernel)]
    return layers + ["gap"]


def _input_shape(input_shape, owner):
    if (
        isinstance(input_shape, (str, bytes))
        or not hasattr(input_shape, "__len__")
        or not 2 <= len(input_shape) <= 4
    ):
        raise ValueError(
            f"{owner}: input_shape must be [channels, *spatial] with 1 to 3 spatial "
            f"dimensions, like [1, 8, 8], got {input_shape!r:.80}."
        )
    return [checks.check_int(owner, "input_shape", n, low=1) for n in input_shape]


@register_module
class ConvNet(nn.Module):
    """A convolutional network: a stack of layers from a spec, then a linear output layer.

    Parameters
    ----------
    input_shape : list of int
        ``[channels, *spatial]`` of one sample, with 1 to 3 spatial
        dimensions: ``[1, 8, 8]`` for 8x8 grey images, ``[3, 64]`` for
        3-channel signals of length 64, ``[2, 6, 6, 6]`` for volumes. The
        rank picks 1-, 2- or 3-D convolutions, pooling and batch norm.
    n_outputs : int
        Width of the output (raw scores: logits, or regression values).
    layers : list of (str or dict) or None, default=None
        The spec (see the module docstring); ``None`` uses
        :func:`default_layers`.
    activation : str or (str, dict), default="relu"
        Activation after every conv, sep, dw, res and dense layer that
        names none, from :data:`~sklears_neural.core.resolve.ACTIVATIONS`.
    dropout : float, default=0.0
        Drop probability on the input of every dense layer and of the
        output layer, in ``[0, 1)``; 0 adds none. Masks come from the
        generator given to :func:`~sklears_neural.core.noise.set_generator`.
    batch_norm : bool, default=True
        Batch norm after every conv, sep, dw and res layer that says
        neither "bn" nor "nobn". Training batches then need more than one
        value per channel (a batch of one 1x1 input fails).
    weight_init : str or (str, dict), default="he_uniform"
        Initialization of every convolution and linear layer, from
        :data:`~sklears_neural.core.init.WEIGHT_INITS`, drawn at
        construction (from torch's global generator) and by
        :meth:`reset_parameters`.

    Attributes
    ----------
    features : nn.Sequential
        One module per item of the spec, in order.
    head : nn.Sequential
        ``[nn.Flatten] -> [Dropout] -> nn.Linear(n_features, n_outputs)``.

    Shapes
    ------
    - input: ``(batch, *input_shape)``
    - output: ``(batch, n_outputs)``

    Raises
    ------
    ValueError
        On a bad spec or argument, or a layer that does not fit its input
        (groups, a size shrinking below 1); the message names the layer's
        index and the numbers.

    Examples
    --------
    >>> import torch
    >>> from sklears_neural.nn.conv import ConvNet
    >>> net = ConvNet([1, 8, 8], 10, ["conv16", "maxpool2", "res32-s2", "gap"])
    >>> net.output_shapes
    [(16, 8, 8), (16, 4, 4), (32, 2, 2), (32, 1, 1)]
    >>> net(torch.zeros(5, 1, 8, 8)).shape
    torch.Size([5, 10])
    """

    def __init__(
        self,
        input_shape,
        n_outputs,
        layers=None,
        activation="relu",
        *,
        dropout=0.0,
        batch_norm=True,
        weight_init="he_uniform",
    ):
        super().__init__()
        shape = _input_shape(input_shape, "ConvNet")
        ndim = len(shape) - 1
        n_outputs = checks.check_int("ConvNet", "n_outputs", n_outputs, low=1)
        dropout = checks.check_real("ConvNet", "dropout", dropout, low=0, high=1,
                                    high_open=True)
        batch_norm = checks.check_bool("ConvNet", "batch_norm", batch_norm)
        check_weight_init(weight_init, activation)
        if layers is None:
            layers = default_layers(ndim, shape)
        specs = parse_layers(layers, ndim=ndim, activation=activation, batch_norm=batch_norm)

        modules, shapes = [], []
        current = shape
        for index, spec in enumerate(specs):
            module, current = _build_layer(spec, current, ndim, _where(index, layers[index]),
                                           dropout)
            modules.append(module)
            shapes.append(tuple(current))
        self.features = nn.Sequential(*modules)
        head = [] if len(current) == 1 else [nn.Flatten()]
        if dropout > 0:
            head.append(Dropout(dropout))
        head.append(nn.Linear(math.prod(current), n_outputs))
        self.head = nn.Sequential(*head)

        self.input_shape = tuple(shape)
        self.n_outputs = n_outputs
        self.activation = activation
        self.weight_init = weight_init
        self._specs = specs
        self._shapes = shapes
        self.reset_parameters()

    @property
    def layer_specs(self):
        """The normalized spec: one complete dict per layer (a copy)."""
        return copy.deepcopy(self._specs)

    @property
    def output_shapes(self):
        """Output shape of each layer for one sample: ``(channels, *spatial)`` or ``(features,)``."""
        return list(self._shapes)

    @property
    def output_layer(self):
        """The final ``nn.Linear``."""
        return self.head[-1]

    def reset_parameters(self, generator=None):
        """Draw every weight with ``weight_init`` from ``generator``.

        Biases start at zero, batch norms at weight 1 and bias 0; see
        :func:`~sklears_neural.core.init.initialize_`.

        Parameters
        ----------
        generator : torch.Generator or None, default=None
            ``None`` draws from torch's global generator.
        """
        initialize_(self, self.weight_init, activation=self.activation, generator=generator)

    def forward(self, x):
        if x.dim() != len(self.input_shape) + 1:
            raise ValueError(
                f"ConvNet expects input of shape (batch, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}."
            )
        return self.head(self.features(x))
