"""Cooperative PettingZoo environments whose optimal return is known.

Two small ``pettingzoo.ParallelEnv`` tasks for measuring multi-agent
learners against a number that is not itself learned:

- :class:`RepeatedMatrixGame`: every agent picks an action each step and all
  receive the payoff of the joint action; the optimum is the largest payoff
  times the episode length.
- :class:`CooperativeGrid`: agents walk a grid with walls until every
  button is pressed; the optimum comes from a breadth-first search over
  joint positions (:meth:`CooperativeGrid.shortest_steps`).

Both keep to PettingZoo's parallel API (``pettingzoo.test.parallel_api_test``
passes), give every agent the team reward, and define ``state()``, which a
centralized critic reads. They need PettingZoo (the ``rl`` extra).
"""

import itertools
from collections import deque

import numpy as np

__all__ = ["CooperativeGrid", "RepeatedMatrixGame"]


from sklears_neural.rl._env import import_gymnasium, import_pettingzoo

spaces = import_gymnasium().spaces
ParallelEnv = import_pettingzoo("the multi-agent environments").ParallelEnv


def _check_positive_int(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"{owner} needs {name} to be an int >= 1, got {value!r}."
        )
    return int(value)


class _TeamEnvMixin:
    """Bookkeeping both environments share: agent names, spaces, the step
    counter and the dicts every ``step`` returns."""

    def _set_agents(self, n_agents):
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.agents = []
        self._rng = np.random.default_rng()

    def observation_space(self, agent):
        return self._observation_spaces[agent]

    def action_space(self, agent):
        return self._action_spaces[agent]

    def _team_step(self, reward, terminated, truncated, observations):
        agents = self.agents
        rewards = {a: float(reward) for a in agents}
        terminations = {a: bool(terminated) for a in agents}
        truncations = {a: bool(truncated and not terminated) for a in agents}
        infos = {a: {} for a in agents}
        if terminated or truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def _check_actions(self, actions):
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(
                f"{type(self).__name__}.step needs an action for every live agent; "
                f"missing {missing}. Pass a dict with keys {self.agents}."
            )
        chosen = []
        for agent in self.agents:
            action = actions[agent]
            if not self._action_spaces[agent].contains(np.int64(action)):
                raise ValueError(
                    f"Action {action!r} of {agent} is outside its action space "
                    f"{self._action_spaces[agent]}."
                )
            chosen.append(int(action))
        return chosen

    def render(self):
        return None

    def close(self):
        pass


