"""Data augmentation (core/augment.py): names, layouts, randomness, and what each one does."""

import itertools
import json
import re

import pytest
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import (
    generate_invalid_param_val,
    validate_parameter_constraints,
)

from sklears_neural.core import augment
from sklears_neural.core._compat import InvalidParameterError
from sklears_neural.core.augment import (
    AUGMENTATIONS,
    LAYOUTS,
    AugmentOption,
    Augmenter,
    make_augmenter,
)
from tests.conftest import DEVICES


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _padded(n_steps, lengths, n_features=3, seed=0):
    """Random sequences, zero after each length: (x, lengths)."""
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), n_steps, n_features, generator=_gen(seed))
    x[torch.arange(n_steps).unsqueeze(0) >= lengths.unsqueeze(1)] = 0.0
    return x, lengths


def _batch(layout, dtype=torch.float32):
    if layout == "tabular":
        return torch.randn(32, 6, generator=_gen(1), dtype=dtype)
    if layout == "image":
        return torch.randn(16, 3, 9, 10, generator=_gen(1), dtype=dtype)
    x, lengths = _padded(14, [14, 9, 3, 1, 0, 12, 14, 7] * 2)
    return x.to(dtype), lengths


def _cases():
    return [(layout, name) for layout in LAYOUTS for name in AUGMENTATIONS.names
            if layout in AUGMENTATIONS(name).layouts]


def _output(out):
    return out[0] if isinstance(out, tuple) else out


# -- the contract every augmentation keeps ------------------------------------


def test_every_name_is_listed_in_the_module_docstring_with_its_layouts():
    doc = augment.__doc__
    assert len(AUGMENTATIONS.names) == 12
    for name in AUGMENTATIONS.names:
        row = next(line for line in doc.splitlines() if line.startswith(f"``{name}``"))
        layouts = AUGMENTATIONS(name).layouts
        assert set(layouts) <= set(LAYOUTS)
        assert row.split()[1].rstrip(",") == layouts[0], name
        assert all(layout in row for layout in layouts), name


@pytest.mark.parametrize("layout, name", _cases())
def test_seeded_fresh_same_shape_dtype_and_global_rng_untouched(layout, name):
    inputs = _batch(layout)
    before = _output(inputs).clone()
    rng_state = torch.random.get_rng_state()
    augmenter = make_augmenter(name, layout=layout)

    first = augmenter(inputs, _gen(0))
    again = augmenter(inputs, _gen(0))
    other = augmenter(inputs, _gen(1))

    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert torch.equal(_output(inputs), before)  # input never modified
    out = _output(first)
    assert out.shape == before.shape and out.dtype == before.dtype
    assert out.data_ptr() != _output(inputs).data_ptr()
    assert torch.equal(out, _output(again))
    assert not torch.equal(out, _output(other))
    assert not torch.equal(out, before)
    if layout == "sequence":
        assert first[1] is inputs[1]  # lengths come back as they went in


@pytest.mark.parametrize("layout, name", _cases())
def test_float64_stays_float64(layout, name):
    inputs = _batch(layout, torch.float64)
    out = _output(make_augmenter(name, layout=layout)(inputs, _gen(0)))
    assert out.dtype == torch.float64 and torch.isfinite(out).all()


def test_resuming_from_a_generator_state_repeats_the_augmentation():
    augmenter = make_augmenter(["gaussian_noise", "feature_dropout"], layout="tabular")
    x = _batch("tabular")
    generator = _gen(3)
    augmenter(x, generator)
    state = generator.get_state()
    second = augmenter(x, generator)
    resumed = torch.Generator()
    resumed.set_state(state)
    assert torch.equal(augmenter(x, resumed), second)
    assert not torch.equal(augmenter(x, _gen(3)), second)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout, name", _cases())
def test_same_result_on_every_device(device, layout, name):
    inputs = _batch(layout)
    augmenter = make_augmenter(name, layout=layout)
    expected = _output(augmenter(inputs, _gen(0)))
    moved = (inputs[0].to(device), inputs[1]) if layout == "sequence" else inputs.to(device)
    got = _output(augmenter(moved, _gen(0)))
    assert got.device.type == device
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-5)


# -- the random numbers ---------------------------------------------------------


