"""Experience replay: uniform and prioritized buffers, and n-step returns.

Buffers hold preallocated NumPy arrays (a ring over ``capacity`` rows) and
sample whole batches with vectorized indexing; only the sampled batch
becomes a tensor. Observations are stored as the networks' float32 features.

A stored transition is ``(obs, action, reward, next_obs, discount)`` where
``reward`` is the n-step return ``r_0 + g r_1 + ... + g^(k-1) r_(k-1)`` and
``discount`` is ``g^k`` if the episode goes on after those ``k`` steps (or
was truncated: Gymnasium's ``truncated`` still bootstraps) and 0 if it
terminated, so the one-step target is ``reward + discount * max_a Q(next_obs, a)``
for every ``n``.
"""

from collections import deque

import numpy as np
import torch

__all__ = ["NStepCollector", "PrioritizedReplayBuffer", "ReplayBuffer", "SumTree"]


class ReplayBuffer:
    """A ring buffer of transitions, sampled uniformly.

    Parameters
    ----------
    capacity : int
        Most transitions kept; the oldest are overwritten.
    n_features : int
        Width of a stored observation.
    action_shape : tuple of int, default=()
        ``()`` stores integer (discrete) actions; otherwise float actions of
        that shape.
    rng : numpy.random.Generator or None, default=None
        Source of the sampled indices.

    Attributes
    ----------
    size : int
        Transitions stored (at most ``capacity``).
    """

    def __init__(self, capacity, n_features, action_shape=(), rng=None):
        if int(capacity) < 1:
            raise ValueError(f"A replay buffer needs capacity >= 1, got {capacity!r}.")
        self.capacity = int(capacity)
        self.observations = np.zeros((self.capacity, n_features), dtype=np.float32)
        self.next_observations = np.zeros((self.capacity, n_features), dtype=np.float32)
        if action_shape == ():
            self.actions = np.zeros(self.capacity, dtype=np.int64)
        else:
            self.actions = np.zeros((self.capacity, *action_shape), dtype=np.float32)
        self.rewards = np.zeros(self.capacity, dtype=np.float32)
        self.discounts = np.zeros(self.capacity, dtype=np.float32)
        self.rng = np.random.default_rng() if rng is None else rng
        self.size = 0
        self._next = 0

    def __len__(self):
        return self.size

    def add(self, observations, actions, rewards, next_observations, discounts):
        """Store a batch of transitions (the rows of each array).

        Returns
        -------
        ndarray of int
            The rows they were written to.
        """
        n = len(rewards)
        start = self._next
        if start + n <= self.capacity:
            # Most adds: contiguous rows, written through slices.
            rows = slice(start, start + n)
        else:
            rows = (start + np.arange(n)) % self.capacity
        self.observations[rows] = observations
        self.actions[rows] = actions
        self.rewards[rows] = rewards
        self.next_observations[rows] = next_observations
        self.discounts[rows] = discounts
        self._next = (start + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        return np.arange(start, start + n) if isinstance(rows, slice) else rows

    def _indices(self, batch_size):
        return self.rng.integers(0, self.size, size=batch_size)

    def sample(self, batch_size, device="cpu"):
        """A batch of transitions as tensors.

        Returns
        -------
        dict of str to torch.Tensor
            ``observations``, ``actions``, ``rewards``, ``next_observations``,
            ``discounts``, ``weights`` (importance weights; ones here) and
            ``indices`` (an ndarray, for :meth:`update_priorities`).
        """
        if self.size == 0:
            raise ValueError("Cannot sample from an empty replay buffer.")
        indices = self._indices(batch_size)
        return self._batch(indices, np.ones(batch_size, dtype=np.float32), device)

    def sample_many(self, n_batches, batch_size, device="cpu"):
        """``n_batches`` uniform batches at once, as tensors with a leading axis.

        The indices are drawn batch by batch, as ``n_batches`` calls of
        :meth:`sample` would draw them, and gathered in one indexing per
        array: a round of updates between environment steps samples a
        buffer that does not change.

        Returns
        -------
        dict of str to torch.Tensor
            As :meth:`sample`, each of shape ``(n_batches, batch_size, ...)``
            (``indices``: an ndarray of that shape).
        """
        if self.size == 0:
            raise ValueError("Cannot sample from an empty replay buffer.")
        indices = np.stack([self._indices(batch_size) for _ in range(n_batches)])
        return self._batch(indices, np.ones(indices.shape, dtype=np.float32), device)

    def _batch(self, indices, weights, device):
        def tensor(array):
            return torch.from_numpy(array).to(device)

        return {
            "observations": tensor(self.observations[indices]),
            "actions": tensor(self.actions[indices]),
            "rewards": tensor(self.rewards[indices]),
            "next_observations": tensor(self.next_observations[indices]),
            "discounts": tensor(self.discounts[indices]),
            "weights": tensor(weights),
            "indices": indices,
        }

    def update_priorities(self, indices, errors):
        """No-op: uniform sampling has no priorities."""


class SumTree:
    """A binary tree whose nodes hold the sums of their leaves' priorities.

    Leaves are ``capacity`` rows (rounded up to a power of two); setting
    leaves and finding the leaves of cumulative sums are vectorized, one
    NumPy operation per tree level.

    Parameters
    ----------
    capacity : int
    """

    def __init__(self, capacity):
        self.capacity = int(capacity)
        self.n_leaves = 1 << max(0, (self.capacity - 1).bit_length())
        self.depth = self.n_leaves.bit_length() - 1
        # Node 1 is the root; node i has children 2i and 2i + 1; leaves
        # start at n_leaves.
        self.nodes = np.zeros(2 * self.n_leaves, dtype=np.float64)

    @property
    def total(self):
        """The sum of every priority."""
        return float(self.nodes[1])

    def leaves(self, indices):
        """The priorities of leaves ``indices``."""
        return self.nodes[self.n_leaves + np.asarray(indices)]

    def set(self, indices, priorities):
        """Set leaves ``indices`` to ``priorities`` and update the sums above them."""
        nodes = self.n_leaves + np.asarray(indices, dtype=np.int64)
        self.nodes[nodes] = priorities
        for _ in range(self.depth):
            nodes = np.unique(nodes // 2)
            self.nodes[nodes] = self.nodes[2 * nodes] + self.nodes[2 * nodes + 1]

    def find(self, values):
        """The leaves where the cumulative sums ``values`` fall.

        Leaf ``i`` is found for values in ``[sum(p[:i]), sum(p[:i + 1]))``,
        so a value drawn uniformly from ``[0, total)`` finds leaf ``i`` with
        probability ``p[i] / total``.
        """
        values = np.array(values, dtype=np.float64)
        nodes = np.ones(len(values), dtype=np.int64)
        for _ in range(self.depth):
            left = 2 * nodes
            left_sum = self.nodes[left]
            go_right = values >= left_sum
            values = np.where(go_right, values - left_sum, values)
            nodes = np.where(go_right, left + 1, left)
        return nodes - self.n_leaves


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al., 2016).

    Transition ``i`` is sampled with probability ``p_i^alpha / sum_k p_k^alpha``,
    where ``p_i`` is its last absolute TD error plus ``epsilon`` (new
    transitions get the largest priority seen, so each is replayed at least
    once soon). Each sample carries the importance weight
    ``(N P(i))^(-beta)``, divided by the batch's largest, which undoes the
    bias of the non-uniform sampling as ``beta`` reaches 1.

    Parameters
    ----------
    capacity, n_features, action_shape, rng
        As :class:`ReplayBuffer`.
    alpha : float, default=0.6
        How much priorities count: 0 is uniform sampling.
    epsilon : float, default=1e-6
        Added to every priority, so none is zero.

    Attributes
    ----------
    beta : float
        The importance-sampling exponent used by :meth:`sample`; the agent
        anneals it to 1.
    """

    def __init__(self, capacity, n_features, action_shape=(), rng=None, *,
                 alpha=0.6, epsilon=1e-6):
        super().__init__(capacity, n_features, action_shape, rng)
        self.alpha = float(alpha)
        self.epsilon = float(epsilon)
        self.beta = 0.4
        self.tree = SumTree(self.capacity)
        self._max_priority = 1.0

    def add(self, observations, actions, rewards, next_observations, discounts):
        rows = super().add(observations, actions, rewards, next_observations, discounts)
        self.tree.set(rows, np.full(len(rows), self._max_priority ** self.alpha))
        return rows

    def _indices(self, batch_size):
        # One uniform draw in each of batch_size equal segments of the total
        # (stratified, as the paper): fewer repeats than independent draws.
        total = self.tree.total
        edges = np.arange(batch_size) * (total / batch_size)
        values = edges + self.rng.random(batch_size) * (total / batch_size)
        indices = self.tree.find(np.minimum(values, np.nextafter(total, 0)))
        # Rounding may land on an empty leaf past ``size``: clamp into the data.
        return np.minimum(indices, self.size - 1)

    def sample(self, batch_size, device="cpu"):
        if self.size == 0:
            raise ValueError("Cannot sample from an empty replay buffer.")
        indices = self._indices(batch_size)
        probabilities = self.tree.leaves(indices) / self.tree.total
        weights = (self.size * probabilities) ** (-self.beta)
        weights = (weights / weights.max()).astype(np.float32)
        return self._batch(indices, weights, device)

    def update_priorities(self, indices, errors):
        """Set the priorities of sampled transitions from their absolute TD errors."""
        priorities = np.abs(np.asarray(errors, dtype=np.float64)) + self.epsilon
        self._max_priority = max(self._max_priority, float(priorities.max()))
        self.tree.set(indices, priorities ** self.alpha)


class NStepCollector:
    """Turns one environment's steps into n-step transitions.

    Parameters
    ----------
    n_step : int
    gamma : float

    Notes
    -----
    After step ``t`` the collector emits the transition that starts at
    ``t - n + 1`` (once ``n`` steps are held). When the episode ends it
    emits every held one, each with the steps left: on termination with
    discount 0 (no bootstrap), on truncation with ``gamma^k`` and the last
    observation, from which the target bootstraps.
    """

    def __init__(self, n_step, gamma):
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self._held = deque()

    def _emit(self, next_observation, terminated):
        observation, action, _ = self._held[0]
        ret, scale = 0.0, 1.0
        for _, _, reward in self._held:
            ret += scale * reward
            scale *= self.gamma
        discount = 0.0 if terminated else scale
        self._held.popleft()
        return observation, action, ret, next_observation, discount

    def step(self, observation, action, reward, next_observation, terminated, truncated):
        """Add one step; returns the list of transitions now complete.

        ``next_observation`` is the observation after the step (for an
        episode that ended, its last observation, not the next episode's
        first).
        """
        self._held.append((observation, action, float(reward)))
        out = []
        if terminated or truncated:
            while self._held:
                out.append(self._emit(next_observation, terminated))
        elif len(self._held) == self.n_step:
            out.append(self._emit(next_observation, False))
        return out
