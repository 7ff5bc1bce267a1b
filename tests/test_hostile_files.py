"""``load`` under hostile files: zip bombs, padding, lying headers, edited state.

Each hostile file is built for real (deflate streams, zip headers written by
hand) and each refusal is cheap: a test stays well under a second and, where
a file would inflate to gigabytes, ``tracemalloc`` shows that nothing near
that is read.
"""

import hashlib
import json
import os
import re
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from sklearn.datasets import load_iris

import sklears_neural
from sklears_neural import BernoulliRBM, MLPClassifier
from sklears_neural.core import serialization
from sklears_neural.exceptions import ModelFileError

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)

X, Y = load_iris(return_X_y=True)
MiB = 2**20
GiB = 2**30
# What loading an iris-sized model may allocate; an inflated entry is 1 GiB.
SMALL = 20 * MiB


def _fitted():
    return MLPClassifier((8,), max_iter=3, random_state=0).fit(X, Y)


def _saved_dir(tmp_path, est=None):
    path = tmp_path / "m"
    (est or _fitted()).save(path)
    return path


def _parts(tmp_path):
    """``(config bytes, weights bytes)`` of a saved model, to rebuild into zips."""
    path = _saved_dir(tmp_path)
    config = (path / "config.json").read_bytes()
    weights = (path / json.loads(config)["weights"]["file"]).read_bytes()
    return config, weights


def _blanks_deflated(prefix, pad, fill=b" "):
    """Raw deflate of ``prefix`` then ``pad`` bytes of ``fill``, made in milliseconds.

    After a full flush the compressor starts afresh, so every MiB of ``fill``
    compresses to the same bytes: one is made and repeated. 1 GiB of blanks
    comes to about 1 MB, a ratio of about 1,000.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    mib = compressor.compress(fill * MiB) + compressor.flush(zlib.Z_FULL_FLUSH)
    rest = compressor.compress(fill * (pad % MiB))
    return head + mib * (pad // MiB) + rest + compressor.flush()


def _crc(prefix, pad, fill=b" "):
    crc = zlib.crc32(prefix)
    for _ in range(pad // MiB):
        crc = zlib.crc32(fill * MiB, crc)
    return zlib.crc32(fill * (pad % MiB), crc)


def _entry(name, data, *, method=zipfile.ZIP_STORED, size=None, crc=None, flags=0):
    """A zip entry whose header says what the caller wants: ``size`` may lie."""
    if method == zipfile.ZIP_DEFLATED and not isinstance(data, tuple):
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = (compressor.compress(data) + compressor.flush(), data)
    payload, plain = data if isinstance(data, tuple) else (data, data)
    return {
        "name": name.encode(), "payload": payload, "method": method, "flags": flags,
        "size": len(plain) if size is None else size,
        "crc": zlib.crc32(plain) if crc is None else crc,
    }


def _write_zip(path, entries):
    """Write ``entries`` as a zip file, headers and all, by hand."""
    out, central = bytearray(), bytearray()
    for e in entries:
        fields = (e["flags"], e["method"], 0, 33, e["crc"], len(e["payload"]),
                  e["size"], len(e["name"]))
        central += struct.pack("<4s2H2H2H3LH4HLL", b"PK\x01\x02", 20, 20, *fields,
                               0, 0, 0, 0, 0, len(out)) + e["name"]
        out += struct.pack("<4sH2H2H3L2H", b"PK\x03\x04", 20, *fields, 0) + e["name"]
        out += e["payload"]
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                      len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))
    return path


def _load_measured(path):
    """``(outcome, peak bytes)``: the loaded estimator or the error raised."""
    tracemalloc.start()
    try:
        return sklears_neural.load(path), tracemalloc.get_traced_memory()[1]
    except ModelFileError as error:
        return error, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _zip_config(config):
    """A directory's config.json made to name the weights as the zip form does."""
    config = json.loads(config)
    config["weights"]["file"] = "model.safetensors"
    return json.dumps(config).encode()


def test_hand_written_zips_load(tmp_path):
    # The refusals below come from what is hostile in each file, not from
    # the zip writer of these tests.
    config, weights = _parts(tmp_path)
    path = _write_zip(tmp_path / "ok.zip", [
        _entry("config.json", _zip_config(config), method=zipfile.ZIP_DEFLATED),
        _entry("model.safetensors", weights),
    ])
    loaded = sklears_neural.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), _fitted().predict_proba(X))


