"""ONNX export (``to_onnx``) and the onnxruntime inference backend.

Parity is checked with onnxruntime on scikit-learn's bundled data: the graph
computes in float32, so outputs agree with the float64 predictions to about
1e-6, and labels agree wherever the decision is not within that of a tie.
Each export takes seconds (torch.onnx's dynamo exporter), so fitted models
and their graphs are shared by module-scoped fixtures.
"""

import pickle
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.preprocessing import StandardScaler
from torch import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
onnxruntime = pytest.importorskip("onnxruntime")

import sklears_neural  # noqa: E402
from sklears_neural import BernoulliRBM, MLPClassifier, MLPRegressor  # noqa: E402
from sklears_neural.core import export, inference  # noqa: E402

X_digits, y_digits = load_digits(return_X_y=True)
X_digits = X_digits / 16.0
X_cancer, y_cancer = load_breast_cancer(return_X_y=True)
X_cancer = StandardScaler().fit_transform(X_cancer)
X_diabetes, y_diabetes = load_diabetes(return_X_y=True)
X_diabetes = StandardScaler().fit_transform(X_diabetes)


def _quiet_fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


def _run(model_bytes, X, outputs=None):
    session = onnxruntime.InferenceSession(
        model_bytes, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    values = session.run(outputs, {"X": np.asarray(X, dtype=np.float32)})
    return dict(zip(outputs or names, values))


def _assert_labels_agree(labels, expected, proba):
    """Equal wherever the decision is clear of a tie by more than float32 noise."""
    top2 = np.sort(proba, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-5
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(labels[clear], expected[clear])


def _torch_raw(est, X):
    module = est.module_.eval()
    with torch.no_grad():
        return (
            module(
                torch.as_tensor(X, dtype=torch.float32).to(
                    next(module.parameters()).dtype
                )
            )
            .double()
            .numpy()
        )


@pytest.fixture(scope="module")
def digits_model():
    clf = _quiet_fit(
        MLPClassifier((32,), max_iter=30, random_state=0), X_digits, y_digits
    )
    return clf, clf.to_onnx()


@pytest.fixture(scope="module")
def cancer_model():
    clf = _quiet_fit(
        MLPClassifier((16, 8), max_iter=30, random_state=0),
        X_cancer,
        np.where(y_cancer == 1, "benign", "malignant"),
    )
    return clf, clf.to_onnx()


@pytest.fixture(scope="module")
def diabetes_model():
    reg = _quiet_fit(
        MLPRegressor(
            hidden_layer_sizes=(32,), solver="lbfgs", max_iter=200, random_state=0
        ),
        X_diabetes,
        y_diabetes,
    )
    return reg, reg.to_onnx()


# -- the graph -----------------------------------------------------------------------


def test_graph_signature(digits_model):
    clf, model_bytes = digits_model
    model = onnx.load_from_string(model_bytes)
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain == ""] == [export.OPSET]
    assert export.OPSET >= 17
    (X,) = model.graph.input
    assert X.name == "X" and X.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    batch, width = X.type.tensor_type.shape.dim
    assert batch.dim_param and width.dim_value == 64  # dynamic batch, fixed width
    assert [o.name for o in model.graph.output] == [
        "label",
        "probabilities",
        "raw_output",
    ]


def test_multiclass_parity_on_digits(digits_model):
    clf, model_bytes = digits_model
    out = _run(model_bytes, X_digits)
    proba = clf.predict_proba(X_digits)
    np.testing.assert_allclose(out["probabilities"], proba, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        out["raw_output"], _torch_raw(clf, X_digits), rtol=1e-5, atol=1e-5
    )
    assert out["label"].dtype == np.int64
    _assert_labels_agree(out["label"], clf.predict(X_digits), proba)


def test_batch_axis_is_dynamic(digits_model):
    clf, model_bytes = digits_model
    for rows in (1, 2, 7, 1000):
        out = _run(model_bytes, X_digits[:rows])
        assert out["probabilities"].shape == (rows, 10) and out["label"].shape == (
            rows,
        )


def test_binary_string_labels_on_breast_cancer(cancer_model):
    clf, model_bytes = cancer_model
    out = _run(model_bytes, X_cancer)
    proba = clf.predict_proba(X_cancer)
    np.testing.assert_allclose(out["probabilities"], proba, rtol=0, atol=1e-5)
    assert out["probabilities"].shape == (len(X_cancer), 2)
    assert set(out["label"]) <= {"benign", "malignant"}
    _assert_labels_agree(out["label"], clf.predict(X_cancer), proba)


def test_regression_parity_on_diabetes(diabetes_model):
    reg, model_bytes = diabetes_model
    out = _run(model_bytes, X_diabetes)
    assert [*out] == ["prediction", "raw_output"]
    assert out["prediction"].shape == (len(X_diabetes),)
    np.testing.assert_allclose(
        out["prediction"],
        reg.predict(X_diabetes),
        rtol=1e-5,
        atol=1e-5 * np.abs(y_diabetes).max(),
    )
    np.testing.assert_allclose(
        out["raw_output"], _torch_raw(reg, X_diabetes), rtol=1e-5, atol=1e-4
    )


def test_multilabel_indicator_and_string_multiclass():
    Y = np.column_stack([y_digits % 2, y_digits > 4, y_digits == 0]).astype(int)
    multi = _quiet_fit(MLPClassifier((16,), max_iter=20, random_state=0), X_digits, Y)
    out = _run(multi.to_onnx(), X_digits)
    np.testing.assert_allclose(
        out["probabilities"], multi.predict_proba(X_digits), atol=1e-5
    )
    assert out["label"].dtype == np.int64 and out["label"].shape == Y.shape
    margin = np.abs(multi.predict_proba(X_digits) - 0.5) > 1e-5
    np.testing.assert_array_equal(out["label"][margin], multi.predict(X_digits)[margin])

    names = np.array(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
        ],
        dtype=object,
    )
    X, y = X_digits[:400], names[y_digits[:400]]
    words = _quiet_fit(MLPClassifier((16,), max_iter=20, random_state=0), X, y)
    out = _run(words.to_onnx(), X)
    _assert_labels_agree(out["label"], words.predict(X), words.predict_proba(X))


