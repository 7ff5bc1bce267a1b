"""Denoising diffusion on rows: noise schedules, a noise-predicting MLP, samplers.

:class:`GaussianDiffusion` is the fixed forward process of Ho et al. (2020)
on ``T`` steps, ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``,
built from a noise schedule (:func:`make_betas`), with what inverts it
given a noise predictor ``eps(x_t, t)``: ancestral DDPM sampling, DDIM
(Song, Meng & Ermon, 2021) and annealed Langevin dynamics on the score
``-eps / sqrt(1 - abar_t)``, and the variational bound in nats.
:class:`DenoisingMLP` is the noise predictor: an MLP that takes ``x_t`` and
a sinusoidal embedding of ``t`` added to every hidden layer. It holds its
:class:`GaussianDiffusion` (plain float64 tensors, not module state), so
the network and the process it was trained for travel together.

Timesteps are 0-based in code: index ``i`` in ``[0, T)`` is step ``t = i +
1`` of the papers, ``abar[i] = prod(1 - betas[:i + 1])``.

Every random draw takes a ``torch.Generator``; nothing touches torch's
global generator.
"""

import math

import numpy as np
import torch
from torch import nn

from sklears_neural.core.init import initialize_
from sklears_neural.core.registry import register_module
from sklears_neural.core.resolve import ACTIVATIONS

__all__ = [
    "NOISE_SCHEDULES",
    "SAMPLERS",
    "REVERSE_VARIANCES",
    "make_betas",
    "cosine_alphas_cumprod",
    "timestep_embedding",
    "GaussianDiffusion",
    "DenoisingMLP",
]

#: Names accepted by :func:`make_betas`.
NOISE_SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")

#: Variances of the reverse steps (see :class:`GaussianDiffusion`).
REVERSE_VARIANCES = ("beta_tilde", "beta")

#: Names accepted by :meth:`GaussianDiffusion.sample`.
SAMPLERS = ("ddpm", "ddim", "langevin")

#: Offset ``s`` of the cosine schedule (Nichol & Dhariwal, 2021).
COSINE_OFFSET = 0.008

#: Largest beta any schedule gives (Nichol & Dhariwal clip the cosine one
#: there so that the last steps stay invertible).
MAX_BETA = 0.999


def default_beta_range(n_timesteps):
    """``(beta_start, beta_end)``: Ho et al.'s 1e-4 and 0.02 scaled by ``1000 / T``.

    The scaling (Nichol & Dhariwal's, ``improved-diffusion``) keeps
    ``abar_T`` near the 4e-5 of 1,000 steps for any number of steps.
    """
    scale = 1000.0 / n_timesteps
    return 1e-4 * scale, 0.02 * scale


def cosine_alphas_cumprod(n_timesteps, s=COSINE_OFFSET):
    """Nichol & Dhariwal's ``abar(t) = f(t) / f(0)``.

    ``f(t) = cos((t/T + s) / (1 + s) * pi/2)^2``.

    Returns
    -------
    ndarray of shape (n_timesteps + 1,), float64
        ``abar`` at ``t = 0, 1, ..., T`` (``abar[0] = 1``).
    """
    t = np.arange(n_timesteps + 1, dtype=np.float64) / n_timesteps
    f = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return f / f[0]


def make_betas(schedule, n_timesteps, beta_start=None, beta_end=None):
    """The betas of a named noise schedule, float64.

    Parameters
    ----------
    schedule : {"linear", "cosine", "quadratic", "sigmoid"}
        "linear": ``beta`` evenly from ``beta_start`` to ``beta_end``
        (Ho et al.); "quadratic": ``sqrt(beta)`` evenly between their
        square roots; "sigmoid": ``beta_start + (beta_end - beta_start) *
        sigmoid(x)``, ``x`` evenly in ``[-6, 6]``; "cosine": Nichol &
        Dhariwal's ``beta_t = 1 - abar(t) / abar(t - 1)`` from
        :func:`cosine_alphas_cumprod` (ignores ``beta_start``/``beta_end``).
        Every beta is clipped to at most :data:`MAX_BETA`.
    n_timesteps : int
    beta_start, beta_end : float or None
        None: :func:`default_beta_range`.

    Returns
    -------
    ndarray of shape (n_timesteps,)
    """
    if schedule not in NOISE_SCHEDULES:
        raise ValueError(
            f"Unknown noise schedule {schedule!r}. Valid names are: "
            f"{', '.join(sorted(NOISE_SCHEDULES))}."
        )
    n_timesteps = int(n_timesteps)
    if n_timesteps < 1:
        raise ValueError(f"n_timesteps must be at least 1, got {n_timesteps}.")
    default_start, default_end = default_beta_range(n_timesteps)
    start = default_start if beta_start is None else float(beta_start)
    end = default_end if beta_end is None else float(beta_end)
    if schedule == "linear":
        betas = np.linspace(start, end, n_timesteps)
    elif schedule == "quadratic":
        betas = np.linspace(start**0.5, end**0.5, n_timesteps) ** 2
    elif schedule == "sigmoid":
        x = np.linspace(-6.0, 6.0, n_timesteps)
        betas = start + (end - start) / (1.0 + np.exp(-x))
    else:
        abar = cosine_alphas_cumprod(n_timesteps)
        betas = 1.0 - abar[1:] / abar[:-1]
    return np.clip(betas, 0.0, MAX_BETA)


