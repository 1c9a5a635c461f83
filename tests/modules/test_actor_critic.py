"""Policy-gradient agents: the shared estimator does the work, checks on the datamodule, CLI, resume, DDP, learning."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cli
from datamodules.experience import ExperienceDataModule
from datamodules.rollouts import RolloutDataModule, generalized_advantage_estimation
from modules.actor_critic import PolicyGradientAgent
from modules.errors import ConfigError
from modules.policy_gradient import ScoreFunctionEstimator
from modules.policy_networks import GaussianPolicy

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
A2C = str(CONFIGS / "pg_cartpole_a2c.yaml")
REINFORCE = str(CONFIGS / "pg_cartpole_reinforce.yaml")


def cartpole_rollout(steps: int = 6, envs: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    data = RolloutDataModule(num_envs=envs, n_steps=steps, seed=seed)
    data.setup("fit")
    torch.manual_seed(seed)
    agent = PolicyGradientAgent(policy="categorical", observation_size=4, action_size=2)
    return data.collector.collect(agent.policy, "n_steps", steps)


class Manual:
    """Stands in for Lightning's optimiser plumbing so that a training step can run outside a trainer."""

    def __init__(self, agent: PolicyGradientAgent) -> None:
        self.optimizer = torch.optim.SGD(agent.parameters(), lr=0.0)

    def install(self, agent: PolicyGradientAgent, monkeypatch) -> None:
        monkeypatch.setattr(agent, "optimizers", lambda: self.optimizer)
        monkeypatch.setattr(agent, "lr_schedulers", lambda: None)
        monkeypatch.setattr(agent, "manual_backward", lambda loss: loss.backward())
        monkeypatch.setattr(agent, "log_dict", lambda *args, **kwargs: None)


