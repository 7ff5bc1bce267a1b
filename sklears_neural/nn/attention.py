"""Attention primitives shared by the recurrent and Transformer families.

Three layers of one idea, each built on the one before:

- :func:`masked_softmax` and :func:`scaled_dot_product`: functions on
  tensors, with padding masks and additive biases, that never return NaN
  for a query whose keys are all masked (its weights and output are 0).
- :class:`MultiHeadAttention`: ``torch.nn.MultiheadAttention``'s
  computation (batch first) with the same parameters, plus an additive
  per-head bias (relative positions) and dropout drawn from a generator the
  estimator owns.
- :class:`AttentionPooling`: a sequence to one vector, by additive
  (Bahdanau), multiplicative (Luong "general"), scaled dot-product or
  multi-head attention of a learned query over the steps.

Masks
-----
Every mask here follows ``torch.nn.MultiheadAttention``: a boolean
``key_padding_mask`` of shape ``(batch, n_keys)`` where ``True`` marks
padding, a key that is ignored. Masked keys get exactly zero weight, so
padding never changes a result: a sequence alone and the same sequence
padded inside a longer batch give the same output.

Randomness
----------
Attention dropout draws its masks from a ``torch.Generator`` when one is
given (:class:`MultiHeadAttention` keeps a
:class:`~sklears_neural.core.noise.Dropout` whose generator
:func:`~sklears_neural.core.noise.set_generator` sets), never from torch's
global generator once an estimator owns the module. PyTorch's fused kernel
draws from the global generator, so the fused path is taken only when no
dropout applies.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from sklears_neural.core import checks
from sklears_neural.core.noise import Dropout
from sklears_neural.core.resolve import Resolver

__all__ = [
    "masked_softmax",
    "scaled_dot_product",
    "MultiHeadAttention",
    "AttentionPooling",
    "POOLING_ATTENTIONS",
]


def masked_softmax(scores, mask=None, dim=-1):
    """Softmax over ``dim`` that gives masked entries exactly zero weight.

    A row whose entries are all masked (or all ``-inf``) gets all-zero
    weights instead of NaN, and its gradient is zero, not NaN.

    Parameters
    ----------
    scores : Tensor
        Real scores; ``-inf`` entries count as masked.
    mask : bool Tensor or None, default=None
        Broadcastable to ``scores``; ``True`` marks an entry to ignore.
    dim : int, default=-1

    Returns
    -------
    weights : Tensor of the shape of ``scores``
        Non-negative, summing to 1 over ``dim`` in every row with at least
        one unmasked entry, 0 in the others.
    """
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    dead = torch.isneginf(scores).all(dim=dim, keepdim=True)
    # A dead row is softmaxed as zeros (finite, so its backward is finite),
    # then zeroed.
    weights = torch.softmax(scores.masked_fill(dead, 0.0), dim=dim)
    return weights.masked_fill(dead, 0.0)


def _additive_mask(q, k, key_padding_mask, attn_bias, is_causal):
    """The float mask added to the scores, broadcastable to (B, H, Tq, Tk), or None."""
    batch, _, n_queries, _ = q.shape
    n_keys = k.shape[-2]
    mask = None
    if attn_bias is not None:
        if attn_bias.dim() not in (3, 4):
            raise ValueError(
                "attn_bias must have shape (n_heads or 1, n_queries, n_keys) or "
                f"(batch, n_heads, n_queries, n_keys); got shape {tuple(attn_bias.shape)}."
            )
        mask = attn_bias.to(q.dtype)
        if mask.dim() == 3:
            mask = mask.unsqueeze(0)
    if is_causal:
        # torch's convention: query i sees keys 0..i (top-left aligned).
        future = torch.ones(n_queries, n_keys, dtype=torch.bool, device=q.device).triu(1)
        causal = torch.zeros(n_queries, n_keys, dtype=q.dtype, device=q.device)
        causal = causal.masked_fill(future, float("-inf"))
        mask = causal if mask is None else mask + causal
    if key_padding_mask is not None:
        if key_padding_mask.shape != (batch, n_keys):
            raise ValueError(
                f"key_padding_mask must have shape (batch, n_keys) = ({batch}, {n_keys}); "
                f"got {tuple(key_padding_mask.shape)}."
            )
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(
                "key_padding_mask must be a bool tensor (True marks padding); got "
                f"dtype {key_padding_mask.dtype}. Pass mask.bool() or lengths-derived "
                "masks such as torch.arange(T) >= lengths[:, None]."
            )
        padding = key_padding_mask[:, None, None, :]
        if mask is None:
            mask = torch.zeros(padding.shape, dtype=q.dtype, device=q.device)
        mask = mask.masked_fill(padding, float("-inf"))
    return mask


def scaled_dot_product(q, k, v, *, key_padding_mask=None, attn_bias=None,
                       is_causal=False, scale=None, dropout_p=0.0, need_weights=False,
                       training=False, generator=None):
    """Scaled dot-product attention, ``softmax(q k^T / sqrt(d) + bias) v``.

    Without weights, dropout or dead rows to handle specially, this is
    ``torch.nn.functional.scaled_dot_product_attention`` (the fused kernels);
    with ``need_weights=True`` or active dropout it is computed explicitly.
    Both agree with torch's function to rounding (about 1e-7 in float32).

    Parameters
    ----------
    q : Tensor of shape (batch, n_heads, n_queries, head_dim)
    k : Tensor of shape (batch, n_heads, n_keys, head_dim)
    v : Tensor of shape (batch, n_heads, n_keys, value_dim)
    key_padding_mask : bool Tensor of shape (batch, n_keys) or None, default=None
        ``True`` marks padding: that key gets zero weight for every query.
    attn_bias : Tensor or None, default=None
        Added to the scores: shape ``(n_heads or 1, n_queries, n_keys)``
        (shared by the batch, e.g. relative positions) or
        ``(batch, n_heads, n_queries, n_keys)``. ``-inf`` entries mask.
    is_causal : bool, default=False
        Query ``i`` sees keys ``0..i`` only (torch's top-left convention).
    scale : float or None, default=None
        Score scale; ``1 / sqrt(head_dim)`` when None.
    dropout_p : float, default=0.0
        Probability of dropping an attention weight (inverted dropout),
        applied only when ``training`` is True.
    need_weights : bool, default=False
        Return the attention weights too.
    training : bool, default=False
        Whether dropout applies.
    generator : torch.Generator or None, default=None
        Source of the dropout masks; torch's default generator when None.

    Returns
    -------
    out : Tensor of shape (batch, n_heads, n_queries, value_dim)
        Zero for a query whose keys are all masked.
    weights : Tensor of shape (batch, n_heads, n_queries, n_keys) or None
        The softmax weights before dropout (each row sums to 1, or is 0
        for a query whose keys are all masked); None unless
        ``need_weights``.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "q, k and v must have 4 dimensions (batch, n_heads, steps, head_dim); got "
            f"shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}."
        )
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    mask = _additive_mask(q, k, key_padding_mask, attn_bias, is_causal)
    dead = None
    if mask is not None:
        # (B or 1, H or 1, Tq or 1, 1): queries that see no key at all.
        dead = torch.isneginf(mask).all(dim=-1, keepdim=True)
        mask = mask.masked_fill(dead, 0.0)
    dropping = training and dropout_p > 0.0
    if not need_weights and not dropping:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        weights = None
    else:
        scores = torch.matmul(q, k.transpose(-2, -1)) * scale
        if mask is not None:
            scores = scores + mask
        weights = torch.softmax(scores, dim=-1)
        if dead is not None:
            weights = weights.masked_fill(dead, 0.0)
        attn = weights
        if dropping:
            if dropout_p >= 1.0:
                attn = weights * 0.0
            else:
                keep = _uniform(weights, generator) >= dropout_p
                attn = weights * (keep.to(weights.dtype) / (1.0 - dropout_p))
        out = torch.matmul(attn, v)
    if dead is not None:
        out = out.masked_fill(dead, 0.0)
    return out, (weights if need_weights else None)


