"""Recurrent networks over padded batches of variable-length sequences.

:class:`RecurrentNet` is the network of the RNN estimators: a stack of
``torch.nn.LSTM``/``GRU``/``RNN`` layers, a pooling of the steps into one
vector (last state, mean, max or attention), and a linear output layer; or
one output per step; or a hierarchical attention network (Yang et al.,
2016) that encodes segments of the sequence first and the segment vectors
next.

Padding
-------
Inputs come zero-padded to the batch's longest sequence, with their
``lengths``. The recurrence runs on packed sequences
(``pack_padded_sequence(..., enforce_sorted=False)``), so padded steps
never reach it, and poolings mask them: a sequence alone and the same
sequence inside a batch of longer ones give the same output (to rounding).

Randomness
----------
Dropout between the recurrent layers and before the output layer is
:class:`~sklears_neural.core.noise.Dropout`, drawing from the generator
given by :func:`~sklears_neural.core.noise.set_generator`; that is why the
layers are stacked one ``torch.nn`` module per layer instead of one
``num_layers`` module, whose dropout draws from torch's global generator.
The computation is the same as torch's multi-layer module (inter-layer
inputs concatenate both directions).
"""

from typing import NamedTuple, Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from sklears_neural.core import checks
from sklears_neural.core.noise import Dropout
from sklears_neural.core.registry import register_module
from sklears_neural.core.resolve import Resolver
from sklears_neural.nn.attention import POOLING_ATTENTIONS, AttentionPooling

__all__ = [
    "RecurrentNet",
    "RecurrentEncoder",
    "AttentionWeights",
    "CELLS",
    "POOLINGS",
]

CELLS = Resolver(
    "recurrent cell",
    {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN},
    aliases={"elman": "rnn"},
)
"""Recurrent layers by name: "lstm", "gru", "rnn" (Elman, tanh or relu)."""

POOLINGS = Resolver(
    "pooling",
    {name: name for name in ("last", "mean", "max", *POOLING_ATTENTIONS.names)},
    aliases={"bahdanau": "additive", "luong": "multiplicative", "general": "multiplicative",
             "dot": "scaled_dot", "mha": "multi_head"},
)
"""Ways to pool the steps of a sequence into one vector, by name."""


class AttentionWeights(NamedTuple):
    """Attention weights of a :class:`RecurrentNet` over its input.

    Attributes
    ----------
    steps : Tensor of shape (batch, steps) or (batch, num_heads, steps)
        Weight of each input step in the pooled vector: sums to 1 over the
        valid steps of a sequence and is exactly 0 on its padding. In a
        hierarchical network it is the weight of the step within its
        segment times the weight of the segment.
    segments : Tensor of shape (batch, n_segments) or (batch, num_heads, n_segments), or None
        Weights of the segment vectors of a hierarchical network (0 on
        segments past a sequence's end); None otherwise.
    """

    steps: torch.Tensor
    segments: Optional[torch.Tensor]