def _keys(n, device="cpu"):
    keys = torch.randint(-2**31, 2**31, (n,), generator=_gen(0), dtype=torch.int32)
    return keys.to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_int32_tensor_hash_is_the_uint32_hash(device):
    # Wrapping int32 products are what make the tensor hash equal the
    # Python-int one (and CPU equal GPU); a backend that saturated would fail.
    values = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 1, 0x9E3779B9]
    values += torch.randint(0, 2**32, (200,), generator=_gen(5)).tolist()
    bits = torch.tensor([augment._as_int32(v) for v in values], dtype=torch.int32)
    hashed = augment._hash(bits.to(device)).cpu().to(torch.int64) & 0xFFFFFFFF
    assert hashed.tolist() == [augment._hash_int(v) for v in values]
    assert augment._hash_int(0x9E3779B9) != 0x9E3779B9


def test_counter_based_draws_are_uniform_and_uncorrelated():
    keys = _keys(64)
    u = augment._Draws(keys, 0).uniform((4096,))  # (64, 4096)
    assert 0.0 < float(u.min()) and float(u.max()) < 1.0
    # The extreme 23-bit values stay inside (0, 1) in float32.
    extremes = torch.tensor([0, -1], dtype=torch.int32)  # all bits 0, all bits 1
    draws = augment._Draws(torch.zeros(2, dtype=torch.int32), 0)
    draws._bits = lambda n: extremes.unsqueeze(1)
    ends = draws.uniform((1,)).flatten().tolist()
    assert ends == [2.0 ** -24, 1.0 - 2.0 ** -24]
    # Tolerances are 4-5 standard errors of 262,144 draws.
    assert abs(float(u.mean()) - 0.5) < 0.003
    assert abs(float(u.var()) - 1 / 12) < 0.001
    # Neighbouring counters, neighbouring samples, and two calls of one step.
    centred = u - 0.5
    assert abs(float((centred[:, 1:] * centred[:, :-1]).mean()) * 12) < 0.01
    assert abs(float((centred[1:] * centred[:-1]).mean()) * 12) < 0.01
    second = augment._Draws(keys, 0)
    second.uniform((1,))
    assert abs(float(((second.uniform((4096,)) - 0.5) * centred).mean()) * 12) < 0.01
    histogram = torch.histc(u, bins=16, min=0, max=1) / u.numel()
    assert float((histogram - 1 / 16).abs().max()) < 0.0025


def test_normal_draws_have_unit_variance():
    keys = _keys(256)
    z = augment._Draws(keys, 0).normal((1000,))
    assert abs(float(z.mean())) < 0.01
    assert abs(float(z.std()) - 1.0) < 0.01
    assert abs(float((z.abs() > 1.96).float().mean()) - 0.05) < 0.003


def test_integers_cover_the_range_evenly():
    keys = _keys(100)
    values = augment._Draws(keys, 0).integers(-2, 2, (1000,))
    counts = torch.bincount((values + 2).flatten(), minlength=5).float() / values.numel()
    assert values.min() == -2 and values.max() == 2
    assert float((counts - 0.2).abs().max()) < 0.01


# -- what each augmentation does -------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gaussian_noise_has_the_requested_std(layout):
    x = torch.zeros(200, 20, 30) if layout != "tabular" else torch.zeros(4000, 30)
    inputs = (x, None) if layout == "sequence" else x
    out = _output(make_augmenter(("gaussian_noise", {"std": 0.3}), layout=layout)(
        inputs, _gen(0)))
    assert abs(float(out.std()) - 0.3) < 0.03 * 0.3
    assert abs(float(out.mean())) < 0.003


def test_jitter_is_gaussian_noise_with_std_003():
    out, _ = make_augmenter("jitter", layout="sequence")((torch.zeros(100, 50, 8), None),
                                                         _gen(0))
    assert abs(float(out.std()) - 0.03) < 0.03 * 0.03