@pytest.mark.parametrize("loss", ["poisson", "squared_error"])
def test_regression_heads(loss):
    rng = np.random.RandomState(0)
    X = rng.randn(120, 5)
    Y = np.column_stack([np.abs(X[:, 0]) + 1, np.abs(X[:, 1] * X[:, 2])])
    reg = _quiet_fit(
        MLPRegressor(loss=loss, hidden_layer_sizes=(8,), max_iter=20, random_state=0),
        X,
        Y,
    )
    out = _run(reg.to_onnx(), X)
    assert out["prediction"].shape == (120, 2)
    np.testing.assert_allclose(out["prediction"], reg.predict(X), rtol=1e-5, atol=1e-5)


def test_float64_model_computes_in_float64():
    clf = _quiet_fit(
        MLPClassifier((16,), max_iter=20, precision="float64", random_state=0),
        X_cancer,
        y_cancer,
    )
    out = _run(clf.to_onnx(), X_cancer)
    assert out["probabilities"].dtype == np.float64
    # Only the float32 input rounds.
    X32 = X_cancer.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X32), atol=1e-12)


def test_every_layer_option_exports():
    # One MLP holding every structural option, and one stack of every activation.
    rng = np.random.RandomState(0)
    X = rng.randn(200, 6)
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int) + (X[:, 2] > 0)
    clf = _quiet_fit(
        MLPClassifier(
            (12, 12, 7),
            residual="gated",
            batch_norm=True,
            spectral_norm=True,
            dropout=0.1,
            noise="gaussian",
            activation=("prelu", {"per_channel": True}),
            max_iter=10,
            random_state=0,
        ),
        X,
        y,
    )
    x = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        before = clf.module_.eval()(x)
    out = _run(clf.to_onnx(), X)
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X), atol=1e-5)
    with torch.no_grad():  # exporting left the estimator's module as it was
        assert torch.equal(clf.module_(x), before)
    clf = _quiet_fit(
        MLPClassifier(
            (12, 7),
            residual="concat",
            layer_norm=True,
            activation=("gelu", {"approximate": "tanh"}),
            max_iter=10,
            random_state=0,
        ),
        X,
        y,
    )
    np.testing.assert_allclose(
        _run(clf.to_onnx(), X)["probabilities"], clf.predict_proba(X), atol=1e-5
    )

    layers = [nn.Linear(6, 8)]
    for option in [
        "identity",
        "logistic",
        "tanh",
        "relu",
        ("leaky_relu", {}),
        "elu",
        "selu",
        "gelu",
        "silu",
        "mish",
        ("softplus", {"beta": 2.0}),
        "prelu",
    ]:
        from sklears_neural.core.resolve import ACTIVATIONS

        layers += [ACTIVATIONS.build(option, width=8), nn.Linear(8, 8)]
    module = nn.Sequential(*layers).eval()
    model = export.export_network(module, 6)
    raw = _run(model.SerializeToString(), X)["raw_output"]
    with torch.no_grad():
        expected = module(torch.as_tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-5)


