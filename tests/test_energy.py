"""EnergyBasedModel and the samplers of nn.energy: known energies, moons, the contract."""

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

import sklears_neural
from sklears_neural.callbacks import Callback, Checkpoint
from sklears_neural.models.energy import EnergyBasedModel
from sklears_neural.nn.energy import gibbs, hmc, langevin

sys.path.insert(0, str(Path(__file__).parent))
from _generative import c2st_auc, moons  # noqa: E402
from conftest import replaced_float32_weight_check  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

X_TRAIN, X_HELD = moons()


def _small(**params):
    return EnergyBasedModel(**{"hidden_layer_sizes": (16,), "n_mcmc_steps": 5,
                               "max_iter": 3, "random_state": 0, **params})


def _uniform_noise(X, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(X.min(0) - 0.5, X.max(0) + 0.5, size=(n, X.shape[1]))


# -- scikit-learn's checks -----------------------------------------------------------

# "gibbs" is left out: it needs binary X and scikit-learn's checks feed real
# values, which fit refuses by design (test_gibbs_needs_binary_data).
CHECKED = [EnergyBasedModel((8,), n_mcmc_steps=3, max_iter=5, random_state=0)]


@parametrize_with_checks(CHECKED, xfail_strict=True)
def test_sklearn_compatible_estimator(estimator, check):
    if replaced_float32_weight_check(estimator, check, weights_are_repeats=False):
        return
    check(estimator)


@pytest.mark.parametrize("estimator", CHECKED, ids=repr)
def test_param_validation(estimator):
    check_param_validation(type(estimator).__name__, estimator)


# -- the samplers on known energies --------------------------------------------------

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
PRECISION = torch.linalg.inv(COV)


def _gaussian_energy(x):
    d = x - MEAN
    return 0.5 * ((d @ PRECISION) * d).sum(dim=1)


def _start(n=2000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, dtype=torch.float64, generator=generator), generator


def test_langevin_recovers_a_gaussian():
    # Measured: mean within 0.02, covariance within 0.011 (2,000 chains, 300
    # steps of 0.02; the O(step) bias of unadjusted Langevin is ~1%).
    x0, generator = _start()
    x = langevin(_gaussian_energy, x0, generator, n_steps=300, step_size=0.02)
    torch.testing.assert_close(x.mean(0), MEAN, atol=0.06, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), COV, atol=0.05, rtol=0)
    # The decoupled noise: a colder chain is narrower.
    cold = langevin(_gaussian_energy, x0, generator, n_steps=300, step_size=0.02,
                    noise_scale=0.05)
    assert torch.cov(cold.T).diagonal().max() < 0.1


def test_hmc_recovers_a_gaussian_and_accepts_most_trajectories():
    # Measured: mean within 0.02, covariance within 0.013, acceptance 0.97.
    x0, generator = _start(seed=1)
    x, rate = hmc(_gaussian_energy, x0, generator, n_steps=100, step_size=0.2,
                  n_leapfrog_steps=5)
    torch.testing.assert_close(x.mean(0), MEAN, atol=0.06, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), COV, atol=0.05, rtol=0)
    assert 0.8 <= rate <= 1.0
    # Far too large a step: the Metropolis test rejects most trajectories,
    # and the chains stay put instead of diverging.
    x, rate = hmc(_gaussian_energy, x0, generator, n_steps=5, step_size=2.0)
    assert rate < 0.3
    assert torch.isfinite(x).all()


