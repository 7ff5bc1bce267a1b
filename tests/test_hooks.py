"""The core's family hooks, shown by small families written here.

An estimator fitted on X alone (an autoencoder on the unsupervised mixin), an
estimator that wraps another (a student distilled from a cloned teacher),
the input kinds of ``core.inputs`` and ``augment=`` on the base. Later
families only add modules on these hooks.
"""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import HasMethods
from torch import nn

from sklears_neural import MLPClassifier, MLPRegressor
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.augment import make_augmenter
from sklears_neural.core.inputs import (
    BOS,
    EOS,
    N_SPECIAL,
    PAD,
    TABULAR,
    UNK,
    ArrayInput,
    PaddedSequences,
    SequenceInput,
    TokenSequenceInput,
    TokenSequences,
    ids_to_tokens,
)
from sklears_neural.core.layers import MLP, ModuleSpec
from sklears_neural.core.tasks import NeuralRegressorMixin, NeuralUnsupervisedMixin

X_digits, y_digits = load_digits(return_X_y=True)
X_digits = X_digits[:600] / 16.0
y_digits = y_digits[:600]


def _quiet(estimator, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(*args, **kwargs)


def _training_params(estimator_class):
    """The shared training parameters of the base, at their MLP defaults."""
    params = MLPRegressor().get_params()
    names = set(BaseNeuralEstimator._parameter_constraints)
    return {k: v for k, v in params.items() if k in names}


# -- an estimator without y ------------------------------------------------------


class _AutoEncoder(nn.Module):
    def __init__(self, n_inputs, n_code):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_inputs, 32), nn.ReLU(),
                                     nn.Linear(32, n_code))
        self.decoder = nn.Sequential(nn.Linear(n_code, 32), nn.ReLU(),
                                     nn.Linear(32, n_inputs))

    def forward(self, x):
        return self.decoder(self.encoder(x))


class AutoEncoder(NeuralUnsupervisedMixin, TransformerMixin, BaseNeuralEstimator):
    """fit(X), transform(X) -> codes, score_samples(X) -> minus the error."""

    def __init__(self, n_code=4, *, solver="adam", alpha=0.0, batch_size="auto",
                 learning_rate="constant", learning_rate_init=0.003, power_t=0.5,
                 max_iter=60, shuffle=True, random_state=None, tol=1e-4,
                 verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, l1_ratio=0.0, weight_decay=0.0,
                 warmup_iters=0, clip_grad_norm=None, clip_grad_value=None,
                 device="cpu", precision="float32", inference_backend="torch",
                 callbacks=None, augment=None):
        self.n_code = n_code
        for name, value in list(locals().items()):
            if name not in ("self", "n_code", "__class__"):
                setattr(self, name, value)

    _parameter_constraints = {**BaseNeuralEstimator._parameter_constraints,
                              "n_code": [int]}

    def _build_module(self, n_features_in, n_outputs):
        return ModuleSpec(_AutoEncoder, {"n_inputs": n_features_in,
                                         "n_code": self.n_code})

    def transform(self, X):
        return self._raw_outputs(X, forward=lambda module, x: module.encoder(x))


def test_an_estimator_without_y_fits_transforms_and_scores():
    ae = _quiet(AutoEncoder(random_state=0), X_digits)
    codes = ae.transform(X_digits)
    assert codes.shape == (600, 4) and codes.dtype == np.float64
    # Training reduced the reconstruction error, which score_samples reports.
    untrained = _quiet(AutoEncoder(random_state=0, max_iter=1), X_digits)
    assert ae.score(X_digits) > untrained.score(X_digits) + 1.0
    scores = ae.score_samples(X_digits)
    recon = ae._raw_outputs(X_digits)
    np.testing.assert_allclose(
        scores, -0.5 * ((recon - X_digits) ** 2).sum(axis=1), rtol=1e-5
    )
    # Every toolbox feature applies: early stopping watches minus the loss.
    stopped = _quiet(AutoEncoder(random_state=0, early_stopping=True), X_digits)
    assert stopped.best_validation_score_ == max(stopped.validation_scores_)
    assert np.allclose(stopped.validation_scores_,
                       [-v for v in stopped.validation_loss_curve_])
    # partial_fit continues, pickling is exact.
    before = ae.score(X_digits)
    for _ in range(3):
        ae.partial_fit(X_digits)
    assert ae.score(X_digits) != before
    restored = pickle.loads(pickle.dumps(ae))
    assert np.array_equal(restored.transform(X_digits), ae.transform(X_digits))


