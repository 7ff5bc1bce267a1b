"""Noise injection and dropout that draw from a generator the caller owns.

torch's own ``nn.Dropout`` draws its masks from the global random generator,
so two fits with the same ``random_state`` would differ, and every fit would
advance the caller's stream. The layers here draw from ``layer.generator``, a
``torch.Generator`` the estimator hands out with :func:`set_generator`
(normally the one it seeds from ``random_state``); only when none was set do
they fall back to torch's default generator, like torch's layers.

Every layer is the identity in evaluation mode (``module.eval()``) and when
its current strength is 0. The strength can decay over training: the
:class:`NoiseScheduler` callback calls :meth:`NoiseLayer.set_epoch` at the
start of every epoch.

Schedules, with ``t = epoch / max_epochs`` clipped to ``[0, 1]``, ``s0`` the
initial strength and ``s1`` the ``final`` one:

=============== =====================================================
schedule        strength at ``epoch`` (0-based, epochs completed)
=============== =====================================================
``constant``    ``s0``
``linear``      ``s1 + (s0 - s1) * (1 - t)``
``cosine``      ``s1 + (s0 - s1) * (1 + cos(pi * t)) / 2``
``exponential`` ``s1 + (s0 - s1) * gamma ** epoch`` (gamma=0.95)
``step``        ``s1 + (s0 - s1) * gamma ** (epoch // step_size)``
                (gamma=0.5, step_size=10)
=============== =====================================================

``linear`` and ``cosine`` need ``max_epochs``; the others do not.
"""

import math
from numbers import Integral

import torch
from torch import nn

from sklears_neural.core import checks
from sklears_neural.core._compat import InvalidParameterError
from sklears_neural.core.callbacks import Callback
from sklears_neural.core.resolve import Resolver

__all__ = [
    "NoiseLayer",
    "Dropout",
    "GaussianNoise",
    "UniformNoise",
    "MultiplicativeNoise",
    "SaltAndPepperNoise",
    "NOISES",
    "SCHEDULES",
    "NoiseScheduler",
    "noise_layers",
    "set_generator",
]

SCHEDULES = ("constant", "linear", "exponential", "step", "cosine")


def _check_real(layer, name, value, low=0, high=None):
    return checks.check_real(layer, name, value, low=low, high=high)


def _draw(sample, shape, like, generator):
    """``sample(shape, ...)`` (``torch.rand`` or ``torch.randn``) on ``like``'s device and dtype.

    Drawn from ``generator`` when given, on the generator's own device and
    moved over if that differs from ``like``'s (correct, if slower: hand out
    a generator on the module's device for speed); from torch's default
    generator when ``generator`` is None.
    """
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    if generator is None:
        return sample(shape, dtype=dtype, device=like.device)
    device = generator.device
    if device.type == like.device.type and (
        device.index is None or like.device.index is None or device.index == like.device.index
    ):
        return sample(shape, generator=generator, dtype=dtype, device=like.device)
    return sample(shape, generator=generator, dtype=dtype, device=device).to(like.device)


def _rand(shape, like, generator):
    return _draw(torch.rand, shape, like, generator)


def _randn(shape, like, generator):
    return _draw(torch.randn, shape, like, generator)


