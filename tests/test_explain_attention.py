"""AttentionMap: attention per layer and head, attention rollout, HTML export."""

import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklears_neural import (
    MLPClassifier,
    RNNClassifier,
    RNNRegressor,
    TransformerClassifier,
    TransformerRegressor,
)
from sklears_neural.core._compat import InvalidParameterError
from sklears_neural.explain import AttentionMap
from sklears_neural.explain.attention import attention_rollout, to_html


def fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


def marked(seed, n=400, steps=8):
    """Sequences whose target is the value at the one step marked by feature 1."""
    rng = np.random.RandomState(seed)
    X = np.zeros((n, steps, 2))
    X[:, :, 0] = rng.normal(size=(n, steps))
    position = rng.randint(steps, size=n)
    X[np.arange(n), position, 1] = 1.0
    return X, X[np.arange(n), position, 0], position


def ragged(seed, n=6, features=2):
    rng = np.random.RandomState(seed)
    return [rng.normal(size=(length, features)) for length in rng.randint(2, 7, size=n)]


def softmax_stack(rng, n, heads, steps, lengths):
    """Attention maps as a Transformer makes them: rows of valid queries
    sum to 1 over the valid keys; padded rows and columns are 0."""
    scores = rng.normal(size=(n, heads, steps, steps))
    valid = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
    weights = np.exp(scores) * valid[:, None, None, :]
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights * valid[:, None, :, None]


@pytest.fixture(scope="module")
def transformer():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 7, 2))
    y = (X[:, :, 0].mean(axis=1) > 0).astype(int)
    model = TransformerClassifier(d_model=8, num_heads=2, num_layers=2, dropout=0.0,
                                  max_iter=5, precision="float64", random_state=0)
    return fit(model, X, y)


# -- rollout ---------------------------------------------------------------------


def test_rollout_equals_a_hand_computation():
    rng = np.random.RandomState(0)
    lengths = [5, 3, 4]
    maps = [softmax_stack(rng, 3, 2, 5, lengths) for _ in range(2)]
    rollout = attention_rollout(maps, lengths)
    for i, length in enumerate(lengths):
        product = np.eye(length)
        for layer in maps:
            fused = layer[i, :, :length, :length].mean(axis=0) + np.eye(length)
            product = (fused / fused.sum(axis=1, keepdims=True)) @ product
        assert_allclose(rollout[i, :length, :length], product, rtol=0, atol=1e-12)
        assert_allclose(rollout[i, :length].sum(axis=1), 1.0, rtol=0, atol=1e-12)
        # Padded steps are exact zeros.
        assert np.all(rollout[i, length:] == 0) and np.all(rollout[i, :, length:] == 0)


def test_rollout_with_max_fusion_and_discarding():
    rng = np.random.RandomState(1)
    maps = [softmax_stack(rng, 1, 3, 4, [4]) for _ in range(2)]
    rollout = attention_rollout(maps, head_fusion="max", discard_ratio=0.25)
    product = np.eye(4)
    for layer in maps:
        fused = layer[0].max(axis=0)
        fused[fused <= np.sort(fused.ravel())[3]] = 0.0  # the 4 smallest of 16
        fused = fused + np.eye(4)
        product = (fused / fused.sum(axis=1, keepdims=True)) @ product
    assert_allclose(rollout[0], product, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="discard_ratio"):
        attention_rollout(maps, discard_ratio=1.0)


# -- Transformers -------------------------------------------------------------------


