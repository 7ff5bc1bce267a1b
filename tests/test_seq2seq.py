"""Seq2SeqModel and the encoder-decoder networks: learning, decoding, API, bad input."""

import pickle
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import check_param_validation

import sklears_neural
from sklears_neural.core.inputs import TokenSequences
from sklears_neural.core.persistence import example_inputs
from sklears_neural.models.seq2seq import Seq2SeqModel
from sklears_neural.nn.seq2seq import (
    BOS,
    EOS,
    PAD,
    UNK,
    RNNSeq2Seq,
    TransformerDecoderLayer,
    TransformerSeq2Seq,
)


def _reversal(n, seed, low=3, high=8):
    """Digit strings of ``low``-``high`` characters and their reversals."""
    rng = np.random.default_rng(seed)
    X = ["".join(map(str, rng.integers(0, 10, rng.integers(low, high + 1))))
         for _ in range(n)]
    return X, [s[::-1] for s in X]


def _quiet_fit(est, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kwargs)


# Settings measured on this 2-core machine (one torch thread), reversing
# 1,500 digit strings of 3-8 characters; see the report in the commit.
FAST = {
    "rnn": dict(max_iter=8, batch_size=64, learning_rate_init=0.005,
                learning_rate="cosine"),
    "transformer": dict(max_iter=10, batch_size=64, learning_rate_init=0.005,
                        learning_rate="cosine", warmup_iters=30, clip_grad_norm=1.0),
}

X_small, y_small = _reversal(60, seed=0, low=2, high=4)


def _small(architecture="rnn", **params):
    """A tiny network, for API tests that need a fitted model, not a good one."""
    tiny = dict(embedding_dim=8, hidden_size=8, d_model=8, num_heads=2,
                num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16,
                max_iter=2, batch_size=16)
    tiny.update(params)
    return Seq2SeqModel(architecture, **tiny)


_FITTED = {}


def _fitted(architecture, seed):
    """One accurate fit per architecture and seed, shared by the tests that read it."""
    key = (architecture, seed)
    if key not in _FITTED:
        X, y = _reversal(1500, seed)
        est = Seq2SeqModel(architecture, random_state=seed, **FAST[architecture])
        start = time.perf_counter()
        _quiet_fit(est, X, y)
        _FITTED[key] = est, time.perf_counter() - start
    return _FITTED[key]


# -- learning -------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["rnn", "transformer"])
def test_reverses_held_out_digit_strings(architecture, global_random_seed):
    est, seconds = _fitted(architecture, global_random_seed)
    X_test, y_test = _reversal(300, seed=global_random_seed + 1000)
    # Held out: mostly strings never seen in training.
    assert est.score(X_test, y_test) >= 0.95


def _dates(n, seed):
    """ISO dates and the same dates as day/month/year."""
    rng = np.random.default_rng(seed)
    years, months, days = rng.integers(1950, 2050, n), rng.integers(1, 13, n), \
        rng.integers(1, 29, n)
    X = [f"{a:04d}-{b:02d}-{c:02d}" for a, b, c in zip(years, months, days)]
    return X, [f"{c:02d}/{b:02d}/{a:04d}" for a, b, c in zip(years, months, days)]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("architecture", ["rnn", "transformer"])
def test_reversal_and_dates_across_seeds(architecture, seed):
    # ~10-20 s per fit here; measured: 0.96-1.0 on reversal, 1.0 on dates.
    est, _ = _fitted(architecture, seed)
    X_test, y_test = _reversal(300, seed=seed + 1000)
    assert est.score(X_test, y_test) >= 0.95
    X, y = _dates(1500, seed)
    est = _quiet_fit(Seq2SeqModel(architecture, random_state=seed, **FAST[architecture]),
                     X, y)
    X_test, y_test = _dates(300, seed + 1000)
    assert est.score(X_test, y_test) >= 0.95


