"""MCMC samplers of an energy ``E(x)``: Langevin, Hamiltonian Monte Carlo, Gibbs.

Each sampler draws from the unnormalized density ``p(x) ~ exp(-E(x))``,
starting from given chains ``x`` and drawing every random number from a
``torch.Generator`` (on the CPU or on the chains' device), so a seed fixes
the chains. ``energy`` is any callable mapping a batch ``(n, d)`` to
energies ``(n,)``: the network of
:class:`~sklears_neural.models.energy.EnergyBasedModel`, or a known energy
in the tests (a Gaussian written as an energy, independent binary units).

- :func:`langevin`: unadjusted Langevin dynamics,
  ``x <- x - step_size * grad E(x) + noise_scale * eps``; with
  ``noise_scale=None`` the noise is ``sqrt(2 * step_size)``, the
  discretization of the diffusion whose stationary law is ``exp(-E)``
  (biased by O(step_size), no rejection).
- :func:`hmc`: Hamiltonian Monte Carlo: a fresh Gaussian momentum per step,
  ``n_leapfrog_steps`` leapfrog steps (of a jittered step), then a Metropolis test on
  ``H = E(x) + |p|^2 / 2``, so the chain leaves ``exp(-E)`` invariant
  exactly; returns the acceptance rate too.
- :func:`gibbs`: for binary ``{0, 1}`` data: one sweep sets every unit in
  turn from its conditional ``P(x_i = 1 | x_-i) = sigmoid(E(x_i=0) -
  E(x_i=1))``. An energy that is a general network has no cheaper
  conditional, so a sweep costs ``n_features`` batched evaluations of
  ``2 n`` rows (one per unit, both values at once): ``2 d`` times the rows
  a Langevin step evaluates, without a gradient.

Gradients are taken with :func:`torch.autograd.grad` with respect to the
chains only: parameters' ``.grad`` are never touched, and the returned
chains are detached.
"""

import math

import torch

__all__ = ["energy_grad", "gibbs", "hmc", "langevin"]


def _randn(shape, generator, like):
    return torch.randn(shape, generator=generator, dtype=like.dtype,
                       device=generator.device).to(like.device)


def _rand(shape, generator, like):
    return torch.rand(shape, generator=generator, dtype=like.dtype,
                      device=generator.device).to(like.device)


def energy_grad(energy, x):
    """``(E(x), dE/dx)`` for chains ``x`` of shape ``(n, d)``; both detached."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        (grad,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), grad.detach()


def langevin(energy, x, generator, *, n_steps, step_size, noise_scale=None):
    """Unadjusted Langevin dynamics from chains ``x``.

    Parameters
    ----------
    energy : callable
        ``(n, d) -> (n,)``, differentiable in its input.
    x : torch.Tensor of shape (n, d)
        Starting chains.
    generator : torch.Generator
        Source of every noise draw.
    n_steps : int
    step_size : float
        The gradient step.
    noise_scale : float or None, default=None
        Standard deviation of the added noise; None: ``sqrt(2 * step_size)``.

    Returns
    -------
    x : torch.Tensor of shape (n, d)
    """
    scale = math.sqrt(2.0 * step_size) if noise_scale is None else float(noise_scale)
    x = x.detach()
    for _ in range(int(n_steps)):
        _, grad = energy_grad(energy, x)
        x = x - step_size * grad + scale * _randn(x.shape, generator, x)
    return x


def hmc(energy, x, generator, *, n_steps, step_size, n_leapfrog_steps=5):
    """Hamiltonian Monte Carlo with a unit mass matrix from chains ``x``.

    Parameters
    ----------
    energy : callable
        ``(n, d) -> (n,)``, differentiable in its input.
    x : torch.Tensor of shape (n, d)
    generator : torch.Generator
    n_steps : int
        Metropolis steps (trajectories).
    step_size : float
        Leapfrog step, jittered per chain and trajectory by a uniform
        factor in ``[0.5, 1.5)`` (against resonant trajectory lengths).
    n_leapfrog_steps : int, default=5

    Returns
    -------
    x : torch.Tensor of shape (n, d)
    acceptance_rate : float
        Mean fraction of accepted trajectories (nan for ``n_steps=0``).
    """
    x = x.detach()
    e, grad = energy_grad(energy, x)
    accepted = torch.zeros((), dtype=x.dtype, device=x.device)
    for _ in range(int(n_steps)):
        p = _randn(x.shape, generator, x)
        # A step jittered per chain and trajectory (x [0.5, 1.5)), drawn
        # independently of the state, so detailed balance holds: a fixed
        # trajectory length can resonate with a direction's period (half a
        # period maps x - mu to about mu - x) and the chain stops mixing.
        eps = step_size * (0.5 + _rand((x.shape[0], 1), generator, x))
        h0 = e + 0.5 * p.pow(2).sum(dim=1)
        x_new, g_new = x, grad
        p_new = p - 0.5 * eps * g_new
        for k in range(int(n_leapfrog_steps)):
            x_new = x_new + eps * p_new
            e_new, g_new = energy_grad(energy, x_new)
            if k < n_leapfrog_steps - 1:
                p_new = p_new - eps * g_new
        p_new = p_new - 0.5 * eps * g_new
        h1 = e_new + 0.5 * p_new.pow(2).sum(dim=1)
        # Accept with probability min(1, exp(h0 - h1)); nan (an overflowing
        # trajectory) is rejected.
        log_u = torch.log(_rand(h0.shape, generator, x))
        accept = log_u < (h0 - h1)
        x = torch.where(accept[:, None], x_new, x)
        e = torch.where(accept, e_new, e)
        grad = torch.where(accept[:, None], g_new, grad)
        accepted = accepted + accept.to(x.dtype).mean()
    rate = float(accepted / n_steps) if n_steps else float("nan")
    return x, rate


@torch.no_grad()
def gibbs(energy, x, generator, *, n_steps):
    """Systematic-scan Gibbs sampling of binary ``{0, 1}`` chains ``x``.

    Parameters
    ----------
    energy : callable
        ``(n, d) -> (n,)``.
    x : torch.Tensor of shape (n, d)
        Chains of 0 and 1.
    generator : torch.Generator
    n_steps : int
        Sweeps; each sets units ``0 .. d-1`` in turn.

    Returns
    -------
    x : torch.Tensor of shape (n, d)
    """
    x = x.detach().clone()
    n, d = x.shape
    for _ in range(int(n_steps)):
        for i in range(d):
            both = torch.cat([x, x])
            both[:n, i] = 0
            both[n:, i] = 1
            e = energy(both)
            p_one = torch.sigmoid(e[:n] - e[n:])
            x[:, i] = (_rand((n,), generator, x) < p_one).to(x.dtype)
    return x
