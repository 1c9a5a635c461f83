"""Replay (n-step, circular, prioritised), epsilon-greedy collection and the experience datamodule."""

import numpy as np
import pytest
import torch
from torch import nn

from datamodules.environments import make_vector_env
from datamodules.experience import EpsilonGreedyCollector, ExperienceDataModule, LinearSchedule, evaluate_greedy
from datamodules.replay import PrioritizedReplayBuffer, ReplayBuffer, SumTree
from modules.errors import ConfigError


def fill(buffer: ReplayBuffer, rewards, terminated, truncated) -> None:
    """One env; observation t is [t], next observation [t + 0.5] so the test can tell them apart."""
    for t, (r, term, trunc) in enumerate(zip(rewards, terminated, truncated)):
        buffer.add(np.array([[t]]), np.array([t % 2]), np.array([r]), np.array([[t + 0.5]]), np.array([term]), np.array([trunc]))


def test_n_step_transition_stops_at_termination_and_takes_done_from_its_last_step():
    buffer = ReplayBuffer(capacity=10, num_envs=1, observation_shape=(1,), n_step=3)
    #            t:  0    1    2     3    4    5
    fill(buffer, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0], [False, True, False, False, False, False], [False] * 6)
    batch = buffer.gather(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]))
    # from t=0 the episode ends at t=1: two rewards, bootstrap from next_obs_1, terminated
    assert batch["rewards"][0].tolist() == [1.0, 2.0, 0.0]
    assert batch["bootstrap_steps"][0] == 2 and batch["terminated"][0] and batch["next_obs"][0].item() == 1.5
    # from t=1 the transition is itself terminal
    assert batch["rewards"][1].tolist() == [2.0, 0.0, 0.0] and batch["bootstrap_steps"][1] == 1 and batch["terminated"][1]
    # from t=2 a full 3-step look-ahead, not terminal, bootstrapping from next_obs_4
    assert batch["rewards"][2].tolist() == [4.0, 8.0, 16.0]
    assert batch["bootstrap_steps"][2] == 3 and not batch["terminated"][2] and batch["next_obs"][2].item() == 4.5


def test_truncation_cuts_the_n_step_sum_but_still_bootstraps():
    buffer = ReplayBuffer(capacity=10, num_envs=1, observation_shape=(1,), n_step=3)
    fill(buffer, [1.0, 1.0, 1.0, 1.0], [False] * 4, [False, True, False, False])
    batch = buffer.gather(torch.tensor([0]), torch.tensor([0]))
    assert batch["rewards"][0].tolist() == [1.0, 1.0, 0.0]
    assert batch["bootstrap_steps"][0] == 2 and not batch["terminated"][0] and batch["next_obs"][0].item() == 1.5


def test_sampling_skips_slots_without_a_complete_look_ahead_and_wraps_around():
    buffer = ReplayBuffer(capacity=8, num_envs=1, observation_shape=(1,), n_step=3, seed=0)
    fill(buffer, [0.0] * 13, [False] * 13, [False] * 13)  # slots hold t = 5..12 after wrapping
    assert len(buffer) == 8
    obs = buffer.sample(4000)["obs"].squeeze(1)
    # t = 11, 12 lack two following steps; everything older than 5 was overwritten
    assert set(obs.long().tolist()) == set(range(5, 11))


def test_sampled_index_points_at_the_stored_transition():
    buffer = ReplayBuffer(capacity=12, num_envs=3, observation_shape=(1,), seed=1)
    for t in range(4):
        buffer.add(np.array([[10 * t + e] for e in range(3)]), np.zeros(3), np.zeros(3), np.zeros((3, 1)), np.zeros(3, bool), np.zeros(3, bool))
    batch = buffer.sample(64)
    slot, env = batch["index"] // 3, batch["index"] % 3
    assert torch.equal(batch["obs"].squeeze(1), (10 * slot + env).float())


def test_sum_tree_finds_the_leaf_holding_each_prefix_sum():
    tree = SumTree(5)
    tree.update(torch.arange(5), torch.tensor([1.0, 0.0, 3.0, 2.0, 4.0]))
    assert tree.total == pytest.approx(10.0)
    found = tree.find(torch.tensor([0.0, 0.99, 1.0, 3.9, 4.0, 5.99, 6.0, 9.99]))
    assert found.tolist() == [0, 0, 2, 2, 3, 3, 4, 4]
    tree.update(torch.tensor([4]), torch.tensor([0.0]))
    assert tree.total == pytest.approx(6.0)


