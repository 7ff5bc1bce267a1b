"""Tests for save/load (sklears_neural.core.persistence and .serialization)."""

import ast
import datetime
import errno
import hashlib
import json
import os
import pathlib
import sys
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from sklearn.datasets import load_iris
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

import sklears_neural
from sklears_neural import BernoulliRBM, MLPClassifier, MLPRegressor, exceptions
from sklears_neural.callbacks import Callback
from sklears_neural.core import persistence, registry, serialization
from sklears_neural.core.persistence import read_info
from sklears_neural.core.serialization import (
    FORMAT_VERSION,
    ModelFileError,
    PersistenceWarning,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)


X, Y = load_iris(return_X_y=True)
X = StandardScaler().fit_transform(X)
NAMES = np.array(["setosa", "versicolor", "virginica"])
X_BIN = (X > 0).astype(np.float64)


def _fit(kind, seed):
    small = {"hidden_layer_sizes": (8,), "max_iter": 5, "random_state": seed}
    if kind == "multiclass-str":
        return MLPClassifier(**small).fit(X, NAMES[Y])
    if kind == "binary":
        return MLPClassifier(**small).fit(X, (Y == 2).astype(int))
    if kind == "multilabel":
        return MLPClassifier(**small).fit(X, np.column_stack([Y == 0, Y == 1, Y > 0]))
    if kind == "multi-output":
        return MLPRegressor(**small).fit(X, X[:, :2] + X[:, 2:])
    if kind == "poisson":
        return MLPRegressor(loss="poisson", **small).fit(X, np.round(np.exp(X[:, 0])))
    if kind == "lbfgs-float64":
        est = MLPRegressor(solver="lbfgs", precision="float64", **small)
        return est.fit(X, X[:, 0])
    if kind == "layer-options":
        # Composite options in the module spec, parametrized and norm weights.
        return MLPClassifier(
            activation=("prelu", {"per_channel": True}), residual="gated",
            spectral_norm=True, layer_norm=True, **small,
        ).fit(X, Y)
    if kind == "rbm":
        return BernoulliRBM(n_components=4, n_iter=2, random_state=seed).fit(X_BIN)
    raise AssertionError(kind)


def _outputs(est):
    if isinstance(est, BernoulliRBM):
        return {"transform": est.transform(X_BIN)}
    outputs = {"predict": est.predict(X)}
    if isinstance(est, MLPClassifier):
        outputs["predict_proba"] = est.predict_proba(X)
    return outputs


def _weights(est):
    return dict(est.module_.state_dict())


KINDS = ["multiclass-str", "binary", "multilabel", "multi-output", "poisson",
         "lbfgs-float64", "layer-options", "rbm"]
FITTED = ["n_features_in_", "n_outputs_", "out_activation_", "loss_curve_", "history_",
          "n_iter_", "t_", "loss_", "best_loss_", "converged_", "components_",
          "intercept_hidden_", "intercept_visible_", "h_samples_"]


@pytest.mark.parametrize("suffix", ["", ".zip"])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_predicts_identically(kind, suffix, tmp_path, global_random_seed):
    est = _fit(kind, global_random_seed)
    path = tmp_path / f"model{suffix}"
    est.save(path)
    assert zipfile.is_zipfile(path) if suffix else path.is_dir()

    loaded = sklears_neural.load(path)

    assert type(loaded) is type(est) and loaded is not est
    assert loaded.get_params() == est.get_params()
    for method, expected in _outputs(est).items():
        got = getattr(loaded, method)(X_BIN if kind == "rbm" else X)
        assert got.dtype == expected.dtype
        assert np.array_equal(got, expected), method
    for name in FITTED:
        if hasattr(est, name):
            got, expected = getattr(loaded, name), getattr(est, name)
            assert type(got) is type(expected), name
            if isinstance(expected, np.ndarray):
                assert got.dtype == expected.dtype, name
                assert np.array_equal(got, expected), name
            else:
                assert got == expected, name
    if hasattr(est, "module_"):
        for key, tensor in _weights(est).items():
            assert torch.equal(_weights(loaded)[key], tensor)
        dtypes = [next(e.module_.parameters()).dtype for e in (loaded, est)]
        assert dtypes[0] == dtypes[1]
    if hasattr(est, "classes_"):
        assert loaded.classes_.dtype == est.classes_.dtype
        assert np.array_equal(loaded.classes_, est.classes_)