def timestep_embedding(t, dim, n_timesteps, max_period=10000.0):
    """Sinusoidal embedding of timesteps (Vaswani et al.; Ho et al.).

    ``t`` is rescaled to ``[0, 1000)`` first, so one frequency table serves
    any number of steps.

    Parameters
    ----------
    t : Tensor of shape (batch,)
        0-based timestep indices (int or float).
    dim : int
        Even embedding width.
    n_timesteps : int

    Returns
    -------
    Tensor of shape (batch, dim), float32 on ``t``'s device
    """
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
        / half
    )
    angles = (t.float() * (1000.0 / n_timesteps))[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def _randn(shape, generator, like):
    """Standard normal draws from ``generator``, on ``like``'s device and dtype."""
    device = generator.device
    if device.type == like.device.type and (
        device.index is None or like.device.index is None
        or device.index == like.device.index
    ):
        return torch.randn(shape, generator=generator, dtype=like.dtype,
                           device=like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype,
                       device=device).to(like.device)


class GaussianDiffusion:
    """The forward noising process of a schedule, and its reversal.

    Parameters
    ----------
    n_timesteps : int
        ``T``, the number of noising steps.
    noise_schedule : {"linear", "cosine", "quadratic", "sigmoid"}, default="linear"
    beta_start, beta_end : float or None, default=None
        See :func:`make_betas`.

    Attributes
    ----------
    betas, alphas, alphas_cumprod : Tensor of shape (T,), float64, CPU
        ``beta_t``, ``1 - beta_t`` and ``abar_t``.
    posterior_variance : Tensor of shape (T,)
        ``beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)``, the
        variance of ``q(x_{t-1} | x_t, x_0)``; ``[0]`` holds ``beta_1``
        (see :meth:`reverse_variance`).

    Notes
    -----
    The reverse model is ``p(x_{t-1} | x_t) = N(mu(x_t, t), sigma_t^2 I)``
    with ``mu = (x_t - beta_t / sqrt(1 - abar_t) eps(x_t, t)) /
    sqrt(alpha_t)``, ``sigma_t^2`` from :meth:`reverse_variance`, and
    ``p(x_T) = N(0, I)``.
    """

    def __init__(self, n_timesteps, noise_schedule="linear", beta_start=None,
                 beta_end=None):
        betas = make_betas(noise_schedule, n_timesteps, beta_start, beta_end)
        self.n_timesteps = int(n_timesteps)
        self.noise_schedule = noise_schedule
        self.betas = torch.from_numpy(betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        # Explicitly on the CPU: the schedule is built inside a meta-device
        # context too (the load-time check), and stays plain CPU data.
        previous = torch.cat([torch.ones(1, dtype=torch.float64, device="cpu"),
                              self.alphas_cumprod[:-1]])
        self.alphas_cumprod_prev = previous
        variance = self.betas * (1.0 - previous) / (1.0 - self.alphas_cumprod)
        variance[0] = self.betas[0]
        self.posterior_variance = variance

    def reverse_variance(self, name="beta_tilde"):
        """``sigma_t^2`` of the reverse steps ``p(x_{t-1} | x_t)``, shape (T,).

        Ho et al.'s two fixed choices: "beta_tilde", the forward posterior's
        variance, optimal for data concentrated on points; "beta",
        ``beta_t``, optimal (and exact) for ``x_0 ~ N(0, I)``. The last
        step (``t = 1``, where ``beta_tilde_1 = 0``) has ``beta_1`` in both,
        so the DDPM sampler ends on a proper density, the one
        :meth:`negative_elbo` bounds.
        """
        if name not in REVERSE_VARIANCES:
            raise ValueError(
                f"Unknown reverse variance {name!r}. Valid names are: "
                f"{', '.join(sorted(REVERSE_VARIANCES))}."
            )
        return self.posterior_variance if name == "beta_tilde" else self.betas

    def _at(self, values, t, like):
        """``values[t]`` as a column ``(batch, 1)`` in ``like``'s dtype and device."""
        if isinstance(t, int):
            t = torch.full((like.shape[0],), t, dtype=torch.long)
        column = values[t.cpu()].to(device=like.device, dtype=like.dtype)
        return column.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0, t, noise):
        """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise``.

        Parameters
        ----------
        x0 : Tensor of shape (batch, n_features)
        t : LongTensor of shape (batch,) or int
            0-based steps.
        noise : Tensor like ``x0``
        """
        abar = self._at(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    # -- samplers ------------------------------------------------------------------

    def sample(self, model, shape, generator, *, sampler="ddpm", variance="beta_tilde",
               n_steps=None, eta=0.0, langevin_steps=1, langevin_snr=0.1, noise=None,
               dtype=torch.float32, device="cpu"):
        """Samples from ``N(0, I)`` noise, run back through ``model``.

        Parameters
        ----------
        model : callable
            ``model(x_t, t) -> eps``, ``t`` a LongTensor of 0-based steps.
        shape : tuple of int
            ``(n_samples, n_features)``.
        generator : torch.Generator
            Source of every draw.
        sampler : {"ddpm", "ddim", "langevin"}, default="ddpm"
        variance : {"beta_tilde", "beta"}, default="beta_tilde"
            The reverse variances of "ddpm" (:meth:`reverse_variance`).
        n_steps : int or None, default=None
            Steps of the DDIM subsequence, or noise levels of Langevin;
            None: all ``T``. Ignored by "ddpm".
        eta : float, default=0.0
            DDIM's noise scale: 0 deterministic, 1 the DDPM posterior.
        langevin_steps : int, default=1
            Langevin updates per noise level.
        langevin_snr : float, default=0.1
            Signal-to-noise ratio that sets Langevin's step size.
        noise : Tensor or None, default=None
            The initial ``x_T``; drawn from ``generator`` when None.

        Returns
        -------
        Tensor of shape ``shape``
        """
        if noise is None:
            like = torch.empty(0, dtype=dtype, device=device)
            noise = _randn(tuple(shape), generator, like)
        if sampler == "ddpm":
            return self.ddpm_sample(model, noise, generator, variance=variance)
        if sampler == "ddim":
            return self.ddim_sample(model, noise, generator, n_steps=n_steps, eta=eta)
        if sampler == "langevin":
            return self.langevin_sample(model, noise, generator, n_levels=n_steps,
                                        n_steps=langevin_steps, snr=langevin_snr)
        raise ValueError(
            f"Unknown sampler {sampler!r}. Valid names are: "
            f"{', '.join(sorted(SAMPLERS))}."
        )

    def ddpm_sample(self, model, x, generator, *, variance="beta_tilde"):
        """Ancestral sampling (Ho et al., Algorithm 2) from ``x = x_T``.

        Every step, the last included, adds ``sigma_t z`` (see
        :meth:`reverse_variance`).
        """
        sigma2 = self.reverse_variance(variance)
        for i in reversed(range(self.n_timesteps)):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            eps = model(x, t).to(x.dtype)
            beta = float(self.betas[i])
            scale = beta / math.sqrt(1.0 - float(self.alphas_cumprod[i]))
            mean = (x - scale * eps) / math.sqrt(1.0 - beta)
            x = mean + math.sqrt(float(sigma2[i])) * _randn(x.shape, generator, x)
        return x

    def timestep_subsequence(self, n_steps=None):
        """``n_steps`` 0-based steps, evenly spaced from ``T - 1`` down to 0.

        The first is always ``T - 1`` (the prior's step); one step is ``[T -
        1]`` alone.
        """
        if n_steps is None or n_steps >= self.n_timesteps:
            return list(reversed(range(self.n_timesteps)))
        steps = np.round(np.linspace(self.n_timesteps - 1, 0, int(n_steps))).astype(int)
        return [int(i) for i in np.unique(steps)[::-1]]

    def ddim_sample(self, model, x, generator, *, n_steps=None, eta=0.0):
        """DDIM (Song et al., 2021, eq. 12) over a subsequence of the steps.

        With ``eta=0`` every step is deterministic (given ``x_T``); with
        ``eta=1`` and all ``T`` steps, each step is the DDPM posterior with
        variance ``beta_tilde_t``. The last step returns the prediction of
        ``x_0``.
        """
        steps = self.timestep_subsequence(n_steps)
        for k, i in enumerate(steps):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            eps = model(x, t).to(x.dtype)
            abar = float(self.alphas_cumprod[i])
            last = k + 1 == len(steps)
            abar_prev = 1.0 if last else float(self.alphas_cumprod[steps[k + 1]])
            x0 = (x - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)
            sigma = eta * math.sqrt(
                (1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev)
            )
            direction = math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)) * eps
            x = math.sqrt(abar_prev) * x0 + direction
            if sigma > 0:
                x = x + sigma * _randn(x.shape, generator, x)
        return x

    def langevin_sample(self, model, x, generator, *, n_levels=None, n_steps=1,
                        snr=0.1):
        """Annealed Langevin dynamics on the noise levels, high to low.

        At each level ``t`` (``n_levels`` of them, evenly spaced), ``n_steps``
        updates ``x <- x + e s + sqrt(2 e) z`` target the noisy marginal
        ``q(x_t)`` through its score ``s = -eps(x, t) / sqrt(1 - abar_t)``,
        with the step size ``e = 2 alpha_t (snr |z| / |s|)^2`` of Song et
        al. (2021, Algorithm 5; norms averaged over the batch). A final
        Tweedie step returns ``E[x_0 | x_t]`` at the lowest level.
        """
        steps = self.timestep_subsequence(n_levels)
        for i in steps:
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            sigma = math.sqrt(1.0 - float(self.alphas_cumprod[i]))
            for _ in range(int(n_steps)):
                score = -model(x, t).to(x.dtype) / sigma
                z = _randn(x.shape, generator, x)
                score_norm = score.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
                z_norm = z.flatten(1).norm(dim=1).mean()
                step = 2.0 * float(self.alphas[i]) * (snr * z_norm / score_norm) ** 2
                x = x + step * score + (2.0 * step).sqrt() * z
        i = steps[-1]
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        abar = float(self.alphas_cumprod[i])
        return (x - math.sqrt(1.0 - abar) * model(x, t).to(x.dtype)) / math.sqrt(abar)

    # -- the variational bound ------------------------------------------------------

    def bound_noise(self, n_features, seed=0):
        """The fixed noise of :meth:`negative_elbo`: a ``(n_features,)`` draw per step.

        Returns
        -------
        Tensor of shape (T, n_features), float64, CPU
        """
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        return torch.randn((self.n_timesteps, n_features), generator=generator,
                           dtype=torch.float64, device="cpu")

    def negative_elbo(self, model, x0, noise, *, variance="beta_tilde", block=64):
        """Minus the variational lower bound on ``log p(x_0)``, in nats, per row.

        ``L_T + sum_{t=2}^T L_{t-1} + L_0`` (Ho et al., eq. 5): ``L_T =
        KL(q(x_T | x_0) || N(0, I))`` in closed form; for ``t >= 2``,
        ``L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) = beta_t^2
        / (2 sigma_t^2 alpha_t (1 - abar_t)) |eps - eps(x_t, t)|^2 + d/2 (r_t
        - 1 - log r_t)``, ``r_t = beta_tilde_t / sigma_t^2`` (0 when
        ``sigma_t^2 = beta_tilde_t``); ``L_0 = -log N(x_0; mu(x_1, 1), beta_1
        I)``. Each term is taken at one ``x_t ~ q(x_t |
        x_0)``, drawn with ``noise[t]`` for every row (common random
        numbers), so a row's bound depends on that row alone. In
        expectation over ``noise`` this is the exact negative ELBO of the
        model that :meth:`ddpm_sample` samples from.

        Parameters
        ----------
        model : callable
            ``model(x_t, t) -> eps``.
        x0 : Tensor of shape (batch, n_features)
        noise : Tensor of shape (T, n_features)
            See :meth:`bound_noise`.
        variance : {"beta_tilde", "beta"}, default="beta_tilde"
            ``sigma_t^2`` of the model (:meth:`reverse_variance`).
        block : int, default=64
            Steps per network call (``batch * block`` rows).

        Returns
        -------
        Tensor of shape (batch,), in ``x0``'s dtype
        """
        batch, n_features = x0.shape
        T = self.n_timesteps
        dtype, device = x0.dtype, x0.device
        noise = noise.to(device=device, dtype=dtype)
        abar = self.alphas_cumprod.to(device=device, dtype=dtype)
        # The weight of |eps - eps_hat|^2 in each step's term.
        sigma2 = self.reverse_variance(variance)
        weights = self.betas**2 / (
            2.0 * sigma2 * self.alphas * (1.0 - self.alphas_cumprod)
        )
        weights[0] = 1.0 / (2.0 * self.alphas[0])
        ratio = (self.posterior_variance / sigma2)[1:]
        mismatch = 0.5 * n_features * float((ratio - 1.0 - torch.log(ratio)).sum())
        weights = weights.to(device=device, dtype=dtype)
        abar_T = float(self.alphas_cumprod[-1])
        prior = 0.5 * (abar_T * x0.pow(2).sum(1)
                       + n_features * (-abar_T - math.log1p(-abar_T)))
        beta_1 = float(self.betas[0])
        decoder_constant = 0.5 * n_features * math.log(2 * math.pi * beta_1)
        total = prior + (decoder_constant + mismatch)
        for start in range(0, T, block):
            steps = torch.arange(start, min(start + block, T), device=device)
            k = steps.shape[0]
            a = abar[steps]  # (k,)
            eps = noise[steps]  # (k, n_features)
            # (k, batch, n_features)
            x_t = (a.sqrt()[:, None, None] * x0[None]
                   + (1.0 - a).sqrt()[:, None, None] * eps[:, None, :])
            t = steps[:, None].expand(k, batch).reshape(-1)
            predicted = model(x_t.reshape(k * batch, n_features), t).to(dtype)
            residual = predicted.reshape(k, batch, n_features) - eps[:, None, :]
            errors = residual.pow(2).sum(2)
            total = total + (weights[steps][:, None] * errors).sum(0)
        return total


