"""Compute precision: the dtype of parameters, and mixed-precision autocast.

``precision`` is a name:

- ``"float32"`` (default) and ``"float64"``: parameters, data and the whole
  computation in that dtype.
- ``"mixed"``: float32 parameters and optimizer state; forward pass and loss
  under ``torch.autocast`` — bfloat16 on the CPU (no loss scaling needed:
  bfloat16 has float32's exponent range), float16 with dynamic loss scaling
  on CUDA (``torch.amp.GradScaler``; steps whose gradients overflow are
  skipped and counted in ``history_[-1]["skipped_steps"]``).
"""

from dataclasses import dataclass

import torch

from sklears_neural.core.resolve import Resolver

__all__ = ["PRECISIONS", "PrecisionPolicy", "precision_policy"]


@dataclass(frozen=True)
class PrecisionPolicy:
    """How one fit computes.

    Attributes
    ----------
    param_dtype : torch.dtype
        dtype of parameters, inputs and float targets.
    autocast_dtype : torch.dtype or None
        dtype of ``torch.autocast`` around forward and loss, or ``None``.
    loss_scaling : bool
        Whether to scale the loss (float16 needs it).
    """

    param_dtype: torch.dtype
    autocast_dtype: torch.dtype | None = None
    loss_scaling: bool = False

    def grad_scaler(self, device):
        """A fresh ``GradScaler`` when the policy needs one, else ``None``."""
        if not self.loss_scaling:
            return None
        return torch.amp.GradScaler(device.type)


PRECISIONS = Resolver(
    "precision",
    {"float32": "float32", "float64": "float64", "mixed": "mixed"},
    aliases={
        "fp32": "float32",
        "fp64": "float64",
        "double": "float64",
        "amp": "mixed",
        "mixed_precision": "mixed",
    },
)


def precision_policy(precision, device):
    """The :class:`PrecisionPolicy` of a ``precision`` name on ``device``.

    Parameters
    ----------
    precision : str
    device : torch.device

    Returns
    -------
    PrecisionPolicy
    """
    name = PRECISIONS.canonical(precision)
    if name == "float64":
        return PrecisionPolicy(torch.float64)
    if name == "float32":
        return PrecisionPolicy(torch.float32)
    if device.type == "cuda":
        return PrecisionPolicy(torch.float32, torch.float16, loss_scaling=True)
    return PrecisionPolicy(torch.float32, torch.bfloat16)
