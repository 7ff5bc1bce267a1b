"""Public callbacks for the training loop (``callbacks=[...]`` on any estimator)."""

from sklears_neural.core.callbacks import (
    Callback,
    EarlyStopping,
    EpochLogger,
    GradientStats,
    InverseScalingLR,
    ProgressBar,
    TerminateOnNaN,
)

__all__ = [
    "Callback",
    "EarlyStopping",
    "EpochLogger",
    "GradientStats",
    "InverseScalingLR",
    "ProgressBar",
    "TerminateOnNaN",
]