def test_transformer_maps_are_get_attention_and_padding_is_zero(transformer):
    X = ragged(0)
    expl = AttentionMap(transformer).explain(X)
    expected = transformer.get_attention(X)
    assert len(expl.attention) == 2
    for ours, theirs in zip(expl.attention, expected):
        assert ours.shape == theirs.shape == (6, 2, 6, 6)
        assert_allclose(ours, theirs, rtol=0, atol=1e-10)
    lengths = np.array([len(x) for x in X])
    assert_allclose(expl.lengths, lengths)
    assert expl.values.shape == (6, 6) and expl.layout == "sequence"
    assert expl.feature_names == [f"t{t}" for t in range(6)]
    for i, length in enumerate(lengths):
        assert np.all(expl.values[i, length:] == 0)
        assert np.all(expl.rollout[i, length:] == 0)
        assert np.all(expl.rollout[i, :, length:] == 0)
        assert_allclose(expl.rollout[i, :length].sum(axis=1), 1.0, atol=1e-12)
    # Mean pooling: the mean over valid rows of the last layer's head mean.
    for i, length in enumerate(lengths):
        last = expected[-1][i, :, :length, :length].mean(axis=0)
        assert_allclose(expl.values[i, :length], last.mean(axis=0), atol=1e-10)
    assert_allclose(expl.values.sum(axis=1), 1.0, atol=1e-12)


def test_transformer_rollout_values(transformer):
    X = ragged(1)
    expl = AttentionMap(transformer, rollout=True).explain(X)
    manual = attention_rollout(transformer.get_attention(X), [len(x) for x in X])
    assert_allclose(expl.rollout, manual, atol=1e-10)
    for i, x in enumerate(X):
        steps = len(x)
        assert_allclose(expl.values[i, :steps], manual[i, :steps, :steps].mean(axis=0),
                        atol=1e-10)
    # layer=0 rolls out the first layer only; without rollout it shows it.
    first = AttentionMap(transformer, rollout=True, layer=0).explain(X)
    assert_allclose(first.rollout, attention_rollout(transformer.get_attention(X)[:1],
                                                     [len(x) for x in X]), atol=1e-10)
    assert not np.allclose(first.values, expl.values)


def test_cls_and_attention_pooling():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 5, 2))
    y = (X[:, :, 0].mean(axis=1) > 0).astype(int)
    settings = dict(d_model=8, num_heads=2, num_layers=1, max_iter=3, dropout=0.0,
                    precision="float64", random_state=0)
    cls = fit(TransformerClassifier(pooling="cls", **settings), X, y)
    expl = AttentionMap(cls, rollout=True).explain(X[:4])
    assert expl.cls and expl.attention[0].shape == (4, 2, 6, 6)
    # The CLS row of the rollout, without the CLS token's own column.
    assert_allclose(expl.values, expl.rollout[:, 0, 1:], atol=1e-12)
    assert_allclose(expl.values.sum(axis=1), 1 - expl.rollout[:, 0, 0], atol=1e-12)
    pooled = fit(TransformerClassifier(pooling="attention", **settings), X, y)
    expl = AttentionMap(pooled).explain(X[:4])
    weights = expl.pooling_attention
    assert weights.shape == (4, 5)
    assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    last = expl.attention[0].mean(axis=1)
    assert_allclose(expl.values, np.einsum("ns,nst->nt", weights, last), atol=1e-12)


def test_no_layers_and_per_step_models():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 4, 2))
    y = (X[:, :, 0].mean(axis=1) > 0).astype(int)
    settings = dict(d_model=8, num_heads=2, num_layers=0, max_iter=2, random_state=0)
    pooled = fit(TransformerClassifier(pooling="attention", **settings), X, y)
    expl = AttentionMap(pooled).explain(X[:3])
    assert expl.attention == [] and expl.rollout is None
    assert_allclose(expl.values, expl.pooling_attention)
    with pytest.raises(ValueError,
                       match="num_layers=0: no self-attention.*pooling='attention'"):
        AttentionMap(fit(TransformerClassifier(**settings), X, y)).explain(X[:3])
    # Per step: no pooling; every valid row counts; no target per sequence.
    sequences = ragged(3, features=1)
    per_step = fit(TransformerRegressor(d_model=8, num_heads=2, per_step=True,
                                        max_iter=2, random_state=0),
                   sequences, [np.cumsum(x[:, 0]) for x in sequences])
    expl = AttentionMap(per_step, rollout=True).explain(sequences)
    assert expl.targets is None
    assert_allclose(expl.values.sum(axis=1), 1.0, atol=1e-6)
    assert "mean of the rows" in expl.description