def test_rnn_luong_attention_and_lstm_learn(global_random_seed):
    X, y = _reversal(400, global_random_seed, low=2, high=5)
    est = Seq2SeqModel(cell="lstm", attention="luong", hidden_size=48, embedding_dim=16,
                       random_state=global_random_seed, **{**FAST["rnn"], "max_iter": 15})
    _quiet_fit(est, X, y)
    # Measured 0.96-0.99 for seeds 0-4 (chance: ~1e-3 per sequence).
    assert est.score(X[:200], y[:200]) >= 0.9
    assert est.loss_curve_[-1] < 0.1 * est.loss_curve_[0]


# -- decoding -------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["rnn", "transformer"])
def test_beam_width_one_is_greedy_exactly(architecture, global_random_seed):
    # Half-trained, so that decisions are close and tokens differ from targets.
    est = _quiet_fit(_small(architecture, max_iter=3, random_state=global_random_seed),
                     X_small, y_small)
    greedy = est._decode(X_small, beam_width=1)
    beam = est.set_params(decoding="beam", beam_width=1)._decode(X_small, beam_width=1)
    np.testing.assert_array_equal(beam, greedy)
    kind = est._input_kind()
    data = kind.dataset(kind.validate(est, X_small, reset=False), dtype=torch.float32,
                        device=torch.device("cpu"))
    (src, lengths), _, _ = data.all()
    with torch.inference_mode():
        tokens_g, score_g = est.module_.greedy(src, lengths, 7)
        tokens_b, score_b = est.module_.beam_search(src, lengths, 7, beam_width=1)
    assert torch.equal(tokens_g, tokens_b)
    assert torch.equal(score_g, score_b)


@pytest.mark.parametrize("architecture", ["rnn", "transformer"])
def test_beam_is_never_less_probable_than_greedy(architecture, global_random_seed):
    X, y = _reversal(200, global_random_seed, low=2, high=5)
    est = _quiet_fit(_small(architecture, max_iter=2, random_state=global_random_seed),
                     X, y)
    greedy = est.predict(X)
    beam = est.set_params(decoding="beam", beam_width=3).predict(X)
    lp_greedy = est.sequence_log_proba(X, greedy)
    lp_beam = est.sequence_log_proba(X, beam)
    assert np.all(lp_beam >= lp_greedy - 1e-4)
    # Not vacuous: the half-trained model leaves beam search room to win.
    assert np.sum(lp_beam > lp_greedy + 1e-3) >= 1  # 4-200 of 200 for seeds 0-4 and 42
    # The decoder's own scores are the teacher-forced log-probabilities.
    np.testing.assert_allclose(est._decode(X, beam_width=3)[:, 0], lp_beam, atol=1e-4)
    np.testing.assert_allclose(est._decode(X, beam_width=1)[:, 0], lp_greedy, atol=1e-4)


def test_max_output_length(global_random_seed):
    est = _quiet_fit(_small(random_state=global_random_seed), X_small, y_small)
    # Default: twice the longest target plus 5.
    assert est.max_output_length_ == 2 * max(map(len, y_small)) + 5
    assert max(map(len, est.predict(X_small))) <= est.max_output_length_
    est.set_params(max_output_length=1)
    assert max(map(len, est.predict(X_small))) <= 1
    # A forced EOS ends cut sequences: their score is still their probability.
    cut = est.predict(X_small)
    np.testing.assert_allclose(est._decode(X_small, 1)[:, 0],
                               est.sequence_log_proba(X_small, cut), atol=1e-5)


# -- networks -------------------------------------------------------------------


def _batch(n_input, n_output, rng, batch=5, src_max=7, tgt_max=6):
    src_lengths = torch.as_tensor(rng.integers(1, src_max + 1, batch))
    tgt_lengths = torch.as_tensor(rng.integers(1, tgt_max + 1, batch))
    src = torch.as_tensor(rng.integers(4, n_input, (batch, src_max)))
    tgt = torch.as_tensor(rng.integers(4, n_output, (batch, tgt_max)))
    tgt[:, 0] = BOS
    steps = torch.arange(src_max)
    src = src.masked_fill(steps >= src_lengths[:, None], PAD)
    tgt = tgt.masked_fill(torch.arange(tgt_max) >= tgt_lengths[:, None], PAD)
    return src, src_lengths, tgt, tgt_lengths