def test_uniform_noise_stays_in_its_interval():
    out = make_augmenter(("uniform_noise", {"scale": 0.5}), layout="tabular")(
        torch.ones(2000, 40), _gen(0))
    noise = out - 1.0
    assert float(noise.min()) >= -0.5 and float(noise.max()) <= 0.5
    assert abs(float(noise.var()) - 0.25 / 3) < 0.002
    assert float(noise.min()) < -0.49 and float(noise.max()) > 0.49


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_feature_dropout_zeroes_whole_channels(layout, rescale):
    shape = {"tabular": (2000, 10), "image": (500, 8, 3, 3), "sequence": (500, 5, 8)}[layout]
    x = torch.rand(shape) + 1.0
    inputs = (x, None) if layout == "sequence" else x
    augmenter = make_augmenter(("feature_dropout", {"p": 0.3, "rescale": rescale}),
                               layout=layout)
    out = _output(augmenter(inputs, _gen(0)))
    channel_axis = 1 if layout != "sequence" else 2
    per_channel = out.movedim(channel_axis, 1).reshape(shape[0], shape[channel_axis], -1)
    source = x.movedim(channel_axis, 1).reshape(per_channel.shape)
    dropped = (per_channel == 0).all(dim=2)
    kept = (per_channel != 0).all(dim=2)
    assert bool((dropped | kept).all())  # a channel goes whole or stays whole
    assert abs(float(dropped.float().mean()) - 0.3) < 0.03  # >= 4 standard errors
    factor = 1 / 0.7 if rescale else 1.0
    torch.testing.assert_close(per_channel[kept], source[kept] * factor)
    if not rescale:
        for p, expected in [(0.0, x), (1.0, torch.zeros_like(x))]:
            ends = make_augmenter(("feature_dropout", {"p": p}), layout=layout)
            assert torch.equal(_output(ends(inputs, _gen(0))), expected)


def test_scaling_multiplies_each_sample_by_one_factor():
    x = torch.rand(3000, 4) + 1.0
    out = make_augmenter(("scaling", {"std": 0.2}), layout="tabular")(x, _gen(0))
    ratio = out / x
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    assert abs(float(ratio[:, 0].mean()) - 1.0) < 0.02
    assert abs(float(ratio[:, 0].std()) - 0.2) < 0.015


def test_magnitude_scaling_multiplies_each_channel_by_its_own_factor():
    x, _ = _padded(20, [20] * 400, n_features=5)
    out, _ = make_augmenter(("magnitude_scaling", {"std": 0.2}), layout="sequence")(
        (x, None), _gen(0))
    ratio = out / x  # (batch, time, feature): constant in time
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4, atol=1e-4)
    assert abs(float(ratio[:, 0].std()) - 0.2) < 0.015
    assert float(ratio[:, 0].std(dim=1).mean()) > 0.1  # features of a sample differ


def test_flip_twice_with_p_1_is_the_identity_and_flip_is_torch_flip():
    x = _batch("image")
    once = make_augmenter(("flip", {"p": 1.0}), layout="image")
    assert torch.equal(once(x, _gen(0)), x.flip(-1))
    twice = make_augmenter([("flip", {"p": 1.0}), ("flip", {"p": 1.0})], layout="image")
    assert torch.equal(twice(x, _gen(0)), x)
    up_down = make_augmenter(("flip", {"axis": 2, "p": 1.0}), layout="image")
    assert torch.equal(up_down(x, _gen(0)), x.flip(2))
    assert torch.equal(make_augmenter(("flip", {"p": 0.0}), layout="image")(x, _gen(0)), x)


def test_flip_flips_a_fraction_p_of_the_samples():
    x = torch.arange(4.0).reshape(1, 1, 4).expand(4000, 1, 4)
    out = make_augmenter(("flip", {"p": 0.3}), layout="image")(x, _gen(0))
    flipped = (out[:, 0, 0] == 3.0)
    assert bool(((out == x).all(dim=2).squeeze(1) | flipped).all())
    assert abs(float(flipped.float().mean()) - 0.3) < 0.03  # 4 standard errors


def test_flip_refuses_an_axis_the_image_does_not_have():
    augmenter = make_augmenter(("flip", {"axis": -3}), layout="image")
    with pytest.raises(ValueError, match=r"flip axis=-3 is not a spatial axis .*\(4, 3, 5, 5\)"):
        augmenter(torch.zeros(4, 3, 5, 5), _gen(0))


def test_random_shift_of_zero_is_the_identity():
    x = _batch("image")
    assert torch.equal(make_augmenter(("random_shift", {"max_shift": 0}), layout="image")(
        x, _gen(0)), x)


def _shifted(image, shifts):
    """Reference: ``image`` (C, *spatial) moved by ``shifts`` pixels, zero fill, by slicing."""
    out = torch.zeros_like(image)
    target, source = [slice(None)], [slice(None)]
    for shift, n in zip(shifts, image.shape[1:]):
        target.append(slice(max(shift, 0), n + min(shift, 0)))
        source.append(slice(max(-shift, 0), n + min(-shift, 0)))
    out[tuple(target)] = image[tuple(source)]
    return out


