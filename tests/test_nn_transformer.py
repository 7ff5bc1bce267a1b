"""Tests of sklears_neural.nn.transformer: torch equality, padding, positions, learning."""

import json
import math

import pytest
import torch
from torch import nn

from sklears_neural.core.noise import set_generator
from sklears_neural.core.registry import module_class, module_name
from sklears_neural.nn.transformer import (
    POOLINGS,
    POSITIONAL_ENCODINGS,
    LearnablePositionalEncoding,
    RelativePositionBias,
    TransformerEncoderLayer,
    TransformerNet,
    sinusoidal_encoding,
)

SMALL = dict(d_model=8, num_heads=2, num_layers=2, dim_feedforward=16)


def _padding(lengths, steps):
    return torch.arange(steps)[None, :] >= torch.as_tensor(lengths)[:, None]


def _net(seed, **kwargs):
    """A float64 network in eval mode, its weights drawn from ``seed``."""
    net = TransformerNet(**{"n_features": 3, "n_outputs": 2, **SMALL, **kwargs}).double()
    net.reset_parameters(generator=torch.Generator().manual_seed(seed))
    return net.eval()


def _copy_torch_layer(ref, ours):
    """Load torch's layer weights into ours: split in_proj into q/k/v."""
    state = dict(ref.state_dict())
    weights = state.pop("self_attn.in_proj_weight").chunk(3)
    biases = state.pop("self_attn.in_proj_bias").chunk(3)
    for name, w, b in zip("qkv", weights, biases):
        state[f"self_attn.{name}_proj.weight"] = w
        state[f"self_attn.{name}_proj.bias"] = b
    ours.load_state_dict(state)


# --- TransformerEncoderLayer against torch -------------------------------------


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch(activation, norm_first, global_random_seed):
    torch.manual_seed(global_random_seed)  # torch's own layer draws from the global RNG
    ref = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, activation=activation,
                                     batch_first=True, norm_first=norm_first)
    ref = ref.double().eval()
    ours = TransformerEncoderLayer(8, 2, 16, dropout=0.1, activation=activation,
                                   norm_first=norm_first).double().eval()
    _copy_torch_layer(ref, ours)
    g = torch.Generator().manual_seed(global_random_seed)
    x = torch.randn(3, 6, 8, generator=g, dtype=torch.float64)
    pad = _padding([6, 4, 1], 6)
    expected = ref(x, src_key_padding_mask=pad)
    out, weights = ours(x, key_padding_mask=pad)
    assert weights is None
    valid = ~pad
    torch.testing.assert_close(out[valid], expected[valid], rtol=0, atol=1e-6)
    # Without a mask too (torch's unmasked path).
    torch.testing.assert_close(ours(x)[0], ref(x), rtol=0, atol=1e-6)

    # Negative control: the other normalization order must not match.
    other = TransformerEncoderLayer(8, 2, 16, activation=activation,
                                    norm_first=not norm_first).double().eval()
    _copy_torch_layer(ref, other)
    assert (other(x, key_padding_mask=pad)[0][valid] - expected[valid]).abs().max() > 1e-2


# --- padding never leaks -------------------------------------------------------


def _alone_and_batched(net, seed, *, tokens=False, lengths=(6, 3, 1)):
    """Outputs of each sequence run alone, and the same run padded in one batch."""
    g = torch.Generator().manual_seed(seed)
    steps = max(lengths)
    if tokens:
        x = torch.randint(1, net.vocab_size, (len(lengths), steps), generator=g)
        # Padding holds arbitrary tokens, not only padding_idx.
    else:
        x = torch.randn(len(lengths), steps, 3, generator=g, dtype=torch.float64)
        # Padding holding NaN must not reach a valid step either.
        x[_padding(lengths, steps)] = float("nan")
    alone = [net(x[i:i + 1, :n]) for i, n in enumerate(lengths)]
    batched = net(x, lengths=torch.tensor(lengths))
    return alone, batched


@pytest.mark.parametrize("positional", POSITIONAL_ENCODINGS)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_invariance(pooling, positional, global_random_seed):
    net = _net(global_random_seed, pooling=pooling, positional=positional)
    alone, batched = _alone_and_batched(net, global_random_seed)
    assert torch.isfinite(batched).all()
    for i, out in enumerate(alone):
        torch.testing.assert_close(batched[i], out[0], rtol=0, atol=1e-6)
    # Negative control: without lengths the padding is read as data.
    with torch.no_grad():
        g = torch.Generator().manual_seed(global_random_seed)
        x = torch.randn(1, 6, 3, generator=g, dtype=torch.float64)
        x[0, 3:] = 0.0
        assert (net(x)[0] - net(x, lengths=torch.tensor([3]))[0]).abs().max() > 1e-4


