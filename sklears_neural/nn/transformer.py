"""The Transformer encoder: positional encodings, the encoder layer, a whole network.

- Positional encodings, by name (``positional=``): ``"sinusoidal"``
  (:func:`sinusoidal_encoding`, computed for any length),
  ``"learnable"`` (:class:`LearnablePositionalEncoding`, one vector per
  position up to ``max_len``), ``"relative"``
  (:class:`RelativePositionBias`, a learned per-head bias on the attention
  scores) or ``None`` (no positions: the encoder is then
  permutation-equivariant).
- :class:`TransformerEncoderLayer`: ``torch.nn.TransformerEncoderLayer``'s
  computation (batch first; post-LN or pre-LN), with the same parameter
  names except that torch's ``self_attn.in_proj_weight`` is split into
  ``self_attn.q_proj/k_proj/v_proj``, plus an additive attention bias, the
  attention weights on request, and dropout drawn from a generator the
  estimator owns.
- :class:`TransformerNet`: features (or integer tokens) to a prediction per
  sequence or per step: input projection, positions, a stack of encoder
  layers, pooling over the valid steps, a linear output layer.

Padding
-------
Batches hold sequences of different lengths zero-padded to one length ``T``
and their ``lengths``. Padded steps are masked as attention keys, skipped
by every pooling and zeroed in per-step output, so a sequence gives the
same output alone as padded inside a batch of longer ones (to rounding).
Masks follow :mod:`sklears_neural.nn.attention`: ``True`` marks padding.

Randomness
----------
Every dropout is a :class:`~sklears_neural.core.noise.Dropout` (attention
dropout too, inside
:class:`~sklears_neural.nn.attention.MultiHeadAttention`), so
:func:`~sklears_neural.core.noise.set_generator` makes all masks come from
one generator, and :meth:`TransformerNet.reset_parameters` draws every
weight from the generator it is given.
"""

import math

import torch
from torch import nn

from sklears_neural.core import checks
from sklears_neural.core.noise import Dropout
from sklears_neural.core.registry import register_module
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.nn.attention import AttentionPooling, MultiHeadAttention

__all__ = [
    "POSITIONAL_ENCODINGS",
    "POOLINGS",
    "sinusoidal_encoding",
    "SinusoidalPositionalEncoding",
    "LearnablePositionalEncoding",
    "RelativePositionBias",
    "TransformerEncoderLayer",
    "TransformerNet",
    "padding_mask",
]

#: Values of ``TransformerNet(positional=...)``.
POSITIONAL_ENCODINGS = ("sinusoidal", "learnable", "relative", None)
#: Values of ``TransformerNet(pooling=...)``.
POOLINGS = ("mean", "cls", "max", "attention")

# Standard deviation of the learned position vectors, relative-bias table and
# CLS token at initialization (BERT's and ViT's 0.02): small next to the
# projected input, so the network starts close to position-agnostic and
# learns how much position matters.
_POSITION_INIT_STD = 0.02


def _exporting():
    # Checks that read tensor values (lengths within [1, T]) are skipped
    # while torch.export / ONNX dynamo trace the module: they would be
    # data-dependent control flow, and traced graphs take checked inputs.
    return torch.compiler.is_compiling()


def _reset_linear_(linear, generator):
    """``nn.Linear``'s own initialization, drawn from ``generator``."""
    nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
    if linear.bias is not None:
        bound = 1.0 / math.sqrt(linear.in_features) if linear.in_features > 0 else 0.0
        nn.init.uniform_(linear.bias, -bound, bound, generator=generator)


def _reset_attention_(attention, generator):
    """``MultiHeadAttention.reset_parameters`` (torch's scheme), drawn from ``generator``."""
    if attention.kdim == attention.embed_dim == attention.vdim:
        # torch draws one Xavier-uniform (3E, E) matrix: one bound for the blocks.
        bound = math.sqrt(6.0 / (4 * attention.embed_dim))
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
            nn.init.uniform_(proj.weight, -bound, bound, generator=generator)
    else:
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
            nn.init.xavier_uniform_(proj.weight, generator=generator)
    nn.init.kaiming_uniform_(attention.out_proj.weight, a=math.sqrt(5), generator=generator)
    for proj in (attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj):
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)