def test_gibbs_recovers_marginals_and_a_coupled_joint():
    bias = torch.tensor([-1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    generator = torch.Generator().manual_seed(2)
    x0 = torch.zeros(4000, 4, dtype=torch.float64)
    x = gibbs(lambda z: -(z * bias).sum(1), x0, generator, n_steps=3)
    # Independent units: marginals sigmoid(bias), within 3 standard errors.
    torch.testing.assert_close(x.mean(0), torch.sigmoid(bias), atol=0.025, rtol=0)
    # Three coupled units: the joint over the 8 states, against enumeration.
    J = torch.tensor([[0.0, 1.5, -1.0], [1.5, 0.0, 0.5], [-1.0, 0.5, 0.0]],
                     dtype=torch.float64)
    b = torch.tensor([-0.5, 0.2, 0.3], dtype=torch.float64)

    def energy(z):
        return -0.5 * ((z @ J) * z).sum(1) - z @ b

    states = torch.tensor([[(k >> i) & 1 for i in range(3)] for k in range(8)],
                          dtype=torch.float64)
    exact = torch.softmax(-energy(states), 0)
    x = gibbs(energy, torch.zeros(8000, 3, dtype=torch.float64), generator, n_steps=10)
    codes = (x * torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)).sum(1).long()
    empirical = torch.bincount(codes, minlength=8).double() / len(codes)
    torch.testing.assert_close(empirical, exact, atol=0.02, rtol=0)


def test_samplers_leave_parameter_gradients_alone():
    net = torch.nn.Linear(2, 1).double()

    def energy(z):
        return net(z)[:, 0] ** 2

    x0, generator = _start(10)
    langevin(energy, x0, generator, n_steps=2, step_size=0.01)
    hmc(energy, x0, generator, n_steps=2, step_size=0.01)
    assert all(p.grad is None for p in net.parameters())


# -- the estimator on moons ----------------------------------------------------------


def test_moons_energy_separates_data_from_noise():
    # 30 epochs (a third of the default): measured held-out moons vs uniform
    # noise AUC 0.888, ~6 s. The default 100 epochs reach 0.93 (slow test).
    ebm = EnergyBasedModel(max_iter=30, random_state=0).fit(X_TRAIN)
    noise = _uniform_noise(X_TRAIN, 1000)
    scores = np.r_[ebm.score_samples(X_HELD), ebm.score_samples(noise)]
    labels = np.r_[np.ones(len(X_HELD)), np.zeros(len(noise))]
    assert roc_auc_score(labels, scores) > 0.85
    samples = ebm.sample(200, random_state=0)
    assert samples.shape == (200, 2) and np.isfinite(samples).all()
    assert len(ebm._chains) == 10000 and ebm.acceptance_rate_ is None


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["langevin", "hmc"])
def test_moons_defaults(sampler):
    # Recorded in doc/generative/energy_hopfield.md. Measured (seed 0, one
    # torch thread): langevin noise AUC 0.930, samples' C2ST AUC 0.692, 20 s;
    # hmc (step_size=0.05, n_mcmc_steps=10) 0.933 and 0.561, 44 s.
    params = {} if sampler == "langevin" else {"sampler": "hmc", "step_size": 0.05,
                                                "n_mcmc_steps": 10}
    ebm = EnergyBasedModel(random_state=0, **params).fit(X_TRAIN)
    noise = _uniform_noise(X_TRAIN, 1000)
    scores = np.r_[ebm.score_samples(X_HELD), ebm.score_samples(noise)]
    labels = np.r_[np.ones(len(X_HELD)), np.zeros(len(noise))]
    assert roc_auc_score(labels, scores) > 0.9
    auc = c2st_auc(ebm.sample(500, random_state=1), X_HELD[:500])
    print(f"{sampler}: C2ST AUC {auc:.3f}")
    assert auc < 0.8


def test_hmc_training_records_acceptance():
    ebm = _small(sampler="hmc", n_mcmc_steps=2, step_size=0.05, max_iter=2).fit(X_TRAIN[:128])
    assert 0.5 < ebm.acceptance_rate_ <= 1.0
    rate = ebm.acceptance_rate_
    ebm.sample(10, random_state=0)
    assert ebm.acceptance_rate_ == rate  # sampling does not change fitted state


def test_gibbs_learns_binary_marginals():
    # Six independent bits with marginals 0.1 .. 0.9: after training, Gibbs
    # samples of the model reproduce them. Measured: max error 0.05 with
    # alpha_energy=0.01 (0.04 with 0; 0.11 with 0.1, which holds energies
    # near 0 and so pulls marginals toward 1/2), ~2 s.
    rng = np.random.default_rng(0)
    p = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 0.5])
    X = (rng.random((1000, 6)) < p).astype(float)
    ebm = EnergyBasedModel((16,), sampler="gibbs", n_mcmc_steps=1, max_iter=15,
                           alpha_energy=0.01, random_state=0).fit(X)
    samples = ebm.sample(2000, random_state=0)
    assert set(np.unique(samples)) <= {0.0, 1.0}
    np.testing.assert_allclose(samples.mean(0), p, atol=0.08)


# -- determinism, persistence, resume ------------------------------------------------


def test_seeded_fit_and_sample_are_deterministic():
    a = _small().fit(X_TRAIN[:200])
    b = _small().fit(X_TRAIN[:200])
    np.testing.assert_array_equal(a.score_samples(X_HELD[:50]), b.score_samples(X_HELD[:50]))
    np.testing.assert_array_equal(a._chains, b._chains)
    np.testing.assert_array_equal(a.sample(20, random_state=3), b.sample(20, random_state=3))
    assert not np.array_equal(a.sample(20, random_state=3), a.sample(20, random_state=4))
    c = _small(random_state=1).fit(X_TRAIN[:200])
    assert not np.array_equal(a.score_samples(X_HELD[:50]), c.score_samples(X_HELD[:50]))


def test_float64_precision_trains_in_float64():
    ebm = _small(precision="float64").fit(X_TRAIN[:200])
    assert all(p.dtype == torch.float64 for p in ebm.module_.parameters())
    assert ebm._chains.dtype == np.float64
    assert np.isfinite(ebm.loss_curve_).all()