@pytest.mark.parametrize("positional", POSITIONAL_ENCODINGS)
def test_padding_invariance_per_step(positional, global_random_seed):
    net = _net(global_random_seed, positional=positional, per_step=True)
    alone, batched = _alone_and_batched(net, global_random_seed)
    assert batched.shape == (3, 6, 2)
    for i, out in enumerate(alone):
        n = out.shape[1]
        torch.testing.assert_close(batched[i, :n], out[0], rtol=0, atol=1e-6)
        assert torch.equal(batched[i, n:], torch.zeros_like(batched[i, n:]))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_invariance_tokens(pooling, global_random_seed):
    net = _net(global_random_seed, n_features=None, vocab_size=11, pooling=pooling)
    alone, batched = _alone_and_batched(net, global_random_seed, tokens=True)
    for i, out in enumerate(alone):
        torch.testing.assert_close(batched[i], out[0], rtol=0, atol=1e-6)
    # padding_idx embeds to zero and stays zero after a reset.
    assert torch.equal(net.input_proj.weight[0], torch.zeros(8, dtype=torch.float64))


# --- attention weights ---------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_attention_weights(pooling, global_random_seed):
    net = _net(global_random_seed, pooling=pooling, positional="relative")
    g = torch.Generator().manual_seed(global_random_seed)
    lengths = [6, 3, 1]
    x = torch.randn(3, 6, 3, generator=g, dtype=torch.float64)
    weights = net.get_attention(x, lengths=torch.tensor(lengths))
    extra = 1 if pooling == "cls" else 0  # the CLS token is step 0
    steps = 6 + extra
    assert len(weights) == 2
    pad = _padding([n + extra for n in lengths], steps)
    for w in weights:
        assert w.shape == (3, 2, steps, steps)
        rows = w.sum(-1)  # (B, H, T)
        expected = (~pad).to(rows.dtype)[:, None, :].expand_as(rows)
        torch.testing.assert_close(rows, expected, rtol=0, atol=1e-12)
        assert torch.equal(w.masked_select(pad[:, None, None, :]),
                           torch.zeros(int(pad.sum()) * 2 * steps, dtype=w.dtype))
        assert (w >= 0).all()
    # The valid block of a padded sequence is its weights run alone.
    n = lengths[1]
    alone = net.get_attention(x[1:2, :n])
    for w, w_alone in zip(weights, alone):
        torch.testing.assert_close(w[1, :, :n + extra, :n + extra], w_alone[0],
                                   rtol=0, atol=1e-10)
    # Without lengths: every row sums to 1.
    for w in net.get_attention(x):
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, steps, dtype=w.dtype))


# --- positional encodings ------------------------------------------------------


@pytest.mark.parametrize("d_model", [8, 7])
def test_sinusoidal_values_match_formula(d_model):
    pe = sinusoidal_encoding(50, d_model, dtype=torch.float64)
    assert pe.shape == (50, d_model)
    for pos in [0, 1, 7, 49]:
        for col in range(d_model):
            i = col // 2
            angle = pos / 10000 ** (2 * i / d_model)
            expected = math.sin(angle) if col % 2 == 0 else math.cos(angle)
            assert abs(pe[pos, col].item() - expected) < 1e-12


def test_learnable_positions_refuse_longer_sequences():
    net = TransformerNet(3, 2, **SMALL, positional="learnable", max_len=5)
    net(torch.zeros(2, 5, 3))  # max_len itself is fine
    with pytest.raises(ValueError, match=r"6 steps is longer than max_len=5"):
        net(torch.zeros(2, 6, 3))
    with pytest.raises(ValueError, match="max_len=5"):
        LearnablePositionalEncoding(8, 5)(torch.zeros(1, 9, 8))
    # The CLS token does not count against max_len.
    TransformerNet(3, 2, **SMALL, positional="learnable", max_len=5, pooling="cls")(
        torch.zeros(2, 5, 3)
    )


def test_relative_bias_depends_on_clipped_distance():
    rel = RelativePositionBias(num_heads=3, max_distance=2)
    with torch.no_grad():
        rel.weight.copy_(torch.arange(15.0).reshape(3, 5))
    bias = rel(6)
    assert bias.shape == (3, 6, 6)
    for i in range(6):
        for j in range(6):
            column = max(-2, min(2, j - i)) + 2
            assert torch.equal(bias[:, i, j], rel.weight[:, column])


def _permutation_gap(net, x, perm, per_step=False):
    out, out_perm = net(x), net(x[:, perm])
    if per_step:
        out = out[:, perm]  # equivariance: permuted input, permuted output
    return (out - out_perm).abs().max().item()


@pytest.mark.parametrize("positional", ["sinusoidal", "learnable", "relative"])
def test_positions_break_permutation_invariance(positional, global_random_seed):
    g = torch.Generator().manual_seed(global_random_seed)
    x = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    perm = torch.randperm(7, generator=g)
    if torch.equal(perm, torch.arange(7)):
        perm = torch.arange(7).flip(0)
    net = _net(global_random_seed, positional=positional)
    assert _permutation_gap(net, x, perm) > 1e-5
    per_step = _net(global_random_seed, positional=positional, per_step=True)
    assert _permutation_gap(per_step, x, perm, per_step=True) > 1e-5


