"""Every declared network persists: pickle, save/load, rollback, exact resume, ONNX.

The families here are test doubles on the real core: a regressor with three
networks (``module_``; ``target_``, an EMA copy with no optimizer; ``critic_``,
with an optimizer of its own, stepped in the family's training step), a
classifier whose input kind is images and whose network is convolutional,
and regressors on padded sequences (one masks by the lengths and exports to
ONNX, one packs its sequences and does not).
"""

import copy
import hashlib
import io
import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import sklears_neural
from sklears_neural import MLPClassifier, MLPRegressor
from sklears_neural.callbacks import Callback, Checkpoint
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.inputs import ArrayInput, SequenceInput
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.optim import make_optimizer
from sklears_neural.core.persistence import (
    declared_networks,
    declared_optimizers,
    example_inputs,
)
from sklears_neural.core.registry import register_estimator, register_module
from sklears_neural.exceptions import ModelFileError, PersistenceWarning

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)

X_DIGITS, Y_DIGITS = load_digits(n_class=5, return_X_y=True)
X_DIGITS, Y_DIGITS = X_DIGITS[:300] / 16.0, Y_DIGITS[:300]
RNG = np.random.RandomState(0)
X_REG = RNG.randn(120, 5)
Y_REG = X_REG @ RNG.randn(5) + 0.1 * RNG.randn(120)


# -- modules -----------------------------------------------------------------------


@register_module
class NetworksTestMLP(nn.Module):
    """One hidden layer."""

    def __init__(self, n_features, n_outputs, hidden=8):
        super().__init__()
        self.hidden = nn.Linear(n_features, hidden)
        self.out = nn.Linear(hidden, n_outputs)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


