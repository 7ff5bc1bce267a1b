"""Names to torch objects: activations, solvers, precisions, devices.

Every option a user picks by name goes through a :class:`Resolver`, so all of
them normalize the same way (case, ``-`` and ``_`` ignored) and fail the same
way: a ``ValueError`` that lists the sorted choices and suggests the closest.
The tables are meant to grow (more activations, optimizers, schedules,
initializers); an estimator's ``_parameter_constraints`` reads them through
:class:`~sklears_neural.core._compat.ResolvableName`, so a new entry is valid
everywhere at once.
"""

import difflib
import inspect

import torch
from torch import nn

__all__ = [
    "Resolver",
    "ACTIVATIONS",
    "PRECISIONS",
    "SUPPORTED_DEVICE_TYPES",
    "resolve_device",
]


def _normalize(name):
    return name.strip().lower().replace("-", "").replace("_", "")


def split_option(value):
    """``"name"``, ``("name", {params})`` or ``{"name": ..., **params}`` -> (name, params).

    Composite options carry their own settings, e.g.
    ``activation=("leaky_relu", {"negative_slope": 0.2})`` or
    ``learning_rate={"name": "step", "step_size": 10}``.

    Returns
    -------
    name : str or None
        ``None`` when ``value`` has none of the three shapes.
    params : dict
    """
    if isinstance(value, str):
        return value, {}
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], dict)
    ):
        return value[0], dict(value[1])
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        params = dict(value)
        return params.pop("name"), params
    return None, {}


class Resolver:
    """Map user-facing names to objects.

    Parameters
    ----------
    kind : str
        What the names stand for, used in error messages ("activation").
    table : dict of str to object
        Canonical name to object (often a factory).
    aliases : dict of str to str, default=None
        Extra spellings mapped to canonical names ("sigmoid" -> "logistic").
    """

    def __init__(self, kind, table, aliases=None):
        self.kind = kind
        self.table = dict(table)
        self._lookup = {_normalize(name): name for name in self.table}
        for alias, target in (aliases or {}).items():
            self._lookup[_normalize(alias)] = target

    @property
    def names(self):
        """Sorted canonical names."""
        return sorted(self.table)

    def knows(self, name):
        """Whether ``name`` (a string or a composite option) names an entry."""
        name, _ = split_option(name)
        return name is not None and _normalize(name) in self._lookup

    def canonical(self, name):
        """The canonical spelling of ``name`` (a string or a composite option).

        Raises
        ------
        ValueError
            If ``name`` is unknown; the message lists every valid name.
        """
        name, _ = split_option(name)
        if name is None or not self.knows(name):
            close = difflib.get_close_matches(
                _normalize(str(name)), list(self._lookup), n=1
            )
            hint = f" Did you mean {self._lookup[close[0]]!r}?" if close else ""
            raise ValueError(
                f"Unknown {self.kind} {name!r}. Valid names are: "
                f"{', '.join(self.names)}.{hint}"
            )
        return self._lookup[_normalize(name)]

    def to_json(self, option):
        """``option`` in canonical, JSON-able form: a name or ``[name, settings]``.

        Used to store options in a :class:`~sklears_neural.core.layers.ModuleSpec`.
        """
        _, settings = split_option(option)
        canonical = self.canonical(option)
        return [canonical, settings] if settings else canonical

    def __call__(self, name):
        """The object registered under ``name``."""
        return self.table[self.canonical(name)]

    def build(self, option, **context):
        """Call the factory named by ``option`` with its settings.

        Parameters
        ----------
        option : str, (str, dict) or dict with a "name" key
            The user's value.
        **context
            Arguments the caller supplies (e.g. ``width`` of a layer);
            the option's own settings are passed after them.

        Raises
        ------
        ValueError
            If the name is unknown, or a setting is not one the factory
            takes (the message lists those it takes).
        """
        canonical = self.canonical(option)
        _, params = split_option(option)
        factory = self.table[canonical]
        accepted = [
            p for p in inspect.signature(factory).parameters if p not in context
        ]
        unknown = sorted(set(params) - set(accepted))
        if unknown and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD
            for p in inspect.signature(factory).parameters.values()
        ):
            raise ValueError(
                f"Unknown setting(s) {unknown} for {self.kind} {canonical!r}. "
                f"It takes: {', '.join(sorted(accepted)) or 'no settings'}."
            )
        return factory(**context, **params)


# Activation factories: ``factory(width=None, **settings) -> nn.Module``.
# Every one takes the layer ``width`` (the number of units the activation
# follows) so callers can build any of them the same way,
# ``ACTIVATIONS.build(option, width=n)``; only per-channel PReLU uses it.
# Settings are explicit keywords, so a misspelt one is reported by
# ``Resolver.build`` with the list of those the activation takes.


def _identity(width=None):
    return nn.Identity()


def _logistic(width=None):
    return nn.Sigmoid()


