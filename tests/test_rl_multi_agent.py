"""Multi-agent RL: the environments, MultiAgentTrainer's contract, and what
each mode learns on cooperative tasks whose optimal return is known."""

import pickle
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pettingzoo = pytest.importorskip("pettingzoo")

from gymnasium import spaces  # noqa: E402
from pettingzoo.test import parallel_api_test  # noqa: E402
from pettingzoo.utils.conversions import parallel_to_aec  # noqa: E402
from sklearn.base import clone  # noqa: E402

from sklears_neural.core.persistence import load  # noqa: E402
from sklears_neural.rl import (  # noqa: E402
    CooperativeGrid,
    MultiAgentTrainer,
    NonFiniteRewardError,
    RepeatedMatrixGame,
)
from sklears_neural.rl.multi_agent import MultiAgentActorCritic  # noqa: E402

MODES = ["independent", "shared", "centralized"]


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.module_.state_dict().items()}


# -- environments ---------------------------------------------------------------


@pytest.mark.parametrize("make", [
    RepeatedMatrixGame.climbing,
    lambda: RepeatedMatrixGame.penalty(k=-10.0, episode_length=4),
    lambda: RepeatedMatrixGame(np.arange(24.0).reshape(2, 3, 4), episode_length=3),
    CooperativeGrid,
    lambda: CooperativeGrid(observe_partner=(True, False), max_steps=7),
])
def test_envs_pass_pettingzoo_parallel_api_test(make):
    with warnings.catch_warnings():
        # The API test warns on anything odd; none of its warnings may fire.
        warnings.simplefilter("error")
        parallel_api_test(make(), num_cycles=60)


def test_matrix_game_pays_the_joint_action_to_every_agent():
    payoff = np.arange(24.0).reshape(2, 3, 4)
    env = RepeatedMatrixGame(payoff, episode_length=3)
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert env.optimal_return() == 23.0 * 3
    observations, _ = env.reset(seed=0)
    assert all(np.array_equal(o, np.zeros(10)) for o in observations.values())
    for t in range(3):
        observations, rewards, terminations, truncations, _ = env.step(
            {"agent_0": 1, "agent_1": 2, "agent_2": 3})
        assert rewards == dict.fromkeys(env.possible_agents, payoff[1, 2, 3])
    # One-hot of the last joint action, then the elapsed fraction.
    expected = np.zeros(10, np.float32)
    expected[[1, 2 + 2, 5 + 3, 9]] = [1, 1, 1, 1.0]
    assert np.array_equal(observations["agent_2"], expected)
    assert np.array_equal(env.state(), expected)
    assert truncations == dict.fromkeys(env.possible_agents, True)
    assert not any(terminations.values()) and env.agents == []
    with pytest.raises(ValueError, match="one axis per agent"):
        RepeatedMatrixGame([1.0, 2.0])
    with pytest.raises(ValueError, match="outside its action space"):
        env.reset()
        env.step({"agent_0": 5, "agent_1": 0, "agent_2": 0})


def test_grid_optimum_is_the_breadth_first_search_of_joint_moves():
    env = CooperativeGrid()
    # By hand: agent 0 to the near button takes 2 steps and leaves agent 1
    # 8 to the far one; the other assignment takes max(6, 4) = 6.
    assert env.shortest_steps() == 6
    assert env.optimal_return() == pytest.approx(1.0 - 0.1 * 6)
    observations, _ = env.reset(seed=0)
    total = 0.0
    # agent 0: left, down, down, right, right, right -> bottom-right button;
    # agent 1: left x3, then stays on the top-left button.
    plan0 = [3, 2, 2, 4, 4, 4]
    plan1 = [3, 3, 3, 3, 0, 0]
    for a0, a1 in zip(plan0, plan1):
        observations, rewards, terminations, _, _ = env.step(
            {"agent_0": a0, "agent_1": a1})
        total += rewards["agent_0"]
    assert all(terminations.values()) and env.agents == []
    assert total == pytest.approx(env.optimal_return())
    one_row = CooperativeGrid(["0..G"], max_steps=5)
    assert one_row.shortest_steps() == 3
    with pytest.raises(ValueError, match="at least one button"):
        CooperativeGrid(["0..."])
    with pytest.raises(ValueError, match="'x' at row 0"):
        CooperativeGrid(["0.xG"])
    with pytest.raises(ValueError, match="raise max_steps"):
        CooperativeGrid(["0..G"], max_steps=2).optimal_return()