LABELS = {
    "str": NAMES,
    "object": NAMES.astype(object),
    "int": np.array([3, 7, 11]),
    "float": np.array([-1.0, 2.0, 30.0]),
    "bool": np.array([False, True, True]),
}


@pytest.mark.parametrize("labels", LABELS.values(), ids=LABELS.keys())
def test_class_labels_keep_their_dtype(labels, tmp_path):
    y = labels[Y]
    est = MLPClassifier((4,), max_iter=3, random_state=0).fit(X, y)
    est.save(tmp_path / "m.zip")
    loaded = sklears_neural.load(tmp_path / "m.zip")
    assert loaded.classes_.dtype == est.classes_.dtype
    assert np.array_equal(loaded.classes_, est.classes_)
    predicted = loaded.predict(X)
    assert predicted.dtype == est.predict(X).dtype
    assert np.array_equal(predicted, est.predict(X))
    assert loaded.score(X, y) == est.score(X, y)


def test_feature_names_are_kept(tmp_path):
    frame = pd.DataFrame(X, columns=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    est = MLPClassifier((4,), max_iter=3, random_state=0).fit(frame, Y)
    est.save(tmp_path / "m")
    loaded = sklears_neural.load(tmp_path / "m")
    assert loaded.feature_names_in_.dtype == object
    assert list(loaded.feature_names_in_) == list(frame.columns)
    assert np.array_equal(loaded.predict_proba(frame), est.predict_proba(frame))
    with pytest.raises(ValueError, match="feature names"):
        loaded.predict(frame[frame.columns[::-1]])


def _partial_fit_twice(est, y):
    kwargs = {"classes": np.unique(y)} if isinstance(est, MLPClassifier) else {}
    est.partial_fit(X, y, **kwargs)
    est.partial_fit(X[::-1], y[::-1])
    return est


CONTINUATIONS = {
    "adam-classifier": (lambda s: MLPClassifier((8,), random_state=s), NAMES[Y]),
    "sgd-invscaling": (
        lambda s: MLPRegressor(
            hidden_layer_sizes=(8,), solver="sgd", learning_rate="invscaling",
            momentum=0.9, random_state=s,
        ),
        X[:, 0],
    ),
    "dropout-batch-norm": (
        # Masks drawn from the saved generator; batch-norm running statistics.
        lambda s: MLPClassifier((8,), dropout=0.2, batch_norm=True, random_state=s),
        NAMES[Y],
    ),
    "early-stopping": (
        lambda s: MLPClassifier((8,), early_stopping=True, n_iter_no_change=1,
                                random_state=s),
        Y,
    ),
}


@pytest.mark.parametrize("case", CONTINUATIONS.values(), ids=CONTINUATIONS.keys())
def test_loaded_model_continues_partial_fit_identically(
    case, tmp_path, global_random_seed
):
    make, y = case
    est = _partial_fit_twice(make(global_random_seed), y)
    est.save(tmp_path / "m.zip")
    loaded = sklears_neural.load(tmp_path / "m.zip")

    est.partial_fit(X, y)
    loaded.partial_fit(X, y)

    for key, tensor in _weights(est).items():
        assert torch.equal(_weights(loaded)[key], tensor), key
    for a, b in zip(est._optimizer.state.values(), loaded._optimizer.state.values()):
        for name in a:
            assert torch.equal(a[name], b[name]), name
    assert loaded.history_ == est.history_
    assert loaded.t_ == est.t_
    assert loaded.converged_ == est.converged_


def test_continuation_needs_the_saved_optimizer_state(tmp_path):
    # Negative control for the test above: without Adam's moments, one more
    # partial_fit gives other weights.
    est = _partial_fit_twice(MLPClassifier((8,), random_state=0), Y)
    est.save(tmp_path / "m")
    loaded = sklears_neural.load(tmp_path / "m")
    loaded._optimizer = None
    est.partial_fit(X, Y)
    loaded.partial_fit(X, Y)
    key = "layers.0.weight"
    assert not torch.equal(_weights(loaded)[key], _weights(est)[key])


def test_rbm_continues_partial_fit_identically(tmp_path, global_random_seed):
    est = BernoulliRBM(n_components=4, random_state=global_random_seed)
    est.partial_fit(X_BIN[:50]).partial_fit(X_BIN[50:100])
    est.save(tmp_path / "rbm.zip")
    loaded = sklears_neural.load(tmp_path / "rbm.zip")
    est.partial_fit(X_BIN[100:])
    loaded.partial_fit(X_BIN[100:])
    for name in ["components_", "intercept_hidden_", "intercept_visible_",
                 "h_samples_"]:
        assert np.array_equal(getattr(loaded, name), getattr(est, name)), name
    assert np.array_equal(loaded.gibbs(X_BIN[:5]), est.gibbs(X_BIN[:5]))


def test_save_changes_nothing_and_loads_are_independent(tmp_path):
    est = _partial_fit_twice(MLPClassifier((8,), random_state=0), Y)
    before = dict(vars(est))
    weights = {k: v.clone() for k, v in _weights(est).items()}
    proba = est.predict_proba(X)
    est.save(tmp_path / "m")
    assert vars(est).keys() == before.keys()
    assert all(vars(est)[k] is before[k] for k in before)
    assert all(torch.equal(weights[k], v) for k, v in _weights(est).items())

    first = sklears_neural.load(tmp_path / "m")
    second = sklears_neural.load(tmp_path / "m")
    first.partial_fit(X, Y)
    assert np.array_equal(second.predict_proba(X), proba)
    assert np.array_equal(est.predict_proba(X), proba)


def test_metadata_versions_and_hash_are_recorded(tmp_path):
    est = _partial_fit_twice(MLPClassifier((8,), random_state=0), Y)
    metadata = {"dataset": "iris", "accuracy": 0.25, "tags": ["a", 1, None, True],
                "n_samples": np.int64(150)}
    est.save(tmp_path / "m", metadata=metadata)

    info = read_info(tmp_path / "m")
    assert info["metadata"] == metadata
    assert type(info["metadata"]["n_samples"]) is int
    assert info["class"] == "MLPClassifier"
    assert info["params"] == est.get_params()
    assert info["format_version"] == FORMAT_VERSION == 1
    assert info["library_version"] == sklears_neural.__version__
    assert info["torch_version"] == torch.__version__
    created = datetime.datetime.fromisoformat(info["created"])
    assert created.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - created).total_seconds()) < 120

    config = json.loads((tmp_path / "m" / "config.json").read_text())
    data = _weights_file(tmp_path / "m").read_bytes()
    assert config["weights"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert config["weights"]["bytes"] == len(data)
    digest = config["weights"]["sha256"]
    assert config["weights"]["file"] == f"model-{digest[:16]}.safetensors"
    keys = set(safetensors_load(data))
    assert {f"module.{k}" for k in _weights(est)} <= keys
    assert {f"optimizer.state.{i}.{n}" for i in range(4)
            for n in ("step", "exp_avg", "exp_avg_sq")} <= keys


def test_metadata_must_be_json_data(tmp_path):
    est = MLPClassifier((4,), max_iter=2, random_state=0).fit(X, Y)
    with pytest.raises(TypeError, match=r"metadata\['run'\]\['seed'\]"):
        est.save(tmp_path / "m", metadata={"run": {"seed": np.random.RandomState(0)}})
    assert not (tmp_path / "m").exists()


def test_unfitted_estimator_round_trips(tmp_path):
    est = MLPRegressor(loss="poisson", hidden_layer_sizes=(3, 2), alpha=0.5)
    est.save(tmp_path / "m.zip")
    loaded = sklears_neural.load(tmp_path / "m.zip")
    assert loaded.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(loaded)


class _Recorder(Callback):
    pass


def test_non_json_params_are_saved_as_null_with_a_warning(tmp_path):
    est = MLPClassifier((4,), max_iter=2, random_state=np.random.RandomState(0),
                        callbacks=[_Recorder()]).fit(X, Y)
    with pytest.warns(PersistenceWarning) as record:
        est.save(tmp_path / "m")
    messages = " ".join(str(w.message) for w in record)
    assert "'random_state' parameter" in messages
    assert "'callbacks' parameter" in messages
    assert {w.filename for w in record} == {__file__}  # points at the save call
    loaded = sklears_neural.load(tmp_path / "m")
    assert loaded.random_state is None and loaded.callbacks is None
    assert np.array_equal(loaded.predict_proba(X), est.predict_proba(X))


def test_unregistered_class_cannot_be_saved(tmp_path):
    class MyClassifier(MLPClassifier):
        pass

    est = MyClassifier((4,), max_iter=2, random_state=0).fit(X, Y)
    with pytest.raises(TypeError, match=r"register_estimator\(MyClassifier\)"):
        est.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


# -- writing --------------------------------------------------------------------


def _files(path):
    return sorted(p.name for p in path.iterdir())


def _disk_full(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("same", [False, True], ids=["new-weights", "same-weights"])
@pytest.mark.parametrize("failure", ["write", "rename"])
def test_failed_overwrite_keeps_the_old_model(tmp_path, monkeypatch, failure, same):
    # The weights are written, then config.json fails (the disk is full):
    # the directory still holds the old model, and nothing else.
    old = MLPClassifier((8,), max_iter=3, random_state=0).fit(X, Y)
    new = old if same else MLPClassifier((8,), max_iter=3, random_state=1).fit(X, Y)
    path = tmp_path / "m"
    old.save(path)
    before = {name: (path / name).read_bytes() for name in _files(path)}
    if failure == "write":
        write_file = serialization._write_file
        monkeypatch.setattr(serialization, "_write_file", lambda folder, name, data: (
            _disk_full() if name == "config.json" else write_file(folder, name, data)))
    else:
        replace = os.replace
        monkeypatch.setattr(os, "replace", lambda src, dst: (
            _disk_full() if os.path.basename(dst) == "config.json"
            else replace(src, dst)))
    with pytest.raises(OSError, match="No space left on device"):
        new.save(path)
    monkeypatch.undo()

    assert {name: (path / name).read_bytes() for name in _files(path)} == before
    loaded = sklears_neural.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), old.predict_proba(X))


