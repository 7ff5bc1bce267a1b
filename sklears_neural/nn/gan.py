"""The networks and the losses of generative adversarial networks.

Plain torch, usable without the estimator
(:class:`~sklears_neural.models.gan.GAN` trains them):

- :class:`ConvGenerator` and :class:`ConvDiscriminator`, the small
  convolutional pair for images ``(C, H, W)``; the fully connected pair is
  :class:`~sklears_neural.core.layers.MLP` twice (latent -> sample,
  sample -> one score);
- :func:`discriminator_loss`, :func:`generator_loss`: the non-saturating
  and the Wasserstein losses;
- :func:`gradient_penalty`: WGAN-GP's penalty on the critic's gradient norm.

Notes
-----
With ``D`` the discriminator's raw output (a logit, or a critic value),
``x`` real samples, ``G(z)`` generated ones:

- non-saturating (Goodfellow et al. 2014): the discriminator minimizes
  ``softplus(-D(x)) + softplus(D(G(z)))`` (the log-loss of real = 1, fake =
  0), the generator ``softplus(-D(G(z)))`` (``-log sigmoid D(G(z))``);
- Wasserstein-GP (Gulrajani et al. 2017): the critic minimizes
  ``D(G(z)) - D(x) + lambda * (||grad D(x_hat)||_2 - 1)^2`` with ``x_hat =
  eps x + (1 - eps) G(z)``, ``eps ~ U(0, 1)`` per sample; the generator
  minimizes ``-D(G(z))``.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from sklears_neural.core.init import initialize_
from sklears_neural.core.registry import register_module
from sklears_neural.core.resolve import ACTIVATIONS

__all__ = [
    "ConvDiscriminator",
    "ConvGenerator",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
]

#: The losses :func:`discriminator_loss` and :func:`generator_loss` take.
LOSSES = ("non_saturating", "wasserstein_gp")


def _weighted_mean(values, weights):
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum()


def gradient_penalty(critic, real, fake, eps):
    """WGAN-GP's ``mean((||grad_x critic(x_hat)||_2 - 1)^2)``.

    Parameters
    ----------
    critic : callable
        ``critic(x) -> (n, 1)`` (or ``(n,)``) scores.
    real, fake : Tensor of shape (n, *sample_shape)
    eps : Tensor of shape (n,)
        Interpolation weights in [0, 1]: ``x_hat = eps * real + (1 - eps) * fake``.

    Returns
    -------
    Tensor
        A scalar, differentiable with respect to the critic's parameters
        (``create_graph=True``).
    """
    eps = eps.reshape(-1, *([1] * (real.dim() - 1))).to(real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def discriminator_loss(loss, real_scores, fake_scores, sample_weight=None):
    """The discriminator's loss, without the gradient penalty.

    Parameters
    ----------
    loss : {"non_saturating", "wasserstein_gp"}
    real_scores, fake_scores : Tensor of shape (n, 1)
    sample_weight : Tensor of shape (n,) or None
        Weights of the real samples.
    """
    real_scores, fake_scores = real_scores.reshape(-1), fake_scores.reshape(-1)
    if loss == "non_saturating":
        return (_weighted_mean(F.softplus(-real_scores), sample_weight)
                + F.softplus(fake_scores).mean())
    return fake_scores.mean() - _weighted_mean(real_scores, sample_weight)


def generator_loss(loss, fake_scores):
    """The generator's loss on the discriminator's scores of its samples."""
    fake_scores = fake_scores.reshape(-1)
    if loss == "non_saturating":
        return F.softplus(-fake_scores).mean()
    return -fake_scores.mean()


def _check_image_shape(owner, input_shape):
    if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
        raise ValueError(
            f"{owner} takes images of shape (channels, height, width); got "
            f"input_shape={tuple(input_shape)}."
        )
    return [int(d) for d in input_shape]


@register_module
class ConvGenerator(nn.Module):
    """Latent vectors to images: a linear layer, then 2x upsampling stages.

    ``Linear(n_components, c_1 * h_0 * w_0)`` with ``h_0 = ceil(H / 2^k)``
    (``k = len(channels)``), then per stage a 4-wide transposed convolution
    of stride 2 to ``c_i`` channels and the activation, then a 3-wide
    convolution to the image's channels, cropped to ``(H, W)``.

    Parameters
    ----------
    n_components : int
        Latent width.
    input_shape : list of int
        ``(C, H, W)`` of one generated image.
    channels : list of int
        Channels of each upsampling stage (at least one).
    activation : str or (str, dict), default="leaky_relu"

    Shapes
    ------
    - input: ``(batch, n_components)``
    - output: ``(batch, C, H, W)``
    """

    def __init__(self, n_components, input_shape, channels, activation="leaky_relu"):
        super().__init__()
        self.input_shape = _check_image_shape(type(self).__name__, input_shape)
        c, h, w = self.input_shape
        channels = [int(ch) for ch in channels]
        if not channels:
            raise ValueError("ConvGenerator needs at least one upsampling stage.")
        k = len(channels)
        self.start = (channels[0], math.ceil(h / 2**k), math.ceil(w / 2**k))
        self.activation = activation
        self.project = nn.Linear(int(n_components), math.prod(self.start))
        stages = [ACTIVATIONS.build(activation, width=channels[0])]
        width = channels[0]
        for ch in channels:
            stages += [nn.ConvTranspose2d(width, ch, 4, stride=2, padding=1),
                       ACTIVATIONS.build(activation, width=ch)]
            width = ch
        stages.append(nn.Conv2d(width, c, 3, padding=1))
        self.stages = nn.Sequential(*stages)

    def reset_parameters(self, generator=None):
        """He-uniform weights drawn from ``generator``, zero biases."""
        initialize_(self, "he_uniform", activation=self.activation, generator=generator)

    def forward(self, z):
        x = self.project(z).reshape(-1, *self.start)
        _, h, w = self.input_shape
        return self.stages(x)[:, :, :h, :w]


@register_module
class ConvDiscriminator(nn.Module):
    """Images to one score: 3-wide convolutions of stride 2, then a linear layer.

    Parameters
    ----------
    input_shape : list of int
        ``(C, H, W)`` of one image.
    channels : list of int
        Channels of each stride-2 convolution (at least one).
    activation : str or (str, dict), default="leaky_relu"

    Shapes
    ------
    - input: ``(batch, C, H, W)``
    - output: ``(batch, 1)``
    """

    def __init__(self, input_shape, channels, activation="leaky_relu"):
        super().__init__()
        c, h, w = _check_image_shape(type(self).__name__, input_shape)
        channels = [int(ch) for ch in channels]
        if not channels:
            raise ValueError("ConvDiscriminator needs at least one convolution.")
        self.activation = activation
        layers, width = [], c
        for ch in channels:
            layers += [nn.Conv2d(width, ch, 3, stride=2, padding=1),
                       ACTIVATIONS.build(activation, width=ch)]
            width = ch
            h, w = (h + 1) // 2, (w + 1) // 2
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(width * h * w, 1)

    def reset_parameters(self, generator=None):
        """He-uniform weights drawn from ``generator``, zero biases."""
        initialize_(self, "he_uniform", activation=self.activation, generator=generator)

    def forward(self, x):
        return self.out(self.features(x).flatten(1))
