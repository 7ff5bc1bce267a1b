"""Layer-wise adaptive optimizers torch does not ship: LARS and LAMB.

Both scale each parameter tensor's step by a *trust ratio* built from the
norms of that tensor and of its update, so every layer moves by a similar
relative amount whatever its gradient scale; they were designed for very
large mini-batches. As in the common implementations (NVIDIA's LARC/LAMB,
timm), one-dimensional tensors (biases, normalization weights) are left out
of the trust ratio and of weight decay by default (``exclude_1d=True``).

Both are :class:`torch.optim.Optimizer` subclasses: their state (momentum
buffers, moments, step counts) round-trips through ``state_dict()`` /
``load_state_dict()`` like torch's own optimizers.
"""


import torch
from torch.optim import Optimizer

from sklears_neural.core import checks

__all__ = ["LARS", "LAMB"]


def _check_real(owner, name, value, *, low=0, high=None, low_open=False,
                high_open=True):
    # Rates, decays, epsilons: >= 0 unless said otherwise, below an open high.
    checks.check_real(owner, name, value, low=low, high=high, low_open=low_open,
                      high_open=high_open)


def _check_bool(owner, name, value):
    checks.check_bool(owner, name, value)


def _adapted(group, p):
    """Whether ``p`` gets the trust ratio and weight decay."""
    return not (group["exclude_1d"] and p.ndim <= 1)


def _trust(ratio, w_norm, other_norm):
    """``ratio`` where both norms are positive, else 1 (as the papers' codes do).

    A zero tensor or a zero gradient would otherwise never move, or divide
    by zero. Stays on the device: no host synchronization.
    """
    return torch.where((w_norm > 0) & (other_norm > 0), ratio, 1.0)


