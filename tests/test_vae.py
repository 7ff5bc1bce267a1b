"""VAE: ELBO training, latent means, samples and likelihood bounds."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

from conftest import skip_float32_weight_checks
from sklears_neural.models.vae import VAE

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CHECKED = [VAE(max_iter=5, random_state=0)]


@parametrize_with_checks(CHECKED)
def test_sklearn_compatible_estimator(estimator, check):
    skip_float32_weight_checks(estimator, check)
    check(estimator)


@pytest.mark.parametrize("estimator", CHECKED, ids=repr)
def test_param_validation(estimator):
    check_param_validation(type(estimator).__name__, estimator)