@pytest.mark.parametrize("shape, max_shift", [((64, 2, 7, 8), 2), ((40, 2, 9), 3),
                                              ((24, 1, 4, 5, 6), 1)])
def test_random_shift_moves_each_image_by_whole_pixels_within_max_shift(shape, max_shift):
    x = torch.rand(shape, generator=_gen(0)) + 1.0
    out = make_augmenter(("random_shift", {"max_shift": max_shift}), layout="image")(
        x, _gen(0))
    n_axes = len(shape) - 2
    candidates = list(itertools.product(range(-max_shift, max_shift + 1), repeat=n_axes))
    seen = set()
    for image, result in zip(x, out):
        matches = [s for s in candidates if torch.equal(_shifted(image, s), result)]
        assert len(matches) == 1
        seen.add(matches[0])
    # Many shifts turn up: of 25 in 64 draws ~23 are expected, of 7 in 40
    # all 7, of 27 in 24 draws ~16.
    assert len(seen) >= min(len(candidates), shape[0]) * 0.4


def test_crop_of_scale_1_is_the_identity():
    x = _batch("image")
    out = make_augmenter(("crop", {"scale": (1.0, 1.0)}), layout="image")(x, _gen(0))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_axes", [1, 2, 3])
def test_crop_equals_interpolate_of_a_whole_pixel_window(n_axes):
    # Ramp channels (one per axis) reveal each sample's window exactly, as
    # bilinear resampling is exact on linear functions; the last channel,
    # random, is then compared with torch's crop + interpolate.
    spatial = (12, 10, 8)[:n_axes]
    batch = 16
    ramps = [torch.arange(n, dtype=torch.float64).reshape(
        [n if a == i else 1 for a in range(n_axes)]).expand(spatial)
        for i, n in enumerate(spatial)]
    content = torch.rand(batch, 1, *spatial, generator=_gen(2), dtype=torch.float64)
    x = torch.cat([torch.stack(ramps).unsqueeze(0).expand(batch, -1, *spatial), content], 1)
    out = make_augmenter(("crop", {"scale": (0.5, 0.9)}), layout="image")(x, _gen(0))
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[n_axes]
    fractions = []
    for sample in range(batch):
        window = []
        for axis, n in enumerate(spatial):
            line = out[sample, axis].flatten()
            start = float(line.min())
            width = float(line.max()) - start + 1
            assert start == pytest.approx(round(start), abs=1e-9)
            assert width == pytest.approx(round(width), abs=1e-9)
            window.append((round(start), round(width)))
        fractions.append(window[0][1] / spatial[0])
        crop = content[sample:sample + 1][
            (slice(None), slice(None)) + tuple(slice(s, s + w) for s, w in window)]
        expected = F.interpolate(crop, size=spatial, mode=mode, align_corners=True)
        torch.testing.assert_close(out[sample:sample + 1, -1:], expected, rtol=0, atol=1e-9)
        # One fraction for every axis, rounded to whole pixels.
        s = window[0][1] / spatial[0]
        for (_, w), n in zip(window, spatial):
            assert abs(w - s * n) <= 1.0 + 1e-9
    assert min(fractions) >= 0.5 - 1 / spatial[0] and max(fractions) <= 0.9 + 1 / spatial[0]
    assert max(fractions) - min(fractions) > 0.2


# -- sequences --------------------------------------------------------------------


_SEQUENCE_NAMES = [n for n in AUGMENTATIONS.names if "sequence" in AUGMENTATIONS(n).layouts]


@pytest.mark.parametrize("name", _SEQUENCE_NAMES)
def test_padding_stays_zero_and_does_not_change_a_sequence(name):
    x, lengths = _padded(20, [20, 7, 1, 0, 13], n_features=4)
    x = x + 5.0 * (x != 0)  # away from zero, so a moved pad would show
    augmenter = make_augmenter(name, layout="sequence")
    out, _ = augmenter((x, lengths), _gen(0))
    padded = torch.arange(20).unsqueeze(0) >= lengths.unsqueeze(1)
    assert bool((out[padded] == 0).all())
    # Alone, unpadded (lengths None) vs first of a longer, padded batch.
    alone, _ = augmenter((x[1:2, :7], None), _gen(0))
    in_batch, _ = augmenter((x[1:], lengths[1:]), _gen(0))
    # To float32 rounding: cumulative sums over other lengths round differently.
    torch.testing.assert_close(in_batch[0, :7], alone[0], rtol=1e-5, atol=1e-6)
    # The same batch padded further.
    longer = torch.cat([x, torch.zeros(5, 9, 4)], dim=1)
    out_longer, _ = augmenter((longer, lengths), _gen(0))
    torch.testing.assert_close(out_longer[:, :20], out, rtol=1e-5, atol=1e-6)
    assert bool((out_longer[:, 20:] == 0).all())


