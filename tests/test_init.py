"""Weight initializers: statistics, exact bounds, generator discipline, errors."""

import math

import numpy as np
import pytest
import torch
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from torch import nn

from sklears_neural.core.init import (
    WEIGHT_INITS,
    activation_gain,
    check_weight_init,
    fans,
    initialize_,
)
from sklears_neural.core.resolve import ACTIVATIONS


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def _draw(scheme, shape=(1000, 1000), activation="relu", seed=0, dtype=torch.float32):
    tensor = torch.empty(shape, dtype=dtype)
    fan_in, fan_out = fans(tensor)
    WEIGHT_INITS.build(scheme, tensor=tensor, fan_in=fan_in, fan_out=fan_out,
                       generator=_generator(seed), activation=activation)
    return tensor


# -- statistics and bounds ------------------------------------------------------


@pytest.mark.parametrize(
    "scheme, activation, expected_std",
    [
        ("he_normal", "relu", math.sqrt(2 / 1000)),
        ("kaiming_normal", "tanh", 5 / 3 / math.sqrt(1000)),
        (("he_normal", {"gain": 1.0}), "relu", 1 / math.sqrt(1000)),
        ("xavier_normal", "identity", math.sqrt(2 / 2000)),
        ("glorot_normal", "tanh", 5 / 3 * math.sqrt(2 / 2000)),
        ("lecun_normal", "relu", 1 / math.sqrt(1000)),
    ],
)
def test_normal_initializers_have_the_expected_std(scheme, activation, expected_std):
    weights = _draw(scheme, activation=activation)
    assert abs(weights.std().item() / expected_std - 1) < 0.02
    assert abs(weights.mean().item()) < 0.02 * expected_std * 10


def test_he_normal_fan_out_mode_uses_the_output_width():
    weights = _draw(("he_normal", {"mode": "fan_out"}), shape=(500, 2000))
    assert abs(weights.std().item() / math.sqrt(2 / 500) - 1) < 0.02


@pytest.mark.parametrize(
    "scheme, activation, bound",
    [
        ("he_uniform", "relu", math.sqrt(2) * math.sqrt(3 / 1000)),
        ("xavier_uniform", "tanh", 5 / 3 * math.sqrt(6 / 2000)),
        ("xavier_uniform", "logistic", math.sqrt(6 / 2000)),
        ("lecun_uniform", "relu", math.sqrt(3 / 1000)),
        ("sklearn", "relu", math.sqrt(6 / 2000)),
        ("sklearn", "logistic", math.sqrt(2 / 2000)),
        (("variance_scaling", {"scale": 2.0, "mode": "fan_avg", "distribution": "uniform"}),
         "relu", math.sqrt(3 * 2.0 / 1000)),
    ],
)
def test_uniform_initializers_fill_their_exact_bounds(scheme, activation, bound):
    weights = _draw(scheme, activation=activation, dtype=torch.float64)
    assert weights.abs().max().item() <= bound
    # A million draws come within 1e-4 of both ends.
    assert weights.max().item() > bound * (1 - 1e-4)
    assert weights.min().item() < -bound * (1 - 1e-4)


@pytest.mark.parametrize("shape", [(64, 64), (32, 80), (80, 32)])
def test_orthogonal_rows_or_columns_are_orthonormal(shape):
    weights = _draw("orthogonal", shape=shape, dtype=torch.float64)
    small = min(shape)
    gram = weights @ weights.T if shape[0] <= shape[1] else weights.T @ weights
    torch.testing.assert_close(gram, torch.eye(small, dtype=torch.float64), atol=1e-6, rtol=0)
    scaled = _draw(("orthogonal", {"gain": 2.0}), shape=shape, dtype=torch.float64)
    torch.testing.assert_close(scaled, 2.0 * weights, atol=1e-12, rtol=0)


def test_truncated_normal_stays_within_two_std():
    weights = _draw(("truncated_normal", {"mean": 0.5, "std": 0.1}), shape=(500, 500),
                    dtype=torch.float64)
    assert (weights - 0.5).abs().max().item() <= 0.2
    assert (weights - 0.5).abs().max().item() > 0.2 * (1 - 1e-3)
    # A normal cut at +-2 std keeps 0.8796 of its std.
    assert abs(weights.std().item() / (0.1 * 0.87962566) - 1) < 0.02
    assert abs(weights.mean().item() - 0.5) < 1e-3