def test_an_estimator_without_y_saves_and_loads(tmp_path):
    from sklears_neural import load
    from sklears_neural.core.registry import register_estimator, register_module

    register_module(_AutoEncoder)
    register_estimator(AutoEncoder)
    ae = _quiet(AutoEncoder(random_state=0, max_iter=5), X_digits)
    ae.save(tmp_path / "ae.zip")
    loaded = load(tmp_path / "ae.zip")
    assert np.array_equal(loaded.transform(X_digits), ae.transform(X_digits))


# -- an estimator that wraps another ----------------------------------------------


class DistilledRegressor(NeuralRegressorMixin, RegressorMixin, BaseNeuralEstimator):
    """A small MLP trained on a cloned teacher's predictions (distillation)."""

    def __init__(self, teacher=None, hidden=8, *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.003, power_t=0.5, max_iter=100, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, l1_ratio=0.0,
                 weight_decay=0.0, warmup_iters=0, clip_grad_norm=None,
                 clip_grad_value=None, device="cpu", precision="float32",
                 inference_backend="torch", callbacks=None, augment=None,
                 loss="squared_error"):
        for name, value in list(locals().items()):
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    _parameter_constraints = {**BaseNeuralEstimator._parameter_constraints,
                              **NeuralRegressorMixin._parameter_constraints,
                              "teacher": [None, HasMethods(["fit", "predict"])],
                              "hidden": [int]}

    def _build_module(self, n_features_in, n_outputs):
        return ModuleSpec(MLP, {"n_inputs": n_features_in,
                                "hidden_layer_sizes": [self.hidden],
                                "n_outputs": n_outputs})

    def _validate_training_data(self, X, y, sample_weight, **kwargs):
        # The teacher is cloned and fitted on the true targets; the student
        # learns the teacher's predictions.
        teacher = MLPRegressor(hidden_layer_sizes=(64,), random_state=0) if self.teacher is None else self.teacher
        self.teacher_ = _quiet(clone(teacher), X, y)
        return super()._validate_training_data(
            X, self.teacher_.predict(X), sample_weight, **kwargs
        )


def test_an_estimator_that_wraps_another_clones_it_and_exposes_its_params():
    X, y = X_digits, X_digits[:, 20] * 2 + X_digits[:, 43]
    teacher = MLPRegressor(hidden_layer_sizes=(32,), max_iter=200, random_state=0)
    student = DistilledRegressor(teacher=teacher, random_state=0)
    # Nested parameters, as in any scikit-learn meta-estimator.
    assert student.get_params()["teacher__hidden_layer_sizes"] == (32,)
    student.set_params(teacher__alpha=0.01)
    assert student.teacher.alpha == 0.01
    _quiet(student, X, y)
    assert student.teacher_ is not student.teacher  # cloned, never fitted in place
    assert not hasattr(student.teacher, "module_")
    agreement = np.corrcoef(student.predict(X), student.teacher_.predict(X))[0, 1]
    assert agreement > 0.9
    # clone and a grid over the inner estimator's parameter work.
    search = GridSearchCV(clone(student), {"teacher__alpha": [1e-4, 1e-2]}, cv=2)
    _quiet(search, X, y)
    assert search.best_params_["teacher__alpha"] in (1e-4, 1e-2)
    assert pickle.loads(pickle.dumps(student)).predict(X[:5]).shape == (5,)


# -- input kinds -------------------------------------------------------------------


class _Owner(BaseEstimator):
    """Stands in for an estimator: the kinds set its fitted attributes."""


def test_tabular_kind_is_scikit_learns_validation():
    owner = _Owner()
    X = TABULAR.validate(owner, X_digits, reset=True)
    assert X is X_digits and owner.n_features_in_ == 64


