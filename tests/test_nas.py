"""Tests of the weight-sharing searchers: DARTSSearch, OnceForAllNetwork,
ENASSearch, and the supernet they share (sklears_neural.nn.supernet).

Default tests run tiny searches (a few hundred digits, a few epochs); the
comparisons with the default MLPs on the full digits and Friedman #1 sets
are marked slow (their numbers are in doc/nas.md).
"""

import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.datasets import load_digits, make_friedman1
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from sklears_neural import (
    CNNClassifier,
    CNNRegressor,
    MLPClassifier,
    MLPRegressor,
    RNNClassifier,
)
from sklears_neural.core._compat import InvalidParameterError
from sklears_neural.nn.supernet import (
    MixedConv,
    MixedLayer,
    SuperCNN,
    SuperMLP,
    n_parameters,
)
from sklears_neural.search.darts import DARTSSearch, _most_probable, _second_order_grads
from sklears_neural.search.enas import (
    ArchitectureController,
    ENASSearch,
    reinforce_step,
)
from sklears_neural.search.once_for_all import OnceForAllNetwork

X_DIGITS, Y_DIGITS = load_digits(return_X_y=True)
X_DIGITS = X_DIGITS / 16.0
X_SMALL, Y_SMALL = X_DIGITS[:400], Y_DIGITS[:400]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _tiny_darts(**params):
    defaults = {"widths": (16, 32), "max_layers": 2, "activations": ("relu", "tanh"),
                "n_epochs": 3, "batch_size": 32, "learning_rate": 0.01, "cv": 2,
                "include_estimator": False, "random_state": 0}
    return DARTSSearch(MLPClassifier(max_iter=30, learning_rate_init=0.01),
                       **{**defaults, **params})


# -- the supernet ---------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("width_index", [0, 1, 2])
def test_mixed_layer_with_one_hot_weights_is_the_chosen_operation(activation, width_index):
    widths = [4, 8, 16]
    torch.manual_seed(0)
    layer = MixedLayer(16, 16)
    net = SuperMLP(16, 3, 2, 16, ["relu", "tanh", "gelu"])
    acts = list(net.activations)
    x = torch.randn(32, 16)
    masks = torch.zeros(3, 16)
    for row, w in enumerate(widths):
        masks[row, :w] = 1
    width_weights = torch.nn.functional.one_hot(torch.tensor(width_index), 4).float()
    act_weights = torch.nn.functional.one_hot(
        torch.tensor(net.activation_names.index(activation)), 3).float()
    mixed = layer.forward_mixed(x, width_weights[:3], masks, act_weights, acts,
                                skip_weight=width_weights[3])
    width = widths[width_index]
    expected = layer.operation(x, width, net.activation(activation))
    assert torch.equal(mixed, expected)
    # The masked operation is the sliced layer of the discrete networks.
    sliced = layer.forward_discrete(x, width, net.activation(activation))
    assert_allclose(expected[:, :width].detach().numpy(), sliced.detach().numpy(),
                    rtol=1e-6, atol=1e-6)
    assert not expected[:, width:].any()
    # Negative control: a mixture is none of the operations.
    soft = layer.forward_mixed(x, torch.full((3,), 0.3), masks, act_weights, acts,
                               skip_weight=torch.tensor(0.1))
    assert not torch.allclose(soft, expected, atol=1e-3)


def test_mixed_layer_one_hot_skip_is_the_identity():
    torch.manual_seed(0)
    layer = MixedLayer(8, 8)
    x = torch.randn(5, 8)
    masks = torch.ones(1, 8)
    out = layer.forward_mixed(x, torch.zeros(1), masks, torch.ones(1), [torch.nn.ReLU()],
                              skip_weight=torch.tensor(1.0))
    assert torch.equal(out, x)


