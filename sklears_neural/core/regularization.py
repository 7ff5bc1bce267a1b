"""Weight penalties added to the training objective.

``alpha`` keeps scikit-learn's meaning: an L2 penalty ``alpha / 2 * ||W||^2``
on weight matrices (not biases), divided by the batch's total sample weight.
``l1_ratio`` mixes in L1 the way scikit-learn's ``SGDClassifier`` does
(elastic net): ``alpha * (l1_ratio * ||W||_1 + (1 - l1_ratio) / 2 * ||W||^2)``,
so ``l1_ratio=0`` is exactly scikit-learn's MLP penalty.
"""

import torch

__all__ = ["penalized_parameters", "weight_penalty"]


def penalized_parameters(module):
    """The parameters a weight penalty applies to: matrices and kernels.

    One-dimensional parameters (biases, normalization scales, PReLU slopes)
    are left out, as scikit-learn leaves out intercepts.
    """
    return [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]


def weight_penalty(params, alpha, l1_ratio=0.0):
    """``alpha * (l1_ratio * sum|w| + (1 - l1_ratio) / 2 * sum w^2)``.

    Parameters
    ----------
    params : list of torch.Tensor
    alpha : float
    l1_ratio : float, default=0.0

    Returns
    -------
    torch.Tensor
        A scalar; the caller divides it by the batch weight.
    """
    penalty = 0.0
    if l1_ratio < 1.0:
        squares = torch.stack([p.pow(2).sum() for p in params]).sum()
        penalty = penalty + 0.5 * (1.0 - l1_ratio) * squares
    if l1_ratio > 0.0:
        absolutes = torch.stack([p.abs().sum() for p in params]).sum()
        penalty = penalty + l1_ratio * absolutes
    return alpha * penalty