def _uniform(like, generator):
    if generator is None or generator.device == like.device:
        return torch.rand(like.shape, dtype=like.dtype, device=like.device,
                          generator=generator)
    return torch.rand(like.shape, dtype=like.dtype, device=generator.device,
                      generator=generator).to(like.device)


class MultiHeadAttention(nn.Module):
    """Multi-head attention, ``torch.nn.MultiheadAttention``'s computation batch first.

    With the same weights (``q_proj``, ``k_proj``, ``v_proj`` are the three
    row blocks of torch's ``in_proj_weight``/``in_proj_bias``, or its
    ``q/k/v_proj_weight`` when ``kdim``/``vdim`` differ) it gives torch's
    output with ``batch_first=True``. Beyond torch it takes an additive
    per-head ``attn_bias`` (relative positions), returns zeros rather than
    NaN for a query whose keys are all padding, and draws dropout masks
    from its own generator.

    Parameters
    ----------
    embed_dim : int
        Width of the queries and of the output; a multiple of ``num_heads``.
    num_heads : int
    dropout : float, default=0.0
        Dropout on the attention weights during training.
    bias : bool, default=True
        Biases on the four projections.
    kdim : int or None, default=None
        Width of the keys; ``embed_dim`` when None.
    vdim : int or None, default=None
        Width of the values; ``embed_dim`` when None.

    Attributes
    ----------
    attn_dropout : sklears_neural.core.noise.Dropout
        Holds the dropout probability (and schedule) and the generator set
        by :func:`~sklears_neural.core.noise.set_generator`.

    Shapes
    ------
    - query: ``(batch, n_queries, embed_dim)``; key: ``(batch, n_keys, kdim)``;
      value: ``(batch, n_keys, vdim)``.
    - output: ``(batch, n_queries, embed_dim)``; weights:
      ``(batch, num_heads, n_queries, n_keys)``.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, kdim=None, vdim=None):
        super().__init__()
        owner = type(self).__name__
        embed_dim = checks.check_int(owner, "embed_dim", embed_dim, low=1)
        num_heads = checks.check_int(owner, "num_heads", num_heads, low=1)
        if embed_dim % num_heads:
            raise ValueError(
                f"{owner}: embed_dim={embed_dim} is not a multiple of num_heads="
                f"{num_heads}; each head takes embed_dim // num_heads features. Pick "
                "num_heads among the divisors of embed_dim."
            )
        kdim = embed_dim if kdim is None else checks.check_int(owner, "kdim", kdim, low=1)
        vdim = embed_dim if vdim is None else checks.check_int(owner, "vdim", vdim, low=1)
        bias = checks.check_bool(owner, "bias", bias)
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim, self.vdim = kdim, vdim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.attn_dropout = Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self):
        """torch's initialization: Xavier-uniform projections, zero biases."""
        if self.kdim == self.embed_dim == self.vdim:
            # torch draws one (3E, E) matrix; the same bound for the blocks.
            bound = math.sqrt(6.0 / (self.embed_dim + 3 * self.embed_dim))
            for proj in (self.q_proj, self.k_proj, self.v_proj):
                nn.init.uniform_(proj.weight, -bound, bound)
        else:
            for proj in (self.q_proj, self.k_proj, self.v_proj):
                nn.init.xavier_uniform_(proj.weight)
        # torch keeps nn.Linear's default for out_proj's weight.
        nn.init.kaiming_uniform_(self.out_proj.weight, a=math.sqrt(5))
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def _heads(self, x):
        # (B, T, E) -> (B, H, T, E / H)
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, query, key, value, key_padding_mask=None, attn_bias=None,
                need_weights=False, is_causal=False):
        """Attend from ``query`` to ``key``/``value``.

        Parameters
        ----------
        query : Tensor of shape (batch, n_queries, embed_dim)
        key : Tensor of shape (batch, n_keys, kdim)
        value : Tensor of shape (batch, n_keys, vdim)
        key_padding_mask : bool Tensor of shape (batch, n_keys) or None, default=None
            ``True`` marks padding.
        attn_bias : Tensor or None, default=None
            Shape ``(num_heads or 1, n_queries, n_keys)`` or
            ``(batch, num_heads, n_queries, n_keys)``, added to the scores.
        need_weights : bool, default=False
            Return the per-head weights (computed explicitly, no fused kernel).
        is_causal : bool, default=False
            Query ``i`` sees keys ``0..i`` only.

        Returns
        -------
        out : Tensor of shape (batch, n_queries, embed_dim)
        weights : Tensor of shape (batch, num_heads, n_queries, n_keys) or None
            Before dropout; None unless ``need_weights``.
        """
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        out, weights = scaled_dot_product(
            q, k, v,
            key_padding_mask=key_padding_mask,
            attn_bias=attn_bias,
            is_causal=is_causal,
            dropout_p=self.attn_dropout.strength if self.training else 0.0,
            need_weights=need_weights,
            training=self.training,
            generator=self.attn_dropout.generator,
        )
        # (B, H, Tq, E / H) -> (B, Tq, E)
        out = self.out_proj(out.transpose(1, 2).flatten(-2))
        return out, weights

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"


