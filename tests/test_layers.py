"""Activations, noise and dropout layers, residual blocks and the MLP's options."""

import json
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call

from sklears_neural.core.callbacks import Callback
from sklears_neural.core.data import ArrayData
from sklears_neural.core.layers import (
    MLP,
    RESIDUALS,
    AddResidual,
    ConcatResidual,
    GatedResidual,
    ModuleSpec,
    ResidualBlock,
    set_generator,
)
from sklears_neural.core.noise import (
    NOISES,
    Dropout,
    GaussianNoise,
    MultiplicativeNoise,
    NoiseLayer,
    NoiseScheduler,
    SaltAndPepperNoise,
    UniformNoise,
)
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.trainer import Trainer
from tests.conftest import CUDA


def _generator(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def _x(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=_generator(seed), dtype=dtype)


# -- activations -------------------------------------------------------------------

REFERENCES = {
    "identity": lambda x: x,
    "logistic": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "prelu": lambda x: torch.where(x >= 0, x, 0.25 * x),
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": lambda x: x * torch.sigmoid(x),
    "mish": lambda x: x * torch.tanh(F.softplus(x)),
    "softplus": F.softplus,
}


def test_activation_table_is_complete():
    assert sorted(REFERENCES) == ACTIVATIONS.names


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_values(name):
    x = _x(50, 7)
    module = ACTIVATIONS.build(name, width=7).double()
    torch.testing.assert_close(module(x), REFERENCES[name](x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["identity", "logistic", "tanh", "relu"])
def test_first_four_activations_unchanged(name):
    # The factory still works without arguments and gives torch's module.
    expected = {"identity": nn.Identity, "logistic": nn.Sigmoid, "tanh": nn.Tanh,
                "relu": nn.ReLU}[name]
    assert type(ACTIVATIONS(name)()) is expected
    assert list(ACTIVATIONS(name)().state_dict()) == []


@pytest.mark.parametrize(
    "option, reference",
    [
        (("leaky_relu", {"negative_slope": 0.2}), lambda x: F.leaky_relu(x, 0.2)),
        (("elu", {"alpha": 0.5}), lambda x: F.elu(x, 0.5)),
        (("gelu", {"approximate": "tanh"}), lambda x: F.gelu(x, approximate="tanh")),
        (("softplus", {"beta": 2.0, "threshold": 10.0}), lambda x: F.softplus(x, 2.0, 10.0)),
        # The slope is a float32 parameter before .double().
        (("prelu", {"init": 0.1}),
         lambda x: torch.where(x >= 0, x, torch.tensor(0.1).double() * x)),
        ({"name": "swish"}, lambda x: x * torch.sigmoid(x)),
        ("Sigmoid", torch.sigmoid),
        ("LINEAR", lambda x: x),
    ],
)
def test_activation_settings_and_aliases(option, reference):
    x = _x(20, 4)
    module = ACTIVATIONS.build(option, width=4).double()
    torch.testing.assert_close(module(x), reference(x), rtol=1e-12, atol=1e-12)


def test_prelu_shared_and_per_channel():
    shared = ACTIVATIONS.build("prelu", width=5)
    per_channel = ACTIVATIONS.build(("prelu", {"per_channel": True}), width=5)
    assert shared.weight.shape == (1,) and per_channel.weight.shape == (5,)
    with pytest.raises(ValueError, match="needs the layer width"):
        ACTIVATIONS.build(("prelu", {"per_channel": True}))
    x = _x(10, 5)
    per_channel = per_channel.double()
    with torch.no_grad():
        per_channel.weight.copy_(torch.arange(5, dtype=torch.float64) / 10)
    expected = torch.where(x >= 0, x, x * torch.arange(5, dtype=torch.float64) / 10)
    torch.testing.assert_close(per_channel(x), expected, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("option", [*sorted(REFERENCES), ("prelu", {"per_channel": True})])
def test_activation_gradcheck(option):
    module = ACTIVATIONS.build(option, width=3).double()
    # Keep away from the kinks of relu-like functions.
    x = (_x(4, 3) + torch.tensor([0.3, -0.3, 0.7], dtype=torch.float64)).requires_grad_()
    assert gradcheck(module, (x,))
    params = dict(module.named_parameters())
    if params:
        weight = params["weight"].detach().clone().requires_grad_()
        assert gradcheck(
            lambda inputs, w: functional_call(module, {"weight": w}, (inputs,)), (x, weight)
        )


@pytest.mark.parametrize(
    "option, match",
    [
        ("relu6", "Valid names are: elu, gelu, identity, leaky_relu, logistic, mish, prelu"),
        (("leaky_relu", {"slope": 0.2}), r"It takes: negative_slope"),
        (("relu", {"inplace": True}), "no settings"),
        (("prelu", {"per_channel": "yes"}), "True or False"),
        (("gelu", {"approximate": "erf"}), "'none', 'tanh'"),
        (("elu", {"alpha": "big"}), "real number"),
    ],
)
def test_activation_errors(option, match):
    with pytest.raises(ValueError, match=match):
        ACTIVATIONS.build(option, width=3)


# -- noise layers and dropout -------------------------------------------------------

NOISE_CASES = [
    (GaussianNoise, {"std": 0.3}),
    (UniformNoise, {"a": 0.3}),
    (MultiplicativeNoise, {"std": 0.3}),
    (SaltAndPepperNoise, {"p": 0.3}),
    (SaltAndPepperNoise, {"p": 0.3, "values": "binary"}),
    (Dropout, {"p": 0.3}),
]


def _noisy(cls, settings, seed, x):
    layer = cls(**settings)
    set_generator(layer, _generator(seed))
    return layer(x)


@pytest.mark.parametrize("cls, settings", NOISE_CASES)
def test_noise_reproducible_from_generator_and_identity_in_eval(cls, settings):
    x = _x(64, 5)
    state = torch.random.get_rng_state()
    first = _noisy(cls, settings, 1, x)
    second = _noisy(cls, settings, 1, x)
    other = _noisy(cls, settings, 2, x)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first, second)
    assert not torch.equal(first, other) and not torch.equal(first, x)
    layer = cls(**settings)
    set_generator(layer, _generator(1))
    layer.eval()
    assert layer(x) is x
    # A layer set to strength 0 is the identity in training too.
    zero = cls(**{**settings, next(iter(settings)): 0.0})
    assert zero(x) is x


def test_noise_without_generator_uses_torchs_default():
    x = _x(32, 4)
    torch.manual_seed(5)
    first = GaussianNoise(0.5)(x)
    torch.manual_seed(5)
    assert torch.equal(GaussianNoise(0.5)(x), first)


def test_noise_statistics():
    x = torch.full((400, 250), 2.0, dtype=torch.float64)
    gaussian = _noisy(GaussianNoise, {"std": 0.3}, 0, x) - 2.0
    assert abs(gaussian.std().item() / 0.3 - 1) < 0.02 and abs(gaussian.mean().item()) < 3e-3
    uniform = _noisy(UniformNoise, {"a": 0.3}, 0, x) - 2.0
    assert uniform.abs().max().item() <= 0.3 and uniform.abs().max().item() > 0.2999
    assert abs(uniform.std().item() / (0.3 / math.sqrt(3)) - 1) < 0.02
    multiplicative = _noisy(MultiplicativeNoise, {"std": 0.3}, 0, x) / 2.0 - 1.0
    assert abs(multiplicative.std().item() / 0.3 - 1) < 0.02


def test_dropout_mask_rescales_and_matches_the_drop_rate():
    x = torch.ones(400, 250, dtype=torch.float64)
    out = _noisy(Dropout, {"p": 0.3}, 0, x)
    kept = out != 0
    assert abs(1 - kept.double().mean().item() - 0.3) < 0.005
    assert torch.equal(out[kept], torch.full_like(out[kept], 1 / 0.7))
    assert torch.equal(_noisy(Dropout, {"p": 1.0}, 0, x), torch.zeros_like(x))


def test_salt_and_pepper_values():
    x = _x(500, 4) * torch.tensor([1.0, 10.0, 100.0, 1000.0], dtype=torch.float64)
    out = _noisy(SaltAndPepperNoise, {"p": 0.2}, 0, x)
    changed = out != x
    assert abs(changed.double().mean().item() - 0.2) < 0.02
    low, high = x.amin(dim=0), x.amax(dim=0)
    for j in range(4):
        values = out[changed[:, j], j]
        assert torch.all((values == low[j]) | (values == high[j]))
        # Salt and pepper in even odds.
        assert abs((values == high[j]).double().mean().item() - 0.5) < 0.15
    binary = _noisy(SaltAndPepperNoise, {"p": 0.2, "values": "binary"}, 0, x)
    assert torch.all((binary == x) | (binary == 0) | (binary == 1))


@pytest.mark.parametrize("cls, settings", NOISE_CASES)
def test_noise_gradcheck_with_fixed_masks(cls, settings):
    if settings.get("values", "minmax") == "minmax" and cls is SaltAndPepperNoise:
        # Replacement values are the batch's min/max, detached: use 0/1 here.
        settings = {**settings, "values": "binary"}
    layer = cls(**settings)
    generator = _generator(3)
    set_generator(layer, generator)

    def fixed_mask(x):
        generator.manual_seed(3)
        return layer(x)

    x = _x(6, 4).requires_grad_()
    assert gradcheck(fixed_mask, (x,))
    layer.eval()
    assert gradcheck(layer, (x,))


@pytest.mark.parametrize(
    "schedule, settings, expected",
    [
        ("constant", {}, [1.0, 1.0, 1.0, 1.0]),
        ("linear", {}, [1.0, 0.75, 0.5, 0.0]),
        ("linear", {"final": 0.2}, [1.0, 0.8, 0.6, 0.2]),
        ("cosine", {}, [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, 0.0]),
        ("exponential", {}, [1.0, 0.95, 0.95**2, 0.95**4]),
        ("exponential", {"gamma": 0.5, "final": 0.5}, [1.0, 0.75, 0.625, 0.53125]),
        ("step", {"step_size": 2}, [1.0, 1.0, 0.5, 0.25]),
    ],
)
def test_noise_schedules(schedule, settings, expected):
    layer = GaussianNoise(1.0, schedule=schedule, **settings)
    strengths = []
    for epoch in (0, 1, 2, 4):
        layer.set_epoch(epoch, max_epochs=4)
        strengths.append(layer.strength)
    np.testing.assert_allclose(strengths, expected, rtol=1e-12, atol=1e-15)
    layer.set_epoch(10, max_epochs=4)
    if schedule in ("linear", "cosine"):
        assert layer.strength == pytest.approx(settings.get("final", 0.0))


def test_linear_schedule_needs_max_epochs():
    with pytest.raises(ValueError, match="max_epochs"):
        Dropout(0.5, schedule="linear").set_epoch(1)


def test_noise_scheduler_callback_drives_the_trainer():
    net = nn.Sequential(GaussianNoise(0.8, schedule="linear"), nn.Linear(3, 1),
                        Dropout(0.4, schedule="step", step_size=1, gamma=0.5))
    seen = []

    class Record(Callback):
        def on_epoch_begin(self, trainer, **kwargs):
            seen.append((net[0].strength, net[2].strength))

    generator = _generator(0)
    set_generator(net, generator)
    data = ArrayData(np.ones((8, 3)), np.ones((8, 1)), None, dtype=torch.float32,
                     device=torch.device("cpu"))
    trainer = Trainer(
        net, lambda m, X, y, w: ((m(X) - y) ** 2).mean(),
        torch.optim.SGD(net.parameters(), lr=0.01),
        callbacks=[NoiseScheduler(max_epochs=4), Record()], generator=generator,
    )
    assert isinstance(NoiseScheduler(), Callback)
    trainer.fit(data, max_epochs=4, batch_size=4)
    np.testing.assert_allclose(seen, [(0.8, 0.4), (0.6, 0.2), (0.4, 0.1), (0.2, 0.05)])


@pytest.mark.parametrize("max_epochs", [0, 2.5, "10", True])
def test_noise_scheduler_checks_max_epochs(max_epochs):
    with pytest.raises(ValueError, match="'max_epochs' parameter of NoiseScheduler") as info:
        NoiseScheduler(max_epochs)
    assert isinstance(info.value, TypeError)


def test_noise_resolver():
    assert NOISES.names == ["dropout", "gaussian", "multiplicative", "salt_and_pepper",
                            "uniform"]
    layer = NOISES.build(("Salt-And-Pepper", {"p": 0.1, "values": "binary"}))
    assert isinstance(layer, SaltAndPepperNoise) and layer.strength == 0.1
    assert isinstance(NOISES.build("gaussian"), GaussianNoise)


@pytest.mark.parametrize(
    "option, match",
    [
        ("pink", "Valid names are: dropout, gaussian, multiplicative, salt_and_pepper, uniform"),
        (("gaussian", {"sigma": 1}), r"It takes: final, gamma, schedule, std, step_size"),
        (("gaussian", {"schedule": "warmup"}), "constant, cosine, exponential, linear, step"),
        (("dropout", {"p": 1.5}),
         r"The 'p' parameter of Dropout must be a real number in \[0, 1"),
        (("gaussian", {"std": -1}), "'std' parameter of GaussianNoise must be a "
                                    "real number >= 0. Got -1"),
        (("salt_and_pepper", {"values": "extreme"}), "'binary', 'minmax'"),
        (("uniform", {"step_size": 0}), "step_size"),
    ],
)
def test_noise_errors(option, match):
    with pytest.raises(ValueError, match=match):
        NOISES.build(option)


def test_set_generator_reaches_every_layer():
    net = MLP(3, [4, 4], 2, dropout=0.2, noise="gaussian")
    generator = _generator()
    assert set_generator(net, generator) == 4
    assert all(m.generator is generator for m in net.modules() if isinstance(m, NoiseLayer))
    assert set_generator(net, None) == 4


@CUDA
def test_cpu_generator_drives_a_cuda_layer():
    x = _x(16, 4).cuda()
    first = _noisy(Dropout, {"p": 0.5}, 0, x)
    assert first.device.type == "cuda"
    assert torch.equal(first, _noisy(Dropout, {"p": 0.5}, 0, x))
    assert torch.equal(_noisy(Dropout, {"p": 0.5}, 0, x.cpu()), first.cpu())
    layer = GaussianNoise(0.5)
    set_generator(layer, _generator(0, "cuda"))
    assert layer(x).device.type == "cuda"


# -- residual blocks ------------------------------------------------------------------


def _body(d_in, d_out):
    return [nn.Linear(d_in, d_out).double(), nn.Tanh()]


def test_residual_add_identity_and_projection():
    x = _x(5, 4)
    same = AddResidual(4, 4, _body(4, 4))
    assert isinstance(same.projection, nn.Identity)
    torch.testing.assert_close(same(x), x + torch.tanh(same.linear(x)), rtol=0, atol=0)
    wider = AddResidual(4, 6, _body(4, 6)).double()
    assert wider.projection.bias is None and wider(x).shape == (5, 6)
    torch.testing.assert_close(
        wider(x), x @ wider.projection.weight.T + torch.tanh(wider.linear(x)), rtol=1e-14, atol=0
    )


def test_residual_concat_keeps_the_input():
    x = _x(5, 4)
    block = ConcatResidual(4, 3, _body(4, 3))
    out = block(x)
    assert block.n_outputs == 7 and out.shape == (5, 7)
    assert torch.equal(out[:, :4], x)
    assert torch.equal(out[:, 4:], torch.tanh(block.linear(x)))


@pytest.mark.parametrize("d_out", [4, 6])
def test_residual_gated_formula(d_out):
    x = _x(5, 4)
    block = GatedResidual(4, d_out, _body(4, d_out)).double()
    g = torch.sigmoid(block.gate(x))
    carried = block.projection(x)
    expected = g * torch.tanh(block.linear(x)) + (1 - g) * carried
    torch.testing.assert_close(block(x), expected, rtol=0, atol=0)
    assert block(x).shape == (5, d_out)


@pytest.mark.parametrize("mode", RESIDUALS.names)
@pytest.mark.parametrize("d_out", [4, 6])
def test_residual_gradcheck(mode, d_out):
    block = RESIDUALS(mode)(4, d_out, _body(4, d_out)).double()
    x = _x(3, 4).requires_grad_()
    assert gradcheck(block, (x,))
    params = {k: v.detach().clone().requires_grad_() for k, v in block.named_parameters()}
    names = list(params)
    assert gradcheck(
        lambda *values: functional_call(block, dict(zip(names, values)), (x.detach(),)),
        tuple(params.values()),
    )


def test_residual_block_needs_its_linear_first():
    with pytest.raises(ValueError, match="must start with its nn.Linear"):
        AddResidual(3, 3, [nn.Tanh(), nn.Linear(3, 3)])


# -- the MLP -----------------------------------------------------------------------


class _ReferenceMLP(nn.Module):
    """The MLP before this change, verbatim in behaviour."""

    def __init__(self, n_inputs, hidden_layer_sizes, n_outputs, activation="relu"):
        super().__init__()
        widths = [n_inputs, *hidden_layer_sizes, n_outputs]
        act = {"identity": nn.Identity, "logistic": nn.Sigmoid, "tanh": nn.Tanh,
               "relu": nn.ReLU}[activation]
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(widths) - 2:
                layers.append(act())
        self.layers = nn.Sequential(*layers)
        self.activation = activation

    def reset_parameters(self, generator=None):
        factor = 2.0 if self.activation == "logistic" else 6.0
        for linear in [m for m in self.layers if isinstance(m, nn.Linear)]:
            fan_out, fan_in = linear.weight.shape
            bound = math.sqrt(factor / (fan_in + fan_out))
            with torch.no_grad():
                for tensor in (linear.weight, linear.bias):
                    tensor.uniform_(-bound, bound, generator=generator)

    def forward(self, x):
        return self.layers(x)


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("hidden", [[], [7], [6, 5]])
def test_default_mlp_equals_the_previous_implementation(activation, hidden):
    ours = MLP(4, hidden, 3, activation)
    reference = _ReferenceMLP(4, hidden, 3, activation)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert [type(m) for m in ours.layers] == [type(m) for m in reference.layers]
    ours.reset_parameters(generator=_generator(11))
    reference.reset_parameters(generator=_generator(11))
    for key, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    x = _x(9, 4, dtype=torch.float32)
    ours.train()
    assert torch.equal(ours(x), reference(x))
    assert len(ours.linears) == len(hidden) + 1


OPTIONS = [
    {},
    {"activation": ("prelu", {"per_channel": True})},
    {"activation": ("leaky_relu", {"negative_slope": 0.2}), "weight_init": "he_normal"},
    {"dropout": 0.3},
    {"batch_norm": True},
    {"layer_norm": True},
    {"noise": ("gaussian", {"std": 0.1})},
    {"noise": "multiplicative", "dropout": 0.2, "residual": "add"},
    {"residual": "add"},
    {"residual": "concat"},
    {"residual": "gated", "layer_norm": True},
    {"spectral_norm": True},
    {"spectral_norm": True, "residual": "gated", "batch_norm": True},
    {"gradient_checkpointing": True, "dropout": 0.2, "noise": "uniform", "batch_norm": True},
    {"gradient_checkpointing": True, "residual": "concat", "spectral_norm": True},
    {"weight_init": ("variance_scaling", {"scale": 2.0}), "activation": "selu"},
]


def _ids(options):
    return "-".join(f"{k}" for k in options) or "default"


def _built(options, hidden=(5, 5, 3), seed=0):
    net = MLP(4, list(hidden), 2, **{"activation": "tanh", **options}).double()
    generator = _generator(seed)
    net.reset_parameters(generator=generator)
    set_generator(net, generator)
    return net


@pytest.mark.parametrize("options", OPTIONS, ids=_ids)
def test_mlp_options_shapes_and_linears(options):
    net = _built(options)
    x = _x(8, 4)
    for mode in (True, False):
        net.train(mode)
        assert net(x).shape == (8, 2)
    linears = net.linears
    assert len(linears) == 4 and all(isinstance(m, nn.Linear) for m in linears)
    assert [m.out_features for m in linears] == [5, 5, 3, 2]
    if options.get("residual") == "concat":
        assert [m.in_features for m in linears] == [4, 9, 14, 17]
    else:
        assert [m.in_features for m in linears] == [4, 5, 5, 3]


@pytest.mark.parametrize("options", OPTIONS, ids=_ids)
def test_mlp_gradcheck_float64(options):
    net = _built(options, hidden=(3, 3))
    generator = _generator(4)
    set_generator(net, generator)
    if options.get("spectral_norm"):
        # Training mode runs a power iteration per call: check the eval function.
        net.eval()

    def forward(x):
        generator.manual_seed(4)
        return net(x)

    x = _x(5, 4).requires_grad_()
    assert gradcheck(forward, (x,))
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    names = list(params)

    def of_params(*values):
        generator.manual_seed(4)
        return functional_call(net, dict(zip(names, values)), (x.detach(),))

    assert gradcheck(of_params, tuple(params.values()))


def test_mlp_reproducible_and_global_rng_untouched():
    options = {"dropout": 0.3, "noise": "salt_and_pepper", "batch_norm": True,
               "weight_init": "orthogonal", "spectral_norm": True}
    x = _x(8, 4)
    state = torch.random.get_rng_state()
    outputs = []
    for seed in (0, 0, 1):
        # ModuleSpec.build keeps torch's default init off the global stream.
        net = ModuleSpec(MLP, {"n_inputs": 4, "hidden_layer_sizes": [5, 3], "n_outputs": 2,
                               **options}).build().double()
        generator = _generator(seed)
        net.reset_parameters(generator=generator)
        set_generator(net, generator)
        out = net(x)
        out.sum().backward()
        outputs.append((out, [p.grad for p in net.parameters()]))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(outputs[0][1], outputs[1][1]))
    assert not torch.equal(outputs[0][0], outputs[2][0])


def test_mlp_dropout_and_noise_vanish_in_eval():
    noisy = _built({"dropout": 0.5, "noise": ("gaussian", {"std": 1.0})})
    plain = _built({})
    for ours, theirs in zip(noisy.linears, plain.linears):
        theirs.load_state_dict(ours.state_dict())
    x = _x(8, 4)
    assert not torch.equal(noisy(x), plain(x))
    noisy.eval()
    assert torch.equal(noisy(x), plain(x))


@pytest.mark.parametrize(
    "options",
    [
        {"dropout": 0.3, "noise": "gaussian", "batch_norm": True},
        {"residual": "gated", "spectral_norm": True, "dropout": 0.2, "batch_norm": True},
        {"residual": "concat", "noise": "dropout"},
    ],
    ids=_ids,
)
def test_gradient_checkpointing_changes_nothing_but_memory(options):
    results = []
    for checkpointing in (False, True):
        net = _built({**options, "gradient_checkpointing": checkpointing})
        generator = _generator(9)
        set_generator(net, generator)
        x = _x(8, 4).requires_grad_()
        out = net(x)
        out.square().sum().backward()
        results.append((out, x.grad, [p.grad for p in net.parameters()],
                        net.state_dict(), generator.get_state()))
    (out0, gx0, grads0, state0, gen0), (out1, gx1, grads1, state1, gen1) = results
    assert torch.equal(out0, out1) and torch.equal(gx0, gx1)
    assert all(torch.equal(a, b) for a, b in zip(grads0, grads1))
    # Running statistics and spectral-norm vectors advanced once, not twice.
    assert all(torch.equal(state0[k], state1[k]) for k in state0)
    assert torch.equal(gen0, gen1)


def test_gradient_checkpointing_only_in_training_with_grad(monkeypatch):
    import sklears_neural.core.layers as layers

    calls = []
    original = layers.checkpoint_modules
    monkeypatch.setattr(layers, "checkpoint_modules",
                        lambda m, x: calls.append(1) or original(m, x))
    net = _built({"gradient_checkpointing": True})
    x = _x(8, 4)
    with torch.no_grad():
        net(x)
    net.eval()
    net(x)
    assert calls == []
    net.train()
    net(x)
    assert len(calls) == 3


def test_mlp_spec_is_json_and_state_round_trips():
    kwargs = {
        "n_inputs": 4, "hidden_layer_sizes": [5, 3], "n_outputs": 2,
        "activation": ["prelu", {"per_channel": True}],
        "weight_init": ["he_uniform", {"mode": "fan_out"}], "dropout": 0.1,
        "batch_norm": True, "layer_norm": False, "residual": "gated",
        "noise": {"name": "gaussian", "std": 0.2, "schedule": "cosine"},
        "spectral_norm": True, "gradient_checkpointing": True,
    }
    spec = ModuleSpec(MLP, json.loads(json.dumps(kwargs)))
    state = torch.random.get_rng_state()
    net = spec.build().double()
    assert torch.equal(torch.random.get_rng_state(), state)
    net.reset_parameters(generator=_generator())
    x = _x(6, 4)
    net.train()
    net(x)  # moves the batch-norm statistics and spectral-norm vectors
    net.eval()
    # As persistence does: numpy state, rebuilt module, load with assign=True.
    saved = pickle.loads(pickle.dumps({k: v.numpy() for k, v in net.state_dict().items()}))
    restored = spec.build()
    restored.load_state_dict({k: torch.from_numpy(v) for k, v in saved.items()}, assign=True)
    restored.eval()
    assert torch.equal(restored(x), net(x))
    # As the estimator predicts on the CPU: float64 state through functional_call.
    single = spec.build()
    single.load_state_dict({k: v.float() if v.is_floating_point() else v
                            for k, v in net.state_dict().items()})
    single.eval()
    doubled = {k: t.double() if t.is_floating_point() else t
               for k, t in [*single.named_parameters(), *single.named_buffers()]}
    expected = net.float().double()(x)
    torch.testing.assert_close(functional_call(single, doubled, (x,)), expected,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"residual": "skip"}, "Valid names are: add, concat, gated"),
        ({"weight_init": "he"}, "Valid names are: he_normal, he_uniform, lecun_normal"),
        ({"weight_init": ("orthogonal", {"scale": 2})}, r"It takes: gain"),
        ({"noise": "brown"}, "Valid names are: dropout, gaussian"),
        ({"activation": "relu7"}, "Valid names are: elu, gelu"),
        ({"dropout": 1.0}, r"dropout must be a float in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout must be a float in \[0, 1\)"),
        ({"batch_norm": True, "layer_norm": True}, "not both"),
        ({"spectral_norm": 1}, "True or False"),
    ],
)
def test_mlp_option_errors(options, match):
    with pytest.raises(ValueError, match=match):
        MLP(4, [3], 2, **options)


