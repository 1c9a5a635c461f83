"""DQN: the TD target it implements, its checks on the datamodule, resuming, DDP, and that it learns CartPole."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import cli
from datamodules.experience import ExperienceDataModule
from modules.dqn import DQN
from modules.errors import ConfigError

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


def small_run(tmp_path: Path, name: str, epochs: int, *extra: str) -> list[str]:
    return [
        "fit", "--config", CONFIG,
        "--trainer.max_epochs", str(epochs),
        "--trainer.deterministic", "true",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.logger.init_args.name", name,
        "--model.init_args.hidden_sizes", "[32, 32]",
        "--data.init_args.num_envs", "2",
        "--data.init_args.train_freq", "16",
        "--data.init_args.gradient_steps", "4",
        "--data.init_args.batch_size", "16",
        "--data.init_args.learning_starts", "100",
        "--data.init_args.steps_per_epoch", "160",
        "--data.init_args.eval_episodes", "2",
        "--data.init_args.n_step", "3",
        "--data.init_args.prioritized", "true",
        *extra,
    ]  # fmt: skip


def last_checkpoint(tmp_path: Path, name: str) -> dict:
    paths = sorted((tmp_path / name).glob("version_*/checkpoints/last.ckpt"))
    return torch.load(paths[-1], weights_only=False)


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    cli.main(small_run(tmp_path, "straight", 4))
    cli.main(small_run(tmp_path, "resumed", 2))
    first_half = sorted((tmp_path / "resumed").glob("version_*/checkpoints/last.ckpt"))[-1]
    cli.main(small_run(tmp_path, "resumed", 4, "--ckpt_path", str(first_half)))

    straight, resumed = last_checkpoint(tmp_path, "straight"), last_checkpoint(tmp_path, "resumed")
    assert straight["global_step"] == resumed["global_step"] > 0
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    data_straight, data_resumed = straight["ExperienceDataModule"], resumed["ExperienceDataModule"]
    for key, value in data_straight["buffer"]["storage"].items():
        assert torch.equal(value, data_resumed["buffer"]["storage"][key]), key
    assert torch.equal(data_straight["buffer"]["tree"], data_resumed["buffer"]["tree"])
    assert torch.equal(data_straight["collector"]["episodes"], data_resumed["collector"]["episodes"])
    assert data_straight["collector"]["env_steps"] == data_resumed["collector"]["env_steps"] == 4 * 160


def test_checkpoint_loads_without_an_environment(tmp_path):
    cli.main(small_run(tmp_path, "load", 1))
    path = sorted((tmp_path / "load").glob("version_*/checkpoints/last.ckpt"))[-1]
    dqn = DQN.load_from_checkpoint(path)
    assert dqn(torch.zeros(3, 4)).shape == (3, 2)


RANK_WEIGHTS_CALLBACK = """
import torch
from lightning.pytorch import Callback

class SaveRankWeights(Callback):
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.q_network.state_dict(), f"{self.directory}/rank{trainer.global_rank}.pt")
"""


def test_ddp_on_two_cpu_processes_keeps_replicas_identical(tmp_path):
    (tmp_path / "rank_weights.py").write_text(textwrap.dedent(RANK_WEIGHTS_CALLBACK))
    args = small_run(tmp_path, "ddp", 2, "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    args += ["--trainer.callbacks+=rank_weights.SaveRankWeights", f"--trainer.callbacks.directory={tmp_path}"]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    # each rank collects its own experience (different env seeds): only synchronised gradients keep them equal
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert any(not torch.equal(rank0[k], DQN(observation_shape=(4,), num_actions=2, hidden_sizes=(32, 32)).q_network.state_dict()[k]) for k in rank0)
    assert sorted((tmp_path / "ddp").glob("version_*/checkpoints/last.ckpt"))


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