class LARS(Optimizer):
    r"""Layer-wise Adaptive Rate Scaling (You, Gitman and Ginsburg, 2017).

    SGD with momentum whose step for each parameter tensor is scaled by a
    local learning rate, the trust ratio
    :math:`\eta \|w\| / (\|g\| + \beta \|w\|)`.

    Parameters
    ----------
    params : iterable of torch.Tensor or dict
        Parameters to optimize, or parameter groups.
    lr : float, default=1.0
        Global learning rate :math:`\gamma`. The trust ratio already brings
        the step to about ``trust_coefficient * ||w||``, so values of order
        one are usual.
    momentum : float, default=0.9
        Momentum :math:`\mu`, in ``[0, 1)``.
    weight_decay : float, default=0.0
        :math:`\beta`: added to the gradient of adapted tensors as
        :math:`\beta w` and counted in the trust ratio's denominator.
    trust_coefficient : float, default=0.001
        :math:`\eta`, how far (relative to :math:`\|w\|`) a layer moves in
        one step at ``lr=1``.
    eps : float, default=1e-8
        Added to the trust ratio's denominator for safety.
    nesterov : bool, default=False
        Use Nesterov momentum on the adapted step (needs ``momentum > 0``).
    exclude_1d : bool, default=True
        Leave tensors with at most one dimension (biases, normalization
        weights) out of the trust ratio and weight decay: they take plain
        SGD-momentum steps.

    Notes
    -----
    For each adapted tensor :math:`w` with gradient :math:`g`, at every
    step (Algorithm 1 of the paper, with the global rate applied after the
    momentum buffer as in torch's SGD; the two agree for a constant rate):

    .. math::

        \lambda &= \frac{\eta \, \|w\|_2}{\|g\|_2 + \beta \|w\|_2 + \epsilon}
            \quad (\lambda = 1 \text{ if } \|w\|_2 = 0 \text{ or } \|g\|_2 = 0)

        d &= \lambda \, (g + \beta w)

        b &\leftarrow \mu \, b + d \quad (b = d \text{ at the first step})

        w &\leftarrow w - \gamma \, b
            \quad (\text{Nesterov: } w \leftarrow w - \gamma (d + \mu b))

    An excluded tensor uses :math:`d = g`. Norms are Frobenius norms of the
    whole tensor (one "layer").

    References
    ----------
    Y. You, I. Gitman and B. Ginsburg, "Large Batch Training of
    Convolutional Networks", arXiv:1708.03888, 2017.

    Examples
    --------
    >>> import torch
    >>> from sklears_neural.core.optimizers import LARS
    >>> w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    >>> opt = LARS([w], lr=1.0, momentum=0.0, trust_coefficient=0.1, eps=0.0)
    >>> w.grad = torch.tensor([[1.0, 0.0]])
    >>> opt.step()
    >>> w.detach()  # moved by 0.1 * ||w|| = 0.5 along g / ||g||
    tensor([[2.5000, 4.0000]])
    """

    def __init__(
        self,
        params,
        lr=1.0,
        momentum=0.9,
        weight_decay=0.0,
        *,
        trust_coefficient=0.001,
        eps=1e-8,
        nesterov=False,
        exclude_1d=True,
    ):
        _check_real("LARS", "lr", lr)
        _check_real("LARS", "momentum", momentum, high=1.0)
        _check_real("LARS", "weight_decay", weight_decay)
        _check_real("LARS", "trust_coefficient", trust_coefficient, low_open=True)
        _check_real("LARS", "eps", eps)
        _check_bool("LARS", "nesterov", nesterov)
        _check_bool("LARS", "exclude_1d", exclude_1d)
        if nesterov and momentum == 0:
            raise ValueError(
                "LARS with nesterov=True needs momentum > 0. Set momentum or "
                "nesterov=False."
            )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            nesterov=nesterov,
            exclude_1d=exclude_1d,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("exclude_1d", True)

    @torch.no_grad()
    def step(self, closure=None):
        """Take one optimization step.

        Parameters
        ----------
        closure : callable or None, default=None
            Re-evaluates the model and returns the loss.

        Returns
        -------
        loss : torch.Tensor or None
            What ``closure`` returned.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            wd, eps = group["weight_decay"], group["eps"]
            eta = group["trust_coefficient"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients.")
                if _adapted(group, p):
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(grad)
                    ratio = eta * w_norm / (g_norm + wd * w_norm + eps)
                    update = grad.add(p, alpha=wd).mul_(_trust(ratio, w_norm, g_norm))
                else:
                    update = grad
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = torch.clone(update).detach()
                        state["momentum_buffer"] = buf
                    else:
                        buf.mul_(momentum).add_(update)
                    if group["nesterov"]:
                        update = update.add(buf, alpha=momentum)
                    else:
                        update = buf
                p.add_(update, alpha=-lr)
        return loss


class LAMB(Optimizer):
    r"""Layer-wise Adaptive Moments for Batch training (You et al., 2019).

    Adam's bias-corrected moments, plus decoupled weight decay, with each
    parameter tensor's update rescaled by the trust ratio
    :math:`\phi(\|w\|) / \|r\|`.

    Parameters
    ----------
    params : iterable of torch.Tensor or dict
        Parameters to optimize, or parameter groups.
    lr : float, default=1e-3
        Learning rate :math:`\gamma`: each adapted tensor moves by about
        :math:`\gamma \|w\|` per step.
    betas : tuple of (float, float), default=(0.9, 0.999)
        :math:`(\beta_1, \beta_2)`, decay rates of the first and second
        moment estimates, each in ``[0, 1)``.
    eps : float, default=1e-6
        :math:`\epsilon`, added to :math:`\sqrt{\hat v}`.
    weight_decay : float, default=0.0
        :math:`\lambda`, decoupled weight decay added to the update of
        adapted tensors.
    clamp_value : float or None, default=10.0
        :math:`\phi(z) = \min(z, \text{clamp\_value})` (the norm is never
        negative, so this is the identity clipped to ``[0, clamp_value]``);
        ``None`` uses the unclipped :math:`\phi(z) = z`.
    bias_correction : bool, default=True
        Divide the moments by :math:`1 - \beta^t` as Adam does.
    exclude_1d : bool, default=True
        Leave tensors with at most one dimension (biases, normalization
        weights) out of the trust ratio and weight decay: they take plain
        Adam steps.

    Notes
    -----
    For each parameter tensor :math:`w` with gradient :math:`g`, at step
    :math:`t = 1, 2, \dots` (Algorithm 2 of the paper):

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2

        \hat m &= m / (1 - \beta_1^t), \qquad \hat v = v / (1 - \beta_2^t)

        r &= \frac{\hat m}{\sqrt{\hat v} + \epsilon} + \lambda w

        w &\leftarrow w - \gamma \, \frac{\phi(\|w\|_2)}{\|r\|_2} \, r

    with the ratio set to 1 when :math:`\|w\|_2 = 0` or :math:`\|r\|_2 = 0`.
    An excluded tensor uses :math:`r = \hat m / (\sqrt{\hat v} + \epsilon)`
    and a ratio of 1.

    References
    ----------
    Y. You, J. Li, S. Reddi, J. Hseu, S. Kumar, S. Bhojanapalli, X. Song,
    J. Demmel, K. Keutzer and C.-J. Hsieh, "Large Batch Optimization for
    Deep Learning: Training BERT in 76 minutes", ICLR 2020
    (arXiv:1904.00962).

    Examples
    --------
    >>> import torch
    >>> from sklears_neural.core.optimizers import LAMB
    >>> w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    >>> opt = LAMB([w], lr=0.1)
    >>> w.grad = torch.tensor([[1.0, -1.0]])
    >>> opt.step()
    >>> w.detach()  # r = (1, -1): moved by 0.1 * ||w|| = 0.5 along r / ||r||
    tensor([[2.6464, 4.3536]])
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-6,
        weight_decay=0.0,
        *,
        clamp_value=10.0,
        bias_correction=True,
        exclude_1d=True,
    ):
        _check_real("LAMB", "lr", lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(
                f"The 'betas' parameter of LAMB must be a pair (beta_1, beta_2). "
                f"Got {betas!r} instead."
            )
        _check_real("LAMB", "betas[0]", betas[0], high=1.0)
        _check_real("LAMB", "betas[1]", betas[1], high=1.0)
        _check_real("LAMB", "eps", eps)
        _check_real("LAMB", "weight_decay", weight_decay)
        if clamp_value is not None:
            _check_real("LAMB", "clamp_value", clamp_value, low_open=True)
        _check_bool("LAMB", "bias_correction", bias_correction)
        _check_bool("LAMB", "exclude_1d", exclude_1d)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            clamp_value=clamp_value,
            bias_correction=bias_correction,
            exclude_1d=exclude_1d,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("clamp_value", 10.0)
            group.setdefault("bias_correction", True)
            group.setdefault("exclude_1d", True)

    @torch.no_grad()
    def step(self, closure=None):
        """Take one optimization step.

        Parameters
        ----------
        closure : callable or None, default=None
            Re-evaluates the model and returns the loss.

        Returns
        -------
        loss : torch.Tensor or None
            What ``closure`` returned.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            clamp = group["clamp_value"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("LAMB does not support sparse gradients.")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if group["bias_correction"]:
                    bc1, bc2 = 1 - beta1**t, 1 - beta2**t
                else:
                    bc1 = bc2 = 1.0
                update = (exp_avg / bc1).div_((exp_avg_sq / bc2).sqrt_().add_(eps))
                if _adapted(group, p):
                    if wd != 0:
                        update.add_(p, alpha=wd)
                    w_norm = torch.linalg.vector_norm(p)
                    r_norm = torch.linalg.vector_norm(update)
                    phi = w_norm if clamp is None else w_norm.clamp(max=clamp)
                    update.mul_(_trust(phi / r_norm, w_norm, r_norm))
                p.add_(update, alpha=-lr)
        return loss