def test_array_kind_reshapes_flat_rows_and_checks_samples():
    owner = _Owner()
    kind = ArrayInput(input_shape=(1, 8, 8))
    X = kind.validate(owner, X_digits, reset=True)
    assert X.shape == (600, 1, 8, 8) and owner.input_shape_ == (1, 8, 8)
    assert np.shares_memory(X, X_digits)  # a view, not a copy
    # N-D input of the same sample shape is taken as it is.
    assert kind.validate(owner, X, reset=False).shape == (600, 1, 8, 8)
    with pytest.raises(ValueError, match=r"3 channels instead of 1"):
        ArrayInput().validate(owner, np.zeros((2, 3, 8, 8)), reset=False)
    with pytest.raises(ValueError, match=r"input_shape=\(1, 8, 8\) holds 64 values"):
        kind.validate(owner, X_digits[:, :60], reset=True)
    with pytest.raises(ValueError, match="dimensions"):
        ArrayInput(spatial_dims=(2,)).validate(owner, np.zeros((2, 1, 5)), reset=True)
    bad = X.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kind.validate(owner, bad, reset=False)
    with pytest.raises(ValueError, match="'input_shape' parameter"):
        ArrayInput(input_shape=(0, 8)).validate(owner, X, reset=True)


def test_sequence_kind_pads_ragged_input_and_batches_by_length():
    owner = _Owner()
    rng = np.random.RandomState(0)
    seqs = [rng.randn(n, 3) for n in (5, 2, 7)]
    X = SequenceInput().validate(owner, seqs, reset=True)
    assert isinstance(X, PaddedSequences) and X.shape == (3, 7, 3)
    assert X.lengths.tolist() == [5, 2, 7] and owner.n_features_in_ == 3
    assert np.array_equal(X.values[1, :2], seqs[1]) and not X.values[1, 2:].any()
    data = SequenceInput().dataset(X, dtype=torch.float64, device=torch.device("cpu"))
    (x, lengths), y, w = data.batch(torch.tensor([0, 1]))
    assert x.shape == (2, 5, 3) and lengths.tolist() == [5, 2]  # cut to 5 steps
    # Univariate (T_i,) sequences and flat rows are one feature per step.
    assert SequenceInput().validate(_Owner(), [np.ones(4), np.ones(2)],
                                    reset=True).shape == (2, 4, 1)
    assert SequenceInput(input_shape=(8, 8)).validate(
        _Owner(), X_digits, reset=True).shape == (600, 8, 8)
    with pytest.raises(ValueError, match="sequence 0 has 3, sequence 1 has 2"):
        SequenceInput().validate(_Owner(), [np.ones((2, 3)), np.ones((2, 2))],
                                 reset=True)
    with pytest.raises(ValueError, match="Sequence 1 of X is empty"):
        SequenceInput().validate(_Owner(), [np.ones((2, 3)), np.ones((0, 3))],
                                 reset=True)
    with pytest.raises(ValueError, match="NaN"):
        SequenceInput().validate(_Owner(), [np.array([[np.nan]])], reset=True)
    with pytest.raises(ValueError, match="fitted with 3 features per step"):
        SequenceInput().validate(owner, [np.ones((2, 4))], reset=False)


def test_token_kind_refuses_bad_input_with_the_fix():
    owner = _Owner()
    kind = TokenSequenceInput(token_targets=True)
    cases = [
        ("abc", ValueError, r"got a single string\. Wrap it in a list"),
        (["ab", ""], ValueError, "Sequence 1 of X is empty"),
        (["ab", np.array([1, 2])], ValueError, "X mixes strings and integer arrays"),
        ([np.array([0.5, 1.0])], ValueError,
         r"holds float64 values.*astype\(np.int64\)"),
        ([np.ones((2, 2), dtype=int)], ValueError, "Sequence 0 of X has 2 dimensions"),
        ([b"ab"], TypeError, r"is bytes.*seq.decode\(\)"),
        (5, TypeError,
         r"list of token sequences \(strings or 1-D integer arrays\); got int"),
    ]
    for X, error, message in cases:
        with pytest.raises(error, match=message):
            kind.validate(owner, X, reset=True)
    kind.validate_with_targets(owner, ["ab", "ba"], ["x", "yx"], reset=True)
    with pytest.raises(ValueError, match=r"did not see in fit, e\.g\. \['c'\] \(in 1 "
                                         r"sequence\(s\)\)\. Set handle_unknown='unk'"):
        kind.validate(owner, ["ab", "cab"], reset=False)
    with pytest.raises(ValueError,
                       match=r"y has tokens .* e\.g\. \['z'\].*warm_start=False"):
        kind.validate_with_targets(owner, ["ab"], ["z"], reset=False)
    with pytest.raises(ValueError, match="X holds integer arrays, but _Owner was "
                                         "fitted on strings"):
        kind.validate(owner, [np.array([4, 5])], reset=False)
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[2, 1\]"):
        kind.validate_with_targets(owner, ["ab", "ba"], ["x"], reset=False)
    with pytest.raises(ValueError, match="requires y to be passed"):
        kind.validate_with_targets(owner, ["ab"], None, reset=False)
    # Unknown input tokens become UNK on request; the vocabulary stays as fitted.
    unk = TokenSequenceInput(handle_unknown="unk", token_targets=True)
    assert unk.validate(owner, ["cab"], reset=False).ids.tolist() == [[UNK, 4, 5]]
    assert owner.vocabulary_ == {"input": {"a": 4, "b": 5}, "output": {"x": 4, "y": 5}}
    # No augmentation applies to token ids yet.
    assert kind.layout == "tokens" and make_augmenter(None, layout="tokens") is None
    with pytest.raises(ValueError, match="'gaussian_noise' does not apply to 'tokens' "
                                         "inputs.*No augmentation applies.*"
                                         "augment=None"):
        make_augmenter("gaussian_noise", layout="tokens")


