"""The base estimator's fit flow under hostile conditions (core/estimator.py).

Ctrl-C at any moment, architecture changes between warm fits, networks too
large to build, and settings that cannot work, for both task mixins.
"""

import os
import pickle
import re
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from sklears_neural import MLPClassifier, MLPRegressor
from sklears_neural.exceptions import NetworkTooLargeError

X, y_class = load_iris(return_X_y=True)
y_reg = X[:, 0] * 2.0 - X[:, 1]
ESTIMATORS = [MLPClassifier, MLPRegressor]


def _y(cls):
    return y_class if cls is MLPClassifier else y_reg


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# -- Ctrl-C ---------------------------------------------------------------------

PACKAGE = os.path.dirname(sys.modules["sklears_neural"].__file__)


class _InterruptAtLine:
    """Raise KeyboardInterrupt at the ``n``-th line the library executes.

    A trace function's exception surfaces in the traced frame as if raised
    by that line: a deterministic stand-in for a Ctrl-C at any moment. Not
    interrupted: the rollback itself (there a real SIGINT is held until it
    ends, which a trace cannot imitate), and the lock-holding bookkeeping of
    ``core/modes.py`` and ``core/inference.py``. A trace can raise on the
    first line inside ``with lock:`` and skip its release, which a real
    signal cannot (CPython checks for signals only after calls and on
    backward jumps), and the next fit would wait forever.
    """

    SKIPPED_FILES = tuple(
        os.path.join(PACKAGE, "core", name) for name in ("modes.py", "inference.py")
    )

    def __init__(self, n):
        self.n, self.count, self.fired = n, 0, False

    def __call__(self, frame, event, arg):
        code = frame.f_code
        if (
            not code.co_filename.startswith(PACKAGE)
            or code.co_filename in self.SKIPPED_FILES
            or code.co_name in ("_rollback", "_interrupts_deferred")
        ):
            return None
        if event == "line" and not self.fired:
            self.count += 1
            if self.count == self.n:
                self.fired = True
                raise KeyboardInterrupt
        return self

    def run(self, fn):
        sys.settrace(self)
        try:
            fn()
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
            # An exception from a trace function on the first line inside a
            # ``with torch.no_grad():`` can bypass its __exit__ (a real
            # SIGINT cannot: CPython checks for signals only where the block
            # is protected), leaving grad mode off for the next fit.
            torch.set_grad_enabled(True)


def _lines_run_by(fn):
    counter = _InterruptAtLine(n=-1)
    counter.run(fn)
    return counter.count


def _fitted_consistently(est, cls):
    """Fitted, and every fitted attribute agrees with the others."""
    predictions = est.predict(X)
    assert predictions.shape[0] == X.shape[0]
    assert est.n_features_in_ == X.shape[1]
    assert len(est.loss_curve_) == len(est.history_)
    assert est.n_iter_ <= len(est.history_)
    if cls is MLPClassifier:
        np.testing.assert_allclose(est.predict_proba(X).sum(axis=1), 1.0)


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_ctrl_c_at_any_line_of_a_first_fit_leaves_unfitted_or_consistent(cls, solver):
    y = _y(cls)

    def make():
        return cls(hidden_layer_sizes=(5,), solver=solver, max_iter=2,
                   early_stopping=solver == "adam", random_state=0)

    n_lines = _lines_run_by(lambda: make().fit(X, y))
    outcomes = {"unfitted": 0, "fitted": 0}
    # Every line up to 400, then every 7th: the setup lines all, the
    # repetitive training loop sampled.
    for n in [*range(1, min(n_lines, 400)), *range(400, n_lines, 7)]:
        est = make()
        _InterruptAtLine(n).run(lambda: est.fit(X, y))
        if "module_" not in est.__dict__:
            with pytest.raises(NotFittedError):
                est.predict(X)
            assert not [k for k in vars(est) if k.endswith("_")
                        and not k.startswith("__")]
            outcomes["unfitted"] += 1
        else:
            _fitted_consistently(est, cls)
            outcomes["fitted"] += 1
    # Both outcomes occur: before training nothing is kept, after a step
    # what was learned is (as scikit-learn does).
    assert outcomes["unfitted"] > 0 and outcomes["fitted"] > 0


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize("warm_start", [False, True])
def test_ctrl_c_at_any_line_of_a_refit_keeps_the_model_or_what_it_learned(
    cls, warm_start
):
    y = _y(cls)
    fitted = cls(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    before = pickle.dumps(fitted)
    expected = fitted.predict(X)
    n_iter_before = fitted.n_iter_

    def refit(est):
        est.set_params(warm_start=warm_start)
        est.fit(X, y)

    n_lines = _lines_run_by(lambda: refit(pickle.loads(before)))
    kept = learned = 0
    for n in [*range(1, min(n_lines, 300)), *range(300, n_lines, 5)]:
        est = pickle.loads(before)
        _InterruptAtLine(n).run(lambda: refit(est))
        assert "module_" in est.__dict__
        if (est.n_iter_ == n_iter_before and len(est.history_) == n_iter_before
                and np.array_equal(est.predict(X), expected)):
            kept += 1
        else:
            _fitted_consistently(est, cls)
            learned += 1
    assert kept > 0 and learned > 0


def test_ctrl_c_before_the_first_epoch_keeps_the_fitted_weights():
    """The issue's case: a refit interrupted in on_train_begin re-initialized
    the weights while n_iter_ stayed."""
    from sklears_neural.callbacks import Callback

    class CtrlCAtStart(Callback):
        def on_train_begin(self, trainer, **kwargs):
            raise KeyboardInterrupt

    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    clf.fit(X, y_class)
    expected, n_iter = clf.predict_proba(X), clf.n_iter_
    clf.set_params(callbacks=[CtrlCAtStart()])
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y_class)
    np.testing.assert_array_equal(clf.predict_proba(X), expected)
    assert clf.n_iter_ == n_iter

    fresh = MLPClassifier(hidden_layer_sizes=(5,), callbacks=[CtrlCAtStart()])
    with pytest.raises(KeyboardInterrupt):
        fresh.fit(X, y_class)
    with pytest.raises(NotFittedError):
        fresh.predict(X)


