"""TCAV: concept activation vectors, scores, significance and the CAV cache."""

import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline

from sklears_neural import MLPClassifier, MLPRegressor, RNNClassifier
from sklears_neural.core._compat import InvalidParameterError
from sklears_neural.explain import TCAV

N_FEATURES = 6
# The direction the label depends on, and one the model provably ignores:
# the last feature is 0 in training, so the pipeline's PCA(5) drops it and
# the network's output does not change along it (to float rounding).
USED = np.r_[1.0, 1.0, 0, 0, 0, 0] / np.sqrt(2)
UNUSED = np.r_[0, 0, 0, 0, 0, 1.0]


def fit_quietly(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


def planted(seed):
    """A fitted pipeline whose label is sign(x . USED), and data around it."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(300, N_FEATURES))
    X[:, -1] = 0.0
    y = (X @ USED > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = make_pipeline(
            PCA(N_FEATURES - 1),
            MLPClassifier((16,), max_iter=150, random_state=seed),
        ).fit(X, y)
    base = rng.normal(size=(60, N_FEATURES))
    base[:, -1] = 0.0
    concepts = {
        "used": base + 2 * USED,
        "unused": base + 2 * UNUSED,
        **{f"random{i}": rng.normal(size=(60, N_FEATURES)) for i in range(3)},
    }
    return model, X, y, concepts, rng.normal(size=(200, N_FEATURES))


@pytest.fixture(scope="module")
def small():
    """A small MLP and one concept, for the cache and error tests."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier((8,), max_iter=100, random_state=0).fit(X, y)
    concepts = {"x0": rng.normal(size=(40, 4)) + [2.0, 0, 0, 0],
                "x3": rng.normal(size=(40, 4)) + [0, 0, 0, 2.0]}
    return model, X, concepts, rng.normal(size=(100, 4))


def test_planted_concept_is_significant_and_others_are_not(global_random_seed):
    model, X, y, concepts, random_examples = planted(global_random_seed)
    tcav = TCAV(model, layer="layers.0", concepts=concepts,
                random_examples=random_examples, n_random=20,
                random_state=global_random_seed)
    expl = tcav.explain(X[y == 1][:100], target=1)
    assert expl.feature_names == list(concepts)
    assert expl.values.shape == (1, 5)
    assert expl.p_values.shape == (5,) and expl.scores.shape == (5, 20)
    used, others = expl.p_values[0], expl.p_values[1:]
    # Seeds 0-99: the planted concept's mean score has median 0.98 and
    # minimum 0.68; its p-value is at most 0.022.
    assert expl.values[0, 0] > 0.6
    assert used < 0.05 and expl.significant[0]
    # The unused direction and three random concepts are random concepts
    # to this model: each comes out significant at about the nominal rate
    # (seeds 0-99: 7%, 4%, 6%, 5%), never more than 2 of the 4 at once, and
    # none with p < 0.001.
    assert np.sum(others < 0.05) <= 2
    assert np.all(others > 0.001)


def test_scores_are_the_fraction_of_positive_directional_derivatives(small):
    model, X, concepts, random_examples = small
    tcav = TCAV(model, layer="layers.0", concepts=concepts,
                random_examples=random_examples, n_random=4, random_state=0)
    expl = tcav.explain(X[:50], target=1)
    # The gradient of P(class 1) at the hidden layer's input a = W1 x + b1,
    # by hand: p = sigmoid(w2 . relu(a) + b2), dp/da = p (1 - p) w2 [a > 0].
    first, _, last = model.module_.layers
    with torch.no_grad():
        a = first(torch.as_tensor(X[:50], dtype=torch.float32))
        p = torch.sigmoid(last(torch.relu(a))).double().numpy()
        w2 = last.weight.double().numpy()
    grads = p * (1 - p) * w2 * (a.double().numpy() > 0)  # (50, 8)
    manual = (np.einsum("nd,crd->crn", grads, expl.cavs) > 0).mean(axis=-1)
    assert_allclose(expl.scores, manual)
    assert_allclose(expl.values[0], manual.mean(axis=1))
    assert_allclose(expl.random_scores, (grads @ expl.random_cavs.T > 0).mean(axis=0))
    assert_allclose(np.linalg.norm(expl.cavs, axis=-1), 1.0)
    assert expl.cav_accuracy.shape == (2, 4) and np.all(expl.cav_accuracy > 0.5)
    assert list(expl.targets) == [1]


def test_cav_is_the_classifiers_unit_normal_toward_the_concept(small):
    model, X, concepts, random_examples = small
    expl = TCAV(model, layer="layers.1", concepts={"x0": concepts["x0"]},
                random_examples=random_examples, n_random=2, n_examples=40,
                classifier="logistic", alpha=0.1, random_state=0).explain(X[:10])
    # n_examples=40 takes all 40 concept examples; the CAV points from the
    # random examples' mean activation to the concept's.
    first, relu, _ = model.module_.layers
    with torch.no_grad():
        def act(a):
            return relu(first(torch.as_tensor(a, dtype=torch.float32))).double().numpy()
        shift = act(concepts["x0"]).mean(0) - act(random_examples).mean(0)
    for cav in expl.cavs[0]:
        assert cav @ shift > 0.5 * np.linalg.norm(shift)


def test_second_explain_reuses_cavs_and_new_concept_data_retrains(small, monkeypatch):
    model, X, concepts, random_examples = small
    fits = []
    original = SGDClassifier.fit
    monkeypatch.setattr(SGDClassifier, "fit",
                        lambda self, *a, **k: fits.append(1) or original(self, *a, **k))
    tcav = TCAV(model, layer="layers.1", concepts=concepts,
                random_examples=random_examples, n_random=3, random_state=0)
    first = tcav.explain(X[:20], target=1)
    assert (first.cavs_trained, first.cavs_reused, len(fits)) == (9, 0, 9)
    second = tcav.explain(X[20:60], target=0)  # other inputs, same CAVs
    assert (second.cavs_trained, second.cavs_reused, len(fits)) == (0, 9, 9)
    assert_allclose(second.cavs, first.cavs)
    # New examples for one concept: only its 3 CAVs are trained again.
    changed = dict(concepts, x3=concepts["x3"] + 0.01)
    third = tcav.set_params(concepts=changed).explain(X[:20], target=1)
    assert (third.cavs_trained, third.cavs_reused, len(fits)) == (3, 6, 12)
    assert_allclose(third.cavs[0], first.cavs[0])
    assert not np.allclose(third.cavs[1], first.cavs[1])
    # Other classifier settings are other CAVs; cache=False trains each time.
    assert tcav.set_params(alpha=0.02).explain(X[:20]).cavs_trained == 9
    tcav.set_params(cache=False)
    assert tcav.explain(X[:20]).cavs_trained == 9
    assert tcav.explain(X[:20]).cavs_trained == 9


def test_clone_keeps_settings_and_model_but_not_the_cache(small):
    model, X, concepts, random_examples = small
    tcav = TCAV(model, layer="layers.1", concepts=concepts,
                random_examples=random_examples, n_random=2, random_state=0)
    first = tcav.explain(X[:10])
    copy = clone(tcav)
    assert copy.estimator is model and copy.layer == "layers.1" and copy.n_random == 2
    assert repr(tcav).startswith("TCAV(")
    again = copy.explain(X[:10])
    assert again.cavs_trained == 6  # a new explainer starts without CAVs
    assert_allclose(again.cavs, first.cavs)  # the same seed gives the same CAVs


def test_refitted_weights_retrain(small):
    model, X, concepts, random_examples = small
    tcav = TCAV(model, layer="layers.1", concepts=concepts,
                random_examples=random_examples, n_random=2, random_state=0)
    tcav.explain(X[:10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        other = MLPClassifier((8,), max_iter=100, random_state=1).fit(X, X[:, 0] > 0)
    assert tcav.set_params(estimator=other).explain(X[:10]).cavs_trained == 6


def test_random_state_none_shares_cavs_within_one_explainer(small):
    model, X, concepts, random_examples = small
    tcav = TCAV(model, layer="layers.1", concepts=concepts,
                random_examples=random_examples, n_random=2)
    tcav.explain(X[:10])
    assert tcav.explain(X[:10]).cavs_trained == 0


def test_cache_dir_is_shared_by_explainers_and_holds_plain_arrays(small, tmp_path):
    model, X, concepts, random_examples = small
    settings = dict(layer="layers.1", concepts=concepts,
                    random_examples=random_examples, n_random=2, random_state=0,
                    cache_dir=tmp_path)
    first = TCAV(model, **settings).explain(X[:10])
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 6
    for file in files:
        array = np.load(file, allow_pickle=False)
        assert array.dtype == np.float64 and array.shape == (1 + 8,)
    again = TCAV(model, **settings).explain(X[:10])  # a fresh explainer
    assert (again.cavs_trained, again.cavs_reused) == (0, 6)
    assert_allclose(again.cavs, first.cavs)
    assert_allclose(again.cav_accuracy, first.cav_accuracy)
    # A damaged file is retrained, not trusted.
    files[0].write_bytes(b"not an array")
    assert TCAV(model, **settings).explain(X[:10]).cavs_trained == 1


def test_random_examples_none_draws_them_like_x(small):
    model, X, concepts, _ = small
    expl = TCAV(model, layer="layers.0", concepts=concepts, n_random=10,
                random_state=0).explain(X[:50], target=1)
    assert expl.values.shape == (1, 2) and np.all(np.isfinite(expl.p_values))
    # x0 drives class 1 (measured: score 0.80, p = 3e-4); x3 does not
    # (0.44, p = 0.56).
    assert expl.values[0, 0] > 0.7 and expl.significant[0]
    assert expl.values[0, 1] < expl.values[0, 0] and not expl.significant[1]


def test_all_targets_and_regressors(small):
    model, X, concepts, random_examples = small
    tcav = TCAV(model, layer="layers.1", concepts=concepts,
                random_examples=random_examples, n_random=3, random_state=0)
    expl = tcav.explain(X[:30], target="all")
    assert expl.values.shape == (1, 2, 2) and expl.has_outputs_axis
    assert expl.p_values.shape == (2, 2) and expl.scores.shape == (2, 3, 2)
    # P(class 0) = 1 - P(class 1): opposite signs of every directional derivative.
    assert_allclose(expl.scores[..., 0], 1 - expl.scores[..., 1])
    # Default target: each input's predicted class.
    mixed = tcav.explain(X[:30])
    assert mixed.targets is None and len(mixed.sample_targets) == 30
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        regressor = MLPRegressor(hidden_layer_sizes=(8,), max_iter=100,
                                 random_state=0).fit(X, X[:, 0])
    expl = TCAV(regressor, layer="layers.1", concepts=concepts,
                random_examples=random_examples, n_random=3,
                random_state=0).explain(X[:30])
    assert expl.output == "prediction" and expl.values.shape == (1, 2)
    assert expl.values[0, 0] > expl.values[0, 1]


def test_sequence_model_layer_with_tuple_output():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(80, 5, 2))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = RNNClassifier(hidden_size=8, max_iter=20, random_state=0).fit(X, y)
    concepts = {"up": rng.normal(size=(30, 5, 2)) + [1.0, 0.0]}
    settings = dict(concepts=concepts, random_examples=rng.normal(size=(60, 5, 2)),
                    n_random=3, random_state=0)
    # "dropout" sees the pooled state; "encoder" returns (steps, final states).
    expl = TCAV(model, layer="dropout", **settings).explain(X[:20], target=1)
    assert expl.values.shape == (1, 1) and expl.cavs.shape == (1, 3, 8)
    with pytest.raises(ValueError,
                       match="does not depend on the output of layer='encoder'"):
        TCAV(model, layer="encoder", **settings).explain(X[:20], target=1)
    # Step activations have a width per sequence length: one length only.
    mean = fit_quietly(RNNClassifier(hidden_size=8, pooling="mean", max_iter=5,
                                     random_state=0), X, y)
    expl = TCAV(mean, layer="encoder", **settings).explain(X[:20])
    assert expl.cavs.shape == (1, 3, 40)
    with pytest.raises(ValueError, match="40 values per sample for some inputs and 32"):
        TCAV(mean, layer="encoder", **settings).explain(X[:20, :4])
    # Ragged input runs the LSTM on packed sequences.
    ragged = [x[:3] for x in X[:10]] + [X[10]]
    with pytest.raises(TypeError, match="tuple starting with PackedSequence, not a"):
        TCAV(model, layer="encoder.layers.0", **settings).explain(ragged, target=1)


def test_errors_name_the_problem_and_the_fix(small):
    model, X, concepts, random_examples = small
    settings = dict(concepts=concepts, random_examples=random_examples, n_random=2)
    with pytest.raises(ValueError,
                       match=r"layer='layers\.7'.*'layers\.0', 'layers\.1'"):
        TCAV(model, layer="layers.7", **settings).explain(X[:5])
    with pytest.raises(InvalidParameterError, match="n_random"):
        TCAV(model, layer="layers.1", concepts=concepts, n_random=1).explain(X[:5])
    with pytest.raises(InvalidParameterError, match="classifier"):
        TCAV(model, layer="layers.1", classifier="svm", **settings).explain(X[:5])
    with pytest.raises(ValueError, match="concepts is empty"):
        TCAV(model, layer="layers.1", concepts={}, n_random=2).explain(X[:5])
    with pytest.raises(ValueError, match="at least 2"):
        TCAV(model, layer="layers.1", concepts={"one": X[:1]},
             n_random=2).explain(X[:5])
    with pytest.raises(TypeError, match="must be strings"):
        TCAV(model, layer="layers.1", concepts={0: X[:5]}, n_random=2).explain(X[:5])
    with pytest.raises(ValueError, match="at least 4"):
        TCAV(model, layer="layers.1", concepts=concepts, random_examples=X[:3],
             n_random=2).explain(X[:5])
    with pytest.raises(ValueError, match="n_examples=100 is more"):
        TCAV(model, layer="layers.1", n_examples=100, **settings).explain(X[:5])
    bad = dict(concepts, x0=np.where(np.eye(40, 4) > 0, np.nan, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        TCAV(model, layer="layers.1", concepts=bad, n_random=2).explain(X[:5])
    with pytest.raises(ValueError, match="features"):
        TCAV(model, layer="layers.1", concepts={"wide": np.ones((5, 7))},
             n_random=2).explain(X[:5])
    with pytest.raises(TypeError, match="KernelShapExplainer"):
        TCAV(SGDClassifier().fit(X, X[:, 0] > 0), layer="x", **settings).explain(X[:5])


def test_verbose_shows_progress(small, capsys):
    model, X, concepts, random_examples = small
    TCAV(model, layer="layers.1", concepts=concepts, random_examples=random_examples,
         n_random=2, random_state=0, verbose=1).explain(X[:5])
    assert "TCAV" in capsys.readouterr().err