NETWORKS = [
    lambda: RNNSeq2Seq(12, 9, embedding_dim=8, hidden_size=8),
    lambda: RNNSeq2Seq(12, 9, "lstm", "luong", embedding_dim=8, hidden_size=8,
                       num_layers=2, bidirectional=False),
    lambda: TransformerSeq2Seq(12, 9, d_model=8, num_heads=2, dim_feedforward=16),
    lambda: TransformerSeq2Seq(12, 9, d_model=8, num_heads=2, dim_feedforward=16,
                               norm_first=False),
]


@pytest.mark.parametrize("make", NETWORKS)
def test_padding_never_changes_a_sequence_result(make, global_random_seed):
    torch.manual_seed(global_random_seed)
    net = make().double().eval()
    rng = np.random.default_rng(global_random_seed)
    src, src_lengths, tgt, tgt_lengths = _batch(12, 9, rng)
    with torch.inference_mode():
        together = net.log_likelihood(src, src_lengths, tgt, tgt_lengths)
        for i in range(len(src)):
            s, t = int(src_lengths[i]), int(tgt_lengths[i])
            alone = net.log_likelihood(src[i:i + 1, :s], src_lengths[i:i + 1],
                                       tgt[i:i + 1, :t], tgt_lengths[i:i + 1])
            torch.testing.assert_close(alone[0], together[i], rtol=0, atol=1e-10)
        logits = net(src, src_lengths, tgt, tgt_lengths)
    # PAD, BOS and UNK are never predicted.
    assert torch.isneginf(logits[..., [PAD, BOS, UNK]]).all()
    assert torch.isfinite(logits[..., EOS]).all()


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_equals_torch(norm_first, global_random_seed):
    torch.manual_seed(global_random_seed)
    d, heads, batch, T, S = 8, 2, 3, 5, 6
    ours = TransformerDecoderLayer(d, heads, 16, dropout=0.0, activation="gelu",
                                   norm_first=norm_first).double().eval()
    ref = torch.nn.TransformerDecoderLayer(d, heads, 16, dropout=0.0, activation="gelu",
                                           batch_first=True,
                                           norm_first=norm_first).double().eval()
    with torch.no_grad():
        for mine, theirs in ((ours.self_attn, ref.self_attn),
                             (ours.multihead_attn, ref.multihead_attn)):
            w, b = theirs.in_proj_weight.chunk(3), theirs.in_proj_bias.chunk(3)
            for proj, wi, bi in zip((mine.q_proj, mine.k_proj, mine.v_proj), w, b):
                proj.weight.copy_(wi)
                proj.bias.copy_(bi)
            mine.out_proj.load_state_dict(theirs.out_proj.state_dict())
        for name in ("linear1", "linear2", "norm1", "norm2", "norm3"):
            getattr(ours, name).load_state_dict(getattr(ref, name).state_dict())
    x = torch.randn(batch, T, d, dtype=torch.float64)
    memory = torch.randn(batch, S, d, dtype=torch.float64)
    tgt_pad = torch.arange(T) >= torch.tensor([5, 3, 1])[:, None]
    mem_pad = torch.arange(S) >= torch.tensor([6, 2, 4])[:, None]
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    expected = ref(x, memory, tgt_mask=causal, tgt_is_causal=True,
                   tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
    got = ours(x, memory, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
    valid = ~tgt_pad
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-10, atol=1e-10)
    # Causal: the first step does not see the later ones.
    changed = x.clone()
    changed[:, 1:] += 1.0
    again = ours(changed, memory, memory_key_padding_mask=mem_pad)
    torch.testing.assert_close(again[:, 0], ours(x, memory, memory_key_padding_mask=mem_pad)[:, 0])


def test_rnn_scheduled_sampling_feeds_its_own_predictions(global_random_seed):
    torch.manual_seed(global_random_seed)
    net = RNNSeq2Seq(12, 9, embedding_dim=8, hidden_size=8).double()
    rng = np.random.default_rng(global_random_seed)
    src, src_lengths, _, _ = _batch(12, 9, rng, tgt_max=6)
    src_lengths, src = torch.full_like(src_lengths, 7), src.masked_fill(src == PAD, 5)
    net.eval()
    with torch.no_grad():
        tokens, _ = net.greedy(src, src_lengths, 6)
    # Training with probability 1 of feeding the prediction: whatever the
    # target tokens, the steps follow greedy decoding.
    net.train()
    net.sampling.initial = 1.0
    noise = torch.as_tensor(rng.integers(4, 9, (len(src), 6)))
    noise[:, 0] = BOS
    with torch.no_grad():
        logits = net(src, src_lengths, noise, torch.full_like(src_lengths, 6))
    own = logits.argmax(-1)
    done = torch.cumsum(tokens == EOS, 1) - (tokens == EOS).long() > 0
    assert torch.equal(own[~done[:, :6]], tokens[:, :6][~done[:, :6]])


def test_transformer_scheduled_sampling_is_two_pass(global_random_seed):
    torch.manual_seed(global_random_seed)
    net = TransformerSeq2Seq(12, 9, d_model=8, num_heads=2, dim_feedforward=16,
                             dropout=0.0).double().train()
    rng = np.random.default_rng(global_random_seed)
    src, src_lengths, tgt, tgt_lengths = _batch(12, 9, rng)
    memory, pad = net.encode(src, src_lengths)
    tgt_pad = torch.arange(tgt.shape[1]) >= tgt_lengths[:, None]
    with torch.no_grad():
        net.sampling.initial = 0.0
        forced = net(src, src_lengths, tgt, tgt_lengths)
        expected_forced = net._decode_all(tgt, memory, pad, tgt_pad)
        net.sampling.initial = 1.0
        sampled = net(src, src_lengths, tgt, tgt_lengths)
    fed = torch.cat([tgt[:, :1], expected_forced.argmax(-1)[:, :-1]], 1)
    torch.testing.assert_close(forced, expected_forced)
    torch.testing.assert_close(sampled, net._decode_all(fed, memory, pad, tgt_pad))


def test_scheduled_sampling_draws_from_the_generator_only():
    net = RNNSeq2Seq(12, 9, embedding_dim=8, hidden_size=8, teacher_forcing_ratio=0.3)
    net.sampling.generator = torch.Generator().manual_seed(0)
    net.train()
    state = torch.random.get_rng_state()
    draws = net.sampling.draw(400, 50, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), state)
    # p = 1 - teacher_forcing_ratio, within 4 standard errors.
    assert abs(draws.double().mean().item() - 0.7) < 4 * (0.7 * 0.3 / 20000) ** 0.5
    net.sampling.generator = torch.Generator().manual_seed(0)
    assert torch.equal(net.sampling.draw(400, 50, torch.device("cpu")), draws)
    net.eval()
    assert net.sampling.draw(400, 50, torch.device("cpu")) is None


