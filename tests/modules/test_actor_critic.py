"""Policy-gradient agents: the shared estimator does the work, checks on the datamodule, CLI, resume, DDP, learning."""

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
from tests.cli_runs import assert_resumed_run_matches_straight_run
from tests.ddp_replicas import fit_replicas

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


def small_run(tmp_path: Path, *extra: str) -> list[str]:
    """Arguments (after ``fit``) of a small deterministic one-epoch run writing below ``tmp_path / "runs"``."""
    return [
        "--config", A2C,
        "--trainer.max_epochs", "1",
        "--trainer.deterministic", "true",
        "--trainer.log_every_n_steps", "5",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--model.init_args.hidden_sizes", "[16, 16]",
        "--data.init_args.num_envs", "4",
        "--data.init_args.rollouts_per_epoch", "12",
        "--data.init_args.n_steps", "8",
        "--data.init_args.eval_episodes", "2",
        *extra,
    ]  # fmt: skip


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    straight, resumed = assert_resumed_run_matches_straight_run(small_run(tmp_path))
    assert straight.trainer.global_step == 2 * 12
    data_straight, data_resumed = straight.datamodule.collector.state_dict(), resumed.datamodule.collector.state_dict()
    assert torch.equal(data_straight["episodes"], data_resumed["episodes"]) and len(data_straight["episodes"]) > 0
    assert torch.equal(data_straight["obs"], data_resumed["obs"])
    assert data_straight["env_steps"] == data_resumed["env_steps"] == 2 * 12 * 8 * 4


def test_checkpoint_loads_without_an_environment(tmp_path):
    cli.main(["fit", *small_run(tmp_path)])
    agent = PolicyGradientAgent.load_from_checkpoint(next((tmp_path / "runs").rglob("last.ckpt")))
    assert agent(torch.zeros(3, 4)).shape == (3,)


def test_ddp_on_two_cpu_processes_keeps_replicas_identical(tmp_path):
    """Each rank plays its own envs; after its updates the replicas are still identical (``fit_replicas`` checks)."""
    fit_replicas(small_run(tmp_path), tmp_path)


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
