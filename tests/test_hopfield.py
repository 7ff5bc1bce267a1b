"""HopfieldNetwork: binary capacity (~0.14 N), modern continuous recall, the contract."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

import sklears_neural
from sklears_neural.models.hopfield import HopfieldNetwork

N = 100


def _patterns(n_patterns, seed, n_units=N):
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_patterns, n_units))


def _flip(X, n_bits, seed):
    """A copy of X with ``n_bits`` random units of each row flipped."""
    rng = np.random.default_rng(seed + 1000)
    Q = X.copy()
    for row in Q:
        row[rng.choice(X.shape[1], n_bits, replace=False)] *= -1
    return Q


def _recall_rate(n_patterns, seeds, update="synchronous"):
    """Fraction of patterns recalled exactly from 10% flipped bits, over seeds."""
    rates = []
    for seed in seeds:
        X = _patterns(n_patterns, seed)
        net = HopfieldNetwork(update=update, random_state=seed).fit(X)
        recalled = net.predict(_flip(X, N // 10, seed))
        rates.append(np.mean(np.all(recalled == X, axis=1)))
    return float(np.mean(rates))


# -- scikit-learn's checks -----------------------------------------------------------

CHECKED = [
    HopfieldNetwork(),
    HopfieldNetwork(update="asynchronous", random_state=0),
    HopfieldNetwork("continuous", beta=2.0),
]


@parametrize_with_checks(CHECKED, xfail_strict=True)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", CHECKED, ids=repr)
def test_param_validation(estimator):
    check_param_validation(type(estimator).__name__, estimator)


# -- the classic binary network: capacity ----------------------------------------------


@pytest.mark.parametrize("update", ["synchronous", "asynchronous"])
def test_binary_capacity_curve(update):
    # N = 100 units, random ±1 patterns, queries with 10 bits flipped; a
    # pattern counts as recalled when every unit comes back. Measured over
    # seeds 0-9 (synchronous / asynchronous): P=5 1.00 / 1.00, P=10 0.96 /
    # 0.96, P=14 0.74 / 0.73, P=20 0.30 / 0.31, P=30 0.00 / 0.01. The
    # ~0.14 N capacity shows: nearly all recalled at 0.05-0.1 N, most lost
    # at 0.2 N, none at 0.3 N.
    seeds = range(10)
    curve = {p: _recall_rate(p, seeds, update) for p in (5, 10, 14, 20, 30)}
    assert curve[5] >= 0.99, curve
    assert curve[10] >= 0.85, curve
    assert curve[20] <= 0.45, curve
    assert curve[30] <= 0.05, curve
    rates = [curve[p] for p in sorted(curve)]
    assert all(a >= b for a, b in zip(rates, rates[1:])), curve


def test_binary_stored_patterns_are_fixed_points_below_capacity():
    X = _patterns(5, 0)
    net = HopfieldNetwork().fit(X)
    np.testing.assert_array_equal(net.predict(X), X)
    # Weights: Hebbian outer products / N, symmetric, zero diagonal.
    expected = X.T @ X / N
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(net.weights_, expected)
    # Stored patterns sit at energy minima: their score beats the queries'.
    noisy = _flip(X, 20, 0)
    assert np.all(net.score_samples(X) > net.score_samples(noisy))


def test_binary_01_coding_is_kept():
    X = _patterns(6, 1)
    X01 = (X + 1) / 2
    net = HopfieldNetwork().fit(X01)
    np.testing.assert_array_equal(net.states_, [0, 1])
    query = (_flip(X, 10, 1) + 1) / 2
    recalled = net.predict(query)
    assert set(np.unique(recalled)) <= {0.0, 1.0}
    np.testing.assert_array_equal(recalled, X01)
    # The same memory as the ±1 coding.
    pm = HopfieldNetwork().fit(X)
    np.testing.assert_array_equal(pm.states_, [-1, 1])
    np.testing.assert_array_equal(pm.weights_, net.weights_)
    np.testing.assert_array_equal(pm.predict(_flip(X, 10, 1)), X)


def test_asynchronous_recall_is_seeded_and_row_independent():
    X = _patterns(12, 3)
    Q = _flip(X, 15, 3)
    net = HopfieldNetwork(update="asynchronous", random_state=0).fit(X)
    first = net.predict(Q)
    np.testing.assert_array_equal(net.predict(Q), first)
    np.testing.assert_array_equal(net.predict(Q[:4]), first[:4])
    np.testing.assert_array_equal(net.predict(Q[::-1]), first[::-1])


# -- the modern continuous network ----------------------------------------------------


@pytest.mark.parametrize("n_patterns", [N, 2 * N])
def test_continuous_recall_far_above_classic_capacity(n_patterns):
    # P = N and 2N patterns (7x and 14x the binary network's ~0.14 N): all
    # recalled from 20% flipped bits and from half-erased queries (zeros).
    X = _patterns(n_patterns, 4)
    net = HopfieldNetwork("continuous", beta=0.5).fit(X)
    recalled = net.predict(_flip(X, 20, 4))
    np.testing.assert_allclose(recalled, X, atol=1e-6)
    partial = X.copy()
    partial[:, N // 2:] = 0
    np.testing.assert_allclose(net.predict(partial), X, atol=1e-6)
    # The binary network fails at this load.
    binary = HopfieldNetwork().fit(X).predict(_flip(X, 20, 4))
    assert np.mean(np.all(binary == X, axis=1)) < 0.05


def test_continuous_real_patterns_and_energy():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 32))
    net = HopfieldNetwork("continuous", beta=4.0).fit(X)
    query = X + 0.3 * rng.normal(size=X.shape)
    recalled = net.predict(query)
    # Measured: 297 of 300 land on their pattern (3 with beta=1). A real
    # pattern of small norm inside the others' hull is no fixed point.
    hit = np.argmin(((recalled[:, None] - X[None]) ** 2).sum(-1), axis=1) == np.arange(300)
    assert np.mean(hit) >= 0.98
    np.testing.assert_allclose(recalled[hit], X[hit], atol=1e-3)
    # The update descends the energy: the recalled points score higher.
    assert np.all(net.score_samples(recalled) >= net.score_samples(query) - 1e-9)
    # One update step of Ramsauer et al.: X^T softmax(beta X xi).
    one = HopfieldNetwork("continuous", beta=4.0, max_iter=1).fit(X).predict(query[:3])
    logits = 4.0 * query[:3] @ X.T
    weights = np.exp(logits - logits.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    np.testing.assert_allclose(one, weights @ X, rtol=1e-10)


# -- persistence and errors ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_pickle_and_save_load_are_exact(kind, tmp_path):
    X = _patterns(8, 6)
    Q = _flip(X, 12, 6)
    net = HopfieldNetwork(kind, update="asynchronous", random_state=0).fit(X)
    for loaded in (pickle.loads(pickle.dumps(net)), None):
        if loaded is None:
            net.save(tmp_path / "hopfield")
            loaded = sklears_neural.load(tmp_path / "hopfield")
        assert loaded.get_params() == net.get_params()
        np.testing.assert_array_equal(loaded.predict(Q), net.predict(Q))
        np.testing.assert_array_equal(loaded.score_samples(Q), net.score_samples(Q))


def test_errors():
    X = _patterns(4, 7)
    with pytest.raises(NotFittedError):
        HopfieldNetwork().predict(X)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        HopfieldNetwork().fit(bad)
    net = HopfieldNetwork().fit(X)
    with pytest.raises(ValueError, match="features"):
        net.predict(X[:, :10])
    with pytest.raises(ValueError, match="kind"):
        HopfieldNetwork(kind="ternary").fit(X)
    with pytest.raises(ValueError, match="update"):
        HopfieldNetwork(update="sometimes").fit(X)
    with pytest.raises(ValueError, match="beta"):
        HopfieldNetwork("continuous", beta=0).fit(X)
    assert clone(net).get_params() == net.get_params()
