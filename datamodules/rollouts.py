"""On-policy experience for policy-gradient learners: rollouts from gymnasium vector envs, returns and GAE.

:class:`RolloutDataModule` owns the environments and serves one rollout per training batch, played
by the learner's current policy (reached as ``trainer.lightning_module.policy``): either ``n_steps``
steps of every env (A2C) or one whole episode per env (REINFORCE). The learner owns the discount,
the critic and the loss; it turns a rollout into regression targets with :func:`reward_to_go` or
:func:`generalized_advantage_estimation`, both over ``[T, N]`` tensors (time, env).

Episode boundaries follow gymnasium: ``terminated`` ends the return (the next state is worth 0),
``truncated`` (a time limit) cuts the sum but bootstraps from ``V(s_{t+1})``, the value of the true
last observation of the episode (kept by :class:`datamodules.environments.VectorEnvRunner` even though
the env has already reset itself). Environments, seeds, evaluation loaders and checkpointed env state
are the shared :class:`datamodules.environments.EnvironmentDataModule`'s.
"""

from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from datamodules.environments import EnvironmentDataModule, VectorEnvRunner, evaluate_policy
from modules.errors import require

RolloutKind = Literal["n_steps", "episodes"]


def reward_to_go(rewards: Tensor, terminated: Tensor, truncated: Tensor, gamma: float, next_value: Tensor | None = None) -> Tensor:
    """G_t = sum_{k>=0} gamma^k r_{t+k} up to the episode's end (Williams 1992; Sutton & Barto 2018, eq. 13.8).

    All inputs are ``[T, N]``. At a truncation the sum continues with ``gamma * next_value_t``
    (the value of the state the time limit cut off); without ``next_value`` it stops there, as it
    does at a termination. A rollout that ends mid-episode bootstraps the same way from its last
    ``next_value``. Steps after an episode's end in the same column start a new sum.
    """
    continues = gamma * ~(terminated | truncated)  # gamma inside an episode, 0 at its end
    # what a step adds beyond its own reward besides the discounted G_{t+1}: gamma V(s_{t+1}) at a truncation
    rewards = rewards + gamma * truncated * next_value if next_value is not None else rewards
    returns = torch.empty_like(rewards)
    following = next_value[-1] if next_value is not None else torch.zeros_like(rewards[0])  # G_T: bootstrap a cut-off rollout
    for t in reversed(range(rewards.shape[0])):
        following = rewards[t] + continues[t] * following
        returns[t] = following
    return returns


def generalized_advantage_estimation(
    rewards: Tensor, value: Tensor, next_value: Tensor, terminated: Tensor, truncated: Tensor, gamma: float, gae_lambda: float
) -> Tensor:
    """A_t = sum_l (gamma lambda)^l delta_{t+l} (Schulman et al. 2016, eq. 16), within an episode.

    delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t) (eq. 10): a truncated step still
    bootstraps from V of its true last state; the sum stops at any episode end. ``[T, N]`` tensors;
    ``advantage + value`` is the lambda-return, the critic's target. ``gae_lambda = 1`` gives
    ``reward_to_go(...) - value``, ``0`` the one-step TD error.
    """
    delta = rewards + gamma * ~terminated * next_value - value
    continues = gamma * gae_lambda * ~(terminated | truncated)
    advantage = torch.empty_like(rewards)
    following = torch.zeros_like(rewards[0])  # A_{t+1}
    for t in reversed(range(rewards.shape[0])):
        following = delta[t] + continues[t] * following
        advantage[t] = following
    return advantage


def env_action(action: Tensor, space: gym.Space) -> np.ndarray:
    """A policy's action as the env takes it: Gaussian samples (or means) are clipped to a ``Box`` space."""
    action = action.cpu().numpy()
    return np.clip(action, space.low, space.high) if isinstance(space, gym.spaces.Box) else action


