"""Data augmentation: random transformations of each training batch.

Every estimator takes ``augment=``: a name, a ``(name, {settings})`` pair
(or ``{"name": ..., **settings}``), a list/tuple of those applied in order,
or ``None`` (no augmentation). Names ignore case, ``-`` and ``_``, like every
option resolved by :class:`~sklears_neural.core.resolve.Resolver`::

    MLPClassifier(augment="gaussian_noise")
    MLPClassifier(augment=[("gaussian_noise", {"std": 0.05}), "feature_dropout"])
    CNNClassifier(augment=["random_shift", ("flip", {"p": 0.5}), "crop"])

Augmentation applies to training batches only, never to validation data or
predictions. An augmentation must suit the input *layout*:

- ``"tabular"``: ``(batch, n_features)``;
- ``"image"``: ``(batch, channels, *spatial)`` with 1, 2 or 3 spatial axes;
- ``"sequence"``: ``(batch, time, n_features)``, padded with zeros after each
  sequence's length;
- ``"tokens"``: token ids ``(batch, time)``. No augmentation applies to them
  yet: ``make_augmenter(None, layout="tokens")`` is None, and a name raises.

Augmentations, their layouts and their settings (all keywords, with these
defaults; a setting out of range raises scikit-learn's
``InvalidParameterError``, an unknown one a ``ValueError`` that lists the
settings the augmentation takes):

===================== ======================== =========================================
name                  layouts                  settings and effect
===================== ======================== =========================================
``gaussian_noise``    tabular, image, sequence ``std=0.1``: add ``N(0, std**2)`` to
                                               every value.
``uniform_noise``     tabular, image, sequence ``scale=0.1``: add ``U(-scale, scale)``
                                               to every value.
``feature_dropout``   tabular, image, sequence ``p=0.1``, ``rescale=False``: zero each
                                               whole feature (tabular), channel (image)
                                               or input series (sequence, every time
                                               step) with probability ``p``;
                                               ``rescale=True`` multiplies the kept ones
                                               by ``1 / (1 - p)``.
``scaling``           tabular, image, sequence ``std=0.1``: multiply each sample by one
                                               factor ``1 + std * N(0, 1)``.
``magnitude_scaling`` tabular, image, sequence ``std=0.1``: multiply each channel of
                                               each sample (each feature, for tabular
                                               rows) by its own factor
                                               ``1 + std * N(0, 1)``.
``permutation``       tabular, sequence        sequence: ``n_segments=4``: cut the valid
                                               part of each sequence into ``n_segments``
                                               equal pieces and put them back in a
                                               random order (Um et al., 2017). tabular:
                                               ``p=0.1``: "swap noise", replace each
                                               value with probability ``p`` by the same
                                               feature's value in another row of the
                                               batch.
``random_shift``      image                    ``max_shift=2``: shift each image by a
                                               random whole number of pixels in
                                               ``[-max_shift, max_shift]`` along every
                                               spatial axis, filling with zeros.
``flip``              image                    ``axis=-1``, ``p=0.5``: mirror each image
                                               along spatial ``axis`` with probability
                                               ``p``.
``crop``              image                    ``scale=(0.8, 1.0)``: crop a random
                                               window whose sides are a fraction in
                                               ``scale`` of the image's (the same
                                               fraction on every axis, rounded to whole
                                               pixels) and resize it back to the input
                                               size (bilinear, corners aligned).
``jitter``            sequence                 ``std=0.03``: add ``N(0, std**2)`` to
                                               every valid time step.
``time_warp``         sequence                 ``n_knots=4``, ``sigma=0.2``: resample
                                               each sequence along a smooth random
                                               monotone time warp whose speed is drawn
                                               at ``n_knots + 2`` evenly spaced knots
                                               from ``N(1, sigma**2)`` (Um et al.,
                                               2017).
``window_slice``      sequence                 ``fraction=0.9``: take a random window of
                                               ``fraction`` of each sequence's valid
                                               length and stretch it back to that length
                                               (Le Guennec et al., 2016).
===================== ======================== =========================================

Sequence augmentations see only each sequence's valid part: padded steps
(``t >= length``) are zero in the output, and warps, windows and segments are
measured on the sequence's own length, so padding a sequence further never
changes its augmentation.

Randomness
----------
An :class:`Augmenter` draws from the ``torch.Generator`` it is handed (the
estimator's, seeded from ``random_state``), never from torch's global
generator, so a seed fixes every augmentation and resuming a fit from its
generator state reproduces them. It draws one 32-bit key per sample per
batch; every random number of that sample is a hash of its key, the step's
position in the list, and the element's index (``(t, feature)`` for a
sequence, ``(channel, *pixel)`` for an image). So the draws are made on the
tensor's own device (no host-to-device copy of noise), are the same on CPU
and GPU, and a sample's augmentation does not depend on how far its batch is
padded: the first sample of a batch is augmented the same way whatever the
batch size. Only ``permutation`` on tabular rows mixes samples (it takes
values from other rows), so it depends on the whole batch by design.
Uniform numbers carry 23 random bits, so Gaussian draws stop near 5.8
standard deviations.

References
----------
Um, T. T. et al. (2017). Data augmentation of wearable sensor data for
Parkinson's disease monitoring using convolutional neural networks. ICMI.

Le Guennec, A., Malinowski, S. and Tavenard, R. (2016). Data augmentation for
time series classification using convolutional neural networks. ECML/PKDD
workshop AALTD.
"""