# -- the trainer's contract -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_fit_and_heterogeneous_observations(mode, global_random_seed):
    # Agent 0 sees both cells and the buttons (32 values), agent 1 its own (17).
    def make():
        return CooperativeGrid(observe_partner=(True, False))

    fits = [MultiAgentTrainer(mode, n_steps=64, batch_size=32,
                              random_state=global_random_seed)
            .fit(make, total_timesteps=150) for _ in range(2)]
    first, second = fits
    assert [r["episode_return"] for r in first.history_] == \
        [r["episode_return"] for r in second.history_]
    for (name, a), b in zip(_weights(first).items(), _weights(second).values()):
        assert torch.equal(a, b), name
    assert first.n_timesteps_ == 150 and first.n_episodes_ == len(first.history_) >= 7
    assert first.observation_specs_ == [("box", 32), ("box", 17)]
    assert sum(r["episode_length"] for r in first.history_) == \
        first.history_[-1]["timesteps"] > 130
    assert set(first.history_[-1]) >= {"episode_return", "episode_length",
                                       "policy_loss", "value_loss", "entropy"}
    other = MultiAgentTrainer(mode, n_steps=64, batch_size=32,
                              random_state=global_random_seed + 1).fit(make, 150)
    assert any(not torch.equal(a, b) for a, b in
               zip(_weights(first).values(), _weights(other).values()))
    env = make()
    observations, _ = env.reset(seed=0)
    actions = first.predict(observations)
    assert set(actions) == {"agent_0", "agent_1"}
    assert all(0 <= a < 5 for a in actions.values())
    assert first.predict({"agent_1": observations["agent_1"]}).keys() == {"agent_1"}


def test_modes_hold_the_networks_they_say():
    env = CooperativeGrid(observe_partner=(True, False))
    sizes = {}
    for mode in MODES:
        trainer = MultiAgentTrainer(mode, hidden_layer_sizes=(8,), n_steps=8,
                                    random_state=0).fit(env, total_timesteps=8)
        module = trainer.module_
        assert isinstance(module, MultiAgentActorCritic)
        sizes[mode] = (module.actor.weights[0].shape, module.critic.weights[0].shape)
    # (heads, inputs, hidden): observations padded to 32; shared adds the id.
    assert sizes["independent"] == ((2, 32, 8), (2, 32, 8))
    assert sizes["shared"] == ((1, 34, 8), (1, 34, 8))
    # The centralized critic reads env.state(): 2 cells x 15 + 2 buttons + time.
    assert sizes["centralized"] == ((2, 32, 8), (1, 33, 8))


def test_estimator_contract_pickle_and_save_load(tmp_path):
    env = RepeatedMatrixGame.penalty(episode_length=5)
    trainer = MultiAgentTrainer("shared", n_steps=32, random_state=0)
    assert clone(trainer).get_params() == trainer.get_params()
    # Every parameter is validated, and nothing else (scikit-learn's
    # check_param_validation asks the same).
    assert set(MultiAgentTrainer._parameter_constraints) == set(trainer.get_params())
    assert trainer.set_params(mode="independent").mode == "independent"
    trainer.fit(env, total_timesteps=64)
    observations, _ = env.reset(seed=0)
    expected = trainer.predict(observations)
    score = trainer.score(env, n_episodes=3)
    restored = pickle.loads(pickle.dumps(trainer))
    assert restored.predict(observations) == expected
    assert restored.score(env, n_episodes=3) == score
    trainer.save(tmp_path / "trainer")
    loaded = load(tmp_path / "trainer")
    assert loaded.predict(observations) == expected
    assert loaded.get_params() == trainer.get_params()
    for a, b in zip(_weights(trainer).values(), _weights(loaded).values()):
        assert torch.equal(a, b)
    assert not hasattr(clone(trainer), "module_")


def test_bad_environments_name_the_fix():
    trainer = MultiAgentTrainer(n_steps=8, random_state=0)
    with pytest.raises(TypeError, match=r"AEC.*aec_to_parallel"):
        trainer.fit(parallel_to_aec(RepeatedMatrixGame()), total_timesteps=8)

    class ContinuousGame(RepeatedMatrixGame):
        def action_space(self, agent):
            return spaces.Box(-1.0, 1.0, shape=(1,))

    with pytest.raises(TypeError, match=r"Discrete action spaces only.*agent_0.*Box"):
        trainer.fit(ContinuousGame(), total_timesteps=8)
    import gymnasium

    with pytest.raises(TypeError, match="no possible_agents.*single-agent"):
        trainer.fit(lambda: gymnasium.make("CartPole-v1"), total_timesteps=8)
    with pytest.raises(TypeError, match="ParallelEnv or a callable"):
        trainer.fit(3, total_timesteps=8)
    with pytest.raises(ValueError, match="total_timesteps must be an int >= 1"):
        trainer.fit(RepeatedMatrixGame(), total_timesteps=0)
    with pytest.raises(ValueError, match="mode"):
        MultiAgentTrainer("joint").fit(RepeatedMatrixGame(), total_timesteps=8)
    assert not hasattr(trainer, "module_")
    trainer.fit(RepeatedMatrixGame(), total_timesteps=8)
    with pytest.raises(ValueError, match=r"unknown agents \['agent_7'\]"):
        trainer.predict({"agent_7": np.zeros(7)})
    with pytest.raises(TypeError, match="expects a dict"):
        trainer.predict(np.zeros(7))