@register_module
class NetworksTestConv(nn.Module):
    """A strided convolution and a linear layer, for (C, H, W) samples."""

    def __init__(self, input_shape, n_outputs, channels=8):
        super().__init__()
        c, h, w = input_shape
        self.conv = nn.Conv2d(c, channels, 3, stride=2, padding=1)
        self.out = nn.Linear(channels * ((h + 1) // 2) * ((w + 1) // 2), n_outputs)

    def forward(self, x):
        return self.out(torch.relu(self.conv(x)).flatten(1))


@register_module
class NetworksTestMaskedMean(nn.Module):
    """Per-step features, averaged over each sequence's own steps: exports."""

    def __init__(self, n_features, n_outputs, hidden=8):
        super().__init__()
        self.step = nn.Linear(n_features, hidden)
        self.out = nn.Linear(hidden, n_outputs)

    def forward(self, x, lengths):
        steps = torch.arange(x.shape[1], device=x.device)
        mask = (steps[None, :] < lengths.to(x.device)[:, None]).to(x.dtype)
        h = torch.tanh(self.step(x)) * mask[..., None]
        return self.out(h.sum(dim=1) / mask.sum(dim=1, keepdim=True))


@register_module
class NetworksTestPackedGRU(nn.Module):
    """A GRU over packed sequences, its last state: does not export."""

    def __init__(self, n_features, n_outputs, hidden=6):
        super().__init__()
        self.gru = nn.GRU(n_features, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_outputs)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, h = self.gru(packed)
        return self.out(h[-1])


# -- families ----------------------------------------------------------------------


@register_estimator
class NetworksTestRegressor(MLPRegressor):
    """Three networks: ``module_`` (the core's), ``target_`` and ``critic_``.

    ``target_`` is an EMA of ``module_`` (no optimizer); ``critic_`` fits the
    same targets with its own optimizer. Both are updated in the family's
    training step, after the core's loss and before its optimizer step.
    """

    _networks = {
        **BaseNeuralEstimator._networks,
        "target_": {"spec": "_module_spec_"},
        "critic_": {"spec": "_critic_spec_", "optimizer": "_critic_optimizer",
                    "takes_input": True},
    }

    def _build_module(self, n_features_in, n_outputs):
        return ModuleSpec(NetworksTestMLP, {"n_features": int(n_features_in),
                                            "n_outputs": int(n_outputs)})

    def _initialize(self, n_features, targets, device, dtype):
        super()._initialize(n_features, targets, device, dtype)
        self._critic_spec_ = ModuleSpec(
            NetworksTestMLP,
            {"n_features": int(n_features), "n_outputs": self.n_outputs_, "hidden": 4},
        )
        self.critic_ = self._critic_spec_.build(self._generator).to(device, dtype)
        self.target_ = copy.deepcopy(self.module_)
        self._critic_optimizer = None

    def _train_step(self, policy):
        if self._critic_optimizer is None:
            self._critic_optimizer = make_optimizer(self.critic_, self)
        objective, mean_loss = self._objective(), self._mean_loss
        module, target, critic = self.module_, self.target_, self.critic_
        critic_optimizer = self._critic_optimizer

        def step(X, y, w):
            loss = objective(module, X, y, w)
            loss.backward()
            for p in critic.parameters():
                p.grad = None
            mean_loss(critic(X), y).backward()
            critic_optimizer.step()
            with torch.no_grad():
                for t, p in zip(target.parameters(), module.parameters()):
                    t.lerp_(p, 0.25)
            return loss

        return step


@register_estimator
class NetworksTestConvClassifier(MLPClassifier):
    """Images of shape (1, 8, 8) through a small convolutional network."""

    def _input_kind(self):
        return ArrayInput(input_shape=(1, 8, 8), spatial_dims=(2,))

    def _build_module(self, n_features_in, n_outputs):
        return ModuleSpec(NetworksTestConv, {
            "input_shape": list(self.input_shape_), "n_outputs": int(n_outputs),
        })


@register_estimator
class NetworksTestMaskedRegressor(MLPRegressor):
    """Padded sequences, averaged by their lengths."""

    def _input_kind(self):
        return SequenceInput()

    def _build_module(self, n_features_in, n_outputs):
        return ModuleSpec(NetworksTestMaskedMean, {"n_features": int(n_features_in),
                                                   "n_outputs": int(n_outputs)})


@register_estimator
class NetworksTestPackedRegressor(NetworksTestMaskedRegressor):
    """Padded sequences through a GRU on packed sequences."""

    def _build_module(self, n_features_in, n_outputs):
        return ModuleSpec(NetworksTestPackedGRU, {"n_features": int(n_features_in),
                                                  "n_outputs": int(n_outputs)})


def _sequences(seed, n=60, n_features=3):
    rng = np.random.RandomState(seed)
    X = [rng.randn(rng.randint(2, 7), n_features) for _ in range(n)]
    y = np.array([seq.sum() for seq in X])
    return X, y


X_SEQ, Y_SEQ = _sequences(0)


# -- helpers -----------------------------------------------------------------------


class _StopAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, **kwargs):
        trainer.should_stop = len(trainer.history) == self.epoch


class _Failure(Exception):
    pass


class _FailAt(Callback):
    """Raise after the first batch of epoch ``epoch``; note the critic's weights then."""

    def __init__(self, epoch, estimator):
        self.epoch = epoch
        self.estimator = estimator
        self.critic_at_failure = None

    def __deepcopy__(self, memo):
        # The fit trains with copies of its callbacks: this one reports back.
        return self

    def on_train_begin(self, trainer, **kwargs):
        self.epochs_done = 0

    def on_epoch_end(self, trainer, **kwargs):
        self.epochs_done += 1

    def on_batch_end(self, trainer, **kwargs):
        if self.epochs_done + 1 == self.epoch:
            self.critic_at_failure = _state(self.estimator.critic_)
            raise _Failure("mid-fit")


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _same_optimizer(a, b):
    """Equal state tensors and hyperparameters: optimizers or their state dicts."""
    a = a if isinstance(a, dict) else a.state_dict()
    b = b if isinstance(b, dict) else b.state_dict()
    if a["state"].keys() != b["state"].keys():
        return False
    for index, entry in a["state"].items():
        other = b["state"][index]
        if entry.keys() != other.keys() or not all(
            torch.equal(torch.as_tensor(entry[k]), torch.as_tensor(other[k]))
            for k in entry
        ):
            return False
    return a["param_groups"] == b["param_groups"]


NETWORKS = ("module_", "target_", "critic_")


def _fit_three(seed, **params):
    settings = dict(max_iter=3, batch_size=32, learning_rate_init=0.01,
                    random_state=seed)
    return NetworksTestRegressor(**{**settings, **params}).fit(X_REG, Y_REG)


def _assert_same_networks(a, b):
    for name in NETWORKS:
        assert _same_state(_state(getattr(a, name)), _state(getattr(b, name))), name
    assert _same_optimizer(a._optimizer, b._optimizer)
    assert _same_optimizer(a._critic_optimizer, b._critic_optimizer)


class _NoTorchPickler(pickle.Pickler):
    """Refuses torch objects: a pickled estimator holds numpy arrays only."""

    def reducer_override(self, obj):
        if isinstance(obj, (torch.Tensor, nn.Module, torch.optim.Optimizer,
                            torch.Generator)):
            raise pickle.PicklingError(f"a {type(obj).__name__} was pickled")
        return NotImplemented


def _pickle_round_trip(est):
    buffer = io.BytesIO()
    _NoTorchPickler(buffer).dump(est)
    return pickle.loads(buffer.getvalue())


def _edit_config(path, edit):
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    return path


# -- the declaration ---------------------------------------------------------------


def test_declaration_is_read_with_defaults():
    networks = declared_networks(NetworksTestRegressor)
    assert networks == {
        "module_": {"spec": "_module_spec_", "optimizer": "_optimizer",
                    "solver": "_optimizer_solver", "takes_input": True},
        "target_": {"spec": "_module_spec_", "optimizer": None, "solver": None,
                    "takes_input": False},
        "critic_": {"spec": "_critic_spec_", "optimizer": "_critic_optimizer",
                    "solver": None, "takes_input": True},
    }
    assert declared_optimizers(NetworksTestRegressor) == {
        "_optimizer": ("module_", "_optimizer_solver"),
        "_critic_optimizer": ("critic_", None),
    }
    assert declared_networks(sklears_neural.BernoulliRBM) == {}


@pytest.mark.parametrize("declaration, match", [
    ([("module_", "_module_spec_")], "not a dict"),
    ({"module_": "_module_spec_"}, "the entry of 'module_' has no 'spec'"),
    ({"module_": {"spec": "_s_", "optimiser": "_o"}}, r"unknown keys \['optimiser'\]"),
    ({"a_": {"spec": "_s_", "optimizer": "_o"}, "b_": {"spec": "_s_", "optimizer": "_o"}},
     "'b_' and 'a_' name the same optimizer '_o'"),
    ({"a_": {"spec": "_s_", "takes_input": 1}}, "'takes_input' of 'a_' is not a bool"),
])
def test_malformed_declarations_are_refused(declaration, match):
    cls = type("Malformed", (NetworksTestRegressor,), {"_networks": declaration})
    with pytest.raises(TypeError, match=match):
        declared_networks(cls)


def test_example_inputs_follow_the_input_kind():
    conv = NetworksTestConvClassifier(max_iter=1, random_state=0).fit(X_DIGITS, Y_DIGITS)
    seq = NetworksTestMaskedRegressor(max_iter=1, random_state=0).fit(X_SEQ, Y_SEQ)
    tab = _fit_three(0, max_iter=1)
    assert example_inputs(tab, n_samples=2).shape == (2, 5)
    assert example_inputs(conv, device="meta").shape == (1, 1, 8, 8)
    x, lengths = example_inputs(seq, n_samples=2, n_steps=4, dtype=torch.float64)
    assert x.shape == (2, 4, 3) and x.dtype == torch.float64
    assert lengths.tolist() == [4, 4] and lengths.dtype == torch.int64


# -- several networks: pickle, save/load, rollback, resume --------------------------


def test_pickle_keeps_every_network_and_optimizer(global_random_seed):
    est = _fit_three(global_random_seed)
    restored = _pickle_round_trip(est)  # torch objects refused: numpy only

    for name in NETWORKS:
        assert getattr(restored, name) is not getattr(est, name)
    _assert_same_networks(restored, est)
    np.testing.assert_array_equal(restored.predict(X_REG), est.predict(X_REG))
    # The critic's optimizer steps the rebuilt critic, not a stale copy.
    assert restored._critic_optimizer.param_groups[0]["params"][0] is (
        next(restored.critic_.parameters())
    )
    # Continuing proves the optimizer moments and the generator came along.
    est.partial_fit(X_REG, Y_REG)
    restored.partial_fit(X_REG, Y_REG)
    _assert_same_networks(restored, est)


def test_without_the_critic_optimizer_state_a_continuation_differs(global_random_seed):
    # Negative control for the test above: a fresh critic optimizer.
    est = _fit_three(global_random_seed)
    restored = _pickle_round_trip(est)
    restored._critic_optimizer = None
    est.partial_fit(X_REG, Y_REG)
    restored.partial_fit(X_REG, Y_REG)
    assert _same_state(_state(est.module_), _state(restored.module_))
    assert not _same_state(_state(est.critic_), _state(restored.critic_))


@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_save_load_keeps_every_network_and_optimizer(tmp_path, suffix,
                                                     global_random_seed):
    est = _fit_three(global_random_seed)
    path = tmp_path / f"three{suffix}"
    est.save(path)
    loaded = sklears_neural.load(path)

    _assert_same_networks(loaded, est)
    np.testing.assert_array_equal(loaded.predict(X_REG), est.predict(X_REG))
    est.partial_fit(X_REG, Y_REG)
    loaded.partial_fit(X_REG, Y_REG)
    _assert_same_networks(loaded, est)


def test_rollback_on_an_error_mid_fit_restores_every_network(global_random_seed):
    est = _fit_three(global_random_seed)
    before = {name: _state(getattr(est, name)) for name in NETWORKS}
    optimizers = {name: copy.deepcopy(getattr(est, name).state_dict())
                  for name in ("_optimizer", "_critic_optimizer")}
    history = list(est.history_)
    failing = _FailAt(2, est)
    est.set_params(warm_start=True, callbacks=[failing])
    with pytest.raises(_Failure):
        est.fit(X_REG, Y_REG)

    # More than an epoch trained every network before the failure ...
    critic_then = failing.critic_at_failure
    assert critic_then is not None and not _same_state(critic_then, before["critic_"])
    # ... and every one of them is back, with its optimizer's state.
    for name in NETWORKS:
        assert _same_state(_state(getattr(est, name)), before[name]), name
    for name, state in optimizers.items():
        assert _same_optimizer(getattr(est, name), state), name
    assert list(est.history_) == history


def test_exact_resume_from_a_checkpoint_carries_every_network(tmp_path,
                                                              global_random_seed):
    path = tmp_path / "ckpt.zip"
    straight = _fit_three(global_random_seed, max_iter=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PersistenceWarning)
        _fit_three(global_random_seed, max_iter=6,
                   callbacks=[Checkpoint(path), _StopAt(3)])
        resumed = sklears_neural.load(path)
    assert resumed.n_iter_ == 3
    negative = sklears_neural.load(path)
    negative._critic_optimizer = None

    resumed.set_params(warm_start=True).fit(X_REG, Y_REG)
    negative.set_params(warm_start=True).fit(X_REG, Y_REG)

    assert resumed.n_iter_ == straight.n_iter_ == 6
    _assert_same_networks(resumed, straight)
    assert resumed.loss_curve_ == straight.loss_curve_
    # Negative control: without the critic's moments the critic differs.
    assert not _same_state(_state(negative.critic_), _state(straight.critic_))


def test_undeclared_torch_state_cannot_be_saved(tmp_path):
    est = _fit_three(0, max_iter=1)
    est.extra_ = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"'extra_' holds a torch module that "
                                        r"NetworksTestRegressor._networks does not declare"):
        est.save(tmp_path / "a")
    del est.extra_
    est.extra_optimizer_ = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(TypeError, match="'extra_optimizer_' holds a torch optimizer"):
        est.save(tmp_path / "b")