import abc
import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F

from sklears_neural.core import checks
from sklears_neural.core._compat import InvalidParameterError, ResolvableName
from sklears_neural.core.resolve import Resolver, split_option

__all__ = [
    "INPUT_LAYOUTS",
    "LAYOUTS",
    "Augmentation",
    "AUGMENTATIONS",
    "AugmentOption",
    "Augmenter",
    "make_augmenter",
]

#: The input layouts an :class:`Augmenter` can be made for.
LAYOUTS = ("tabular", "image", "sequence")

#: The layout of every input kind (``layout`` in :mod:`sklears_neural.core.inputs`):
#: :data:`LAYOUTS`, and ``"tokens"`` (token ids), for which no augmentation
#: exists yet. :func:`make_augmenter` takes each.
INPUT_LAYOUTS = (*LAYOUTS, "tokens")

_ALL = LAYOUTS

# ---------------------------------------------------------------------------
# Counter-based random numbers.
#
# A 32-bit integer hash (xorshift-multiply; constants from Wellons'
# hash-prospector, both odd and below 2**31) of (key, counter), computed on
# int32 tensors: two's-complement products wrap modulo 2**32 on every torch
# backend, so int32 bits follow uint32 arithmetic (torch has no uint32 shift),
# and the results are the same on CPU and GPU. int32 runs 2-3x faster than
# int64 with masking. ``>>`` on int32 copies the sign bit, hence the masks.
# test_augment.py checks the tensor hash against the Python-int one.
# ---------------------------------------------------------------------------

_MASK = 0xFFFFFFFF
_MIX = 0x61C88647  # 2**32 / golden ratio, odd and < 2**31


def _hash_int(x):
    """The 32-bit hash of a Python int in ``[0, 2**32)``: the reference."""
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & _MASK
    x ^= x >> 15
    x = (x * 0x735A2D97) & _MASK
    return x ^ (x >> 15)


def _as_int32(value):
    """A Python int in ``[0, 2**32)`` as the int32 with the same bits."""
    return value - 2**32 if value >= 2**31 else value


def _hash(x):
    """The 32-bit hash of each element of an int32 tensor (bits read as uint32)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x21F0AAAD
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * 0x735A2D97
    return x ^ ((x >> 15) & 0x1FFFF)


class _Draws:
    """Random numbers of one augmentation step, one stream per sample.

    Each call (``uniform``, ``normal``, ...) opens a fresh stream, so the
    order of calls inside a step matters but their sizes never shift later
    calls. Value ``i`` of a call for sample ``b`` is a function of
    ``keys[b]``, the step, the call's number and ``i`` only.

    Parameters
    ----------
    keys : int32 tensor of shape (batch,)
        Per-sample keys (any 32 bits), on the device of the data.
    step : int
        Position of the augmentation in the list.
    """

    def __init__(self, keys, step):
        self._keys = keys
        self._step = step
        self._calls = 0

    def _bits(self, n):
        """``(batch, n)`` int32 tensor of random bits."""
        self._calls += 1
        stream = _as_int32(_hash_int(((self._step << 16) | self._calls) & _MASK))
        # (batch,): one sub-key per sample for this call.
        sub = _hash(self._keys + stream)
        counters = torch.arange(n, dtype=torch.int32, device=self._keys.device) * _MIX
        return _hash(counters.unsqueeze(0) ^ sub.unsqueeze(1))

    def uniform(self, shape):
        """``U(0, 1)`` (both ends excluded) of shape ``(batch, *shape)``, float32."""
        # The top 23 bits: bits + 0.5 needs 24 significant bits, exactly
        # float32's, so u is never rounded to 0 or 1 (24 bits would round the
        # largest value up to 1.0).
        bits = (self._bits(math.prod(shape)) >> 9) & 0x7FFFFF
        u = (bits.to(torch.float32) + 0.5) * (2.0 ** -23)
        return u.reshape(self._keys.shape[0], *shape)

    def normal(self, shape):
        """``N(0, 1)`` of shape ``(batch, *shape)``, float32 (Box-Muller).

        Values ``2k`` and ``2k + 1`` come from one pair of uniforms, so value
        ``i`` depends on ``i`` only, not on the size of the draw.
        """
        batch, n = self._keys.shape[0], math.prod(shape)
        pairs = (n + 1) // 2
        u = self.uniform((pairs, 2))
        radius = torch.sqrt(-2.0 * torch.log(u[..., 0]))
        angle = (2.0 * math.pi) * u[..., 1]
        z = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1)
        z = z.reshape(batch, 2 * pairs)
        return (z if n == 2 * pairs else z[:, :n]).reshape(batch, *shape)

    def integers(self, low, high, shape):
        """Integers uniform in ``[low, high]`` (both included), int64.

        Multiply-shift on 24 random bits: exact integer arithmetic, with a
        bias below ``(high - low + 1) / 2**24``.
        """
        bits = ((self._bits(math.prod(shape)) >> 8) & 0xFFFFFF).to(torch.int64)
        values = ((bits * (high - low + 1)) >> 24) + low
        return values.reshape(self._keys.shape[0], *shape)


# ---------------------------------------------------------------------------
# Helpers shared by several augmentations.
# ---------------------------------------------------------------------------


def _per_sample(values, x):
    """``(batch,)`` -> ``(batch, 1, ..., 1)``, in x's dtype, to broadcast against x."""
    return values.to(x.dtype).reshape(x.shape[0], *([1] * (x.dim() - 1)))