@pytest.mark.parametrize("layout", ["tabular", "image"])
def test_first_sample_does_not_depend_on_the_batch_size(layout):
    x = _batch(layout)
    for name in AUGMENTATIONS.names:
        if layout not in AUGMENTATIONS(name).layouts or name == "permutation":
            continue  # swap noise takes values from other rows by design
        augmenter = make_augmenter(name, layout=layout)
        torch.testing.assert_close(augmenter(x[:1], _gen(0)), augmenter(x, _gen(0))[:1],
                                   rtol=0, atol=1e-6)


def test_lengths_none_means_full_length():
    x, _ = _padded(10, [10] * 6)
    augmenter = make_augmenter(["time_warp", "jitter"], layout="sequence")
    full = torch.full((6,), 10)
    assert torch.equal(augmenter((x, None), _gen(0))[0], augmenter((x, full), _gen(0))[0])


def test_window_slice_of_fraction_1_and_time_warp_of_sigma_0_are_identities():
    x, lengths = _padded(30, [30, 17, 2, 1, 0])
    for option in [("window_slice", {"fraction": 1.0}), ("time_warp", {"sigma": 0.0})]:
        out, _ = make_augmenter(option, layout="sequence")((x, lengths), _gen(0))
        torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def _ramps(n_steps, lengths):
    """x[b, t, 0] = t on the valid steps: the output reads off the positions used."""
    lengths = torch.tensor(lengths)
    t = torch.arange(n_steps, dtype=torch.float64).expand(len(lengths), -1)
    x = torch.where(t < lengths.unsqueeze(1), t, 0.0).unsqueeze(-1)
    return x, lengths


def test_window_slice_reads_a_stretched_window_of_the_valid_part():
    x, lengths = _ramps(40, [40, 21] * 100)
    out, _ = make_augmenter(("window_slice", {"fraction": 0.5}), layout="sequence")(
        (x, lengths), _gen(0))
    starts = []
    for row, length in zip(out[..., 0], lengths.tolist()):
        valid = row[:length]
        start = float(valid[0])
        torch.testing.assert_close(valid, start + 0.5 * torch.arange(length,
                                   dtype=torch.float64), rtol=0, atol=1e-9)
        assert 0.0 <= start <= 0.5 * (length - 1)
        starts.append(start / (0.5 * (length - 1)))
    starts = torch.tensor(starts)
    # Uniform starts: mean 0.5 (standard error 0.02), standard deviation 0.29.
    assert abs(float(starts.mean()) - 0.5) < 0.1 and float(starts.std()) > 0.25


def test_time_warp_is_monotone_and_keeps_the_end_points():
    x, lengths = _ramps(50, [50, 33, 8] * 50)
    out, _ = make_augmenter(("time_warp", {"sigma": 0.5}), layout="sequence")(
        (x, lengths), _gen(0))
    largest = 0.0
    for row, length in zip(out[..., 0], lengths.tolist()):
        warped = row[:length]
        assert float(warped[0]) == pytest.approx(0.0, abs=1e-9)
        assert float(warped[-1]) == pytest.approx(length - 1, abs=1e-6)
        assert bool((warped[1:] - warped[:-1] >= -1e-9).all())
        # Smooth: the speed is linear between 6 knots (n_knots=4 + the ends),
        # (length - 1) / 5 steps apart, so it changes by at most its range per
        # knot spacing (twice that, as the range is only sampled at steps).
        speed = warped[1:] - warped[:-1]
        change = float((speed[1:] - speed[:-1]).abs().max())
        assert change <= 2 * float(speed.max() - speed.min()) * 5 / (length - 1) + 1e-9
        largest = max(largest, float((warped - torch.arange(length)).abs().max()))
    assert largest > 2.0  # it does warp