def test_non_finite_reward_stops_with_the_weights_of_the_last_update():
    class BrokenGame(RepeatedMatrixGame):
        def step(self, actions):
            out = super().step(actions)
            if self._t == 3 and self.calls > 40:
                out[1]["agent_0"] = float("nan")
            return out

        def reset(self, seed=None, options=None):
            self.calls = getattr(self, "calls", 0) + 1
            return super().reset(seed=seed, options=options)

    trainer = MultiAgentTrainer(n_steps=50, random_state=0)
    with pytest.raises(NonFiniteRewardError, match="timestep 403"):
        trainer.fit(BrokenGame(), total_timesteps=1000)
    # 8 rollouts of 50 were learned from before the bad step, and the trainer
    # holds exactly those weights: a clean fit of 400 steps has the same.
    assert trainer.n_timesteps_ == 402
    clean = MultiAgentTrainer(n_steps=50, random_state=0).fit(RepeatedMatrixGame(), 400)
    for a, b in zip(_weights(trainer).values(), _weights(clean).values()):
        assert torch.equal(a, b)
    assert isinstance(trainer.predict(BrokenGame().reset()[0]), dict)


def test_the_agents_training_loop_interrupts_diverges_and_calls_back(capsys):
    """MultiAgentTrainer trains through BaseAgent's loop, with all it does."""
    from sklears_neural.callbacks import Callback
    from sklears_neural.exceptions import TrainingDivergedError

    class Interrupt(Callback):
        def on_epoch_end(self, trainer, **kwargs):
            if len(trainer.history) == 3:
                raise KeyboardInterrupt

    trainer = MultiAgentTrainer(n_steps=20, callbacks=[Interrupt()], verbose=1,
                                random_state=0)
    with pytest.warns(UserWarning, match="interrupted"):
        trainer.fit(RepeatedMatrixGame(), total_timesteps=2000)
    assert trainer.n_episodes_ == 3 and trainer.n_timesteps_ < 2000
    assert capsys.readouterr().out.count("episode_return:") == 3

    # Payoffs of 1e30 square to infinity in float32 in the value loss.
    huge = RepeatedMatrixGame(np.full((2, 2), 1e30), episode_length=5)
    trainer = MultiAgentTrainer(n_steps=20, clip_grad_norm=None, random_state=0)
    with pytest.raises(TrainingDivergedError, match="MultiAgentTrainer: the training"):
        trainer.fit(huge, total_timesteps=2000)
    assert all(torch.isfinite(v).all() for v in trainer.module_.state_dict().values())


# -- what the modes learn -------------------------------------------------------
#
# Measured with seeds 0-4 (doc/rl_multi_agent.md has the table): at 10,000
# joint steps the centralized critic reached the optimum on 4 of 5 seeds of
# both tasks, independent learners on 5 of 5: on these tasks independent
# learners do not fall short. The default suite runs one seed of the
# centralized critic; the sweep is marked slow.

TASKS = {
    # name: (factory, timesteps of the default test)
    "penalty": (lambda: RepeatedMatrixGame.penalty(k=-10.0), 3000),
    "grid": (CooperativeGrid, 10_000),
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_centralized_critic_reaches_the_known_optimum(task):
    make, timesteps = TASKS[task]
    trainer = MultiAgentTrainer("centralized", random_state=0).fit(make, timesteps)
    # Deterministic tasks and greedy actions: the optimum exactly (to rounding).
    assert trainer.score(make, n_episodes=3) == pytest.approx(make().optimal_return(),
                                                              abs=1e-9)
    # Far from what the untrained policies scored in their first episodes.
    first = np.mean([r["episode_return"] for r in trainer.history_[:10]])
    assert first < make().optimal_return() - 0.5


def _sweep(make, timesteps, mode, seeds):
    optimum = make().optimal_return()
    return [MultiAgentTrainer(mode, random_state=seed).fit(make, timesteps)
            .score(make, n_episodes=1) >= optimum - 1e-9 for seed in seeds]


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_mode_reaches_the_optimum_on_most_seeds(task):
    make = TASKS[task][0]
    reached = {mode: sum(_sweep(make, 10_000, mode, range(5))) for mode in MODES}
    assert reached["centralized"] >= 4
    # Independent learners match it here (measured 5 of 5 on both tasks).
    assert reached["independent"] >= 4
    assert reached["shared"] >= 4