def _per_channel(draw, x, layout):
    """Draw ``draw(shape)`` per channel and shape it to broadcast against ``x``.

    Channels are the features of tabular rows and sequences (last axis) and
    the channels of images (axis 1).
    """
    if layout == "image":
        values = draw((x.shape[1],))
        return values.to(x.dtype).reshape(*values.shape, *([1] * (x.dim() - 2)))
    values = draw((x.shape[-1],))
    if layout == "sequence":
        values = values.unsqueeze(1)
    return values.to(x.dtype)


def _position_dtype(x):
    # Warp positions in float32 unless the data is float64 (MPS has no float64).
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _resample(x, positions, lengths):
    """Linear interpolation of each sequence at fractional time ``positions``.

    Parameters
    ----------
    x : tensor of shape (batch, time, n_features)
    positions : tensor of shape (batch, time)
        Positions in ``[0, length - 1]`` of each sequence (values at padded
        steps are ignored: the caller zeroes them).
    lengths : int64 tensor of shape (batch,)
    """
    last = (lengths - 1).clamp(min=0).unsqueeze(1)  # (batch, 1)
    lower = torch.floor(positions)
    weight = (positions - lower).clamp(0.0, 1.0).to(x.dtype).unsqueeze(-1)
    lower = lower.to(torch.int64)
    i0 = torch.minimum(lower.clamp(min=0), last)
    i1 = torch.minimum(i0 + 1, last)
    n_features = x.shape[2]
    x0 = x.gather(1, i0.unsqueeze(-1).expand(-1, -1, n_features))
    x1 = x.gather(1, i1.unsqueeze(-1).expand(-1, -1, n_features))
    return x0 + weight * (x1 - x0)


# ---------------------------------------------------------------------------
# The augmentations.
# ---------------------------------------------------------------------------


class Augmentation(abc.ABC):
    """One augmentation step; :data:`AUGMENTATIONS` maps names to subclasses.

    A subclass sets ``name`` and ``layouts``, checks its settings in
    ``__init__`` (keyword arguments with defaults, stored in
    ``self.settings`` as plain JSON values) and writes :meth:`apply`.

    Attributes
    ----------
    name : str
        Canonical name.
    layouts : tuple of str
        Layouts it applies to, among :data:`LAYOUTS`.
    settings : dict
        Every setting, defaults included, as plain Python values.
    """

    name = None
    layouts = ()

    def __init__(self, **settings):
        self.settings = settings

    @property
    def _owner(self):
        return f"the {self.name!r} augmentation"

    @abc.abstractmethod
    def apply(self, x, draws, layout, lengths):
        """Augment one batch; never modifies ``x`` in place.

        Parameters
        ----------
        x : floating tensor
            ``(batch, n_features)``, ``(batch, channels, *spatial)`` or
            ``(batch, time, n_features)``, by ``layout``.
        draws : _Draws
            This step's random numbers.
        layout : str
        lengths : int64 tensor of shape (batch,) or None
            Valid lengths of sequences (on ``x``'s device); None otherwise.

        Returns
        -------
        tensor of the same shape and dtype as ``x``
        """

    def to_json(self):
        """``[name, settings]`` (or ``name`` with no settings), plain JSON data."""
        return [self.name, dict(self.settings)] if self.settings else self.name

    def __repr__(self):
        inner = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{type(self).__name__}({inner})"


class GaussianNoise(Augmentation):
    """Additive Gaussian noise: ``x + std * eps``, ``eps ~ N(0, 1)`` per value.

    Parameters
    ----------
    std : float, default=0.1
        Standard deviation, >= 0.
    """

    name = "gaussian_noise"
    layouts = _ALL

    def __init__(self, std=0.1):
        super().__init__(std=checks.check_real(self._owner, "std", std, low=0))

    def apply(self, x, draws, layout, lengths):
        noise = draws.normal(tuple(x.shape[1:])).to(x.dtype)
        return x + self.settings["std"] * noise


class Jitter(GaussianNoise):
    """Gaussian noise on time series, ``std=0.03`` by default (Um et al., 2017).

    Parameters
    ----------
    std : float, default=0.03
        Standard deviation, >= 0.
    """

    name = "jitter"
    layouts = ("sequence",)

    def __init__(self, std=0.03):
        super().__init__(std=std)


class UniformNoise(Augmentation):
    """Additive uniform noise: ``x + u``, ``u ~ U(-scale, scale)`` per value.

    Parameters
    ----------
    scale : float, default=0.1
        Half-width of the interval, >= 0.
    """

    name = "uniform_noise"
    layouts = _ALL

    def __init__(self, scale=0.1):
        super().__init__(scale=checks.check_real(self._owner, "scale", scale, low=0))

    def apply(self, x, draws, layout, lengths):
        u = draws.uniform(tuple(x.shape[1:])).to(x.dtype)
        return x + self.settings["scale"] * (2.0 * u - 1.0)