def test_path_writes_the_same_bytes(digits_model, tmp_path):
    clf, model_bytes = digits_model
    path = tmp_path / "digits.onnx"
    assert clf.to_onnx(path) == model_bytes  # unchanged weights: the cached graph
    assert path.read_bytes() == model_bytes


class _Branch(nn.Module):
    """Branches on a value: torch.export cannot follow it."""

    def forward(self, x):
        return x if float(x.sum()) > 0 else -x


class _RowLoop(nn.Module):
    """Loops over rows in Python: torch.export fixes the batch size."""

    def forward(self, x):
        return torch.stack([torch.tanh(row) for row in x])


@pytest.mark.parametrize(
    "layer, reason",
    [(_Branch, "torch.onnx.export failed"), (_RowLoop, "fixes the batch size")],
)
def test_unexportable_layer_is_named(layer, reason):
    clf = _quiet_fit(
        MLPClassifier((8,), max_iter=3, random_state=0), X_cancer, y_cancer
    )
    clf.module_.layers[1] = layer()
    assert clf.predict(X_cancer[:3]).shape == (3,)  # the torch backend still predicts
    with pytest.raises(
        ValueError, match=f"{reason}.*{layer.__name__}.*" "inference_backend='torch'"
    ):
        clf.to_onnx()


def test_missing_packages_name_the_extra(monkeypatch, cancer_model):
    clf, _ = cancer_model
    fresh = clone(clf).set_params(max_iter=2)
    _quiet_fit(fresh, X_cancer[:50], clf.predict(X_cancer[:50]))
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=r"pip install sklears-neural\[onnx\]"):
        fresh.to_onnx()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    fresh.set_params(inference_backend="onnxruntime")
    with pytest.raises(
        ImportError, match=r"onnxruntime.*pip install sklears-neural\[onnx\]"
    ):
        fresh.predict(X_cancer[:2])


def test_unfitted_estimators_do_not_export():
    with pytest.raises(NotFittedError):
        MLPRegressor().to_onnx()
    with pytest.raises(NotFittedError):
        BernoulliRBM().to_onnx()


def test_rbm_transform_exports():
    X = (X_digits[:300] > 0.5).astype(np.float64)
    for dtype in (np.float32, np.float64):
        rbm = BernoulliRBM(n_components=16, n_iter=3, random_state=0).fit(
            X.astype(dtype)
        )
        out = _run(rbm.to_onnx(), X)
        assert out["transformed"].dtype == dtype
        np.testing.assert_allclose(
            out["transformed"], rbm.transform(X.astype(dtype)), rtol=1e-5, atol=1e-6
        )