POOLING_ATTENTIONS = Resolver(
    "attention pooling",
    {
        "additive": "additive",
        "multiplicative": "multiplicative",
        "scaled_dot": "scaled_dot",
        "multi_head": "multi_head",
    },
    aliases={"bahdanau": "additive", "luong": "multiplicative", "general": "multiplicative",
             "dot": "scaled_dot", "mha": "multi_head"},
)
"""Kinds of :class:`AttentionPooling`, by name (case, ``-`` and ``_`` ignored)."""


class AttentionPooling(nn.Module):
    """Pool a sequence of vectors into one by attention over its steps.

    Parameters
    ----------
    dim : int
        Width of the step vectors (and of the pooled vector).
    kind : {"additive", "multiplicative", "scaled_dot", "multi_head"}, default="additive"
        How a step ``h_t`` is scored; see Notes. Aliases: "bahdanau",
        "luong"/"general", "dot", "mha".
    num_heads : int, default=1
        Heads of "multi_head" (a divisor of ``dim``); the other kinds have
        one and refuse other values.
    attention_dim : int or None, default=None
        Hidden width of "additive" scoring; ``dim`` when None.
    dropout : float, default=0.0
        Attention dropout of "multi_head".

    Notes
    -----
    With a mask, padded steps get weight exactly 0, and the pooled vector
    is :math:`\\sum_t a_t h_t` with :math:`a = \\mathrm{softmax}(s)` over the
    valid steps, where

    - additive (Bahdanau): :math:`s_t = v^\\top \\tanh(W h_t + b)`;
    - multiplicative (Luong "general"): :math:`s_t = h_t^\\top W q`, with
      a learned query :math:`q`;
    - scaled_dot: :math:`s_t = q^\\top h_t / \\sqrt{d}`, learned :math:`q`;
    - multi_head: a learned query per head through
      :class:`MultiHeadAttention` (so values are projected, and the heads
      are recombined by its output projection).

    A sequence whose steps are all padding pools to the zero vector
    (multi_head: the output projection's bias).

    Shapes
    ------
    - input: ``(batch, steps, dim)``; key_padding_mask: ``(batch, steps)``.
    - pooled: ``(batch, dim)``; weights: ``(batch, steps)``, or
      ``(batch, num_heads, steps)`` for "multi_head".
    """

    def __init__(self, dim, kind="additive", *, num_heads=1, attention_dim=None, dropout=0.0):
        super().__init__()
        owner = type(self).__name__
        self.dim = checks.check_int(owner, "dim", dim, low=1)
        self.kind = POOLING_ATTENTIONS.canonical(kind)
        self.num_heads = checks.check_int(owner, "num_heads", num_heads, low=1)
        if self.kind != "multi_head" and self.num_heads != 1:
            raise ValueError(
                f"{owner}: kind={self.kind!r} has one head, got num_heads={num_heads}. "
                "Use kind='multi_head' for several heads."
            )
        if self.kind == "additive":
            attention_dim = self.dim if attention_dim is None else checks.check_int(
                owner, "attention_dim", attention_dim, low=1
            )
            self.proj = nn.Linear(self.dim, attention_dim)
            self.score = nn.Linear(attention_dim, 1, bias=False)
        elif self.kind == "multiplicative":
            self.proj = nn.Linear(self.dim, self.dim, bias=False)
            self.query = nn.Parameter(torch.empty(self.dim))
        elif self.kind == "scaled_dot":
            self.query = nn.Parameter(torch.empty(self.dim))
        else:
            self.attention = MultiHeadAttention(self.dim, self.num_heads, dropout=dropout)
            self.query = nn.Parameter(torch.empty(self.dim))
        if hasattr(self, "query"):
            # Unit-variance scores for unit-variance steps.
            nn.init.normal_(self.query, std=self.dim ** -0.5)

    def scores(self, x):
        """Unnormalized scores of the single-head kinds, shape ``(batch, steps)``."""
        if self.kind == "additive":
            return self.score(torch.tanh(self.proj(x))).squeeze(-1)
        if self.kind == "multiplicative":
            return torch.matmul(x, self.proj(self.query))
        if self.kind == "scaled_dot":
            return torch.matmul(x, self.query) / math.sqrt(self.dim)
        raise ValueError("multi_head scores are per head; call forward instead.")

    def forward(self, x, key_padding_mask=None):
        """Pool ``x`` over its steps.

        Parameters
        ----------
        x : Tensor of shape (batch, steps, dim)
        key_padding_mask : bool Tensor of shape (batch, steps) or None, default=None
            ``True`` marks padding.

        Returns
        -------
        pooled : Tensor of shape (batch, dim)
        weights : Tensor of shape (batch, steps) or (batch, num_heads, steps)
            Sum to 1 over the valid steps; 0 on padding.
        """
        if self.kind == "multi_head":
            query = self.query.expand(x.shape[0], 1, self.dim)
            pooled, weights = self.attention(
                query, x, x, key_padding_mask=key_padding_mask, need_weights=True
            )
            return pooled.squeeze(1), weights.squeeze(2)
        weights = masked_softmax(self.scores(x), key_padding_mask)
        # (B, 1, T) @ (B, T, D) -> (B, D)
        pooled = torch.matmul(weights.unsqueeze(1), x).squeeze(1)
        return pooled, weights

    def extra_repr(self):
        heads = f", num_heads={self.num_heads}" if self.kind == "multi_head" else ""
        return f"dim={self.dim}, kind={self.kind!r}{heads}"