def test_transformer_rollout_finds_the_marked_step(global_random_seed):
    X, y, position = marked(global_random_seed)
    model = fit(TransformerRegressor(d_model=16, num_heads=2, num_layers=2, dropout=0.0,
                                     max_iter=60, learning_rate_init=0.01,
                                     random_state=global_random_seed), X[:300], y[:300])
    rollout = AttentionMap(model, rollout=True).explain(X[300:]).values
    mass = rollout[np.arange(100), position[300:]]
    # Seeds 0-9: mean mass on the marked step 0.36-0.57 (1/8 if uniform),
    # the largest weight on the marked step for 100% of the sequences. The
    # last layer alone is near uniform (mass 0.12-0.34): the step's value
    # reaches the others in the first layer, which only rollout sees.
    assert mass.mean() > 0.3
    assert np.mean(rollout.argmax(axis=1) == position[300:]) > 0.95


def test_cls_attention_finds_the_marked_step(global_random_seed):
    X, y, position = marked(global_random_seed)
    model = fit(TransformerRegressor(d_model=16, num_heads=2, num_layers=1, dropout=0.0,
                                     pooling="cls", max_iter=60,
                                     learning_rate_init=0.01,
                                     random_state=global_random_seed), X[:300], y[:300])
    values = AttentionMap(model).explain(X[300:]).values
    # Seeds 0-9: the CLS token puts 0.45-1.0 of its attention on the marked
    # step (1/9 if uniform); the largest weight is there for >= 98%.
    assert values[np.arange(100), position[300:]].mean() > 0.35
    assert np.mean(values.argmax(axis=1) == position[300:]) > 0.95


def test_clone_and_repr(transformer):
    explainer = AttentionMap(transformer, rollout=True, head_fusion="max")
    copy = clone(explainer)
    assert copy.estimator is transformer and copy.head_fusion == "max"
    assert "rollout=True" in repr(explainer)
    X = ragged(4)
    assert_allclose(copy.explain(X).values, explainer.explain(X).values)


def test_layer_and_family_errors(transformer):
    X = ragged(0)
    with pytest.raises(ValueError, match=r"layer=2 is out of range.*\[-2, 1\]"):
        AttentionMap(transformer, layer=2).explain(X)
    assert AttentionMap(transformer, layer=-1).explain(X).values.shape == (6, 6)
    with pytest.raises(InvalidParameterError, match="head_fusion"):
        AttentionMap(transformer, head_fusion="sum").explain(X)
    with pytest.raises(InvalidParameterError, match="discard_ratio"):
        AttentionMap(transformer, discard_ratio=1.0).explain(X)
    rng = np.random.RandomState(0)
    X3 = rng.normal(size=(30, 4, 2))
    y = (X3[:, 0, 0] > 0).astype(int)
    last = fit(RNNClassifier(hidden_size=4, max_iter=2, random_state=0), X3, y)
    with pytest.raises(TypeError,
                       match=r"pooling='last'\) has none.*pooling='additive'"):
        AttentionMap(last).explain(X3)
    per_step = fit(RNNRegressor(hidden_size=4, pooling="additive", per_step=True,
                                max_iter=2, random_state=0), X3, X3[:, :, 0])
    with pytest.raises(TypeError, match=r"per_step=True\) pools nothing"):
        AttentionMap(per_step).explain(X3)
    mlp = fit(MLPClassifier((4,), max_iter=5, random_state=0), X3[:, :, 0], y)
    with pytest.raises(TypeError,
                       match="MLPClassifier has no attention.*IntegratedGradients"):
        AttentionMap(mlp).explain(X3[:, :, 0])
    with pytest.raises(NotFittedError):
        AttentionMap(TransformerClassifier()).explain(X3)


