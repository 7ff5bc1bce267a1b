"""Local random generators seeded from ``random_state``.

Every fit draws its randomness (initial weights, shuffling, validation
splits) from a local ``torch.Generator``; the caller's global torch and numpy
generators are never reseeded.
"""

import numpy as np
import torch
from sklearn.utils import check_random_state

__all__ = ["torch_generator", "draw_seed"]


def torch_generator(random_state, device="cpu"):
    """A ``torch.Generator`` seeded from a scikit-learn ``random_state``.

    Parameters
    ----------
    random_state : None, int or numpy.random.RandomState
        ``None`` draws the seed from numpy's global generator, as
        scikit-learn's ``check_random_state(None)`` does; an int gives the
        same stream on every call; a ``RandomState`` is advanced by one draw.
    device : str or torch.device, default="cpu"

    Returns
    -------
    torch.Generator
    """
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    if isinstance(random_state, (int, np.integer)):
        # An int seeds directly so that equal ints give equal streams in any
        # library version, independent of numpy's RandomState.
        seed = int(random_state)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def draw_seed(generator):
    """An int in ``[0, 2**31 - 1)`` drawn from ``generator``, for numpy-side code."""
    return int(torch.randint(2**31 - 1, (1,), generator=generator).item())