# -- warm starts after an architecture change ---------------------------------------


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_warm_start_after_an_architecture_change_builds_the_new_network(
    cls, global_random_seed
):
    y = _y(cls)
    est = cls(hidden_layer_sizes=(8,), max_iter=5, warm_start=True,
              random_state=global_random_seed).fit(X, y)
    est.set_params(hidden_layer_sizes=(32, 32), activation="tanh")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        est.fit(X, y)
    messages = [str(w.message) for w in caught if w.category is UserWarning]
    assert len(messages) == 1
    assert re.search(r"hidden_layer_sizes: \[8\] -> \[32, 32\].*weights were not kept",
                     messages[0])
    assert [lin.out_features for lin in est.module_.linears][:-1] == [32, 32]
    assert est._module_spec_.kwargs["activation"] == "tanh"
    # The same network a cold fit with these parameters trains.
    cold = clone(est).set_params(warm_start=False).fit(X, y)
    np.testing.assert_array_equal(est.predict(X), cold.predict(X))
    assert est.n_iter_ == cold.n_iter_

    # Unchanged parameters continue the fitted network, without a warning.
    weights = [p.detach().clone() for p in est.module_.parameters()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        est.fit(X, y)
    assert not [w for w in caught if w.category is UserWarning]
    assert any(
        not np.array_equal(a.numpy(), b.detach().numpy())
        for a, b in zip(weights, est.module_.parameters())
    )
    assert est.t_ == 2 * cold.t_


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_partial_fit_after_an_architecture_change_raises_and_keeps_the_model(cls):
    y = _y(cls)
    kwargs = {"classes": np.unique(y)} if cls is MLPClassifier else {}
    est = cls(hidden_layer_sizes=(8,), random_state=0).partial_fit(X, y, **kwargs)
    expected = est.predict(X)
    est.set_params(dropout=0.5)
    with pytest.raises(ValueError, match=r"dropout: 0\.0 -> 0\.5.*call fit"):
        est.partial_fit(X, y)
    np.testing.assert_array_equal(est.predict(X), expected)
    est.set_params(dropout=0.0)
    est.partial_fit(X, y)  # set back: continues


# -- settings that cannot work --------------------------------------------------------


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_a_network_too_large_to_allocate_gets_a_clear_error(cls):
    est = cls(hidden_layer_sizes=(10**12,))
    with pytest.raises(NetworkTooLargeError, match=r"[68],000,000,000,00\d parameters"
                       r".*GiB.*hidden_layer_sizes=\[1000000000000\]"):
        est.fit(X, _y(cls))
    assert isinstance(NetworkTooLargeError("x"), (ValueError, MemoryError))
    with pytest.raises(NotFittedError):
        est.predict(X)


@pytest.mark.parametrize("device", ["meta", "xla", "meta:0"])
def test_devices_the_library_does_not_train_on_are_refused(device):
    with pytest.raises(ValueError, match=r"is not supported.*'cpu', 'cuda', 'mps'"):
        MLPClassifier(device=device).fit(X, y_class)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_early_stopping_without_a_validation_fraction_says_how_to_fix(cls):
    est = cls(early_stopping=True, validation_fraction=0.0)
    with pytest.raises(ValueError, match="validation_fraction in \\(0, 1\\)"):
        est.fit(X, _y(cls))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_fit_refuses_inputs_beyond_the_compute_dtype(cls):
    y = _y(cls)
    with pytest.raises(ValueError, match=r"as large as 7\.9e\+39.*float32.*"
                       r"precision='float64'"):
        cls(max_iter=2).fit(X * 1e39, y)
