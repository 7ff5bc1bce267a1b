"""DQN's per-step work written out for plain MLP Q-networks.

A DQN fit on CartPole is tens of thousands of tiny calls: one observation
through the Q-network per environment step, and a batch of 128 through it
(three times: online, next-state online and target) per update. At these
sizes the time goes to per-call overhead (``nn.Module.__call__``,
autograd's graph, ``Tensor`` allocation), not to arithmetic, so for a plain
MLP -- ``Linear`` layers and an elementwise activation, what
:func:`sklears_neural.core.fused._plain_layers` accepts -- this module runs
the same kernels directly into buffers kept from call to call:

- :class:`GreedyActor`: ``argmax_a Q(s, a)`` of a batch of observations;
- :class:`PlainForward`: ``module(x)``, for the policy-gradient agents'
  rollouts;
- :class:`TDStep`: the Huber TD loss of a replayed batch and its gradients
  in the parameters' ``.grad``, through the core's written-out backward
  pass (:func:`~sklears_neural.core.fused.backpropagate_`).

The forward passes and buffers are the core's
(:class:`~sklears_neural.core.fused.PlainLayers`,
:class:`~sklears_neural.core.fused.ActivationBuffers`), as the MLP's fused
training step uses them.

Both run the kernels ``nn.Linear`` and autograd run (``addmm``, ``mm``,
``threshold_backward``, ...) in the same order, so a fit gives the same
weights and returns as one through the modules and autograd (the tests
compare them). Anything else (a dueling network, a GPU) returns None from
the ``for_module`` constructors and takes the autograd path.
"""

import torch
from torch.nn import functional as F

from sklears_neural.core.fused import (
    ActivationBuffers,
    PlainLayers,
    _plain_layers,
    backpropagate_,
)

__all__ = ["GreedyActor", "PlainForward", "TDStep"]


def _cpu_net(module):
    """``module``'s :class:`~sklears_neural.core.fused.PlainLayers` for a plain
    MLP on the CPU, else None."""
    layers = _plain_layers(module)
    if layers is None or any(lin.weight.device.type != "cpu" for lin, _ in layers):
        return None
    return PlainLayers(layers)


class _OnPlainMLP:
    """Built from a plain MLP on the CPU (:meth:`for_module`), or not at all."""

    def __init__(self, net):
        self._net = net

    @classmethod
    def for_module(cls, module):
        """One for ``module``, or None where it must be called as a module."""
        net = _cpu_net(module)
        return None if net is None else cls(net)


class GreedyActor(_OnPlainMLP):
    """Greedy actions of a plain MLP Q-network, without ``nn.Module`` calls.

    Parameters
    ----------
    net : PlainLayers
    """

    def __init__(self, net):
        super().__init__(net)
        self._outputs = ActivationBuffers(net.widths)

    @torch.no_grad()
    def __call__(self, features):
        """``argmax_a Q(s, a)`` of float32 ``features`` (n, n_inputs), an ndarray."""
        x = torch.from_numpy(features)
        q = self._net.forward_into(x, self._outputs.get(len(features), x))
        return q.argmax(dim=1).numpy()


class PlainForward(_OnPlainMLP):
    """``module(x)`` of a plain MLP as direct kernel calls, without autograd.

    Each call returns new tensors (a rollout keeps them).

    Parameters
    ----------
    net : PlainLayers
    """

    @torch.no_grad()
    def __call__(self, x):
        return self._net.forward(x)


class TDStep:
    """The Huber TD loss of a batch and its gradients, without autograd.

    The loss is ``mean_i w_i huber(Q(s_i, a_i) - y_i)`` with the target
    ``y_i = r_i + d_i Q_target(s'_i, a'_i)``, where ``a'_i`` is the target
    network's greedy action, or the online network's with ``double_q``.
    Calling the step fills every online parameter's ``.grad`` (the same
    tensors from step to step) and returns ``(loss, td_errors)``, as
    ``DQNAgent._loss`` followed by ``loss.backward()`` would.

    Parameters
    ----------
    net, target_net : PlainLayers
        The online network's and the target network's.
    double_q : bool
    """

    def __init__(self, net, target_net, double_q):
        self._net = net
        self._target_net = target_net
        self.double_q = bool(double_q)
        self._online = ActivationBuffers(net.widths)
        self._target = ActivationBuffers(target_net.widths)
        self._scales = {}
        self._grads = [(torch.empty_like(weight), torch.empty_like(bias))
                       for weight, bias in zip(net.weights, net.biases)]

    def _scale(self, n, dtype):
        """``1 / n`` as a 0-d tensor, computed as autograd's mean backward does."""
        key = (n, dtype)
        if key not in self._scales:
            self._scales[key] = torch.ones((), dtype=dtype).div_(n)
        return self._scales[key]

    @classmethod
    def for_modules(cls, module, target, double_q):
        """A step for ``module`` and its ``target``, or None where autograd must run."""
        net, target_net = _cpu_net(module), _cpu_net(target)
        if net is None or target_net is None:
            return None
        return cls(net, target_net, double_q)

    @torch.no_grad()
    def __call__(self, batch):
        """Fill the gradients for ``batch`` (see ``ReplayBuffer.sample``).

        A batch without ``weights`` weighs every transition 1.

        Returns
        -------
        loss : torch.Tensor
            0-d, the weighted mean Huber loss.
        errors : torch.Tensor of shape (batch_size,)
            ``Q(s_i, a_i) - y_i``.
        """
        observations, actions = batch["observations"], batch["actions"]
        next_observations = batch["next_observations"]
        n = len(observations)
        if self.double_q:
            # Both of the online network's passes as one of 2n rows (each
            # row's products are those of a pass on its own: rows do not mix).
            both = torch.cat([observations, next_observations])
            outputs = self._online.get(2 * n, both)
            self._net.forward_into(both, outputs)
            next_online = outputs[-1][n:]
            outputs = [z[:n] for z in outputs]
        else:
            outputs = self._online.get(n, observations)
            self._net.forward_into(observations, outputs)
        inputs = [observations, *outputs[:-1]]
        q_all = outputs[-1]
        index = actions.unsqueeze(1)
        q = q_all.gather(1, index).squeeze(1)
        next_q_target = self._target_net.forward_into(
            next_observations, self._target.get(n, next_observations))
        if self.double_q:
            next_actions = next_online.argmax(dim=1)
            next_q = next_q_target.gather(1, next_actions.unsqueeze(1)).squeeze(1)
        else:
            next_q = next_q_target.max(dim=1).values
        target = batch["rewards"] + batch["discounts"] * next_q
        weights = batch.get("weights")
        losses = F.smooth_l1_loss(q, target, reduction="none")
        errors = q - target
        # d loss / d q_i = w_i / n * clamp(q_i - y_i, -1, 1): the factors in
        # the order autograd's mean, mul and smooth_l1 backwards apply them.
        scale = self._scale(n, q.dtype)
        if weights is None:
            loss = losses.mean()
        else:
            loss = (losses * weights).mean()
            scale = scale.mul(weights)
        grad_q = errors.clamp(-1.0, 1.0).mul_(scale)
        grad = torch.zeros_like(q_all).scatter_(1, index, grad_q.unsqueeze(1))
        backpropagate_(self._net, inputs, grad, self._grads)
        return loss, errors