def test_supernet_one_hot_mixture_matches_the_discrete_network():
    torch.manual_seed(0)
    net = SuperMLP(10, 3, 3, 16, ["relu", "tanh"])
    x = torch.randn(20, 10)
    widths = [4, 8, 16]
    # layer 0 width 8, layer 1 skipped, layer 2 width 4; tanh
    one_hot = [torch.tensor([0.0, 1, 0]), torch.tensor([0.0, 0, 0, 1]),
               torch.tensor([1.0, 0, 0, 0])]
    mixed = net.forward_mixed(x, one_hot, torch.tensor([0.0, 1.0]), widths)
    discrete = net.forward_discrete(x, [8, None, 4], "tanh")
    assert_allclose(mixed.detach().numpy(), discrete.detach().numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel_index", [0, 1])
@pytest.mark.parametrize("channels", [4, 8])
def test_mixed_conv_with_one_hot_weights_is_the_chosen_operation(kernel_index, channels):
    torch.manual_seed(0)
    net = SuperCNN([1, 8, 8], 3, 2, 8, [3, 5])
    layer = net.layers[1]
    x = torch.randn(6, 8, 8, 8)
    masks = torch.zeros(2, 8)
    masks[0, :4] = 1
    masks[1, :8] = 1
    channel_weights = torch.tensor([1.0, 0, 0]) if channels == 4 else torch.tensor([0, 1.0, 0])
    kernel_weights = torch.nn.functional.one_hot(torch.tensor(kernel_index), 2).float()
    mixed = layer.forward_mixed(x, channel_weights[:2], masks, kernel_weights, net.act,
                                skip_weight=channel_weights[2])
    expected = layer.operation(x, channels, kernel_index, net.act)
    assert torch.equal(mixed, expected)
    sliced = layer.forward_discrete(x, channels, kernel_index, net.act)
    assert_allclose(expected[:, :channels].detach().numpy(), sliced.detach().numpy(),
                    rtol=1e-5, atol=1e-6)
    # One-hot skip is the identity.
    skip = layer.forward_mixed(x, torch.zeros(2), masks, kernel_weights, net.act,
                               skip_weight=torch.tensor(1.0))
    assert torch.equal(skip, x)


def test_supernet_refuses_activations_with_parameters():
    with pytest.raises(ValueError, match="prelu"):
        SuperMLP(4, 2, 1, 8, ["relu", "prelu"])


@pytest.mark.parametrize("searcher", [DARTSSearch, ENASSearch, OnceForAllNetwork])
def test_searchers_name_the_families_they_take(searcher):
    for est in (LogisticRegression(), RNNClassifier()):
        families = "MLPClassifier, MLPRegressor, CNNClassifier, CNNRegressor"
        with pytest.raises(ValueError, match=f"{families}; got {type(est).__name__}"):
            searcher(est).fit(X_SMALL[:50], Y_SMALL[:50])


def test_invalid_parameters_are_refused():
    with pytest.raises(InvalidParameterError, match="order"):
        _tiny_darts(order="third").fit(X_SMALL, Y_SMALL)
    with pytest.raises(ValueError, match="widths must be a non-empty list"):
        _tiny_darts(widths=()).fit(X_SMALL, Y_SMALL)
    with pytest.raises(ValueError, match="residual"):
        OnceForAllNetwork(MLPClassifier(residual="add")).fit(X_SMALL, Y_SMALL)
    with pytest.raises(InvalidParameterError, match="include_estimator"):
        ENASSearch(MLPClassifier(), include_estimator="yes").fit(X_SMALL, Y_SMALL)
    with pytest.raises(ValueError, match="kernel_sizes must be a non-empty list"):
        OnceForAllNetwork(CNNClassifier(input_shape=(1, 8, 8)), kernel_sizes=()).fit(
            X_SMALL, Y_SMALL)


# -- DARTS --------------------------------------------------------------------------


def test_darts_second_order_gradient_matches_exact_unrolled_gradient():
    # The finite-difference Hessian-vector product against autograd through
    # the virtual step, in float64. Smooth activations: across ReLU's kink
    # the finite difference is off by ~1% (measured), which says nothing of
    # the code.
    torch.manual_seed(0)
    net = SuperMLP(6, 3, 2, 8, ["tanh", "gelu"]).double()
    widths = [4, 8]
    alphas = [torch.randn(2, dtype=torch.float64, requires_grad=True),
              torch.randn(3, dtype=torch.float64, requires_grad=True),
              torch.randn(2, dtype=torch.float64, requires_grad=True)]
    X = torch.randn(40, 6, dtype=torch.float64)
    y = torch.randint(3, (40,))
    train, valid = torch.arange(20), torch.arange(20, 40)

    def forward(params, inputs):
        return _call(net, params, inputs, alphas, widths)

    def loss_on(index):
        return torch.nn.functional.cross_entropy(
            net.forward_mixed(X[index], [torch.softmax(a, 0) for a in alphas[:2]],
                              torch.softmax(alphas[2], 0), widths), y[index])

    xi = 0.05
    approx = _second_order_grads(net, alphas, loss_on, train, valid, xi)

    params = dict(net.named_parameters())
    names = list(params)
    train_loss = torch.nn.functional.cross_entropy(forward(params, X[train]), y[train])
    grads = torch.autograd.grad(train_loss, [params[n] for n in names], create_graph=True)
    unrolled = {n: params[n] - xi * g for n, g in zip(names, grads)}
    valid_loss = torch.nn.functional.cross_entropy(forward(unrolled, X[valid]), y[valid])
    exact = torch.autograd.grad(valid_loss, alphas)
    first_order = torch.autograd.grad(loss_on(valid), alphas)
    for a, e, f in zip(approx, exact, first_order):
        assert_allclose(a.numpy(), e.numpy(), rtol=1e-4, atol=1e-7)
        # The second-order term is not negligible here (a real test).
        assert not np.allclose(f.numpy(), e.numpy(), rtol=1e-3, atol=1e-6)


def _call(net, params, inputs, alphas, widths):
    """The mixed forward of ``net`` with ``params`` in place of its weights."""
    with _swapped(net, params):
        return net.forward_mixed(inputs, [torch.softmax(a, 0) for a in alphas[:2]],
                                 torch.softmax(alphas[2], 0), widths)


class _swapped:
    """Run ``net`` with other tensors as its parameters (autograd flows to them)."""

    def __init__(self, net, params):
        self.net, self.params = net, params

    def __enter__(self):
        self.saved = {}
        for name, value in self.params.items():
            module_name, _, attr = name.rpartition(".")
            module = self.net.get_submodule(module_name)
            self.saved[name] = module._parameters[attr]
            del module._parameters[attr]
            setattr(module, attr, value)

    def __exit__(self, *exc):
        for name, value in self.saved.items():
            module_name, _, attr = name.rpartition(".")
            module = self.net.get_submodule(module_name)
            delattr(module, attr)
            module._parameters[attr] = value


def test_most_probable_architectures_match_brute_force():
    import itertools

    torch.manual_seed(0)
    mixtures = [torch.log_softmax(torch.randn(n), 0) for n in (3, 4, 2)]
    brute = sorted(itertools.product(range(3), range(4), range(2)),
                   key=lambda t: -sum(float(m[i]) for m, i in zip(mixtures, t)))
    assert _most_probable(mixtures, 5) == [list(t) for t in brute[:5]]


def test_darts_is_reproducible_and_returns_a_fitted_mlp():
    first = _tiny_darts().fit(X_SMALL, Y_SMALL)
    again = _tiny_darts().fit(X_SMALL, Y_SMALL)
    assert first.best_architecture_ == again.best_architecture_
    assert first.architecture_weights_ == again.architecture_weights_
    assert_allclose(first.cv_results_["mean_test_score"], again.cv_results_["mean_test_score"])
    assert_allclose(first.predict_proba(X_DIGITS[400:500]),
                    again.predict_proba(X_DIGITS[400:500]))
    best = first.best_estimator_
    assert isinstance(best, MLPClassifier)
    assert best.hidden_layer_sizes == first.best_params_["hidden_layer_sizes"]
    assert set(best.hidden_layer_sizes) <= {16, 32} and 1 <= len(best.hidden_layer_sizes) <= 2
    assert len(first.architecture_weights_) == 3
    for record in first.architecture_weights_:
        assert_allclose([sum(p) for p in record["layers"]], 1, rtol=1e-6)
        assert len(record["layers"][0]) == 2 and len(record["layers"][1]) == 3  # + skip
    assert np.isfinite(first.cv_results_["supernet_score"]).all()
    # The fitted result pickles like any estimator.
    restored = pickle.loads(pickle.dumps(first))
    assert_allclose(restored.predict_proba(X_SMALL[:20]), first.predict_proba(X_SMALL[:20]))


def test_darts_cross_validates_the_estimator_own_architecture():
    search = _tiny_darts(n_epochs=1, n_candidates=1, include_estimator=True).fit(
        X_SMALL, Y_SMALL)
    results = search.cv_results_
    assert list(results["source"]) == ["search", "estimator"]
    assert results["params"][1] == {"hidden_layer_sizes": (100,), "activation": "relu"}
    assert np.isnan(results["supernet_score"][1])
    assert np.isfinite(results["supernet_score"][0])
    # The refit model is the better of the two in cross-validation.
    best = int(np.argmax(results["mean_test_score"]))
    assert search.best_params_ == results["params"][best]
    assert search.best_estimator_.hidden_layer_sizes == \
        results["params"][best]["hidden_layer_sizes"]


def test_darts_second_order_moves_alpha_differently():
    first = _tiny_darts(n_epochs=2, refit=False).fit(X_SMALL, Y_SMALL)
    second = _tiny_darts(n_epochs=2, refit=False, order="second",
                         unrolled_learning_rate=0.5).fit(X_SMALL, Y_SMALL)
    a = np.concatenate([np.ravel(p) for p in first.architecture_weights_[-1]["layers"]])
    b = np.concatenate([np.ravel(p) for p in second.architecture_weights_[-1]["layers"]])
    assert not np.allclose(a, b, atol=1e-6)
    # The mixed supernet learned in both (10 classes: chance is 0.1).
    assert first.search_history_[-1]["valid_score"] > 0.6
    assert second.search_history_[-1]["valid_score"] > 0.6


def test_darts_prefers_the_useful_layer_over_skip():
    # A target only a nonlinear map of the features fits: alpha learns to
    # give the widest choices more weight than the narrow one.
    search = DARTSSearch(MLPClassifier(max_iter=40, learning_rate_init=0.01),
                         widths=(2, 32), max_layers=1,
                         activations=("relu", "tanh"), n_epochs=15, cv=2,
                         random_state=0).fit(X_DIGITS[:600], Y_DIGITS[:600])
    layer = search.architecture_weights_[-1]["layers"][0]
    assert layer[1] > layer[0]
    assert search.best_params_["hidden_layer_sizes"] == (32,)
    X_test, y_test = X_DIGITS[1200:], Y_DIGITS[1200:]
    assert search.score(X_test, y_test) > 0.85


def test_darts_regression():
    X, y = make_friedman1(n_samples=400, noise=0.5, random_state=0)
    search = DARTSSearch(MLPRegressor(max_iter=100, learning_rate_init=0.01, batch_size=32),
                         widths=(16, 32), activations=("relu", "tanh"), n_epochs=20, cv=2,
                         batch_size=32, learning_rate=0.01,
                         random_state=0).fit(X[:300], y[:300])
    assert isinstance(search.best_estimator_, MLPRegressor)
    assert search.score(X[300:], y[300:]) > 0.7
    assert search.search_history_[-1]["valid_score"] > 0.3


def test_darts_searches_cnn_kernel_sizes_and_channels():
    search = DARTSSearch(CNNClassifier(input_shape=(1, 8, 8), max_iter=5), widths=(8, 16),
                         kernel_sizes=(1, 5), n_epochs=12, learning_rate=0.01, batch_size=32,
                         cv=2, include_estimator=False,
                         random_state=0).fit(X_SMALL, Y_SMALL)
    layers = search.best_params_["layers"]
    assert layers[-1] == "gap" and 2 <= len(layers) <= 3
    assert all(spec.split("-")[0] in ("conv8", "conv16") for spec in layers[:-1])
    assert isinstance(search.best_estimator_, CNNClassifier)
    assert search.best_estimator_.layers == layers
    # On 8x8 digits a 5-wide kernel sees more of a stroke than a 1-wide
    # one: alpha prefers it in every layer (measured 0.56 vs 0.16 at 20 epochs).
    for kernels in search.architecture_weights_[-1]["kernels"]:
        assert kernels[1] > kernels[0]
    assert search.search_history_[-1]["valid_score"] > 0.3  # chance 0.1; measured 0.44


# -- once-for-all ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ofa():
    return OnceForAllNetwork(MLPClassifier(), widths=(8, 16, 32), depths=(1, 2),
                             n_epochs_full=10, n_epochs_stage=4,
                             random_state=0).fit(X_DIGITS[:600], Y_DIGITS[:600])


def _count(est):
    return sum(p.numel() for p in est.module_.parameters())


def _expected_pick(subnets, budget, n_valid):
    """The one-standard-error rule, written out: within the budget, among the
    subnets at most one standard error below the best validation accuracy,
    the lowest validation loss (then the fewest parameters)."""
    rows = [i for i in range(len(subnets["n_params"]))
            if budget is None or subnets["n_params"][i] <= budget]
    best = max(subnets["valid_score"][i] for i in rows)
    margin = (best * (1 - best) / n_valid) ** 0.5
    near = [i for i in rows if subnets["valid_score"][i] >= best - margin]
    return min(near, key=lambda i: (subnets["valid_loss"][i], subnets["n_params"][i]))


@pytest.mark.parametrize("budget", [700, 1000, 2000, 5000, None])
def test_ofa_extract_meets_the_parameter_budget(ofa, budget):
    est = ofa.extract(max_params=budget)
    assert isinstance(est, MLPClassifier)
    assert _count(est) == n_parameters(64, est.hidden_layer_sizes, 10)
    subnets = ofa.subnets_
    row = [tuple(s) == est.hidden_layer_sizes for s in subnets["hidden_layer_sizes"]]
    assert np.flatnonzero(row)[0] == _expected_pick(subnets, budget, n_valid=120)
    if budget is not None:
        assert _count(est) <= budget
        within = subnets["n_params"] <= budget
        # Within one standard error (120 validation rows) of the best there.
        best = subnets["valid_score"][within].max()
        margin = (best * (1 - best) / 120) ** 0.5
        assert subnets["valid_score"][row].max() >= best - margin


def test_ofa_ranking_breaks_near_ties_by_validation_loss(ofa):
    subnets = ofa.subnets_
    assert np.isfinite(subnets["valid_loss"]).all()
    assert (subnets["valid_loss"] > 0).all()
    # The best subnet by accuracy alone (the former ranking) is among the
    # near ties; whenever another one of them has a lower loss, that wins.
    by_accuracy = np.lexsort((subnets["n_params"], -subnets["valid_score"]))[0]
    pick = _expected_pick(subnets, None, n_valid=120)
    assert subnets["valid_loss"][pick] <= subnets["valid_loss"][by_accuracy]
    assert tuple(subnets["hidden_layer_sizes"][pick]) == \
        ofa.best_estimator_.hidden_layer_sizes


@pytest.mark.parametrize("sizes", [(8,), (32,), (16, 8), (32, 32)])
def test_ofa_extracted_network_is_the_sliced_supernet(ofa, sizes):
    est = ofa.extract(hidden_layer_sizes=sizes)
    X = torch.as_tensor(X_DIGITS[600:800], dtype=torch.float32)
    with torch.no_grad():
        sliced = ofa.supernet_.forward_discrete(X, list(sizes), "relu")
        module = est.module_(X)
    assert torch.equal(module, sliced)
    proba = torch.softmax(sliced.double(), 1).numpy()
    assert_allclose(est.predict_proba(X_DIGITS[600:800]), proba, rtol=1e-5, atol=1e-6)
    # Not retrained: no training record; and the parameters are the slice.
    assert est.n_iter_ == 0 and est.loss_curve_ == []
    assert torch.equal(est.module_.linears[0].weight,
                       ofa.supernet_.hidden[0].linear.weight[: sizes[0]])


def test_ofa_subnets_learned_and_extraction_is_usable(ofa):
    X_test, y_test = X_DIGITS[1200:], Y_DIGITS[1200:]
    assert ofa.history_[-1]["valid_score_largest"] > 0.85
    assert ofa.history_[-1]["valid_score_smallest"] > 0.6
    assert ofa.score(X_test, y_test) > 0.85
    small = ofa.extract(max_params=700)
    assert small.score(X_test, y_test) > 0.5  # chance is 0.1; measured 0.58
    # An extracted estimator is an ordinary one: it pickles and trains on.
    restored = pickle.loads(pickle.dumps(small))
    assert_allclose(restored.predict_proba(X_test[:10]), small.predict_proba(X_test[:10]))
    small.set_params(warm_start=True, max_iter=5).fit(X_DIGITS[:600], Y_DIGITS[:600])
    assert small.n_iter_ == 5


def test_ofa_fine_tune_continues_the_extracted_subnet_with_its_own_fit(ofa):
    X_train, y_train = X_DIGITS[:600], Y_DIGITS[:600]
    plain = ofa.extract(max_params=1000)
    tuned = ofa.extract(max_params=1000, fine_tune=3, X=X_train, y=y_train)
    # Same subnet, now trained 3 more epochs on all 600 rows (the 120
    # validation rows included) by the estimator's own warm-started fit.
    assert tuned.hidden_layer_sizes == plain.hidden_layer_sizes
    assert plain.n_iter_ == 0 and tuned.n_iter_ == 3
    by_hand = ofa.extract(max_params=1000).set_params(warm_start=True, max_iter=3)
    by_hand.fit(X_train, y_train)
    X_test = X_DIGITS[1200:1300]
    assert np.array_equal(tuned.predict_proba(X_test), by_hand.predict_proba(X_test))
    assert not np.allclose(tuned.predict_proba(X_test), plain.predict_proba(X_test))
    # Its parameters are set back to the estimator's; the supernet is untouched.
    assert tuned.warm_start is False and tuned.max_iter == 200
    again = ofa.extract(max_params=1000)
    assert np.array_equal(again.predict_proba(X_test), plain.predict_proba(X_test))
    with pytest.raises(ValueError, match="fine_tune must be an int >= 0"):
        ofa.extract(fine_tune=-1)
    with pytest.raises(ValueError, match="fine_tune must be an int >= 0"):
        ofa.extract(fine_tune=2.5)
    # The searcher keeps no copy of the training data: fine-tuning asks for it.
    with pytest.raises(ValueError, match="pass the training data"):
        ofa.extract(fine_tune=3)
    records = ofa.accuracy_vs_size(X_train, y_train, X_DIGITS[1200:], Y_DIGITS[1200:],
                                   hidden_layer_sizes=[(8,)], fine_tune=3)
    assert records["fine_tuned_score"][0] > 0.4


def test_ofa_fine_tune_parameter_refits_best_estimator():
    params = {"widths": (8, 16), "depths": (1,), "n_epochs_full": 2,
              "n_epochs_stage": 1, "random_state": 0}
    X_train, y_train = X_DIGITS[:300], Y_DIGITS[:300]
    plain = OnceForAllNetwork(MLPClassifier(), **params).fit(X_train, y_train)
    tuned = OnceForAllNetwork(MLPClassifier(), fine_tune=4, **params).fit(
        X_train, y_train)
    assert tuned.best_estimator_.hidden_layer_sizes == \
        plain.best_estimator_.hidden_layer_sizes
    assert plain.best_estimator_.n_iter_ == 0 and tuned.best_estimator_.n_iter_ == 4
    # extract() does not fine-tune unless asked: it is the plain slice.
    X_test = X_DIGITS[1200:1300]
    assert np.array_equal(tuned.extract().predict_proba(X_test),
                          plain.best_estimator_.predict_proba(X_test))
    with pytest.raises(InvalidParameterError, match="fine_tune"):
        OnceForAllNetwork(MLPClassifier(), fine_tune=-1).fit(X_train, y_train)


def test_ofa_budget_errors_name_the_fix(ofa):
    with pytest.raises(ValueError, match="smallest has 610. Raise max_params"):
        ofa.extract(max_params=100)
    with pytest.raises(ValueError, match="Raise max_latency"):
        ofa.extract(max_latency=0.0)
    with pytest.raises(ValueError, match="is not a subnet"):
        ofa.extract(hidden_layer_sizes=(12,))
    assert ofa.extract(max_latency=1e6).hidden_layer_sizes == \
        ofa.best_estimator_.hidden_layer_sizes


def test_ofa_is_reproducible(ofa):
    again = OnceForAllNetwork(MLPClassifier(), widths=(8, 16, 32), depths=(1, 2),
                              n_epochs_full=10, n_epochs_stage=4,
                              random_state=0).fit(X_DIGITS[:600], Y_DIGITS[:600])
    assert_allclose(again.subnets_["valid_score"], ofa.subnets_["valid_score"])
    assert again.history_ == ofa.history_


def test_ofa_accuracy_vs_size_records(ofa):
    records = ofa.accuracy_vs_size(X_DIGITS[:600], Y_DIGITS[:600], X_DIGITS[1200:],
                                   Y_DIGITS[1200:], hidden_layer_sizes=[(8,), (32,)])
    assert list(records["n_params"]) == [n_parameters(64, (8,), 10),
                                         n_parameters(64, (32,), 10)]
    # Chance is 0.1; the 8-unit network alone (200 epochs) reached 0.58.
    assert (records["extracted_score"] > 0.4).all()
    assert (records["standalone_score"] > 0.4).all()


# -- once-for-all on CNNs ----------------------------------------------------------


def test_elastic_kernel_is_the_transformed_centre_of_the_largest():
    torch.manual_seed(0)
    layer = MixedConv(2, 3, 6, [3, 5, 7], elastic_kernel=True)
    assert len(layer.convs) == 1 and layer.convs[0].weight.shape == (6, 3, 7, 7)
    full = layer.convs[0].weight
    # Identity transformations: a smaller kernel is the plain centre crop.
    weight, bias = layer.kernel_weight(0)
    assert torch.equal(weight, full[:, :, 2:5, 2:5]) and bias is layer.convs[0].bias
    # Learned ones: 7 -> 5 by the 25x25 matrix, then 5 -> 3 by the 9x9 one.
    with torch.no_grad():
        for matrix in layer.transforms:
            matrix.add_(0.1 * torch.randn_like(matrix))
    five = full[:, :, 1:6, 1:6].reshape(6, 3, 25) @ layer.transforms[1]
    five = five.reshape(6, 3, 5, 5)
    three = five[:, :, 1:4, 1:4].reshape(6, 3, 9) @ layer.transforms[0]
    three = three.reshape(6, 3, 3, 3)
    for index, expected in [(1, five), (0, three)]:
        assert_allclose(layer.kernel_weight(index)[0].detach(), expected.detach(),
                        rtol=1e-6, atol=1e-7)
    assert torch.equal(layer.kernel_weight(2)[0], full)
    # The sliced operation is that convolution, and it trains the matrices.
    x = torch.randn(4, 2, 8, 8)
    out = layer.forward_discrete(x, 4, 0, torch.relu)
    conv = torch.nn.functional.conv2d(x, three[:4, :2], bias[:4], padding=1)
    expected = torch.relu(conv)
    assert_allclose(out.detach(), expected.detach(), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert layer.transforms[0].grad.abs().sum() > 0
    assert layer.transforms[1].grad.abs().sum() > 0
    # Negative control: without elastic kernels every size has its own weights.
    separate = MixedConv(2, 3, 6, [3, 5, 7])
    assert [c.weight.shape[-1] for c in separate.convs] == [3, 5, 7]
    assert len(separate.transforms) == 0


X_IMAGES = X_DIGITS.reshape(-1, 1, 8, 8)


@pytest.fixture(scope="module")
def ofa_cnn():
    return OnceForAllNetwork(CNNClassifier(), widths=(8, 16, 32), depths=(1, 2),
                             kernel_sizes=(3, 5), n_epochs_full=10, n_epochs_stage=4,
                             learning_rate=0.01, random_state=0).fit(X_IMAGES[:600],
                                                                     Y_DIGITS[:600])


def test_ofa_cnn_trains_progressive_shrinking_stages(ofa_cnn):
    # Largest (1 stage), elastic kernel (1), depth (1), width (2): 10 + 4 x 4 epochs.
    assert [h["stage"] for h in ofa_cnn.history_] == [0] * 10 + [1] * 4 + [2] * 4 + \
        [3] * 4 + [4] * 4
    # One shared 5x5 kernel per layer.
    assert len(ofa_cnn.supernet_.layers[0].convs) == 1
    assert ofa_cnn.subnets_["layers"][0] == ["conv8-k3-nobn", "gap"]
    # 1 layer: 3 widths x 2 kernels; 2 layers: 6 x 6.
    assert len(ofa_cnn.subnets_["layers"]) == 6 + 36


@pytest.mark.parametrize("budget", [1000, 3000, None])
def test_ofa_cnn_extracts_a_fitted_cnn_within_the_budget(ofa_cnn, budget, tmp_path):
    import sklears_neural

    est = ofa_cnn.extract(max_params=budget)
    assert isinstance(est, CNNClassifier)
    n_params = _count(est)
    row = [s == est.layers for s in ofa_cnn.subnets_["layers"]].index(True)
    assert n_params == ofa_cnn.subnets_["n_params"][row]
    # The ranking of the MLPs (one-standard-error rule; 120 validation rows).
    assert row == _expected_pick(ofa_cnn.subnets_, budget, n_valid=120)
    if budget is not None:
        assert n_params <= budget
    assert est.n_iter_ == 0 and est.layers[-1] == "gap"
    X_test = X_IMAGES[1200:1300]
    proba = est.predict_proba(X_test)
    assert est.predict(X_test).shape == (100,)
    # Exact round trips: pickle, and save/load (no pickle).
    assert np.array_equal(pickle.loads(pickle.dumps(est)).predict_proba(X_test), proba)
    est.save(tmp_path / "subnet")
    loaded = sklears_neural.load(tmp_path / "subnet")
    assert np.array_equal(loaded.predict_proba(X_test), proba)


@pytest.mark.parametrize("layers", [["conv8-k3", "gap"], ["conv32-k5", "conv16-k3"],
                                    ["conv16-k3-nobn", "conv8-k5-nobn", "gap"]])
def test_ofa_cnn_extracted_network_is_the_sliced_supernet(ofa_cnn, layers):
    est = ofa_cnn.extract(layers=layers)
    x = torch.as_tensor(X_IMAGES[600:800], dtype=torch.float32)
    arch = [spec for spec in layers if spec != "gap"]
    channels = [int(spec.split("-")[0][4:]) for spec in arch]
    kernels = [[3, 5].index(int(spec.split("-")[1][1:])) for spec in arch]
    with torch.no_grad():
        sliced = ofa_cnn.supernet_.forward_discrete(x, channels, kernels)
        module = est.module_(x)
    # Mean over the image (supernet) vs adaptive average pooling (ConvNet).
    assert_allclose(module.numpy(), sliced.numpy(), rtol=1e-5, atol=1e-5)
    first = ofa_cnn.supernet_.layers[0].kernel_weight(kernels[0])[0]
    assert torch.equal(est.module_.features[0][0].weight, first[: channels[0]])


def test_ofa_cnn_subnets_reach_their_measured_accuracy(ofa_cnn):
    X_test, y_test = X_IMAGES[1200:], Y_DIGITS[1200:]
    # Measured: the best subnet (2 x conv32-k5) 0.88 on digits 1200-1796;
    # within 3,000 parameters 0.54. Chance is 0.1.
    assert ofa_cnn.score(X_test, y_test) > 0.75
    assert ofa_cnn.extract(max_params=3000).score(X_test, y_test) > 0.45
    assert ofa_cnn.history_[-1]["valid_score_largest"] > 0.75
    with pytest.raises(ValueError, match="is not a subnet"):
        ofa_cnn.extract(layers=["conv12-k3", "gap"])
    with pytest.raises(ValueError, match="name a subnet with layers="):
        ofa_cnn.extract(hidden_layer_sizes=(8,))


def test_ofa_cnn_regressor_extracts_the_sliced_supernet():
    rng = np.random.default_rng(0)
    X = rng.random((200, 2, 6, 6)).astype(np.float32)
    y = X[:, 0].mean(axis=(1, 2)) - X[:, 1, 2:4, 2:4].mean(axis=(1, 2))
    ofa = OnceForAllNetwork(CNNRegressor(), widths=(4, 8), depths=(1, 2),
                            kernel_sizes=(1, 3), n_epochs_full=3, n_epochs_stage=1,
                            random_state=0).fit(X, y)
    est = ofa.extract(layers=["conv8-k3", "conv4-k1"])
    assert isinstance(est, CNNRegressor) and est.predict(X[:5]).shape == (5,)
    with torch.no_grad():
        sliced = ofa.supernet_.forward_discrete(torch.as_tensor(X[:50]), [8, 4], [1, 0])
    assert_allclose(est.predict(X[:50]), sliced[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    # 2 input channels: (2 * 9 + 1) * 8 + (8 * 1 + 1) * 4 + (4 + 1) * 1.
    assert _count(est) == 152 + 36 + 5
    assert ofa.subnets_["n_params"][
        [s == est.layers for s in ofa.subnets_["layers"]].index(True)] == 193


# -- ENAS --------------------------------------------------------------------------


def test_reinforce_step_learns_the_rewarded_architecture():
    generator = torch.Generator().manual_seed(0)
    controller = ArchitectureController([3, 4, 2], hidden_size=16)
    controller.reset_parameters(generator)
    optimizer = torch.optim.Adam(controller.parameters(), lr=0.05)
    target = [2, 1, 0]

    def reward(decisions):
        return float(sum(d == t for d, t in zip(decisions, target))) / 3

    baseline, rewards = None, []
    for _ in range(150):
        value, baseline, _ = reinforce_step(controller, optimizer, reward, baseline, generator,
                                            entropy_weight=1e-3, baseline_decay=0.9)
        rewards.append(value)
    assert controller.sample(greedy=True)[0] == target
    assert np.mean(rewards[-30:]) > 0.9 > np.mean(rewards[:10])
    # Without the reward signal (constant reward) the greedy choice stays random.
    assert np.mean(rewards[:10]) < 0.6


def _tiny_enas(**params):
    defaults = {"widths": (16, 32), "max_layers": 2, "activations": ("relu", "tanh"),
                "n_epochs": 3, "controller_steps": 5, "n_final_samples": 5,
                "n_candidates": 2, "cv": 2, "batch_size": 32, "learning_rate": 0.01,
                "random_state": 0}
    return ENASSearch(MLPClassifier(max_iter=30, learning_rate_init=0.01),
                      **{**defaults, **params})


def test_enas_is_reproducible_and_returns_a_fitted_mlp():
    first = _tiny_enas().fit(X_SMALL, Y_SMALL)
    again = _tiny_enas().fit(X_SMALL, Y_SMALL)
    assert first.best_architecture_ == again.best_architecture_
    assert first.controller_history_ == [
        {**h, "time": g["time"]} for h, g in zip(again.controller_history_,
                                                 first.controller_history_)]
    assert_allclose(first.cv_results_["mean_test_score"], again.cv_results_["mean_test_score"])
    assert isinstance(first.best_estimator_, MLPClassifier)
    # Two found candidates, ranked by their shared-weight score, then the
    # estimator's own architecture.
    assert list(first.cv_results_["source"]) == ["search", "search", "estimator"]
    assert first.cv_results_["params"][2] == {"hidden_layer_sizes": (100,),
                                              "activation": "relu"}
    assert first.cv_results_["supernet_score"][0] >= first.cv_results_["supernet_score"][1]
    assert np.isnan(first.cv_results_["supernet_score"][2])
    # The shared weights learned: rewards are far above chance (0.1).
    assert first.controller_history_[-1]["mean_reward"] > 0.5
    assert first.score(X_DIGITS[1200:], Y_DIGITS[1200:]) > 0.8


def test_enas_searches_cnn_channels_kernels_and_depth():
    search = ENASSearch(CNNClassifier(input_shape=(1, 8, 8), max_iter=2),
                        widths=(16, 32), kernel_sizes=(3, 5), n_epochs=30,
                        controller_steps=5,
                        n_final_samples=5, n_candidates=1, include_estimator=False,
                        batch_size=32, learning_rate=0.01, cv=2,
                        random_state=0).fit(X_SMALL, Y_SMALL)
    layers = search.best_params_["layers"]
    assert layers[-1] == "gap" and 2 <= len(layers) <= 3
    for spec in layers[:-1]:
        head, kernel = spec.split("-")
        assert head in ("conv16", "conv32") and kernel in ("k3", "k5")
    assert isinstance(search.best_estimator_, CNNClassifier)
    assert search.best_estimator_.layers == layers
    assert set(search.controller_history_[-1]["greedy_architecture"]) == {"layers"}
    # Channels or skip, then a kernel size, per layer.
    assert search.controller_.n_choices == [2, 2, 3, 2]
    # The shared weights learned: measured mean reward 0.10 (chance) in the
    # first epochs, 0.89 in the last.
    assert search.controller_history_[0]["mean_reward"] < 0.3
    assert search.controller_history_[-1]["mean_reward"] > 0.6
    assert search.cv_results_["supernet_score"][0] > 0.6


# -- the measured claims (full digits, Friedman #1): doc/nas.md --------------------
#
# The protocol of doc/nas.md: 70/30 splits (stratified for digits) with split
# seeds 0-4 there, 0-2 here; every searcher with its defaults around the
# default estimator (random_state=0), random_state=0; test accuracy or R^2.

SPLITS = (0, 1, 2)


def _split(dataset, seed):
    if dataset == "digits":
        return train_test_split(X_DIGITS, Y_DIGITS, test_size=0.3, random_state=seed,
                                stratify=Y_DIGITS)
    X, y = make_friedman1(n_samples=1000, noise=0.5, random_state=0)
    return train_test_split(X, y, test_size=0.3, random_state=seed)


def _default(dataset):
    return (MLPClassifier if dataset == "digits" else MLPRegressor)(random_state=0)


@pytest.fixture(scope="module")
def default_scores():
    """The default MLP's test score on each split: ``{(dataset, seed): score}``."""
    scores = {}
    for dataset in ("digits", "friedman"):
        for seed in SPLITS:
            X_train, X_test, y_train, y_test = _split(dataset, seed)
            model = _default(dataset).fit(X_train, y_train)
            scores[dataset, seed] = model.score(X_test, y_test)
    return scores


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["digits", "friedman"])
@pytest.mark.parametrize("make", [
    lambda est: DARTSSearch(est, random_state=0),
    lambda est: DARTSSearch(est, order="second", random_state=0),
    lambda est: ENASSearch(est, random_state=0),
], ids=["darts-first", "darts-second", "enas"])
def test_searchers_at_least_match_the_default_mlp(make, dataset, default_scores):
    for seed in SPLITS:
        X_train, X_test, y_train, y_test = _split(dataset, seed)
        search = make(_default(dataset)).fit(X_train, y_train)
        score = search.score(X_test, y_test)
        print(dataset, seed, search.best_params_, score, default_scores[dataset, seed])
        # Measured (doc/nas.md), splits 0-4: digits, DARTS >= the default on
        # every split (+0.0015 on average; the default's own architecture
        # wins the cross-validation on 3 of 5), ENAS equal on every split;
        # Friedman, DARTS +0.06 (second order +0.12), ENAS +0.012.
        assert score >= default_scores[dataset, seed]
        if dataset == "friedman":
            # There a found architecture wins the cross-validation every time.
            assert search.cv_results_["source"][search.best_index_] == "search"


@pytest.mark.slow
def test_ofa_extracts_beyond_the_default_mlp_on_friedman(default_scores):
    for seed in SPLITS:
        X_train, X_test, y_train, y_test = _split("friedman", seed)
        ofa = OnceForAllNetwork(_default("friedman"), random_state=0).fit(
            X_train, y_train)
        score = ofa.score(X_test, y_test)
        print(seed, ofa.best_estimator_.hidden_layer_sizes, score,
              default_scores["friedman", seed])
        # Measured: 0.88-0.93 against the default's 0.76-0.79.
        assert score >= default_scores["friedman", seed] + 0.05


@pytest.mark.slow
def test_ofa_fine_tuned_matches_the_default_mlp_on_digits(default_scores):
    # All five splits of doc/nas.md: on splits 0-2 alone the fine-tuned
    # subnet is 0.0017 below the default on average, on 3-4 above it.
    default, extracted, tuned = [], [], []
    for seed in range(5):
        X_train, X_test, y_train, y_test = _split("digits", seed)
        default.append(default_scores["digits", seed] if seed in SPLITS else
                       _default("digits").fit(X_train, y_train).score(X_test, y_test))
        ofa = OnceForAllNetwork(_default("digits"), random_state=0).fit(
            X_train, y_train)
        extracted.append(ofa.score(X_test, y_test))
        # The same subnet, then the estimator's own fit, warm-started, on
        # all of the training part (it stops after 32-82 epochs).
        tuned.append(ofa.extract(fine_tune=200, X=X_train, y=y_train).score(
            X_test, y_test))
        print(seed, ofa.best_estimator_.hidden_layer_sizes, default[-1], extracted[-1],
              tuned[-1])
    default, extracted, tuned = map(np.array, (default, extracted, tuned))
    # Measured (doc/nas.md): not retrained 0.9726 against 0.9767 (at worst
    # 0.011 below); fine-tuned 0.9770 (at worst 0.006 below, split 2). The
    # mean is ahead by 1 of 2,700 test digits: the bound is the issue's
    # "at least the default", without slack.
    assert np.mean(default - extracted) <= 0.01
    assert np.max(default - extracted) <= 0.015
    assert tuned.mean() >= default.mean()
    assert np.max(default - tuned) <= 0.01


@pytest.mark.slow
def test_ofa_accuracy_vs_size_on_digits():
    X_train, X_test, y_train, y_test = _split("digits", 0)
    ofa = OnceForAllNetwork(MLPClassifier(random_state=0), random_state=0).fit(X_train, y_train)
    records = ofa.accuracy_vs_size(X_train, y_train, X_test, y_test, fine_tune=200)
    print(records)
    # Subnets on the validation Pareto front stay within reach of the same
    # architecture trained alone (doc/nas.md: 1-4 points behind when small).
    assert (records["extracted_score"] >= records["standalone_score"] - 0.1).all()
    assert records["extracted_score"][-1] >= records["standalone_score"][-1] - 0.01
    # Fine-tuned, they catch up (measured: within 0.4 points, (16,) 0.970
    # against 0.969 alone).
    assert (records["fine_tuned_score"] >= records["standalone_score"] - 0.01).all()


@pytest.mark.slow
def test_ofa_cnn_on_digits_images():
    X_train, X_test, y_train, y_test = _split("digits", 0)
    X_train, X_test = X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8)
    ofa = OnceForAllNetwork(CNNClassifier(random_state=0), random_state=0).fit(
        X_train, y_train)
    best = ofa.best_estimator_
    print(best.layers, ofa.score(X_test, y_test))
    # Measured (doc/nas.md): 2 x conv32-k5 (26,794 parameters) 0.956; within
    # 3,000 parameters 2 x conv16 0.828; CNNClassifier() (batch norm, 4
    # convolutions, pooling) 0.991.
    assert isinstance(best, CNNClassifier) and best.n_iter_ == 0
    assert ofa.score(X_test, y_test) >= 0.93
    small = ofa.extract(max_params=3000)
    assert _count(small) <= 3000
    assert small.score(X_test, y_test) >= 0.75
