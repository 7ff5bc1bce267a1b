"""The networks of :class:`~sklears_neural.rl.multi_agent.MultiAgentTrainer`.

:class:`AgentStack` evaluates one MLP per agent (or one shared MLP) in a
single batched product; :class:`MultiAgentActorCritic` holds the actors and
the critic of each training mode; :class:`_NumpyPolicy` is its acting half
in NumPy, for rollouts of one joint observation per step.
"""

import math

import numpy as np
import torch
from torch import nn

from sklears_neural.core.registry import register_module

__all__ = ["AgentStack", "MultiAgentActorCritic"]


class AgentStack(nn.Module):
    """MLPs for several agents evaluated in one batched product.

    ``n_heads`` sets of weights, each an MLP ``n_inputs -> hidden -> n_outputs``.
    Input ``(batch, n_agents, n_inputs)`` maps to ``(batch, n_agents,
    n_outputs)``: with ``n_heads == n_agents`` agent ``i`` runs head ``i``
    (separate parameters), with ``n_heads == 1`` every agent runs the same
    head (parameter sharing).

    Parameters
    ----------
    n_heads : int
    n_inputs : int
    hidden_layer_sizes : list of int
    n_outputs : int
    activation : {"tanh", "relu"}
    output_gain : float
        Gain of the orthogonal initialization of the last layer (0.01 for
        policy logits, so every policy starts close to uniform; 1 for values).
    """

    def __init__(self, n_heads, n_inputs, hidden_layer_sizes, n_outputs, activation,
                 output_gain):
        super().__init__()
        sizes = [n_inputs, *hidden_layer_sizes, n_outputs]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(n_heads, fan_in, fan_out))
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:])
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n_heads, 1, fan_out)) for fan_out in sizes[1:]
        )
        self.activation = {"tanh": torch.tanh, "relu": torch.relu}[activation]
        self.output_gain = output_gain
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        gain = math.sqrt(2.0)
        last = len(self.weights) - 1
        with torch.no_grad():
            for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
                for head in weight:
                    # (fan_in, fan_out): transposed, as orthogonal_ wants rows out.
                    nn.init.orthogonal_(head.T, gain=self.output_gain if layer == last
                                        else gain, generator=generator)
                bias.zero_()

    def forward(self, inputs):
        # (batch, agents, in) -> (agents, batch, in); a head dim of 1 broadcasts.
        hidden = inputs.transpose(0, 1)
        last = len(self.weights) - 1
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            hidden = torch.matmul(hidden, weight) + bias
            if layer < last:
                hidden = self.activation(hidden)
        return hidden.transpose(0, 1)


