"""The convolutional network module: its spec language, shapes, layers and training."""

import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.noise import Dropout, set_generator
from sklears_neural.core.registry import module_class, module_name
from sklears_neural.nn.conv import (
    ConvNet,
    ResidualConvBlock,
    default_layers,
    format_layers,
    parse_layers,
)


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def _net(seed=0, **kwargs):
    # As the estimators build modules: forked global stream, then our draws.
    net = ModuleSpec(ConvNet, kwargs).build(generator=_generator(seed))
    net.reset_parameters(generator=_generator(seed))
    return net


def _x(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=_generator(seed), dtype=dtype)


# -- the spec language ---------------------------------------------------------------

CONV32 = {"type": "conv", "channels": 32, "kernel_size": 3, "stride": 1, "padding": "same",
          "dilation": 1, "groups": 1, "batch_norm": True, "activation": "relu"}

SAME_LAYER = [
    ("conv32", {"type": "conv", "channels": 32}),
    ("conv32", CONV32),
    ("conv64-k5-s2-p2-d1-g4", {"type": "conv", "channels": 64, "kernel_size": 5,
                               "stride": 2, "padding": 2, "groups": 4}),
    ("CONV16-K3X5-valid", {"type": "conv", "channels": 16, "kernel_size": [3, 5],
                           "padding": 0}),
    ("conv8-k3x3-p1x1", {"type": "conv", "channels": 8, "padding": [1, 1]}),
    ("conv8-s2", {"type": "conv", "channels": 8, "stride": 2, "padding": 1}),
    ("conv8-nobn-tanh", {"type": "conv", "channels": 8, "batch_norm": False,
                         "activation": "tanh"}),
    ("conv8-linear", {"type": "conv", "channels": 8, "activation": None}),
    ("sep64", {"type": "separable", "channels": 64}),
    ("dw", {"type": "depthwise"}),
    ("dw2-k5-d2", {"type": "dw", "multiplier": 2, "kernel_size": 5, "dilation": 2}),
    ("res64-s2", {"type": "residual", "channels": 64, "stride": 2}),
    ("maxpool2", {"type": "maxpool"}),
    ("maxpool2", {"type": "max_pool", "kernel_size": 2, "stride": 2, "padding": 0}),
    ("avgpool3-s1-p1", {"type": "avgpool", "kernel_size": 3, "stride": 1, "padding": 1}),
    ("adaptiveavg4", {"type": "adaptiveavg", "output_size": 4}),
    ("gap", {"type": "adaptiveavg", "output_size": 1}),
    ("gmp", {"type": "adaptivemax"}),
    ("adaptivemax2x1", {"type": "gmp", "output_size": [2, 1]}),
    ("bn", {"type": "batch_norm"}),
    ("dropout0.25", {"type": "dropout", "p": 0.25}),
    ("dropout", {"type": "dropout", "p": 0.5}),
    ("flatten", {"type": "flatten"}),
    ("dense128", {"type": "dense", "units": 128, "batch_norm": False}),
    ("dense64-bn-leaky_relu", {"type": "dense", "units": 64, "batch_norm": True,
                               "activation": "leaky-relu"}),
    ("relu", {"type": "activation", "activation": "relu"}),
    ("swish", {"type": "act", "activation": "silu"}),
]


@pytest.mark.parametrize("text, item", SAME_LAYER)
def test_string_and_dict_forms_give_one_normalized_dict(text, item):
    from_text = parse_layers([text], ndim=2)
    assert from_text == parse_layers([item], ndim=2)
    # Normalized dicts are fixed points and plain JSON.
    assert parse_layers(from_text, ndim=2) == from_text
    assert json.loads(json.dumps(from_text)) == from_text


def test_normalized_dicts_fill_every_field():
    specs = parse_layers(["conv32", "conv8-s2", "maxpool3", "dense10"], ndim=2,
                         activation="tanh", batch_norm=False)
    assert specs[0] == {**CONV32, "batch_norm": False, "activation": "tanh"}
    # Stride 2 cannot pad "same": half the kernel instead.
    assert specs[1]["padding"] == 1
    assert specs[2] == {"type": "maxpool", "kernel_size": 3, "stride": 3, "padding": 0}
    assert specs[3] == {"type": "dense", "units": 10, "batch_norm": False,
                        "activation": "tanh"}
    composite = parse_layers([{"type": "conv", "channels": 4,
                               "activation": ("leaky_relu", {"negative_slope": 0.1})}],
                             ndim=1)
    assert composite[0]["activation"] == ["leaky_relu", {"negative_slope": 0.1}]