def test_residual_block_types_in_mlp():
    net = MLP(4, [4, 6], 2, residual="add")
    blocks = [m for m in net.layers if isinstance(m, ResidualBlock)]
    assert [type(b.projection) for b in blocks] == [nn.Identity, nn.Linear]
    # Projections and gates are not in .linears (scikit-learn's coefs_).
    gated = MLP(4, [4, 6], 2, residual="gated")
    assert len(gated.linears) == 3
    assert sum(isinstance(m, nn.Linear) for m in gated.modules()) == 3 + 2 + 1


@pytest.mark.parametrize("family", ["mlp", "rnn", "weighted_mlp"])
def test_gathered_epochs_train_exactly_as_indexed_batches(family, monkeypatch):
    """One gather per epoch (RowGather) changes no bit of a fit."""
    from sklears_neural import MLPRegressor, RNNClassifier
    from sklears_neural.core import data as data_module

    rng = np.random.default_rng(0)
    if family == "rnn":
        X = [rng.normal(size=(int(n), 3)) for n in rng.integers(2, 7, 60)]
        y = np.array([int(x.sum() > 0) for x in X])
        make = lambda: RNNClassifier(hidden_size=8, max_iter=3, batch_size=16,  # noqa: E731
                                     random_state=0)
        w = None
    else:
        X = rng.normal(size=(90, 5))
        y = X @ rng.normal(size=5)
        make = lambda: MLPRegressor(hidden_layer_sizes=(7,), max_iter=3,  # noqa: E731
                                    batch_size=16, random_state=0)
        w = rng.uniform(0.5, 2, 90) if family == "weighted_mlp" else None
    gathered = make().fit(X, y, sample_weight=w)
    calls = []
    original = data_module.RowGather.gathered

    def counted(self, order, batch_size=None):
        calls.append(original(self, order, batch_size))
        return calls[-1]

    monkeypatch.setattr(data_module.RowGather, "gathered", counted)
    monkeypatch.setattr(data_module, "GATHER_MAX_BYTES", 0)
    indexed = make().fit(X, y, sample_weight=w)
    assert len(calls) == 3 and calls[0] is None  # above the limit: indexed
    for a, b in zip(gathered.module_.state_dict().values(),
                    indexed.module_.state_dict().values()):
        assert torch.equal(a, b)
    assert gathered.loss_curve_ == indexed.loss_curve_