def test_token_kind_batches_ragged_sequences_cut_to_the_longest():
    owner = _Owner()
    kind = TokenSequenceInput(token_targets=True)
    X, targets = kind.validate_with_targets(
        owner, ["abcde", "ab", "abc", "a"], ["xyzw", "", "x", "xy"], reset=True)
    assert X.ids.shape == (4, 5) and X.lengths.tolist() == [5, 2, 3, 1]
    assert targets.shape == (4, 6) and np.array_equal(targets, X.targets)
    data = kind.dataset(X, targets, np.arange(1.0, 5.0), dtype=torch.float64,
                        device=torch.device("cpu"))
    (src, src_lengths, tgt_in, tgt_lengths), y, w = data.batch(torch.tensor([1, 3]))
    # Sources cut to 2 tokens, targets to BOS + 2 tokens (the longest of the two).
    assert src.tolist() == [[4, 5], [4, PAD]] and src_lengths.tolist() == [2, 1]
    # Output ids: w=4, x=5, y=6, z=7. A shorter decoder input runs into its
    # EOS and PAD, beyond tgt_lengths.
    assert tgt_in.tolist() == [[BOS, EOS, PAD], [BOS, 5, 6]]
    assert y.tolist() == [[EOS, PAD, PAD], [5, 6, EOS]]
    assert tgt_lengths.tolist() == [1, 3]
    assert src.dtype == tgt_in.dtype == y.dtype == torch.long
    assert w.dtype == torch.float64 and w.tolist() == [2.0, 4.0]
    # Splitters' subsets are cut the same way, targets included.
    part = X[[1, 3], ...]
    assert isinstance(part, TokenSequences) and part.ids.shape == (2, 2)
    assert part.targets.tolist() == [[BOS, EOS, PAD, PAD], [BOS, 5, 6, EOS]]
    assert data.all()[0][0].shape == (4, 5)
    # 11 ids per row (5 source, 6 target) of 8 bytes: two rows per 176 bytes.
    assert data.chunks(max_bytes=8 * 11 * 2) == [slice(0, 2), slice(2, 4)]
    # Per-sequence targets (a text classifier): (src, lengths) and y per row.
    labels = TokenSequenceInput()
    X, y = labels.validate_with_targets(_Owner(), ["abc", "a", "ab"], [2, 0, 1],
                                        reset=True)
    data = labels.dataset(X, y, dtype=torch.float32, device=torch.device("cpu"),
                          target_dtype=torch.long)
    (src, src_lengths), y, w = data.batch(slice(1, 3))
    assert src.tolist() == [[4, PAD], [4, 5]] and y.tolist() == [0, 1] and w is None
    assert src_lengths.tolist() == [1, 2] and y.dtype == torch.long