class NoiseLayer(nn.Module):
    """Base of the layers that corrupt their input during training.

    A subclass sets ``strength`` in ``__init__`` (through this base) and
    implements ``_corrupt(x, strength)``; the base handles evaluation mode,
    the schedule and the generator.

    Parameters
    ----------
    strength : float
        Initial strength (a standard deviation, half-width or probability).
    schedule : {"constant", "linear", "exponential", "step", "cosine"}, default="constant"
        How the strength decays over epochs; see the module docstring.
    final : float, default=0.0
        Strength the decay tends to.
    gamma : float or None, default=None
        Decay factor of "exponential" (default 0.95) and "step" (default 0.5).
    step_size : int, default=10
        Epochs per step of "step".

    Attributes
    ----------
    generator : torch.Generator or None
        Source of the noise; set with :func:`set_generator`. Not part of
        the ``state_dict``.
    epoch : int
        Epochs completed, as last given to :meth:`set_epoch`.
    max_epochs : int or None
        As last given to :meth:`set_epoch`.
    """

    #: The strength's setting name, for error messages.
    _strength_name = "strength"
    #: Largest valid strength (probabilities are capped at 1).
    _max_strength = None

    def __init__(self, strength, *, schedule="constant", final=0.0, gamma=None,
                 step_size=10):
        super().__init__()
        name = type(self).__name__
        self.initial = _check_real(
            name, self._strength_name, strength, high=self._max_strength
        )
        if schedule not in SCHEDULES:
            raise ValueError(
                f"Unknown noise schedule {schedule!r}. Valid names are: "
                f"{', '.join(sorted(SCHEDULES))}."
            )
        self.schedule = schedule
        self.final = _check_real(name, "final", final, high=self._max_strength)
        if gamma is None:
            gamma = 0.5 if schedule == "step" else 0.95
        self.gamma = _check_real(name, "gamma", gamma, high=1.0)
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"{name} setting 'step_size' must be an int >= 1, got {step_size!r}.")
        self.step_size = step_size
        self.generator = None
        self.epoch = 0
        self.max_epochs = None

    def set_epoch(self, epoch, max_epochs=None):
        """Set the schedule's position: ``epoch`` epochs completed of ``max_epochs``.

        Raises
        ------
        ValueError
            If the schedule is "linear" or "cosine" and ``max_epochs`` is None.
        """
        if self.schedule in ("linear", "cosine") and max_epochs is None:
            raise ValueError(
                f"The {self.schedule!r} noise schedule decays over max_epochs; "
                "pass it to set_epoch (NoiseScheduler(max_epochs=...))."
            )
        self.epoch = int(epoch)
        self.max_epochs = None if max_epochs is None else int(max_epochs)

    @property
    def strength(self):
        """The strength at the current epoch."""
        s0, s1 = self.initial, self.final
        if self.schedule == "constant":
            return s0
        if self.schedule in ("linear", "cosine"):
            t = min(max(self.epoch / max(self.max_epochs or 1, 1), 0.0), 1.0)
            decay = 1.0 - t if self.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
        elif self.schedule == "exponential":
            decay = self.gamma ** self.epoch
        else:
            decay = self.gamma ** (self.epoch // self.step_size)
        return s1 + (s0 - s1) * decay

    def forward(self, x):
        if not self.training:
            return x
        strength = self.strength
        if strength == 0.0:
            return x
        return self._corrupt(x, strength)

    def _corrupt(self, x, strength):
        raise NotImplementedError

    def extra_repr(self):
        text = f"{self.initial}"
        if self.schedule != "constant":
            text += f", schedule={self.schedule!r}, final={self.final}"
        return text


class Dropout(NoiseLayer):
    """Inverted dropout: zero each entry with probability ``p``, scale the rest by ``1 / (1 - p)``.

    Same result distribution as ``torch.nn.Dropout``, but the mask comes
    from ``self.generator``.

    Parameters
    ----------
    p : float, default=0.5
        Drop probability, in ``[0, 1]``.
    **schedule_settings
        ``schedule``, ``final``, ``gamma``, ``step_size``; see :class:`NoiseLayer`.

    Shapes
    ------
    - input: any; output: same as input.
    """

    _strength_name = "p"
    _max_strength = 1.0

    def __init__(self, p=0.5, *, schedule="constant", final=0.0, gamma=None, step_size=10):
        super().__init__(p, schedule=schedule, final=final, gamma=gamma, step_size=step_size)

    def _corrupt(self, x, p):
        if p >= 1.0:
            return x * 0.0
        keep = _rand(x.shape, x, self.generator) >= p
        return x * (keep.to(x.dtype) / (1.0 - p))


class GaussianNoise(NoiseLayer):
    """Additive Gaussian noise: ``x + std * eps``, ``eps ~ N(0, 1)``.

    Parameters
    ----------
    std : float, default=0.1
    **schedule_settings
        See :class:`NoiseLayer`.
    """

    _strength_name = "std"

    def __init__(self, std=0.1, *, schedule="constant", final=0.0, gamma=None, step_size=10):
        super().__init__(std, schedule=schedule, final=final, gamma=gamma, step_size=step_size)

    def _corrupt(self, x, std):
        return x + std * _randn(x.shape, x, self.generator)


class UniformNoise(NoiseLayer):
    """Additive uniform noise: ``x + u``, ``u ~ U(-a, a)``.

    Parameters
    ----------
    a : float, default=0.1
        Half-width of the interval.
    **schedule_settings
        See :class:`NoiseLayer`.
    """

    _strength_name = "a"

    def __init__(self, a=0.1, *, schedule="constant", final=0.0, gamma=None, step_size=10):
        super().__init__(a, schedule=schedule, final=final, gamma=gamma, step_size=step_size)

    def _corrupt(self, x, a):
        return x + a * (2.0 * _rand(x.shape, x, self.generator) - 1.0)


class MultiplicativeNoise(NoiseLayer):
    """Multiplicative Gaussian noise: ``x * (1 + std * eps)``, ``eps ~ N(0, 1)``.

    Parameters
    ----------
    std : float, default=0.1
    **schedule_settings
        See :class:`NoiseLayer`.
    """

    _strength_name = "std"

    def __init__(self, std=0.1, *, schedule="constant", final=0.0, gamma=None, step_size=10):
        super().__init__(std, schedule=schedule, final=final, gamma=gamma, step_size=step_size)

    def _corrupt(self, x, std):
        return x * (1.0 + std * _randn(x.shape, x, self.generator))


class SaltAndPepperNoise(NoiseLayer):
    """Replace each entry with probability ``p`` by a low or a high value (even odds).

    Parameters
    ----------
    p : float, default=0.05
        Probability that an entry is replaced, in ``[0, 1]``.
    values : {"minmax", "binary"}, default="minmax"
        "minmax": each column's minimum or maximum over the batch (so it
        suits features on any scale); "binary": 0 or 1.
    **schedule_settings
        See :class:`NoiseLayer`.

    Shapes
    ------
    - input: ``(batch, ...)``; output: same as input.
    """

    _strength_name = "p"
    _max_strength = 1.0

    def __init__(self, p=0.05, *, values="minmax", schedule="constant", final=0.0,
                 gamma=None, step_size=10):
        super().__init__(p, schedule=schedule, final=final, gamma=gamma, step_size=step_size)
        if values not in ("minmax", "binary"):
            raise ValueError(
                f"SaltAndPepperNoise setting 'values' must be one of 'binary', "
                f"'minmax'; got {values!r}."
            )
        self.values = values

    def _corrupt(self, x, p):
        # One draw decides both whether and which way: u < p/2 -> low, u > 1 - p/2 -> high.
        u = _rand(x.shape, x, self.generator)
        if self.values == "binary":
            low, high = torch.zeros((), dtype=x.dtype), torch.ones((), dtype=x.dtype)
            low, high = low.to(x.device), high.to(x.device)
        else:
            detached = x.detach()
            # (1, ...) per column, broadcast over the batch.
            low = detached.amin(dim=0, keepdim=True)
            high = detached.amax(dim=0, keepdim=True)
        out = torch.where(u < 0.5 * p, low, x)
        return torch.where(u >= 1.0 - 0.5 * p, high, out)


NOISES = Resolver(
    "noise",
    {
        "gaussian": GaussianNoise,
        "uniform": UniformNoise,
        "multiplicative": MultiplicativeNoise,
        "salt_and_pepper": SaltAndPepperNoise,
        "dropout": Dropout,
    },
    aliases={"normal": "gaussian", "additive": "gaussian", "saltpepper": "salt_and_pepper"},
)
"""Noise layers by name: ``NOISES.build(("gaussian", {"std": 0.2, "schedule": "linear"}))``."""


def noise_layers(module):
    """Every :class:`NoiseLayer` inside ``module`` (itself included)."""
    return [m for m in module.modules() if isinstance(m, NoiseLayer)]


def set_generator(module, generator):
    """Make every noise and dropout layer of ``module`` draw from ``generator``.

    Parameters
    ----------
    module : torch.nn.Module
    generator : torch.Generator or None
        ``None`` goes back to torch's default generator. For speed, use one
        on the module's device (a CPU generator works for a CUDA module, at
        the cost of a copy per draw).

    Returns
    -------
    n_layers : int
        How many layers now draw from ``generator``.
    """
    layers = noise_layers(module)
    for layer in layers:
        layer.generator = generator
    return len(layers)


class NoiseScheduler(Callback):
    """Advance the noise schedules of the trained module at each epoch's start.

    Calls ``set_epoch(len(trainer.history), max_epochs)`` on every
    :class:`NoiseLayer` of ``trainer.module``: the epoch count includes the
    epochs of earlier ``partial_fit`` / ``warm_start`` calls kept in the
    history, so a decay continues where it stopped.

    Parameters
    ----------
    max_epochs : int or None, default=None
        Length of the "linear" and "cosine" decays (the estimator's
        ``max_iter``).
    """

    def __init__(self, max_epochs=None):
        if max_epochs is not None and (
            isinstance(max_epochs, bool) or not isinstance(max_epochs, Integral)
            or max_epochs < 1
        ):
            raise InvalidParameterError(
                "The 'max_epochs' parameter of NoiseScheduler must be None or an int "
                f">= 1. Got {max_epochs!r} instead."
            )
        self.max_epochs = max_epochs

    def on_epoch_begin(self, trainer, **kwargs):
        epoch = len(trainer.history)
        for layer in noise_layers(trainer.module):
            layer.set_epoch(epoch, self.max_epochs)
