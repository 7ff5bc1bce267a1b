"""Tests of sklears_neural.nn.recurrent: against torch's layers, padding, attention, learning."""

import json
import time

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.noise import set_generator
from sklears_neural.core.registry import module_class
from sklears_neural.nn.recurrent import RecurrentEncoder, RecurrentNet

CELLS = ["lstm", "gru", "rnn"]
POOLINGS = ["last", "mean", "max", "additive", "multiplicative", "scaled_dot", "multi_head"]
TORCH_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
LENGTHS = [9, 4, 1, 6]


def _net(seed=0, **kwargs):
    kwargs.setdefault("hidden_size", 6)
    kwargs.setdefault("num_heads", 2)
    torch.manual_seed(seed)
    return RecurrentNet(3, 2, **kwargs).double()


def _batch(seed, lengths=LENGTHS, n_features=3, garbage=None):
    """A zero-padded batch (padding holds ``garbage`` instead when given)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), n_features, generator=g, dtype=torch.float64)
    padding = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
    x = x.masked_fill(padding[..., None], 0.0 if garbage is None else garbage)
    return x, lengths


def _copy_torch_weights(encoder, theirs):
    """Layer l of torch's multi-layer module into ``encoder.layers[l]``."""
    with torch.no_grad():
        for name, value in theirs.named_parameters():
            # weight_ih_l1_reverse -> layer 1, weight_ih_l0_reverse
            stem, layer_and_rest = name.rsplit("_l", 1)
            layer, _, rest = layer_and_rest.partition("_")
            target = f"{stem}_l0" + (f"_{rest}" if rest else "")
            getattr(encoder.layers[int(layer)], target).copy_(value)


# --- the encoder is torch's module ----------------------------------------------