def test_a2c_credits_the_lambda_return_to_the_shared_estimator_so_its_advantage_is_gae(monkeypatch):
    rollout = cartpole_rollout()
    agent = PolicyGradientAgent(policy="categorical", observation_size=4, action_size=2, gae_lambda=0.9, entropy_coef=0.01, max_grad_norm=None)
    Manual(agent).install(agent, monkeypatch)
    calls = []
    forward = ScoreFunctionEstimator.forward

    def recording(self, log_prob, reward, **kwargs):
        terms = forward(self, log_prob, reward, **kwargs)
        calls.append((log_prob, reward, kwargs, terms))
        return terms

    monkeypatch.setattr(ScoreFunctionEstimator, "forward", recording)
    loss = agent.training_step(rollout, 0)

    assert len(calls) == 1 and isinstance(agent.estimator, ScoreFunctionEstimator)
    log_prob, reward, kwargs, terms = calls[0]
    with torch.no_grad():
        value, next_value = agent.critic(rollout["obs"]), agent.critic(rollout["next_obs"])
        gae = generalized_advantage_estimation(rollout["reward"], value, next_value, rollout["terminated"], rollout["truncated"], 0.99, 0.9)
        policy = agent.policy(rollout["obs"])
    assert torch.allclose(reward, gae + value, atol=1e-5) and torch.allclose(terms.advantage, gae, atol=1e-5)
    # the A2C loss of Mnih et al. 2016 with SB3's weighting: -A log pi + c_v (V - R)^2 - c_H H
    expected = (
        -(gae * policy.log_prob(rollout["action"])).mean()
        + 0.5 * F.mse_loss(value, gae + value)
        - 0.01 * policy.entropy().mean()
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_reinforce_credits_reward_to_go_with_a_moving_average_baseline(monkeypatch):
    data = RolloutDataModule(num_envs=2, rollout="episodes", seed=0)
    data.setup("fit")
    agent = PolicyGradientAgent(
        algorithm="reinforce", baseline="moving_average", gamma=1.0, max_grad_norm=None, policy="categorical", observation_size=4, action_size=2
    )
    Manual(agent).install(agent, monkeypatch)
    rollout = data.collector.collect(agent.policy, "episodes", 0)
    credited = []
    forward = ScoreFunctionEstimator.forward

    def recording(self, log_prob, reward, **kwargs):
        credited.append(reward)
        return forward(self, log_prob, reward, **kwargs)

    monkeypatch.setattr(ScoreFunctionEstimator, "forward", recording)
    agent.training_step(rollout, 0)
    (reward,) = credited
    # only the episodes' own steps are credited, time-major: the first two are each episode's first step,
    # credited (gamma = 1) with the whole episode's return
    assert agent.critic is None and reward.numel() == int(rollout["mask"].sum()) == int(rollout["episode_length"].sum())
    assert sorted(reward[:2].tolist()) == sorted(rollout["episode_return"].tolist())
    assert agent.estimator.num_updates == 1 and agent.estimator.reward_mean.item() == pytest.approx(reward.mean().item())


def test_gaussian_policy_log_prob_sums_over_action_dimensions_and_log_std_options_differ():
    policy = GaussianPolicy(3, 2, log_std="state_independent", log_std_init=-1.0)
    obs = torch.randn(5, 3)
    dist = policy(obs)
    action = dist.sample()
    normal = torch.distributions.Normal(policy.mode(obs), torch.exp(torch.tensor(-1.0)))
    assert dist.log_prob(action).shape == (5,)
    assert torch.allclose(dist.log_prob(action), normal.log_prob(action).sum(-1), atol=1e-5)
    assert [n for n, _ in policy.named_parameters() if "log_std" in n] == ["log_std"]
    learned = GaussianPolicy(3, 2, log_std="learned", log_std_init=-1.0)
    assert {n for n, _ in learned.named_parameters() if "log_std" in n} == {"log_std_head.weight", "log_std_head.bias"}
    assert torch.allclose(learned(obs).base_dist.scale, torch.full((5, 2), torch.exp(torch.tensor(-1.0)).item()))


@pytest.mark.parametrize(
    "agent, data, message",
    [
        (dict(algorithm="reinforce"), dict(rollout="n_steps"), "rollout episodes"),
        (dict(algorithm="a2c"), dict(rollout="episodes"), "rollout n_steps"),
        (dict(policy="gaussian"), dict(), "policy gaussian"),
        (dict(), dict(env_id="ALE/Pong-v5"), "Pong|ale-py|flat"),
    ],
)
def test_mismatched_datamodule_is_rejected_with_the_option_to_change(agent, data, message):
    with pytest.raises(ConfigError, match=message):
        PolicyGradientAgent(**agent).check_datamodule(RolloutDataModule(**data))


def test_replay_datamodule_and_a2c_without_a_critic_are_rejected():
    with pytest.raises(ConfigError, match="RolloutDataModule"):
        PolicyGradientAgent().check_datamodule(ExperienceDataModule(train_freq=4, steps_per_epoch=8))
    with pytest.raises(ConfigError, match="baseline learned"):
        PolicyGradientAgent(algorithm="a2c", baseline="moving_average")


def test_cli_reports_bad_value_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", "--config", A2C, "--model.init_args.gae_lambda", "1.5"])
    assert exit_info.value.code == 2 and "gae_lambda" in capsys.readouterr().err


@pytest.mark.parametrize(
    "config, extra",
    [
        ("pg_cartpole_a2c", []),
        ("pg_cartpole_reinforce", ["--model.init_args.baseline", "moving_average"]),
        ("pg_acrobot_a2c", []),
        ("pg_pendulum_a2c", ["--model.init_args.log_std", "learned", "--model.init_args.lr_schedule", "linear"]),
    ],
)
def test_every_config_fits_through_the_cli(config, extra, tmp_path):
    cli.main(["fit", "--config", str(CONFIGS / f"{config}.yaml"), "--config", str(CONFIGS / "presets" / "smoke.yaml"),
              "--trainer.default_root_dir", str(tmp_path), "--data.init_args.eval_episodes", "2", *extra])  # fmt: skip


def small_run(tmp_path: Path, name: str, epochs: int, *extra: str) -> list[str]:
    return [
        "fit", "--config", A2C,
        "--trainer.max_epochs", str(epochs),
        "--trainer.deterministic", "true",
        "--trainer.log_every_n_steps", "5",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.logger.init_args.name", name,
        "--model.init_args.hidden_sizes", "[16, 16]",
        "--data.init_args.num_envs", "4",
        "--data.init_args.rollouts_per_epoch", "12",
        "--data.init_args.n_steps", "8",
        "--data.init_args.eval_episodes", "2",
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
    assert straight["global_step"] == resumed["global_step"] == 4 * 12
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    data_straight, data_resumed = straight["RolloutDataModule"]["collector"], resumed["RolloutDataModule"]["collector"]
    assert torch.equal(data_straight["episodes"], data_resumed["episodes"]) and len(data_straight["episodes"]) > 0
    assert torch.equal(data_straight["obs"], data_resumed["obs"])
    assert data_straight["env_steps"] == data_resumed["env_steps"] == 4 * 12 * 8 * 4


def test_checkpoint_loads_without_an_environment(tmp_path):
    cli.main(small_run(tmp_path, "load", 1))
    path = sorted((tmp_path / "load").glob("version_*/checkpoints/last.ckpt"))[-1]
    agent = PolicyGradientAgent.load_from_checkpoint(path)
    assert agent(torch.zeros(3, 4)).shape == (3,)


RANK_WEIGHTS_CALLBACK = """
import torch
from lightning.pytorch import Callback

class SaveRankWeights(Callback):
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.state_dict(), f"{self.directory}/rank{trainer.global_rank}.pt")
        torch.save(torch.as_tensor(trainer.datamodule.collector.obs), f"{self.directory}/obs{trainer.global_rank}.pt")
"""


def test_ddp_on_two_cpu_processes_keeps_replicas_identical(tmp_path):
    (tmp_path / "rank_weights.py").write_text(textwrap.dedent(RANK_WEIGHTS_CALLBACK))
    args = small_run(tmp_path, "ddp", 1, "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    args += ["--trainer.callbacks+=rank_weights.SaveRankWeights", f"--trainer.callbacks.directory={tmp_path}"]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    # each rank plays its own envs (different seeds): only synchronised gradients keep the weights equal
    assert not torch.equal(torch.load(tmp_path / "obs0.pt"), torch.load(tmp_path / "obs1.pt"))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    fresh = PolicyGradientAgent(policy="categorical", observation_size=4, action_size=2, hidden_sizes=(16, 16)).state_dict()
    assert any(not torch.equal(rank0[k], fresh[k]) for k in rank0 if k.startswith("policy."))
    assert sorted((tmp_path / "ddp").glob("version_*/checkpoints/last.ckpt"))


def test_a2c_learns_cartpole_far_beyond_a_random_policy(tmp_path):
    """A random policy averages ~22 on CartPole; 16k env steps of the README's A2C config do far better greedily."""
    run = cli.main(
        [
            "fit", "--config", A2C,
            "--trainer.max_epochs", "2",
            "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--data.init_args.rollouts_per_epoch", "200",
            "--data.init_args.eval_episodes", "10",
        ]
    )  # fmt: skip
    metrics = run.trainer.callback_metrics
    assert metrics["val/return"] > 150, metrics
    assert run.datamodule.env_steps == 2 * 200 * 40 and metrics["train/explained_variance"] > 0
