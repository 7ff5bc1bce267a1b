"""scikit-learn's estimator checks over every public estimator."""

import pytest
from sklearn.utils.estimator_checks import (
    check_param_validation,
    check_sample_weight_equivalence_on_dense_data,
    check_sample_weight_equivalence_on_sparse_data,
    parametrize_with_checks,
)

from sklears_neural import (
    BernoulliRBM,
    MLPClassifier,
    MLPRegressor,
    RNNClassifier,
    RNNRegressor,
    TransformerClassifier,
    TransformerRegressor,
)
from tests.conftest import assert_weights_equal_repeats, replaced_float32_weight_check

# The defaults, with scikit-learn's own test settings (its
# CHECK_PARAMS_FOR_ESTIMATORS in sklearn/utils/_test_common).
ESTIMATORS = [
    MLPClassifier(max_iter=100),
    MLPRegressor(max_iter=100),
    BernoulliRBM(n_iter=5, batch_size=10),
    # Non-default training-toolbox settings must keep the contract too.
    MLPClassifier(max_iter=50, solver="adamw", weight_decay=0.01, activation="gelu",
                  layer_norm=True, dropout=0.1, learning_rate="cosine",
                  warmup_iters=5, clip_grad_norm=1.0),
    # Deterministic options only in float64: per-sample noise (dropout,
    # noise layers) cannot pass the sample-weight equivalence checks, which
    # compare weighted rows with repeated ones.
    MLPRegressor(max_iter=50, solver="lamb", learning_rate_init=0.01, residual="add",
                 spectral_norm=True, l1_ratio=0.5, weight_init="he_uniform",
                 precision="float64"),
]

# scikit-learn runs its sample-weight equivalence checks on its MLPs with these
# settings (PER_ESTIMATOR_CHECK_PARAMS in sklearn/utils/_test_common), in
# float64 as scikit-learn computes.
SAMPLE_WEIGHT_SETTINGS = [
    MLPClassifier(solver="lbfgs", precision="float64"),
    # Our default solver, whose float32 comparison runs with tanh (conftest).
    MLPClassifier(max_iter=100, precision="float64"),
    MLPRegressor(solver="sgd", tol=1e-2, random_state=42, precision="float64"),
]


def _expected_failed_checks(estimator):
    if isinstance(estimator, BernoulliRBM):
        # What scikit-learn marks for its own BernoulliRBM (its wording):
        # score_samples flips one random bit per sample.
        return {
            "check_methods_subset_invariance": "fails for the decision_function method",
            "check_methods_sample_order_invariance": "fails for the score_samples method",
        }
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks,
                         xfail_strict=True)
def test_sklearn_compatible_estimator(estimator, check):
    # Dropout draws a mask per row: a weight of 2 is not a repeated row.
    repeats = not getattr(estimator, "dropout", 0)
    if replaced_float32_weight_check(estimator, check, weights_are_repeats=repeats):
        return
    check(estimator)


@pytest.mark.parametrize("estimator", SAMPLE_WEIGHT_SETTINGS, ids=repr)
@pytest.mark.parametrize(
    "check",
    [check_sample_weight_equivalence_on_dense_data,
     check_sample_weight_equivalence_on_sparse_data],
)
def test_sample_weight_equivalence(estimator, check):
    check(type(estimator).__name__, estimator)


# The float32 families, as their own test modules check them
# (test_neural_net.py checks the bring-your-own estimators).
FLOAT32_WEIGHTED = [
    MLPClassifier(max_iter=100),
    MLPRegressor(max_iter=100),
    RNNClassifier(hidden_size=8, max_iter=60, learning_rate_init=0.02),
    RNNRegressor(hidden_size=16, cell="gru", pooling="mean", max_iter=60,
                 learning_rate_init=0.02),
    TransformerClassifier(d_model=8, num_heads=2, num_layers=1, dim_feedforward=16,
                          dropout=0.0, max_iter=30, learning_rate_init=0.03),
    TransformerRegressor(d_model=8, num_heads=2, num_layers=1, dim_feedforward=16,
                         dropout=0.0, max_iter=30, learning_rate_init=0.03),
]


def _dense_and_sparse(estimators):
    """(estimator, sparse_X) pairs: every estimator dense, those taking sparse X sparse too."""
    return [(est, False) for est in estimators] + [
        (est, True) for est in estimators if est.__sklearn_tags__().input_tags.sparse]


@pytest.mark.parametrize("estimator, sparse_X", _dense_and_sparse(FLOAT32_WEIGHTED),
                         ids=lambda v: repr(v) if not isinstance(v, bool) else
                         ("sparse" if v else "dense"))
def test_float32_sample_weight_equivalence(estimator, sparse_X):
    assert_weights_equal_repeats(estimator, sparse_X)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=repr)
def test_param_validation(estimator):
    # parametrize_with_checks does not run this check; scikit-learn calls it
    # from its own test_common.py.
    check_param_validation(type(estimator).__name__, estimator)


# Where scikit-learn's checks run for the estimators this file does not fit:
# each family's test module parametrizes them over settings of its own (the
# graph estimators, whose X is not a 2-D array, run the checks that apply
# explicitly, with the reason in tests/test_gnn.py).
CHECKED_IN_FAMILY_MODULES = {
    "Autoencoder": "test_autoencoder.py",
    "BYOLEncoder": "test_self_supervised.py",
    "CNNClassifier": "test_cnn.py",
    "CNNRegressor": "test_cnn.py",
    "ContrastiveEncoder": "test_self_supervised.py",
    "DiffusionModel": "test_diffusion.py",
    "EnergyBasedModel": "test_energy.py",
    "GAN": "test_gan.py",
    "GNNClassifier": "test_gnn.py",
    "GNNNodeClassifier": "test_gnn.py",
    "GNNNodeRegressor": "test_gnn.py",
    "GNNRegressor": "test_gnn.py",
    "GraphFeaturizer": "test_gnn.py",
    "HopfieldNetwork": "test_hopfield.py",
    "NeuralNetClassifier": "test_neural_net.py",
    "NeuralNetRegressor": "test_neural_net.py",
    "NormalizingFlow": "test_flow.py",
    "RNNClassifier": "test_rnn.py",
    "RNNRegressor": "test_rnn.py",
    "Seq2SeqModel": "test_seq2seq.py",
    "TransformerClassifier": "test_transformer.py",
    "TransformerRegressor": "test_transformer.py",
    "VAE": "test_vae.py",
}


def test_every_public_estimator_runs_scikit_learns_checks():
    from pathlib import Path

    from sklearn.base import BaseEstimator

    import sklears_neural

    public = {name for name in sklears_neural.__all__
              if isinstance(getattr(sklears_neural, name), type)
              and issubclass(getattr(sklears_neural, name), BaseEstimator)}
    here = {type(estimator).__name__ for estimator in ESTIMATORS}
    assert public == here | set(CHECKED_IN_FAMILY_MODULES), (
        "a public estimator whose scikit-learn checks run nowhere, or a stale entry")
    tests = Path(__file__).parent
    for name, module in CHECKED_IN_FAMILY_MODULES.items():
        text = (tests / module).read_text(encoding="utf-8")
        assert name in text, (name, module)
        assert "parametrize_with_checks" in text or "check_param_validation" in text, module
