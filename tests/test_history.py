"""History: plain records, JSON round trip, DataFrame and plot views."""

import json
import math
import pickle
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from sklears_neural import MLPClassifier
from sklears_neural.callbacks import GradientStats
from sklears_neural.core.history import History

X_digits, y_digits = load_digits(n_class=3, return_X_y=True)
X_digits, y_digits = X_digits[:100] / 16.0, y_digits[:100]

RECORDS = [
    {"epoch": 1, "train_loss": 0.9, "valid_loss": 1.1, "valid_score": 0.5},
    {"epoch": 2, "train_loss": 0.5, "valid_loss": 0.7, "valid_score": 0.75,
     "grad_norm/layers.0.weight": 0.25},
    {"epoch": 3, "train_loss": 0.25, "valid_loss": math.nan, "valid_score": 0.875,
     "skipped_steps": 2},
]


def _history():
    return History(dict(r) for r in RECORDS)


def _fitted(**params):
    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=4, early_stopping=True,
                        validation_fraction=0.2, random_state=0, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(X_digits, y_digits)


def _same_records(a, b):
    assert len(a) == len(b)
    for left, right in zip(a, b):
        assert list(left) == list(right)
        for key in left:
            assert type(left[key]) is type(right[key]), key
            assert left[key] == right[key] or (
                math.isnan(left[key]) and math.isnan(right[key])
            ), key


def test_column_keeps_the_epochs_that_recorded_the_key():
    history = _history()
    assert history.column("train_loss") == [0.9, 0.5, 0.25]
    assert history.column("skipped_steps") == [2]
    assert history.column("never") == []


def test_json_round_trip_keeps_types_order_and_nan():
    history = _history()
    text = history.to_json()
    assert json.loads(text)[0] == RECORDS[0]
    restored = History.from_json(text)
    assert type(restored) is History
    _same_records(restored, history)
    assert type(restored[2]["skipped_steps"]) is int
    assert type(restored[0]["epoch"]) is int
    assert History.from_json(History().to_json()) == []


def test_json_refuses_what_is_not_a_history():
    with pytest.raises(ValueError, match="JSON list of objects"):
        History.from_json('{"epoch": 1}')
    with pytest.raises(ValueError, match="JSON list of objects"):
        History.from_json("[1, 2]")
    with pytest.raises(TypeError):
        History([{"epoch": 1, "train_loss": torch.tensor(0.5)}]).to_json()


def test_pickle_keeps_the_class_and_records():
    history = _history()
    restored = pickle.loads(pickle.dumps(history))
    assert type(restored) is History
    _same_records(restored, history)


def test_to_frame_is_indexed_by_epoch_with_one_column_per_key():
    frame = _history().to_frame()
    assert frame.shape == (3, 5)
    assert frame.index.name == "epoch" and frame.index.tolist() == [1, 2, 3]
    assert frame.columns.tolist() == ["train_loss", "valid_loss", "valid_score",
                                      "grad_norm/layers.0.weight", "skipped_steps"]
    np.testing.assert_array_equal(frame["train_loss"].to_numpy(), [0.9, 0.5, 0.25])
    # Keys an epoch did not record, and recorded NaN, both read as NaN.
    assert frame["grad_norm/layers.0.weight"].isna().tolist() == [True, False, True]
    assert frame["valid_loss"].isna().tolist() == [False, False, True]


def test_to_frame_of_an_empty_history_and_of_records_without_epoch():
    empty = History().to_frame()
    assert empty.shape == (0, 0) and empty.index.name == "epoch"
    frame = History([{"train_loss": 3.0}, {"train_loss": 2.0}]).to_frame()
    assert frame.index.tolist() == [1, 2] and frame.columns.tolist() == ["train_loss"]


def test_fitted_history_to_frame_and_json():
    clf = _fitted(callbacks=[GradientStats(update_ratio=False)])
    frame = clf.history_.to_frame()
    assert frame.index.tolist() == list(range(1, clf.n_iter_ + 1))
    assert frame.columns[:3].tolist() == ["train_loss", "valid_loss", "valid_score"]
    assert frame.shape == (clf.n_iter_, 3 + 4)
    np.testing.assert_array_equal(frame["train_loss"].to_numpy(), clf.loss_curve_)
    np.testing.assert_array_equal(frame["valid_score"].to_numpy(),
                                  clf.validation_scores_)
    _same_records(History.from_json(clf.history_.to_json()), clf.history_)


@pytest.fixture
def pyplot():
    plt = pytest.importorskip("matplotlib.pyplot",
                              reason="matplotlib (extra 'plot') is not installed")
    plt.switch_backend("Agg")
    yield plt
    plt.close("all")


def test_plot_draws_the_plain_keys_by_default(pyplot):
    from matplotlib.axes import Axes

    ax = _history().plot()
    assert isinstance(ax, Axes) and ax.get_xlabel() == "epoch"
    lines = {line.get_label(): line for line in ax.get_lines()}
    # Namespaced diagnostics stay out unless asked for.
    assert sorted(lines) == ["skipped_steps", "train_loss", "valid_loss", "valid_score"]
    np.testing.assert_array_equal(lines["train_loss"].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(lines["train_loss"].get_ydata(), [0.9, 0.5, 0.25])
    # The NaN epoch is left out of the line, not drawn as a gap at 0.
    np.testing.assert_array_equal(lines["valid_loss"].get_xdata(), [1, 2])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "train_loss", "valid_loss", "valid_score", "skipped_steps"]


def test_plot_given_keys_on_a_given_axes(pyplot):
    _, ax = pyplot.subplots()
    assert _history().plot("grad_norm/layers.0.weight", ax=ax) is ax
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), [2])
    np.testing.assert_array_equal(line.get_ydata(), [0.25])
    with pytest.raises(KeyError, match=r"\['valid_acc'\] are not in this history.*"
                                       r"Recorded keys: \['grad_norm"):
        _history().plot(["train_loss", "valid_acc"], ax=ax)


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    # None in sys.modules makes the import fail, as if it were not installed.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"sklears-neural\[plot\]"):
        _history().plot()


def test_history_stays_a_plain_list():
    # No dict-like method: pandas and dict() keep treating it as a list of records.
    history = _history()
    assert not hasattr(history, "keys")
    assert pd.DataFrame(history).shape == (3, 6)
    assert isinstance(history, list) and history[:2] == RECORDS[:2]
