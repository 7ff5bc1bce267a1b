"""One check and one message for options that scikit-learn's validation never sees.

Callbacks, learning-rate schedules, noise layers and our optimizers take
options inside a single estimator parameter (a callback object, a
``("cosine", {"period": 10})`` pair) or outside any estimator, where
``_parameter_constraints`` does not reach. They are checked where they are
made, with these functions, so that every such error has scikit-learn's
shape and type, :class:`~sklearn.utils._param_validation.InvalidParameterError`
(both a ``ValueError`` and a ``TypeError``)::

    The 'patience' parameter of EarlyStopping must be an int >= 0. Got -3 instead.

Each function returns the value as the plain Python type it checked for.
"""

from numbers import Integral, Real

import numpy as np

from sklears_neural.core._compat import InvalidParameterError

__all__ = ["check_bool", "check_int", "check_options", "check_real", "fail"]


def fail(owner, name, expected, value):
    """Raise the error for option ``name`` of ``owner`` that is not ``expected``.

    Parameters
    ----------
    owner : str
        What the option belongs to: ``"EarlyStopping"``, ``"the 'cosine'
        schedule"``.
    name : str
    expected : str
        What it must be, completing "must be ...".
    value : object
        What it is.
    """
    raise InvalidParameterError(
        f"The {name!r} parameter of {owner} must be {expected}. Got {value!r} instead."
    )


def _bounds(low, high, low_open, high_open):
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def _within(value, low, high, low_open, high_open):
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or (value < high if high_open else value <= high)


def check_real(owner, name, value, *, low=None, high=None, low_open=False,
               high_open=False):
    """``value`` as a float, if it is a real number within the bounds.

    Booleans are refused: ``True`` is an ``int`` to Python, never a rate.
    Bounds are closed unless ``low_open`` / ``high_open``; ``None`` is
    unbounded. NaN is never within bounds.
    """
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, Real)
        or np.isnan(value)
        or not _within(value, low, high, low_open, high_open)
    ):
        fail(owner, name, "a real number" + _bounds(low, high, low_open, high_open),
             value)
    return float(value)


def check_int(owner, name, value, *, low=None, high=None):
    """``value`` as an int, if it is an integer (not a bool) in ``[low, high]``."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, Integral)
        or not _within(value, low, high, False, False)
    ):
        fail(owner, name, "an int" + _bounds(low, high, False, False), value)
    return int(value)


def check_bool(owner, name, value):
    """``value`` as a bool, if it is ``True`` or ``False`` (NumPy's too)."""
    if not isinstance(value, (bool, np.bool_)):
        fail(owner, name, "True or False", value)
    return bool(value)


def check_options(owner, name, value, options):
    """``value``, if it is one of the strings ``options``."""
    if not isinstance(value, str) or value not in options:
        fail(owner, name, f"a str among {sorted(options)}", value)
    return value