# -- input and output kinds ---------------------------------------------------


def test_strings_in_strings_out():
    est = _quiet_fit(_small(random_state=0), X_small, y_small)
    predicted = est.predict(X_small[:5])
    assert predicted.dtype == object and predicted.shape == (5,)
    assert all(type(p) is str for p in predicted)
    assert set("".join(predicted)) <= set("0123456789")
    assert sorted(est.vocabulary_["output"]) == list("0123456789")
    assert sorted(est.vocabulary_["output"].values()) == list(range(4, 14))


def test_integer_arrays_in_integer_arrays_out(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X = [rng.integers(100, 105, rng.integers(2, 5)).astype(np.int32) for _ in range(60)]
    y = [x[::-1] for x in X]
    est = _quiet_fit(_small(random_state=global_random_seed), X, y)
    predicted = est.predict(X[:5])
    assert all(isinstance(p, np.ndarray) and p.dtype == np.int64 and p.ndim == 1
               for p in predicted)
    assert set(np.concatenate(est.predict(X))) <= set(range(100, 105))
    # A 2-D array of equal-length sequences is a list of its rows.
    X2 = np.array([[100, 101, 102], [103, 104, 100]])
    assert [list(p) for p in est.predict(X2)] == [list(p) for p in est.predict(list(X2))]
    # Strings in, integers out, and the other way round.
    mixed = _quiet_fit(_small(random_state=0), X_small, [np.arange(len(s)) for s in X_small])
    assert isinstance(mixed.predict(X_small[:1])[0], np.ndarray)
    back = _quiet_fit(_small(random_state=0), [np.arange(len(s)) + 1 for s in X_small],
                      X_small)
    assert isinstance(back.predict([np.array([1, 2])])[0], str)


def test_score_is_exact_match():
    est = _quiet_fit(_small(random_state=0), X_small, y_small)
    predicted = list(est.predict(X_small))
    wrong = [p + "x" for p in predicted]
    targets = predicted[:30] + wrong[30:]
    assert est.score(X_small, targets) == pytest.approx(0.5)
    weights = np.r_[np.ones(30), 3 * np.ones(30)]
    assert est.score(X_small, targets, sample_weight=weights) == pytest.approx(0.25)


def test_unknown_tokens():
    est = _quiet_fit(_small(random_state=0), X_small, y_small)
    with pytest.raises(ValueError, match=r"did not see in fit, e.g. \['x'\].*handle_unknown"):
        est.predict(["12x"])
    est.set_params(handle_unknown="unk")
    assert est._input_kind().validate(est, ["1x2"], reset=False).ids.tolist() == [
        [est.vocabulary_["input"]["1"], UNK, est.vocabulary_["input"]["2"]]
    ]
    assert len(est.predict(["12x"])) == 1
    # The model cannot score tokens it cannot output.
    with pytest.raises(ValueError, match="y has tokens.*e.g. \\['z'\\]"):
        est.sequence_log_proba(["12"], ["2z"])
    with pytest.raises(ValueError, match="holds integer arrays, but .* fitted on strings"):
        est.predict([np.array([1, 2])])


def test_bad_input():
    est = _small(max_iter=1)
    with pytest.raises(ValueError, match="got a single string"):
        est.fit("abc", ["cba"])
    with pytest.raises(ValueError, match="Sequence 1 of X is empty"):
        est.fit(["ab", ""], ["ba", ""])
    with pytest.raises(ValueError, match="mixes strings and integer arrays"):
        est.fit(["ab", np.array([1, 2])], ["ba", "ab"])
    with pytest.raises(ValueError, match="holds float64 values; tokens must be integers"):
        est.fit([np.array([1.0, 2.0])], ["ba"])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(["ab", "ba"], ["ba"])
    with pytest.raises(ValueError, match="requires y to be passed"):
        est.fit(["ab"], None)
    with pytest.raises(ValueError, match="has 2 dimensions"):
        est.fit([np.ones((2, 2), dtype=int)], ["a"])
    with pytest.raises(ValueError, match="d_model=8 is not a multiple of num_heads=3"):
        _small("transformer", num_heads=3).fit(X_small, y_small)
    with pytest.raises(ValueError, match="solver='lbfgs' needs a deterministic objective"):
        _small(solver="lbfgs", teacher_forcing_ratio=0.5).fit(X_small, y_small)
    with pytest.raises(NotFittedError):
        _small().predict(["ab"])
    # Empty targets are fine: the model learns to end at once.
    _quiet_fit(_small(random_state=0, batch_size=2), ["ab", "ba"], ["", "a"])


# -- the toolbox ------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["rnn", "transformer"])
def test_random_state_fixes_everything_and_global_rng_is_untouched(architecture):
    params = dict(random_state=3, dropout=0.2, teacher_forcing_ratio=0.5)
    state = torch.random.get_rng_state()
    a = _quiet_fit(_small(architecture, **params), X_small, y_small)
    b = _quiet_fit(_small(architecture, **params), X_small, y_small)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_array_equal(a._decode(X_small, 2), b._decode(X_small, 2))
    # Negative control: another seed trains another network.
    c = _quiet_fit(_small(architecture, **{**params, "random_state": 4}), X_small, y_small)
    assert c.loss_curve_ != a.loss_curve_


def test_teacher_forcing_ratio_is_no_change_of_architecture():
    est = _small(random_state=0)
    est.partial_fit(X_small, y_small)
    est.set_params(teacher_forcing_ratio=0.5)
    est.partial_fit(X_small, y_small)  # continues, no "architecture changed" error
    assert est.module_.sampling.initial == pytest.approx(0.5)
    assert est.n_iter_ == 1 and len(est.loss_curve_) == 2


def test_partial_fit_continues():
    est = _small(random_state=0, learning_rate_init=0.01)
    for _ in range(4):
        est.partial_fit(X_small, y_small)
    assert est.t_ == 4 * len(X_small)
    assert len(est.loss_curve_) == 4
    assert est.loss_curve_[-1] < est.loss_curve_[0]
    with pytest.raises(ValueError, match="y has tokens.*did not see in fit"):
        est.partial_fit(["12"], ["1a"])
    with pytest.raises(ValueError, match="architecture parameters changed"):
        est.set_params(hidden_size=9).partial_fit(X_small, y_small)


def test_warm_start_continues_the_fit():
    params = dict(random_state=0, learning_rate_init=0.01, max_iter=3)
    cold = _quiet_fit(_small(**params), X_small, y_small)
    first = list(cold.loss_curve_)
    _quiet_fit(cold, X_small, y_small)
    # Without warm_start a fit starts over: the same seed gives the same curve.
    assert cold.loss_curve_ == first
    warm = _quiet_fit(_small(warm_start=True, **params), X_small, y_small)
    _quiet_fit(warm, X_small, y_small)
    # With it, the history goes on and the second fit starts near where the
    # first ended.
    assert warm.loss_curve_[:3] == first and len(warm.loss_curve_) == 6
    assert warm.loss_curve_[3] < (first[0] + first[-1]) / 2
    assert warm.t_ == 6 * len(X_small)


def test_early_stopping_score_is_greedy_exact_match(global_random_seed):
    X, y = _reversal(300, global_random_seed, low=2, high=4)
    est = _quiet_fit(_small(random_state=global_random_seed, early_stopping=True,
                            max_iter=6, hidden_size=16, learning_rate_init=0.01), X, y)
    assert len(est.validation_scores_) == est.n_iter_
    assert all(0.0 <= s <= 1.0 for s in est.validation_scores_)
    # The teacher-forced score is what greedy decoding gets, sequence by sequence.
    pairs, targets = est._input_kind().validate_with_targets(est, X, y, reset=False)
    evaluate = est._evaluator(pairs, targets, None, torch.device("cpu"), torch.float32)
    assert evaluate()["valid_score"] == pytest.approx(est.score(X, y), abs=1e-12)


def test_sample_weight_weighs_whole_sequences():
    est = _quiet_fit(_small(random_state=0, alpha=0.0), X_small, y_small)
    w = np.r_[np.zeros(30), 2 * np.ones(30)]
    pairs, targets = est._input_kind().validate_with_targets(est, X_small, y_small,
                                                             reset=False)
    data = est._make_dataset(pairs, targets, w, dtype=torch.float32,
                             device=torch.device("cpu"))
    inputs, tgt_out, weights = data.all()
    with torch.no_grad():
        weighted = est._objective()(est.module_, inputs, tgt_out, weights).item()
        unweighted = est._objective()(est.module_, inputs, tgt_out, None).item()
    # The loss of a sequence is minus its log-likelihood (a sum over tokens).
    nll = -est.sequence_log_proba(X_small, y_small)
    assert weighted == pytest.approx(nll[30:].mean(), rel=1e-4)
    assert unweighted == pytest.approx(nll.mean(), rel=1e-4)


def test_mixed_precision_trains():
    est = _quiet_fit(_small(random_state=0, precision="mixed"), X_small, y_small)
    assert np.isfinite(est.loss_curve_).all()


def test_float64_precision_trains():
    est = _quiet_fit(_small(random_state=0, precision="float64"), X_small, y_small)
    assert est.module_.out.weight.dtype == torch.float64
    assert est.loss_curve_[-1] < est.loss_curve_[0]


def test_lbfgs_trains():
    est = _small(solver="lbfgs", max_iter=15, random_state=0)
    _quiet_fit(est, X_small, y_small)
    assert est.loss_curve_[-1] < est.loss_curve_[0]


@pytest.mark.parametrize("architecture", ["rnn", "transformer"])
def test_pickle_and_save_load_round_trip_exactly(architecture, tmp_path):
    est = _quiet_fit(_small(architecture, random_state=0), X_small, y_small)
    expected = est._decode(X_small, 3)
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy._decode(X_small, 3), expected)
    est.save(tmp_path / "model.zip")
    loaded = sklears_neural.load(tmp_path / "model.zip")
    np.testing.assert_array_equal(loaded._decode(X_small, 3), expected)
    assert loaded.vocabulary_ == est.vocabulary_
    np.testing.assert_array_equal(loaded.predict(X_small), est.predict(X_small))
    # Both continue training.
    loaded.partial_fit(X_small, y_small)
    copy.partial_fit(X_small, y_small)
    np.testing.assert_array_equal(loaded._decode(X_small, 1), copy._decode(X_small, 1))


