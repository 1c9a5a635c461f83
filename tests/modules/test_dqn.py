"""DQN: the TD target it implements, its checks on the datamodule, resuming, DDP, and that it learns CartPole."""

from pathlib import Path

import pytest
import torch
from torch import nn

import cli
from datamodules.experience import ExperienceDataModule
from modules.dqn import DQN
from modules.errors import ConfigError
from tests.cli_runs import assert_resumed_run_matches_straight_run
from tests.ddp_replicas import fit_replicas

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "dqn_cartpole.yaml")


class FixedQ(nn.Module):
    """Returns the same action values for every observation."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = torch.tensor([values])

    def forward(self, obs):
        return self.values.expand(obs.shape[0], -1)


def test_td_target_discounts_by_gamma_to_the_number_of_steps_taken():
    dqn = DQN(gamma=0.5, observation_shape=(1,), num_actions=2)
    dqn.target_network = FixedQ([1.0, 3.0])
    rewards = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    bootstrap_steps = torch.tensor([3, 2, 1])
    terminated = torch.tensor([False, False, True])
    target = dqn.td_target(rewards, torch.zeros(3, 1), terminated, bootstrap_steps)
    # 1 + .5 + .25 + .5^3 * 3;  1 + .5 + .5^2 * 3;  2 (terminal: no bootstrap)
    assert target.tolist() == pytest.approx([1.75 + 0.375, 1.5 + 0.75, 2.0])


def test_double_q_evaluates_the_online_argmax_with_the_target_network():
    dqn = DQN(gamma=1.0, double_q=True, observation_shape=(1,), num_actions=2)
    dqn.target_network, dqn.q_network = FixedQ([1.0, 3.0]), FixedQ([5.0, 0.0])
    target = dqn.td_target(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([False]), torch.tensor([1]))
    assert target.item() == 1.0  # plain DQN would bootstrap from max = 3


def test_dueling_network_outputs_one_value_per_action():
    dqn = DQN(dueling=True, hidden_sizes=(32, 16), observation_shape=(4,), num_actions=3)
    assert dqn(torch.zeros(5, 4)).shape == (5, 3)


def test_datamodule_with_continuous_actions_is_rejected_naming_the_env():
    with pytest.raises(ConfigError, match="Pendulum-v1"):
        DQN().check_datamodule(ExperienceDataModule(env_id="Pendulum-v1", train_freq=4, steps_per_epoch=8))


def test_datamodule_that_is_not_experience_is_rejected():
    class Images:
        pass

    with pytest.raises(ConfigError, match="ExperienceDataModule"):
        DQN().check_datamodule(Images())


def test_cli_reports_bad_value_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", "--config", CONFIG, "--model.init_args.gamma", "1.5"])
    assert exit_info.value.code == 2 and "gamma" in capsys.readouterr().err


def small_run(tmp_path: Path, *extra: str) -> list[str]:
    """Arguments (after ``fit``) of a small deterministic one-epoch run writing below ``tmp_path / "runs"``; replay learns from the first cycle."""
    return [
        "--config", CONFIG,
        "--trainer.max_epochs", "1",
        "--trainer.deterministic", "true",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--model.init_args.hidden_sizes", "[32, 32]",
        "--data.init_args.num_envs", "2",
        "--data.init_args.train_freq", "16",
        "--data.init_args.gradient_steps", "4",
        "--data.init_args.batch_size", "16",
        "--data.init_args.learning_starts", "16",
        "--data.init_args.steps_per_epoch", "160",
        "--data.init_args.eval_episodes", "2",
        "--data.init_args.n_step", "3",
        "--data.init_args.prioritized", "true",
        *extra,
    ]  # fmt: skip


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    straight, resumed = assert_resumed_run_matches_straight_run(small_run(tmp_path))
    data_straight, data_resumed = straight.datamodule.state_dict(), resumed.datamodule.state_dict()
    for key, value in data_straight["buffer"]["storage"].items():
        assert torch.equal(value, data_resumed["buffer"]["storage"][key]), key
    assert torch.equal(data_straight["buffer"]["tree"], data_resumed["buffer"]["tree"])
    assert torch.equal(data_straight["collector"]["episodes"], data_resumed["collector"]["episodes"])
    assert data_straight["collector"]["env_steps"] == data_resumed["collector"]["env_steps"] == 2 * 160


def test_checkpoint_loads_without_an_environment(tmp_path):
    cli.main(["fit", *small_run(tmp_path)])
    dqn = DQN.load_from_checkpoint(next((tmp_path / "runs").rglob("last.ckpt")))
    assert dqn(torch.zeros(3, 4)).shape == (3, 2)


def test_ddp_on_two_cpu_processes_keeps_replicas_identical(tmp_path):
    """Each rank collects its own experience; after gradient steps the replicas are still identical (``fit_replicas`` checks)."""
    fit_replicas(small_run(tmp_path), tmp_path)


def test_learns_cartpole_beyond_a_random_policy(tmp_path):
    """A random policy averages ~22; a short run of the README config must do far better greedily."""
    run = cli.main(
        [
            "fit", "--config", CONFIG,
            "--trainer.max_epochs", "3",
            "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--data.init_args.eval_episodes", "10",
        ]
    )  # fmt: skip
    metrics = run.trainer.callback_metrics
    assert metrics["val/return"] > 100
    assert metrics["val/return_std"] >= 0 and metrics["train/env_steps_per_second"] > 0


def test_predict_records_a_greedy_episode_as_a_gif(tmp_path, capsys):
    from PIL import Image, ImageSequence

    cli.main([
        "predict", "--config", CONFIG,
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--model.init_args.hidden_sizes", "[8]",
        "--data.init_args.predict_episodes", "2",
        "--data.init_args.record_max_frames", "6",
    ])  # fmt: skip
    gifs = sorted(tmp_path.glob("dqn_cartpole/version_*/episodes/episode_*_return_*.gif"))
    assert [g.name.split("_return_")[0] for g in gifs] == ["episode_0", "episode_1"]
    printed = capsys.readouterr().out
    for gif in gifs:
        with Image.open(gif) as image:
            # even a constant push keeps CartPole up for more than 5 steps: 6 frames kept, halved from
            # 600x400, at 25 fps (PIL merges identical consecutive frames, adding up their durations)
            durations = [image.info["duration"] for _ in ImageSequence.Iterator(image)]
            assert sum(durations) == 6 * 40 and image.size == (300, 200)
        assert str(gif) in printed
