"""Estimator docstrings document every parameter, in order (core/docstrings.py)."""

import inspect
import re

import pytest

import sklears_neural
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.docstrings import MARKER, PARAMETERS, document_parameters

ESTIMATORS = [getattr(sklears_neural, name) for name in sklears_neural.__all__
              if inspect.isclass(getattr(sklears_neural, name))
              and hasattr(getattr(sklears_neural, name), "get_params")]


def _documented(cls):
    doc = inspect.cleandoc(cls.__doc__)
    section = doc.split("Parameters\n----------\n", 1)[1]
    # Up to the next numpydoc header: a line underlined with dashes.
    section = re.split(r"^\S.*\n-+$", section, maxsplit=1, flags=re.M)[0]
    # Entries are "name : type"; a **kwargs entry is the bare "**name" line.
    return [name.lstrip("*") for name in re.findall(r"^(\**\w+)(?: :|$)", section, re.M)]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_every_parameter_is_documented_in_signature_order(cls):
    signature = [name for name in inspect.signature(cls.__init__).parameters
                 if name != "self"]
    assert _documented(cls) == signature
    assert MARKER not in cls.__doc__


def test_both_mlps_document_every_solver_and_schedule():
    # They once drifted: the regressor listed 3 solvers and 3 schedules.
    from sklears_neural.core.optim import SOLVERS
    from sklears_neural.core.schedules import LEARNING_RATES

    for cls in (sklears_neural.MLPClassifier, sklears_neural.MLPRegressor):
        for name in [*SOLVERS.names, *LEARNING_RATES.names]:
            assert f'"{name}"' in cls.__doc__, (cls.__name__, name)


def test_an_undocumented_parameter_fails_at_class_creation():
    with pytest.raises(TypeError, match=r"no docstring entry for \['mystery'\]"):
        @document_parameters
        class Estimator:
            """An estimator.

            Parameters
            ----------
            <shared parameters>
            """

            def __init__(self, alpha=0.0001, mystery=1):
                pass

    with pytest.raises(TypeError, match="has no '<shared parameters>' line"):
        @document_parameters
        class Bare:
            """No marker."""

            def __init__(self, alpha=0.0001):
                pass


def test_own_entries_win_over_shared_ones():
    @document_parameters
    class Estimator:
        """An estimator.

        Parameters
        ----------
        alpha : float, default=1.0
            Not the L2 penalty here.
        <shared parameters>

        Attributes
        ----------
        coef_ : ndarray
        """

        def __init__(self, solver="adam", alpha=1.0):
            pass

    assert "Not the L2 penalty here." in Estimator.__doc__
    assert PARAMETERS["solver"].split("\n")[0] in Estimator.__doc__
    assert _documented(Estimator) == ["solver", "alpha"]
    assert "coef_ : ndarray" in Estimator.__doc__


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_shared_attributes_are_written_out_once(cls):
    from sklears_neural.core.docstrings import ATTRIBUTES, ATTRIBUTES_MARKER

    doc = inspect.cleandoc(cls.__doc__)
    assert ATTRIBUTES_MARKER not in doc
    section = doc.split("Attributes\n----------\n", 1)[1]
    section = re.split(r"^\S.*\n-+$", section, maxsplit=1, flags=re.M)[0]
    names = re.findall(r"^(\w+) :", section, re.M)
    assert len(names) == len(set(names)), cls.__name__
    if issubclass(cls, BaseNeuralEstimator):  # not the RBM, not Hopfield networks
        assert set(ATTRIBUTES) <= set(names)