class RecurrentEncoder(nn.Module):
    """A stack of single-layer recurrent modules run on packed sequences.

    Equivalent to ``CELLS(cell)(input_size, hidden_size, num_layers,
    bidirectional=..., dropout=..., batch_first=True)`` with layer ``l``'s
    parameters in ``layers[l]`` (named ``..._l0`` there), except that
    dropout between layers draws from the generator of
    :func:`~sklears_neural.core.noise.set_generator`.

    Parameters
    ----------
    input_size : int
    cell : {"lstm", "gru", "rnn"}, default="lstm"
    hidden_size : int, default=64
    num_layers : int, default=1
    bidirectional : bool, default=False
    dropout : float, default=0.0
        Dropout on the inputs of every layer after the first.
    nonlinearity : {"tanh", "relu"}, default="tanh"
        Of the "rnn" cell; the others ignore it.

    Shapes
    ------
    - input: ``(batch, steps, input_size)``, lengths: ``(batch,)`` or None.
    - steps: ``(batch, steps, num_directions * hidden_size)``, zero on padding.
    - final: ``(batch, num_directions, hidden_size)``: the last layer's
      ``h_n``, i.e. the forward state after each sequence's last valid step
      and the backward state at step 0.
    """

    def __init__(self, input_size, cell="lstm", hidden_size=64, num_layers=1,
                 bidirectional=False, dropout=0.0, nonlinearity="tanh"):
        super().__init__()
        owner = type(self).__name__
        self.cell = CELLS.canonical(cell)
        self.hidden_size = checks.check_int(owner, "hidden_size", hidden_size, low=1)
        num_layers = checks.check_int(owner, "num_layers", num_layers, low=1)
        self.bidirectional = checks.check_bool(owner, "bidirectional", bidirectional)
        nonlinearity = checks.check_options(owner, "nonlinearity", nonlinearity, ("tanh", "relu"))
        self.num_directions = 2 if self.bidirectional else 1
        extra = {"nonlinearity": nonlinearity} if self.cell == "rnn" else {}
        width = self.num_directions * self.hidden_size
        self.layers = nn.ModuleList(
            CELLS(self.cell)(
                input_size if i == 0 else width, self.hidden_size, num_layers=1,
                batch_first=True, bidirectional=self.bidirectional, **extra,
            )
            for i in range(num_layers)
        )
        self.dropout = Dropout(dropout)

    def forward(self, x, lengths=None):
        """Run the stack; see the class docstring for shapes.

        Parameters
        ----------
        x : Tensor of shape (batch, steps, input_size)
        lengths : int64 Tensor of shape (batch,) on the CPU, or None, default=None
            Valid steps per sequence, each in ``[1, steps]``; None: all.

        Returns
        -------
        steps : Tensor of shape (batch, steps, num_directions * hidden_size)
        final : Tensor of shape (batch, num_directions, hidden_size)
        """
        n_steps = x.shape[1]
        inputs = x
        if lengths is not None:
            inputs = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        for i, layer in enumerate(self.layers):
            if i:
                inputs = self._drop(inputs)
            inputs, state = layer(inputs)
        h_n = state[0] if self.cell == "lstm" else state
        steps = inputs
        if lengths is not None:
            steps, _ = pad_packed_sequence(inputs, batch_first=True, total_length=n_steps)
        # h_n: (num_directions, B, H) -> (B, num_directions, H)
        return steps, h_n.transpose(0, 1)

    def _drop(self, inputs):
        if not isinstance(inputs, PackedSequence):
            return self.dropout(inputs)
        # Packed data holds only the valid steps: dropping on it draws the
        # same mask count whatever the padding.
        return PackedSequence(self.dropout(inputs.data), inputs.batch_sizes,
                              inputs.sorted_indices, inputs.unsorted_indices)