# -- RNNs --------------------------------------------------------------------------


@pytest.mark.parametrize("pooling",
                         ["additive", "multiplicative", "scaled_dot", "multi_head"])
def test_rnn_values_are_its_pooling_weights(pooling):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 5, 2))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    model = fit(RNNClassifier(hidden_size=8, pooling=pooling, num_heads=2, max_iter=3,
                              precision="float64", random_state=0), X, y)
    X = ragged(2)
    expl = AttentionMap(model).explain(X)
    weights = model.get_attention(X)
    assert_allclose(expl.attention, weights, rtol=0, atol=1e-10)
    if pooling == "multi_head":
        assert weights.shape == (6, 2, max(len(x) for x in X))
        weights = weights.mean(axis=1)
    assert_allclose(expl.values, weights, rtol=0, atol=1e-10)
    assert expl.rollout is None
    for i, x in enumerate(X):
        assert np.all(expl.values[i, len(x):] == 0)
        assert_allclose(expl.values[i].sum(), 1.0, atol=1e-12)


def test_rnn_attention_finds_the_marked_step(global_random_seed):
    X, y, position = marked(global_random_seed)
    model = fit(RNNRegressor(hidden_size=16, pooling="additive", max_iter=60,
                             learning_rate_init=0.01, random_state=global_random_seed),
                X[:300], y[:300])
    values = AttentionMap(model).explain(X[300:]).values
    # Seeds 0-9: 0.994-1.0 of the pooling's weight on the marked step.
    assert values[np.arange(100), position[300:]].mean() > 0.9


def test_pipeline_of_flat_rows():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(50, 6)) * 3 + 1
    y = (X.mean(axis=1) > 1).astype(int)
    model = fit(make_pipeline(StandardScaler(), TransformerClassifier(
        d_model=8, num_heads=2, max_iter=3, precision="float64", random_state=0)), X, y)
    expl = AttentionMap(model, rollout=True).explain(X[:3])
    scaled = model[:-1].transform(X[:3])
    expected = model[-1].get_attention(scaled)
    assert_allclose(expl.attention[1], expected[1], atol=1e-10)
    assert expl.values.shape == (3, 6) and expl.data.shape == (3, 6)


# -- output ------------------------------------------------------------------------


def test_html_page_is_standalone(transformer, tmp_path):
    X = ragged(0)
    expl = AttentionMap(transformer, rollout=True).explain(X)
    path = tmp_path / "attention.html"
    tokens = [[f"<w{t}>" for t in range(len(x))] for x in X]
    page = AttentionMap.to_html(expl, path, tokens=tokens, samples=[0, 1])
    assert path.read_text(encoding="utf-8") == page and len(page) > 1000
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # No external resources of any kind, no scripts.
    assert not re.search(r"https?:|//[a-z]|<script|<link|src=|@import", page, re.I)
    # Tokens are escaped; 2 samples x (2 layers x 2 heads + the rollout) tables.
    assert "&lt;w0&gt;" in page and "<w0>" not in page
    assert page.count('<table class="map">') == 2 * 5
    # Input values label the steps when no tokens are given.
    plain = to_html(expl, samples=[0], maps=False)
    assert f"{X[0][0, 0]:.3g}" in plain and '<table class="map">' not in plain
    with pytest.raises(ValueError, match="samples holds 9"):
        to_html(expl, samples=[9])


def test_html_of_an_rnn_and_the_sequence_plot(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 5, 2))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    model = fit(RNNClassifier(hidden_size=4, pooling="multi_head", num_heads=2,
                              max_iter=2, random_state=0), X, y)
    expl = AttentionMap(model).explain(X[:3])
    page = to_html(expl, tmp_path / "rnn.html")
    assert page.count('<table class="map">') == 3 and "head 1" in page
    figure = expl.plot(kind="sequence")
    assert len(figure.axes) >= 3