@pytest.mark.parametrize("mode, n", [("fan_in", 200), ("fan_out", 800), ("fan_avg", 500)])
@pytest.mark.parametrize("distribution", ["normal", "truncated_normal", "uniform",
                                          "untruncated_normal"])
def test_variance_scaling_follows_keras(mode, n, distribution):
    scale = 3.0
    weights = _draw(
        ("variance_scaling", {"scale": scale, "mode": mode, "distribution": distribution}),
        shape=(800, 200), dtype=torch.float64,
    )
    # Keras: every distribution ends with variance scale / n.
    assert abs(weights.std().item() / math.sqrt(scale / n) - 1) < 0.02
    if distribution == "truncated_normal":
        limit = 2 * math.sqrt(scale / n) / 0.87962566103423978
        assert weights.abs().max().item() <= limit
    if distribution == "uniform":
        assert weights.abs().max().item() <= math.sqrt(3 * scale / n)


def test_conv_fans_count_the_kernel():
    conv = nn.Conv2d(40, 30, kernel_size=5)
    assert fans(conv.weight) == (40 * 25, 30 * 25)
    initialize_(conv, "he_normal", activation="relu", generator=_generator())
    assert abs(conv.weight.std().item() / math.sqrt(2 / 1000) - 1) < 0.03
    assert torch.count_nonzero(conv.bias) == 0


# -- scikit-learn's scheme ----------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "logistic", "tanh"])
def test_sklearn_scheme_matches_scikit_learns_bounds(activation):
    fan_in, fan_out = 300, 200
    sk = SkMLPClassifier(activation=activation)
    sk._random_state = np.random.RandomState(0)
    sk_coef, sk_intercept = sk._init_coef(fan_in, fan_out, np.float64)
    bound = math.sqrt((2.0 if activation == "logistic" else 6.0) / (fan_in + fan_out))
    linear = nn.Linear(fan_in, fan_out, dtype=torch.float64)
    initialize_(linear, "sklearn", activation=activation, generator=_generator())
    for ours, theirs in [(linear.weight, sk_coef), (linear.bias, sk_intercept)]:
        ours = ours.detach().numpy()
        assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound
        # Both fill the same interval (the largest of 60000 draws is near the end).
    assert np.abs(linear.weight.detach().numpy()).max() > 0.999 * bound
    assert np.abs(sk_coef).max() > 0.999 * bound
    assert linear.bias.abs().max().item() > 0.5 * bound


def test_sklearn_scheme_factor_setting():
    linear = nn.Linear(50, 50, dtype=torch.float64)
    initialize_(linear, ("sklearn", {"factor": 1.0}), activation="relu",
                generator=_generator())
    assert linear.weight.abs().max().item() <= math.sqrt(1 / 100)
    assert linear.weight.abs().max().item() > 0.99 * math.sqrt(1 / 100)


def test_sklearn_scheme_draws_weight_then_bias_per_layer():
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    initialize_(net, "sklearn", activation="tanh", generator=_generator(3))
    generator = _generator(3)
    for linear in (net[0], net[2]):
        bound = math.sqrt(6 / sum(linear.weight.shape))
        weight = torch.empty_like(linear.weight).uniform_(-bound, bound, generator=generator)
        bias = torch.empty_like(linear.bias).uniform_(-bound, bound, generator=generator)
        assert torch.equal(linear.weight, weight) and torch.equal(linear.bias, bias)


# -- generator discipline ----------------------------------------------------------

ALL_SCHEMES = WEIGHT_INITS.names


def _net():
    net = nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.PReLU(8), nn.Linear(8, 3),
        nn.Conv1d(2, 4, 3),
    )
    nn.utils.parametrizations.spectral_norm(net[3])
    return net


@pytest.mark.parametrize("scheme", ALL_SCHEMES)
def test_same_seed_same_weights_and_global_rng_untouched(scheme):
    first, second, other = _net(), _net(), _net()
    state = torch.random.get_rng_state()
    initialize_(first, scheme, activation="tanh", generator=_generator(7))
    initialize_(second, scheme, activation="tanh", generator=_generator(7))
    initialize_(other, scheme, activation="tanh", generator=_generator(8))
    assert torch.equal(torch.random.get_rng_state(), state)
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Negative control: another seed gives other weights.
    assert not torch.equal(a["0.weight"], c["0.weight"])
    # Spectral norm's power-iteration vectors come from the generator too.
    assert torch.equal(a["3.parametrizations.weight.0._u"], b["3.parametrizations.weight.0._u"])
    assert not torch.equal(a["3.parametrizations.weight.0._u"],
                           c["3.parametrizations.weight.0._u"])