def test_files_are_checked_against_the_declaration(tmp_path):
    est = _fit_three(0, max_iter=1)

    def undeclared(config):
        config["state"]["other_"] = config["state"].pop("target_")

    est.save(tmp_path / "a")
    path = _edit_config(tmp_path / "a", undeclared)
    with pytest.raises(ModelFileError, match="network in 'other_', which "
                                             "NetworksTestRegressor does not declare"):
        sklears_neural.load(path)

    def wider_critic(config):
        spec = config["state"]["_critic_spec_"]["__spec__"]["kwargs"]
        spec["hidden"] = 5

    est.save(tmp_path / "b")
    path = _edit_config(tmp_path / "b", wider_critic)
    with pytest.raises(ModelFileError, match="critic_ was saved with another "
                                             "architecture than _critic_spec_"):
        sklears_neural.load(path)

    def not_a_network(config):
        # Consistent otherwise: the critic's tensors leave the weights file too.
        config["state"]["critic_"] = 3
        weights = path / config["weights"]["file"]
        tensors = safetensors_load(weights.read_bytes())
        data = safetensors_save({k: v for k, v in tensors.items()
                                 if not k.startswith("critic.")})
        weights.write_bytes(data)
        config["weights"].update(sha256=hashlib.sha256(data).hexdigest(),
                                 bytes=len(data))

    path = tmp_path / "c"
    est.save(path)
    _edit_config(path, not_a_network)
    with pytest.raises(ModelFileError, match="critic_ is int, where "
                                             "NetworksTestRegressor keeps a network"):
        sklears_neural.load(path)