# -- zip bombs ------------------------------------------------------------------


def test_config_inflating_to_a_gigabyte_is_refused_before_reading(tmp_path):
    # Valid JSON (blanks after the object are allowed) of 1 GiB in a 1 MB zip,
    # with an honest header: without the limit it loads, after reading 1 GiB.
    config, weights = _parts(tmp_path)
    config = _zip_config(config)
    stream = _blanks_deflated(config, GiB)
    size = len(config) + GiB
    path = _write_zip(tmp_path / "bomb.zip", [
        _entry("config.json", (stream, b""), method=zipfile.ZIP_DEFLATED, size=size,
               crc=_crc(config, GiB)),
        _entry("model.safetensors", weights),
    ])
    assert path.stat().st_size < 2 * MiB
    outcome, peak = _load_measured(path)
    assert isinstance(outcome, ModelFileError)
    assert (f"config.json holds {size} bytes; at most {8 * MiB} are allowed "
            "(MAX_CONFIG_BYTES)") in str(outcome)
    assert peak < SMALL


def test_padded_config_over_a_lowered_limit_is_refused(tmp_path, monkeypatch):
    # The same padding at a small scale, in both forms.
    monkeypatch.setattr(serialization, "MAX_CONFIG_BYTES", 20_000)
    config, weights = _parts(tmp_path)
    padded = _zip_config(config)
    padded += b" " * (30_000 - len(padded))
    path = _write_zip(tmp_path / "padded.zip", [
        _entry("config.json", padded, method=zipfile.ZIP_DEFLATED),
        _entry("model.safetensors", weights),
    ])
    message = (r"config\.json holds 30000 bytes; at most 20000 are allowed "
               r"\(MAX_CONFIG_BYTES\)")
    with pytest.raises(ModelFileError, match=message):
        sklears_neural.load(path)
    folder = tmp_path / "m"
    with open(folder / "config.json", "ab") as handle:
        handle.write(b" " * (30_000 - (folder / "config.json").stat().st_size))
    with pytest.raises(ModelFileError, match=message):
        sklears_neural.load(folder)
    with pytest.raises(ModelFileError, match=message):
        sklears_neural.from_config(folder)
    monkeypatch.setattr(serialization, "MAX_CONFIG_BYTES", 30_000)
    assert sklears_neural.load(folder).n_iter_ == 3


def test_weights_padded_past_the_recorded_size_are_refused_before_reading(tmp_path):
    config, weights = _parts(tmp_path)
    pad = 256 * MiB
    size = len(weights) + pad
    path = _write_zip(tmp_path / "padded.zip", [
        _entry("config.json", _zip_config(config), method=zipfile.ZIP_DEFLATED),
        _entry("model.safetensors", (_blanks_deflated(weights, pad, b"\0"), b""),
               method=zipfile.ZIP_DEFLATED, size=size, crc=_crc(weights, pad, b"\0")),
    ])
    outcome, peak = _load_measured(path)
    assert isinstance(outcome, ModelFileError)
    assert (f"model.safetensors holds {size} bytes; at most {len(weights)} are "
            "allowed (the size config.json records)") in str(outcome)
    assert peak < SMALL


def test_weights_inflating_past_the_ratio_limit_are_refused(tmp_path):
    # A config that records a huge weights file is the forger's next try:
    # no deflated entry may expand more than MAX_INFLATION times.
    config, weights = _parts(tmp_path)
    pad = 256 * MiB
    config = json.loads(_zip_config(config))
    config["weights"]["bytes"] = len(weights) + pad
    stream = _blanks_deflated(weights, pad, b"\0")
    path = _write_zip(tmp_path / "ratio.zip", [
        _entry("config.json", json.dumps(config).encode(), method=zipfile.ZIP_DEFLATED),
        _entry("model.safetensors", (stream, b""), method=zipfile.ZIP_DEFLATED,
               size=len(weights) + pad, crc=_crc(weights, pad, b"\0")),
    ])
    outcome, peak = _load_measured(path)
    assert isinstance(outcome, ModelFileError)
    assert (f"inflates from {len(stream)} to {len(weights) + pad} bytes, more than "
            "MAX_INFLATION=100 times") in str(outcome)
    assert peak < SMALL


