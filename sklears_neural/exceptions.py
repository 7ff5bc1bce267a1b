"""Errors and warnings raised by sklears-neural.

Each one is also a type callers already catch: a scikit-learn exception or a
builtin, so ``except ValueError`` around a scikit-learn call keeps working when
the estimator comes from this library.

It imports nothing from the library, so any module of it may import this one
without pulling in others (the trainer once loaded the file format this way).
"""

from sklearn.exceptions import ConvergenceWarning, NotFittedError

__all__ = [
    "ConvergenceWarning",
    "ModelFileError",
    "NetworkTooLargeError",
    "NotFittedError",
    "PersistenceWarning",
    "TrainingDivergedError",
]


class ModelFileError(ValueError):
    """A saved model cannot be loaded: corrupt, edited, too new, or unknown classes.

    Nothing is loaded when it is raised. The message says what is wrong and,
    where there is one, what to do (upgrade sklears-neural, save the model
    again).
    """


class PersistenceWarning(UserWarning):
    """A value could not be saved as it is and was replaced (by ``null``)."""


class TrainingDivergedError(ValueError, FloatingPointError):
    """The training loss became NaN or infinite.

    The estimator that raised it is left as it was before the call that
    diverged (unfitted after a first ``fit``), so nothing half-trained looks
    fitted. The weights of the last epoch whose loss was finite travel with
    the error.

    Parameters
    ----------
    message : str
        What happened and how to fix it.
    epoch : int
        The 1-based epoch (or L-BFGS iteration) in which the loss left the
        finite range.
    last_finite_state : dict of str to ndarray or None
        ``module.state_dict()`` as numpy arrays after the last finite epoch;
        ``None`` when the very first epoch diverged.
    """

    def __init__(self, message, *, epoch, last_finite_state=None):
        super().__init__(message)
        self.epoch = epoch
        self.last_finite_state = last_finite_state


class NetworkTooLargeError(ValueError, MemoryError):
    """The parameters describe a network larger than the device can hold.

    Raised by ``fit`` when building the network fails to allocate memory;
    the message gives its parameter count, its size, and its settings. The
    estimator is left as it was before the call.
    """