def test_segment_permutation_shuffles_equal_pieces_of_the_valid_part():
    x, lengths = _ramps(24, [24, 13, 3] * 40)
    out, _ = make_augmenter(("permutation", {"n_segments": 4}), layout="sequence")(
        (x, lengths), _gen(0))
    orders = set()
    for row, length in zip(out[..., 0], lengths.tolist()):
        valid = row[:length].to(torch.int64)
        assert torch.equal(valid.sort().values, torch.arange(length))
        bounds = [k * length // 4 for k in range(5)]
        pieces = [tuple(range(a, b)) for a, b in zip(bounds, bounds[1:]) if b > a]
        # Read the output back as pieces, each a whole segment.
        rest, order = valid.tolist(), []
        while rest:
            piece = next(p for p in pieces if tuple(rest[:len(p)]) == p)
            order.append(pieces.index(piece))
            rest = rest[len(piece):]
        assert sorted(order) == list(range(len(pieces)))
        if length == 24:
            orders.add(tuple(order))
    assert len(orders) >= 13  # of 24 orders in 40 draws ~19.6 are expected
    one, _ = make_augmenter(("permutation", {"n_segments": 1}), layout="sequence")(
        (x, lengths), _gen(0))
    assert torch.equal(one, x)


def test_swap_noise_takes_values_of_the_same_feature_from_other_rows():
    n_rows, n_features = 500, 8
    x = (100.0 * torch.arange(n_rows).unsqueeze(1) + torch.arange(n_features)).float()
    out = make_augmenter(("permutation", {"p": 0.2}), layout="tabular")(x, _gen(0))
    replaced = out != x
    assert abs(float(replaced.float().mean()) - 0.2) < 0.025  # 4 standard errors
    donor_rows = torch.div(out, 100, rounding_mode="floor")
    assert torch.equal(out - 100 * donor_rows, x - 100 * torch.arange(n_rows).unsqueeze(1))
    assert bool((donor_rows[replaced] != torch.arange(n_rows).unsqueeze(1)
                 .expand_as(x)[replaced]).all())
    assert int(donor_rows[replaced].min()) < 25 and int(donor_rows[replaced].max()) > 475
    augmenter = make_augmenter(("permutation", {"p": 1.0}), layout="tabular")
    assert bool((augmenter(x, _gen(0)) != x).all())
    single = torch.ones(1, n_features)
    assert torch.equal(augmenter(single, _gen(0)), single)


# -- options: lists, layouts, settings -------------------------------------------


def test_a_list_applies_in_order():
    x = torch.ones(50, 6)
    scaling = ("scaling", {"std": 0.5})
    noise = ("uniform_noise", {"scale": 0.1})
    scaled_first = make_augmenter([scaling, noise], layout="tabular")(x, _gen(0))
    factor = make_augmenter(scaling, layout="tabular")(x, _gen(0))  # step 0: same draws
    difference = scaled_first - factor
    assert float(difference.abs().max()) <= 0.1 + 1e-6 and float(difference.abs().max()) > 0.05
    noise_first = make_augmenter([noise, scaling], layout="tabular")(x, _gen(0))
    noisy = make_augmenter(noise, layout="tabular")(x, _gen(0))
    ratio = noise_first / noisy  # one factor per row: scaling came second
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    assert float(ratio[:, 0].std()) > 0.3


def test_none_and_empty_lists_give_no_augmenter():
    for option in (None, [], ()):
        assert make_augmenter(option, layout="tabular") is None


@pytest.mark.parametrize("option, layout, applies", [
    ("permutation", "image", "tabular, sequence"),
    ("flip", "tabular", "image"),
    (("time_warp", {"sigma": 0.1}), "image", "sequence"),
    (["gaussian_noise", "jitter"], "tabular", "sequence"),
])
def test_an_augmentation_of_another_layout_is_refused_by_name(option, layout, applies):
    name = AUGMENTATIONS.canonical(option[-1] if isinstance(option, list) else option)
    expected = (f"Augmentation '{name}' does not apply to '{layout}' inputs "
                f"(it applies to: {applies}). Augmentations for '{layout}' inputs: ")
    with pytest.raises(ValueError, match=re.escape(expected)) as caught:
        make_augmenter(option, layout=layout)
    listed = str(caught.value).rsplit(": ", 1)[1].rstrip(".").split(", ")
    assert listed == [n for n in AUGMENTATIONS.names if layout in AUGMENTATIONS(n).layouts]
    assert name not in listed


def test_names_ignore_case_dashes_and_underscores():
    augmenter = make_augmenter(["Gaussian-Noise", "FEATUREDROPOUT"], layout="tabular")
    assert [s.name for s in augmenter.steps] == ["gaussian_noise", "feature_dropout"]


@pytest.mark.parametrize("option, error, message", [
    (("gaussian_noise", {"std": -1}), InvalidParameterError,
     "The 'std' parameter of the 'gaussian_noise' augmentation must be a real number "
     ">= 0. Got -1 instead."),
    (("uniform_noise", {"scale": "big"}), InvalidParameterError,
     "The 'scale' parameter of the 'uniform_noise' augmentation must be a real number "
     ">= 0. Got 'big' instead."),
    (("feature_dropout", {"p": 1.5}), InvalidParameterError,
     "The 'p' parameter of the 'feature_dropout' augmentation must be a real number in "
     "[0, 1]. Got 1.5 instead."),
    (("feature_dropout", {"p": 1.0, "rescale": True}), InvalidParameterError,
     "The 'p' parameter of the 'feature_dropout' augmentation must be a real number in "
     "[0, 1). Got 1.0 instead."),
    (("feature_dropout", {"rescale": 1}), InvalidParameterError,
     "The 'rescale' parameter of the 'feature_dropout' augmentation must be True or "
     "False. Got 1 instead."),
    (("permutation", {"n_segments": 0}), InvalidParameterError,
     "The 'n_segments' parameter of the 'permutation' augmentation must be an int >= 1. "
     "Got 0 instead."),
    (("random_shift", {"max_shift": 1.5}), InvalidParameterError,
     "The 'max_shift' parameter of the 'random_shift' augmentation must be an int >= 0. "
     "Got 1.5 instead."),
    (("flip", {"axis": 1}), InvalidParameterError,
     "The 'axis' parameter of the 'flip' augmentation must be a spatial axis: -1, -2, "
     "-3 (from the end) or 2, 3, 4. Got 1 instead."),
    (("flip", {"axis": True}), InvalidParameterError, "Got True instead."),
    (("flip", {"axis": -4}), InvalidParameterError, "Got -4 instead."),
    (("crop", {"scale": (0.9, 0.8)}), InvalidParameterError,
     "The 'scale' parameter of the 'crop' augmentation must be a pair (low, high) of "
     "real numbers with 0 < low <= high <= 1. Got (0.9, 0.8) instead."),
    (("crop", {"scale": 0.5}), InvalidParameterError, "Got 0.5 instead."),
    (("crop", {"scale": (0, 1)}), InvalidParameterError, "Got (0, 1) instead."),
    (("time_warp", {"n_knots": -1}), InvalidParameterError,
     "The 'n_knots' parameter of the 'time_warp' augmentation must be an int >= 0."),
    (("time_warp", {"sigma": float("nan")}), InvalidParameterError,
     "The 'sigma' parameter of the 'time_warp' augmentation must be a real number >= 0."),
    (("window_slice", {"fraction": 0}), InvalidParameterError,
     "The 'fraction' parameter of the 'window_slice' augmentation must be a real number "
     "in (0, 1]. Got 0 instead."),
    (("gaussian_noise", {"sd": 0.1}), ValueError,
     "Unknown setting(s) ['sd'] for augmentation 'gaussian_noise'. It takes: std."),
    ("blur", ValueError, "Unknown augmentation 'blur'. Valid names are: crop, "),
    ("jiter", ValueError, "Did you mean 'jitter'?"),
    (["flip", 3], InvalidParameterError,
     "The 'augment' parameter must be None, an augmentation name, a (name, {settings}) "
     "pair, a dict with a 'name' key, or a list/tuple of those. Got ['flip', 3] instead."),
])
def test_bad_settings_and_names_are_refused_with_a_clear_message(option, error, message):
    layout = "sequence"
    if AUGMENTATIONS.knows(option) and "sequence" not in AUGMENTATIONS(option).layouts:
        layout = "image"
    with pytest.raises(error) as caught:
        make_augmenter(option, layout=layout)
    assert message in str(caught.value)


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match=r"Unknown layout 'graph'. Valid layouts are: "
                                         r"tabular, image, sequence."):
        make_augmenter("flip", layout="graph")