class FeatureDropout(Augmentation):
    """Zero whole features / channels of each sample with probability ``p``.

    A tabular row loses features, an image whole channels, a sequence whole
    input series (at every time step).

    Parameters
    ----------
    p : float, default=0.1
        Drop probability, in ``[0, 1]``.
    rescale : bool, default=False
        Multiply the kept features by ``1 / (1 - p)`` (as inverted dropout
        does, keeping the expected value). Off by default: a kept feature
        keeps the value it has at prediction time, where nothing is
        rescaled. ``rescale=True`` needs ``p < 1``.
    """

    name = "feature_dropout"
    layouts = _ALL

    def __init__(self, p=0.1, rescale=False):
        rescale = checks.check_bool(self._owner, "rescale", rescale)
        p = checks.check_real(self._owner, "p", p, low=0, high=1, high_open=rescale)
        super().__init__(p=p, rescale=rescale)

    def apply(self, x, draws, layout, lengths):
        p = self.settings["p"]
        keep = (_per_channel(draws.uniform, x, layout) >= p).to(x.dtype)
        if self.settings["rescale"]:
            keep = keep / (1.0 - p)
        return x * keep


class Scaling(Augmentation):
    """Multiply each sample by one random factor ``1 + std * N(0, 1)``.

    Parameters
    ----------
    std : float, default=0.1
        Standard deviation of the factor around 1, >= 0.
    """

    name = "scaling"
    layouts = _ALL

    def __init__(self, std=0.1):
        super().__init__(std=checks.check_real(self._owner, "std", std, low=0))

    def apply(self, x, draws, layout, lengths):
        factor = 1.0 + self.settings["std"] * draws.normal(())
        return x * _per_sample(factor, x)


class MagnitudeScaling(Augmentation):
    """Multiply each channel of each sample by its own factor ``1 + std * N(0, 1)``.

    Channels: features of tabular rows and sequences, channels of images.

    Parameters
    ----------
    std : float, default=0.1
        Standard deviation of the factors around 1, >= 0.
    """

    name = "magnitude_scaling"
    layouts = _ALL

    def __init__(self, std=0.1):
        super().__init__(std=checks.check_real(self._owner, "std", std, low=0))

    def apply(self, x, draws, layout, lengths):
        factor = 1.0 + self.settings["std"] * _per_channel(draws.normal, x, layout)
        return x * factor


class Permutation(Augmentation):
    """Segment permutation (sequences) or swap noise (tabular rows).

    Parameters
    ----------
    n_segments : int, default=4
        Sequences: how many equal pieces the valid part of each sequence is
        cut into before they are shuffled (piece ``k`` covers steps
        ``[k * length // n_segments, (k + 1) * length // n_segments)``).
        1 leaves sequences unchanged.
    p : float, default=0.1
        Tabular rows: probability, in ``[0, 1]``, that a value is replaced
        by the same feature's value in another row of the batch, chosen
        uniformly. A batch of one row is left unchanged.

    Notes
    -----
    Images are refused: shuffling pixels or tiles destroys what the image
    shows; use ``random_shift``, ``flip`` or ``crop``.
    """

    name = "permutation"
    layouts = ("tabular", "sequence")

    def __init__(self, n_segments=4, p=0.1):
        super().__init__(
            n_segments=checks.check_int(self._owner, "n_segments", n_segments, low=1),
            p=checks.check_real(self._owner, "p", p, low=0, high=1),
        )

    def apply(self, x, draws, layout, lengths):
        if layout == "tabular":
            return self._swap_noise(x, draws)
        return self._segments(x, draws, lengths)

    def _swap_noise(self, x, draws):
        n_rows, n_features = x.shape
        if n_rows < 2:
            return x.clone()
        replace = draws.uniform((n_features,)) < self.settings["p"]
        # Another row: uniform over the n_rows - 1 rows that are not this one.
        donor = draws.integers(0, n_rows - 2, (n_features,))
        rows = torch.arange(n_rows, device=x.device).unsqueeze(1)
        donor = donor + (donor >= rows).to(torch.int64)
        return torch.where(replace, x.gather(0, donor), x)

    def _segments(self, x, draws, lengths):
        n = self.settings["n_segments"]
        n_steps, n_features = x.shape[1], x.shape[2]
        device = x.device
        k = torch.arange(n + 1, device=device)
        # (batch, n + 1): segment boundaries on each sequence's own length.
        bounds = (k.unsqueeze(0) * lengths.unsqueeze(1)) // n
        starts, sizes = bounds[:, :-1], bounds[:, 1:] - bounds[:, :-1]
        # (batch, n); stable, so that rare ties break alike on every device.
        order = torch.argsort(draws.uniform((n,)), dim=1, stable=True)
        placed_sizes = sizes.gather(1, order)
        placed_starts = torch.cumsum(placed_sizes, dim=1) - placed_sizes
        t = torch.arange(n_steps, device=device).unsqueeze(0).expand(x.shape[0], -1)
        # Output step t falls in the last placed segment starting at or before t.
        j = torch.searchsorted(placed_starts.contiguous(), t.contiguous(), right=True)
        j = (j - 1).clamp(0, n - 1)
        source = starts.gather(1, order.gather(1, j)) + (t - placed_starts.gather(1, j))
        source = source.clamp(0, max(n_steps - 1, 0))
        return x.gather(1, source.unsqueeze(-1).expand(-1, -1, n_features))