def test_token_kind_round_trips_strings_and_int_arrays():
    words = ["banana", "cab", "a"]
    codes = [np.array([ord(c) for c in w]) for w in words]
    string_owner, int_owner = _Owner(), _Owner()
    kind = TokenSequenceInput()
    from_str = kind.validate(string_owner, words, reset=True)
    from_int = kind.validate(int_owner, codes, reset=True)
    # Sorted vocabularies: characters and their code points get the same ids.
    assert np.array_equal(from_str.ids, from_int.ids)
    assert from_str.ids[0].tolist() == [5, 4, 7, 4, 7, 4]  # a=4, b=5, c=6, n=7
    back = ids_to_tokens(from_str.ids, string_owner.vocabulary_["input"], "str")
    assert back.tolist() == words
    back = ids_to_tokens(from_int.ids, int_owner.vocabulary_["input"], "int")
    assert all(b.dtype == np.int64 and np.array_equal(b, c)
               for b, c in zip(back, codes))
    assert string_owner.n_features_in_ == 1 and string_owner._input_type == "str"
    # A row ends at its first reserved id (EOS, PAD).
    ids = np.array([[5, 4, EOS, 6], [N_SPECIAL, PAD, 5, 5]])  # "ba", "a"
    assert ids_to_tokens(ids, string_owner.vocabulary_["input"], "str").tolist() == [
        "ba", "a"]
    # The probe batch of persistence: the largest ids, int64.
    src, src_lengths = kind.example_inputs(string_owner, n_samples=2, n_steps=3)
    assert src.tolist() == [[7, 7, 7]] * 2 and src_lengths.tolist() == [3, 3]
    with pytest.raises(ValueError, match="not a dict of the input vocabulary"):
        kind.example_inputs(_Owner())


def test_token_ids_are_those_of_the_seq2seq_networks():
    from sklears_neural.nn import seq2seq

    assert (PAD, BOS, EOS, UNK, N_SPECIAL) == (
        seq2seq.PAD, seq2seq.BOS, seq2seq.EOS, seq2seq.UNK, seq2seq.N_SPECIAL)


# -- augment= on the base -----------------------------------------------------------


def test_augment_changes_training_not_prediction_and_is_seeded():
    settings = dict(hidden_layer_sizes=(16,), max_iter=5, random_state=0)
    plain = _quiet(MLPClassifier(**settings), X_digits, y_digits)
    noisy = _quiet(MLPClassifier(augment=("gaussian_noise", {"std": 0.3}), **settings),
                   X_digits, y_digits)
    again = _quiet(MLPClassifier(augment=("gaussian_noise", {"std": 0.3}), **settings),
                   X_digits, y_digits)
    assert not np.allclose(plain.loss_curve_, noisy.loss_curve_)
    assert noisy.loss_curve_ == again.loss_curve_
    # Prediction never augments: the same weights give the same outputs
    # whatever augment says.
    proba = noisy.predict_proba(X_digits)
    noisy.set_params(augment=None)
    assert np.array_equal(proba, noisy.predict_proba(X_digits))
    assert np.array_equal(proba, again.predict_proba(X_digits))


def test_augment_is_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match="'flip' does not apply to 'tabular'"):
        MLPClassifier(augment="flip").fit(X_digits, y_digits)
    with pytest.raises(ValueError, match="solver='lbfgs' needs a deterministic"):
        MLPClassifier(solver="lbfgs", augment="gaussian_noise").fit(X_digits, y_digits)
    with pytest.raises(ValueError, match="augment"):
        MLPClassifier(augment="no_such_thing").fit(X_digits, y_digits)


def test_augmented_fit_resumes_exactly(tmp_path):
    from sklears_neural import load
    from sklears_neural.callbacks import Checkpoint

    settings = dict(hidden_layer_sizes=(16,), max_iter=6, random_state=0,
                    augment=["gaussian_noise", "feature_dropout"])
    whole = _quiet(MLPClassifier(**settings), X_digits, y_digits)
    path = tmp_path / "ckpt.zip"
    _quiet(MLPClassifier(**{**settings, "max_iter": 3},
                         callbacks=[Checkpoint(path, every=1)]), X_digits, y_digits)
    resumed = load(path)
    resumed.set_params(max_iter=6, warm_start=True, callbacks=None)
    _quiet(resumed, X_digits, y_digits)
    assert resumed.loss_curve_[3:] == whole.loss_curve_[3:]
    assert np.array_equal(resumed.predict_proba(X_digits), whole.predict_proba(X_digits))