@register_module
class MultiAgentActorCritic(nn.Module):
    """Actors and critic of :class:`MultiAgentTrainer`, for one of its modes.

    Parameters
    ----------
    mode : {"independent", "shared", "centralized"}
    observation_sizes : list of int
        Flattened observation size of each agent.
    n_actions : list of int
        Number of discrete actions of each agent.
    state_size : int
        Size of the global state the centralized critic reads.
    hidden_layer_sizes : list of int
    activation : {"tanh", "relu"}
    """

    def __init__(self, mode, observation_sizes, n_actions, state_size,
                 hidden_layer_sizes,
                 activation):
        super().__init__()
        n_agents = len(observation_sizes)
        self.mode = mode
        self.n_agents = n_agents
        n_inputs = max(observation_sizes) + (n_agents if mode == "shared" else 0)
        heads = 1 if mode == "shared" else n_agents
        self.actor = AgentStack(heads, n_inputs, hidden_layer_sizes, max(n_actions),
                                activation, output_gain=0.01)
        if mode == "centralized":
            self.critic = AgentStack(1, state_size, hidden_layer_sizes, n_agents,
                                     activation, output_gain=1.0)
        else:
            self.critic = AgentStack(heads, n_inputs, hidden_layer_sizes, 1,
                                     activation, output_gain=1.0)
        invalid = torch.zeros(n_agents, max(n_actions), dtype=torch.bool)
        for agent, count in enumerate(n_actions):
            invalid[agent, count:] = True
        self.register_buffer("invalid_actions", invalid, persistent=False)
        self.register_buffer("agent_ids", torch.eye(n_agents), persistent=False)

    def reset_parameters(self, generator=None):
        self.actor.reset_parameters(generator=generator)
        self.critic.reset_parameters(generator=generator)

    def _with_ids(self, observations):
        if self.mode != "shared":
            return observations
        ids = self.agent_ids.to(observations.dtype)
        ids = ids.expand(observations.shape[0], -1, -1)
        return torch.cat([observations, ids], dim=-1)

    def logits(self, observations):
        """``(batch, n_agents, n_obs) -> (batch, n_agents, max_actions)``,
        actions an agent lacks at the dtype's lowest value."""
        logits = self.actor(self._with_ids(observations))
        return logits.masked_fill(self.invalid_actions, torch.finfo(logits.dtype).min)

    def values(self, observations, states):
        """Each agent's value, ``(batch, n_agents)``: from its observation, or
        (centralized) every agent's from the global ``states`` ``(batch, n_state)``."""
        if self.mode == "centralized":
            return self.critic(states.unsqueeze(1)).squeeze(1)
        return self.critic(self._with_ids(observations)).squeeze(-1)

    def forward(self, observations):
        return self.logits(observations)


class _NumpyPolicy:
    """The acting half of a :class:`MultiAgentActorCritic` in NumPy float64.

    A rollout evaluates the networks on one joint observation per step;
    torch's per-call overhead (and its thread pool's wake-ups on a busy
    machine: a 2-thread softmax of 6 numbers measured 1.3 ms against
    1.2 us on one thread) dwarfs the arithmetic there, so acting runs on
    NumPy copies of the weights, taken after every update. Updates, which
    need gradients and see whole minibatches, stay in torch.
    """

    def __init__(self, module):
        def layers(stack):
            return [(w.detach().cpu().double().numpy(),
                     b.detach().cpu().double().numpy())
                    for w, b in zip(stack.weights, stack.biases)]
        self.mode = module.mode
        self.activation = np.tanh if module.actor.activation is torch.tanh else (
            lambda h: np.maximum(h, 0.0))
        self.actor = layers(module.actor)
        self.critic = layers(module.critic)
        self.invalid = module.invalid_actions.cpu().numpy()
        self.ids = np.eye(module.n_agents)
        self.last_action = (~self.invalid).sum(axis=1) - 1

    def _run(self, layers, inputs):
        # (agents, in) -> (agents, 1, in) @ (heads, in, out); heads of 1 broadcast.
        hidden = inputs[:, None, :]
        for layer, (weight, bias) in enumerate(layers):
            hidden = np.matmul(hidden, weight) + bias
            if layer < len(layers) - 1:
                hidden = self.activation(hidden)
        return hidden[:, 0, :]

    def _inputs(self, observations):
        if self.mode == "shared":
            return np.concatenate([observations, self.ids], axis=1)
        return observations

    def probabilities(self, observations):
        """``(n_agents, max_actions)`` action probabilities."""
        logits = self._run(self.actor, self._inputs(observations))
        logits[self.invalid] = -np.inf
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def values(self, observations, state):
        """``(n_agents,)`` values."""
        if self.mode == "centralized":
            return self._run(self.critic, state[None, :])[0]
        return self._run(self.critic, self._inputs(observations))[:, 0]


    def sample(self, probs, rng):
        """One action per agent from ``probs``, by inverting the cumulative sums."""
        draws = rng.random((len(probs), 1))
        actions = (np.cumsum(probs, axis=1) < draws).sum(axis=1)
        # Rounding can leave the cumulative sum a hair below a draw near 1.
        return np.minimum(actions, self.last_action)