def test_overwrite_replaces_the_model_and_its_weights_file(tmp_path):
    old = MLPClassifier((8,), max_iter=3, random_state=0).fit(X, Y)
    new = MLPRegressor(hidden_layer_sizes=(5,), max_iter=3, random_state=1)
    new.fit(X, X[:, 0])
    path = tmp_path / "m"
    old.save(path)
    (path / "notes.txt").write_text("mine")
    new.save(path)

    loaded = sklears_neural.load(path)
    assert type(loaded) is MLPRegressor
    np.testing.assert_array_equal(loaded.predict(X), new.predict(X))
    for key, tensor in _weights(new).items():
        assert torch.equal(_weights(loaded)[key], tensor)
    digest = json.loads((path / "config.json").read_text())["weights"]["sha256"]
    assert _files(path) == [
        "config.json", f"model-{digest[:16]}.safetensors", "notes.txt"]


def test_directories_of_the_first_layout_load_and_are_upgraded(tmp_path):
    # Saved before weights files were named by their hash: model.safetensors.
    est = MLPClassifier((8,), max_iter=3, random_state=0).fit(X, Y)
    path = _saved(tmp_path)
    _weights_file(path).rename(path / "model.safetensors")
    _edit_config(path, lambda c: c["weights"].update(file="model.safetensors"))
    (path / "model.safetensors.bak").write_bytes(b"a user's copy")
    assert len(sklears_neural.load(path).history_) == 2

    est.save(path)
    assert "model.safetensors" not in _files(path)
    assert (path / "model.safetensors.bak").read_bytes() == b"a user's copy"
    np.testing.assert_array_equal(sklears_neural.load(path).predict_proba(X),
                                  est.predict_proba(X))