def test_format_layers_round_trips_and_is_short():
    spec = [text for text, _ in SAME_LAYER] + [
        {"type": "dense", "units": 3, "activation": ["leaky_relu", {"negative_slope": 0.1}]},
        "conv4-k2-d2-p1x0", "maxpool3-s1", "conv8-k4-s2",
    ]
    for ndim in (2,):
        for activation, batch_norm in [("relu", True), ("gelu", False)]:
            options = dict(ndim=ndim, activation=activation, batch_norm=batch_norm)
            written = format_layers(spec, **options)
            assert parse_layers(written, **options) == parse_layers(spec, **options)
    written = format_layers(spec, ndim=2)
    assert written[:7] == ["conv32", "conv32", "conv64-k5-s2-g4", "conv16-k3x5-p0",
                           "conv8-p1", "conv8-s2", "conv8-nobn-tanh"]
    assert written[-3:] == ["conv4-k2-p1x0-d2", "maxpool3-s1", "conv8-k4-s2"]
    # An activation with settings has no string form.
    assert isinstance(written[-4], dict)


# -- shapes: ours against torch's layers, per rank -----------------------------------

INPUTS = {1: (3, 11), 2: (3, 9, 7), 3: (3, 7, 6, 5)}


def _reference(item, ndim, channels):
    """The torch layers an item stands for, built by hand."""
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[ndim - 1]
    pool = {"max": (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[ndim - 1],
            "avg": (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[ndim - 1]}
    adaptive = {"avg": (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                        nn.AdaptiveAvgPool3d)[ndim - 1],
                "max": (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                        nn.AdaptiveMaxPool3d)[ndim - 1]}
    n_in = channels * math.prod(INPUTS[ndim][1:])
    return {
        "conv5": conv(channels, 5, 3, padding="same"),
        "conv6-k4-s2-p1-g3": conv(channels, 6, 4, stride=2, padding=1, groups=3),
        "conv6-d2-valid": conv(channels, 6, 3, dilation=2),
        "conv4-k2": conv(channels, 4, 2, padding="same"),
        "sep8-k3-s2": nn.Sequential(conv(channels, channels, 3, stride=2, padding=1,
                                         groups=channels), conv(channels, 8, 1)),
        "dw2-k3": conv(channels, 2 * channels, 3, padding=1, groups=channels),
        "res8-s2": conv(channels, 8, 3, stride=2, padding=1),
        "res3": conv(channels, 3, 3, padding=1),
        "maxpool2": pool["max"](2),
        "maxpool3-s2-p1": pool["max"](3, 2, 1),
        "avgpool2-s1": pool["avg"](2, 1),
        "adaptiveavg2": adaptive["avg"](2),
        "adaptivemax3": adaptive["max"](3),
        "gap": adaptive["avg"](1),
        "bn": nn.Identity(),
        "dropout0.3": nn.Identity(),
        "relu": nn.Identity(),
        "flatten": nn.Flatten(),
        "dense7": nn.Sequential(nn.Flatten(), nn.Linear(n_in, 7)),
    }[item]


LAYER_ITEMS = [
    "conv5", "conv6-k4-s2-p1-g3", "conv6-d2-valid", "conv4-k2", "sep8-k3-s2", "dw2-k3",
    "res8-s2", "res3", "maxpool2", "maxpool3-s2-p1", "avgpool2-s1", "adaptiveavg2",
    "adaptivemax3", "gap", "bn", "dropout0.3", "relu", "flatten", "dense7",
]


# The reference conv4-k2 is torch's padding="same" with an even kernel, which warns.
@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("item", LAYER_ITEMS)
def test_layer_output_shape_equals_torch_layer(item, ndim):
    shape = INPUTS[ndim]
    net = ConvNet(list(shape), 2, [item]).eval()
    x = _x(2, *shape)
    with torch.no_grad():
        ours = tuple(net.features[0](x).shape[1:])
        reference = tuple(_reference(item, ndim, shape[0])(x).shape[1:])
        assert net(x).shape == (2, 2)
    assert net.output_shapes == [reference]
    assert ours == reference


def test_output_shapes_trace_a_stack():
    net = ConvNet([1, 8, 8], 10, ["conv16", "maxpool2", "res32-s2", "gap"])
    assert net.output_shapes == [(16, 8, 8), (16, 4, 4), (32, 2, 2), (32, 1, 1)]
    assert net.output_layer.in_features == 32
    # Without global pooling the head flattens what is left.
    net = ConvNet([2, 5], 3, ["conv4-valid"])
    assert isinstance(net.head[0], nn.Flatten) and net.output_layer.in_features == 12


# -- layers against torch.nn.functional ----------------------------------------------


@pytest.mark.parametrize("item, kwargs", [
    ("conv6-k3-s2-p1-d2-g3-nobn-linear", dict(stride=2, padding=1, dilation=2, groups=3)),
    ("conv4-k4-nobn-linear", dict(padding="same")),
    ("conv5-k3x1-valid-nobn-linear", dict(padding=0)),
])
def test_conv_layer_equals_functional_conv2d(item, kwargs):
    net = _net(input_shape=[3, 9, 8], n_outputs=2, layers=[item])
    # An even kernel's "same" padding is a separate zero pad before the conv.
    conv = net.features[0][-1]
    x = _x(4, 3, 9, 8)
    with torch.no_grad():
        expected = F.conv2d(x, conv.weight, conv.bias, **kwargs)
        torch.testing.assert_close(net.features[0](x), expected, rtol=0, atol=1e-6)
        # Negative control: another stride does not match.
        other = F.conv2d(x, conv.weight, conv.bias, **{**kwargs, "padding": 1, "stride": 1})
        assert other.shape != expected.shape or not torch.allclose(other, expected)


def test_conv_block_is_conv_batch_norm_activation():
    net = _net(input_shape=[3, 6, 6], n_outputs=2, layers=["conv4-tanh"])
    conv, norm, _ = net.features[0]
    assert conv.bias is None  # batch norm's shift replaces it
    with torch.no_grad():
        norm.running_mean.copy_(_x(4, seed=1))
        norm.running_var.copy_(_x(4, seed=2).abs() + 0.5)
        norm.weight.copy_(_x(4, seed=3))
        net.eval()
        x = _x(2, 3, 6, 6)
        expected = torch.tanh(F.batch_norm(
            F.conv2d(x, conv.weight, padding=1), norm.running_mean, norm.running_var,
            norm.weight, norm.bias, eps=norm.eps))
        torch.testing.assert_close(net.features[0](x), expected, rtol=0, atol=1e-6)


def test_separable_is_depthwise_then_pointwise():
    net = _net(input_shape=[4, 7, 7], n_outputs=2, layers=["sep8-k3-nobn-linear"])
    depthwise, pointwise = net.features[0]
    # 4 * 3 * 3 depthwise weights (no bias), 4 * 8 + 8 pointwise: 76, not a
    # full convolution's 4 * 8 * 3 * 3 + 8 = 296.
    assert sum(p.numel() for p in net.features.parameters()) == 76
    assert depthwise.groups == 4 and depthwise.bias is None
    assert pointwise.kernel_size == (1, 1)
    x = _x(3, 4, 7, 7, dtype=torch.float64)
    net.double()
    with torch.no_grad():
        expected = F.conv2d(F.conv2d(x, depthwise.weight, padding=1, groups=4),
                            pointwise.weight, pointwise.bias)
        torch.testing.assert_close(net.features[0](x), expected, rtol=0, atol=1e-12)


def test_depthwise_conv_with_multiplier():
    net = _net(input_shape=[3, 10], n_outputs=2, layers=["dw2-k5-d2-nobn-linear"])
    (conv,) = net.features[0]
    assert conv.weight.shape == (6, 1, 5) and conv.groups == 3
    x = _x(2, 3, 10)
    with torch.no_grad():
        expected = F.conv1d(x, conv.weight, conv.bias, padding=4, dilation=2, groups=3)
        torch.testing.assert_close(net.features[0](x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("train", [True, False])
def test_residual_block_is_identity_with_zero_body(train):
    block = ResidualConvBlock(2, 8, 8)
    assert isinstance(block.shortcut, nn.Identity)
    block.train(train)
    x = torch.relu(_x(3, 8, 5, 5))  # the output of a ReLU, as in a network
    with torch.no_grad():
        assert not torch.allclose(block(x), x)  # negative control
        block.body[-1].weight.zero_()
        block.body[-1].bias.zero_()
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_residual_block_projects_when_shape_changes():
    block = ResidualConvBlock(1, 4, 6, stride=2).eval()
    projection, norm = block.shortcut
    assert projection.kernel_size == (1,) and projection.stride == (2,)
    x = _x(2, 4, 9)
    with torch.no_grad():
        block.body[-1].weight.zero_()
        block.body[-1].bias.zero_()
        expected = torch.relu(norm(F.conv1d(x, projection.weight, stride=2)))
        torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-6)
    assert block(x).shape == (2, 6, 5)
    # In a network, the block's input width decides the shortcut.
    net = ConvNet([1, 6, 6], 2, ["conv8", "res8", "res16"])
    assert isinstance(net.features[1].shortcut, nn.Identity)
    assert isinstance(net.features[2].shortcut, nn.Sequential)


def test_options_reach_the_modules():
    net = ConvNet([3, 8], 2, [{"type": "conv", "channels": 5,
                               "activation": ["prelu", {"per_channel": True}]},
                              "dense4"], batch_norm=False, dropout=0.5)
    conv, prelu = net.features[0]
    assert conv.bias is not None and prelu.weight.shape == (5,)
    assert not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in net.modules())
    # dropout on the input of each dense layer and of the output layer
    assert isinstance(net.features[1][1], Dropout) and isinstance(net.head[0], Dropout)
    # Its masks come from the generator handed out: one seed, one output.
    x = _x(4, 3, 8)
    net.train()
    outputs = []
    for _ in range(2):
        set_generator(net, _generator(7))
        outputs.append(net(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("layers, match", [
    (["conv8", "convv32"], r"Unknown layer type 'convv' in layer 1 \('convv32'\)\..*"
                           r"Did you mean 'conv'\?"),
    (["relux"], r"Unknown layer type 'relux'.*Did you mean 'relu'\?"),
    (["conv32-q3"], r"Unknown 'conv' option 'q3' in layer 0.*k<n>, s<n>, p<n>"),
    ([{"type": "conv", "channels": 3, "kernel": 3}],
     r"Unknown 'conv' key 'kernel'.*Did you mean 'kernel_size'\?"),
    ([{"channels": 3}], r"layer 0 .* has no 'type' key"),
    (["conv"], r"layer 0 \('conv'\): 'conv' needs 'channels'"),
    (["conv32-s2-same"], r"padding 'same' needs stride 1, got stride 2"),
    (["res8-k2"], r"residual block needs an odd kernel_size"),
    (["dropout1"], r"'p' parameter of layer 0 \('dropout1'\) must be a real number in \[0, 1\)"),
    (["conv8-s0"], r"'stride' parameter of layer 0 .* must be an int >= 1\. Got 0"),
    (["conv8-k3x3x3"], r"'3x3x3' gives 3 sizes for 2 spatial dimension"),
    (["bn2"], r"'bn' takes no number"),
    (["flatten-k3"], r"'flatten' takes no options"),
    ("conv32", r"layers must be a list"),
])
def test_bad_specs_raise(layers, match):
    with pytest.raises(ValueError, match=match):
        parse_layers(layers, ndim=2)


@pytest.mark.parametrize("input_shape, layers, match", [
    ([3, 8, 8], ["conv32", "conv64-g5"],
     r"layer 1 \('conv64-g5'\): groups=5 must divide both the input channels \(32\) "
     r"and the output channels \(64\)"),
    ([1, 4], ["conv8", "maxpool2", "maxpool2", "maxpool2"],
     r"layer 3 \('maxpool2'\) shrinks spatial size 1 \(dimension 0, input shape "
     r"\(8, 1\)\) to 0"),
    ([1, 4, 4], ["conv8-k5-valid"], r"layer 0 .* shrinks spatial size 4 .* to 0.*"
                                    r"need a size of at least 5"),
    ([1, 8, 8], ["flatten", "conv3"], r"layer 1 \('conv3'\) needs \(channels, \*spatial\)"),
    ([1, 8, 8], ["maxpool2-p2"], r"pooling padding 2 is more than half"),
    ([1, 2, 3, 4, 5], None, r"input_shape must be \[channels, \*spatial\]"),
])
def test_layers_that_do_not_fit_raise_at_build(input_shape, layers, match):
    with pytest.raises(ValueError, match=match):
        ConvNet(input_shape, 2, layers)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="'dropout' parameter of ConvNet"):
        ConvNet([1, 8, 8], 2, dropout=1.0)
    with pytest.raises(ValueError, match="'n_outputs' parameter of ConvNet"):
        ConvNet([1, 8, 8], 0)
    with pytest.raises(ValueError, match="Unknown activation 'rleu'"):
        ConvNet([1, 8, 8], 2, activation="rleu")
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 1, 8, 8\)"):
        ConvNet([1, 8, 8], 2)(torch.zeros(2, 8, 8))


# -- default layers, training --------------------------------------------------------


def test_default_layers_adapt_pooling_to_the_input():
    assert default_layers(2, [1, 8, 8]) == [
        "conv32", "conv32", "maxpool2", "conv64", "conv64", "maxpool2", "gap"]
    assert default_layers(1, [1, 4]) == ["conv32", "conv32", "maxpool2", "conv64",
                                         "conv64", "gap"]
    assert default_layers(1, [1, 1]) == ["conv32", "conv32", "conv64", "conv64", "gap"]
    assert default_layers(2, [3, 8, 3])[2] == "maxpool2x1"
    assert default_layers(3, [2, 6, 6, 6])[:3] == ["conv16", "conv16", "maxpool2"]
    for shape in ([1, 1], [1, 4], [2, 30], [1, 8, 8], [3, 5, 40], [1, 1, 1, 1], [2, 6, 6, 6]):
        net = ConvNet(shape, 3).eval()
        assert min(min(s) for s in net.output_shapes) >= 1
        assert net(torch.zeros(2, *shape)).shape == (2, 3)
    n_params = sum(p.numel() for p in ConvNet([1, 8, 8], 10).parameters())
    assert 10_000 < n_params < 100_000


@pytest.mark.parametrize("input_shape", [[1, 4], [1, 8, 8], [2, 6, 6, 6]])
def test_default_network_trains(input_shape, global_random_seed):
    net = _net(global_random_seed, input_shape=input_shape, n_outputs=3)
    g = _generator(global_random_seed)
    x = torch.randn(32, *input_shape, generator=g)
    y = torch.randint(3, (32,), generator=g)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_same_seed_same_network():
    kwargs = dict(input_shape=[1, 8, 8], n_outputs=10, layers=["conv8", "res8", "sep8", "gap"])
    state = torch.get_rng_state()
    built = [ModuleSpec(ConvNet, kwargs).build(generator=_generator(seed)) for seed in (3, 3, 4)]
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is untouched
    same, other = built[0].state_dict(), built[2].state_dict()
    for key, value in built[1].state_dict().items():
        assert torch.equal(same[key], value)
    assert not torch.equal(same["features.0.0.weight"], other["features.0.0.weight"])
    for net in built[:2]:
        net.reset_parameters(generator=_generator(5))
    for key, value in built[1].state_dict().items():
        assert torch.equal(built[0].state_dict()[key], value)


def test_spec_is_plain_data_and_registered():
    kwargs = dict(input_shape=[2, 6, 6, 6], n_outputs=2, layers=["conv4-k3x1x3", "bn", "gap"],
                  activation=["leaky_relu", {"negative_slope": 0.1}], dropout=0.1,
                  batch_norm=False, weight_init="he_normal")
    net = ConvNet(**json.loads(json.dumps(kwargs)))
    rebuilt = ConvNet(**{**kwargs, "layers": net.layer_specs})
    assert rebuilt.layer_specs == net.layer_specs
    assert rebuilt.output_shapes == net.output_shapes == [(4, 6, 6, 6)] * 2 + [(4, 1, 1, 1)]
    assert module_name(ConvNet) == "ConvNet" and module_class("ConvNet") is ConvNet


# -- digits ------------------------------------------------------------------------

_DIGITS = load_digits(return_X_y=True)


def _digits_accuracy(seed, epochs, batch_size=128):
    """Test accuracy of the default network on digits as 1x8x8 images, and fit time."""
    X, y = _DIGITS
    X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=seed)
    net = _net(seed, input_shape=[1, 8, 8], n_outputs=10)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = _generator(seed)
    X_train, y_train = torch.from_numpy(X_train), torch.from_numpy(y_train)
    start = time.perf_counter()
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(X_train), generator=g)
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            optimizer.zero_grad()
            F.cross_entropy(net(X_train[batch]), y_train[batch]).backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        predicted = net(torch.from_numpy(X_test)).argmax(1).numpy()
    return float(np.mean(predicted == y_test)), seconds


def test_digits_accuracy_fast(global_random_seed):
    # Measured: 6 epochs give 0.973-0.996 (mean 0.984) on split seeds 0-19,
    # about 1.2 s on one thread.
    accuracy, _ = _digits_accuracy(global_random_seed, epochs=6)
    assert accuracy >= 0.95


@pytest.mark.slow
def test_digits_accuracy():
    # The target: >= 0.98 mean test accuracy over 3 stratified 25% splits,
    # Adam lr 1e-3, batch 128, well under a minute per fit on 2 cores. Timed
    # on the one thread conftest.py sets: on a busy 2-core machine a second
    # intra-op thread made these fits 30x slower, not faster. Measured: 0.9956,
    # 0.9911, 0.9978 (mean 0.9948) in 3.9-4.5 s per fit.
    results = [_digits_accuracy(seed, epochs=20) for seed in range(3)]
    accuracies, seconds = zip(*results)
    assert np.mean(accuracies) >= 0.98, accuracies
    assert max(seconds) < 30, seconds