# -- the onnxruntime backend ---------------------------------------------------------


def test_backend_agrees_with_torch(digits_model, diabetes_model):
    clf, model_bytes = digits_model
    ort = pickle.loads(pickle.dumps(clf)).set_params(inference_backend="onnxruntime")
    for X in (X_digits[:1], X_digits):
        np.testing.assert_allclose(
            ort.predict_proba(X), clf.predict_proba(X), atol=1e-5
        )
        _assert_labels_agree(ort.predict(X), clf.predict(X), clf.predict_proba(X))
    assert ort.score(X_digits, y_digits) == pytest.approx(
        clf.score(X_digits, y_digits), abs=1e-3
    )
    reg, _ = diabetes_model
    ort_reg = pickle.loads(pickle.dumps(reg)).set_params(
        inference_backend="onnxruntime"
    )
    np.testing.assert_allclose(
        ort_reg.predict(X_diabetes),
        reg.predict(X_diabetes),
        rtol=1e-5,
        atol=1e-5 * np.abs(y_diabetes).max(),
    )


def _forbid_export(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(export, "to_onnx", fail)


def test_backend_keeps_the_graph_through_pickle_and_save(tmp_path, monkeypatch):
    clf = _quiet_fit(
        MLPClassifier(
            (16,), max_iter=10, inference_backend="onnxruntime", random_state=0
        ),
        X_cancer,
        y_cancer,
    )
    expected = clf.predict_proba(X_cancer)  # exports, keeps the bytes
    stored = clf._onnx_model_
    assert stored["sha256"] == export.fingerprint(clf)
    clf.save(tmp_path / "model.zip")
    _forbid_export(monkeypatch)
    for restored in (
        pickle.loads(pickle.dumps(clf)),
        sklears_neural.load(tmp_path / "model.zip"),
    ):
        assert restored.inference_backend == "onnxruntime"
        np.testing.assert_array_equal(restored.predict_proba(X_cancer), expected)
        assert restored.to_onnx() == stored["model"].tobytes()
    assert "_onnx_model_" not in clone(clf).__dict__


def test_backend_exports_again_after_training(monkeypatch):
    clf = _quiet_fit(
        MLPClassifier(
            (16,), max_iter=5, inference_backend="onnxruntime", random_state=0
        ),
        X_cancer,
        y_cancer,
    )
    clf.predict(X_cancer[:2])
    first = clf._onnx_model_["sha256"]
    restored = pickle.loads(pickle.dumps(clf))
    restored.partial_fit(X_cancer, y_cancer)
    torch_backend = pickle.loads(pickle.dumps(restored)).set_params(
        inference_backend="torch"
    )
    np.testing.assert_allclose(
        restored.predict_proba(X_cancer),
        torch_backend.predict_proba(X_cancer),
        atol=1e-5,
    )
    assert restored._onnx_model_["sha256"] not in (first, None)
    assert restored._onnx_model_["sha256"] == export.fingerprint(restored)


def test_backend_session_is_rebuilt_lazily(digits_model):
    clf, _ = digits_model
    ort = pickle.loads(pickle.dumps(clf)).set_params(inference_backend="onnxruntime")
    assert inference._CACHE.get(ort.module_) is None  # nothing built by unpickling
    ort.predict(X_digits[:2])
    assert inference._CACHE[ort.module_].session is not None


# -- doc/inference.md -------------------------------------------------------------


def test_inference_guide_runs():
    # tests/test_docs.py runs the guides that need no optional package.
    text = (Path(__file__).parents[1] / "doc" / "inference.md").read_text()
    blocks = re.findall(
        r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, re.DOTALL | re.MULTILINE
    )
    assert blocks
    namespace = {}
    for block in blocks:
        exec(compile(block, "doc/inference.md", "exec"), namespace)