@pytest.mark.parametrize("cell", [*CELLS, "rnn-relu"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_matches_torch_on_each_unpadded_sequence(cell, bidirectional, global_random_seed):
    torch.manual_seed(global_random_seed)
    cell, _, nonlinearity = cell.partition("-")
    extra = {"nonlinearity": nonlinearity} if nonlinearity else {}
    theirs = TORCH_CELLS[cell](3, 5, num_layers=2, batch_first=True,
                               bidirectional=bidirectional, **extra).double()
    if nonlinearity:
        with torch.no_grad():  # keep the relu units alive, so the comparison says something
            for name, p in theirs.named_parameters():
                if name.startswith("bias"):
                    p.add_(0.5)
    ours = RecurrentEncoder(3, cell, hidden_size=5, num_layers=2,
                            bidirectional=bidirectional, **extra).double()
    _copy_torch_weights(ours, theirs)
    x, lengths = _batch(global_random_seed)
    steps, final = ours(x, lengths)
    n_dir = 2 if bidirectional else 1
    assert steps.shape == (4, 9, 5 * n_dir) and final.shape == (4, n_dir, 5)
    for i, n in enumerate(lengths.tolist()):
        expected, state = theirs(x[i:i + 1, :n])
        h_n = state[0] if cell == "lstm" else state
        torch.testing.assert_close(steps[i, :n], expected[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(final[i], h_n[-n_dir:, 0], rtol=0, atol=1e-6)
        assert torch.equal(steps[i, n:], torch.zeros_like(steps[i, n:]))
    # Without lengths: torch's module on the whole batch.
    expected, _ = theirs(x)
    torch.testing.assert_close(ours(x)[0], expected, rtol=0, atol=1e-6)
    # Negative control: torch's final state of the padded sequence differs
    # (it ran over the padding).
    _, state = theirs(x)
    leaked = state[0] if cell == "lstm" else state
    assert not torch.allclose(leaked[-n_dir:].transpose(0, 1)[1:], final[1:], atol=1e-3)


# --- padding never changes a result ----------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_invariance_every_pooling(cell, pooling, global_random_seed):
    for bidirectional, merge in [(False, "concat"), (True, "concat"), (True, "sum")]:
        net = _net(global_random_seed, cell=cell, pooling=pooling,
                   bidirectional=bidirectional, merge=merge)
        x, lengths = _batch(global_random_seed)
        out = net(x, lengths)
        assert out.shape == (4, 2)
        # Garbage in the padding is never read.
        garbage, _ = _batch(global_random_seed, garbage=1e3)
        torch.testing.assert_close(net(garbage, lengths), out, rtol=0, atol=1e-6)
        for i, n in enumerate(lengths.tolist()):
            alone = net(x[i:i + 1, :n])
            torch.testing.assert_close(out[i:i + 1], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_per_step_outputs_equal_across_padding(cell, bidirectional, global_random_seed):
    net = _net(global_random_seed, cell=cell, per_step=True, bidirectional=bidirectional,
               num_layers=2)
    x, lengths = _batch(global_random_seed)
    out = net(x, lengths)
    assert out.shape == (4, 9, 2)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[i, :n], net(x[i:i + 1, :n])[0], rtol=0, atol=1e-6)
        # Documented: padded steps hold the output layer's bias.
        torch.testing.assert_close(out[i, n:], net.head.bias.expand(9 - n, 2), rtol=0, atol=0)


# --- bidirectional merges against a manual two-direction computation -------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_merge_values(cell, merge, global_random_seed):
    torch.manual_seed(global_random_seed)
    forward = TORCH_CELLS[cell](3, 6, batch_first=True).double()
    backward = TORCH_CELLS[cell](3, 6, batch_first=True).double()
    kwargs = dict(cell=cell, bidirectional=True, merge=merge)
    last = _net(global_random_seed, **kwargs)
    per_step = _net(global_random_seed, per_step=True, **kwargs)
    for net in (last, per_step):
        layer = net.encoder.layers[0]
        with torch.no_grad():
            for name, p in forward.named_parameters():
                getattr(layer, name).copy_(p)
            for name, p in backward.named_parameters():
                getattr(layer, name + "_reverse").copy_(p)
    x, lengths = _batch(global_random_seed)
    out_last, out_steps = last(x, lengths), per_step(x, lengths)
    width = 12 if merge == "concat" else 6
    assert last.out_width == width and last.head.in_features == width
    for i, n in enumerate(lengths.tolist()):
        seq = x[i:i + 1, :n]
        fwd, _ = forward(seq)
        bwd, _ = backward(seq.flip(1))
        bwd = bwd.flip(1)  # backward state aligned with the step it read
        if merge == "concat":
            steps = torch.cat([fwd, bwd], dim=-1)
            final = torch.cat([fwd[:, -1], bwd[:, 0]], dim=-1)
        else:
            steps = fwd + bwd
            final = fwd[:, -1] + bwd[:, 0]
        torch.testing.assert_close(out_last[i:i + 1], last.head(final), rtol=0, atol=1e-6)
        torch.testing.assert_close(out_steps[i, :n], per_step.head(steps)[0], rtol=0, atol=1e-6)


def test_mean_and_max_pooling_values(global_random_seed):
    for pooling, reduce in [("mean", lambda s: s.mean(0)), ("max", lambda s: s.amax(0))]:
        net = _net(global_random_seed, pooling=pooling, bidirectional=True)
        x, lengths = _batch(global_random_seed)
        steps, _ = net.encoder(x, lengths)
        out = net(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            expected = net.head(reduce(steps[i, :n]))
            torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-12)


# --- hierarchical attention network ----------------------------------------------


@pytest.mark.parametrize("pooling", ["additive", "multi_head", "last", "max"])
@pytest.mark.parametrize("segment", [1, 3, 4])
def test_hierarchical_padding_invariance(pooling, segment, global_random_seed):
    net = _net(global_random_seed, cell="gru", pooling=pooling, hierarchical=segment,
               bidirectional=True)
    # Partial last segments, and sequences with fewer segments than the batch.
    x, lengths = _batch(global_random_seed, lengths=[9, 4, 1, 7, 8])
    out = net(x, lengths)
    garbage, _ = _batch(global_random_seed, lengths=[9, 4, 1, 7, 8], garbage=1e3)
    torch.testing.assert_close(net(garbage, lengths), out, rtol=0, atol=1e-6)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[i:i + 1], net(x[i:i + 1, :n]), rtol=0, atol=1e-6)


def test_hierarchical_equals_segments_encoded_one_by_one(global_random_seed):
    net = _net(global_random_seed, cell="lstm", pooling="additive", hierarchical=3)
    x, lengths = _batch(global_random_seed, lengths=[7, 9])
    out = net(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        vectors = []
        for start in range(0, n, 3):
            steps, _ = net.encoder(x[i:i + 1, start:min(start + 3, n)])
            vectors.append(net.pool(steps)[0])
        steps, _ = net.segment_encoder(torch.stack(vectors, dim=1))
        expected = net.head(net.segment_pool(steps)[0])
        torch.testing.assert_close(out[i:i + 1], expected, rtol=0, atol=1e-6)


# --- attention weights ------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["additive", "multiplicative", "scaled_dot", "multi_head"])
@pytest.mark.parametrize("hierarchical", [None, 3])
def test_attention_weights_sum_to_one_and_zero_on_padding(pooling, hierarchical,
                                                          global_random_seed):
    net = _net(global_random_seed, pooling=pooling, hierarchical=hierarchical)
    x, lengths = _batch(global_random_seed)
    out, weights = net.forward_with_attention(x, lengths)
    torch.testing.assert_close(out, net(x, lengths), rtol=0, atol=0)
    heads = (2,) if pooling == "multi_head" else ()
    assert weights.steps.shape == (4, *heads, 9)
    padding = torch.arange(9)[None, :] >= lengths[:, None]
    if heads:
        padding = padding[:, None, :].expand(4, 2, 9)
    torch.testing.assert_close(weights.steps.sum(-1), torch.ones(4, *heads, dtype=torch.float64))
    assert torch.equal(weights.steps[padding], torch.zeros(int(padding.sum()), dtype=torch.float64))
    assert (weights.steps[~padding] > 0).all()
    if hierarchical is None:
        assert weights.segments is None
    else:
        counts = (lengths + 2) // 3
        assert weights.segments.shape == (4, *heads, 3)
        seg_padding = torch.arange(3)[None, :] >= counts[:, None]
        if heads:
            seg_padding = seg_padding[:, None, :].expand(4, 2, 3)
        assert torch.equal(weights.segments[seg_padding],
                           torch.zeros(int(seg_padding.sum()), dtype=torch.float64))
        torch.testing.assert_close(weights.segments.sum(-1),
                                   torch.ones(4, *heads, dtype=torch.float64))
    # The weights of a sequence alone equal its weights in the padded batch.
    _, alone = net.forward_with_attention(x[1:2, :4])
    torch.testing.assert_close(alone.steps, weights.steps[1:2, ..., :4], rtol=0, atol=1e-6)


def test_forward_with_attention_needs_an_attention_pooling():
    with pytest.raises(ValueError, match="pooling='mean' has no attention weights"):
        _net(pooling="mean").forward_with_attention(*_batch(0))


# --- gradients, learning, determinism ---------------------------------------------


@pytest.mark.parametrize("kwargs", [
    dict(cell="lstm", pooling="last", bidirectional=True, num_layers=2, dropout=0.2),
    dict(cell="gru", pooling="multi_head", bidirectional=True, merge="sum"),
    dict(cell="rnn", pooling="additive", hierarchical=4),
    dict(cell="lstm", per_step=True),
])
def test_gradients_reach_every_parameter(kwargs):
    net = _net(**kwargs).train()
    x, lengths = _batch(0)
    x.requires_grad_(True)
    out = net(x, lengths)
    out.pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()
    # Padding is never read, so it gets no gradient (per_step reads none of it either).
    padding = torch.arange(9)[None, :] >= lengths[:, None]
    assert torch.equal(x.grad[padding], torch.zeros(int(padding.sum()), 3, dtype=torch.float64))


def test_lstm_learns_sign_of_sum(global_random_seed):
    g = torch.Generator().manual_seed(global_random_seed)

    def data(n):
        lengths = torch.randint(5, 21, (n,), generator=g)
        x = torch.randn(n, 20, 1, generator=g)
        x = x.masked_fill(torch.arange(20)[None, :, None] >= lengths[:, None, None], 0.0)
        return x, lengths, (x.sum(dim=(1, 2)) > 0).long()

    x, lengths, y = data(1024)
    x_test, lengths_test, y_test = data(512)
    spec = ModuleSpec(RecurrentNet, dict(n_features=1, n_outputs=2, hidden_size=16))
    net = spec.build(generator=torch.Generator().manual_seed(global_random_seed))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    start = time.perf_counter()
    for _ in range(16):
        order = torch.randperm(1024, generator=g)
        for batch in order.split(64):
            optimizer.zero_grad()
            F.cross_entropy(net(x[batch], lengths[batch]), y[batch]).backward()
            optimizer.step()
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        accuracy = (net(x_test, lengths_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.9, (accuracy, elapsed)


def test_build_is_deterministic_and_dropout_follows_the_generator():
    spec = ModuleSpec(RecurrentNet, dict(n_features=3, n_outputs=2, hidden_size=6,
                                         num_layers=2, dropout=0.3, pooling="multi_head",
                                         num_heads=2))
    json.dumps(spec.kwargs)
    nets = [spec.build(generator=torch.Generator().manual_seed(5)).double() for _ in range(2)]
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)
    x, lengths = _batch(1)
    state = torch.random.get_rng_state()
    outs = []
    for net in nets:
        net.train()
        set_generator(net, torch.Generator().manual_seed(9))
        outs.append(net(x, lengths))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(torch.random.get_rng_state(), state)  # no global draws
    # Dropout is active in training and gone in evaluation.
    evaluated = nets[0].eval()(x, lengths)
    assert not torch.allclose(outs[0], evaluated)
    torch.testing.assert_close(nets[1].eval()(x, lengths), evaluated, rtol=0, atol=0)
    other = spec.build(generator=torch.Generator().manual_seed(6)).double().eval()
    assert not torch.allclose(other(x, lengths), evaluated)


def test_state_dict_round_trip_and_registry():
    assert module_class("RecurrentNet") is RecurrentNet
    kwargs = dict(n_features=3, n_outputs=2, cell="gru", hidden_size=6, bidirectional=True,
                  pooling="additive", hierarchical=3)
    source = _net(1, **{k: v for k, v in kwargs.items() if k not in ("n_features", "n_outputs")})
    rebuilt = RecurrentNet(**json.loads(json.dumps(kwargs))).double()
    x, lengths = _batch(2)
    assert not torch.allclose(rebuilt(x, lengths), source(x, lengths))
    rebuilt.load_state_dict(source.state_dict())
    torch.testing.assert_close(rebuilt(x, lengths), source(x, lengths), rtol=0, atol=0)


def test_float32_matches_float64():
    net64 = _net(3, pooling="scaled_dot", bidirectional=True)
    net32 = _net(3, pooling="scaled_dot", bidirectional=True).float()
    x, lengths = _batch(3)
    torch.testing.assert_close(net32(x.float(), lengths).double(), net64(x, lengths),
                               rtol=0, atol=1e-5)


def test_lengths_on_any_device_dtype_and_none():
    net = _net(pooling="mean")
    x, lengths = _batch(0, lengths=[9, 9, 9, 9])
    expected = net(x)
    for given in (lengths, lengths.int(), lengths.tolist()):
        torch.testing.assert_close(net(x, given), expected, rtol=0, atol=1e-12)


# --- options and errors -------------------------------------------------------------


def test_options_are_checked():
    with pytest.raises(ValueError, match="Valid names are: gru, lstm, rnn"):
        RecurrentNet(3, 2, cell="transformer")
    with pytest.raises(ValueError, match="Valid names are: additive, last, max, mean"):
        RecurrentNet(3, 2, pooling="sum")
    with pytest.raises(ValueError, match="per_step=True gives one output per step"):
        RecurrentNet(3, 2, per_step=True, pooling="mean")
    with pytest.raises(ValueError, match="cannot give one output per step"):
        RecurrentNet(3, 2, per_step=True, hierarchical=4)
    with pytest.raises(ValueError, match="num_heads=5 heads, which does not divide"):
        RecurrentNet(3, 2, hidden_size=8, pooling="multi_head", num_heads=5)
    with pytest.raises(ValueError, match="'merge' parameter of RecurrentNet"):
        RecurrentNet(3, 2, merge="mean")
    with pytest.raises(ValueError, match="'hierarchical' parameter of RecurrentNet"):
        RecurrentNet(3, 2, hierarchical=0)
    assert RecurrentNet(3, 2, cell="LSTM", pooling="Bahdanau").pooling == "additive"


def test_inputs_are_checked():
    net = _net()
    x, lengths = _batch(0)
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, steps, 3\)"):
        net(x[..., :2], lengths)
    with pytest.raises(ValueError, match=r"must be in \[1, 9\]"):
        net(x, torch.tensor([9, 4, 0, 6]))
    with pytest.raises(ValueError, match=r"must be in \[1, 9\]"):
        net(x, torch.tensor([10, 4, 1, 6]))
    with pytest.raises(ValueError, match="lengths must be an integer tensor"):
        net(x, lengths.double())
