"""Encoder-decoder networks from token sequences to token sequences.

Two networks share one decoding interface (:class:`Seq2SeqNet`):

- :class:`RNNSeq2Seq`: a (bidirectional) GRU or LSTM encoder and a GRU or
  LSTM decoder that attends to the encoder's steps at every output step,
  with Bahdanau's additive attention (the previous decoder state queries the
  source, the context enters the recurrence) or Luong's multiplicative
  "general" attention (the new decoder state queries the source, the
  attentional state feeds the next step).
- :class:`TransformerSeq2Seq`: a Transformer encoder
  (:class:`~sklears_neural.nn.transformer.TransformerEncoderLayer`) and a
  decoder of :class:`TransformerDecoderLayer` (causal self-attention, then
  attention to the encoder's output), sinusoidal positions on both sides.

Tokens
------
Both sides are integer ids with four reserved ones: :data:`PAD` (0),
:data:`BOS` (1, the first decoder input), :data:`EOS` (2, ends an output)
and :data:`UNK` (3, an input token unknown to the vocabulary); real tokens
start at :data:`N_SPECIAL`. The output layer never predicts ``PAD``,
``BOS`` or ``UNK``: their logits are ``-inf``, so the softmax runs over
``EOS`` and the real tokens only, in training and decoding alike.

Teacher-forced forward
----------------------
``net(src, src_lengths, tgt_in, tgt_lengths)`` returns logits of shape
``(batch, T_out, n_output_tokens)``: step ``t`` predicts the token after
``tgt_in[:, :t + 1]``, where ``tgt_in`` is ``BOS`` followed by the target
tokens (so the targets are the tokens followed by ``EOS``). Padding is
given by the lengths: padded source steps get zero attention, padded target
steps never reach a valid one (causal masks), and their logits are ignored
by the loss.

Scheduled sampling
------------------
With ``teacher_forcing_ratio < 1`` (Bengio et al., 2015) each decoder input
after ``BOS`` is, with probability ``1 - teacher_forcing_ratio``, the
network's own greedy prediction instead of the target token. The draws come
from :class:`ScheduledSampling`, a
:class:`~sklears_neural.core.noise.NoiseLayer`: the estimator's seeded
generator reaches it through :func:`~sklears_neural.core.noise.set_generator`
and the global RNG is never used; in evaluation mode it always forces the
targets. The recurrent decoder feeds its prediction of the step before; the
Transformer decoder, which runs all steps at once, uses the two-pass scheme
of Mihaylova and Liu (2019): a first pass on the targets (no gradient)
gives the predictions that the second pass is fed.

Decoding
--------
:meth:`Seq2SeqNet.greedy` and :meth:`Seq2SeqNet.beam_search` decode up to
``max_length`` tokens and then force ``EOS``, so every returned sequence is
complete and its score is exactly the log-probability
:meth:`Seq2SeqNet.log_likelihood` gives it (no length normalization). Beam
search keeps the ``beam_width`` best prefixes by total log-probability and
finished hypotheses keep their score; with ``beam_width=1`` it is greedy
decoding. Plain beam search can lose the greedy sequence when the greedy
prefix drops out of the beam and end lower; here the greedy sequence is kept
as a candidate, so beam search never returns a sequence less probable than
greedy decoding's.
"""

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from sklears_neural.core import checks
from sklears_neural.core.noise import Dropout, NoiseLayer
from sklears_neural.core.registry import register_module
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.nn.attention import MultiHeadAttention, masked_softmax, scaled_dot_product
from sklears_neural.nn.transformer import (
    SinusoidalPositionalEncoding,
    TransformerEncoderLayer,
    padding_mask,
)

__all__ = [
    "PAD",
    "BOS",
    "EOS",
    "UNK",
    "N_SPECIAL",
    "CELLS",
    "ATTENTIONS",
    "ScheduledSampling",
    "Seq2SeqNet",
    "RNNSeq2Seq",
    "TransformerDecoderLayer",
    "TransformerSeq2Seq",
]

#: Padding id, on both sides; its embedding is zero.
PAD = 0
#: Begin-of-sequence id: the decoder's first input.
BOS = 1
#: End-of-sequence id: the decoder's last output.
EOS = 2
#: Unknown input token (``handle_unknown="unk"``); never predicted.
UNK = 3
#: Number of reserved ids; real tokens are ``N_SPECIAL, N_SPECIAL + 1, ...``.
N_SPECIAL = 4

#: Values of ``RNNSeq2Seq(cell=...)``.
CELLS = ("gru", "lstm")
#: Values of ``RNNSeq2Seq(attention=...)``.
ATTENTIONS = ("bahdanau", "luong")