@pytest.mark.parametrize("pooling", POOLINGS)
def test_no_positions_is_permutation_invariant(pooling, global_random_seed):
    g = torch.Generator().manual_seed(global_random_seed)
    x = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    perm = torch.arange(7).flip(0)
    net = _net(global_random_seed, positional=None, pooling=pooling)
    assert _permutation_gap(net, x, perm) < 1e-10
    per_step = _net(global_random_seed, positional=None, per_step=True)
    assert _permutation_gap(per_step, x, perm, per_step=True) < 1e-10


# --- gradients, determinism, learning ------------------------------------------


@pytest.mark.parametrize("pooling", POOLINGS)
def test_gradients_finite_and_none_reach_padding(pooling, global_random_seed):
    net = _net(global_random_seed, pooling=pooling, positional="relative").train()
    set_generator(net, torch.Generator().manual_seed(global_random_seed))
    g = torch.Generator().manual_seed(global_random_seed)
    x = torch.randn(3, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    net(x, lengths=torch.tensor([6, 3, 1])).square().sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(grad is not None and torch.isfinite(grad).all() for grad in grads)
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[_padding([6, 3, 1], 6)], torch.zeros(8, 3, dtype=x.dtype))
    assert x.grad[0].abs().sum() > 0


def test_reset_and_dropout_are_deterministic(global_random_seed):
    def run(seed):
        net = TransformerNet(3, 2, **SMALL, dropout=0.3, pooling="attention",
                             positional="learnable")
        net.reset_parameters(generator=torch.Generator().manual_seed(seed))
        set_generator(net, torch.Generator().manual_seed(seed))
        x = torch.linspace(-1, 1, 2 * 5 * 3).reshape(2, 5, 3)
        return net.state_dict(), net.train()(x, lengths=torch.tensor([5, 2]))

    (state_a, out_a), (state_b, out_b) = run(global_random_seed), run(global_random_seed)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert torch.equal(out_a, out_b)
    state_c, out_c = run(global_random_seed + 1)
    assert not torch.equal(state_a["head.weight"], state_c["head.weight"])
    assert not torch.equal(out_a, out_c)


def _accuracy_on_position_task(positional, seed):
    """Held-out accuracy on "is the value at step 1 larger than at step 5?".

    The label depends on where values are, not on which values occur, so
    only a network that sees positions can beat chance.
    """
    g = torch.Generator().manual_seed(seed)
    n, steps = 768, 8
    values = torch.randn(n, steps, generator=g)
    x, y = values.unsqueeze(-1), (values[:, 1] > values[:, 5]).long()
    net = TransformerNet(1, 2, d_model=32, num_heads=4, num_layers=2, dim_feedforward=64,
                         dropout=0.0, positional=positional)
    net.reset_parameters(generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(seed)
    for _ in range(25):
        for batch in torch.randperm(512, generator=order).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        return (net.eval()(x[512:]).argmax(1) == y[512:]).double().mean().item()


def test_learns_a_positional_task(global_random_seed):
    # Seeds 0-9 gave 0.93-0.99 with sinusoidal positions and 0.40-0.57
    # without positions (chance), in about 3 s each.
    assert _accuracy_on_position_task("sinusoidal", global_random_seed) > 0.9
    assert _accuracy_on_position_task(None, global_random_seed) < 0.65


# --- construction --------------------------------------------------------------


def test_spec_round_trip_and_registration(global_random_seed):
    kwargs = dict(n_features=3, n_outputs=2, **SMALL, positional="relative",
                  pooling="max", max_distance=4)
    kwargs = json.loads(json.dumps(kwargs))  # a ModuleSpec's kwargs are plain data
    net = _net(global_random_seed, **kwargs)
    rebuilt = module_class(module_name(TransformerNet))(**kwargs).double().eval()
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    assert torch.equal(net(x), rebuilt(x))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(d_model=10, num_heads=4), ValueError, "not a multiple of num_heads"),
        (dict(positional="rotary"), ValueError, "positional"),
        (dict(pooling="sum"), ValueError, "pooling"),
        (dict(dropout=1.0), ValueError, "dropout"),
        (dict(vocab_size=10), ValueError, "not both"),
        (dict(n_features=None), ValueError, "vocab_size"),
        (dict(activation="swish2"), ValueError, "activation"),
    ],
)
def test_invalid_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        TransformerNet(**{"n_features": 3, "n_outputs": 2, **kwargs})


def test_invalid_input():
    net = TransformerNet(3, 2, **SMALL)
    x = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match=r"in \[1, 4\]"):
        net(x, lengths=torch.tensor([4, 0]))
    with pytest.raises(ValueError, match=r"in \[1, 4\]"):
        net(x, lengths=torch.tensor([5, 1]))
    with pytest.raises(ValueError, match="shape"):
        net(x, lengths=torch.tensor([4]))
    with pytest.raises(TypeError, match="integers"):
        net(x, lengths=torch.tensor([4.0, 1.0]))
    with pytest.raises(ValueError, match="n_features=3"):
        net(torch.zeros(2, 4, 5))
    tokens = TransformerNet(None, 2, **SMALL, vocab_size=7)
    with pytest.raises(ValueError, match="int64 tokens"):
        tokens(x)
