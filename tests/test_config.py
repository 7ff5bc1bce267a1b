"""Tests for sklears_neural.core.config: get_config, from_config, templates."""

import json
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sklears_neural
from sklears_neural import BernoulliRBM, MLPClassifier, MLPRegressor
from sklears_neural.core._compat import InvalidParameterError
from sklears_neural.core.config import TEMPLATES, from_config

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)


X_IRIS, Y_IRIS = load_iris(return_X_y=True)

ESTIMATORS = [
    MLPClassifier(
        hidden_layer_sizes=(7, 5),
        activation="tanh",
        alpha=np.float64(0.5),
        n_iter_no_change=np.inf,
        class_weight={0: 1.0, 1: 2.5, 2: 1.0},
        random_state=3,
        device=torch.device("cpu"),
    ),
    MLPClassifier(hidden_layer_sizes=[4], class_weight={"a": 2.0}, batch_size=16),
    MLPRegressor(loss="poisson", hidden_layer_sizes=3, solver="lbfgs", tol=0.0),
    MLPRegressor(
        activation=("leaky_relu", {"negative_slope": 0.2}),
        noise=("gaussian", {"std": 0.1}),
        residual="add",
    ),
    BernoulliRBM(n_components=3, learning_rate=0.05, n_iter=2),
]


def _dump(config, path):
    if path.suffix == ".json":
        path.write_text(json.dumps(config, allow_nan=False))
    else:
        yaml = pytest.importorskip("yaml")
        path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("suffix", [None, ".json", ".yaml"])
@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_get_config_from_config_round_trip(est, suffix, tmp_path):
    config = est.get_config()
    assert config["class"] == type(est).__name__
    assert set(config) == {"class", "params"}
    json.dumps(config, allow_nan=False)  # strict JSON: no NaN/Infinity literals

    source = config if suffix is None else _dump(config, tmp_path / f"config{suffix}")
    rebuilt = from_config(source)

    assert type(rebuilt) is type(est)
    params, expected = rebuilt.get_params(), est.get_params()
    assert params == expected
    # Equal and of the same type: a tuple stays a tuple, an int key an int.
    for name, value in expected.items():
        assert type(params[name]) is type(value) or isinstance(value, np.generic), name
        if isinstance(value, dict):
            assert [type(k) for k in params[name]] == [type(k) for k in value], name
    assert not hasattr(rebuilt, "n_features_in_")


def test_from_config_matches_clone_and_takes_overrides():
    est = ESTIMATORS[0]
    rebuilt = from_config(est.get_config(), random_state=9, max_iter=7)
    expected = clone(est).set_params(random_state=9, max_iter=7).get_params()
    assert rebuilt.get_params() == expected


def test_yaml_reads_exponent_floats_and_infinity(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "config.yml"
    path.write_text(
        "class: MLPRegressor\n"
        "params:\n"
        "  alpha: 1e-4\n"
        "  learning_rate_init: 3.0E-3\n"
        "  n_iter_no_change: .inf\n"
        "  hidden_layer_sizes: [16, 8]\n"
    )
    est = from_config(path)
    assert est.alpha == 1e-4 and isinstance(est.alpha, float)
    assert est.learning_rate_init == 3e-3
    assert est.n_iter_no_change == np.inf
    assert est.hidden_layer_sizes == [16, 8]


def test_yaml_without_pyyaml_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("class: MLPClassifier\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` fail
    with pytest.raises(ImportError, match=r"sklears-neural\[yaml\]"):
        from_config(path)


def test_yaml_python_tags_are_refused(tmp_path):
    pytest.importorskip("yaml")
    marker = tmp_path / "ran"
    path = tmp_path / "config.yaml"
    path.write_text(f"class: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ValueError, match="not a valid YAML config.*python/object"):
        from_config(path)
    assert not marker.exists()


def test_yaml_alias_bombs_are_refused(tmp_path):
    """Nine levels of nine aliases expand to 9**9 strings: refused unread."""
    pytest.importorskip("yaml")
    lines = ["a0: &a0 x"]
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    lines.append("class: MLPClassifier")
    lines.append("params: {hidden_layer_sizes: *a9}")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"aliases \(\*name\) are not allowed"):
        from_config(path)


def test_oversized_config_files_are_refused(tmp_path, monkeypatch):
    from sklears_neural.core import config

    monkeypatch.setattr(config, "MAX_CONFIG_BYTES", 100)
    path = tmp_path / "big.json"
    path.write_text('{"class": "MLPClassifier", "params": {}}' + " " * 200)
    with pytest.raises(ValueError, match="larger than a config may be"):
        from_config(path)


def test_bad_configs_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match=(
        r"Unknown parameter\(s\) \['hiden_layer_sizes'\].*"
        r"Did you mean 'hidden_layer_sizes'"
    )):
        from_config({"class": "MLPClassifier", "params": {"hiden_layer_sizes": [3]}})
    message = "'solver' parameter of MLPClassifier"
    with pytest.raises(InvalidParameterError, match=message):
        from_config({"class": "MLPClassifier", "params": {"solver": "newton"}})
    with pytest.raises(ValueError, match="Unknown estimator class 'os.path'"):
        from_config({"class": "os.path"})
    with pytest.raises(ValueError, match="keys 'class' and"):
        from_config({"class": "MLPClassifier", "parameters": {}})
    with pytest.raises(ValueError, match=r"neither a config template nor a file.*"
                       r"Did you mean 'mlp-regression'"):
        from_config("mlp-regresion")
    with pytest.raises(FileNotFoundError):
        from_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        from_config(tmp_path / "bad.json")


def test_from_config_reads_a_saved_model(tmp_path):
    est = MLPClassifier((4,), max_iter=2, random_state=0, alpha=0.25)
    est.fit(X_IRIS, Y_IRIS)
    est.save(tmp_path / "m.zip")
    rebuilt = from_config(tmp_path / "m.zip")
    assert rebuilt.get_params() == est.get_params()
    assert not hasattr(rebuilt, "module_")


def test_templates_exist_only_for_existing_classes():
    assert TEMPLATES.names == ["mlp-regression", "mlp-small-tabular"]
    for name in TEMPLATES.names:
        est = from_config(name)
        est._validate_params()
        assert type(est).__name__ == TEMPLATES(name)["class"]
    assert from_config("MLP_Small_Tabular").get_params() == from_config(
        "mlp-small-tabular").get_params()
    assert sklears_neural.from_config is from_config


def test_templates_fit_iris(global_random_seed):
    # The classifier template's network, solver and batches, for 40 of its 200
    # epochs (a fifth of the time): worst of seeds 0-19 was 0.967.
    clf = make_pipeline(
        StandardScaler(),
        from_config("mlp-small-tabular", random_state=global_random_seed, max_iter=40),
    ).fit(X_IRIS, Y_IRIS)
    assert clf.score(X_IRIS, Y_IRIS) > 0.95

    # Petal width from the other three measurements; the template as it is
    # (early stopping): worst of seeds 0-7 was 0.940.
    X, y = X_IRIS[:, :3], X_IRIS[:, 3]
    reg = make_pipeline(
        StandardScaler(), from_config("mlp-regression", random_state=global_random_seed)
    ).fit(X, y)
    assert reg.score(X, y) > 0.9
