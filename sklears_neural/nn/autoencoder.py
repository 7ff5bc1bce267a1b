"""Encoder/decoder networks of the autoencoder family: plain torch modules.

- :class:`DenseAutoencoder`: fully connected encoder and mirrored decoder
  on flat rows.
- :class:`ConvAutoencoder`: strided convolutions down to a code, nearest
  upsampling and convolutions back up, for 1-D signals and 2-D images
  ``(C, *spatial)``.
- :class:`VariationalAutoencoder`: a fully connected Gaussian encoder
  ``q(z|x) = N(mu(x), diag exp(logvar(x)))`` and a Gaussian or Bernoulli
  decoder ``p(x|z)``, with the standard normal prior ``p(z)``; its methods
  give the per-sample log-densities that the ELBO and the importance
  weighted bound are made of.
- :class:`MaskingNoise`: zero each input entry with probability ``p`` (the
  "masking" corruption of a denoising autoencoder), drawn from the
  generator the estimator hands out, like the core's noise layers.

Every module takes JSON-able arguments only and initializes with
``reset_parameters(generator=None)``.
"""

import math

import torch
from torch import nn

from sklears_neural.core.init import initialize_
from sklears_neural.core.layers import MLP
from sklears_neural.core.noise import GaussianNoise, NoiseLayer, _rand
from sklears_neural.core.registry import register_module
from sklears_neural.core.resolve import ACTIVATIONS

__all__ = [
    "ConvAutoencoder",
    "DenseAutoencoder",
    "MaskingNoise",
    "VariationalAutoencoder",
    "make_corruption",
]

LOG_2PI = math.log(2.0 * math.pi)


class MaskingNoise(NoiseLayer):
    """Masking noise: each entry is set to 0 with probability ``p`` (no rescaling).

    Unlike :class:`~sklears_neural.core.noise.Dropout`, kept entries are not
    scaled by ``1 / (1 - p)``: a denoising autoencoder must restore the
    missing values from the rest, as in Vincent et al. (2008).

    Parameters
    ----------
    p : float, default=0.2
        Masking probability, in ``[0, 1]``.
    **schedule_settings
        See :class:`~sklears_neural.core.noise.NoiseLayer`.
    """

    _strength_name = "p"
    _max_strength = 1.0

    def __init__(self, p=0.2, *, schedule="constant", final=0.0, gamma=None, step_size=10):
        super().__init__(p, schedule=schedule, final=final, gamma=gamma,
                         step_size=step_size)

    def _corrupt(self, x, p):
        keep = _rand(x.shape, x, self.generator) >= p
        return x * keep.to(x.dtype)


def make_corruption(noise, level):
    """The training-time corruption of a denoising autoencoder, or None.

    Parameters
    ----------
    noise : {"gaussian", "masking"} or None
    level : float
        Standard deviation ("gaussian") or masking probability ("masking").
    """
    if noise is None or level == 0:
        return None
    if noise == "gaussian":
        return GaussianNoise(float(level))
    if noise == "masking":
        return MaskingNoise(float(level))
    raise ValueError(f"Unknown noise {noise!r}. Valid names are: gaussian, masking.")


def _code_activation(name):
    if name not in ("identity", "logistic", "relu", "tanh"):
        raise ValueError(
            f"Unknown code_activation {name!r}. Valid names are: identity, logistic, "
            "relu, tanh."
        )
    return ACTIVATIONS.build(name, width=1)


@register_module
class DenseAutoencoder(nn.Module):
    """Fully connected autoencoder: ``x -> code -> reconstruction``.

    Parameters
    ----------
    n_inputs : int
        Input width.
    hidden_layer_sizes : list of int
        Encoder hidden widths, input side first; the decoder mirrors them.
    n_components : int
        Code width.
    activation : str, default="relu"
        Hidden activation (a name of ``ACTIVATIONS``).
    code_activation : {"identity", "logistic", "relu", "tanh"}, default="identity"
        Applied to the code ("logistic" keeps it in (0, 1), as KL sparsity needs).
    noise : {"gaussian", "masking"} or None, default=None
        Corruption of the input in training mode (a denoising autoencoder).
    noise_level : float, default=0.0

    Shapes
    ------
    - input: ``(batch, n_inputs)``; code: ``(batch, n_components)``;
      output: ``(batch, n_inputs)``.
    """

    def __init__(self, n_inputs, hidden_layer_sizes, n_components, activation="relu",
                 code_activation="identity", noise=None, noise_level=0.0):
        super().__init__()
        hidden = [int(h) for h in hidden_layer_sizes]
        self.corrupt = make_corruption(noise, noise_level)
        self.encoder = MLP(int(n_inputs), hidden, int(n_components), activation)
        self.code_activation = _code_activation(code_activation)
        self.decoder = MLP(int(n_components), hidden[::-1], int(n_inputs), activation)
        self.activation = activation

    def reset_parameters(self, generator=None):
        initialize_(self, "sklearn", activation=self.activation, generator=generator)

    def encode(self, x):
        """The code of ``x`` (never corrupted)."""
        return self.code_activation(self.encoder(x))

    def decode(self, code):
        return self.decoder(code)

    def forward_with_code(self, x):
        """``(reconstruction, code)``; the input is corrupted in training mode."""
        if self.corrupt is not None:
            x = self.corrupt(x)
        code = self.encode(x)
        return self.decode(code), code

    def forward(self, x):
        return self.forward_with_code(x)[0]