@pytest.mark.parametrize("sampler", ["langevin", "hmc"])
def test_warm_start_resume_is_exact(sampler):
    # Two warm fits of k epochs equal one of 2k: the replay buffer, the
    # optimizer and the generator all carry over.
    params = {"sampler": sampler, "n_mcmc_steps": 2, "max_iter": 2}
    whole = _small(**{**params, "max_iter": 4}).fit(X_TRAIN[:200])
    halves = _small(**params, warm_start=True).fit(X_TRAIN[:200]).fit(X_TRAIN[:200])
    np.testing.assert_array_equal(whole._chains, halves._chains)
    np.testing.assert_array_equal(whole.score_samples(X_HELD[:50]),
                                  halves.score_samples(X_HELD[:50]))


class _StopAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, **kwargs):
        trainer.should_stop = len(trainer.history) == self.epoch


@pytest.mark.parametrize("sampler", ["langevin", "hmc"])
def test_checkpoint_resume_is_exact(sampler, tmp_path):
    # A fit stopped after 2 of 4 epochs, saved by Checkpoint, loaded and
    # resumed, ends exactly where the uninterrupted fit does.
    params = {"sampler": sampler, "n_mcmc_steps": 2, "max_iter": 4}
    path = tmp_path / "ckpt.zip"
    straight = _small(**params).fit(X_TRAIN[:200])
    _small(**params, callbacks=[Checkpoint(path), _StopAt(2)]).fit(X_TRAIN[:200])
    resumed = sklears_neural.load(path)
    assert resumed.n_iter_ == 2
    resumed.set_params(warm_start=True, callbacks=None).fit(X_TRAIN[:200])
    assert resumed.n_iter_ == 4
    for a, b in zip(straight.module_.parameters(), resumed.module_.parameters()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(straight._chains, resumed._chains)


def test_pickle_and_save_load_are_exact_and_continue(tmp_path):
    ebm = _small().fit(X_TRAIN[:200])
    payload = pickle.dumps(ebm)
    ebm.save(tmp_path / "ebm")
    for loaded in (pickle.loads(payload), sklears_neural.load(tmp_path / "ebm")):
        np.testing.assert_array_equal(loaded.score_samples(X_HELD), ebm.score_samples(X_HELD))
        np.testing.assert_array_equal(loaded.sample(10, random_state=0),
                                      ebm.sample(10, random_state=0))
        np.testing.assert_array_equal(loaded._chains, ebm._chains)
    a, b = pickle.loads(payload), sklears_neural.load(tmp_path / "ebm")
    a.partial_fit(X_TRAIN[:100])
    b.partial_fit(X_TRAIN[:100])
    np.testing.assert_array_equal(a.score_samples(X_HELD), b.score_samples(X_HELD))


def test_partial_fit_and_early_stopping():
    ebm = _small(persistent=False)
    for _ in range(3):
        ebm.partial_fit(X_TRAIN[:200])
    assert ebm.t_ == 600 and len(ebm._chains) == 200 % 64  # the last batch's negatives
    stopped = _small(early_stopping=True, max_iter=30, n_iter_no_change=2).fit(X_TRAIN)
    assert len(stopped.validation_scores_) == stopped.n_iter_ < 30
    assert np.all(np.isfinite(stopped.validation_scores_))


def test_sample_weight_zero_is_removal():
    w = np.r_[np.ones(150), np.zeros(50)]
    a = _small(batch_size=200).fit(X_TRAIN[:200], sample_weight=w)
    b = _small(batch_size=200).fit(X_TRAIN[:200], sample_weight=2 * w)
    # Same weights up to scale: the weighted means agree (float32 rounding).
    np.testing.assert_allclose(a.score_samples(X_HELD[:20]), b.score_samples(X_HELD[:20]),
                               rtol=1e-4, atol=1e-5)


# -- errors --------------------------------------------------------------------------


def test_errors():
    with pytest.raises(NotFittedError):
        EnergyBasedModel().sample(3)
    with pytest.raises(NotFittedError):
        EnergyBasedModel().score_samples(X_HELD)
    bad = X_TRAIN[:50].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _small().fit(bad)
    ebm = _small().fit(X_TRAIN[:100])
    with pytest.raises(ValueError, match="features"):
        ebm.score_samples(X_HELD[:, :1])
    with pytest.raises(ValueError, match="n_samples"):
        ebm.sample(0)
    with pytest.raises(ValueError, match="sampler"):
        _small(sampler="metropolis").fit(X_TRAIN[:50])
    with pytest.raises(ValueError, match="lbfgs"):
        _small(solver="lbfgs").fit(X_TRAIN[:50])
    with pytest.raises(ValueError, match="step_size"):
        _small(step_size=0).fit(X_TRAIN[:50])


def test_gibbs_needs_binary_data():
    with pytest.raises(ValueError, match="binary"):
        _small(sampler="gibbs").fit(X_TRAIN[:50])
    ebm = _small(sampler="gibbs", n_mcmc_steps=1, batch_size=25).fit(
        (X_TRAIN[:50] > 0).astype(float)
    )
    assert set(np.unique(ebm.sample(20, random_state=0))) <= {0.0, 1.0}
