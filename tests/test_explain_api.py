"""The explainers' shared API: Explanation, the explained-model views, targets, plots."""

import pickle
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, PolynomialFeatures, StandardScaler

from sklears_neural import (
    CNNClassifier,
    MLPClassifier,
    MLPRegressor,
    RNNClassifier,
)
from sklears_neural.core._compat import InvalidParameterError
from sklears_neural.explain import Explanation, Saliency
from sklears_neural.explain._model import PredictFunction, TorchModel

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


@pytest.fixture(scope="module")
def iris_mlp():
    X, y = load_iris(return_X_y=True)
    return _fit(MLPClassifier(max_iter=200, random_state=0, precision="float64"), X, y), X, y


@pytest.fixture(scope="module")
def cancer_pipeline():
    data = load_breast_cancer(as_frame=True)
    pipe = make_pipeline(StandardScaler(), PCA(8, whiten=True),
                         MLPClassifier(max_iter=60, random_state=0, precision="float64"))
    return _fit(pipe, data.data, data.target), data.data, data.target


@pytest.fixture(scope="module")
def digits_cnn():
    X, y = load_digits(return_X_y=True)
    X = X[:200] / 16
    cnn = CNNClassifier(layers=["conv4", "maxpool2", "gap"], max_iter=2, random_state=0,
                        input_shape=(1, 8, 8))
    return _fit(cnn, X, y[:200]), X


@pytest.fixture(scope="module")
def digits_rnn():
    X, y = load_digits(return_X_y=True)
    X = (X[:200] / 16).reshape(-1, 8, 8)
    return _fit(RNNClassifier(hidden_size=8, max_iter=2, random_state=0), X, y[:200]), X


# -- the explained outputs ----------------------------------------------------------


def test_torch_model_outputs_equal_the_estimators(iris_mlp, cancer_pipeline):
    mlp, X, y = iris_mlp
    model = TorchModel(mlp)
    x, lengths, names = model.prepare(X[:20])
    assert lengths is None and names == ["x0", "x1", "x2", "x3"]
    assert_allclose(model.predict(x), mlp.predict_proba(X[:20]), rtol=1e-12)
    logits = TorchModel(mlp, "logit").predict(x)
    assert_allclose(logits, mlp._raw_outputs(X[:20]), rtol=1e-12)
    # Through a scaler and a whitening PCA, in the pipeline's input space.
    pipe, data, _ = cancer_pipeline
    model = TorchModel(pipe)
    x, _, names = model.prepare(data.iloc[:15])
    assert names == list(data.columns)
    assert_allclose(model.predict(x), pipe.predict_proba(data.iloc[:15]), rtol=1e-10)


def test_binary_logits_are_the_log_odds_of_each_class(cancer_pipeline):
    pipe, data, _ = cancer_pipeline
    model = TorchModel(pipe, "logit")
    x, _, _ = model.prepare(data.iloc[:10])
    log_odds = model.predict(x)
    p = pipe.predict_proba(data.iloc[:10])
    assert_allclose(log_odds, np.log(p / (1 - p)), rtol=1e-8)
    agnostic = PredictFunction(pipe, "logit")
    rows, _ = agnostic.prepare(data.iloc[:10])
    assert_allclose(agnostic(rows), log_odds, rtol=1e-10)


def test_regressor_outputs_and_output_names():
    X, y = load_iris(return_X_y=True)
    reg = _fit(MLPRegressor(max_iter=50, random_state=0, precision="float64"), X, np.c_[y, -y])
    model = TorchModel(reg)
    x, _, _ = model.prepare(X[:5])
    assert_allclose(model.predict(x), reg.predict(X[:5]), rtol=1e-12)
    assert model.output == "prediction" and model.output_names == ["y0", "y1"]
    with pytest.raises(ValueError, match="applies to classifiers"):
        TorchModel(reg, "logit")