@pytest.mark.parametrize("scheme", ALL_SCHEMES)
def test_biases_are_zero_except_with_sklearn(scheme):
    net = _net()
    initialize_(net, scheme, activation="relu", generator=_generator())
    biases = [net[0].bias, net[3].bias, net[4].bias]
    if scheme == "sklearn":
        assert all(torch.count_nonzero(b) == b.numel() for b in biases)
    else:
        assert all(torch.count_nonzero(b) == 0 for b in biases)


def test_norm_and_prelu_are_reset_to_their_defaults():
    net = _net()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(3.0)
    net[1].running_mean.fill_(5.0)
    initialize_(net, "he_uniform", activation="relu", generator=_generator())
    assert torch.equal(net[1].weight, torch.ones(8)) and torch.equal(net[1].bias, torch.zeros(8))
    assert torch.equal(net[1].running_mean, torch.zeros(8))
    assert torch.equal(net[2].weight, torch.full((8,), 0.25))


def test_spectral_norm_vectors_match_the_new_weight():
    linear = nn.utils.parametrizations.spectral_norm(nn.Linear(20, 10, dtype=torch.float64))
    initialize_(linear, "xavier_normal", activation="relu", generator=_generator())
    linear.eval()
    original = linear.parametrizations.weight.original
    sigma = torch.linalg.matrix_norm(original, ord=2)
    torch.testing.assert_close(linear.weight, original / sigma, rtol=1e-4, atol=1e-8)


# -- gains ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "activation, gain",
    [
        ("identity", 1.0), ("logistic", 1.0), ("selu", 1.0), ("tanh", 5 / 3),
        ("relu", math.sqrt(2)), ("gelu", math.sqrt(2)), ("swish", math.sqrt(2)),
        ("elu", math.sqrt(2)), ("mish", math.sqrt(2)), ("softplus", math.sqrt(2)),
        ("leaky_relu", math.sqrt(2 / (1 + 0.01**2))),
        (("leaky_relu", {"negative_slope": 0.2}), math.sqrt(2 / 1.04)),
        ("prelu", math.sqrt(2 / (1 + 0.25**2))),
        (("prelu", {"init": 0.1}), math.sqrt(2 / 1.01)),
    ],
)
def test_activation_gain(activation, gain):
    assert activation_gain(activation) == pytest.approx(gain, rel=1e-12)


def test_every_activation_has_a_gain():
    for name in ACTIVATIONS.names:
        assert activation_gain(name) > 0
    for name in ("identity", "tanh", "relu", "leaky_relu", "selu"):
        torch_name = "linear" if name in ("identity", "selu") else name
        assert activation_gain(name) == pytest.approx(nn.init.calculate_gain(torch_name))


# -- errors -------------------------------------------------------------------------


def test_unknown_scheme_lists_the_choices():
    with pytest.raises(ValueError, match="Valid names are: he_normal, he_uniform") as info:
        initialize_(nn.Linear(2, 2), "he_normall", generator=_generator())
    assert "Did you mean 'he_normal'?" in str(info.value)
    assert "xavier_uniform" in str(info.value) and "variance_scaling" in str(info.value)


def test_unknown_setting_lists_the_settings():
    match = r"Unknown setting\(s\) \['std'\].*It takes: distribution, mode, scale"
    with pytest.raises(ValueError, match=match):
        check_weight_init(("variance_scaling", {"std": 1.0}))


@pytest.mark.parametrize(
    "option, match",
    [
        (("variance_scaling", {"mode": "fan_sum"}), "fan_in, fan_out, fan_avg"),
        (("variance_scaling", {"distribution": "cauchy"}), "normal, truncated_normal, uniform"),
        (("variance_scaling", {"scale": 0}), "scale"),
        (("he_normal", {"mode": "fan_avg"}), "fan_in, fan_out"),
    ],
)
def test_bad_setting_values_raise(option, match):
    with pytest.raises(ValueError, match=match):
        check_weight_init(option)


def test_aliases_and_case():
    assert WEIGHT_INITS.canonical("Glorot-Uniform") == "xavier_uniform"
    assert WEIGHT_INITS.canonical("KAIMING_NORMAL") == "he_normal"
    assert WEIGHT_INITS.canonical("scikit-learn") == "sklearn"
    assert check_weight_init(["he_normal", {"mode": "fan_out"}]) == "he_normal"
