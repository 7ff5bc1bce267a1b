"""The one module that imports scikit-learn's private APIs.

scikit-learn's parameter validation (``_param_validation``), ``_fit_context``
and a few helpers are private, so an upstream change should touch this file
only. The constraints that scikit-learn cannot express ("every layer size is
>= 1", "a name the resolver knows") are defined here too.
"""

from numbers import Integral

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
)
from sklearn.utils.multiclass import _check_partial_fit_first_call
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import _check_sample_weight

__all__ = [
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "Options",
    "StrOptions",
    "PositiveIntSequence",
    "ResolvableName",
    "CallbackList",
    "_check_optimize_result",
    "_check_partial_fit_first_call",
    "_check_sample_weight",
    "_fit_context",
]


# scikit-learn's validator accepts only its own constraint classes, so the
# custom rules below subclass Options/StrOptions and override the test.


class PositiveIntSequence(Options):
    """An int >= 1, or a possibly empty sequence of ints that are all >= 1.

    scikit-learn declares ``hidden_layer_sizes`` as "array-like or int >= 1"
    and then re-checks the elements by hand inside ``fit``; this constraint
    says the whole rule once.
    """

    def __init__(self):
        super().__init__(object, set())

    def is_satisfied_by(self, val):
        if isinstance(val, (str, bytes)):
            return False
        if isinstance(val, Integral) and not isinstance(val, bool):
            return val >= 1
        try:
            items = list(val)
        except TypeError:
            return False
        return all(
            isinstance(v, Integral) and not isinstance(v, bool) and v >= 1
            for v in items
        )

    def __str__(self):
        return "an int >= 1 or a sequence of ints that are all >= 1"


class ResolvableName(StrOptions):
    """A string that a :class:`~sklears_neural.core.resolve.Resolver` knows.

    Case, ``-`` and ``_`` are ignored, the way the resolver ignores them, so
    validation and resolution never disagree.
    """

    def __init__(self, resolver):
        super().__init__(set(resolver.names))
        self.resolver = resolver

    def is_satisfied_by(self, val):
        return self.resolver.knows(val)

    def __str__(self):
        names = ", ".join(repr(n) for n in self.resolver.names)
        return (
            f"a str among {{{names}}} (case, '-' and '_' are ignored), or a "
            "(name, {settings}) tuple"
        )


class CallbackList(Options):
    """A list/tuple of :class:`~sklears_neural.core.callbacks.Callback`."""

    def __init__(self):
        super().__init__(object, set())

    def is_satisfied_by(self, val):
        from sklears_neural.core.callbacks import Callback

        return isinstance(val, (list, tuple)) and all(
            isinstance(cb, Callback) for cb in val
        )

    def __str__(self):
        return "a list of sklears_neural.callbacks.Callback instances"


# Used by constraints that also accept numpy's inf, as scikit-learn does for
# ``n_iter_no_change``.
INF = Options(float, {np.inf})