# -- images ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conv_model():
    return NetworksTestConvClassifier(max_iter=15, learning_rate_init=0.01,
                                      random_state=0).fit(X_DIGITS, Y_DIGITS)


def test_conv_model_round_trips_exactly(conv_model, tmp_path):
    assert conv_model.score(X_DIGITS, Y_DIGITS) > 0.9
    expected = conv_model.predict_proba(X_DIGITS)
    conv_model.save(tmp_path / "conv.zip")
    loaded = sklears_neural.load(tmp_path / "conv.zip")
    assert loaded.input_shape_ == (1, 8, 8)
    np.testing.assert_array_equal(loaded.predict_proba(X_DIGITS), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(conv_model))
                                  .predict_proba(X_DIGITS), expected)


@pytest.mark.parametrize("shape, match", [
    ([2, 8, 4], r"input_shape_ is \(2, 8, 4\), but the saved NetworksTestConv does "
                r"not take samples of shape \(2, 8, 4\)"),
    ([1, 8, 9], r"input_shape_ is \(1, 8, 9\), not the shape of one sample holding "
                r"n_features_in_=64 values"),
])
def test_conv_input_shape_must_fit_the_weights(conv_model, tmp_path, shape, match):
    conv_model.save(tmp_path / "m")
    path = _edit_config(tmp_path / "m", lambda c: c["state"].update(
        input_shape_={"__tuple__": shape}))
    with pytest.raises(ModelFileError, match=match):
        sklears_neural.load(path)