def test_a_save_removes_stale_temporary_files_and_nothing_else(tmp_path):
    # What a killed save leaves in a model directory goes at the next save,
    # once it is older than STALE_TEMP_SECONDS; a write in progress (a recent
    # file) and other files stay.
    est = MLPClassifier((8,), max_iter=3, random_state=0).fit(X, Y)
    path = tmp_path / "m"
    est.save(path)
    stale = [".tmp-config.json-0123abcd.part",
             ".tmp-model-0123456789abcdef.safetensors-89abcdef.part"]
    fresh = [".tmp-config.json-fedcba98.part"]
    others = ["notes.txt", ".tmp-notes", ".tmp-config.json-0123abcd.part.bak",
              ".tmp-config.json-0123abcd.part.d", "model-12345.safetensors"]
    for name in stale + fresh + others:
        (path / name).write_bytes(b"x")
    (path / others[-2]).unlink()
    (path / others[-2]).mkdir()
    long_ago = time.time() - serialization.STALE_TEMP_SECONDS - 60
    for name in stale + others:
        os.utime(path / name, (long_ago, long_ago))

    est.save(path)
    digest = json.loads((path / "config.json").read_text())["weights"]["sha256"]
    assert _files(path) == sorted(
        ["config.json", f"model-{digest[:16]}.safetensors", *fresh, *others])


