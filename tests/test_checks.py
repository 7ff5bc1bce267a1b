"""Option checks outside scikit-learn's validation (core/checks.py): one message shape."""

import math

import numpy as np
import pytest

from sklears_neural.core import checks
from sklears_neural.core._compat import InvalidParameterError


@pytest.mark.parametrize("call, message", [
    (lambda: checks.check_real("X", "tol", -1, low=0),
     "The 'tol' parameter of X must be a real number >= 0. Got -1 instead."),
    (lambda: checks.check_real("X", "lr", 0, low=0, low_open=True),
     "The 'lr' parameter of X must be a real number > 0. Got 0 instead."),
    (lambda: checks.check_real("X", "p", 1, low=0, high=1, high_open=True),
     "The 'p' parameter of X must be a real number in [0, 1). Got 1 instead."),
    (lambda: checks.check_real("X", "p", True, low=0),
     "The 'p' parameter of X must be a real number >= 0. Got True instead."),
    (lambda: checks.check_real("X", "p", math.nan),
     "The 'p' parameter of X must be a real number. Got nan instead."),
    (lambda: checks.check_int("X", "n", 2.0, low=1),
     "The 'n' parameter of X must be an int >= 1. Got 2.0 instead."),
    (lambda: checks.check_int("X", "n", 5, low=1, high=4),
     "The 'n' parameter of X must be an int in [1, 4]. Got 5 instead."),
    (lambda: checks.check_bool("X", "flag", 1),
     "The 'flag' parameter of X must be True or False. Got 1 instead."),
    (lambda: checks.check_options("X", "kind", "c", {"b", "a"}),
     "The 'kind' parameter of X must be a str among ['a', 'b']. Got 'c' instead."),
])
def test_one_message_shape_and_scikit_learns_error_type(call, message):
    with pytest.raises(InvalidParameterError) as caught:
        call()
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, TypeError)


def test_accepted_values_come_back_as_plain_python_types():
    assert checks.check_real("X", "a", np.float32(0.5), low=0) == 0.5
    assert type(checks.check_real("X", "a", 2, low=0)) is float
    assert type(checks.check_int("X", "n", np.int64(3), low=1)) is int
    assert checks.check_bool("X", "f", np.bool_(True)) is True
    assert checks.check_options("X", "k", "a", {"a"}) == "a"