class RandomShift(Augmentation):
    """Shift each image by whole pixels along every spatial axis, zero fill.

    Each sample draws its own shift, uniform in ``[-max_shift, max_shift]``,
    for each spatial axis.

    Parameters
    ----------
    max_shift : int, default=2
        Largest shift in pixels, >= 0.
    """

    name = "random_shift"
    layouts = ("image",)

    def __init__(self, max_shift=2):
        super().__init__(
            max_shift=checks.check_int(self._owner, "max_shift", max_shift, low=0)
        )

    def apply(self, x, draws, layout, lengths):
        m = self.settings["max_shift"]
        batch, channels = x.shape[0], x.shape[1]
        spatial = x.shape[2:]
        shifts = draws.integers(-m, m, (len(spatial),))  # (batch, n_axes)
        flat = torch.zeros((batch,) + (1,) * len(spatial), dtype=torch.int64,
                           device=x.device)
        valid = torch.ones_like(flat, dtype=torch.bool)
        stride = 1
        for axis in reversed(range(len(spatial))):
            size = spatial[axis]
            view = [batch] + [1] * len(spatial)
            view[1 + axis] = size
            # (batch, size): where output pixel i takes its value from.
            pixels = torch.arange(size, device=x.device).unsqueeze(0)
            source = pixels - shifts[:, axis:axis + 1]
            inside = (source >= 0) & (source < size)
            flat = flat + source.clamp(0, size - 1).reshape(view) * stride
            valid = valid & inside.reshape(view)
            stride *= size
        flat = flat.expand(batch, *spatial).reshape(batch, 1, -1)
        moved = x.reshape(batch, channels, -1).gather(2, flat.expand(-1, channels, -1))
        moved = moved.reshape(x.shape)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return torch.where(valid.unsqueeze(1), moved, zero)


class Flip(Augmentation):
    """Mirror each image along one spatial axis with probability ``p``.

    Parameters
    ----------
    axis : int, default=-1
        The spatial axis of ``(batch, channels, *spatial)`` input: -1 is the
        last (width), -2 the one before; 2, 3, 4 count from the front.
    p : float, default=0.5
        Probability, in ``[0, 1]``, that a sample is flipped.
    """

    name = "flip"
    layouts = ("image",)

    def __init__(self, axis=-1, p=0.5):
        if (
            isinstance(axis, bool)
            or not isinstance(axis, Integral)
            or axis not in (-3, -2, -1, 2, 3, 4)
        ):
            checks.fail(self._owner, "axis",
                        "a spatial axis: -1, -2, -3 (from the end) or 2, 3, 4", axis)
        axis = int(axis)
        p = checks.check_real(self._owner, "p", p, low=0, high=1)
        super().__init__(axis=axis, p=p)

    def apply(self, x, draws, layout, lengths):
        axis = self.settings["axis"]
        resolved = axis + x.dim() if axis < 0 else axis
        if not 2 <= resolved < x.dim():
            raise ValueError(
                f"flip axis={axis} is not a spatial axis of images of shape "
                f"{tuple(x.shape)} (batch, channels, *spatial): use an axis in "
                f"[-{x.dim() - 2}, -1] or [2, {x.dim() - 1}]."
            )
        flipped = draws.uniform(()) < self.settings["p"]  # (batch,)
        flipped = flipped.reshape(x.shape[0], *([1] * (x.dim() - 1)))
        return torch.where(flipped, x.flip(resolved), x)


class Crop(Augmentation):
    """Crop a random window of each image and resize it back to the input size.

    Each sample draws a fraction ``s`` uniform in ``scale``; the window's
    side along every spatial axis of size ``n`` is ``round(s * n)`` pixels
    (at least 1), at a random whole-pixel offset. The window is resized to
    ``n`` by (bi/tri)linear interpolation with corners aligned, as
    ``torch.nn.functional.interpolate(window, size, align_corners=True)``
    does, in one batched ``grid_sample``.

    Parameters
    ----------
    scale : (float, float), default=(0.8, 1.0)
        Range ``(low, high)`` of the side fraction, ``0 < low <= high <= 1``.
    """

    name = "crop"
    layouts = ("image",)

    def __init__(self, scale=(0.8, 1.0)):
        expected = "a pair (low, high) of real numbers with 0 < low <= high <= 1"
        if (
            not isinstance(scale, (list, tuple))
            or len(scale) != 2
            or not all(isinstance(s, Real) and not isinstance(s, bool) for s in scale)
            or not 0 < scale[0] <= scale[1] <= 1
        ):
            checks.fail(self._owner, "scale", expected, scale)
        super().__init__(scale=[float(scale[0]), float(scale[1])])

    def apply(self, x, draws, layout, lengths):
        low, high = self.settings["scale"]
        spatial = x.shape[2:]
        n_axes = len(spatial)
        dtype = _position_dtype(x)
        fraction = low + (high - low) * draws.uniform(()).to(dtype)  # (batch,)
        offsets_u = draws.uniform((n_axes,)).to(dtype)  # (batch, n_axes)
        coords = []
        for axis, size in enumerate(spatial):
            width = torch.round(fraction * size).clamp(1, size)
            offset = torch.floor(offsets_u[:, axis] * (size - width + 1))
            offset = torch.minimum(offset, size - width)
            i = torch.arange(size, device=x.device, dtype=dtype)
            step = (width - 1) / max(size - 1, 1)
            # (batch, size): the source pixel of output pixel i.
            source = offset.unsqueeze(1) + i.unsqueeze(0) * step.unsqueeze(1)
            # align_corners=True: -1 and 1 are the centres of the first and last pixels.
            normalized = 2.0 * source / (size - 1) - 1.0 if size > 1 else source * 0.0
            coords.append(normalized)
        squeeze = n_axes == 1
        if squeeze:
            # grid_sample needs 2 or 3 spatial axes: (batch, C, L) -> (batch, C, 1, L).
            x_in = x.unsqueeze(2)
            coords = [torch.zeros_like(coords[0][:, :1])] + coords
            spatial = (1,) + tuple(spatial)
        else:
            x_in = x
        n_axes = len(spatial)
        grid_parts = []
        for axis, c in enumerate(coords):
            view = [c.shape[0]] + [1] * n_axes
            view[1 + axis] = spatial[axis]
            grid_parts.append(c.reshape(view).expand(c.shape[0], *spatial))
        # grid_sample wants the last axis first: (x=width, y=height, z=depth).
        grid = torch.stack(grid_parts[::-1], dim=-1).to(x.dtype)
        out = F.grid_sample(x_in, grid, mode="bilinear", padding_mode="border",
                            align_corners=True)
        return out.squeeze(2) if squeeze else out


