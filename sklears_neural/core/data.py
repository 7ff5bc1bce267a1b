"""From validated arrays to tensors, and fast in-memory batching.

In-memory data is indexed by a permutation per epoch: no ``DataLoader``,
no per-sample Python. Dense float arrays of the compute dtype become tensors
without a copy; sparse matrices stay sparse and only each batch is made dense.
"""

import warnings

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["as_tensor", "ArrayData"]


def as_tensor(array, dtype, device):
    """A tensor over ``array``, copying only when dtype, layout or device need it.

    Parameters
    ----------
    array : ndarray
        Already validated (finite, numeric).
    dtype : torch.dtype
    device : torch.device

    Returns
    -------
    torch.Tensor
    """
    array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        # Read-only inputs (memmaps) are fine: the library never writes to X.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        tensor = torch.from_numpy(array)
    return tensor.to(device=device, dtype=dtype)


class ArrayData:
    """Inputs, targets and sample weights of one fit, ready to batch.

    Parameters
    ----------
    X : ndarray or scipy sparse matrix of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,) or (n_samples, n_outputs), or None
    sample_weight : ndarray of shape (n_samples,) or None
    dtype : torch.dtype
        Compute dtype of X (and of float targets).
    device : torch.device
    target_dtype : torch.dtype or None, default=None
        dtype of the targets; ``None`` uses ``dtype`` (class indices pass
        ``torch.long``).
    """

    def __init__(self, X, y, sample_weight, *, dtype, device, target_dtype=None):
        self.device = device
        self.dtype = dtype
        self.n_samples = X.shape[0]
        if sp.issparse(X):
            self.X = sp.csr_matrix(X)
            self._sparse = True
        else:
            self.X = as_tensor(X, dtype, device)
            self._sparse = False
        self.y = None if y is None else as_tensor(y, target_dtype or dtype, device)
        self.w = (
            None
            if sample_weight is None
            else as_tensor(sample_weight, dtype, device)
        )

    def _rows_of_X(self, index):
        if not self._sparse:
            return self.X[index]
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        dense = self.X[index].toarray()
        return as_tensor(dense, self.dtype, self.device)

    def batch(self, index):
        """Rows ``index`` (a slice or an index tensor) as ``(X, y, w)`` tensors."""
        y = None if self.y is None else self.y[index]
        w = None if self.w is None else self.w[index]
        return self._rows_of_X(index), y, w

    def all(self):
        """All rows as ``(X, y, w)`` tensors (full-batch solvers, validation)."""
        return self.batch(slice(None))
