"""Normalizing flows for tabular data: RealNVP coupling, Glow actnorm and mixing.

A flow is an invertible map ``z = f(x)`` onto a standard normal base, so the
density of ``x`` is exact (change of variables)::

    log p(x) = log N(f(x); 0, I) + log |det df/dx|

:class:`NormalizingFlowNet` stacks ``n_layers`` Glow steps, each
``actnorm -> mixing -> coupling``:

- :class:`ActNorm`: ``y = (x + b) * exp(s)`` per feature, with ``b`` and
  ``s`` set from the first training batch so that its output has zero mean
  and unit variance (data-dependent initialization), then trained.
- mixing: :class:`Reverse` (the feature order reversed, so consecutive
  couplings alternate which half they change, RealNVP's alternating masks)
  or :class:`InvertibleLinear` (Glow's 1x1 convolution as a dense matrix,
  LU-parametrized: ``W = P L (U + diag(sign * exp(log_s)))``, log-determinant
  ``sum(log_s)``).
- :class:`Coupling`: the first ``D // 2`` features pass unchanged and
  condition an MLP that shifts (``"additive"``) or scales and shifts
  (``"affine"``) the rest; the scale's log is ``2 tanh(h / 2)``, bounded.
  The MLP's last layer starts at zero, so every coupling starts as the
  identity.

Every layer has ``forward(x) -> (y, log_det)`` (per sample) and
``inverse(y) -> x``. The modules are plain torch and usable without the
estimator.
"""

import math

import torch
from torch import nn

from sklears_neural.core.registry import register_module
from sklears_neural.core.resolve import ACTIVATIONS

__all__ = [
    "ActNorm",
    "Coupling",
    "InvertibleLinear",
    "NormalizingFlowNet",
    "Reverse",
]

_LOG_2PI = math.log(2 * math.pi)


class ActNorm(nn.Module):
    """Per-feature affine map ``y = (x + bias) * exp(log_scale)``.

    On its first forward pass in training mode the layer sets ``bias`` and
    ``log_scale`` from the batch, so that the batch comes out with zero mean
    and unit variance per feature (a constant feature, or a batch of one
    row, keeps a unit scale). ``initialized`` (a buffer, saved with the
    weights) records that this happened.

    Parameters
    ----------
    n_features : int
    """

    def __init__(self, n_features):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_features))
        self.log_scale = nn.Parameter(torch.zeros(n_features))
        self.register_buffer("initialized", torch.zeros(()))

    def reset_parameters(self, generator=None):
        with torch.no_grad():
            self.bias.zero_()
            self.log_scale.zero_()
            self.initialized.zero_()

    @torch.no_grad()
    def _initialize(self, x):
        # (n, D) -> per-feature mean and standard deviation of the batch.
        mean = x.mean(dim=0)
        if x.shape[0] > 1:
            std = x.std(dim=0, unbiased=False)
            log_scale = torch.where(std > 1e-6, -torch.log(std.clamp_min(1e-6)),
                                    torch.zeros_like(std))
        else:
            log_scale = torch.zeros_like(mean)
        self.bias.copy_(-mean)
        self.log_scale.copy_(log_scale)
        self.initialized.fill_(1)

    def forward(self, x):
        if self.training and not bool(self.initialized):
            self._initialize(x.detach())
        y = (x + self.bias) * torch.exp(self.log_scale)
        return y, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y):
        return y * torch.exp(-self.log_scale) - self.bias


class Reverse(nn.Module):
    """The features in reverse order (log-determinant 0)."""

    def forward(self, x):
        return x.flip(1), x.new_zeros(x.shape[0])

    def inverse(self, y):
        return y.flip(1)