def _reset_module_(module, generator):
    """Redraw the layers of a sub-network (attention pooling) from ``generator``."""
    inside_attention = set()
    for m in module.modules():
        if isinstance(m, MultiHeadAttention):
            _reset_attention_(m, generator)
            inside_attention.update(id(sub) for sub in m.modules())
    for m in module.modules():
        if isinstance(m, nn.Linear) and id(m) not in inside_attention:
            _reset_linear_(m, generator)
    query = getattr(module, "query", None)
    if isinstance(query, nn.Parameter):
        nn.init.normal_(query, std=query.shape[-1] ** -0.5, generator=generator)


def padding_mask(lengths, batch, steps, device=None):
    """The key padding mask of a batch: ``True`` at steps at or beyond a sequence's length.

    Parameters
    ----------
    lengths : int Tensor of shape (batch,) or None
        Valid steps of each sequence, in ``[1, steps]``.
    batch : int
    steps : int
        Padded length ``T``.
    device : torch.device or None, default=None

    Returns
    -------
    mask : bool Tensor of shape (batch, steps) or None
        None when ``lengths`` is None (every sequence is full length).

    Raises
    ------
    ValueError
        If ``lengths`` has the wrong shape or a value outside ``[1, steps]``.
    TypeError
        If ``lengths`` is not an integer tensor.
    """
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(
            f"lengths must hold integers (int64 step counts); got dtype {lengths.dtype}."
        )
    if tuple(lengths.shape) != (batch,):
        raise ValueError(
            f"lengths must have shape (batch,) = ({batch},), one count per sequence; "
            f"got shape {tuple(lengths.shape)}."
        )
    if not _exporting() and bool(((lengths < 1) | (lengths > steps)).any()):
        raise ValueError(
            f"Every length must be in [1, {steps}] (the padded length of the batch); got "
            f"min {int(lengths.min())}, max {int(lengths.max())}. Drop empty sequences "
            "and pad every sequence to at least its length."
        )
    return torch.arange(steps, device=lengths.device)[None, :] >= lengths[:, None]


