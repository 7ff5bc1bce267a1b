"""Autoencoder: a transformer on the training core (dense and convolutional)."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

from conftest import skip_float32_weight_checks
from sklears_neural import load
from sklears_neural.models.autoencoder import Autoencoder

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

X_ALL, Y_ALL = load_digits(return_X_y=True)
X_ALL = X_ALL / 16.0
X_SMALL = X_ALL[:300]

CHECKED = [
    Autoencoder(max_iter=5, random_state=0),
    Autoencoder(kind="sparse", sparsity="kl", max_iter=5, random_state=0),
]


@parametrize_with_checks(CHECKED)
def test_sklearn_compatible_estimator(estimator, check):
    skip_float32_weight_checks(estimator, check)
    check(estimator)


@pytest.mark.parametrize("estimator", CHECKED, ids=repr)
def test_param_validation(estimator):
    check_param_validation(type(estimator).__name__, estimator)
