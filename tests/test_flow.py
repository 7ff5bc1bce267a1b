"""NormalizingFlow: exact invertibility and log-determinants, density, samples, contract."""

import pickle
import time

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

from _generative import c2st_auc, mmd_test, moons
from conftest import replaced_float32_weight_check
from sklears_neural import load
from sklears_neural.models.flow import NormalizingFlow
from sklears_neural.nn.flows import ActNorm, NormalizingFlowNet

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

X_TRAIN, X_HELD_OUT = moons()
OPTIONS = [(c, m) for c in ("affine", "additive") for m in ("permute", "invertible_linear")]


def _small(**params):
    return NormalizingFlow(**{"n_layers": 3, "hidden_layer_sizes": (16,), "max_iter": 5,
                              "random_state": 0, **params})


# -- scikit-learn's checks -----------------------------------------------------------

CHECKED = [NormalizingFlow(n_layers=2, hidden_layer_sizes=(8,), max_iter=5, random_state=0)]


@parametrize_with_checks(CHECKED)
def test_sklearn_compatible_estimator(estimator, check):
    if replaced_float32_weight_check(estimator, check, weights_are_repeats=False):
        return
    check(estimator)


def test_param_validation():
    check_param_validation("NormalizingFlow", CHECKED[0])


# -- the proofs: invertibility and the log-determinant -------------------------------


def _fitted64(coupling, mixing, X, seed=0):
    # A few epochs in float64 move every layer off its starting point.
    return _small(coupling=coupling, mixing=mixing, precision="float64", max_iter=3,
                  random_state=seed).fit(X)


