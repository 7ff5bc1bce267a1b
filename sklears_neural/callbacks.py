"""Public callbacks for the training loop (``callbacks=[...]`` on any estimator)."""

from sklears_neural.core.callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    EpochLogger,
    GradientStats,
    InverseScalingLR,
    ProgressBar,
    TerminateOnNaN,
)
from sklears_neural.core.noise import NoiseScheduler
from sklears_neural.core.schedules import LRScheduler

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "EpochLogger",
    "GradientStats",
    "InverseScalingLR",
    "LRScheduler",
    "NoiseScheduler",
    "ProgressBar",
    "TerminateOnNaN",
]
