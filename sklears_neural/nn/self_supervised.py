"""Networks and losses of the self-supervised encoders (SimCLR, BYOL).

:class:`SelfSupervisedNet` is an encoder (fully connected, or a
:class:`~sklears_neural.nn.conv.ConvNet` for images) followed by a
projection head and, for BYOL, a prediction head. ``net(x)`` gives the
encoder's output, the embedding a downstream model uses; the heads serve
training only.

:func:`nt_xent_loss` is SimCLR's normalized temperature-scaled cross
entropy, :func:`byol_loss` BYOL's normalized mean squared error. Both return
one loss per sample, so a weighted mean and early stopping on held-out rows
work as for every other loss.

References
----------
Chen, T., Kornblith, S., Norouzi, M. and Hinton, G. (2020). A simple
framework for contrastive learning of visual representations. ICML.

Grill, J.-B. et al. (2020). Bootstrap your own latent: a new approach to
self-supervised learning. NeurIPS.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from sklears_neural.core import checks
from sklears_neural.core.layers import MLP
from sklears_neural.core.registry import register_module
from sklears_neural.nn.conv import ConvNet

__all__ = ["SelfSupervisedNet", "byol_loss", "nt_xent_loss"]


def nt_xent_loss(z1, z2, temperature=0.5):
    """SimCLR's NT-Xent loss of each sample: its two views against the batch.

    The ``2B`` projections are normalized to unit length; view ``a`` of
    sample ``i`` is scored against the ``2B - 1`` others by cosine
    similarity over ``temperature``, and its loss is the cross entropy of
    picking its own other view:

    .. math::

        \\ell(a) = -\\log \\frac{\\exp(s_{a,b} / \\tau)}
                   {\\sum_{c \\ne a} \\exp(s_{a,c} / \\tau)}

    A sample's loss is the mean of its two views' losses, so the mean over
    the batch is SimCLR's loss (the mean over all ``2B`` views).

    Parameters
    ----------
    z1, z2 : tensor of shape (batch, projection_size)
        Projections of the first and second view of each sample.
    temperature : float, default=0.5
        ``tau`` > 0.

    Returns
    -------
    tensor of shape (batch,)
        Per-sample losses; a batch of one sample (no negatives) gives 0.
    """
    batch = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, P)
    logits = (z @ z.T) / temperature  # (2B, 2B)
    self_mask = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = torch.arange(2 * batch, device=z.device).roll(batch)
    per_view = F.cross_entropy(logits, positives, reduction="none")  # (2B,)
    return 0.5 * (per_view[:batch] + per_view[batch:])


def byol_loss(p1, z2, p2, z1):
    """BYOL's symmetric loss of each sample.

    ``2 - 2 cos(p, z)`` (the squared distance of the unit vectors) between
    the online prediction of each view and the target projection of the
    other, averaged over the two directions.

    Parameters
    ----------
    p1, p2 : tensor of shape (batch, projection_size)
        Online predictions of views 1 and 2.
    z2, z1 : tensor of shape (batch, projection_size)
        Target projections of views 2 and 1 (no gradient flows into them).

    Returns
    -------
    tensor of shape (batch,)
        In ``[0, 4]``.
    """
    def one_way(p, z):
        return 2.0 - 2.0 * F.cosine_similarity(p, z.detach(), dim=1)

    return 0.5 * (one_way(p1, z2) + one_way(p2, z1))


@register_module
class SelfSupervisedNet(nn.Module):
    """Encoder, projection head and optional prediction head.

    Parameters
    ----------
    input_shape : list of int
        Shape of one sample: ``[n_features]`` for rows, ``[channels,
        *spatial]`` for images (a dense encoder flattens them).
    n_components : int
        Width of the embedding (the encoder's output).
    projection_size : int
        Width of the projection head's output (where the loss is computed).
    encoder : {"dense", "conv"}, default="dense"
    hidden_layer_sizes : list of int, default=()
        Hidden widths of a dense encoder.
    layers : list of (str or dict) or None, default=None
        Layers of a convolutional encoder, in the spec language of
        :mod:`sklears_neural.nn.conv` (None: its default stack).
    activation : str or (str, dict), default="relu"
        Hidden activation of the encoder and of the heads.
    projection_hidden : int, default=64
        Hidden width of the projection head (one hidden layer).
    prediction_hidden : int or None, default=None
        Hidden width of the prediction head (BYOL); None: no prediction head.
    batch_norm : bool, default=False
        Batch normalization in the heads' hidden layer (and the conv
        encoder's default).

    Shapes
    ------
    - input: ``(batch, *input_shape)``, or ``(batch, n_features)`` flat rows
      for a dense encoder
    - output of ``forward``: ``(batch, n_components)``
    - output of ``project`` and ``predict``: ``(batch, projection_size)``
    """

    def __init__(
        self,
        input_shape,
        n_components,
        projection_size,
        *,
        encoder="dense",
        hidden_layer_sizes=(),
        layers=None,
        activation="relu",
        projection_hidden=64,
        prediction_hidden=None,
        batch_norm=False,
    ):
        super().__init__()
        owner = "SelfSupervisedNet"
        self.input_shape = tuple(int(d) for d in input_shape)
        n_components = checks.check_int(owner, "n_components", n_components, low=1)
        projection_size = checks.check_int(owner, "projection_size", projection_size, low=1)
        projection_hidden = checks.check_int(owner, "projection_hidden",
                                             projection_hidden, low=1)
        if encoder == "dense":
            self.encoder = MLP(math.prod(self.input_shape), list(hidden_layer_sizes),
                               n_components, activation)
        elif encoder == "conv":
            self.encoder = ConvNet(list(self.input_shape), n_components, layers,
                                   activation, batch_norm=batch_norm)
        else:
            raise ValueError(
                f"Unknown encoder {encoder!r}. Valid encoders are: conv, dense."
            )
        self.projector = MLP(n_components, [projection_hidden], projection_size,
                             activation, batch_norm=batch_norm)
        self.predictor = (
            None if prediction_hidden is None
            else MLP(projection_size, [int(prediction_hidden)], projection_size,
                     activation, batch_norm=batch_norm)
        )
        self.encoder_kind = encoder

    def reset_parameters(self, generator=None):
        """Draw every weight from ``generator`` (each part's own initialization)."""
        for part in (self.encoder, self.projector, self.predictor):
            if part is not None:
                part.reset_parameters(generator=generator)

    def forward(self, x):
        if self.encoder_kind == "dense":
            x = x.flatten(1)
        return self.encoder(x)

    def project(self, x):
        """Projection of the embedding of ``x``: ``(batch, projection_size)``."""
        return self.projector(self(x))

    def predict(self, x):
        """BYOL's prediction of the other view's target projection."""
        return self.predictor(self.project(x))