def _tanh(width=None):
    return nn.Tanh()


def _relu(width=None):
    return nn.ReLU()


def _leaky_relu(width=None, negative_slope=0.01):
    return nn.LeakyReLU(negative_slope=_real("leaky_relu", "negative_slope", negative_slope))


def _prelu(width=None, per_channel=False, init=0.25):
    """PReLU, ``max(0, x) + a * min(0, x)`` with a learnable slope ``a``.

    ``per_channel=False`` learns one slope shared by the layer;
    ``per_channel=True`` learns one per unit, which needs ``width``.
    """
    init = _real("prelu", "init", init)
    if not isinstance(per_channel, bool):
        raise ValueError(
            f"The prelu setting 'per_channel' must be True or False, got {per_channel!r}."
        )
    if not per_channel:
        return nn.PReLU(num_parameters=1, init=init)
    if width is None or int(width) < 1:
        raise ValueError(
            "activation ('prelu', {'per_channel': True}) learns one slope per unit "
            "and needs the layer width: build it with "
            "ACTIVATIONS.build(option, width=n_units)."
        )
    return nn.PReLU(num_parameters=int(width), init=init)


def _elu(width=None, alpha=1.0):
    return nn.ELU(alpha=_real("elu", "alpha", alpha))


def _selu(width=None):
    return nn.SELU()


def _gelu(width=None, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(
            f"The gelu setting 'approximate' must be one of 'none', 'tanh'; "
            f"got {approximate!r}."
        )
    return nn.GELU(approximate=approximate)


def _silu(width=None):
    return nn.SiLU()


def _mish(width=None):
    return nn.Mish()


def _softplus(width=None, beta=1.0, threshold=20.0):
    return nn.Softplus(
        beta=_real("softplus", "beta", beta),
        threshold=_real("softplus", "threshold", threshold),
    )


def _real(activation, setting, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"The {activation} setting {setting!r} must be a real number, got {value!r}."
        )
    return float(value)


ACTIVATIONS = Resolver(
    "activation",
    {
        "identity": _identity,
        "logistic": _logistic,
        "tanh": _tanh,
        "relu": _relu,
        "leaky_relu": _leaky_relu,
        "prelu": _prelu,
        "elu": _elu,
        "selu": _selu,
        "gelu": _gelu,
        "silu": _silu,
        "mish": _mish,
        "softplus": _softplus,
    },
    aliases={"linear": "identity", "sigmoid": "logistic", "swish": "silu"},
)
"""Hidden activations by name.

Each entry is a factory ``factory(width=None, **settings)`` returning a
fresh torch module; build one with ``ACTIVATIONS.build(option, width=n)``,
where ``option`` is a name or a composite ``(name, {settings})``:

============ ======================== =========================================
name         settings                 module
============ ======================== =========================================
identity     -                        ``nn.Identity`` (alias ``linear``)
logistic     -                        ``nn.Sigmoid`` (alias ``sigmoid``)
tanh         -                        ``nn.Tanh``
relu         -                        ``nn.ReLU``
leaky_relu   negative_slope=0.01      ``nn.LeakyReLU``
prelu        per_channel=False,       ``nn.PReLU``: one learnable slope, or one
             init=0.25                per unit (needs ``width``)
elu          alpha=1.0                ``nn.ELU``
selu         -                        ``nn.SELU``
gelu         approximate="none"       ``nn.GELU`` ("none" or "tanh")
silu         -                        ``nn.SiLU`` (alias ``swish``)
mish         -                        ``nn.Mish``
softplus     beta=1.0, threshold=20.0 ``nn.Softplus``
============ ======================== =========================================
"""

PRECISIONS = Resolver(
    "precision",
    {"float32": torch.float32, "float64": torch.float64},
    aliases={"fp32": "float32", "fp64": "float64", "double": "float64"},
)


#: Device types ``resolve_device`` accepts.
SUPPORTED_DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device):
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` into a device.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` picks CUDA when available, else CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the string is not a device torch knows, or names an accelerator
        this machine does not have.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"Unknown device {device!r}. Use 'auto', 'cpu', 'cuda' or "
                f"'cuda:<index>'."
            ) from exc
    if resolved.type not in SUPPORTED_DEVICE_TYPES:
        # torch.device accepts "meta" (tensors without data), "xla" and other
        # backends this library does not train on: refuse before fit starts.
        raise ValueError(
            f"device={device!r} is not supported: sklears-neural trains on "
            f"{', '.join(repr(t) for t in SUPPORTED_DEVICE_TYPES)} devices. Use "
            "device='cpu', or device='auto' to pick CUDA when it is present."
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            "machine. Use device='cpu', or device='auto' to pick CUDA only when "
            "it is present."
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device={device!r} was requested but MPS is not available on this "
            "machine. Use device='cpu' or device='auto'."
        )
    return resolved