# -- bad files ------------------------------------------------------------------


def _saved(tmp_path, name="m"):
    est = _partial_fit_twice(MLPClassifier((8,), random_state=0), Y)
    est.save(tmp_path / name)
    return tmp_path / name


def _weights_file(path):
    """The weights file of the model saved in directory ``path``."""
    return path / json.loads((path / "config.json").read_text())["weights"]["file"]


def _edit_config(path, edit):
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def test_newer_format_version_is_refused(tmp_path):
    path = _saved(tmp_path)
    _edit_config(path, lambda c: c.update(format_version=FORMAT_VERSION + 1))
    message = (
        rf"format version {FORMAT_VERSION + 1} .*reads format versions up to "
        rf"{FORMAT_VERSION}\. Upgrade sklears-neural"
    )
    with pytest.raises(ModelFileError, match=message):
        sklears_neural.load(path)
    with pytest.raises(ModelFileError, match=message):
        read_info(path)


def test_migrations_run_in_order(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    expected = sklears_neural.load(path).predict_proba(X)
    calls = []

    def one_to_two(config):
        calls.append(1)
        config["metadata"]["migrated"] = "1->2"
        return config

    def two_to_three(config):
        calls.append(2)
        config["metadata"]["migrated"] += ",2->3"
        return config

    monkeypatch.setattr(serialization, "FORMAT_VERSION", 3)
    monkeypatch.setattr(serialization, "MIGRATIONS", {2: two_to_three, 1: one_to_two})
    assert np.array_equal(sklears_neural.load(path).predict_proba(X), expected)
    assert calls == [1, 2]
    assert read_info(path)["metadata"]["migrated"] == "1->2,2->3"
    assert read_info(path)["format_version"] == 1


def test_format_without_migration_names_the_version_to_use(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    monkeypatch.setattr(serialization, "FORMAT_VERSION", 2)
    monkeypatch.setattr(serialization, "MIGRATIONS", {})
    with pytest.raises(ModelFileError, match=(
        rf"format version 1, which this .* can no longer read\. Load it with "
        rf"sklears-neural {sklears_neural.__version__}"
    )):
        sklears_neural.load(path)


def test_edited_weight_bytes_are_detected(tmp_path):
    path = _saved(tmp_path)
    weights = _weights_file(path)
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor's data
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match the SHA-256"):
        sklears_neural.load(path)


def _rewrite_weights(path, edit):
    """Edit the tensors and re-record their hash, as a careful forger would."""
    tensors = safetensors_load(_weights_file(path).read_bytes())
    edit(tensors)
    data = safetensors_save(tensors)
    _weights_file(path).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    _edit_config(path, lambda c: c["weights"].update(sha256=digest, bytes=len(data)))


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.update({"module.layers.0.weight": torch.zeros(8, 5)}), "has shape"),
    (lambda t: t.update({"module.layers.0.bias": torch.zeros(8, dtype=torch.int64)}),
     "dtype"),
    (lambda t: t.update({"optimizer.state.0.exp_avg": torch.zeros(2, 2)}), "shape"),
    (lambda t: t.update({"extra": torch.zeros(1)}), "does not describe"),
    (lambda t: t.pop("module.layers.2.bias"), "missing"),
])
def test_edited_tensors_are_checked_against_the_module(tmp_path, edit, match):
    path = _saved(tmp_path)
    _rewrite_weights(path, edit)
    with pytest.raises(ModelFileError, match=match):
        sklears_neural.load(path)