@pytest.mark.parametrize("coupling, mixing", OPTIONS)
@pytest.mark.parametrize("n_features", [2, 5])
def test_x_to_z_to_x_round_trip(coupling, mixing, n_features, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X = rng.standard_normal((300, n_features)) @ rng.standard_normal((n_features, n_features))
    flow = _fitted64(coupling, mixing, X, global_random_seed)
    Z = flow.transform(X)
    assert Z.shape == X.shape
    np.testing.assert_allclose(flow.inverse_transform(Z), X, atol=1e-5, rtol=0)
    # The forward map moved the data: not a no-op passing the test.
    assert np.abs(Z - X).max() > 0.1


@pytest.mark.parametrize("coupling, mixing", OPTIONS)
@pytest.mark.parametrize("n_features", [2, 5])
def test_log_determinant_equals_autograds(coupling, mixing, n_features, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X = rng.standard_normal((300, n_features)) * rng.uniform(0.5, 3, n_features)
    flow = _fitted64(coupling, mixing, X, global_random_seed)
    net = flow.module_
    x = torch.as_tensor(X[:8])
    _, log_det = net.to_base(x)
    for row, expected in zip(x, log_det):
        jacobian = torch.autograd.functional.jacobian(lambda v: net.to_base(v[None])[0][0], row)
        sign, logabsdet = torch.linalg.slogdet(jacobian)
        assert sign.item() != 0
        assert abs(logabsdet.item() - expected.item()) < 1e-5
    # And the density is the change of variables through them.
    z, _ = net.to_base(x)
    log_normal = -0.5 * (z**2).sum(1) - 0.5 * n_features * np.log(2 * np.pi)
    np.testing.assert_allclose(flow.score_samples(X[:8]), (log_normal + log_det).detach().numpy(),
                               atol=1e-10)


def test_density_integrates_to_one_on_a_grid():
    flow = NormalizingFlow(n_layers=4, hidden_layer_sizes=(32, 32), max_iter=30,
                           random_state=0).fit(X_TRAIN)
    grid = np.linspace(-4, 4, 301)
    xx, yy = np.meshgrid(grid, grid)
    density = np.exp(flow.score_samples(np.c_[xx.ravel(), yy.ravel()]))
    mass = density.sum() * (grid[1] - grid[0]) ** 2
    # Measured 0.99x; the data lie well inside [-4, 4]^2.
    assert 0.95 < mass < 1.02, mass


def test_actnorm_starts_from_the_first_batch():
    layer = ActNorm(3)
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)) * 4 + 2
    y, log_det = layer.train()(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0, unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    assert layer.initialized.item() == 1
    # Later batches do not re-initialize it.
    before = layer.bias.detach().clone()
    layer(x + 5)
    torch.testing.assert_close(layer.bias.detach(), before)
    # A constant feature, or a single row, keeps a unit scale.
    const = ActNorm(2).train()
    const(torch.tensor([[1.0, 2.0], [1.0, 3.0]]))
    assert const.log_scale[0].item() == 0
    assert torch.isfinite(ActNorm(2).train()(torch.ones(1, 2))[0]).all()


def test_fit_initializes_actnorm_from_the_data():
    flow = _small(max_iter=1).fit(X_TRAIN * 5 + 3)
    first = flow.module_.steps[0]
    assert isinstance(first, ActNorm) and first.initialized.item() == 1
    # Scales near 1/5 of the first batch's spread, not the identity.
    assert np.all(first.log_scale.detach().numpy() < -1)


# -- density and samples ---------------------------------------------------------------


def _kde_gmm(X_train, X_test, bandwidths):
    kde = GridSearchCV(KernelDensity(), {"bandwidth": bandwidths}).fit(X_train)
    kde_ll = kde.best_estimator_.score_samples(X_test).mean()
    gmm_ll = GaussianMixture(10, random_state=0).fit(X_train).score(X_test)
    return kde_ll, gmm_ll


def test_moons_small_budget(global_random_seed):
    # Fast check of the learning; the defaults are measured in the slow test.
    # The default network, a third of the epochs (the cosine schedule decays
    # over them). Measured on seeds 0, 1, 2, 42: held-out log-likelihood
    # -1.222, -1.265, -1.197, -1.196; C2ST AUC 0.539-0.585; 3-5 s a fit.
    flow = NormalizingFlow(max_iter=100, random_state=global_random_seed)
    flow.fit(X_TRAIN)
    ll = flow.score(X_HELD_OUT)
    samples = flow.sample(500, random_state=0)
    assert ll > -1.33, ll
    assert c2st_auc(samples, X_HELD_OUT[:500]) < 0.7


@pytest.mark.slow
def test_moons_defaults_match_kde_and_gmm():
    kde_ll, gmm_ll = _kde_gmm(X_TRAIN, X_HELD_OUT, np.logspace(-1.5, 0, 20))
    flow = NormalizingFlow(random_state=0)
    start = time.perf_counter()
    flow.fit(X_TRAIN)
    elapsed = time.perf_counter() - start
    ll = flow.score(X_HELD_OUT)
    samples = flow.sample(500, random_state=0)
    auc = c2st_auc(samples, X_HELD_OUT[:500])
    mmd2, p_value = mmd_test(samples, X_HELD_OUT[:500])
    print(f"moons: flow {ll:.4f} ({elapsed:.1f} s, {flow.n_iter_} epochs), KDE {kde_ll:.4f}, "
          f"GMM {gmm_ll:.4f}; C2ST {auc:.3f}, MMD^2 {mmd2:.5f} p={p_value:.3f}")
    # Measured (seed 0, 1 torch thread): flow -1.202 (18 s, 300 epochs), KDE
    # -1.226 (bandwidth 0.055 by 5-fold search), GMM(10) -1.210; C2ST AUC
    # 0.527, MMD p=0.35. Seeds 1, 2: -1.183, -1.210. The issue measured KDE
    # -1.187 on another split: within 0.05 of that too.
    assert ll > max(kde_ll, gmm_ll, -1.187) - 0.05
    assert auc < 0.75
    assert p_value > 0.01


def curved_manifolds(n_samples=3000, n_features=16, noise=0.05, random_state=0):
    """A mixture of three curved 2-D sheets in ``n_features`` dimensions.

    Each component draws ``t`` uniform on a square, lifts it through its own
    smooth map ``[t, sin(a t), cos(b t), t1 t2]`` and a random linear
    embedding, then adds isotropic Gaussian noise; the result is
    standardized. A kernel estimate spreads mass over all 16 directions.
    """
    rng = np.random.default_rng(random_state)
    parts = []
    for k, n in enumerate(np.full(3, n_samples // 3)):
        t = rng.uniform(-1.5, 1.5, (n, 2))
        a, b = rng.uniform(1, 2.5, 2)
        lifted = np.c_[t, np.sin(a * t), np.cos(b * t[:, ::-1]), t[:, :1] * t[:, 1:]]
        embedding = rng.standard_normal((lifted.shape[1], n_features))
        parts.append(lifted @ embedding + 2.0 * rng.standard_normal(n_features))
    X = np.vstack(parts)
    X += noise * rng.standard_normal(X.shape)
    X = X[rng.permutation(len(X))]
    X = (X - X.mean(0)) / X.std(0)
    half = len(X) * 2 // 3
    return X[:half], X[half:]


@pytest.mark.slow
def test_curved_manifolds_defaults_beat_kde_and_gmm():
    X_train, X_test = curved_manifolds()
    kde_ll, gmm_ll = _kde_gmm(X_train, X_test, np.logspace(-2, 0, 12))
    flow = NormalizingFlow(random_state=0)
    start = time.perf_counter()
    flow.fit(X_train)
    elapsed = time.perf_counter() - start
    ll = flow.score(X_test)
    print(f"manifolds: flow {ll:.3f} ({elapsed:.1f} s, {flow.n_iter_} epochs), "
          f"KDE {kde_ll:.3f}, GMM {gmm_ll:.3f}")
    # Measured (seed 0): flow 19.90 (30 s, 300 epochs), KDE 12.32, GMM(10) 17.97.
    assert ll > max(kde_ll, gmm_ll), (ll, kde_ll, gmm_ll)


# -- the estimator contract ------------------------------------------------------------


def test_score_is_the_mean_log_likelihood():
    flow = _small().fit(X_TRAIN)
    np.testing.assert_allclose(flow.score(X_HELD_OUT), flow.score_samples(X_HELD_OUT).mean())
    weights = np.arange(len(X_HELD_OUT), dtype=float)
    np.testing.assert_allclose(flow.score(X_HELD_OUT, sample_weight=weights),
                               np.average(flow.score_samples(X_HELD_OUT), weights=weights))
    # The training loss is the negative log-likelihood.
    assert flow.loss_curve_[-1] == pytest.approx(-flow.score(X_TRAIN), abs=0.2)


def test_seeded_sampling_is_deterministic_and_shaped_like_x():
    flow = _small().fit(X_TRAIN)
    a = flow.sample(50, random_state=3)
    assert a.shape == (50, 2) and a.dtype == np.float64
    np.testing.assert_array_equal(a, flow.sample(50, random_state=3))
    assert not np.array_equal(a, flow.sample(50, random_state=4))
    # Samples are the inverse map of standard normal draws.
    Z = flow.transform(a)
    np.testing.assert_allclose(flow.inverse_transform(Z), a, atol=1e-4)


def test_fits_are_reproducible():
    a = _small().fit(X_TRAIN)
    b = _small().fit(X_TRAIN)
    np.testing.assert_array_equal(a.score_samples(X_HELD_OUT), b.score_samples(X_HELD_OUT))


def test_pickle_and_save_load_are_exact(tmp_path):
    flow = _small(mixing="invertible_linear").fit(X_TRAIN)
    expected = flow.score_samples(X_HELD_OUT)
    samples = flow.sample(20, random_state=0)
    flow.save(tmp_path / "flow")
    for restored in (pickle.loads(pickle.dumps(flow)), load(tmp_path / "flow")):
        np.testing.assert_array_equal(restored.score_samples(X_HELD_OUT), expected)
        np.testing.assert_array_equal(restored.sample(20, random_state=0), samples)
        np.testing.assert_array_equal(restored.transform(X_HELD_OUT),
                                      flow.transform(X_HELD_OUT))


def test_partial_fit_continues_without_reinitializing_actnorm():
    flow = _small()
    flow.partial_fit(X_TRAIN)
    first = flow.module_.steps[0].bias.detach().clone()
    before = flow.score(X_HELD_OUT)
    for _ in range(10):
        flow.partial_fit(X_TRAIN)
    assert flow.score(X_HELD_OUT) > before
    # ActNorm moved by training only, from where the first batch put it.
    assert torch.allclose(flow.module_.steps[0].bias.detach(), first, atol=0.5)


def test_early_stopping_watches_held_out_log_likelihood():
    flow = _small(early_stopping=True, max_iter=20, n_iter_no_change=3).fit(X_TRAIN)
    assert flow.validation_scores_ is not None
    assert flow.best_validation_score_ == max(flow.validation_scores_)
    assert flow.best_validation_score_ > -3


def test_noise_regularization_is_seeded_and_only_for_stochastic_solvers():
    noisy = _small().fit(X_TRAIN)
    plain = _small(noise_std=0.0).fit(X_TRAIN)
    assert not np.array_equal(noisy.score_samples(X_HELD_OUT), plain.score_samples(X_HELD_OUT))
    # L-BFGS needs a deterministic objective: the noise is left out.
    a = _small(solver="lbfgs", max_iter=5).fit(X_TRAIN)
    b = _small(solver="lbfgs", max_iter=5, noise_std=0.0).fit(X_TRAIN)
    np.testing.assert_array_equal(a.score_samples(X_HELD_OUT), b.score_samples(X_HELD_OUT))


def test_lbfgs_fits():
    flow = _small(solver="lbfgs", max_iter=30).fit(X_TRAIN)
    start = _small(solver="lbfgs", max_iter=1).fit(X_TRAIN)
    assert flow.score(X_TRAIN) > start.score(X_TRAIN) + 0.3


def test_higher_dimensional_input_and_a_single_feature():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 7))
    flow = _small(n_layers=2).fit(X)
    assert flow.sample(5, random_state=0).shape == (5, 7)
    np.testing.assert_allclose(flow.inverse_transform(flow.transform(X)), X, atol=1e-4)
    one = _small().fit(X[:, :1])
    assert one.score_samples(X[:3, :1]).shape == (3,)


def test_errors():
    flow = _small()
    with pytest.raises(NotFittedError):
        flow.score_samples(X_TRAIN)
    with pytest.raises(NotFittedError):
        flow.sample(3)
    with pytest.raises(ValueError, match="NaN"):
        flow.fit(np.where(X_TRAIN > 1.5, np.nan, X_TRAIN))
    flow.fit(X_TRAIN)
    with pytest.raises(ValueError, match="features"):
        flow.score_samples(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="features"):
        flow.inverse_transform(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="coupling"):
        _small(coupling="spline").fit(X_TRAIN)
    with pytest.raises(ValueError, match="mixing"):
        _small(mixing="shuffle").fit(X_TRAIN)
    with pytest.raises(ValueError, match="noise_std"):
        _small(noise_std=-1.0).fit(X_TRAIN)
    with pytest.raises(ValueError, match="n_layers"):
        _small(n_layers=0).fit(X_TRAIN)
    with pytest.raises(ValueError, match="n_samples"):
        flow.sample(0)
    with pytest.raises(ValueError, match="coupling must be"):
        NormalizingFlowNet(2, 1, [4], coupling="spline")


def test_checkpoint_resume_is_exact(tmp_path):
    # The noise, the first ActNorm batch and shuffling all draw on the fit's
    # generator: a run stopped at epoch 3 and resumed from its checkpoint ends
    # on the weights of the straight run.
    from sklears_neural.callbacks import Callback, Checkpoint

    class StopAt(Callback):
        def on_epoch_end(self, trainer, **kwargs):
            trainer.should_stop = len(trainer.history) == 3

    params = dict(n_layers=2, hidden_layer_sizes=(8,), max_iter=6, random_state=0)
    straight = NormalizingFlow(**params).fit(X_TRAIN)
    path = tmp_path / "flow.zip"
    NormalizingFlow(**params, callbacks=[Checkpoint(path), StopAt()]).fit(X_TRAIN)
    resumed = load(path)
    assert resumed.n_iter_ == 3
    resumed.set_params(warm_start=True).fit(X_TRAIN)
    assert resumed.n_iter_ == 6
    for a, b in zip(straight.module_.state_dict().values(),
                    resumed.module_.state_dict().values()):
        assert torch.equal(a, b)
