"""VAE: ELBO training, latent means, samples and likelihood bounds."""

import pickle
import sys
import warnings

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

from _generative import c2st_auc, mmd_test, moons
from conftest import replaced_float32_weight_check
from sklears_neural import load
from sklears_neural.callbacks import Callback, Checkpoint
from sklears_neural.exceptions import PersistenceWarning
from sklears_neural.models.vae import VAE

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CHECKED = [VAE(max_iter=5, random_state=0)]


@parametrize_with_checks(CHECKED)
def test_sklearn_compatible_estimator(estimator, check):
    if replaced_float32_weight_check(estimator, check, weights_are_repeats=False):
        return
    check(estimator)


@pytest.mark.parametrize("estimator", CHECKED, ids=repr)
def test_param_validation(estimator):
    check_param_validation(type(estimator).__name__, estimator)


MOONS_TRAIN, MOONS_TEST = moons()
X_DIGITS, Y_DIGITS = load_digits(return_X_y=True)
X_DIGITS = X_DIGITS / 16.0


def _fit(estimator, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(X)


def test_default_samples_pass_the_two_sample_tests_on_moons():
    # Default settings, 1,000 standardized moons. Measured (seeds 0, 1, 2):
    # C2ST AUC 0.747 / 0.764 / 0.725 (500 samples vs 500 held-out points),
    # MMD p-values 0.055 / 0.020 / 0.114, the tol rule stopping after
    # 73 / 60 / 85 epochs (2.6-6.2 s); held-out ELBO -2.25 / -2.66 / -2.05
    # nats, IWAE bound (K=64) -1.92 / -2.03 / -1.78 (KDE: -1.19).
    vae = _fit(VAE(random_state=0), MOONS_TRAIN)
    samples = vae.sample(500, random_state=0)
    auc = c2st_auc(samples, MOONS_TEST[:500])
    mmd2, p_value = mmd_test(samples, MOONS_TEST[:500])
    print(f"VAE moons: C2ST AUC {auc:.3f}, MMD^2 {mmd2:.4f} (p={p_value:.3f}), "
          f"{vae.n_iter_} epochs", file=sys.stderr)
    assert auc < 0.85
    assert mmd2 < 0.03
    # A deliberately wrong sampler (the samples mirrored, y -> -y) is told
    # apart: measured 0.922.
    assert c2st_auc(samples * [1, -1], MOONS_TEST[:500]) > 0.9


def test_importance_weighted_bound_is_tighter_than_the_elbo():
    vae = _fit(VAE(max_iter=30, random_state=0), MOONS_TRAIN)
    elbo = vae.score_samples(MOONS_TEST)
    iwae = vae.set_params(n_importance_samples=64).score_samples(MOONS_TEST)
    iwae_8 = vae.set_params(n_importance_samples=8).score_samples(MOONS_TEST)
    # Deterministic: fixed draws, the same for every sample.
    np.testing.assert_array_equal(iwae, vae.set_params(n_importance_samples=64)
                                  .score_samples(MOONS_TEST))
    assert iwae_8.mean() > elbo.mean()
    assert iwae.mean() > iwae_8.mean()
    # A sample's score does not depend on its neighbours in the batch.
    np.testing.assert_allclose(vae.score_samples(MOONS_TEST[:7]), iwae[:7], rtol=1e-5)


def _linear_gaussian_data(n=800, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(5, 2))
    Z = rng.normal(size=(n, 2))
    return Z @ W.T + 0.3 * rng.normal(size=(n, 5))


def _exact_log_likelihood(vae, X):
    """log p(x) of a VAE with linear decoder: N(b, W W^T + diag sigma^2)."""
    module = vae.module_
    (linear,) = module.decoder.linears
    W = linear.weight.detach().double().numpy()
    b = linear.bias.detach().double().numpy()
    sigma2 = module.sigma().detach().double().numpy() ** 2
    return multivariate_normal(b, W @ W.T + np.diag(sigma2)).logpdf(X)


def test_bounds_stay_below_the_exact_likelihood_of_a_linear_gaussian_vae():
    # A VAE without hidden layers is a linear-Gaussian latent model (PPCA
    # with one noise variance per feature): its log-likelihood is exact,
    # N(b, W W^T + diag sigma^2). Measured (seed 0, 200 epochs, 800 points
    # of 5-D data): mean ELBO -6.228, IWAE bound -5.528 (K=8), -5.488
    # (K=64), -5.4846 (K=256), exact -5.4822; maximum-likelihood PPCA
    # (sklearn PCA(2).score) -4.238: the VAE is not at the optimum, but its
    # bounds stay below its own likelihood, tightening with K.
    X = _linear_gaussian_data()
    vae = _fit(VAE(hidden_layer_sizes=(), max_iter=200, random_state=0), X)
    exact = _exact_log_likelihood(vae, X)
    elbo = vae.score_samples(X)
    iwae_8 = vae.set_params(n_importance_samples=8).score_samples(X)
    iwae = vae.set_params(n_importance_samples=256).score_samples(X)
    print(f"linear VAE: ELBO {elbo.mean():.3f}, IWAE {iwae.mean():.3f}, exact "
          f"{exact.mean():.3f}, PPCA {PCA(2).fit(X).score(X):.3f}", file=sys.stderr)
    assert elbo.mean() < iwae_8.mean() < iwae.mean() <= exact.mean()
    assert exact.mean() - iwae.mean() < 0.01
    assert np.all(elbo <= exact)
    assert PCA(2).fit(X).score(X) >= exact.mean() - 1e-6  # the maximum-likelihood fit


def test_latent_codes_for_a_linear_probe():
    # 8-dim latent means of digits, the Autoencoder test's split. Measured:
    # PCA(8) 0.900, VAE(8, 20 epochs) 0.893 (seed 0) / 0.880 (seed 1);
    # default settings (100 epochs) 0.898 / 0.900; raw pixels 0.969.
    X_train, X_test, y_train, y_test = train_test_split(
        X_DIGITS, Y_DIGITS, test_size=0.25, stratify=Y_DIGITS, random_state=0)
    vae = _fit(VAE(n_components=8, max_iter=20, random_state=0), X_train)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(vae.transform(X_train), y_train)
    assert clf.score(vae.transform(X_test), y_test) > 0.86


def test_transform_inverse_transform_and_sample():
    vae = _fit(VAE(max_iter=5, random_state=0), MOONS_TRAIN)
    Z = vae.transform(MOONS_TEST)
    assert Z.shape == (1000, 2)
    assert vae.inverse_transform(Z).shape == (1000, 2)
    assert list(vae.get_feature_names_out()) == ["vae0", "vae1"]
    a, b = vae.sample(50, random_state=3), vae.sample(50, random_state=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (50, 2) and a.dtype == np.float64
    assert not np.array_equal(a, vae.sample(50, random_state=4))
    # Two fits with one seed agree: every draw came from the fit's generator.
    again = _fit(VAE(max_iter=5, random_state=0), MOONS_TRAIN)
    np.testing.assert_array_equal(again.transform(MOONS_TEST), Z)


def test_bernoulli_decoder_on_binary_digits():
    X = (X_DIGITS[:400] > 0.5).astype(float)
    vae = _fit(VAE(n_components=4, decoder="bernoulli", max_iter=20, random_state=0), X)
    untrained = _fit(VAE(n_components=4, decoder="bernoulli", max_iter=1, random_state=0), X)
    assert vae.score(X) > untrained.score(X) + 5
    # log-probabilities of binary vectors: at most 0.
    assert vae.set_params(n_importance_samples=16).score_samples(X).max() < 0
    samples = vae.sample(20, random_state=0)
    assert set(np.unique(samples)) <= {0.0, 1.0}
    means = vae.inverse_transform(vae.transform(X[:5]))
    assert means.min() >= 0 and means.max() <= 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VAE(decoder="bernoulli").fit(X_DIGITS * 2 - 1)


def test_beta_weights_the_kl_term():
    # With beta = 4 the posterior is kept closer to the prior: a smaller
    # KL, so latent means closer to 0.
    common = dict(max_iter=20, random_state=0)
    plain = _fit(VAE(**common), MOONS_TRAIN)
    heavy = _fit(VAE(beta=4.0, **common), MOONS_TRAIN)
    assert np.abs(heavy.transform(MOONS_TEST)).mean() < np.abs(plain.transform(MOONS_TEST)).mean()


def test_pickle_and_save_load_are_exact(tmp_path):
    vae = _fit(VAE(max_iter=3, random_state=0), MOONS_TRAIN)
    restored = pickle.loads(pickle.dumps(vae))
    vae.save(tmp_path / "vae.zip")
    loaded = load(tmp_path / "vae.zip")
    for other in (restored, loaded):
        np.testing.assert_array_equal(other.transform(MOONS_TEST), vae.transform(MOONS_TEST))
        np.testing.assert_array_equal(other.score_samples(MOONS_TEST),
                                      vae.score_samples(MOONS_TEST))
        np.testing.assert_array_equal(other.sample(10, random_state=0),
                                      vae.sample(10, random_state=0))


def test_partial_fit_resume_and_early_stopping():
    # Three epochs at once or one at a time with partial_fit: the same draws
    # from the same generator, so the same model.
    whole = _fit(VAE(max_iter=3, shuffle=False, random_state=0), MOONS_TRAIN)
    steps = VAE(shuffle=False, random_state=0)
    for _ in range(3):
        steps.partial_fit(MOONS_TRAIN)
    np.testing.assert_allclose(steps.transform(MOONS_TEST), whole.transform(MOONS_TEST),
                               rtol=1e-5, atol=1e-6)
    stopped = _fit(VAE(early_stopping=True, random_state=0), MOONS_TRAIN)
    assert stopped.n_iter_ < 100
    # Early stopping watches the held-out ELBO (fixed draws), in nats.
    np.testing.assert_allclose(stopped.validation_scores_,
                               [-v for v in stopped.validation_loss_curve_])
    assert -4 < stopped.best_validation_score_ < -1


def test_errors():
    with pytest.raises(NotFittedError):
        VAE().sample(3)
    with pytest.raises(NotFittedError):
        VAE().score_samples(MOONS_TEST)
    bad = MOONS_TRAIN.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        VAE(max_iter=1).fit(bad)
    vae = _fit(VAE(max_iter=1, random_state=0), MOONS_TRAIN)
    with pytest.raises(ValueError, match="features"):
        vae.transform(X_DIGITS[:3])
    with pytest.raises(ValueError, match="n_components=2"):
        vae.inverse_transform(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="lbfgs"):
        VAE(solver="lbfgs").fit(MOONS_TRAIN)
    with pytest.raises(ValueError, match="decoder"):
        VAE(decoder="poisson").fit(MOONS_TRAIN)
    with pytest.raises(ValueError, match="n_samples"):
        vae.sample(0)


class _StopAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, **kwargs):
        trainer.should_stop = len(trainer.history) == self.epoch


@pytest.mark.parametrize("params", [{}, {"early_stopping": True, "n_iter_no_change": 50}],
                         ids=["plain", "early_stopping"])
def test_exact_resume_from_a_checkpoint(tmp_path, params):
    # The reparameterization draws come from the fit's generator, which the
    # checkpoint carries: a resumed fit is the uninterrupted one, bit for bit.
    path = tmp_path / "ckpt.zip"
    X = MOONS_TRAIN[:300]
    straight = _fit(VAE(max_iter=6, random_state=0, **params), X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PersistenceWarning)
        _fit(VAE(max_iter=6, random_state=0, callbacks=[Checkpoint(path), _StopAt(3)],
                 **params), X)
        resumed = load(path)
    assert resumed.n_iter_ == 3
    _fit(resumed.set_params(warm_start=True), X)
    assert resumed.n_iter_ == straight.n_iter_ == 6
    assert resumed.loss_curve_ == straight.loss_curve_
    assert resumed.validation_scores_ == straight.validation_scores_
    np.testing.assert_array_equal(resumed.transform(MOONS_TEST), straight.transform(MOONS_TEST))