@pytest.mark.parametrize("target", ["weights", "config", "zip"])
def test_truncated_files_are_detected(tmp_path, target):
    est = MLPClassifier((8,), max_iter=2, random_state=0).fit(X, Y)
    est.save(tmp_path / "m")
    est.save(tmp_path / "m.zip")
    path, file, match = {
        "weights": (tmp_path / "m", _weights_file(tmp_path / "m"), "SHA-256"),
        "config": (tmp_path / "m", tmp_path / "m" / "config.json", "not valid JSON"),
        "zip": (tmp_path / "m.zip", tmp_path / "m.zip", "zip"),
    }[target]
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=match):
        sklears_neural.load(path)


def test_unknown_classes_are_refused(tmp_path):
    path = _saved(tmp_path)
    _edit_config(path, lambda c: c.update({"class": "MLPClasifier"}))
    with pytest.raises(ModelFileError, match=(
        # Other tests in the process may register more classes (the docs' CNN).
        r"Unknown estimator class 'MLPClasifier'.*Registered: (.*, )?BernoulliRBM, "
        r"(.*, )?MLPClassifier, MLPRegressor.*Did you mean 'MLPClassifier'"
    )):
        sklears_neural.load(path)

    path = _saved(tmp_path, "m2")
    _edit_config(path, lambda c: c["state"]["module_"]["__module__"]["spec"]["__spec__"]
                 .update({"class": "Linear"}))
    with pytest.raises(ModelFileError, match="Unknown module class 'Linear'"):
        sklears_neural.load(path)