class InvertibleLinear(nn.Module):
    """Glow's invertible 1x1 mixing, LU-parametrized: ``y = x W^T``.

    ``W = P L (U + diag(sign * exp(log_s)))``: ``P`` a fixed permutation,
    ``L`` unit lower triangular, ``U`` strictly upper triangular; ``P`` and
    ``sign`` are buffers. ``log |det W| = sum(log_s)`` costs ``O(D)``, and
    the inverse is two triangular solves. ``W`` starts as a random rotation.

    Parameters
    ----------
    n_features : int
    """

    def __init__(self, n_features):
        super().__init__()
        d = int(n_features)
        self.register_buffer("permutation", torch.eye(d))
        self.register_buffer("sign", torch.ones(d))
        self.register_buffer("lower_mask", torch.tril(torch.ones(d, d), -1))
        self.lower = nn.Parameter(torch.zeros(d, d))
        self.upper = nn.Parameter(torch.zeros(d, d))
        self.log_s = nn.Parameter(torch.zeros(d))
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        d = self.log_s.shape[0]
        device = self.log_s.device
        if device.type == "meta":
            return
        gaussian = torch.randn(d, d, generator=generator, dtype=torch.float64,
                               device=generator.device if generator is not None
                               else "cpu")
        rotation, _ = torch.linalg.qr(gaussian)
        P, L, U = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(U)
        dtype = self.log_s.dtype
        with torch.no_grad():
            self.permutation.copy_(P.to(device, dtype))
            self.sign.copy_(torch.sign(diagonal).to(device, dtype))
            self.log_s.copy_(torch.log(diagonal.abs()).to(device, dtype))
            self.lower.copy_(torch.tril(L, -1).to(device, dtype))
            self.upper.copy_(torch.triu(U, 1).to(device, dtype))

    def _factors(self):
        eye = torch.eye(self.log_s.shape[0], dtype=self.log_s.dtype,
                        device=self.log_s.device)
        lower = self.lower * self.lower_mask + eye
        upper = (self.upper * self.lower_mask.T
                 + torch.diag(self.sign * torch.exp(self.log_s)))
        return lower, upper

    def weight(self):
        """The matrix ``W`` (D, D)."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def forward(self, x):
        y = x @ self.weight().T
        return y, self.log_s.sum().expand(x.shape[0])

    def inverse(self, y):
        lower, upper = self._factors()
        # W x = y, one row per sample: x^T = U^-1 L^-1 P^T y^T.
        a = self.permutation.T @ y.T
        b = torch.linalg.solve_triangular(lower, a, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, b, upper=True).T


class Coupling(nn.Module):
    """RealNVP coupling: the first ``D // 2`` features condition the rest.

    ``"affine"``: ``y_b = x_b * exp(s) + t`` with ``s = 2 tanh(h / 2)``;
    ``"additive"`` (NICE): ``y_b = x_b + t``, log-determinant 0. ``(h, t)``
    come from an MLP of ``x_a`` whose last layer starts at zero. With one
    feature there is nothing to condition on and the MLP sees a constant.

    Parameters
    ----------
    n_features : int
    hidden_layer_sizes : list of int
    coupling : {"affine", "additive"}
    activation : str or (str, dict)
        Between the MLP's hidden layers (:data:`~sklears_neural.core.resolve.ACTIVATIONS`).
    """

    def __init__(self, n_features, hidden_layer_sizes, coupling="affine",
                 activation="relu"):
        super().__init__()
        if coupling not in ("affine", "additive"):
            raise ValueError(
                f"coupling must be 'affine' or 'additive', got {coupling!r}."
            )
        self.coupling = coupling
        self.n_kept = int(n_features) // 2
        self.n_changed = int(n_features) - self.n_kept
        width = max(self.n_kept, 1)
        layers = []
        for size in hidden_layer_sizes:
            layers += [nn.Linear(width, int(size)), ACTIVATIONS.build(activation,
                                                                      width=int(size))]
            width = int(size)
        n_out = self.n_changed * (2 if coupling == "affine" else 1)
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        if linears[0].weight.device.type == "meta":
            return
        with torch.no_grad():
            for layer in linears[:-1]:
                # torch's default Linear initialization, from ``generator``.
                bound = 1 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
            linears[-1].weight.zero_()
            linears[-1].bias.zero_()

    def _shift_scale(self, kept):
        if self.n_kept == 0:
            kept = kept.new_zeros(kept.shape[0], 1)
        h = self.net(kept)
        if self.coupling == "additive":
            return h, None
        raw, shift = h.split(self.n_changed, dim=1)
        return shift, 2 * torch.tanh(raw / 2)

    def forward(self, x):
        kept, changed = x[:, :self.n_kept], x[:, self.n_kept:]
        shift, log_scale = self._shift_scale(kept)
        if log_scale is None:
            return torch.cat([kept, changed + shift], dim=1), x.new_zeros(x.shape[0])
        changed = changed * torch.exp(log_scale) + shift
        return torch.cat([kept, changed], dim=1), log_scale.sum(dim=1)

    def inverse(self, y):
        kept, changed = y[:, :self.n_kept], y[:, self.n_kept:]
        shift, log_scale = self._shift_scale(kept)
        changed = changed - shift
        if log_scale is not None:
            changed = changed * torch.exp(-log_scale)
        return torch.cat([kept, changed], dim=1)


@register_module
class NormalizingFlowNet(nn.Module):
    """``n_layers`` Glow steps (actnorm, mixing, coupling) onto a standard normal.

    ``forward(x)`` returns each sample's log-likelihood, shape ``(n, 1)``;
    :meth:`to_base` gives ``z`` and the log-determinant, :meth:`from_base`
    inverts it, :meth:`sample` draws.

    Parameters
    ----------
    n_features : int
    n_layers : int
    hidden_layer_sizes : list of int
        Hidden widths of every coupling's MLP.
    coupling : {"affine", "additive"}, default="affine"
    mixing : {"permute", "invertible_linear"}, default="invertible_linear"
        ``"permute"`` reverses the features between couplings.
    actnorm : bool, default=True
    activation : str or (str, dict), default="relu"
    """

    def __init__(self, n_features, n_layers, hidden_layer_sizes, coupling="affine",
                 mixing="invertible_linear", actnorm=True, activation="relu"):
        super().__init__()
        if mixing not in ("permute", "invertible_linear"):
            raise ValueError(
                f"mixing must be 'permute' or 'invertible_linear', got {mixing!r}."
            )
        self.n_features = int(n_features)
        steps = []
        for _ in range(int(n_layers)):
            if actnorm:
                steps.append(ActNorm(n_features))
            steps.append(Reverse() if mixing == "permute"
                         else InvertibleLinear(n_features))
            steps.append(Coupling(n_features, list(hidden_layer_sizes), coupling,
                                  activation))
        self.steps = nn.ModuleList(steps)

    def reset_parameters(self, generator=None):
        for step in self.steps:
            if hasattr(step, "reset_parameters"):
                step.reset_parameters(generator=generator)

    def to_base(self, x):
        """``(z, log_det)``: ``x`` mapped to the base space, and ``log |det dz/dx|``."""
        log_det = x.new_zeros(x.shape[0])
        for step in self.steps:
            x, step_log_det = step(x)
            log_det = log_det + step_log_det
        return x, log_det

    def from_base(self, z):
        """``x`` for base-space points ``z``: the inverse of :meth:`to_base`."""
        for step in reversed(self.steps):
            z = step.inverse(z)
        return z

    def log_prob(self, x):
        """Log-likelihood of each row, shape ``(n,)``, in nats."""
        z, log_det = self.to_base(x)
        return -0.5 * (z.pow(2).sum(dim=1) + self.n_features * _LOG_2PI) + log_det

    def forward(self, x):
        return self.log_prob(x)[:, None]

    def sample(self, n_samples, generator=None):
        """``n_samples`` draws: standard normal ``z`` through :meth:`from_base`."""
        parameter = next(self.parameters())
        z = torch.randn(n_samples, self.n_features, generator=generator,
                        dtype=parameter.dtype, device=parameter.device)
        return self.from_base(z)