class TimeWarp(Augmentation):
    """Resample each sequence along a smooth random monotone time warp.

    The speed of the warp is drawn at ``n_knots + 2`` evenly spaced knots
    over the sequence's valid part, ``v_k ~ N(1, sigma**2)`` clipped to
    ``>= 0.01`` so time never runs backwards, and interpolated linearly in
    between. The warped time of step ``t`` is the speed integrated from 0 to
    ``t``, rescaled so that the first and last valid steps stay in place;
    the sequence is read at those times by linear interpolation.
    ``sigma=0`` is the identity.

    Parameters
    ----------
    n_knots : int, default=4
        Inner knots of the speed curve, >= 0.
    sigma : float, default=0.2
        Standard deviation of the speed at the knots, >= 0.
    """

    name = "time_warp"
    layouts = ("sequence",)

    def __init__(self, n_knots=4, sigma=0.2):
        super().__init__(
            n_knots=checks.check_int(self._owner, "n_knots", n_knots, low=0),
            sigma=checks.check_real(self._owner, "sigma", sigma, low=0),
        )

    def apply(self, x, draws, layout, lengths):
        n_knots = self.settings["n_knots"] + 2
        dtype = _position_dtype(x)
        speeds = 1.0 + self.settings["sigma"] * draws.normal((n_knots,)).to(dtype)
        speeds = speeds.clamp(min=0.01)  # (batch, n_knots)
        last = (lengths - 1).clamp(min=0).to(dtype).unsqueeze(1)  # (batch, 1)
        t = torch.arange(x.shape[1], device=x.device, dtype=dtype).unsqueeze(0)
        # Speed over the step from t to t + 1, read at its middle.
        where = (t + 0.5) / last.clamp(min=1.0) * (n_knots - 1)
        k0 = torch.floor(where).clamp(0, n_knots - 2)
        frac = (where - k0).clamp(0.0, 1.0)
        k0 = k0.to(torch.int64)
        left = speeds.gather(1, k0)
        # left + (right - left) * frac: exactly 1 when every speed is 1 (sigma=0).
        speed = left + (speeds.gather(1, k0 + 1) - left) * frac
        zero = torch.zeros((), dtype=dtype, device=x.device)
        speed = torch.where(t < last, speed, zero)
        # (batch, time): exclusive cumulative sum, warped time of step t.
        warped = torch.cumsum(speed, dim=1) - speed
        total = speed.sum(dim=1, keepdim=True)
        # Sequences of 0 or 1 steps have no step to warp: ratio 0, position 0.
        ratio = torch.where(total > 0, last / total.clamp(min=1e-30), zero)
        return _resample(x, warped * ratio, lengths)


class WindowSlice(Augmentation):
    """Stretch a random window of each sequence back to its valid length.

    For a sequence of valid length ``L``, output step ``t`` reads the input
    at ``a + fraction * t`` (linear interpolation), with the start ``a``
    uniform in ``[0, (1 - fraction) * (L - 1)]``: a window spanning
    ``fraction`` of the sequence, stretched to ``L`` steps. ``fraction=1``
    is the identity.

    Parameters
    ----------
    fraction : float, default=0.9
        Window length as a fraction of the valid length, in ``(0, 1]``.
    """

    name = "window_slice"
    layouts = ("sequence",)

    def __init__(self, fraction=0.9):
        super().__init__(fraction=checks.check_real(
            self._owner, "fraction", fraction, low=0, high=1, low_open=True))

    def apply(self, x, draws, layout, lengths):
        fraction = self.settings["fraction"]
        dtype = _position_dtype(x)
        last = (lengths - 1).clamp(min=0).to(dtype).unsqueeze(1)  # (batch, 1)
        start = draws.uniform((1,)).to(dtype) * ((1.0 - fraction) * last)
        t = torch.arange(x.shape[1], device=x.device, dtype=dtype).unsqueeze(0)
        return _resample(x, start + fraction * t, lengths)