@register_module
class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder for ``(C, length)`` signals or ``(C, H, W)`` images.

    The encoder is a stack of 3-wide convolutions of stride 2 (each halves
    every spatial size, rounding up) and a linear layer to the code; the
    decoder maps the code back to the smallest feature map, then each stage
    upsamples (nearest) to the size the encoder saw there and convolves
    (3-wide, stride 1), the last stage to the input's channels.

    Parameters
    ----------
    input_shape : list of int
        ``(C, *spatial)``, 1 or 2 spatial dimensions.
    channels : list of int
        Channels of the encoder's convolutions; the decoder mirrors them.
    n_components : int
    activation, code_activation, noise, noise_level
        As in :class:`DenseAutoencoder`.

    Shapes
    ------
    - input: ``(batch, *input_shape)``; code: ``(batch, n_components)``;
      output: ``(batch, *input_shape)``.
    """

    def __init__(self, input_shape, channels, n_components, activation="relu",
                 code_activation="identity", noise=None, noise_level=0.0):
        super().__init__()
        shape = [int(d) for d in input_shape]
        rank = len(shape) - 1
        if rank not in (1, 2):
            raise ValueError(
                f"ConvAutoencoder takes 1-D signals or 2-D images, (C, length) or "
                f"(C, H, W); got input_shape {tuple(shape)}."
            )
        channels = [int(c) for c in channels]
        if not channels:
            raise ValueError(
                "ConvAutoencoder needs at least one convolution channel count."
            )
        conv = nn.Conv1d if rank == 1 else nn.Conv2d
        self.input_shape = shape
        self.activation = activation
        self.corrupt = make_corruption(noise, noise_level)
        sizes = [shape[1:]]
        down, width = [], shape[0]
        for c in channels:
            down += [conv(width, c, 3, stride=2, padding=1),
                     ACTIVATIONS.build(activation, width=c)]
            width = c
            sizes.append([(s + 1) // 2 for s in sizes[-1]])
        self.features = nn.Sequential(*down)
        self.bottleneck = [channels[-1], *sizes[-1]]
        flat = math.prod(self.bottleneck)
        self.to_code = nn.Linear(flat, int(n_components))
        self.code_activation = _code_activation(code_activation)
        self.from_code = nn.Sequential(nn.Linear(int(n_components), flat),
                                       ACTIVATIONS.build(activation, width=flat))
        up = []
        outs = channels[::-1][1:] + [shape[0]]
        for i, (c_in, c_out) in enumerate(zip(channels[::-1], outs)):
            up.append(nn.Upsample(size=tuple(sizes[-2 - i]), mode="nearest"))
            up.append(conv(c_in, c_out, 3, padding=1))
            if i < len(channels) - 1:
                up.append(ACTIVATIONS.build(activation, width=c_out))
        self.upsampling = nn.Sequential(*up)

    def reset_parameters(self, generator=None):
        initialize_(self, "he_uniform", activation=self.activation, generator=generator)

    def encode(self, x):
        return self.code_activation(self.to_code(self.features(x).flatten(1)))

    def decode(self, code):
        h = self.from_code(code).reshape(code.shape[0], *self.bottleneck)
        return self.upsampling(h)

    def forward_with_code(self, x):
        if self.corrupt is not None:
            x = self.corrupt(x)
        code = self.encode(x)
        return self.decode(code), code

    def forward(self, x):
        return self.forward_with_code(x)[0]


@register_module
class VariationalAutoencoder(nn.Module):
    """Gaussian encoder, Gaussian or Bernoulli decoder, standard normal prior.

    Parameters
    ----------
    n_inputs : int
    hidden_layer_sizes : list of int
        Encoder hidden widths; the decoder mirrors them.
    n_components : int
        Latent dimension.
    activation : str, default="relu"
    decoder : {"gaussian", "bernoulli"}, default="gaussian"
        "gaussian": ``p(x|z) = N(mean(z), diag sigma^2)`` with one learned
        ``log_sigma`` per feature (homoscedastic, independent of ``z``);
        "bernoulli": ``p(x|z) = prod_j p_j^x_j (1 - p_j)^(1 - x_j)`` with
        ``p = sigmoid(logits(z))``.

    Shapes
    ------
    - input: ``(batch, n_inputs)``; output of ``forward``: the decoder mean
      at the posterior mean, ``(batch, n_inputs)``.
    """

    #: Lower bound of the Gaussian decoder's log standard deviation, so that a
    #: collapsing reconstruction error cannot drive the density to infinity.
    MIN_LOG_SIGMA = -7.0
    #: Initial standard deviation of the Gaussian decoder. Small, so that the
    #: reconstruction term dominates the start of training and the encoder
    #: learns to use the latent space before the KL term can switch it off
    #: (posterior collapse: starting at 1, a VAE on standardized moons spent
    #: its first ~100 epochs with a decoder that ignored z).
    INIT_SIGMA = 0.1

    def __init__(self, n_inputs, hidden_layer_sizes, n_components, activation="relu",
                 decoder="gaussian"):
        super().__init__()
        if decoder not in ("gaussian", "bernoulli"):
            raise ValueError(
                f"Unknown decoder {decoder!r}. Valid names are: bernoulli, gaussian."
            )
        hidden = [int(h) for h in hidden_layer_sizes]
        self.n_components = int(n_components)
        self.decoder_kind = decoder
        self.activation = activation
        self.encoder = MLP(int(n_inputs), hidden, 2 * self.n_components, activation)
        self.decoder = MLP(self.n_components, hidden[::-1], int(n_inputs), activation)
        self.log_sigma = (
            nn.Parameter(torch.zeros(int(n_inputs))) if decoder == "gaussian" else None
        )

    def reset_parameters(self, generator=None):
        initialize_(self, "sklearn", activation=self.activation, generator=generator)
        if self.log_sigma is not None:
            with torch.no_grad():
                self.log_sigma.fill_(math.log(self.INIT_SIGMA))

    def encode(self, x):
        """``(mu, logvar)`` of ``q(z|x)``, each ``(batch, n_components)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z):
        """The decoder mean ``E[x|z]``: Gaussian means, or Bernoulli probabilities."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.decoder_kind == "bernoulli" else out

    def sigma(self):
        return self.log_sigma.clamp_min(self.MIN_LOG_SIGMA).exp()

    def log_likelihood(self, x, z):
        """``log p(x|z)`` summed over features; ``z`` may carry leading draw axes."""
        out = self.decoder(z)
        if self.decoder_kind == "bernoulli":
            return -nn.functional.binary_cross_entropy_with_logits(
                out, x.expand_as(out), reduction="none"
            ).sum(-1)
        log_sigma = self.log_sigma.clamp_min(self.MIN_LOG_SIGMA)
        z_scores = (x - out) * torch.exp(-log_sigma)
        return (-0.5 * z_scores.pow(2) - log_sigma - 0.5 * LOG_2PI).sum(-1)

    def sample_x(self, z, noise):
        """``x ~ p(x|z)`` from ``noise``: standard normal, or uniform for Bernoulli."""
        mean = self.decode(z)
        if self.decoder_kind == "bernoulli":
            return (noise < mean).to(mean.dtype)
        return mean + self.sigma() * noise

    def elbo(self, x, eps, beta=1.0):
        """Per-sample ``E_q[log p(x|z)] - beta KL(q(z|x) || p(z))``.

        ``eps`` is ``(n_draws, batch, n_components)`` standard normal; the
        reconstruction term is averaged over the draws, the KL is exact.
        """
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps
        reconstruction = self.log_likelihood(x, z).mean(0)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)
        return reconstruction - beta * kl

    def log_weights(self, x, eps):
        """``log p(x, z_k) - log q(z_k|x)``, ``z_k = mu + sigma * eps_k``: ``(n_draws, batch)``."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_prior = (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(-1)
        log_posterior = (-0.5 * eps.pow(2) - 0.5 * logvar - 0.5 * LOG_2PI).sum(-1)
        return self.log_likelihood(x, z) + log_prior - log_posterior

    def forward(self, x):
        return self.decode(self.encode(x)[0])