@register_module
class DenoisingMLP(nn.Module):
    """A noise predictor ``eps(x_t, t)`` for rows, with its diffusion process.

    ``h_0 = x_t``; each hidden layer ``h_l = act(W_l h_{l-1} + U_l e(t))``,
    ``e(t)`` the sinusoidal embedding of the step passed through a linear
    layer and the activation; a linear output layer of ``n_features``.

    Parameters
    ----------
    n_features : int
    hidden_layer_sizes : list of int
        At least one.
    n_timesteps : int
    noise_schedule : {"linear", "cosine", "quadratic", "sigmoid"}, default="linear"
    beta_start, beta_end : float or None, default=None
        See :func:`make_betas`.
    activation : str or (str, dict), default="silu"
        A name of :data:`~sklears_neural.core.resolve.ACTIVATIONS`.
    time_embedding_dim : int, default=32
        Width of the sinusoidal embedding (even).

    Attributes
    ----------
    diffusion : GaussianDiffusion
        The schedule the network is trained for (not part of the state dict:
        it follows from the arguments).

    Shapes
    ------
    - ``x``: ``(batch, n_features)``; ``t``: ``(batch,)`` 0-based steps
    - output: ``(batch, n_features)``
    """

    def __init__(self, n_features, hidden_layer_sizes, n_timesteps,
                 noise_schedule="linear", beta_start=None, beta_end=None,
                 activation="silu", time_embedding_dim=32):
        super().__init__()
        sizes = [int(size) for size in hidden_layer_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(
                f"DenoisingMLP needs at least one hidden layer of positive width, got "
                f"{hidden_layer_sizes!r}."
            )
        if time_embedding_dim < 2 or time_embedding_dim % 2:
            raise ValueError(
                "time_embedding_dim must be an even int >= 2, got "
                f"{time_embedding_dim!r}."
            )
        self.n_features = int(n_features)
        self.time_embedding_dim = int(time_embedding_dim)
        self.activation = activation
        self.diffusion = GaussianDiffusion(n_timesteps, noise_schedule, beta_start,
                                           beta_end)
        self.time = nn.Linear(self.time_embedding_dim, sizes[0])
        self.time_activation = ACTIVATIONS.build(activation, width=sizes[0])
        widths = [self.n_features] + sizes
        self.hidden = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])
        )
        self.time_projections = nn.ModuleList(nn.Linear(sizes[0], b) for b in sizes)
        self.activations = nn.ModuleList(
            ACTIVATIONS.build(activation, width=b) for b in sizes
        )
        self.out = nn.Linear(sizes[-1], self.n_features)

    @property
    def n_timesteps(self):
        return self.diffusion.n_timesteps

    def reset_parameters(self, generator=None):
        """He-uniform weights from ``generator``, zero biases, a zero output layer.

        The zero output layer starts the network at ``eps = 0``, the
        predictor of least error before training (the noise has mean 0).
        """
        initialize_(self, "he_uniform", activation="relu", generator=generator)
        with torch.no_grad():
            self.out.weight.zero_()

    def forward(self, x, t):
        embedding = timestep_embedding(t, self.time_embedding_dim, self.n_timesteps)
        embedding = self.time_activation(self.time(embedding.to(x.dtype)))
        h = x
        for linear, projection, activation in zip(
            self.hidden, self.time_projections, self.activations
        ):
            h = activation(linear(h) + projection(embedding))
        return self.out(h)