def test_dotted_paths_in_a_file_import_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "payload-ran"
    (tmp_path / "sklears_payload.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "def run(*args, **kwargs):\n"
        f"    open({str(marker)!r}, 'w').close()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _saved(tmp_path)
    original = (path / "config.json").read_text()
    spec = ["state", "module_", "__module__", "spec", "__spec__"]
    edits = {
        "estimator": lambda c, name: c.update({"class": name}),
        "module": lambda c, name: _get(c, spec).update({"class": name}),
        "object": lambda c, name: c["state"]["_stopping"]["__object__"].update(
            {"class": name}),
    }
    names = ["os.system", "sklears_payload.run", "builtins.eval", "subprocess.Popen"]
    for name in names:
        for where, edit in edits.items():
            (path / "config.json").write_text(original)
            _edit_config(path, lambda c: edit(c, name))
            with pytest.raises(ModelFileError, match=rf"[Uu]nknown {where} class"):
                sklears_neural.load(path)
    assert not marker.exists()
    assert "sklears_payload" not in sys.modules


def _get(tree, keys):
    for key in keys:
        tree = tree[key]
    return tree


def test_unknown_tags_and_attribute_names_are_refused(tmp_path):
    path = _saved(tmp_path)
    original = (path / "config.json").read_text()
    edits = [
        (lambda c: c["state"].update(n_iter_={"__pickle__": "gASV"}), "unknown tag"),
        (lambda c: c["state"].update(predict=1), "attribute named 'predict'"),
        (lambda c: c["state"].update(__class__="x"), "attribute named '__class__'"),
        (lambda c: c["state"].update(alpha_={"__optimizer__": {}}), "malformed"),
        (lambda c: c["state"]["history_"].update({"__history__": [{"__module__": {}}]}),
         "only allowed as a whole attribute"),
        (lambda c: c["params"].update(solver="os.system"), "solver"),
        (lambda c: c["params"].update(exec_hook="x"), "Unknown parameter"),
    ]
    for edit, match in edits:
        (path / "config.json").write_text(original)
        _edit_config(path, edit)
        with pytest.raises(ModelFileError, match=match):
            sklears_neural.load(path)


_BANNED_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib",
                   "marshal", "shelve", "importlib", "runpy", "pydoc"}
_BANNED_ATTRIBUTES = {("torch", "load"), ("yaml", "load"), ("yaml", "unsafe_load"),
                      ("yaml", "full_load"), ("yaml", "Loader"), ("yaml", "FullLoader"),
                      ("yaml", "UnsafeLoader"), ("np", "load"), ("numpy", "load")}
_BANNED_NAMES = {"eval", "exec", "__import__", "compile"}


def _banned_uses(text):
    """(line, what) for each use of pickle, torch.load, eval... in ``text``."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            bad = {alias.name.split(".")[0] for alias in node.names} & _BANNED_MODULES
        elif isinstance(node, ast.ImportFrom):
            root = (node.module or "").split(".")[0]
            bad = {root} & _BANNED_MODULES
            if root in ("torch", "numpy", "yaml"):
                bad |= {alias.name for alias in node.names} & {
                    "load", "unsafe_load", "full_load", "Loader", "UnsafeLoader"}
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            bad = {(node.value.id, node.attr)} & _BANNED_ATTRIBUTES
        elif isinstance(node, ast.Name):
            bad = {node.id} & _BANNED_NAMES
        else:
            continue
        found += [(node.lineno, b) for b in bad]
    return found


def test_loading_code_never_unpickles():
    # The save/load path must not reach pickle, torch.load or an import by
    # name: checked on the syntax tree of each module it runs, so comments
    # and docstrings that mention them do not count.
    core = pathlib.Path(persistence.__file__).parent
    for source in ["persistence.py", "serialization.py", "config.py", "registry.py"]:
        text = (core / source).read_text()
        assert _banned_uses(text) == [], source
        assert "allow_pickle" not in text
    # The checker finds what it looks for.
    sample = ("import pickle\nimport importlib.util\nfrom torch import load\n"
              "torch.load(f)\nyaml.load(s)\neval('1')\n")
    assert [line for line, _ in _banned_uses(sample)] == [1, 2, 3, 4, 5, 6]


def test_public_names():
    assert sklears_neural.load is persistence.load
    assert issubclass(ModelFileError, ValueError)
    assert exceptions.ModelFileError is ModelFileError
    assert exceptions.PersistenceWarning is PersistenceWarning
    assert {"BernoulliRBM", "MLPClassifier", "MLPRegressor"} <= set(
        registry.registered_estimators()
    )
    assert "MLP" in registry.registered_modules()
    for cls in (MLPClassifier, MLPRegressor, BernoulliRBM):
        assert callable(cls.save) and callable(cls.get_config)