def test_prioritized_sampling_follows_priorities_and_weights_undo_the_bias():
    buffer = PrioritizedReplayBuffer(capacity=4, num_envs=1, observation_shape=(1,), alpha=1.0, eps=0.0, seed=0)
    fill(buffer, [0.0] * 4, [False] * 4, [False] * 4)
    buffer.update_priorities(torch.arange(4), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    buffer.beta = 1.0
    batch = buffer.sample(20_000)
    frequency = torch.bincount(batch["index"], minlength=4).float() / 20_000
    assert torch.allclose(frequency, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.01)
    # beta = 1: w_i proportional to 1 / P(i), normalised by the largest
    weight_by_index = {int(i): float(w) for i, w in zip(batch["index"], batch["weights"])}
    assert [weight_by_index[i] for i in range(4)] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])


def test_new_transitions_get_the_largest_priority_seen():
    buffer = PrioritizedReplayBuffer(capacity=8, num_envs=1, observation_shape=(1,), alpha=1.0, eps=0.0)
    fill(buffer, [0.0] * 2, [False] * 2, [False] * 2)
    buffer.update_priorities(torch.tensor([0, 1]), torch.tensor([5.0, 0.5]))
    fill(buffer, [0.0], [False], [False])
    assert buffer.tree[torch.tensor([2])].item() == pytest.approx(5.0)


def test_epsilon_decays_linearly_then_stays():
    schedule = LinearSchedule(1.0, 0.04, 8000)
    assert [schedule(s) for s in (0, 4000, 8000, 50_000)] == pytest.approx([1.0, 0.52, 0.04, 0.04])


def test_collector_keeps_the_final_observation_of_finished_episodes():
    envs = make_vector_env("CartPole-v1", num_envs=2)
    buffer = ReplayBuffer(capacity=400, num_envs=2, observation_shape=(4,))
    collector = EpsilonGreedyCollector(envs, buffer, LinearSchedule(1.0, 1.0, 1), seed=0)
    collector.collect(nn.Linear(4, 2), vector_steps=150)
    s = buffer.storage
    continuing = ~s["episode_end"][:149]
    # within an episode next_obs_t is obs_{t+1}; at an episode end it is the true last state, not the reset state
    assert torch.equal(s["next_obs"][:149][continuing], s["obs"][1:150][continuing])
    ended = s["episode_end"][:149]
    assert ended.any() and not torch.isclose(s["next_obs"][:149][ended], s["obs"][1:150][ended]).all(dim=-1).any()
    assert len(collector.episodes) == int(s["episode_end"][:150].sum())
    assert sum(length for _, _, length in collector.episodes) <= 300


def test_evaluation_runs_exactly_the_requested_greedy_episodes():
    envs = make_vector_env("CartPole-v1", num_envs=4)
    torch.manual_seed(0)
    policy = nn.Linear(4, 2)
    result = evaluate_greedy(policy, envs, episodes=6, seed=0)
    assert result["episode_return"].shape == (6,) and (result["episode_return"] == result["episode_length"]).all()
    # same seed, same policy: the same episodes
    assert torch.equal(evaluate_greedy(policy, envs, episodes=6, seed=0)["episode_return"], result["episode_return"])


def test_datamodule_state_restores_envs_buffer_and_exploration_exactly():
    def make():
        dm = ExperienceDataModule(num_envs=2, buffer_size=1000, learning_starts=100, train_freq=16, gradient_steps=2, batch_size=8, steps_per_epoch=64, seed=3)
        dm.setup("fit")
        return dm

    q_network = nn.Linear(4, 2)
    first = make()
    first.next_cycle(q_network)
    state = first.state_dict()
    second = make()
    second.load_state_dict(state)
    a, b = first.next_cycle(q_network), second.next_cycle(q_network)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(first.buffer.storage["obs"], second.buffer.storage["obs"]) and first.episodes == second.episodes


@pytest.mark.parametrize(
    "kwargs, option",
    [({"steps_per_epoch": 1000, "train_freq": 256}, "steps_per_epoch"), ({"n_step": 0}, "n_step"), ({"learning_starts": 200_000}, "learning_starts")],
)
def test_invalid_options_are_named_in_the_error(kwargs, option):
    with pytest.raises(ConfigError, match=option):
        ExperienceDataModule(**kwargs)


def test_unknown_env_id_is_a_config_error():
    with pytest.raises(ConfigError, match="env_id"):
        ExperienceDataModule(env_id="NoSuchEnv-v0").action_space