def test_header_understating_the_size_stops_the_read_there(tmp_path):
    # The header says 100 bytes; the stream behind it inflates to 1 GiB.
    # zipfile's read() inflates ~2 GB at a time before cutting to the declared
    # size; reading at most limit + 1 bytes inflates no more than that. The
    # checksum of the 100 bytes then fails.
    config, weights = _parts(tmp_path)
    path = _write_zip(tmp_path / "liar.zip", [
        _entry("config.json", (_blanks_deflated(_zip_config(config), GiB), b""),
               method=zipfile.ZIP_DEFLATED, size=100, crc=0),
        _entry("model.safetensors", weights),
    ])
    outcome, peak = _load_measured(path)
    assert isinstance(outcome, ModelFileError)
    assert "is not a readable zip archive" in str(outcome)
    assert peak < SMALL


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_other_compression_methods_are_refused(tmp_path, method):
    # zipfile inflates bzip2 and lzma without an output bound per read.
    config, weights = _parts(tmp_path)
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", _zip_config(config), method)
        archive.writestr("model.safetensors", weights, zipfile.ZIP_STORED)
    with pytest.raises(ModelFileError, match=rf"compressed by method {method}"):
        sklears_neural.load(path)


def test_encrypted_entries_are_refused(tmp_path):
    config, weights = _parts(tmp_path)
    path = _write_zip(tmp_path / "locked.zip", [
        _entry("config.json", _zip_config(config), flags=0x1),
        _entry("model.safetensors", weights),
    ])
    with pytest.raises(ModelFileError, match="config.json is encrypted"):
        sklears_neural.load(path)


# -- the directory form -----------------------------------------------------------


def test_weights_file_larger_than_recorded_is_refused_before_reading(tmp_path):
    path = _saved_dir(tmp_path)
    config = json.loads((path / "config.json").read_text())
    weights = path / config["weights"]["file"]
    recorded = config["weights"]["bytes"]
    with open(weights, "ab") as handle:
        handle.truncate(recorded + 64 * MiB)  # sparse where the file system can
    outcome, peak = _load_measured(path)
    assert isinstance(outcome, ModelFileError)
    assert (f"holds {recorded + 64 * MiB} bytes; at most {recorded} are allowed (the "
            "size config.json records)") in str(outcome)
    assert peak < SMALL


def test_file_growing_after_its_size_check_is_read_bounded(tmp_path, monkeypatch):
    # The size check reads fstat; a file that grows between that and the read
    # (or a size that lies) still yields at most limit + 1 bytes.
    path = _saved_dir(tmp_path)
    size = (path / "config.json").stat().st_size
    monkeypatch.setattr(serialization, "MAX_CONFIG_BYTES", size - 1)
    real_fstat = os.fstat

    def understated(fd):
        info = real_fstat(fd)
        return os.stat_result((*info[:6], 10, *info[7:10]))

    monkeypatch.setattr(os, "fstat", understated)
    with pytest.raises(ModelFileError, match=(
        rf"config\.json holds more than {size - 1} bytes; "
        rf"at most {size - 1} are allowed"
    )):
        sklears_neural.load(path)


