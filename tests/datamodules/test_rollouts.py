"""Rollouts for policy-gradient learners: reward-to-go and GAE by hand, collection, checkpointed env state."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from datamodules.environments import make_vector_env
from datamodules.rollouts import (
    RolloutCollector, RolloutDataModule, env_action, generalized_advantage_estimation, reward_to_go,
)
from modules.errors import ConfigError
from modules.policy_networks import CategoricalPolicy, GaussianPolicy

# one env, five steps: an episode truncated at t=1 (time limit), then one terminated at t=3, then a step
# of a third episode that the rollout cuts off
REWARDS = torch.tensor([[1.0], [2.0], [4.0], [8.0], [16.0]])
TERMINATED = torch.tensor([[False], [False], [False], [True], [False]])
TRUNCATED = torch.tensor([[False], [True], [False], [False], [False]])
VALUE = torch.tensor([[0.5], [1.0], [2.0], [3.0], [4.0]])
NEXT_VALUE = torch.tensor([[1.0], [10.0], [3.0], [99.0], [5.0]])  # V(s_{t+1}); 10 = V(final obs of the truncated episode)


def test_reward_to_go_bootstraps_truncation_but_not_termination():
    gamma = 0.5
    returns = reward_to_go(REWARDS, TERMINATED, TRUNCATED, gamma, NEXT_VALUE)
    # t=1: 2 + .5 * V(final obs) = 7;  t=0: 1 + .5 * 7 = 4.5
    # t=3: terminal, 8;  t=2: 4 + .5 * 8 = 8
    # t=4: the rollout stops mid-episode: 16 + .5 * V(s_5) = 18.5
    assert returns.squeeze(1).tolist() == pytest.approx([4.5, 7.0, 8.0, 8.0, 18.5])


def test_reward_to_go_without_a_value_stops_at_every_episode_end():
    returns = reward_to_go(REWARDS, TERMINATED, TRUNCATED, 0.5)
    assert returns.squeeze(1).tolist() == pytest.approx([2.0, 2.0, 8.0, 8.0, 16.0])


def test_gae_matches_hand_computed_values_across_a_truncation():
    gamma, lam = 0.5, 0.5
    advantage = generalized_advantage_estimation(REWARDS, VALUE, NEXT_VALUE, TERMINATED, TRUNCATED, gamma, lam)
    # delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t)
    delta = [1 + 0.5 * 1.0 - 0.5, 2 + 0.5 * 10.0 - 1.0, 4 + 0.5 * 3.0 - 2.0, 8 - 3.0, 16 + 0.5 * 5.0 - 4.0]  # [1, 6, 3.5, 5, 14.5]
    # A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}; done at t=1 (truncated) and t=3 (terminated)
    expected = [delta[0] + 0.25 * delta[1], delta[1], delta[2] + 0.25 * delta[3], delta[3], delta[4]]
    assert advantage.squeeze(1).tolist() == pytest.approx(expected)


def test_gae_with_lambda_one_is_reward_to_go_minus_value_and_lambda_zero_is_the_td_error():
    torch.manual_seed(0)
    rewards, value, final_value = torch.randn(3, 7, 4).unbind(0)
    terminated, truncated = torch.rand(2, 7, 4).lt(0.2).unbind(0)
    truncated &= ~terminated
    # a critic's values of consecutive states agree: V(s_{t+1}) is the next row's V(s_t) inside an episode
    next_value = torch.cat((value[1:], final_value[-1:]))
    next_value = torch.where(terminated | truncated, final_value, next_value)
    args = (rewards, value, next_value, terminated, truncated)
    lam_one = generalized_advantage_estimation(*args, gamma=0.9, gae_lambda=1.0)
    assert torch.allclose(lam_one, reward_to_go(rewards, terminated, truncated, 0.9, next_value) - value, atol=1e-5)
    lam_zero = generalized_advantage_estimation(*args, gamma=0.9, gae_lambda=0.0)
    assert torch.allclose(lam_zero, rewards + 0.9 * ~terminated * next_value - value)


def test_n_step_rollout_keeps_final_observation_and_continues_episodes():
    envs = make_vector_env("CartPole-v1", num_envs=3)
    collector = RolloutCollector(envs, seed=0)
    policy = CategoricalPolicy(4, 2)
    first = collector.collect(policy, "n_steps", n_steps=40)
    second = collector.collect(policy, "n_steps", n_steps=40)
    assert first["obs"].shape == (40, 3, 4) and first["action"].shape == (40, 3) and first["mask"].all()
    done = first["terminated"] | first["truncated"]
    # within an episode next_obs_t is obs_{t+1}; where one ended it is the true last state, not the reset state
    assert torch.equal(first["next_obs"][:-1][~done[:-1]], first["obs"][1:][~done[:-1]])
    assert done.any() and not torch.isclose(first["next_obs"][:-1][done[:-1]], first["obs"][1:][done[:-1]]).all(-1).any()
    # the next rollout goes on from where the last one stopped
    running = ~done[-1]
    assert torch.equal(second["obs"][0][running], first["next_obs"][-1][running])
    assert int(second["env_steps"]) == 240 == sum(n for _, _, n in collector.episodes) + int(collector.running_length.sum())


def test_episode_rollout_plays_one_whole_episode_per_env_and_counts_only_those_steps():
    envs = make_vector_env("CartPole-v1", num_envs=4)
    collector = RolloutCollector(envs, seed=1)
    policy = CategoricalPolicy(4, 2)
    for _ in range(2):
        rollout = collector.collect(policy, "episodes", n_steps=5)
        mask, done = rollout["mask"], rollout["terminated"] | rollout["truncated"]
        lengths = mask.sum(0)
        # each env's episode ends exactly at its last unmasked step
        assert all(done[lengths[e] - 1, e] and not done[: lengths[e] - 1, e].any() for e in range(4))
        assert sorted(rollout["episode_length"].tolist()) == sorted(lengths.float().tolist())
        assert torch.equal(rollout["episode_return"].sort().values, (rollout["reward"] * mask).sum(0).sort().values)
    assert collector.env_steps == sum(n for _, _, n in collector.episodes) and len(collector.episodes) == 8


def test_gaussian_actions_are_clipped_for_the_env_but_kept_raw_for_the_log_prob():
    envs = make_vector_env("Pendulum-v1", num_envs=2)
    collector = RolloutCollector(envs, seed=0)
    policy = GaussianPolicy(3, 1, log_std_init=2.0)  # std 7.4: most samples lie outside [-2, 2]
    rollout = collector.collect(policy, "n_steps", n_steps=20)
    assert rollout["action"].shape == (20, 2, 1) and rollout["action"].abs().max() > 2.0
    assert np.abs(env_action(rollout["action"][0], envs.single_action_space)).max() <= 2.0
    assert np.array_equal(env_action(torch.tensor([[1, 0]]), gym.spaces.Discrete(2)), [[1, 0]])  # discrete: untouched


def test_datamodule_state_restores_envs_and_counters_exactly():
    def make():
        dm = RolloutDataModule(num_envs=2, n_steps=8, seed=3)
        dm.setup("fit")
        return dm

    policy = CategoricalPolicy(4, 2)
    first = make()
    first.collector.collect(policy, "n_steps", 8)
    second = make()
    second.load_state_dict(first.state_dict())
    torch.manual_seed(0)
    a = first.collector.collect(policy, "n_steps", 30)
    torch.manual_seed(0)
    b = second.collector.collect(policy, "n_steps", 30)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert first.episodes == second.episodes


@pytest.mark.parametrize("kwargs, option", [({"n_steps": 0}, "n_steps"), ({"rollout": "full"}, "rollout"), ({"num_envs": 0}, "num_envs")])
def test_invalid_options_are_named_in_the_error(kwargs, option):
    with pytest.raises(ConfigError, match=option):
        RolloutDataModule(**kwargs)