def test_conv_model_exports_to_onnx(conv_model):
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    from sklears_neural.core import export

    model = conv_model.to_onnx()
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "X" and graph_input.type == "tensor(float)"
    assert graph_input.shape[1:] == [1, 8, 8] and isinstance(graph_input.shape[0], str)

    images = X_DIGITS.reshape(-1, 1, 8, 8)
    # Flat rows and (n, 1, 8, 8) images validate to the same graph input.
    feed = export.graph_feed(conv_model, conv_model._input_kind().validate(
        conv_model, X_DIGITS, reset=False))
    np.testing.assert_array_equal(feed["X"], images.astype(np.float32))
    label, proba = session.run(["label", "probabilities"], feed)
    expected = conv_model.predict_proba(X_DIGITS)
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    clear = np.diff(np.sort(expected, axis=1)[:, -2:], axis=1)[:, 0] > 1e-5
    np.testing.assert_array_equal(label[clear], conv_model.predict(X_DIGITS)[clear])


def test_onnxruntime_backend_predicts_images(conv_model):
    pytest.importorskip("onnxruntime")
    est = copy.deepcopy(conv_model).set_params(inference_backend="onnxruntime")
    np.testing.assert_allclose(est.predict_proba(X_DIGITS),
                               conv_model.predict_proba(X_DIGITS), atol=1e-5)


