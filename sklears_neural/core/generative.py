"""What the generative families share: ``sample(n_samples, random_state=None)``.

A family mixes :class:`SamplerMixin` in beside
:class:`~sklears_neural.core.tasks.NeuralUnsupervisedMixin` and writes one
method, ``_sample(n_samples, generator)``, returning a tensor of ``n_samples``
samples in the layout its networks take (rows, or ``(C, H, W)`` images).
The mixin does the rest the same way for every family, as scikit-learn's
``KernelDensity.sample`` and ``GaussianMixture.sample`` users expect:

- the random state: an int gives the same samples on every call and
  machine (a seeded ``torch.Generator`` on the network's device); None
  draws the seed from NumPy's global generator; a ``RandomState`` is
  advanced;
- the fitted check, the ``n_samples`` check, no gradients, evaluation mode
  (the networks rest in it after ``fit``; a fit running in another thread
  is waited for, as predictions do);
- the output: float64 NumPy shaped like X, flat rows for a model fitted on
  flat rows, ``(n, C, H, W)`` for one fitted on images.
"""

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core import inference, modes
from sklears_neural.core.checks import check_int
from sklears_neural.core.seeding import torch_generator

__all__ = ["SamplerMixin", "as_input_layout", "fitted_on_flat_rows", "network_device"]


def network_device(module):
    """The device of a module's parameters (the CPU for a module without any)."""
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


class SamplerMixin:
    """``sample(n_samples, random_state=None)`` from a family's ``_sample``."""

    def sample(self, n_samples=1, random_state=None):
        """Generate samples from the fitted model.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples to generate.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws: an int gives the same samples on every call;
            None draws a seed from NumPy's global random state, as
            :meth:`sklearn.neighbors.KernelDensity.sample` does.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features_in_) or (n_samples, *input_shape_)
            float64, in the layout of the X the model was fitted on.
        """
        check_is_fitted(self, "module_")
        n_samples = check_int(type(self).__name__, "n_samples", n_samples, low=1)
        module = self.module_
        generator = torch_generator(random_state, device=network_device(module))
        entry = inference._entry(module)
        with modes.predicting(module, entry.training_layers) as situation:
            if situation == modes.OTHER_FIT:
                raise RuntimeError(
                    f"{type(self).__name__}.sample was called while another thread "
                    "fits the model; sample after the fit returns."
                )
            with torch.inference_mode():
                samples = self._sample(n_samples, generator)
        samples = samples.detach().to("cpu", torch.float64).numpy()
        return self._as_input_layout(samples)

    def _sample(self, n_samples, generator):
        """``n_samples`` samples as a tensor in the network's layout.

        Parameters
        ----------
        n_samples : int
        generator : torch.Generator
            On the network's device; every draw must come from it, so that
            seeded sampling is deterministic.
        """
        raise NotImplementedError

    def _as_input_layout(self, samples):
        return as_input_layout(self, samples)


def as_input_layout(estimator, samples):
    """Rows of the network's output reshaped like the X of ``fit``.

    Flat rows, or N-D samples of ``input_shape_``: a family that takes N-D
    input sets ``_fitted_on_flat_rows`` in fit (:func:`fitted_on_flat_rows`);
    without it, samples are flat rows. Used by ``sample`` and by decoders
    (``inverse_transform``).
    """
    n = samples.shape[0]
    if getattr(estimator, "_fitted_on_flat_rows", True):
        return samples.reshape(n, -1)
    shape = getattr(estimator, "input_shape_", samples.shape[1:])
    return samples.reshape((n, *shape))


def fitted_on_flat_rows(X):
    """Whether ``X`` (as passed to ``fit``) holds flat 2-D rows."""
    return getattr(X, "ndim", np.ndim(X)) == 2
