"""The sample-quality measures the generative families are held to, checked on known cases."""

import numpy as np

from tests._generative import c2st_auc, mmd_test, moons


def test_real_samples_pass_and_wrong_samplers_fail():
    train, held = moons()
    rng = np.random.default_rng(0)
    # Two draws of the same distribution: a classifier cannot tell them apart.
    assert c2st_auc(train[:500], held[:500]) < 0.6
    assert mmd_test(train[:500], held[:500])[1] > 0.05
    # A deliberately wrong sampler (the moons mirrored: the right marginals,
    # the wrong shape) is told apart: the negative control of the issue.
    mirrored = train[:500] * np.array([1.0, -1.0])
    assert c2st_auc(mirrored, held[:500]) > 0.9
    assert mmd_test(mirrored, held[:500])[1] < 0.01
    # So is a Gaussian with the data's mean and covariance, less sharply.
    gaussian = rng.multivariate_normal(held.mean(0), np.cov(held.T), size=500)
    assert c2st_auc(gaussian, held[:500]) > 0.8