@register_module
class RecurrentNet(nn.Module):
    """Recurrent network for sequences: sequence to one output, or one per step.

    Parameters
    ----------
    n_features : int
        Features per step.
    n_outputs : int
        Outputs per sequence (or per step when ``per_step``).
    cell : {"lstm", "gru", "rnn"}, default="lstm"
        The recurrent layer: ``torch.nn.LSTM``, ``GRU`` or ``RNN``.
    hidden_size : int, default=64
        State width per direction.
    num_layers : int, default=1
        Stacked recurrent layers.
    bidirectional : bool, default=False
        Run a second stack backwards in time.
    merge : {"concat", "sum"}, default="concat"
        How the two directions' vectors combine (per step and pooled):
        concatenated (width ``2 * hidden_size``) or summed. Ignored when
        not ``bidirectional``. Between stacked layers both directions are
        always concatenated, as in torch.
    dropout : float, default=0.0
        Dropout on the inputs of every recurrent layer after the first and
        on the vector the output layer reads.
    pooling : str, default="last"
        How a sequence's steps become one vector:

        - "last": the final state (``h_n``); bidirectional: the forward
          state after the last valid step and the backward state at step 0;
        - "mean" / "max": over the valid steps;
        - "additive", "multiplicative", "scaled_dot", "multi_head":
          :class:`~sklears_neural.nn.attention.AttentionPooling` over the
          valid steps.

        Must be "last" (the default) when ``per_step``.
    num_heads : int, default=4
        Heads of ``pooling="multi_head"`` (a divisor of the merged width);
        ignored by the other poolings.
    per_step : bool, default=False
        Return one output per step instead of one per sequence.
    hierarchical : int or None, default=None
        Segment length ``S`` of a hierarchical network (Yang et al., 2016):
        each sequence is cut into segments of ``S`` steps (the last one
        possibly shorter), each segment is encoded and pooled, and a second
        recurrent stack of the same settings encodes the segment vectors,
        pooled again with ``pooling``. With an attention pooling this is
        the hierarchical attention network. Not with ``per_step``.
    nonlinearity : {"tanh", "relu"}, default="tanh"
        Of the "rnn" cell; ignored by "lstm" and "gru".

    Attributes
    ----------
    encoder : RecurrentEncoder
        The recurrent stack (of the steps within a segment when
        hierarchical).
    pool : AttentionPooling or None
        The attention pooling, when ``pooling`` names one and not
        ``per_step``.
    segment_encoder : RecurrentEncoder or None
        The stack over segment vectors of a hierarchical network.
    segment_pool : AttentionPooling or None
        Its attention pooling.
    head : torch.nn.Linear
        The output layer.
    out_width : int
        Width of the vectors the output layer reads.

    Shapes
    ------
    - x: ``(batch, steps, n_features)``, zero-padded float; lengths:
      ``(batch,)`` int64 (moved to the CPU for packing) or None for all
      ``steps`` valid.
    - output: ``(batch, n_outputs)``; ``(batch, steps, n_outputs)`` when
      ``per_step``, where the outputs at padded steps are meaningless (the
      output layer's bias): mask them out of the loss.

    Notes
    -----
    ONNX export: packed sequences (any call with ``lengths``) do not
    export well with ``torch.onnx.export``; a call without ``lengths`` on
    full-length sequences uses no packing. Export therefore covers
    equal-length input only.

    :meth:`forward_with_attention` returns the attention weights (for
    explanations) beside the output.
    """

    def __init__(self, n_features, n_outputs, cell="lstm", *, hidden_size=64, num_layers=1,
                 bidirectional=False, merge="concat", dropout=0.0, pooling="last",
                 num_heads=4, per_step=False, hierarchical=None, nonlinearity="tanh"):
        super().__init__()
        owner = type(self).__name__
        self.n_features = checks.check_int(owner, "n_features", n_features, low=1)
        self.n_outputs = checks.check_int(owner, "n_outputs", n_outputs, low=1)
        self.merge = checks.check_options(owner, "merge", merge, ("concat", "sum"))
        self.pooling = POOLINGS.canonical(pooling)
        self.per_step = checks.check_bool(owner, "per_step", per_step)
        if hierarchical is not None:
            hierarchical = checks.check_int(owner, "hierarchical", hierarchical, low=1)
        self.hierarchical = hierarchical
        if self.per_step and self.pooling != "last":
            raise ValueError(
                f"{owner}: per_step=True gives one output per step, so pooling="
                f"{pooling!r} does not apply. Leave pooling='last' (the default), or "
                "set per_step=False for one output per sequence."
            )
        if self.per_step and hierarchical is not None:
            raise ValueError(
                f"{owner}: hierarchical={hierarchical} pools segments into one vector "
                "and cannot give one output per step. Use per_step=False, or "
                "hierarchical=None."
            )
        settings = dict(cell=cell, hidden_size=hidden_size, num_layers=num_layers,
                        bidirectional=bidirectional, dropout=dropout,
                        nonlinearity=nonlinearity)
        self.encoder = RecurrentEncoder(self.n_features, **settings)
        self.bidirectional = self.encoder.bidirectional
        concat = self.bidirectional and self.merge == "concat"
        self.out_width = self.encoder.hidden_size * (2 if concat else 1)
        attention = self.pooling in POOLING_ATTENTIONS.names and not self.per_step
        self.num_heads = checks.check_int(owner, "num_heads", num_heads, low=1)
        if attention and self.pooling == "multi_head" and self.out_width % self.num_heads:
            raise ValueError(
                f"{owner}: pooling='multi_head' splits the {self.out_width} features "
                f"of a step among num_heads={self.num_heads} heads, which does not "
                "divide them. Pick num_heads among the divisors of the width "
                "(hidden_size, times 2 when bidirectional with merge='concat')."
            )

        def make_pool():
            if not attention:
                return None
            heads = self.num_heads if self.pooling == "multi_head" else 1
            return AttentionPooling(self.out_width, self.pooling, num_heads=heads)

        self.pool = make_pool()
        self.segment_encoder = self.segment_pool = None
        if hierarchical is not None:
            self.segment_encoder = RecurrentEncoder(self.out_width, **settings)
            self.segment_pool = make_pool()
        self.dropout = Dropout(dropout)
        self.head = nn.Linear(self.out_width, self.n_outputs)

    # -- pieces ----------------------------------------------------------------

    def _merge_steps(self, steps):
        if self.bidirectional and self.merge == "sum":
            forward, backward = steps.chunk(2, dim=-1)
            return forward + backward
        return steps

    def _merge_final(self, final):
        # final: (B, num_directions, H)
        if self.bidirectional and self.merge == "sum":
            return final.sum(dim=1)
        return final.flatten(1)

    def _pool(self, steps, final, lengths, pool):
        """(pooled (B, out_width), weights or None) of merged ``steps`` (B, T, out_width)."""
        if self.pooling == "last":
            return self._merge_final(final), None
        padding = None
        if lengths is not None:
            padding = _padding_mask(lengths, steps.shape[1], steps.device)
        if pool is not None:
            return pool(steps, key_padding_mask=padding)
        if self.pooling == "mean":
            if padding is None:
                return steps.mean(dim=1), None
            # Padded steps are zeros: sum and divide by the valid count.
            counts = lengths.to(device=steps.device, dtype=steps.dtype)
            return steps.sum(dim=1) / counts[:, None], None
        if padding is not None:
            steps = steps.masked_fill(padding[..., None], float("-inf"))
        return steps.amax(dim=1), None

    def _check_inputs(self, x, lengths):
        if x.dim() != 3 or x.shape[-1] != self.n_features:
            raise ValueError(
                f"{type(self).__name__} expects x of shape (batch, steps, "
                f"{self.n_features}); got {tuple(x.shape)}."
            )
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (x.shape[0],) or lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(
                f"lengths must be an integer tensor of shape (batch,) = ({x.shape[0]},); "
                f"got dtype {lengths.dtype} and shape {tuple(lengths.shape)}."
            )
        lengths = lengths.to(device="cpu", dtype=torch.int64)
        if x.shape[0] and (lengths.min() < 1 or lengths.max() > x.shape[1]):
            raise ValueError(
                f"Every sequence length must be in [1, {x.shape[1]}] (the padded "
                f"steps); got lengths from {lengths.min().item()} to "
                f"{lengths.max().item()}. Drop empty sequences before the network."
            )
        return lengths

    # -- forward ---------------------------------------------------------------

    def forward(self, x, lengths=None):
        """Outputs of a padded batch.

        Parameters
        ----------
        x : Tensor of shape (batch, steps, n_features)
            Zero-padded after each sequence's end.
        lengths : int64 Tensor of shape (batch,) or None, default=None
            Valid steps per sequence, in ``[1, steps]``; None when all are
            full length.

        Returns
        -------
        out : Tensor of shape (batch, n_outputs), or (batch, steps, n_outputs) when ``per_step``
        """
        return self._run(x, lengths)[0]

    def forward_with_attention(self, x, lengths=None):
        """Outputs and the attention weights over the input steps.

        Parameters
        ----------
        x : Tensor of shape (batch, steps, n_features)
        lengths : int64 Tensor of shape (batch,) or None, default=None

        Returns
        -------
        out : Tensor of shape (batch, n_outputs)
            As :meth:`forward`.
        weights : AttentionWeights
            ``steps`` of shape ``(batch, steps)`` (``(batch, num_heads,
            steps)`` for "multi_head"), and for a hierarchical network
            ``segments`` of shape ``(batch, n_segments)``.

        Raises
        ------
        ValueError
            If ``pooling`` is not an attention pooling.
        """
        if self.pool is None:
            raise ValueError(
                f"pooling={self.pooling!r} has no attention weights; build the network "
                f"with an attention pooling ({', '.join(POOLING_ATTENTIONS.names)})."
            )
        out, steps_w, segments_w = self._run(x, lengths)
        return out, AttentionWeights(steps_w, segments_w)

    def _run(self, x, lengths):
        lengths = self._check_inputs(x, lengths)
        if self.hierarchical is not None:
            pooled, steps_w, segments_w = self._hierarchical(x, lengths)
        else:
            steps, final = self.encoder(x, lengths)
            steps = self._merge_steps(steps)
            if self.per_step:
                return self.head(self.dropout(steps)), None, None
            pooled, steps_w = self._pool(steps, final, lengths, self.pool)
            segments_w = None
        return self.head(self.dropout(pooled)), steps_w, segments_w

    def _hierarchical(self, x, lengths):
        batch, n_steps, n_features = x.shape
        size = self.hierarchical
        n_segments = -(-n_steps // size)
        # (B, T, F) -> (B * n_segments, S, F), zero-filling the last segment.
        padded = nn.functional.pad(x, (0, 0, 0, n_segments * size - n_steps))
        segments = padded.reshape(batch * n_segments, size, n_features)
        if lengths is None and n_steps % size == 0:
            segment_lengths = counts = None
        else:
            full = torch.full((batch,), n_steps, dtype=torch.int64) if lengths is None else lengths
            # Steps of segment j of sequence b, in [0, S]. Segments past the
            # end (0 steps) run on one zero step and are masked out of the
            # second level by ``counts``: static shapes, nothing to select.
            per_segment = (full[:, None] - torch.arange(n_segments) * size).clamp(0, size)
            segment_lengths = per_segment.clamp(min=1).reshape(-1)
            counts = (full + size - 1) // size
        steps, final = self.encoder(segments, segment_lengths)
        vectors, within = self._pool(self._merge_steps(steps), final, segment_lengths, self.pool)
        vectors = vectors.reshape(batch, n_segments, self.out_width)
        if counts is not None:
            dead = _padding_mask(counts, n_segments, vectors.device)
            vectors = vectors.masked_fill(dead[..., None], 0.0)
        steps2, final2 = self.segment_encoder(vectors, counts)
        pooled, across = self._pool(self._merge_steps(steps2), final2, counts, self.segment_pool)
        steps_w = None
        if across is not None:
            if across.dim() == 2:
                # (B * n, S) -> (B, n, S), weighted by (B, n, 1)
                combined = within.reshape(batch, n_segments, size) * across[..., None]
                steps_w = combined.reshape(batch, n_segments * size)[:, :n_steps]
            else:
                heads = across.shape[1]
                # (B * n, H, S) -> (B, H, n, S), weighted by (B, H, n, 1)
                within = within.reshape(batch, n_segments, heads, size).transpose(1, 2)
                combined = within * across[..., None]
                steps_w = combined.reshape(batch, heads, n_segments * size)[..., :n_steps]
        return pooled, steps_w, across

    def extra_repr(self):
        parts = [f"pooling={self.pooling!r}"]
        if self.bidirectional:
            parts.append(f"merge={self.merge!r}")
        if self.per_step:
            parts.append("per_step=True")
        if self.hierarchical is not None:
            parts.append(f"hierarchical={self.hierarchical}")
        return ", ".join(parts)


def _padding_mask(lengths, n_steps, device):
    """(B, n_steps) bool, True past each sequence's length."""
    return torch.arange(n_steps, device=device)[None, :] >= lengths.to(device)[:, None]