class RolloutCollector(VectorEnvRunner):
    """Plays a stochastic policy on a vector env and returns what it saw as ``[T, N, ...]`` tensors.

    ``n_steps`` rollouts continue where the last one stopped (episodes run across rollouts);
    ``episodes`` rollouts play exactly one episode per env from a fresh start, the steps an env takes
    after its episode ended being masked out (``mask``) and not counted.
    """

    def __init__(self, envs: gym.vector.VectorEnv, seed: int) -> None:
        super().__init__(envs, seed)
        self.action_space = envs.single_action_space
        self.at_start = np.ones(self.num_envs, dtype=bool)  # envs whose current episode has not taken a step

    @torch.no_grad()
    def collect(self, policy: nn.Module, kind: RolloutKind, n_steps: int) -> dict[str, Tensor]:
        device = next(policy.parameters()).device
        if kind == "episodes" and not self.at_start.all():
            self.restart_episodes()
        episodes_before = len(self.episodes)
        active = np.ones(self.num_envs, dtype=bool)
        steps: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "terminated", "truncated", "next_obs", "mask")}
        while (len(steps["obs"]) < n_steps) if kind == "n_steps" else active.any():
            obs = self.obs
            action = policy.sample(torch.as_tensor(obs, device=device))
            reward, next_obs, terminated, truncated = self.step(env_action(action, self.action_space), active if kind == "episodes" else None)
            for key, value in zip(steps, (obs, action, reward, terminated, truncated, next_obs, active.copy())):
                steps[key].append(value)
            done = terminated | truncated
            self.at_start = done
            if kind == "episodes":
                active &= ~done
        rollout = {k: torch.as_tensor(np.stack(v)) for k, v in steps.items() if k != "action"}
        rollout["action"] = torch.stack(steps["action"]).cpu()
        rollout["obs"], rollout["next_obs"] = rollout["obs"].float(), rollout["next_obs"].float()
        rollout["reward"] = rollout["reward"].float()
        rollout["episode_return"] = torch.tensor([r for _, r, _ in self.episodes[episodes_before:]], dtype=torch.float32)
        rollout["episode_length"] = torch.tensor([n for _, _, n in self.episodes[episodes_before:]], dtype=torch.float32)
        rollout["env_steps"] = torch.tensor(self.env_steps)
        rollout["episodes"] = torch.tensor(len(self.episodes))
        return rollout

    def state_dict(self) -> dict:
        return super().state_dict() | {"at_start": torch.as_tensor(self.at_start)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state["env_state"] is not None:
            self.at_start = state["at_start"].numpy().copy()
        else:  # the envs were restarted
            self.at_start[:] = True


class RolloutDataModule(EnvironmentDataModule):
    """Gymnasium vector envs played on-policy, served to a policy-gradient learner one rollout at a time.

    One training batch is one rollout ``{obs, action, reward, terminated, truncated, next_obs, mask}``
    of shape ``[T, N, ...]`` (``next_obs`` is the true next state, the final observation where an
    episode ended), plus the returns and lengths of episodes that finished in it. An epoch is
    ``rollouts_per_epoch`` rollouts; greedy evaluation (the policy's mode) runs after each.

    Args:
        env_id: gymnasium id (flat observations; discrete or box actions).
        env_kwargs: keyword arguments for ``gym.make``.
        num_envs: environments stepped in parallel; with ``rollout: episodes``, the episodes per update.
        vectorization: ``sync`` (one process; best for cheap envs) or ``async`` (a process per env).
        seed: seeds the envs; ``None`` takes ``seed_everything``'s. Each DDP rank adds ``10_000 * rank``.
        rollout: ``n_steps`` (A2C: ``n_steps`` steps of each env, episodes continuing across rollouts) or
            ``episodes`` (REINFORCE: one whole episode per env from a fresh start).
        n_steps: steps per env per rollout for ``rollout: n_steps``.
        rollouts_per_epoch: rollouts (updates) between evaluations.
        eval_episodes: greedy episodes per validation (and per test).
        eval_num_envs: environments used in parallel for evaluation.
    """

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        env_kwargs: dict | None = None,
        num_envs: int = 8,
        vectorization: str = "sync",
        seed: int | None = None,
        rollout: RolloutKind = "n_steps",
        n_steps: int = 5,
        rollouts_per_epoch: int = 250,
        eval_episodes: int = 20,
        eval_num_envs: int = 10,
    ) -> None:
        super().__init__(num_envs, vectorization, eval_episodes, eval_num_envs)
        require(rollout in RolloutKind.__args__, f"--data.init_args.rollout must be one of {RolloutKind.__args__}, got {rollout!r}")
        require(n_steps >= 1, f"--data.init_args.n_steps must be at least 1, got {n_steps}")
        require(rollouts_per_epoch >= 1, f"--data.init_args.rollouts_per_epoch must be at least 1, got {rollouts_per_epoch}")
        self.save_hyperparameters()

    @property
    def batches_per_epoch(self) -> int:
        return self.hparams.rollouts_per_epoch

    def make_collector(self, envs: gym.vector.VectorEnv, seed: int) -> RolloutCollector:
        return RolloutCollector(envs, seed)

    def training_batch(self, learner: LightningModule) -> dict[str, Tensor]:
        return self.collector.collect(learner.policy, self.hparams.rollout, self.hparams.n_steps)

    def evaluation_batch(self, learner: LightningModule, seed: int) -> dict[str, Tensor]:
        """Returns and lengths of ``eval_episodes`` episodes acted by the policy's mode (greedy)."""
        policy = learner.policy
        device = next(policy.parameters()).device

        def act(obs: np.ndarray) -> np.ndarray:
            return env_action(policy.mode(torch.as_tensor(obs, device=device)), self.action_space)

        return evaluate_policy(act, self.eval_envs, self.hparams.eval_episodes, seed)