def sinusoidal_encoding(length, d_model, *, dtype=None, device=None):
    """The fixed sinusoidal positional encoding of Vaswani et al. (2017).

    Parameters
    ----------
    length : int
        Number of positions, ``0 .. length - 1``.
    d_model : int
        Width of each encoding.
    dtype : torch.dtype or None, default=None
        torch's default dtype when None.
    device : torch.device or None, default=None

    Returns
    -------
    encoding : Tensor of shape (length, d_model)

    Notes
    -----
    .. math::

        PE_{p, 2i} = \\sin(p / 10000^{2i / d}), \\qquad
        PE_{p, 2i + 1} = \\cos(p / 10000^{2i / d})

    with :math:`d` = ``d_model`` (an odd ``d_model`` drops the last cosine).
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    position = torch.arange(length, dtype=dtype, device=device).unsqueeze(1)
    # 1 / 10000^(2i / d) for i = 0 .. ceil(d / 2) - 1
    frequency = torch.exp(
        torch.arange(0, d_model, 2, dtype=dtype, device=device) * (-math.log(10000.0) / d_model)
    )
    angle = position * frequency
    # Interleave sin and cos (columns 2i, 2i + 1) without in-place writes,
    # which keeps the function exportable.
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(1)[:, :d_model]


class SinusoidalPositionalEncoding(nn.Module):
    """Add :func:`sinusoidal_encoding` to a batch of sequences.

    Computed on the fly for the batch's length, so any length works and the
    module has no state.

    Parameters
    ----------
    d_model : int

    Shapes
    ------
    - input: ``(batch, steps, d_model)``; output: same.
    """

    def __init__(self, d_model):
        super().__init__()
        self.d_model = checks.check_int(type(self).__name__, "d_model", d_model, low=1)

    def forward(self, x):
        return x + sinusoidal_encoding(x.shape[1], self.d_model, dtype=x.dtype, device=x.device)

    def extra_repr(self):
        return f"d_model={self.d_model}"


class LearnablePositionalEncoding(nn.Module):
    """Add a learned vector per position (BERT, ViT) to a batch of sequences.

    Parameters
    ----------
    d_model : int
    max_len : int
        Number of positions learned; longer sequences are refused.

    Attributes
    ----------
    weight : Parameter of shape (max_len, d_model)

    Shapes
    ------
    - input: ``(batch, steps, d_model)`` with ``steps <= max_len``; output: same.
    """

    def __init__(self, d_model, max_len):
        super().__init__()
        owner = type(self).__name__
        self.d_model = checks.check_int(owner, "d_model", d_model, low=1)
        self.max_len = checks.check_int(owner, "max_len", max_len, low=1)
        self.weight = nn.Parameter(torch.empty(self.max_len, self.d_model))
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        """Draw the vectors from ``N(0, 0.02^2)``."""
        nn.init.normal_(self.weight, std=_POSITION_INIT_STD, generator=generator)

    def forward(self, x):
        steps = x.shape[1]
        if steps > self.max_len:
            raise ValueError(
                f"A sequence of {steps} steps is longer than max_len={self.max_len}, the "
                "number of positions the learnable encoding holds. Build the network with "
                "a larger max_len, truncate the sequences, or use positional='sinusoidal' "
                "or 'relative', which take any length."
            )
        return x + self.weight[:steps]

    def extra_repr(self):
        return f"d_model={self.d_model}, max_len={self.max_len}"


class RelativePositionBias(nn.Module):
    """A learned per-head bias on the attention scores from the clipped key-query distance.

    The relative position representation of Shaw et al. (2018), reduced to
    one scalar per head and distance as in T5 (Raffel et al., 2020), with
    Shaw's clipping rather than T5's logarithmic buckets: the score of query
    ``i`` for key ``j`` in head ``h`` gets

    .. math::

        b_{h, i, j} = w_{h,\\ \\mathrm{clip}(j - i,\\ -K,\\ K) + K}

    with :math:`K` = ``max_distance``. Every distance beyond ``K`` in either
    direction shares one weight, so any length works, and the bias depends
    on ``j - i`` only: shifting a sequence does not change it.

    Parameters
    ----------
    num_heads : int
    max_distance : int, default=16
        Distances learned exactly in each direction (Shaw et al. found 2
        enough for translation; more lets heads prefer longer ranges).

    Attributes
    ----------
    weight : Parameter of shape (num_heads, 2 * max_distance + 1)
        Column ``d + max_distance`` holds the bias of distance ``d``.

    Shapes
    ------
    - ``forward(steps)``: ``(num_heads, steps, steps)``, the ``attn_bias``
      of :class:`~sklears_neural.nn.attention.MultiHeadAttention`.
    """

    def __init__(self, num_heads, max_distance=16):
        super().__init__()
        owner = type(self).__name__
        self.num_heads = checks.check_int(owner, "num_heads", num_heads, low=1)
        self.max_distance = checks.check_int(owner, "max_distance", max_distance, low=0)
        self.weight = nn.Parameter(torch.empty(self.num_heads, 2 * self.max_distance + 1))
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        """Draw the biases from ``N(0, 0.02^2)``."""
        nn.init.normal_(self.weight, std=_POSITION_INIT_STD, generator=generator)

    def forward(self, steps, device=None):
        position = torch.arange(steps, device=self.weight.device if device is None else device)
        # (T, T): key index minus query index, clipped, shifted to a column.
        distance = position[None, :] - position[:, None]
        index = distance.clamp(-self.max_distance, self.max_distance) + self.max_distance
        return self.weight[:, index]

    def extra_repr(self):
        return f"num_heads={self.num_heads}, max_distance={self.max_distance}"


class TransformerEncoderLayer(nn.Module):
    """Self-attention and a feed-forward block, each with a residual connection.

    ``torch.nn.TransformerEncoderLayer`` with ``batch_first=True``: with the
    same weights it gives torch's output on the non-padded steps. Beyond
    torch it adds ``attn_bias`` to the attention scores (relative
    positions), returns the attention weights on request, and draws its
    dropout masks from the generator set by
    :func:`~sklears_neural.core.noise.set_generator`.

    Parameters
    ----------
    d_model : int
        Width of the steps; a multiple of ``num_heads``.
    num_heads : int
    dim_feedforward : int, default=2048
        Hidden width of the feed-forward block.
    dropout : float, default=0.1
        Dropout on the attention weights, after the feed-forward activation
        and on each block's output before its residual addition.
    activation : str or (str, dict), default="relu"
        Feed-forward activation, a name of
        :data:`~sklears_neural.core.resolve.ACTIVATIONS` ("relu", "gelu",
        ...).
    layer_norm_eps : float, default=1e-5
    norm_first : bool, default=False
        Pre-LN (normalize each block's input) instead of post-LN (normalize
        after each residual addition); see Notes.
    bias : bool, default=True
        Biases in the linear layers and layer norms.

    Notes
    -----
    With :math:`A` the self-attention and :math:`F(x) = W_2\\,\\mathrm{drop}(
    \\sigma(W_1 x + b_1)) + b_2`, dropout on each block output left out:

    - post-LN: :math:`y = \\mathrm{LN}_1(x + A(x))`,
      :math:`z = \\mathrm{LN}_2(y + F(y))`;
    - pre-LN: :math:`y = x + A(\\mathrm{LN}_1(x))`,
      :math:`z = y + F(\\mathrm{LN}_2(y))`.

    Shapes
    ------
    - input: ``(batch, steps, d_model)``; ``key_padding_mask``:
      ``(batch, steps)``, ``True`` at padding.
    - output: ``(batch, steps, d_model)``; weights:
      ``(batch, num_heads, steps, steps)``.
    """

    def __init__(self, d_model, num_heads, dim_feedforward=2048, dropout=0.1,
                 activation="relu", *, layer_norm_eps=1e-5, norm_first=False, bias=True):
        super().__init__()
        owner = type(self).__name__
        d_model = checks.check_int(owner, "d_model", d_model, low=1)
        dim_feedforward = checks.check_int(owner, "dim_feedforward", dim_feedforward, low=1)
        dropout = checks.check_real(owner, "dropout", dropout, low=0.0, high=1.0,
                                    high_open=True)
        layer_norm_eps = checks.check_real(owner, "layer_norm_eps", layer_norm_eps,
                                           low=0.0, low_open=True)
        self.norm_first = checks.check_bool(owner, "norm_first", norm_first)
        bias = checks.check_bool(owner, "bias", bias)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout, bias=bias)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.activation = ACTIVATIONS.build(activation, width=dim_feedforward)
        self.dropout = Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def reset_parameters(self, generator=None):
        """torch's initialization, drawn from ``generator``.

        Attention as ``torch.nn.MultiheadAttention`` (Xavier-uniform
        projections, zero biases), the feed-forward linears as ``nn.Linear``,
        layer norms to ones and zeros.
        """
        _reset_attention_(self.self_attn, generator)
        _reset_linear_(self.linear1, generator)
        _reset_linear_(self.linear2, generator)
        self.norm1.reset_parameters()
        self.norm2.reset_parameters()

    def _attend(self, x, key_padding_mask, attn_bias, need_weights):
        out, weights = self.self_attn(x, x, x, key_padding_mask=key_padding_mask,
                                      attn_bias=attn_bias, need_weights=need_weights)
        return self.dropout1(out), weights

    def _feed_forward(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, x, key_padding_mask=None, attn_bias=None, need_weights=False):
        """Encode ``x``.

        Parameters
        ----------
        x : Tensor of shape (batch, steps, d_model)
        key_padding_mask : bool Tensor of shape (batch, steps) or None, default=None
            ``True`` marks padding, never attended to.
        attn_bias : Tensor or None, default=None
            Added to the attention scores: ``(num_heads or 1, steps, steps)``
            or ``(batch, num_heads, steps, steps)``.
        need_weights : bool, default=False
            Return the attention weights.

        Returns
        -------
        out : Tensor of shape (batch, steps, d_model)
        weights : Tensor of shape (batch, num_heads, steps, steps) or None
            Softmax weights before dropout, each row summing to 1 over the
            valid keys; None unless ``need_weights``.
        """
        if self.norm_first:
            attended, weights = self._attend(self.norm1(x), key_padding_mask, attn_bias,
                                             need_weights)
            x = x + attended
            x = x + self._feed_forward(self.norm2(x))
        else:
            attended, weights = self._attend(x, key_padding_mask, attn_bias, need_weights)
            x = self.norm1(x + attended)
            x = self.norm2(x + self._feed_forward(x))
        return x, weights


@register_module
class TransformerNet(nn.Module):
    """A Transformer encoder over sequences, with a linear output per sequence or per step.

    Input projection (or token embedding), positional encoding, dropout,
    ``num_layers`` :class:`TransformerEncoderLayer`, a final layer norm when
    pre-LN, pooling over the valid steps, and a linear output layer.

    Parameters
    ----------
    n_features : int or None
        Width of each step of float input; None with ``vocab_size``.
    n_outputs : int
        Output width (logits or regression outputs).
    d_model : int, default=64
        Width of the encoder; a multiple of ``num_heads``.
    num_heads : int, default=4
    num_layers : int, default=2
    dim_feedforward : int, default=128
        Hidden width of each layer's feed-forward block.
    dropout : float, default=0.1
        Dropout on the input (after positions), attention weights,
        feed-forward activations and block outputs; in ``[0, 1)``.
    activation : str or (str, dict), default="gelu"
        Feed-forward activation, a name of
        :data:`~sklears_neural.core.resolve.ACTIVATIONS`.
    norm_first : bool, default=True
        Pre-LN layers (and a final layer norm) when True, post-LN otherwise.
    positional : {"sinusoidal", "learnable", "relative"} or None, default="sinusoidal"
        How positions enter: the fixed sinusoidal encoding added to the
        input (any length); a learned vector per position added to the input
        (at most ``max_len`` steps); a learned per-head bias on the attention
        scores from the clipped distance ``j - i`` (see
        :class:`RelativePositionBias`, any length), shared by all layers as
        in T5; or None, leaving the network blind to order.
    max_len : int, default=512
        Longest sequence with ``positional="learnable"`` (a longer one
        raises ``ValueError``); unused otherwise.
    pooling : {"mean", "cls", "max", "attention"}, default="mean"
        One vector per sequence: the mean or elementwise maximum of the
        valid steps, the output at a learned CLS token prepended to every
        sequence (BERT), or additive attention pooling
        (:class:`~sklears_neural.nn.attention.AttentionPooling`). Unused
        with ``per_step=True``.
    per_step : bool, default=False
        Output at every step, ``(batch, steps, n_outputs)``, zero at padded
        steps, instead of one output per sequence.
    vocab_size : int or None, default=None
        Input of integer tokens in ``[0, vocab_size)`` through an
        ``nn.Embedding`` instead of float features (then ``n_features`` is
        None).
    padding_idx : int or None, default=0
        Token whose embedding is fixed at zero (``nn.Embedding``'s
        ``padding_idx``); only with ``vocab_size``. Padding is given by
        ``lengths``, not by this token.
    max_distance : int, default=16
        Clipping distance of ``positional="relative"``; unused otherwise.
    layer_norm_eps : float, default=1e-5

    Attributes
    ----------
    input_proj : nn.Linear or nn.Embedding
    positional_encoding : nn.Module or None
        :class:`SinusoidalPositionalEncoding` or
        :class:`LearnablePositionalEncoding` (added to the input).
    relative_bias : RelativePositionBias or None
    cls_token : Parameter of shape (d_model,) or None
    layers : nn.ModuleList of TransformerEncoderLayer
    norm : nn.LayerNorm or nn.Identity
    pool : AttentionPooling or None
    head : nn.Linear

    Shapes
    ------
    - input ``x``: ``(batch, steps, n_features)`` floats, zero-padded, or
      ``(batch, steps)`` int64 tokens with ``vocab_size``; ``lengths``:
      ``(batch,)`` integers in ``[1, steps]``, or None for full length.
    - output: ``(batch, n_outputs)``, or ``(batch, steps, n_outputs)`` with
      ``per_step=True``.

    Raises
    ------
    ValueError
        On an out-of-range or unknown option; the message names the
        choices.

    Examples
    --------
    >>> import torch
    >>> from sklears_neural.nn.transformer import TransformerNet
    >>> net = TransformerNet(3, 2, d_model=16, num_heads=2).eval()
    >>> x = torch.zeros(4, 7, 3)
    >>> net(x, lengths=torch.tensor([7, 5, 2, 1])).shape
    torch.Size([4, 2])
    >>> [w.shape for w in net.get_attention(x)]
    [torch.Size([4, 2, 7, 7]), torch.Size([4, 2, 7, 7])]
    """

    def __init__(self, n_features, n_outputs, d_model=64, num_heads=4, num_layers=2, *,
                 dim_feedforward=128, dropout=0.1, activation="gelu", norm_first=True,
                 positional="sinusoidal", max_len=512, pooling="mean", per_step=False,
                 vocab_size=None, padding_idx=0, max_distance=16, layer_norm_eps=1e-5):
        super().__init__()
        owner = type(self).__name__
        if vocab_size is None:
            if n_features is None:
                raise ValueError(
                    f"{owner} needs n_features (float input of shape (batch, steps, "
                    "n_features)) or vocab_size (int64 tokens of shape (batch, steps))."
                )
            n_features = checks.check_int(owner, "n_features", n_features, low=1)
        else:
            vocab_size = checks.check_int(owner, "vocab_size", vocab_size, low=1)
            if n_features is not None:
                raise ValueError(
                    f"{owner} takes tokens (vocab_size={vocab_size}) or float features "
                    f"(n_features={n_features!r}), not both: pass n_features=None with "
                    "vocab_size."
                )
            if padding_idx is not None:
                padding_idx = checks.check_int(owner, "padding_idx", padding_idx, low=0,
                                               high=vocab_size - 1)
        self.n_features = n_features
        self.n_outputs = checks.check_int(owner, "n_outputs", n_outputs, low=1)
        self.d_model = checks.check_int(owner, "d_model", d_model, low=1)
        self.num_heads = checks.check_int(owner, "num_heads", num_heads, low=1)
        self.num_layers = checks.check_int(owner, "num_layers", num_layers, low=0)
        dropout = checks.check_real(owner, "dropout", dropout, low=0.0, high=1.0,
                                    high_open=True)
        self.norm_first = checks.check_bool(owner, "norm_first", norm_first)
        if positional not in POSITIONAL_ENCODINGS:
            checks.fail(owner, "positional",
                        "one of 'sinusoidal', 'learnable', 'relative' or None", positional)
        self.positional = positional
        self.max_len = checks.check_int(owner, "max_len", max_len, low=1)
        self.pooling = checks.check_options(owner, "pooling", pooling, POOLINGS)
        self.per_step = checks.check_bool(owner, "per_step", per_step)
        self.vocab_size = vocab_size
        self.padding_idx = padding_idx
        self.max_distance = checks.check_int(owner, "max_distance", max_distance, low=0)

        if vocab_size is None:
            self.input_proj = nn.Linear(n_features, self.d_model)
        else:
            self.input_proj = nn.Embedding(vocab_size, self.d_model, padding_idx=padding_idx)
        self.positional_encoding = None
        self.relative_bias = None
        if positional == "sinusoidal":
            self.positional_encoding = SinusoidalPositionalEncoding(self.d_model)
        elif positional == "learnable":
            self.positional_encoding = LearnablePositionalEncoding(self.d_model, self.max_len)
        elif positional == "relative":
            self.relative_bias = RelativePositionBias(self.num_heads, self.max_distance)
        self.input_dropout = Dropout(dropout)
        self._uses_cls = self.pooling == "cls" and not self.per_step
        self.cls_token = nn.Parameter(torch.empty(self.d_model)) if self._uses_cls else None
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(
                self.d_model, self.num_heads, dim_feedforward, dropout, activation,
                layer_norm_eps=layer_norm_eps, norm_first=self.norm_first,
            )
            for _ in range(self.num_layers)
        )
        self.norm = (nn.LayerNorm(self.d_model, eps=layer_norm_eps) if self.norm_first
                     else nn.Identity())
        self.pool = (AttentionPooling(self.d_model, "additive")
                     if self.pooling == "attention" and not self.per_step else None)
        self.head = nn.Linear(self.d_model, self.n_outputs)
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        """Draw every weight from ``generator`` (torch's default one when None).

        Linear layers and attention as torch initializes them, token
        embeddings from ``N(0, 1)`` (zero at ``padding_idx``), learned
        positions, relative biases and the CLS token from ``N(0, 0.02^2)``,
        layer norms to ones and zeros. Draws follow module order, so one
        seed gives one network.
        """
        if isinstance(self.input_proj, nn.Embedding):
            nn.init.normal_(self.input_proj.weight, generator=generator)
            if self.padding_idx is not None:
                with torch.no_grad():
                    self.input_proj.weight[self.padding_idx].zero_()
        else:
            _reset_linear_(self.input_proj, generator)
        if isinstance(self.positional_encoding, LearnablePositionalEncoding):
            self.positional_encoding.reset_parameters(generator)
        if self.relative_bias is not None:
            self.relative_bias.reset_parameters(generator)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=_POSITION_INIT_STD, generator=generator)
        for layer in self.layers:
            layer.reset_parameters(generator)
        if isinstance(self.norm, nn.LayerNorm):
            self.norm.reset_parameters()
        if self.pool is not None:
            _reset_module_(self.pool, generator)
        _reset_linear_(self.head, generator)

    def _check_input(self, x):
        if self.vocab_size is None:
            if x.dim() != 3 or x.shape[-1] != self.n_features:
                raise ValueError(
                    f"{type(self).__name__} expects float input of shape (batch, steps, "
                    f"n_features={self.n_features}); got shape {tuple(x.shape)}."
                )
        elif x.dim() != 2 or x.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} was built with vocab_size={self.vocab_size} and "
                "expects int64 tokens of shape (batch, steps); got "
                f"{x.dtype} of shape {tuple(x.shape)}."
            )

    def _encode(self, x, lengths, need_weights):
        """Encoder output, padding mask and per-layer attention weights.

        Returns ``h`` of shape ``(B, T', d_model)``, ``pad`` of shape
        ``(B, T')`` or None, and a list of ``(B, H, T', T')`` weights (Nones
        unless ``need_weights``); ``T' = T + 1`` with a CLS token at 0.
        """
        self._check_input(x)
        batch, steps = x.shape[0], x.shape[1]
        pad = padding_mask(lengths, batch, steps, device=x.device)
        h = self.input_proj(x)
        if pad is not None:
            # Padded steps enter as zeros whatever the input holds there
            # (even NaN), so they cannot reach a valid step by any route.
            h = h.masked_fill(pad.unsqueeze(-1), 0.0)
        if self.positional_encoding is not None:
            h = self.positional_encoding(h)
        h = self.input_dropout(h)
        if self.cls_token is not None:
            # The CLS token goes first, without a position: the data steps
            # keep positions 0 .. T - 1 and max_len counts data steps only.
            cls = self.cls_token.to(h.dtype).expand(batch, 1, self.d_model)
            h = torch.cat([cls, h], dim=1)
            if pad is not None:
                pad = torch.cat([pad.new_zeros(batch, 1), pad], dim=1)
        bias = None
        if self.relative_bias is not None:
            bias = self.relative_bias(h.shape[1], device=h.device).to(h.dtype)
        weights = []
        for layer in self.layers:
            h, w = layer(h, key_padding_mask=pad, attn_bias=bias, need_weights=need_weights)
            weights.append(w)
        return self.norm(h), pad, weights

    def _pool(self, h, pad):
        if self.pooling == "cls":
            return h[:, 0]
        if self.pooling == "attention":
            return self.pool(h, key_padding_mask=pad)[0]
        if self.pooling == "max":
            if pad is None:
                return h.amax(dim=1)
            return h.masked_fill(pad.unsqueeze(-1), float("-inf")).amax(dim=1)
        if pad is None:
            return h.mean(dim=1)
        valid = (~pad).to(h.dtype).sum(dim=1, keepdim=True)
        return h.masked_fill(pad.unsqueeze(-1), 0.0).sum(dim=1) / valid

    def forward(self, x, lengths=None):
        """Predict from a padded batch of sequences.

        Parameters
        ----------
        x : Tensor of shape (batch, steps, n_features), or (batch, steps) int64
            Zero-padded steps (tokens with ``vocab_size``).
        lengths : int Tensor of shape (batch,) or None, default=None
            Valid steps of each sequence, in ``[1, steps]``; None when every
            sequence has ``steps`` steps.

        Returns
        -------
        out : Tensor of shape (batch, n_outputs), or (batch, steps, n_outputs)
            Per sequence, or per step with ``per_step=True`` (zero at padded
            steps).
        """
        h, pad, _ = self._encode(x, lengths, need_weights=False)
        if self.per_step:
            out = self.head(h)
            return out if pad is None else out.masked_fill(pad.unsqueeze(-1), 0.0)
        return self.head(self._pool(h, pad))

    def get_attention(self, x, lengths=None):
        """The self-attention weights of every layer and head.

        Runs the network as it stands (call ``eval()`` first for weights
        without dropout's influence on later layers).

        Parameters
        ----------
        x : Tensor of shape (batch, steps, n_features), or (batch, steps) int64
        lengths : int Tensor of shape (batch,) or None, default=None

        Returns
        -------
        weights : list of ``num_layers`` Tensors of shape (batch, num_heads, T', T')
            ``weights[l][b, h, i, j]``: how much step ``i`` attends to step
            ``j`` in head ``h`` of layer ``l``. Rows of valid queries sum to
            1; rows of padded queries and columns of padded keys are 0.
            ``T' = steps``, or ``steps + 1`` with ``pooling="cls"``, where
            index 0 is the CLS token.
        """
        _, pad, weights = self._encode(x, lengths, need_weights=True)
        if pad is None:
            return weights
        # Padded queries attend to the valid keys like any step, but their
        # rows feed nothing: report them as 0.
        valid_query = (~pad)[:, None, :, None].to(weights[0].dtype) if weights else None
        return [w * valid_query for w in weights]

    def extra_repr(self):
        source = (f"n_features={self.n_features}" if self.vocab_size is None
                  else f"vocab_size={self.vocab_size}")
        return (f"{source}, n_outputs={self.n_outputs}, positional={self.positional!r}, "
                f"pooling={self.pooling!r}, per_step={self.per_step}")
