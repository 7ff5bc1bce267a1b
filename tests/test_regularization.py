"""Weight penalties and gradient clipping."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from sklears_neural import MLPClassifier
from sklears_neural.core.regularization import penalized_parameters, weight_penalty

X, y = load_breast_cancer(return_X_y=True)
X = StandardScaler().fit_transform(X)[:300]
y = y[:300]


def _fit(**params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier(hidden_layer_sizes=(16,), **params).fit(X, y)


@pytest.mark.parametrize("l1_ratio", [0.0, 0.3, 1.0])
def test_weight_penalty_matches_the_elastic_net_formula(l1_ratio):
    rng = np.random.RandomState(0)
    arrays = [rng.randn(4, 3), rng.randn(3, 2)]
    expected = 0.7 * sum(
        l1_ratio * np.abs(a).sum() + 0.5 * (1 - l1_ratio) * (a**2).sum() for a in arrays
    )
    got = weight_penalty([torch.from_numpy(a) for a in arrays], 0.7, l1_ratio)
    assert float(got) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("l1_ratio", [0.0, 0.3, 1.0])
def test_weight_penalty_gradient_is_the_elastic_net_gradient(l1_ratio):
    rng = np.random.RandomState(0)
    params = [torch.tensor(rng.randn(*shape), requires_grad=True)
              for shape in [(4, 3), (3, 2)]]
    # Centred differences (no weight at the kink of |w|: randn has no zeros).
    assert torch.autograd.gradcheck(
        lambda *p: weight_penalty(list(p), 0.7, l1_ratio), params
    )
    weight_penalty(params, 0.7, l1_ratio).mul(3.0).backward()
    for p in params:
        expected = 3.0 * 0.7 * (l1_ratio * p.sign() + (1 - l1_ratio) * p)
        torch.testing.assert_close(p.grad, expected.detach(), rtol=1e-12, atol=0)


def test_penalty_skips_biases():
    clf = _fit(max_iter=1, random_state=0)
    shapes = [tuple(p.shape) for p in penalized_parameters(clf.module_)]
    assert shapes == [(16, 30), (1, 16)]


def test_l1_makes_weights_sparse(global_random_seed):
    settings = dict(alpha=2.0, max_iter=100, batch_size=300, learning_rate_init=0.01,
                    random_state=global_random_seed)
    dense = _fit(l1_ratio=0.0, **settings)
    sparse = _fit(l1_ratio=1.0, **settings)
    small = lambda clf: np.mean(np.abs(clf.coefs_[0]) < 1e-2)  # noqa: E731
    # Measured (seed 42): 0.06 of first-layer weights below 1e-2 with L2,
    # 0.80 with L1 at the same alpha (Adam leaves them near, not at, zero).
    assert small(sparse) > small(dense) + 0.4
    assert sparse.score(X, y) > 0.9


@pytest.mark.parametrize("clip", ["value", "norm"])
def test_gradient_clipping_bounds_the_sgd_step(clip):
    # One full-batch step of plain SGD with lr=1 moves the weights by minus
    # the clipped gradient exactly.
    params = dict(solver="sgd", momentum=0.0, learning_rate_init=1.0, max_iter=1,
                  batch_size=len(X), shuffle=False, random_state=0, alpha=0.0)
    start = _fit(**{**params, "learning_rate_init": 1e-300})
    before = [p.detach().clone() for p in start.module_.parameters()]
    bound = 1e-3
    clipped = _fit(**params, **{f"clip_grad_{clip}": bound})
    steps = [b - a.detach() for a, b in zip(clipped.module_.parameters(), before)]
    if clip == "value":
        largest = max(s.abs().max().item() for s in steps)
        assert largest == pytest.approx(bound, rel=1e-4)
    else:
        norm = torch.sqrt(sum((s.double() ** 2).sum() for s in steps)).item()
        assert norm == pytest.approx(bound, rel=1e-4)


def test_mixed_precision_autocasts_on_cpu(global_random_seed):
    seen = set()
    clf = MLPClassifier(hidden_layer_sizes=(16,), precision="mixed", max_iter=30,
                        random_state=global_random_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X[:20], y[:20])  # builds the module
        hook = clf.module_.register_forward_hook(
            lambda module, inputs, output: seen.add(output.dtype)
        )
        clf.set_params(warm_start=True).fit(X, y)
    hook.remove()
    assert torch.bfloat16 in seen
    assert next(clf.module_.parameters()).dtype == torch.float32
    assert clf.predict_proba(X).dtype == np.float64
    # Measured (seed 42): 0.93-0.98 training accuracy over 30 epochs
    # (float32 reaches the same range); chance is 0.63.
    assert clf.score(X, y) > 0.88


@pytest.mark.parametrize("l1_ratio", [0.0, 0.4, 1.0])
def test_penalty_on_flat_weights_equals_the_per_tensor_penalty(l1_ratio):
    """core.flat: weights laid out in one buffer take the penalty's value as one
    dot (equal within rounding); the gradient is the same bit for bit."""
    from sklears_neural.core.flat import FlatParameters, weight_layout
    from sklears_neural.core.regularization import penalty_value, weight_penalty

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(),
                                 torch.nn.Linear(5, 3)).double()
    weights = [p for p in module.parameters() if p.ndim >= 2]

    def penalty_and_grads():
        for p in module.parameters():
            p.grad = None
        value = weight_penalty(weights, 0.3, l1_ratio)
        value.backward()
        return float(value), [p.grad.clone() for p in weights]

    assert weight_layout(weights) is None
    value, grads = penalty_and_grads()
    flat = FlatParameters.flatten(list(module.parameters()))
    assert weight_layout(weights) is flat
    flat_value, flat_grads = penalty_and_grads()
    assert flat_value == pytest.approx(value, rel=1e-13)
    assert float(penalty_value(weights, 0.3, l1_ratio)) == pytest.approx(value, rel=1e-13)
    for a, b in zip(flat_grads, grads):
        assert torch.equal(a, b)
    # Another list of the same tensors (or a reordered one) is not the layout.
    assert weight_layout(weights[::-1]) is None
    module.float()  # .to() replaces the parameters' tensors
    assert weight_layout(weights) is None


def test_a_dropped_layout_does_not_forget_a_newer_one_of_the_same_weights():
    import gc

    from sklears_neural.core.flat import FlatParameters, weight_layout

    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    weights = [p for p in module.parameters() if p.ndim >= 2]
    first = FlatParameters.flatten(list(module.parameters()))
    second = FlatParameters.flatten(list(module.parameters()))  # adopts, no copy
    assert second.data.data_ptr() == first.data.data_ptr()
    del first
    gc.collect()
    assert weight_layout(weights) is second