def test_empty_directory_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match=r"has no config\.json: it is not a model"):
        sklears_neural.load(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        sklears_neural.load(tmp_path / "missing")


def _replace_with(target, kind):
    target.unlink()
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        os.symlink("/dev/zero", target)


@pytest.mark.parametrize("kind", [
    "directory",
    pytest.param("fifo", marks=pytest.mark.skipif(
        not hasattr(os, "mkfifo"), reason="the OS has no named pipes (os.mkfifo: "
        "Windows), so no file can be one")),
    pytest.param("device", marks=pytest.mark.skipif(
        not os.path.exists("/dev/zero"), reason="the OS has no /dev/zero (Windows) "
        "to link a saved entry to")),
])
@pytest.mark.parametrize("entry", ["config", "weights"])
def test_entries_must_be_regular_files(tmp_path, kind, entry):
    # A FIFO would block the open, /dev/zero would never end a read.
    path = _saved_dir(tmp_path)
    config = json.loads((path / "config.json").read_text())
    name = "config.json" if entry == "config" else config["weights"]["file"]
    _replace_with(path / name, kind)
    with pytest.raises(ModelFileError, match=rf"{name} is not a regular file"):
        sklears_neural.load(path)


def test_weights_file_name_must_be_one_save_writes(tmp_path):
    path = _saved_dir(tmp_path)
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    for name in ["../secret.safetensors", "/etc/passwd", "config.json"]:
        config = json.loads((path / "config.json").read_text())
        config["weights"]["file"] = name
        (path / "config.json").write_text(json.dumps(config))
        with pytest.raises(ModelFileError, match="names the weights"):
            sklears_neural.load(path)


# -- edited state -----------------------------------------------------------------


def _edited(tmp_path, edit, est=None):
    path = _saved_dir(tmp_path, est)
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("name, value", [
    ("t_", "x"), ("n_iter_", -1), ("n_iter_", 2.5), ("n_outputs_", True),
    ("n_features_in_", None),
])
def test_counts_must_be_non_negative_ints(tmp_path, name, value):
    path = _edited(tmp_path, lambda c: c["state"].update({name: value}))
    with pytest.raises(ModelFileError, match=rf"{name} is .*it must be an int >= 0"):
        sklears_neural.load(path)


def test_rbm_counts_are_checked_too(tmp_path):
    X_bin = (X > 3).astype(float)
    rbm = BernoulliRBM(n_components=2, n_iter=1, random_state=0).fit(X_bin)
    path = _edited(tmp_path, lambda c: c["state"].update(_n_features_out=-2), rbm)
    with pytest.raises(ModelFileError, match="_n_features_out is -2"):
        sklears_neural.load(path)


def test_n_features_in_must_be_the_width_the_weights_take(tmp_path):
    path = _edited(tmp_path, lambda c: c["state"].update(n_features_in_=3))
    with pytest.raises(ModelFileError, match=(
        r"n_features_in_ is 3, but the saved MLP does not take rows of 3 values"
    )):
        sklears_neural.load(path)


def test_n_outputs_must_be_the_width_the_weights_give(tmp_path):
    path = _edited(tmp_path, lambda c: c["state"].update(n_outputs_=2))
    with pytest.raises(ModelFileError, match=(
        r"n_outputs_ is 2, but the saved MLP gives rows of \(3,\) values"
    )):
        sklears_neural.load(path)


def test_a_network_without_its_input_width_is_refused(tmp_path):
    path = _edited(tmp_path, lambda c: c["state"].pop("n_features_in_"))
    with pytest.raises(ModelFileError, match=r"network \(module_\) but no n_features_in_"):
        sklears_neural.load(path)


def test_labels_must_agree_with_the_outputs(tmp_path):
    def binary(config):
        # Three classes, three outputs; the file now says the labels are binary.
        binarizer = config["state"]["_label_binarizer"]["__object__"]["state"]
        binarizer["y_type_"] = "binary"

    path = _edited(tmp_path, binary)
    with pytest.raises(ModelFileError, match=(
        r"n_outputs_ is 3, but 3 binary classes need 1 outputs"
    )):
        sklears_neural.load(path)


@pytest.mark.parametrize("key, value", [
    ("lr", "x"), ("betas", [0.9]), ("amsgrad", 1), ("foreach", "yes"),
    ("initial_lr", [1]),
])
def test_optimizer_settings_must_be_what_the_optimizer_holds(tmp_path, key, value):
    # load_state_dict takes any value; "lr": "x" would fail at the next step.
    def edit(config):
        optimizer = config["state"]["_optimizer"]["__optimizer__"]["state_dict"]
        optimizer["param_groups"][0][key] = value

    path = _edited(tmp_path, edit)
    with pytest.raises(ModelFileError, match=rf"optimizer setting '{key}' is"):
        sklears_neural.load(path)


def test_optimizer_settings_of_other_machines_load(tmp_path):
    # foreach/fused are None or flags by machine, and a setting this torch
    # does not know (a newer torch's) loads when it is a number or a flag.
    est = _fitted()

    def edit(config):
        group = config["state"]["_optimizer"]["__optimizer__"]["state_dict"][
            "param_groups"][0]
        group.update(foreach=True, fused=None, weight_decay=0.0, new_flag=False)

    loaded = sklears_neural.load(_edited(tmp_path, edit, est))
    assert loaded._optimizer.param_groups[0]["foreach"] is True
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    est.partial_fit(X, Y)
    loaded.partial_fit(X, Y)  # foreach kernels instead of fused ones: same steps
    np.testing.assert_allclose(loaded.predict_proba(X), est.predict_proba(X),
                               rtol=1e-5)


@pytest.mark.parametrize(
    "shape", ["[1e400]", '["3"]', "[1.5, 2]", "[-1, -3]", "[true, 3]"])
def test_malformed_array_shapes_are_refused(tmp_path, shape):
    # A string-labelled classifier keeps its labels as a JSON array.
    labels = np.array(list("abc"))[Y]
    est = MLPClassifier((4,), max_iter=2, random_state=0).fit(X, labels)
    path = _saved_dir(tmp_path, est)
    text = (path / "config.json").read_text()
    assert json.loads(text)["state"]["classes_"]["__ndarray__"] == {
        "dtype": "<U1", "shape": [3], "data": ["a", "b", "c"]}
    text, n = re.subn(r'"shape": \[\s*3\s*\]', f'"shape": {shape}', text, count=1)
    assert n == 1
    (path / "config.json").write_text(text)
    with pytest.raises(ModelFileError, match="array shape .* is not a list of ints"):
        sklears_neural.load(path)


@pytest.mark.parametrize("declared", [
    {"dtype": "<i8", "shape": [10**12], "data": []},
    {"dtype": "<i8", "shape": [10**6, 10**6], "data": [1]},
    # The dtype sets the bytes per value: 400 MB for each of three strings.
    {"dtype": "<U100000000", "shape": [3], "data": ["a", "b", "c"]},
])
def test_declared_array_sizes_are_refused_before_allocating(tmp_path, declared):
    path = _edited(tmp_path, lambda c: c["state"].update(
        classes_={"__ndarray__": declared}))
    outcome, peak = _load_measured(path)
    assert isinstance(outcome, ModelFileError)
    assert "array of" in str(outcome)
    assert peak < SMALL


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_refused(tmp_path, literal):
    path = _saved_dir(tmp_path)
    text = (path / "config.json").read_text()
    text = text.replace('"loss_": ', f'"loss_": {literal}, "x": ', 1)
    (path / "config.json").write_text(text)
    with pytest.raises(ModelFileError, match=rf"not valid JSON \({literal} is not"):
        sklears_neural.load(path)


def test_tensor_numpy_cannot_hold_is_refused(tmp_path):
    path = _saved_dir(tmp_path)
    config = json.loads((path / "config.json").read_text())
    weights = path / config["weights"]["file"]
    tensors = safetensors_load(weights.read_bytes())
    tensors["attrs.classes_"] = tensors["attrs.classes_"].to(torch.bfloat16)
    data = safetensors_save(tensors)
    weights.write_bytes(data)
    config["weights"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="bfloat16 is read as a numpy array"):
        sklears_neural.load(path)


def test_history_records_must_be_dicts(tmp_path):
    path = _edited(tmp_path, lambda c: c["state"].update(
        history_={"__history__": [1, 2, 3]}))
    with pytest.raises(ModelFileError, match="history record that is not a dict"):
        sklears_neural.load(path)


def test_a_spec_listing_more_layers_than_the_weights_hold_is_refused(tmp_path):
    # Building 100,000 layers, even without memory, would take seconds; the
    # weights hold 4 tensors, so the spec was edited.
    spec = ["state", "module_", "__module__", "spec", "__spec__", "kwargs"]

    def edit(config):
        kwargs = config
        for key in spec:
            kwargs = kwargs[key]
        kwargs["hidden_layer_sizes"] = [1] * 100_000

    path = _edited(tmp_path, edit)
    with pytest.raises(ModelFileError, match="list 100000 items, but its saved weights "
                                             "hold 4 tensors"):
        sklears_neural.load(path)
