"""Tests of sklears_neural.nn.attention: against torch's attention, padding, dropout."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sklears_neural.core.noise import set_generator
from sklears_neural.nn.attention import (
    AttentionPooling,
    MultiHeadAttention,
    masked_softmax,
    scaled_dot_product,
)

KINDS = ["additive", "multiplicative", "scaled_dot", "multi_head"]


def _qkv(seed, dtype, batch=3, heads=2, n_queries=4, n_keys=6, dim=8):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n_queries, dim, generator=g, dtype=dtype)
    k = torch.randn(batch, heads, n_keys, dim, generator=g, dtype=dtype)
    v = torch.randn(batch, heads, n_keys, dim, generator=g, dtype=dtype)
    return q, k, v, g


def _padding(lengths, steps):
    return torch.arange(steps)[None, :] >= torch.as_tensor(lengths)[:, None]


# --- masked_softmax ------------------------------------------------------------


def test_masked_softmax_zero_on_mask_and_dead_rows():
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[False, True, False], [True, True, True]])
    weights = masked_softmax(scores, mask)
    expected = torch.softmax(torch.tensor([1.0, 3.0]), 0)
    torch.testing.assert_close(weights[0], torch.stack([expected[0], torch.tensor(0.0), expected[1]]))
    assert torch.equal(weights[1], torch.zeros(3))
    (weights * torch.arange(3.0)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.equal(scores.grad[1], torch.zeros(3))


# --- scaled_dot_product --------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("need_weights", [False, True])
def test_scaled_dot_product_matches_torch(dtype, need_weights, global_random_seed):
    q, k, v, g = _qkv(global_random_seed, dtype)
    padding = _padding([6, 3, 1], 6)
    bias = torch.randn(2, 4, 6, generator=g, dtype=dtype)
    cases = [
        ({}, {}),
        ({"key_padding_mask": padding}, {"attn_mask": ~padding[:, None, None, :]}),
        ({"attn_bias": bias}, {"attn_mask": bias[None]}),
        (
            {"attn_bias": bias, "key_padding_mask": padding},
            {"attn_mask": bias[None].masked_fill(padding[:, None, None, :], float("-inf"))},
        ),
        ({"is_causal": True}, {"is_causal": True}),
    ]
    for ours, theirs in cases:
        out, weights = scaled_dot_product(q, k, v, need_weights=need_weights, **ours)
        expected = F.scaled_dot_product_attention(q, k, v, **theirs)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
        assert (weights is not None) == need_weights
    # The explicit weights reproduce the output.
    out, weights = scaled_dot_product(q, k, v, key_padding_mask=padding, need_weights=True)
    torch.testing.assert_close(weights @ v, out, rtol=0, atol=1e-6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 4, dtype=dtype))
    assert torch.equal(weights[2, :, :, 1:], torch.zeros(2, 4, 5, dtype=dtype))


def test_scaled_dot_product_batch_bias_and_scale():
    q, k, v, g = _qkv(1, torch.float64)
    bias = torch.randn(3, 2, 4, 6, generator=g, dtype=torch.float64)
    for need_weights in (False, True):
        out, _ = scaled_dot_product(q, k, v, attn_bias=bias, scale=0.3, need_weights=need_weights)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.3)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="attn_bias must have shape"):
        scaled_dot_product(q, k, v, attn_bias=bias[0, 0])


@pytest.mark.parametrize("need_weights", [False, True])
def test_all_padding_query_gives_zero_not_nan(need_weights):
    q, k, v, _ = _qkv(2, torch.float64)
    q.requires_grad_(True)
    padding = _padding([6, 0, 2], 6)
    out, weights = scaled_dot_product(q, k, v, key_padding_mask=padding, need_weights=need_weights)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=~padding[:, None, None, :])
    torch.testing.assert_close(out[[0, 2]], expected[[0, 2]], rtol=0, atol=1e-12)
    if need_weights:
        assert torch.equal(weights[1], torch.zeros_like(weights[1]))
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    # A row killed by the bias (-inf everywhere) is a dead query too.
    bias = torch.zeros(1, 4, 6, dtype=torch.float64)
    bias[0, 2] = float("-inf")
    out, _ = scaled_dot_product(q.detach(), k, v, attn_bias=bias, need_weights=need_weights)
    assert torch.equal(out[:, :, 2], torch.zeros_like(out[:, :, 2]))
    assert torch.isfinite(out).all()


def test_scaled_dot_product_dropout_uses_generator():
    q, k, v, _ = _qkv(3, torch.float64)
    state = torch.random.get_rng_state()
    runs = [
        scaled_dot_product(q, k, v, dropout_p=0.5, training=True,
                           generator=torch.Generator().manual_seed(7), need_weights=True)
        for _ in range(2)
    ]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(runs[0][0], runs[1][0])
    out, weights = runs[0]
    # Weights are returned before dropout; the output is not the undropped one.
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 4, dtype=torch.float64))
    assert not torch.allclose(out, weights @ v)
    # Not training: no dropout whatever dropout_p says.
    out, _ = scaled_dot_product(q, k, v, dropout_p=0.5, training=False)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-12)


def test_scaled_dot_product_refuses_bad_masks():
    q, k, v, _ = _qkv(4, torch.float64)
    with pytest.raises(TypeError, match="must be a bool tensor"):
        scaled_dot_product(q, k, v, key_padding_mask=torch.zeros(3, 6))
    with pytest.raises(ValueError, match=r"shape \(batch, n_keys\)"):
        scaled_dot_product(q, k, v, key_padding_mask=torch.zeros(3, 5, dtype=torch.bool))


# --- MultiHeadAttention --------------------------------------------------------


def _copy_from_torch(ours, theirs):
    e = ours.embed_dim
    with torch.no_grad():
        if theirs.in_proj_weight is not None:
            weights = theirs.in_proj_weight.split(e)
        else:
            weights = (theirs.q_proj_weight, theirs.k_proj_weight, theirs.v_proj_weight)
        biases = theirs.in_proj_bias.split(e)
        for proj, w, b in zip((ours.q_proj, ours.k_proj, ours.v_proj), weights, biases):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        ours.out_proj.weight.copy_(theirs.out_proj.weight)
        ours.out_proj.bias.copy_(theirs.out_proj.bias)


@pytest.mark.parametrize("kv_dims", [(None, None), (5, 7)])
def test_multi_head_attention_matches_torch(kv_dims, global_random_seed):
    kdim, vdim = kv_dims
    torch.manual_seed(global_random_seed)  # torch's module draws its init from here
    theirs = nn.MultiheadAttention(12, 3, batch_first=True, kdim=kdim, vdim=vdim).double()
    ours = MultiHeadAttention(12, 3, kdim=kdim, vdim=vdim).double()
    _copy_from_torch(ours, theirs)
    # torch initializes the biases to zero; give them values so they are checked.
    with torch.no_grad():
        for p in list(theirs.parameters()):
            if p.dim() == 1:
                p.normal_()
    _copy_from_torch(ours, theirs)
    g = torch.Generator().manual_seed(global_random_seed)
    query = torch.randn(3, 4, 12, generator=g, dtype=torch.float64)
    key = torch.randn(3, 6, kdim or 12, generator=g, dtype=torch.float64)
    value = torch.randn(3, 6, vdim or 12, generator=g, dtype=torch.float64)
    for padding in (None, _padding([6, 2, 4], 6)):
        expected, expected_w = theirs(query, key, value, key_padding_mask=padding,
                                      average_attn_weights=False)
        out, weights = ours(query, key, value, key_padding_mask=padding, need_weights=True)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(weights, expected_w, rtol=0, atol=1e-6)
        fast, none = ours(query, key, value, key_padding_mask=padding)
        assert none is None
        torch.testing.assert_close(fast, expected, rtol=0, atol=1e-6)
    # Negative control: a different projection must not match.
    with torch.no_grad():
        ours.v_proj.weight.mul_(1.01)
    assert not torch.allclose(ours(query, key, value)[0], theirs(query, key, value)[0], atol=1e-6)


def test_multi_head_attention_bias_and_init():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    bias = torch.randn(2, 5, 5, dtype=torch.float64)
    out, weights = mha(x, x, x, attn_bias=bias, need_weights=True)
    q = mha._heads(mha.q_proj(x))
    k = mha._heads(mha.k_proj(x))
    expected_w = torch.softmax(q @ k.transpose(-2, -1) / 2.0 + bias, dim=-1)
    torch.testing.assert_close(weights, expected_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(mha(x, x, x, attn_bias=bias)[0], out, rtol=0, atol=1e-12)
    # torch's init: xavier bound over the (3E, E) in-projection, zero biases.
    bound = math.sqrt(6.0 / (8 + 24))
    assert mha.q_proj.weight.abs().max() <= bound
    assert torch.equal(mha.q_proj.bias, torch.zeros(8, dtype=torch.float64))
    with pytest.raises(ValueError, match="not a multiple of num_heads"):
        MultiHeadAttention(10, 3)


def test_multi_head_attention_dropout_follows_set_generator():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dropout=0.3).double().train()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    outs = []
    state = torch.random.get_rng_state()
    for _ in range(2):
        set_generator(mha, torch.Generator().manual_seed(3))
        outs.append(mha(x, x, x)[0])
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(outs[0], outs[1])
    evaluated = mha.eval()(x, x, x)[0]
    assert not torch.allclose(outs[0], evaluated)
    # Evaluation mode is deterministic and equals the dropout-free computation.
    torch.testing.assert_close(evaluated, mha(x, x, x, need_weights=True)[0], rtol=0, atol=1e-12)


# --- AttentionPooling ----------------------------------------------------------


def _pooling(kind, dim=8, seed=0):
    torch.manual_seed(seed)
    return AttentionPooling(dim, kind, num_heads=2 if kind == "multi_head" else 1).double()


@pytest.mark.parametrize("kind", KINDS)
def test_pooling_padding_invariance_and_weights(kind, global_random_seed):
    pool = _pooling(kind, seed=global_random_seed)
    g = torch.Generator().manual_seed(global_random_seed)
    lengths = [7, 3, 5]
    x = torch.randn(3, 7, 8, generator=g, dtype=torch.float64)
    padding = _padding(lengths, 7)
    x = x.masked_fill(padding[..., None], 0.0)
    # Padding holding garbage must not matter either.
    garbage = x.masked_fill(padding[..., None], 1e3)
    pooled, weights = pool(x, key_padding_mask=padding)
    pooled_g, _ = pool(garbage, key_padding_mask=padding)
    torch.testing.assert_close(pooled_g, pooled, rtol=0, atol=1e-6)
    for i, n in enumerate(lengths):
        alone, alone_w = pool(x[i:i + 1, :n])
        torch.testing.assert_close(pooled[i:i + 1], alone, rtol=0, atol=1e-6)
        torch.testing.assert_close(weights[i:i + 1, ..., :n], alone_w, rtol=0, atol=1e-6)
    expected_shape = (3, 2, 7) if kind == "multi_head" else (3, 7)
    assert weights.shape == expected_shape
    valid = ~padding if kind != "multi_head" else ~padding[:, None, :]
    torch.testing.assert_close(weights.sum(-1), torch.ones(expected_shape[:-1], dtype=torch.float64))
    assert torch.equal(weights.masked_fill(valid, 0.0), torch.zeros(expected_shape, dtype=torch.float64))
    assert (weights[..., :3] > 0).all()


@pytest.mark.parametrize("kind", ["additive", "multiplicative", "scaled_dot"])
def test_pooling_scores_follow_the_formulas(kind):
    pool = _pooling(kind)
    x = torch.randn(2, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pooled, weights = pool(x)
    if kind == "additive":
        scores = torch.tanh(x @ pool.proj.weight.T + pool.proj.bias) @ pool.score.weight[0]
    elif kind == "multiplicative":
        scores = x @ (pool.proj.weight @ pool.query)
    else:
        scores = x @ pool.query / math.sqrt(8)
    expected_w = torch.softmax(scores, dim=-1)
    torch.testing.assert_close(weights, expected_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(pooled, (expected_w[..., None] * x).sum(1), rtol=0, atol=1e-12)


def test_multi_head_pooling_is_mha_of_learned_query():
    pool = _pooling("multi_head")
    x = torch.randn(2, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pooled, weights = pool(x)
    expected, expected_w = pool.attention(pool.query.expand(2, 1, 8), x, x, need_weights=True)
    torch.testing.assert_close(pooled, expected[:, 0], rtol=0, atol=1e-12)
    torch.testing.assert_close(weights, expected_w[:, :, 0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_pooling_gradients_finite_and_reach_parameters(kind):
    pool = _pooling(kind)
    x = torch.randn(3, 6, 8, dtype=torch.float64, requires_grad=True)
    padding = _padding([6, 0, 2], 6)  # one sequence with no step at all
    pooled, _ = pool(x, key_padding_mask=padding)
    assert torch.isfinite(pooled).all()
    pooled.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[1], torch.zeros(6, 8, dtype=torch.float64))
    for name, p in pool.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_pooling_options_are_checked_and_aliases_resolve():
    assert AttentionPooling(4, "Bahdanau").kind == "additive"
    assert AttentionPooling(4, "multi-head", num_heads=2).kind == "multi_head"
    with pytest.raises(ValueError, match="Valid names are: additive, multi_head"):
        AttentionPooling(4, "cosine")
    with pytest.raises(ValueError, match="has one head"):
        AttentionPooling(4, "additive", num_heads=2)
    with pytest.raises(ValueError, match="'dim' parameter of AttentionPooling"):
        AttentionPooling(0)


def test_float32_pooling_matches_float64():
    pool64 = _pooling("additive")
    pool32 = _pooling("additive").float()
    x = torch.randn(4, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    padding = _padding([9, 4, 1, 6], 9)
    out64, _ = pool64(x, padding)
    out32, _ = pool32(x.float(), padding)
    torch.testing.assert_close(out32.double(), out64, rtol=0, atol=1e-6)