@pytest.mark.parametrize("layout, inputs, error, message", [
    ("tabular", torch.zeros(4, 3, 2), ValueError, "Tabular inputs must have 2"),
    ("image", torch.zeros(4, 3), ValueError, "Image inputs must have 3 to 5"),
    ("tabular", torch.zeros(4, 3, dtype=torch.int64), TypeError, "floating-point"),
    ("tabular", torch.eye(3).to_sparse(), TypeError, "needs dense tensors"),
    ("sequence", torch.zeros(4, 3, 2), TypeError, "(x, lengths) pairs"),
    ("sequence", (torch.zeros(4, 3, 2), torch.tensor([3, 3, 3])), ValueError,
     "lengths must be an integer tensor of shape (4,)"),
    ("sequence", (torch.zeros(4, 3, 2), torch.tensor([3.0, 3, 3, 3])), ValueError,
     "integer tensor"),
    ("sequence", (torch.zeros(4, 3, 2), torch.tensor([3, 4, 0, 1])), ValueError,
     "lengths must lie in [0, 3]"),
])
def test_bad_batches_are_refused(layout, inputs, error, message):
    augmenter = make_augmenter("gaussian_noise", layout=layout)
    with pytest.raises(error) as caught:
        augmenter(inputs, _gen(0))
    assert message in str(caught.value)