AUGMENTATIONS = Resolver(
    "augmentation",
    {cls.name: cls for cls in (
        GaussianNoise, UniformNoise, FeatureDropout, Scaling, MagnitudeScaling,
        Permutation, RandomShift, Flip, Crop, Jitter, TimeWarp, WindowSlice,
    )},
)
"""Augmentations by name: each entry is an :class:`Augmentation` subclass.

``AUGMENTATIONS.build(("flip", {"p": 1.0}))`` makes one step; the module
docstring lists every name, its layouts and its settings.
"""


# ---------------------------------------------------------------------------
# The option: None, one augmentation, or a list of them.
# ---------------------------------------------------------------------------

_SHAPE = (
    "None, an augmentation name, a (name, {settings}) pair, a dict with a "
    "'name' key, or a list/tuple of those"
)


def _is_single(value):
    return split_option(value)[0] is not None


def _as_list(option):
    """The option's augmentations, in order; raises if ``option`` has no valid shape."""
    if option is None:
        return []
    if _is_single(option):
        # A 2-element list ["name", {settings}] is one augmentation, not two.
        return [option]
    if isinstance(option, (list, tuple)) and all(_is_single(o) for o in option):
        return list(option)
    raise InvalidParameterError(
        f"The 'augment' parameter must be {_SHAPE}. Got {option!r} instead."
    )


class AugmentOption(ResolvableName):
    """Constraint for an ``augment`` parameter, for ``_parameter_constraints``.

    Accepts None, a name :data:`AUGMENTATIONS` knows, a ``(name, dict)`` pair,
    a dict with a ``"name"`` key, or a list/tuple of those (possibly empty).
    Settings and the layout are checked by :func:`make_augmenter` in ``fit``.

    A :class:`~sklears_neural.core._compat.ResolvableName` (so a
    ``StrOptions``), which scikit-learn's validator and its
    ``check_param_validation`` know how to use.
    """

    def __init__(self):
        super().__init__(AUGMENTATIONS)

    def is_satisfied_by(self, val):
        try:
            options = _as_list(val)
        except InvalidParameterError:
            return False
        return all(self.resolver.knows(o) for o in options)

    def __str__(self):
        names = ", ".join(repr(n) for n in self.resolver.names)
        return (
            f"None, an augmentation among {{{names}}} (case, '-' and '_' are "
            "ignored), a (name, {settings}) pair, or a list of those"
        )


# ---------------------------------------------------------------------------
# The augmenter.
# ---------------------------------------------------------------------------


def _names_for(layout):
    return [n for n in AUGMENTATIONS.names if layout in AUGMENTATIONS(n).layouts]


def _layout_error(name, layouts, layout):
    names = _names_for(layout)
    listed = (
        f"Augmentations for {layout!r} inputs: {', '.join(names)}."
        if names
        else f"No augmentation applies to {layout!r} inputs yet: set augment=None."
    )
    return ValueError(
        f"Augmentation {name!r} does not apply to {layout!r} inputs (it applies "
        f"to: {', '.join(layouts)}). {listed}"
    )


def _check_layout(layout):
    if layout not in INPUT_LAYOUTS:
        raise ValueError(
            f"Unknown layout {layout!r}. Valid layouts are: {', '.join(INPUT_LAYOUTS)}."
        )