class RepeatedMatrixGame(_TeamEnvMixin, ParallelEnv):
    """A cooperative matrix game played for a fixed number of steps.

    Every step each agent picks a row of its axis of ``payoff``, and all
    agents receive ``payoff[a_0, a_1, ...]``. An agent observes the joint
    action of the previous step (one-hot per agent, zeros on the first step)
    and the fraction of the episode that has passed, so every agent sees the
    same history; ``state()`` is that same vector.

    Parameters
    ----------
    payoff : array-like of shape (n_actions_0, n_actions_1, ...), default=None
        The team payoff of each joint action; its number of dimensions is the
        number of agents (at least 2). ``None`` is the climbing game
        (Claus & Boutilier, 1998), on which learners that follow the
        expected payoff settle below the optimum of 11 (see :meth:`climbing`).
    episode_length : int, default=10
        Steps per episode; the episode ends truncated after the last one.

    Attributes
    ----------
    possible_agents : list of str
        ``["agent_0", "agent_1", ...]``.
    payoff : ndarray of float64

    Notes
    -----
    The optimal return per agent is ``payoff.max() * episode_length``
    (:meth:`optimal_return`).

    Examples
    --------
    >>> from sklears_neural.rl.envs import RepeatedMatrixGame
    >>> env = RepeatedMatrixGame.penalty(k=-10.0, episode_length=5)
    >>> env.optimal_return()
    50.0
    >>> observations, infos = env.reset(seed=0)
    >>> _, rewards, _, _, _ = env.step({"agent_0": 0, "agent_1": 2})
    >>> rewards
    {'agent_0': -10.0, 'agent_1': -10.0}
    """

    metadata = {"name": "repeated_matrix_game_v0", "render_modes": [],
                "is_parallelizable": True}

    def __init__(self, payoff=None, *, episode_length=10):
        if payoff is None:
            payoff = self.CLIMBING
        payoff = np.asarray(payoff, dtype=np.float64)
        if payoff.ndim < 2 or min(payoff.shape) < 1 or not np.all(np.isfinite(payoff)):
            raise ValueError(
                "RepeatedMatrixGame needs payoff to be a finite array with one axis "
                f"per agent (at least 2), got shape {payoff.shape}."
            )
        self.payoff = payoff
        self.episode_length = _check_positive_int(
            episode_length, "episode_length", "RepeatedMatrixGame")
        self.render_mode = None
        self._set_agents(payoff.ndim)
        self._n_features = sum(payoff.shape) + 1
        box = spaces.Box(0.0, 1.0, shape=(self._n_features,), dtype=np.float32)
        self._observation_spaces = {a: box for a in self.possible_agents}
        self._action_spaces = {
            a: spaces.Discrete(n) for a, n in zip(self.possible_agents, payoff.shape)
        }
        self.state_space = box
        self._offsets = np.concatenate([[0], np.cumsum(payoff.shape)[:-1]])
        self._last = None
        self._t = 0

    #: The climbing game: (0, 0) pays 11, but against a partner playing
    #: uniformly action 2 pays best, and from there the learners climb only to
    #: 5, 6 or 7 (every MultiAgentTrainer mode measured 5 or 6 per step).
    CLIMBING = [[11.0, -30.0, 0.0], [-30.0, 7.0, 6.0], [0.0, 0.0, 5.0]]

    @classmethod
    def climbing(cls, *, episode_length=10):
        """The climbing game (Claus & Boutilier, 1998): optimum 11, traps 7, 6, 5."""
        return cls(cls.CLIMBING, episode_length=episode_length)

    @classmethod
    def penalty(cls, k=-10.0, *, episode_length=10):
        """The penalty game: 10 on the diagonal corners, ``k`` off them, 2 in
        the middle; miscoordinating between the two optima costs ``k``."""
        return cls([[10.0, 0.0, k], [0.0, 2.0, 0.0], [k, 0.0, 10.0]],
                   episode_length=episode_length)

    def optimal_return(self):
        """The largest return an agent can get: best payoff times length."""
        return float(self.payoff.max() * self.episode_length)

    def _observation(self):
        vector = np.zeros(self._n_features, dtype=np.float32)
        if self._last is not None:
            vector[self._offsets + np.asarray(self._last)] = 1.0
        vector[-1] = self._t / self.episode_length
        return vector

    def state(self):
        """The global state: the shared observation (last joint action, time)."""
        return self._observation()

    def reset(self, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._last = None
        self._t = 0
        vector = self._observation()
        return ({a: vector.copy() for a in self.agents},
                {a: {} for a in self.agents})

    def step(self, actions):
        if not self.agents:
            raise RuntimeError("The episode is over; call reset() first.")
        chosen = self._check_actions(actions)
        reward = self.payoff[tuple(chosen)]
        self._last = chosen
        self._t += 1
        vector = self._observation()
        observations = {a: vector.copy() for a in self.agents}
        return self._team_step(reward, False, self._t >= self.episode_length,
                               observations)


#: Moves of CooperativeGrid's actions 0-4: stay, up, down, left, right.
MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


class CooperativeGrid(_TeamEnvMixin, ParallelEnv):
    """Agents on a grid must press every button; who presses which matters.

    Each step every agent stays or moves one cell up, down, left or right;
    a move into a wall or off the grid leaves it in place, and agents may
    share a cell. A button (goal cell) is pressed for good when an agent
    stands on it. The episode ends (terminated) on the step that presses the
    last button, or truncated after ``max_steps``. Every agent receives the
    team reward: ``-step_cost`` per step, plus ``goal_reward / n_goals`` for
    each button pressed that step.

    Parameters
    ----------
    layout : sequence of str, default=None
        Rows of the grid: ``.`` free, ``#`` wall, ``G`` a button, a digit
        ``0``-``9`` the start of that agent (digits numbered from 0 up).
        ``None`` is :attr:`DEFAULT_LAYOUT`.
    max_steps : int, default=20
    step_cost : float, default=0.1
    goal_reward : float, default=1.0
        Shared over the buttons: pressing them all earns ``goal_reward``.
    observe_partner : bool or sequence of bool, default=False
        Whether an agent also sees the other agents' cells; one flag per
        agent gives agents observations of different sizes.

    Attributes
    ----------
    possible_agents : list of str
    n_cells : int
        Cells of the grid, walls included.
    n_goals : int

    Notes
    -----
    An agent observes its own cell (one-hot over ``n_cells``), the other
    agents' cells if ``observe_partner`` says so, and which buttons are
    pressed. ``state()`` is every agent's cell, the pressed buttons and the
    elapsed fraction of ``max_steps``.

    In :attr:`DEFAULT_LAYOUT` both agents are nearest to the top-left
    button. If agent 0 takes it (2 steps), the team needs 8 steps; if it
    leaves it to agent 1 and takes the long way to the other (6 steps),
    the team needs 6. The optimal return is ``goal_reward - step_cost * T``
    with ``T`` the fewest joint steps that press every button, found by
    breadth-first search over joint positions and pressed buttons
    (:meth:`shortest_steps`).

    Examples
    --------
    >>> from sklears_neural.rl.envs import CooperativeGrid
    >>> env = CooperativeGrid()
    >>> env.shortest_steps(), round(env.optimal_return(), 2)
    (6, 0.4)
    """

    metadata = {"name": "cooperative_grid_v0", "render_modes": [],
                "is_parallelizable": True}

    DEFAULT_LAYOUT = (
        "G.0.1",
        "#.###",
        "....G",
    )

    def __init__(self, layout=None, *, max_steps=20, step_cost=0.1, goal_reward=1.0,
                 observe_partner=False):
        layout = self.DEFAULT_LAYOUT if layout is None else tuple(layout)
        self.layout = layout
        self.max_steps = _check_positive_int(max_steps, "max_steps", "CooperativeGrid")
        self.step_cost = float(step_cost)
        self.goal_reward = float(goal_reward)
        self.render_mode = None
        self._parse(layout)
        n_agents = len(self._starts)
        if isinstance(observe_partner, (bool, np.bool_)):
            observe_partner = (bool(observe_partner),) * n_agents
        observe_partner = tuple(bool(flag) for flag in observe_partner)
        if len(observe_partner) != n_agents:
            raise ValueError(
                f"CooperativeGrid has {n_agents} agents but observe_partner has "
                f"{len(observe_partner)} flags; pass one bool, or one per agent."
            )
        self.observe_partner = observe_partner
        self._set_agents(n_agents)
        self._observation_spaces = {
            a: spaces.Box(0.0, 1.0, dtype=np.float32, shape=(
                (n_agents if see else 1) * self.n_cells + self.n_goals,))
            for a, see in zip(self.possible_agents, observe_partner)
        }
        self._action_spaces = {
            a: spaces.Discrete(len(MOVES)) for a in self.possible_agents}
        self.state_space = spaces.Box(
            0.0, 1.0, shape=(n_agents * self.n_cells + self.n_goals + 1,),
            dtype=np.float32)
        self._positions = list(self._starts)
        self._pressed = self._press(self._starts, frozenset())
        self._t = 0

    def _parse(self, layout):
        widths = {len(row) for row in layout}
        if not layout or len(widths) != 1 or 0 in widths:
            raise ValueError(
                "CooperativeGrid needs layout to be non-empty rows of equal length, "
                f"got row lengths {sorted(widths)}."
            )
        starts, goals, walls = {}, [], set()
        for r, row in enumerate(layout):
            for c, char in enumerate(row):
                if char == "#":
                    walls.add((r, c))
                elif char == "G":
                    goals.append((r, c))
                elif char.isdigit():
                    if int(char) in starts:
                        raise ValueError(f"Agent {char} starts twice in the layout.")
                    starts[int(char)] = (r, c)
                elif char != ".":
                    raise ValueError(
                        f"CooperativeGrid layout has {char!r} at row {r}, column {c}; "
                        "use '.' (free), '#' (wall), 'G' (button) or an agent digit."
                    )
        if not starts or sorted(starts) != list(range(len(starts))):
            raise ValueError(
                "CooperativeGrid layout must place agents 0, 1, ... without gaps, "
                f"got {sorted(starts)}."
            )
        if not goals:
            raise ValueError("CooperativeGrid layout needs at least one button 'G'.")
        self.shape = (len(layout), len(layout[0]))
        self.n_cells = self.shape[0] * self.shape[1]
        self.n_goals = len(goals)
        self._starts = tuple(starts[i] for i in range(len(starts)))
        self._goals = tuple(goals)
        self._walls = frozenset(walls)
        if self.shortest_steps() is None:
            raise ValueError(
                "CooperativeGrid layout: the agents cannot reach every button.")

    def _move(self, position, action):
        dr, dc = MOVES[action]
        r, c = position[0] + dr, position[1] + dc
        inside = 0 <= r < self.shape[0] and 0 <= c < self.shape[1]
        if inside and (r, c) not in self._walls:
            return (r, c)
        return position

    def _press(self, positions, pressed):
        return pressed | {g for g in self._goals if g in positions}

    def shortest_steps(self):
        """Fewest joint steps that press every button (``None``: impossible).

        Breadth-first search over (joint positions, pressed buttons), each
        joint move being one move per agent.
        """
        start = (tuple(self._starts), self._press(self._starts, frozenset()))
        if len(start[1]) == self.n_goals:
            return 0
        seen = {start}
        frontier = deque([(start, 0)])
        joint_moves = list(
            itertools.product(range(len(MOVES)), repeat=len(self._starts)))
        while frontier:
            (positions, pressed), depth = frontier.popleft()
            for moves in joint_moves:
                moved = tuple(self._move(p, m) for p, m in zip(positions, moves))
                node = (moved, self._press(moved, pressed))
                if node in seen:
                    continue
                if len(node[1]) == self.n_goals:
                    return depth + 1
                seen.add(node)
                frontier.append((node, depth + 1))
        return None

    def optimal_return(self):
        """``goal_reward - step_cost * shortest_steps()``, the best team return
        (when the buttons can be pressed within ``max_steps``)."""
        steps = self.shortest_steps()
        if steps > self.max_steps:
            raise ValueError(
                f"The buttons need {steps} steps, more than "
                f"max_steps={self.max_steps}; "
                "raise max_steps."
            )
        return self.goal_reward - self.step_cost * steps

    def _one_hot(self, position):
        vector = np.zeros(self.n_cells, dtype=np.float32)
        vector[position[0] * self.shape[1] + position[1]] = 1.0
        return vector

    def _pressed_flags(self):
        return np.array([g in self._pressed for g in self._goals], dtype=np.float32)

    def _observations(self):
        cells = [self._one_hot(p) for p in self._positions]
        flags = self._pressed_flags()
        observations = {}
        for agent in self.agents:
            index = self.possible_agents.index(agent)
            shown = [index]
            if self.observe_partner[index]:
                # Own cell first, then the others in agent order.
                shown += [j for j in range(len(cells)) if j != index]
            observations[agent] = np.concatenate([cells[j] for j in shown] + [flags])
        return observations

    def state(self):
        """Every agent's cell (agent order), the pressed buttons, ``t / max_steps``."""
        return np.concatenate(
            [self._one_hot(p) for p in self._positions]
            + [self._pressed_flags(), np.array([self._t / self.max_steps], np.float32)]
        )

    def reset(self, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._positions = list(self._starts)
        self._pressed = self._press(self._starts, frozenset())
        self._t = 0
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions):
        if not self.agents:
            raise RuntimeError("The episode is over; call reset() first.")
        chosen = self._check_actions(actions)
        self._positions = [self._move(p, a) for p, a in zip(self._positions, chosen)]
        before = len(self._pressed)
        self._pressed = self._press(self._positions, self._pressed)
        self._t += 1
        done = len(self._pressed) == self.n_goals
        reward = (-self.step_cost
                  + self.goal_reward * (len(self._pressed) - before) / self.n_goals)
        observations = self._observations()
        return self._team_step(reward, done, self._t >= self.max_steps, observations)