def _select(tree, index):
    """Rows ``index`` of every tensor in a tuple of batch-first tensors (or None)."""
    return tuple(None if t is None else t.index_select(0, index) for t in tree)


class ScheduledSampling(NoiseLayer):
    """Where the decoder is fed its own prediction instead of the target token.

    A :class:`~sklears_neural.core.noise.NoiseLayer` whose strength ``p``
    is the probability of feeding the prediction, ``1 -
    teacher_forcing_ratio``: it draws from the generator of
    :func:`~sklears_neural.core.noise.set_generator`, may decay over epochs
    (``schedule=``), and never replaces a target in evaluation mode.

    Parameters
    ----------
    p : float, default=0.0
        Probability, per sequence and step, of feeding the prediction.
    **schedule_settings
        ``schedule``, ``final``, ``gamma``, ``step_size``; see
        :class:`~sklears_neural.core.noise.NoiseLayer`.
    """

    _strength_name = "p"
    _max_strength = 1.0

    def __init__(self, p=0.0, *, schedule="constant", final=0.0, gamma=None, step_size=10):
        super().__init__(p, schedule=schedule, final=final, gamma=gamma, step_size=step_size)

    def draw(self, batch, steps, device):
        """Bool mask of shape (batch, steps), True where the prediction is fed.

        Returns None in evaluation mode or at strength 0 (teacher forcing
        throughout), drawing nothing.
        """
        p = self.strength
        if not self.training or p == 0.0:
            return None
        generator = self.generator
        if generator is None:
            u = torch.rand(batch, steps, device=device)
        else:
            u = torch.rand(batch, steps, generator=generator, device=generator.device)
        return u.to(device) < p

    def forward(self, teacher, own):
        """``teacher`` tokens with some replaced by ``own`` (same shape (batch, steps))."""
        use_own = self.draw(teacher.shape[0], teacher.shape[1], teacher.device)
        if use_own is None:
            return teacher
        return torch.where(use_own, own, teacher)