def test_image_and_sequence_inputs_keep_the_users_layout(digits_cnn, digits_rnn):
    cnn, X = digits_cnn
    flat = Saliency(cnn).explain(X[:3])
    images = Saliency(cnn).explain(X[:3].reshape(3, 1, 8, 8))
    assert flat.values.shape == (3, 64) and images.values.shape == (3, 1, 8, 8)
    assert flat.layout == "tabular" and flat.image_shape == (1, 8, 8)
    assert images.layout == "image" and images.feature_names[1] == "x[0,0,1]"
    assert_allclose(flat.values, images.values.reshape(3, 64), rtol=1e-12)
    rnn, S = digits_rnn
    ragged = [S[0][:5], S[1]]
    explained = Saliency(rnn).explain(ragged)
    assert explained.values.shape == (2, 8, 8) and explained.layout == "sequence"
    assert_array_equal(explained.lengths, [5, 8])
    assert not explained.values[0, 5:].any()  # padding gets exact zeros
    alone = Saliency(rnn).explain([S[0][:5]])
    assert_allclose(alone.values[0], explained.values[0, :5], atol=1e-12)


def test_predict_function_for_any_estimator():
    X, y = load_iris(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    f = PredictFunction(forest)
    rows, names = f.prepare(X[:4])
    assert_allclose(f(rows), forest.predict_proba(X[:4]))
    assert f.output_names == [0, 1, 2] and names == ["x0", "x1", "x2", "x3"]
    with pytest.raises(ValueError, match="needs decision_function"):
        PredictFunction(forest, "logit")(rows)
    binary = LogisticRegression().fit(X, y == 0)
    f = PredictFunction(binary, "logit")
    scores = f(f.prepare(X[:3])[0])
    assert_allclose(scores[:, 1], binary.decision_function(X[:3]))
    assert_allclose(scores[:, 0], -scores[:, 1])


def test_predict_function_flattens_images_and_refuses_ragged(digits_cnn):
    cnn, X = digits_cnn
    f = PredictFunction(cnn)
    rows, names = f.prepare(X[:3].reshape(3, 1, 8, 8))
    assert rows.shape == (3, 64) and names[0] == "x[0,0,0]"
    assert_allclose(f(rows), cnn.predict_proba(X[:3]), rtol=1e-6)
    with pytest.raises(ValueError, match="Pad them"):
        PredictFunction(cnn).prepare([np.zeros((3, 2)), np.zeros((4, 2))])


# -- targets ------------------------------------------------------------------------


def test_targets(iris_mlp):
    mlp, X, _ = iris_mlp
    saliency = Saliency(mlp, abs=False)
    predicted = saliency.explain(X[45:55])
    assert_array_equal(predicted.targets, mlp.predict(X[45:55]))
    one = saliency.explain(X[45:55], target=2)
    assert_array_equal(one.targets, 2)
    each = saliency.explain(X[45:55], target=[0, 1] * 5)
    assert_array_equal(each.targets, [0, 1] * 5)
    assert_allclose(each.values[1], one.values[1] * 0 + saliency.explain(
        X[46:47], target=1).values[0], rtol=1e-12)
    every = saliency.explain(X[45:55], target="all")
    assert every.values.shape == (10, 4, 3) and every.targets is None
    assert_allclose(every.values[:, :, 2], one.values, rtol=1e-12)
    # The probabilities sum to one: their gradients sum to zero.
    assert_allclose(every.values.sum(axis=2), 0, atol=1e-12)
    with pytest.raises(ValueError, match=r"not a class of the estimator; its classes are \[0, 1, 2\]"):
        saliency.explain(X[:2], target=7)
    with pytest.raises(ValueError, match="target has 3 entries for 2 samples"):
        saliency.explain(X[:2], target=[0, 1, 2])


def test_string_class_labels_are_targets():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    mlp = _fit(MLPClassifier(max_iter=30, random_state=0), X, names)
    explained = Saliency(mlp).explain(X[:3], target="virginica")
    assert explained.output_names == ["setosa", "versicolor", "virginica"]
    assert_array_equal(explained.targets, 2)
    assert list(explained.to_frame().index) == ["virginica"] * 3


# -- Explanation ----------------------------------------------------------------------


def test_explanation_frames_rows_and_pickle(cancer_pipeline):
    pipe, data, _ = cancer_pipeline
    explained = Saliency(pipe, abs=False).explain(data.iloc[:6])
    frame = explained.to_frame()
    assert list(frame.columns) == list(data.columns) and frame.shape == (6, 30)
    assert_allclose(frame.to_numpy(), explained.values)
    part = explained[2:4]
    assert_allclose(part.values, explained.values[2:4])
    assert_array_equal(part.targets, explained.targets[2:4])
    assert len(part) == 2 and part.feature_names == explained.feature_names
    copy = pickle.loads(pickle.dumps(explained))
    assert_allclose(copy.values, explained.values) and copy.method == "Saliency"
    every = Saliency(pipe).explain(data.iloc[:2], target="all").to_frame()
    assert every.columns.nlevels == 2 and every.shape == (2, 60)
    assert list(every.columns.get_level_values("output")[:1]) == [0]


def test_explanation_extras_and_errors():
    explained = Explanation(np.ones((2, 3)), convergence_delta=np.array([0.1, 0.2]))
    assert_allclose(explained.convergence_delta, [0.1, 0.2])
    assert_allclose(explained[1:].convergence_delta, [0.2])
    with pytest.raises(AttributeError, match=r"holds \['convergence_delta'\]"):
        explained.local_r2
    assert "values.shape=(2, 3)" in repr(explained)


# -- Saliency against finite differences ----------------------------------------------


def test_saliency_through_a_pipeline_equals_finite_differences(cancer_pipeline):
    pipe, data, _ = cancer_pipeline
    explained = Saliency(pipe, abs=False).explain(data.iloc[:2], target=1)
    x = data.iloc[:2].to_numpy()
    step = 1e-5 * data.std().to_numpy()
    numeric = np.empty_like(x)
    for j in range(x.shape[1]):
        up, down = x.copy(), x.copy()
        up[:, j] += step[j]
        down[:, j] -= step[j]
        numeric[:, j] = (pipe.predict_proba(up)[:, 1] - pipe.predict_proba(down)[:, 1]) / (
            2 * step[j])
    assert_allclose(explained.values, numeric, rtol=1e-5, atol=1e-8)
    assert_allclose(Saliency(pipe).explain(data.iloc[:2], target=1).values, np.abs(numeric),
                    rtol=1e-5, atol=1e-8)


def test_pipeline_with_minmax_scaler_and_batches(iris_mlp):
    X, y = load_iris(return_X_y=True)
    pipe = _fit(make_pipeline(MinMaxScaler(), MLPClassifier(max_iter=20, random_state=0)),
                X, y)
    whole = Saliency(pipe).explain(X)
    batched = Saliency(pipe, batch_size=7).explain(X)
    assert_allclose(batched.values, whole.values, rtol=1e-12)


# -- bad input ------------------------------------------------------------------------


def test_errors_name_the_problem_and_the_fix(iris_mlp):
    mlp, X, y = iris_mlp
    with pytest.raises(NotFittedError):
        Saliency(MLPClassifier()).explain(X)
    forest = RandomForestClassifier(n_estimators=2).fit(X, y)
    with pytest.raises(TypeError, match="KernelShapExplainer"):
        Saliency(forest).explain(X)
    poly = _fit(make_pipeline(PolynomialFeatures(), MLPClassifier(max_iter=5)), X, y)
    with pytest.raises(TypeError, match="'polynomialfeatures' .*no differentiable"):
        Saliency(poly).explain(X)
    with pytest.raises(InvalidParameterError, match="'output' parameter of Saliency"):
        Saliency(mlp, output="proba").explain(X)
    with pytest.raises(InvalidParameterError, match="'batch_size'"):
        Saliency(mlp, batch_size=0).explain(X)
    bad = X[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Saliency(mlp).explain(bad)
    with pytest.raises(ValueError, match="3 features"):
        Saliency(mlp).explain(X[:, :3])


def test_explainers_are_scikit_learn_objects(iris_mlp):
    mlp, X, _ = iris_mlp
    saliency = Saliency(mlp, abs=False, batch_size=32)
    assert saliency.get_params()["batch_size"] == 32
    copy = clone(saliency)
    # The copy explains the same fitted model: cloning the estimator would unfit it.
    assert copy.abs is False and copy.batch_size == 32 and copy.estimator is mlp
    assert_allclose(copy.explain(X[:3]).values, saliency.explain(X[:3]).values)
    assert "abs=False" in repr(saliency)


# -- servers and notebooks --------------------------------------------------------------


def test_the_estimator_is_left_untouched_and_threads_agree(digits_cnn):
    cnn, X = digits_cnn
    before = {k: v.clone() for k, v in cnn.module_.state_dict().items()}
    flags = [p.requires_grad for p in cnn.module_.parameters()]
    expected = Saliency(cnn, abs=False).explain(X[:16]).values
    results, errors = [None] * 8, []

    def work(i):
        try:
            results[i] = Saliency(cnn, abs=False).explain(X[:16]).values
            cnn.predict(X[:16])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for values in results:
        assert_allclose(values, expected, rtol=1e-12)
    for name, tensor in cnn.module_.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert [p.requires_grad for p in cnn.module_.parameters()] == flags
    assert not cnn.module_.training


# -- plots ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["auto", "bar", "summary", "heatmap", "image"])
def test_plots_draw_every_kind(digits_cnn, kind, tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    cnn, X = digits_cnn
    explained = Saliency(cnn, abs=False).explain(X[:5])
    figure = explained.plot(kind)
    path = tmp_path / f"{kind}.png"
    figure.savefig(path)
    plt.close(figure)
    assert path.stat().st_size > 2000


def test_sequence_plot_and_plot_errors(digits_rnn, iris_mlp):
    plt = pytest.importorskip("matplotlib.pyplot")
    rnn, S = digits_rnn
    figure = Saliency(rnn).explain([S[0][:4], S[1]]).plot()
    assert len(figure.axes) == 4  # two samples, each with its colorbar
    plt.close(figure)
    mlp, X, _ = iris_mlp
    every = Saliency(mlp).explain(X[:3], target="all")
    plt.close(every.plot("bar"))
    with pytest.raises(ValueError, match="holds every output"):
        every.plot("summary")
    with pytest.raises(ValueError, match="shape=\\(C, H, W\\)"):
        Saliency(mlp).explain(X[:3]).plot("image")
    with pytest.raises(ValueError, match="kind='pie' is not one of"):
        Saliency(mlp).explain(X[:3]).plot("pie")


# -- what the library imports and keeps ---------------------------------------------


def test_the_reference_libraries_are_never_imported():
    # captum, shap and lime are test-only references: importing every
    # explainer (and explaining) must not pull them in.
    code = (
        "import sys, numpy as np\n"
        "from sklearn.datasets import load_iris\n"
        "import sklears_neural.explain as e\n"
        "from sklears_neural import MLPClassifier\n"
        "for name in e.__all__: getattr(e, name)\n"
        "X, y = load_iris(return_X_y=True)\n"
        "m = MLPClassifier(max_iter=2).fit(X, y)\n"
        "e.Saliency(m).explain(X[:2])\n"
        "print(sorted(n for n in ('captum', 'shap', 'lime') if n in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_explaining_again_and_again_does_not_grow_memory(iris_mlp):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from _memory import settled_rss_bytes

    mlp, X, _ = iris_mlp
    for _ in range(20):  # allocator pools and lazy imports settle first
        Saliency(mlp).explain(X[:50])
    before = settled_rss_bytes()
    for _ in range(200):
        Saliency(mlp).explain(X[:50])
    growth = settled_rss_bytes() - before
    # A kept copy of the network per call (~25 KiB with its float64 state)
    # would grow by ~5 MiB; measured growth is allocator noise (< 0.5 MiB).
    assert growth < 200 * 10 * 1024, f"grew {growth / 2**20:.1f} MiB"


class _SmoothNet(torch.nn.Module):
    """A user's module: the bring-your-own estimators are explained like ours."""

    def __init__(self, n_features_in, n_outputs, hidden=8):
        super().__init__()
        self.inner = torch.nn.Linear(n_features_in, hidden)
        self.outer = torch.nn.Linear(hidden, n_outputs)

    def forward(self, x):
        return self.outer(torch.tanh(self.inner(x)))


def test_bring_your_own_module_is_explained():
    from sklears_neural import NeuralNetClassifier
    from sklears_neural.explain import IntegratedGradients

    X, y = load_iris(return_X_y=True)
    net = _fit(NeuralNetClassifier(_SmoothNet, max_iter=30, random_state=0,
                                   precision="float64"), X, y)
    explained = IntegratedGradients(net, n_steps=200).explain(X[::30])
    # Completeness on a smooth network: the values add up to f(x) - f(0).
    assert np.abs(explained.convergence_delta).max() < 1e-8
    proba = net.predict_proba(X[::30])[np.arange(5), explained.targets]
    assert_allclose(explained.values.sum(axis=1) + explained.base_values, proba,
                    atol=1e-8)