def test_a_generator_is_required():
    augmenter = make_augmenter("gaussian_noise", layout="tabular")
    with pytest.raises(TypeError, match="needs a torch.Generator"):
        augmenter(torch.zeros(3, 2), None)


def test_an_empty_batch_comes_back_empty():
    augmenter = make_augmenter(["gaussian_noise", "time_warp"], layout="sequence")
    out, lengths = augmenter((torch.zeros(0, 5, 2), torch.zeros(0, dtype=torch.int64)),
                             _gen(0))
    assert out.shape == (0, 5, 2)


def test_to_json_is_plain_data_that_rebuilds_the_same_augmenter():
    option = ["flip", ("crop", {"scale": (0.5, 1.0)}), {"name": "random-shift"}]
    augmenter = make_augmenter(option, layout="image")
    stored = augmenter.to_json()
    assert stored == [["flip", {"axis": -1, "p": 0.5}], ["crop", {"scale": [0.5, 1.0]}],
                      ["random_shift", {"max_shift": 2}]]
    rebuilt = make_augmenter(json.loads(json.dumps(stored)), layout="image")
    x = _batch("image")
    assert torch.equal(rebuilt(x, _gen(0)), augmenter(x, _gen(0)))
    assert "Augmenter([Flip(axis=-1, p=0.5)" in repr(augmenter)


def test_an_augmenter_checks_its_steps_too():
    with pytest.raises(ValueError, match="'flip' does not apply to 'tabular'"):
        Augmenter([AUGMENTATIONS.build("flip")], layout="tabular")


# -- the constraint for _parameter_constraints ----------------------------------


@pytest.mark.parametrize("value", [
    None, "flip", "Gaussian-Noise", ("flip", {"p": 1.0}), ["flip", "crop"], [], (),
    ({"name": "flip"},), [["flip", {}], "crop"], ("flip", "crop"),
    {"name": "jitter", "std": 0.1},
    # Settings and layouts are fit's business: the constraint checks names.
    ("flip", {"p": 7}),
])
def test_augment_option_accepts(value):
    assert AugmentOption().is_satisfied_by(value)


@pytest.mark.parametrize("value", [
    3, "blur", ["flip", 3], ["flip", "blur"], {"p": 1}, ("flip", {"p": 1}, "crop", 4),
    [["flip", "crop"]], ("flip", 0.5), b"flip",
])
def test_augment_option_refuses(value):
    assert not AugmentOption().is_satisfied_by(value)


class _Estimator(BaseEstimator):
    _parameter_constraints = {"augment": [AugmentOption()]}

    def __init__(self, augment=None):
        self.augment = augment


def test_augment_option_in_scikit_learns_validation():
    constraints = _Estimator._parameter_constraints
    validate_parameter_constraints(constraints, {"augment": ["flip", "crop"]}, "_Estimator")
    with pytest.raises(InvalidParameterError) as caught:
        validate_parameter_constraints(constraints, {"augment": "blur"}, "_Estimator")
    assert str(caught.value).startswith(
        "The 'augment' parameter of _Estimator must be None, an augmentation among "
        "{'crop', 'feature_dropout', ")
    assert "or a list of those. Got 'blur' instead." in str(caught.value)
    # check_param_validation's invalid value is refused.
    assert not AugmentOption().is_satisfied_by(generate_invalid_param_val(AugmentOption()))