class Seq2SeqNet(nn.Module):
    """Base of the encoder-decoder networks: teacher forcing, scoring, decoding.

    A subclass implements ``encode(src, src_lengths) -> memory``,
    ``start(memory) -> state`` and ``step(memory, state, tokens) ->
    (logits, state)`` (one decoder step for a batch of previous tokens),
    where ``memory`` and ``state`` are tuples of batch-first tensors (or
    None), so that beam search can reorder them by rows; and its
    teacher-forced ``forward``. Decoding and scoring are written once here.
    """

    def _init_outputs(self, n_output_tokens):
        owner = type(self).__name__
        self.n_output_tokens = checks.check_int(owner, "n_output_tokens", n_output_tokens,
                                                low=N_SPECIAL)
        never = torch.zeros(self.n_output_tokens, dtype=torch.bool)
        never[[PAD, BOS, UNK]] = True
        # Not in the state_dict: it follows from n_output_tokens.
        self.register_buffer("_never_predicted", never, persistent=False)

    def _mask_logits(self, logits):
        return logits.masked_fill(self._never_predicted, float("-inf"))

    def log_likelihood(self, src, src_lengths, tgt_in, tgt_lengths):
        """Log-probability of each target sequence (its tokens, then ``EOS``).

        Teacher-forced; run it in evaluation mode (else scheduled sampling
        and dropout apply).

        Parameters
        ----------
        src : int64 Tensor of shape (batch, S)
        src_lengths : int64 Tensor of shape (batch,)
        tgt_in : int64 Tensor of shape (batch, T)
            ``BOS``, then the target tokens, then padding.
        tgt_lengths : int64 Tensor of shape (batch,)
            Target tokens plus one (the ``BOS``), in ``[1, T]``.

        Returns
        -------
        log_prob : Tensor of shape (batch,)
            :math:`\\sum_t \\log p(y_t \\mid y_{<t}, x)` over the tokens and the
            final ``EOS``.
        """
        logits = self(src, src_lengths, tgt_in, tgt_lengths)
        steps = tgt_in.shape[1]
        lengths = tgt_lengths.to(tgt_in.device)
        following = torch.cat([tgt_in[:, 1:], tgt_in.new_full((tgt_in.shape[0], 1), PAD)], 1)
        position = torch.arange(steps, device=tgt_in.device)[None, :]
        target = torch.where(position == lengths[:, None] - 1, EOS, following)
        logp = torch.log_softmax(logits.float() if logits.dtype in (
            torch.float16, torch.bfloat16) else logits, dim=-1)
        picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return picked.masked_fill(position >= lengths[:, None], 0.0).sum(1)

    def _step_log_probs(self, memory, state, tokens, t, max_length):
        logits, state = self.step(memory, state, tokens)
        logp = torch.log_softmax(logits, dim=-1)
        if t == max_length:
            # max_length tokens out: only EOS may follow.
            forced = torch.full_like(logp, float("-inf"))
            forced[:, EOS] = logp[:, EOS]
            logp = forced
        return logp, state

    def greedy(self, src, src_lengths, max_length):
        """Greedy decoding: the most probable token at every step.

        Parameters
        ----------
        src : int64 Tensor of shape (batch, S)
        src_lengths : int64 Tensor of shape (batch,)
        max_length : int
            Most output tokens before ``EOS``; a sequence that reaches it is
            ended there.

        Returns
        -------
        tokens : int64 Tensor of shape (batch, max_length + 1)
            Output ids, ``EOS`` after the last token, ``PAD`` after that.
        log_prob : Tensor of shape (batch,)
            Log-probability of each output, its ``EOS`` included.
        """
        memory = self.encode(src, src_lengths)
        state = self.start(memory)
        batch = src.shape[0]
        tokens = torch.full((batch,), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros(batch, dtype=torch.bool, device=src.device)
        score = None
        out = []
        for t in range(max_length + 1):
            logp, state = self._step_log_probs(memory, state, tokens, t, max_length)
            best = logp.argmax(-1)
            gained = logp.gather(-1, best.unsqueeze(-1)).squeeze(-1)
            tokens = best.masked_fill(done, PAD)
            gained = gained.masked_fill(done, 0.0)
            score = gained if score is None else score + gained
            out.append(tokens)
            done = done | (tokens == EOS)
            if bool(done.all()):
                break
        return self._fixed_width(torch.stack(out, 1), max_length), score

    @staticmethod
    def _fixed_width(tokens, max_length):
        missing = max_length + 1 - tokens.shape[1]
        if missing:
            tokens = torch.cat([tokens, tokens.new_full((tokens.shape[0], missing), PAD)], 1)
        return tokens

    def beam_search(self, src, src_lengths, max_length, beam_width=4):
        """Beam search by total log-probability (no length normalization).

        Keeps the ``beam_width`` most probable prefixes per sequence; a
        finished hypothesis (one that emitted ``EOS``) keeps its score and
        its place. With ``beam_width=1`` this is :meth:`greedy`. For
        ``beam_width > 1`` the greedy sequence is a candidate too, so the
        result is never less probable than greedy decoding's.

        Parameters
        ----------
        src : int64 Tensor of shape (batch, S)
        src_lengths : int64 Tensor of shape (batch,)
        max_length : int
        beam_width : int, default=4

        Returns
        -------
        tokens : int64 Tensor of shape (batch, max_length + 1)
        log_prob : Tensor of shape (batch,)
        """
        beam_width = checks.check_int(type(self).__name__, "beam_width", beam_width, low=1)
        tokens, score = self._beam(src, src_lengths, max_length, beam_width)
        if beam_width > 1:
            greedy_tokens, greedy_score = self.greedy(src, src_lengths, max_length)
            better = greedy_score > score
            tokens = torch.where(better[:, None], greedy_tokens, tokens)
            score = torch.where(better, greedy_score, score)
        return tokens, score

    def _beam(self, src, src_lengths, max_length, k):
        batch, device = src.shape[0], src.device
        rows = torch.arange(batch, device=device).repeat_interleave(k)
        memory = _select(self.encode(src, src_lengths), rows)
        state = self.start(memory)
        n_tokens = self.n_output_tokens
        score = None
        # Only the first hypothesis is live at the start: the others would
        # repeat it.
        alive = torch.full((batch, k), float("-inf"), device=device)
        alive[:, 0] = 0.0
        done = torch.zeros(batch, k, dtype=torch.bool, device=device)
        history = torch.zeros(batch, k, 0, dtype=torch.long, device=device)
        tokens = torch.full((batch * k,), BOS, dtype=torch.long, device=device)
        offset = (torch.arange(batch, device=device) * k)[:, None]
        for t in range(max_length + 1):
            logp, state = self._step_log_probs(memory, state, tokens, t, max_length)
            if score is None:
                score = alive.to(logp.dtype)
            logp = logp.view(batch, k, n_tokens)
            # A finished hypothesis continues with PAD at no cost.
            finished = torch.full_like(logp[0, 0], float("-inf"))
            finished[PAD] = 0.0
            logp = torch.where(done[..., None], finished, logp)
            candidates = (score[..., None] + logp).view(batch, k * n_tokens)
            # A stable sort: among equal scores the first candidate wins, as
            # argmax picks it, so beam_width=1 is greedy decoding exactly.
            score, index = candidates.sort(dim=1, descending=True, stable=True)
            score, index = score[:, :k], index[:, :k]
            parent = torch.div(index, n_tokens, rounding_mode="floor")
            token = index % n_tokens
            history = torch.cat(
                [history.gather(1, parent[..., None].expand(-1, -1, history.shape[2])),
                 token[..., None]], 2)
            done = done.gather(1, parent) | (token == EOS)
            state = _select(state, (parent + offset).view(-1))
            tokens = token.view(-1)
            if bool(done.all()):
                break
        # Sorted: hypothesis 0 is the best (all finished: EOS is forced last).
        return self._fixed_width(history[:, 0], max_length), score[:, 0]

    def decode(self, src, src_lengths, max_length, beam_width=1):
        """Decoded ids and log-probabilities in one float tensor (the estimator's forward).

        Parameters
        ----------
        src : int64 Tensor of shape (batch, S)
        src_lengths : int64 Tensor of shape (batch,)
        max_length : int
        beam_width : int, default=1
            1: :meth:`greedy`; more: :meth:`beam_search`.

        Returns
        -------
        out : Tensor of shape (batch, max_length + 2)
            Column 0 the log-probability, then the ids as floats.
        """
        if beam_width == 1:
            tokens, score = self.greedy(src, src_lengths, max_length)
        else:
            tokens, score = self.beam_search(src, src_lengths, max_length, beam_width)
        return torch.cat([score[:, None], tokens.to(score.dtype)], 1)


@register_module
class RNNSeq2Seq(Seq2SeqNet):
    """Recurrent encoder-decoder with attention.

    The encoder embeds the source tokens and runs ``num_layers`` GRU or
    LSTM layers (bidirectional by default) on packed sequences, so padding
    never enters it. The decoder starts from ``tanh(W [final encoder
    states])`` (one state per layer; an LSTM's cells start at zero) and at
    each step attends to the encoder's steps; see Notes.

    Parameters
    ----------
    n_input_tokens : int
        Source vocabulary size, reserved ids included (``>= N_SPECIAL``).
    n_output_tokens : int
        Target vocabulary size, reserved ids included.
    cell : {"gru", "lstm"}, default="gru"
        Recurrent layer of both encoder and decoder.
    attention : {"bahdanau", "luong"}, default="bahdanau"
        Additive attention queried by the previous decoder state (Bahdanau
        et al., 2015), or multiplicative "general" attention queried by the
        new state with input feeding (Luong et al., 2015).
    embedding_dim : int, default=64
        Width of the token embeddings (both sides).
    hidden_size : int, default=128
        Width of every recurrent state (each direction of the encoder).
    num_layers : int, default=1
        Recurrent layers of the encoder and of the decoder.
    bidirectional : bool, default=True
        Bidirectional encoder.
    dropout : float, default=0.0
        Dropout on the embeddings, between recurrent layers and before the
        output layer.
    teacher_forcing_ratio : float, default=1.0
        Probability of feeding the target token (else the prediction) at
        each decoder step in training; see :class:`ScheduledSampling`.

    Notes
    -----
    With :math:`h_j` the encoder steps, :math:`s_t` the decoder's top
    state, :math:`e_t` the embedded input and :math:`a = \\mathrm{softmax}`
    over the valid source steps (padding gets weight exactly 0):

    - bahdanau: :math:`c_t = \\sum_j a_j h_j` with scores
      :math:`v^\\top \\tanh(W_q s_{t-1} + W_k h_j)`;
      :math:`s_t = \\mathrm{RNN}([e_t; c_t], s_{t-1})`;
      :math:`o_t = \\tanh(W_o [s_t; c_t; e_t])`.
    - luong: :math:`s_t = \\mathrm{RNN}([e_t; \\tilde h_{t-1}], s_{t-1})`;
      :math:`c_t = \\sum_j a_j h_j` with scores :math:`s_t^\\top W_a h_j`;
      :math:`\\tilde h_t = o_t = \\tanh(W_o [c_t; s_t])`.

    The logits are :math:`W o_t + b`, ``-inf`` for ``PAD``, ``BOS`` and
    ``UNK``.

    Shapes
    ------
    - ``src``: ``(batch, S)`` int64; ``src_lengths``: ``(batch,)`` int64 on
      the CPU; ``tgt_in``: ``(batch, T)`` int64; ``tgt_lengths``:
      ``(batch,)``.
    - output: ``(batch, T, n_output_tokens)`` logits.
    """

    def __init__(self, n_input_tokens, n_output_tokens, cell="gru", attention="bahdanau", *,
                 embedding_dim=64, hidden_size=128, num_layers=1, bidirectional=True,
                 dropout=0.0, teacher_forcing_ratio=1.0):
        super().__init__()
        owner = type(self).__name__
        self.n_input_tokens = checks.check_int(owner, "n_input_tokens", n_input_tokens,
                                               low=N_SPECIAL)
        self._init_outputs(n_output_tokens)
        self.cell = checks.check_options(owner, "cell", cell, CELLS)
        self.attention = checks.check_options(owner, "attention", attention, ATTENTIONS)
        embedding_dim = checks.check_int(owner, "embedding_dim", embedding_dim, low=1)
        self.hidden_size = hidden = checks.check_int(owner, "hidden_size", hidden_size, low=1)
        self.num_layers = checks.check_int(owner, "num_layers", num_layers, low=1)
        self.bidirectional = checks.check_bool(owner, "bidirectional", bidirectional)
        dropout = checks.check_real(owner, "dropout", dropout, low=0.0, high=1.0,
                                    high_open=True)
        ratio = checks.check_real(owner, "teacher_forcing_ratio", teacher_forcing_ratio,
                                  low=0.0, high=1.0)
        directions = 2 if self.bidirectional else 1
        width = directions * hidden
        rnn = nn.GRU if self.cell == "gru" else nn.LSTM
        cell_class = nn.GRUCell if self.cell == "gru" else nn.LSTMCell

        self.src_embed = nn.Embedding(self.n_input_tokens, embedding_dim, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(self.n_output_tokens, embedding_dim, padding_idx=PAD)
        # One single-layer module per layer so that dropout between layers
        # draws from the estimator's generator (torch's multi-layer dropout
        # draws from the global one).
        self.encoder = nn.ModuleList(
            rnn(embedding_dim if i == 0 else width, hidden, batch_first=True,
                bidirectional=self.bidirectional)
            for i in range(self.num_layers)
        )
        self.bridge = nn.Linear(width, self.num_layers * hidden)
        if self.attention == "bahdanau":
            self.attn_query = nn.Linear(hidden, hidden, bias=False)
            self.attn_key = nn.Linear(width, hidden)
            self.attn_score = nn.Linear(hidden, 1, bias=False)
            first_input = embedding_dim + width
            self.combine = nn.Linear(hidden + width + embedding_dim, hidden)
        else:
            self.attn_key = nn.Linear(width, hidden, bias=False)
            first_input = embedding_dim + hidden
            self.combine = nn.Linear(width + hidden, hidden)
        self.decoder = nn.ModuleList(
            cell_class(first_input if i == 0 else hidden, hidden) for i in range(self.num_layers)
        )
        self.dropout = Dropout(dropout)
        self.sampling = ScheduledSampling(1.0 - ratio)
        self.out = nn.Linear(hidden, self.n_output_tokens)

    # -- encoder -------------------------------------------------------------

    def _drop(self, inputs):
        if not isinstance(inputs, PackedSequence):
            return self.dropout(inputs)
        return PackedSequence(self.dropout(inputs.data), inputs.batch_sizes,
                              inputs.sorted_indices, inputs.unsorted_indices)

    def encode(self, src, src_lengths):
        """``(keys, values, padding mask, final states)`` of the source."""
        steps = src.shape[1]
        x = self.dropout(self.src_embed(src))
        inputs = pack_padded_sequence(x, src_lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        for i, layer in enumerate(self.encoder):
            if i:
                inputs = self._drop(inputs)
            inputs, state = layer(inputs)
        values, _ = pad_packed_sequence(inputs, batch_first=True, total_length=steps)
        h_n = state[0] if self.cell == "lstm" else state
        # h_n: (num_directions, B, H) -> (B, num_directions * H): the forward
        # state after the last valid step and the backward one at step 0.
        final = h_n.transpose(0, 1).flatten(1)
        pad = padding_mask(src_lengths, src.shape[0], steps, device=src.device)
        return self.attn_key(values), values, pad, final

    def start(self, memory):
        """Initial decoder state: ``(h, c or None, fed attentional state or None)``."""
        final = memory[3]
        batch = final.shape[0]
        h = torch.tanh(self.bridge(final)).view(batch, self.num_layers, self.hidden_size)
        c = torch.zeros_like(h) if self.cell == "lstm" else None
        feed = h.new_zeros(batch, self.hidden_size) if self.attention == "luong" else None
        return h, c, feed

    # -- decoder -------------------------------------------------------------

    def _recur(self, x, h, c):
        new_h, new_c = [], []
        for i, cell in enumerate(self.decoder):
            if i:
                x = self.dropout(x)
            if self.cell == "lstm":
                hi, ci = cell(x, (h[:, i], c[:, i]))
                new_c.append(ci)
            else:
                hi = cell(x, h[:, i])
            new_h.append(hi)
            x = hi
        return torch.stack(new_h, 1), (torch.stack(new_c, 1) if new_c else None)

    def step(self, memory, state, tokens):
        """One decoder step: logits ``(batch, n_output_tokens)`` and the new state."""
        keys, values, pad, _ = memory
        h, c, feed = state
        e = self.dropout(self.tgt_embed(tokens))
        if self.attention == "bahdanau":
            query = self.attn_query(h[:, -1])
            scores = self.attn_score(torch.tanh(query[:, None, :] + keys)).squeeze(-1)
            weights = masked_softmax(scores, pad)
            context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)
            h, c = self._recur(torch.cat([e, context], -1), h, c)
            out = torch.tanh(self.combine(torch.cat([h[:, -1], context, e], -1)))
        else:
            h, c = self._recur(torch.cat([e, feed], -1), h, c)
            top = h[:, -1]
            # General score s^T W_a h_j: the keys hold W_a h_j, scale 1.
            context, _ = scaled_dot_product(
                top[:, None, None, :], keys[:, None], values[:, None],
                key_padding_mask=pad, scale=1.0,
            )
            out = torch.tanh(self.combine(torch.cat([context[:, 0, 0], top], -1)))
            feed = out
        logits = self._mask_logits(self.out(self.dropout(out)))
        return logits, (h, c, feed)

    def forward(self, src, src_lengths, tgt_in, tgt_lengths=None):
        """Teacher-forced logits of shape (batch, T, n_output_tokens).

        Parameters
        ----------
        src : int64 Tensor of shape (batch, S)
        src_lengths : int64 Tensor of shape (batch,)
        tgt_in : int64 Tensor of shape (batch, T)
            ``BOS`` then the target tokens, padded.
        tgt_lengths : int64 Tensor of shape (batch,) or None, default=None
            Unused by the recurrence (padded steps come after the valid
            ones and their logits are ignored by the loss); kept for one
            signature with :class:`TransformerSeq2Seq`.
        """
        memory = self.encode(src, src_lengths)
        state = self.start(memory)
        batch, steps = tgt_in.shape
        use_own = self.sampling.draw(batch, steps, tgt_in.device)
        logits, previous = [], None
        for t in range(steps):
            tokens = tgt_in[:, t]
            if use_own is not None and t > 0:
                tokens = torch.where(use_own[:, t], previous, tokens)
            step_logits, state = self.step(memory, state, tokens)
            logits.append(step_logits)
            if use_own is not None:
                previous = step_logits.detach().argmax(-1)
        return torch.stack(logits, 1)

    def extra_repr(self):
        return (f"n_input_tokens={self.n_input_tokens}, n_output_tokens="
                f"{self.n_output_tokens}, cell={self.cell!r}, attention={self.attention!r}")


class TransformerDecoderLayer(nn.Module):
    """Causal self-attention, attention to the encoder's output, a feed-forward block.

    ``torch.nn.TransformerDecoderLayer`` with ``batch_first=True``: with the
    same weights (torch's ``in_proj_weight`` split into
    ``q_proj/k_proj/v_proj`` of each
    :class:`~sklears_neural.nn.attention.MultiHeadAttention`) it gives
    torch's output on the non-padded steps, with the causal mask built in.
    Dropout masks come from the generator of
    :func:`~sklears_neural.core.noise.set_generator`.

    Parameters
    ----------
    d_model : int
        Width of the steps; a multiple of ``num_heads``.
    num_heads : int
    dim_feedforward : int, default=2048
    dropout : float, default=0.1
        On the attention weights, after the feed-forward activation and on
        each block's output before its residual addition.
    activation : str or (str, dict), default="relu"
        A name of :data:`~sklears_neural.core.resolve.ACTIVATIONS`.
    layer_norm_eps : float, default=1e-5
    norm_first : bool, default=False
        Pre-LN instead of post-LN.
    bias : bool, default=True

    Notes
    -----
    With :math:`S` the causal self-attention, :math:`C` the attention to
    the memory and :math:`F` the feed-forward block: post-LN
    :math:`y = \\mathrm{LN}_1(x + S(x))`, :math:`z = \\mathrm{LN}_2(y + C(y))`,
    :math:`o = \\mathrm{LN}_3(z + F(z))`; pre-LN :math:`y = x + S(\\mathrm{LN}_1 x)`,
    :math:`z = y + C(\\mathrm{LN}_2 y)`, :math:`o = z + F(\\mathrm{LN}_3 z)`.

    Shapes
    ------
    - x: ``(batch, T, d_model)``; memory: ``(batch, S, d_model)``; masks
      ``(batch, T)`` and ``(batch, S)``, True at padding.
    - output: ``(batch, T, d_model)``.
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
        self.multihead_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout,
                                                 bias=bias)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.activation = ACTIVATIONS.build(activation, width=dim_feedforward)
        self.dropout = Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)

    def _self_block(self, x, pad):
        out, _ = self.self_attn(x, x, x, key_padding_mask=pad, is_causal=True)
        return self.dropout1(out)

    def _cross_block(self, x, memory, memory_pad):
        out, _ = self.multihead_attn(x, memory, memory, key_padding_mask=memory_pad)
        return self.dropout2(out)

    def _feed_forward(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, x, memory, tgt_key_padding_mask=None, memory_key_padding_mask=None):
        """Decode ``x`` (causally) against ``memory``.

        Parameters
        ----------
        x : Tensor of shape (batch, T, d_model)
        memory : Tensor of shape (batch, S, d_model)
        tgt_key_padding_mask : bool Tensor of shape (batch, T) or None, default=None
        memory_key_padding_mask : bool Tensor of shape (batch, S) or None, default=None

        Returns
        -------
        out : Tensor of shape (batch, T, d_model)
        """
        if self.norm_first:
            x = x + self._self_block(self.norm1(x), tgt_key_padding_mask)
            x = x + self._cross_block(self.norm2(x), memory, memory_key_padding_mask)
            x = x + self._feed_forward(self.norm3(x))
        else:
            x = self.norm1(x + self._self_block(x, tgt_key_padding_mask))
            x = self.norm2(x + self._cross_block(x, memory, memory_key_padding_mask))
            x = self.norm3(x + self._feed_forward(x))
        return x


@register_module
class TransformerSeq2Seq(Seq2SeqNet):
    """Transformer encoder-decoder (Vaswani et al., 2017) over token sequences.

    Token embeddings plus sinusoidal positions on both sides, dropout,
    ``num_encoder_layers``
    :class:`~sklears_neural.nn.transformer.TransformerEncoderLayer`
    (padding masked), ``num_decoder_layers`` :class:`TransformerDecoderLayer`
    (causal, attending to the unpadded source), a final layer norm on each
    side with pre-LN, and a linear output layer.

    Parameters
    ----------
    n_input_tokens : int
        Source vocabulary size, reserved ids included (``>= N_SPECIAL``).
    n_output_tokens : int
        Target vocabulary size, reserved ids included.
    d_model : int, default=64
        Width of the model; a multiple of ``num_heads``.
    num_heads : int, default=4
    num_encoder_layers : int, default=2
    num_decoder_layers : int, default=2
    dim_feedforward : int, default=128
    dropout : float, default=0.1
    activation : str or (str, dict), default="gelu"
    norm_first : bool, default=True
        Pre-LN layers and final layer norms; post-LN otherwise.
    teacher_forcing_ratio : float, default=1.0
        See :class:`ScheduledSampling`; below 1, training runs the decoder
        twice per batch.
    layer_norm_eps : float, default=1e-5

    Notes
    -----
    Decoding one step runs the decoder over the whole prefix again (no key
    and value cache): the cost grows with the square of the output length,
    which is small next to training at the lengths this is meant for, and
    each step computes what the teacher-forced pass does.

    Shapes
    ------
    As :class:`RNNSeq2Seq`.
    """

    def __init__(self, n_input_tokens, n_output_tokens, d_model=64, num_heads=4, *,
                 num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=128,
                 dropout=0.1, activation="gelu", norm_first=True, teacher_forcing_ratio=1.0,
                 layer_norm_eps=1e-5):
        super().__init__()
        owner = type(self).__name__
        self.n_input_tokens = checks.check_int(owner, "n_input_tokens", n_input_tokens,
                                               low=N_SPECIAL)
        self._init_outputs(n_output_tokens)
        self.d_model = checks.check_int(owner, "d_model", d_model, low=1)
        self.num_heads = checks.check_int(owner, "num_heads", num_heads, low=1)
        n_enc = checks.check_int(owner, "num_encoder_layers", num_encoder_layers, low=1)
        n_dec = checks.check_int(owner, "num_decoder_layers", num_decoder_layers, low=1)
        dropout = checks.check_real(owner, "dropout", dropout, low=0.0, high=1.0,
                                    high_open=True)
        self.norm_first = checks.check_bool(owner, "norm_first", norm_first)
        ratio = checks.check_real(owner, "teacher_forcing_ratio", teacher_forcing_ratio,
                                  low=0.0, high=1.0)
        if self.d_model % self.num_heads:
            raise ValueError(
                f"{owner}: d_model={self.d_model} is not a multiple of num_heads="
                f"{self.num_heads}. Pick num_heads among the divisors of d_model."
            )
        d = self.d_model
        self.src_embed = nn.Embedding(self.n_input_tokens, d, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(self.n_output_tokens, d, padding_idx=PAD)
        self.positions = SinusoidalPositionalEncoding(d)
        self.src_dropout = Dropout(dropout)
        self.tgt_dropout = Dropout(dropout)
        self.encoder = nn.ModuleList(
            TransformerEncoderLayer(d, self.num_heads, dim_feedforward, dropout, activation,
                                    layer_norm_eps=layer_norm_eps, norm_first=self.norm_first)
            for _ in range(n_enc)
        )
        self.decoder = nn.ModuleList(
            TransformerDecoderLayer(d, self.num_heads, dim_feedforward, dropout, activation,
                                    layer_norm_eps=layer_norm_eps, norm_first=self.norm_first)
            for _ in range(n_dec)
        )
        norm = (lambda: nn.LayerNorm(d, eps=layer_norm_eps)) if self.norm_first else nn.Identity
        self.encoder_norm = norm()
        self.decoder_norm = norm()
        self.sampling = ScheduledSampling(1.0 - ratio)
        # nn.Embedding draws N(0, 1): token vectors at the scale of the
        # sinusoidal positions, as in TransformerNet.
        self.out = nn.Linear(d, self.n_output_tokens)

    def encode(self, src, src_lengths):
        """``(memory (batch, S, d_model), source padding mask)``."""
        pad = padding_mask(src_lengths, src.shape[0], src.shape[1], device=src.device)
        h = self.src_embed(src).masked_fill(pad.unsqueeze(-1), 0.0)
        h = self.src_dropout(self.positions(h))
        for layer in self.encoder:
            h, _ = layer(h, key_padding_mask=pad)
        return self.encoder_norm(h), pad

    def _decode_all(self, tgt_in, memory, src_pad, tgt_pad):
        h = self.tgt_dropout(self.positions(self.tgt_embed(tgt_in)))
        for layer in self.decoder:
            h = layer(h, memory, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
        return self._mask_logits(self.out(self.decoder_norm(h)))

    def start(self, memory):
        """The decoder state: the prefix decoded so far, ``(batch, 0)``."""
        return (memory[0].new_zeros(memory[0].shape[0], 0, dtype=torch.long),)

    def step(self, memory, state, tokens):
        """Append ``tokens`` to the prefix and predict the next token."""
        prefix = torch.cat([state[0], tokens[:, None]], 1)
        logits = self._decode_all(prefix, memory[0], memory[1], None)
        return logits[:, -1], (prefix,)

    def forward(self, src, src_lengths, tgt_in, tgt_lengths=None):
        """Teacher-forced logits of shape (batch, T, n_output_tokens).

        Parameters are those of :meth:`RNNSeq2Seq.forward`; ``tgt_lengths``
        masks padded target steps as attention keys (None: all valid).
        """
        memory, src_pad = self.encode(src, src_lengths)
        batch, steps = tgt_in.shape
        tgt_pad = padding_mask(tgt_lengths, batch, steps, device=tgt_in.device)
        if self.sampling.training and self.sampling.strength > 0.0 and steps > 1:
            with torch.no_grad():
                own = self._decode_all(tgt_in, memory, src_pad, tgt_pad).argmax(-1)
            # Position t + 1 is fed the prediction made at position t.
            tgt_in = torch.cat([tgt_in[:, :1], self.sampling(tgt_in[:, 1:], own[:, :-1])], 1)
        return self._decode_all(tgt_in, memory, src_pad, tgt_pad)

    def extra_repr(self):
        return (f"n_input_tokens={self.n_input_tokens}, n_output_tokens="
                f"{self.n_output_tokens}, d_model={self.d_model}, num_heads={self.num_heads}")