class Augmenter:
    """Applies a list of augmentations to training batches of one layout.

    Made by :func:`make_augmenter`, which checks the option first.

    Parameters
    ----------
    steps : list of Augmentation
        Applied in order.
    layout : {"tabular", "image", "sequence"}
        Layout of the batches; every step must apply to it.

    Attributes
    ----------
    steps : tuple of Augmentation
    layout : str
    """

    def __init__(self, steps, *, layout):
        _check_layout(layout)
        if layout not in LAYOUTS:
            raise ValueError(
                f"No augmentation applies to {layout!r} inputs yet: an Augmenter is "
                f"made for one of {', '.join(LAYOUTS)}."
            )
        for step in steps:
            if layout not in step.layouts:
                raise _layout_error(step.name, step.layouts, layout)
        self.steps = tuple(steps)
        self.layout = layout

    def __call__(self, inputs, generator):
        """Augment one training batch.

        Parameters
        ----------
        inputs : tensor or (tensor, tensor or None)
            Tabular ``(batch, n_features)`` or image
            ``(batch, channels, *spatial)`` tensor; for sequences a pair
            ``(x, lengths)``, ``x`` of shape ``(batch, time, n_features)``
            padded with zeros, ``lengths`` an integer tensor of shape
            ``(batch,)`` or None (every sequence is ``time`` steps long).
            Floating point, on any device. Never modified.
        generator : torch.Generator
            Source of all randomness (one key per sample is drawn from it);
            torch's global generator is never used.

        Returns
        -------
        tensor or (tensor, tensor or None)
            Same structure, shape, dtype and device as ``inputs``; for
            sequences, the same ``lengths`` object and zeros at padded steps.
        """
        x, lengths = self._check_inputs(inputs)
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                "Augmenter needs a torch.Generator to draw from (the estimator's, "
                f"seeded from random_state); got {type(generator).__name__}."
            )
        batch = x.shape[0]
        if batch == 0:
            return (x.clone(), inputs[1]) if self.layout == "sequence" else x.clone()
        keys = torch.randint(-2**31, 2**31, (batch,), generator=generator,
                             device=generator.device, dtype=torch.int32).to(x.device)
        valid = None
        if self.layout == "sequence":
            steps = torch.arange(x.shape[1], device=x.device)
            # (batch, time, 1)
            valid = (steps.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
        out = x
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        for position, step in enumerate(self.steps):
            out = step.apply(out, _Draws(keys, position), self.layout, lengths)
            if valid is not None:
                out = torch.where(valid, out, zero)
        if out is x:
            out = x.clone()
        if self.layout == "sequence":
            return out, inputs[1]
        return out

    def _check_inputs(self, inputs):
        if self.layout == "sequence":
            if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
                raise TypeError(
                    "Sequence batches are (x, lengths) pairs, x of shape (batch, "
                    f"time, n_features); got {type(inputs).__name__}."
                )
            x, lengths = inputs
        else:
            x, lengths = inputs, None
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Augmenter needs a torch tensor; got {type(x).__name__}.")
        if x.layout != torch.strided:
            raise TypeError(
                f"Augmentation needs dense tensors; got layout {x.layout}. Densify "
                "the batch first (x.to_dense()) or leave augment=None."
            )
        if not x.is_floating_point():
            raise TypeError(
                f"Augmentation needs floating-point inputs; got dtype {x.dtype}."
            )
        expected = {"tabular": "2 (batch, n_features)",
                    "image": "3 to 5 (batch, channels, *spatial)",
                    "sequence": "3 (batch, time, n_features)"}[self.layout]
        ok = {"tabular": x.dim() == 2, "image": 3 <= x.dim() <= 5,
              "sequence": x.dim() == 3}[self.layout]
        if not ok:
            raise ValueError(
                f"{self.layout.capitalize()} inputs must have {expected} dimensions; "
                f"got shape {tuple(x.shape)}."
            )
        if self.layout != "sequence":
            return x, None
        batch, n_steps = x.shape[0], x.shape[1]
        if lengths is None:
            return x, torch.full((batch,), n_steps, dtype=torch.int64, device=x.device)
        if (
            not isinstance(lengths, torch.Tensor)
            or lengths.shape != (batch,)
            or lengths.is_floating_point()
            or lengths.is_complex()
            or lengths.dtype == torch.bool
        ):
            raise ValueError(
                f"lengths must be an integer tensor of shape ({batch},), or None; "
                f"got {lengths!r}."
            )
        # Range check only where it costs no device synchronization.
        if lengths.device.type == "cpu" and batch and (
            int(lengths.min()) < 0 or int(lengths.max()) > n_steps
        ):
            raise ValueError(
                f"lengths must lie in [0, {n_steps}] (the padded time axis); got "
                f"values in [{int(lengths.min())}, {int(lengths.max())}]."
            )
        return x, lengths.to(device=x.device, dtype=torch.int64)

    def to_json(self):
        """The steps as plain JSON data, every setting included.

        ``make_augmenter(augmenter.to_json(), layout=augmenter.layout)``
        rebuilds an equal augmenter.

        Returns
        -------
        list
            One ``name`` or ``[name, {settings}]`` per step.
        """
        return [step.to_json() for step in self.steps]

    def __repr__(self):
        steps = ", ".join(map(repr, self.steps))
        return f"Augmenter([{steps}], layout={self.layout!r})"


def make_augmenter(option, *, layout):
    """Check an ``augment`` option and build its :class:`Augmenter`.

    Called by ``fit`` before training, so a bad option fails before any
    work.

    Parameters
    ----------
    option : None, str, (str, dict), dict or list/tuple of those
        The estimator's ``augment``. A 2-element list/tuple whose second
        item is a dict is one ``(name, settings)`` pair.
    layout : {"tabular", "image", "sequence", "tokens"}
        Layout of the training batches (:data:`INPUT_LAYOUTS`).

    Returns
    -------
    Augmenter or None
        None when ``option`` is None or an empty list.

    Raises
    ------
    ValueError
        An unknown layout or name (the message lists the valid ones), an
        augmentation that does not apply to ``layout`` (the message lists
        those that do), or an unknown setting.
    InvalidParameterError
        A setting out of range, or an option of no valid shape.

    Examples
    --------
    >>> import torch
    >>> from sklears_neural.core.augment import make_augmenter
    >>> augmenter = make_augmenter([("flip", {"p": 1.0}), "crop"], layout="image")
    >>> augmenter.to_json()
    [['flip', {'axis': -1, 'p': 1.0}], ['crop', {'scale': [0.8, 1.0]}]]
    >>> images = torch.rand(8, 3, 32, 32)
    >>> augmenter(images, torch.Generator().manual_seed(0)).shape
    torch.Size([8, 3, 32, 32])

    Sequences come with their lengths; padded steps stay zero:

    >>> x, lengths = torch.ones(2, 5, 1), torch.tensor([5, 3])
    >>> x[1, 3:] = 0.0
    >>> jitter = make_augmenter(("jitter", {"std": 0.1}), layout="sequence")
    >>> out, _ = jitter((x, lengths), torch.Generator().manual_seed(0))
    >>> out[1, 3:].abs().sum().item()
    0.0
    """
    _check_layout(layout)
    options = _as_list(option)
    if not options:
        return None
    steps = []
    for one in options:
        cls = AUGMENTATIONS(one)
        if layout not in cls.layouts:
            # Before the settings: the layout is the first thing to fix.
            raise _layout_error(cls.name, cls.layouts, layout)
        steps.append(AUGMENTATIONS.build(one))
    return Augmenter(steps, layout=layout)