def test_onnxruntime_backend_predicts_sequences():
    pytest.importorskip("onnxruntime")
    est = NetworksTestMaskedRegressor(max_iter=5, random_state=0).fit(X_SEQ, Y_SEQ)
    X_new, _ = _sequences(1, n=25)
    expected = est.predict(X_new)
    est.set_params(inference_backend="onnxruntime")
    np.testing.assert_allclose(est.predict(X_new), expected, rtol=1e-5, atol=1e-5)


# -- sequences ---------------------------------------------------------------------


def test_masked_sequence_model_exports_with_lengths():
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    from sklears_neural.core import export

    est = NetworksTestMaskedRegressor(max_iter=5, random_state=0).fit(X_SEQ, Y_SEQ)
    session = onnxruntime.InferenceSession(est.to_onnx(),
                                           providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == ["X", "lengths"]
    X_new, _ = _sequences(1, n=25)
    feed = export.graph_feed(est, est._input_kind().validate(est, X_new, reset=False))
    assert feed["lengths"].dtype == np.int64 and feed["X"].shape[1] == 6
    (prediction,) = session.run(["prediction"], feed)
    np.testing.assert_allclose(prediction, est.predict(X_new), rtol=1e-5, atol=1e-5)
    # Each sequence alone (its own length, no padding) gives the same.
    alone = session.run(["prediction"], export.graph_feed(
        est, est._input_kind().validate(est, X_new[:1], reset=False)))[0]
    np.testing.assert_allclose(alone, prediction[:1], rtol=1e-5, atol=1e-5)


def test_packed_sequence_model_names_the_family_and_the_fix(tmp_path):
    pytest.importorskip("onnxscript")
    est = NetworksTestPackedRegressor(max_iter=3, random_state=0).fit(X_SEQ, Y_SEQ)
    with pytest.raises(ValueError, match=(
        r"Cannot export NetworksTestPackedRegressor to ONNX: its "
        r"NetworksTestPackedGRU does not export for sequences of any length.*"
        r"inference_backend='torch'"
    )):
        est.to_onnx()


def test_packed_sequence_model_loads_and_its_widths_are_checked(tmp_path):
    est = NetworksTestPackedRegressor(max_iter=3, random_state=0).fit(X_SEQ, Y_SEQ)
    est.save(tmp_path / "gru")
    loaded = sklears_neural.load(tmp_path / "gru")
    # The check ran the loaded network for real (the meta device cannot pack)
    # and left its training flags as a built module has them.
    assert all(m.training for m in loaded.module_.modules())
    np.testing.assert_array_equal(loaded.predict(X_SEQ), est.predict(X_SEQ))

    path = _edit_config(tmp_path / "gru",
                        lambda c: c["state"].update(n_step_features_=4))
    with pytest.raises(ModelFileError, match=(
        r"n_step_features_ is 4, but the saved NetworksTestPackedGRU does not take "
        r"sequences of 4 features per step"
    )):
        sklears_neural.load(path)


class _PerStep(nn.Module):
    """One output row per step, as a per-step family's network gives."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.out = nn.Linear(n_features, n_outputs)

    def forward(self, x, lengths):
        return self.out(x)


def test_per_step_outputs_are_refused_before_exporting():
    pytest.importorskip("onnxscript")
    est = NetworksTestMaskedRegressor(max_iter=1, random_state=0).fit(X_SEQ, Y_SEQ)
    est.module_ = _PerStep(3, 1)
    with pytest.raises(ValueError, match=(
        r"Cannot export NetworksTestMaskedRegressor to ONNX: its network gives "
        r"outputs of shape \(N, 3, 1\).*inference_backend='torch'"
    )):
        est.to_onnx()