def test_loading_probes_the_network_with_the_vocabulary():
    est = _quiet_fit(_small(random_state=0), X_small, y_small)
    inputs = example_inputs(est)
    with torch.no_grad():
        out = est._forward(est.module_, inputs)
    assert out.shape == (1, 2, est.n_outputs_)
    # A vocabulary the embeddings cannot hold is refused.
    est.vocabulary_["input"]["new"] = max(est.vocabulary_["input"].values()) + 1
    with pytest.raises(IndexError):
        est._forward(est.module_, example_inputs(est))


def test_integer_vocabulary_survives_save_load(tmp_path):
    X = [np.array([7, 9, 11]), np.array([9, 7])] * 10
    est = _quiet_fit(_small(random_state=0), X, X)
    est.save(tmp_path / "model")
    loaded = sklears_neural.load(tmp_path / "model")
    assert loaded.vocabulary_ == est.vocabulary_
    assert [p.tolist() for p in loaded.predict(X[:2])] == [p.tolist() for p in est.predict(X[:2])]


def test_clone_get_params_and_cross_validation():
    est = _small(random_state=0, cell="lstm")
    params = est.get_params()
    assert params["cell"] == "lstm" and params["architecture"] == "rnn"
    cloned = clone(est)
    assert cloned.get_params() == params and not hasattr(cloned, "module_")
    # Lists of strings go through scikit-learn's splitters and scoring.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(_small(max_iter=1, random_state=0), X_small, y_small, cv=2)
    assert scores.shape == (2,) and np.all((0 <= scores) & (scores <= 1))


def test_token_sequences_index_like_arrays():
    est = _small()
    pairs, _ = est._input_kind().validate_with_targets(est, ["ab", "abcd", "a"],
                                                       ["x", "xyz", ""], reset=True)
    part = pairs[[0, 2], ...]
    assert isinstance(part, TokenSequences)
    assert part.ids.shape == (2, 2) and part.lengths.tolist() == [2, 1]
    # BOS x EOS and BOS EOS, cut to the longest.
    assert part.targets.tolist() == [[BOS, 4, EOS], [BOS, EOS, PAD]]


def test_param_validation():
    check_param_validation("Seq2SeqModel", Seq2SeqModel())


def test_predictions_from_threads_agree():
    est = _quiet_fit(_small(random_state=0), X_small, y_small)
    X = X_small * 2  # above 32 rows: the module's own dtype, not the float64 copy
    expected = est.predict(X)
    results = [None] * 8

    def run(i):
        results[i] = est.predict(X)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for result in results:
        np.testing.assert_array_equal(result, expected)
