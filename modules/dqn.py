"""Deep Q-Network (Mnih et al. 2015) with the Double-DQN target, dueling heads and n-step returns as options."""

import copy
import math
from typing import Literal

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.environment_learner import EnvironmentLearner
from modules.errors import ConfigError, require
from modules.q_networks import MLPQNetwork, NatureCNN


class DQN(EnvironmentLearner):
    """Q-learning with experience replay and a target network (Mnih et al. 2015, Algorithm 1).

    For an n-step transition (s_t, a_t, r_t..r_{t+m-1}, s_{t+m}) from replay, m <= n:

        td_target = sum_{k<m} gamma^k r_{t+k} + gamma^m (1 - terminated) max_a Q_target(s_{t+m}, a)
        loss      = mean_i w_i * huber(td_target_i - Q(s_t, a_t))

    ``double_q`` takes the argmax from the online network and the value from the target network
    (van Hasselt et al. 2016, Eq. 4); ``dueling`` splits the head into value and advantage streams
    (Wang et al. 2016). The weights w_i are 1 unless replay is prioritised.

    Experience comes from :class:`datamodules.experience.ExperienceDataModule`: each training batch
    is one collection cycle holding ``gradient_steps`` minibatches, consumed here with manual
    optimisation so that Lightning's per-step overhead is paid once per cycle, not per update.
    ``global_step`` therefore counts gradient steps. Greedy evaluation is logged by
    :class:`modules.environment_learner.EnvironmentLearner` as ``val/return`` and ``test/return``.

    Args:
        q_network: ``mlp`` for flat observations, ``nature_cnn`` for stacked Atari frames.
        hidden_sizes: MLP hidden layer sizes (the last is the dueling streams' width with ``dueling``).
        dueling: dueling value/advantage head.
        double_q: Double-DQN target.
        gamma: discount.
        lr: Adam learning rate.
        adam_eps: Adam epsilon (1.5e-4 is common for Atari).
        loss: ``huber`` (smooth L1, as SB3) or ``mse`` (as CleanRL).
        max_grad_norm: clip the gradient norm of each update to this (``null`` disables).
        target_update_interval: env steps between target network updates (counted as SB3 and
            CleanRL do, so RL Zoo settings carry over).
        tau: target update rate; 1 copies the online network, < 1 is Polyak averaging.
        observation_shape, num_actions: taken from the datamodule's env when left ``null``.
    """

    def __init__(
        self,
        q_network: Literal["mlp", "nature_cnn"] = "mlp",
        hidden_sizes: tuple[int, ...] = (256, 256),
        dueling: bool = False,
        double_q: bool = False,
        gamma: float = 0.99,
        lr: float = 2.3e-3,
        adam_eps: float = 1e-8,
        loss: Literal["huber", "mse"] = "huber",
        max_grad_norm: float | None = 10.0,
        target_update_interval: int = 10,
        tau: float = 1.0,
        observation_shape: tuple[int, ...] | None = None,
        num_actions: int | None = None,
    ) -> None:
        super().__init__()
        require(0.0 <= gamma <= 1.0, f"--model.init_args.gamma must lie in [0, 1], got {gamma}")
        require(lr > 0, f"--model.init_args.lr must be positive, got {lr}")
        require(0.0 < tau <= 1.0, f"--model.init_args.tau must lie in (0, 1], got {tau}")
        require(target_update_interval >= 1, f"--model.init_args.target_update_interval must be at least 1 env step, got {target_update_interval}")
        require(max_grad_norm is None or max_grad_norm > 0, "--model.init_args.max_grad_norm must be positive or null")
        require(len(hidden_sizes) >= 1, "--model.init_args.hidden_sizes needs at least one layer size")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.q_network: nn.Module | None = None
        self.target_network: nn.Module | None = None
        # env step at which the target network was last updated; a buffer so it is checkpointed
        self.register_buffer("target_updated_at", torch.tensor(0, dtype=torch.long))
        if observation_shape is not None and num_actions is not None:
            self._build(tuple(observation_shape), num_actions)

    # ---- networks ----------------------------------------------------------------------------
    def _build(self, observation_shape: tuple[int, ...], num_actions: int) -> None:
        hp = self.hparams
        if hp.q_network == "nature_cnn":
            self.q_network = NatureCNN(observation_shape[0], num_actions, dueling=hp.dueling)
        else:
            self.q_network = MLPQNetwork(math.prod(observation_shape), num_actions, tuple(hp.hidden_sizes), dueling=hp.dueling)
        self.target_network = copy.deepcopy(self.q_network).requires_grad_(False)
        # recorded so that load_from_checkpoint can rebuild the networks without an environment
        self.hparams.observation_shape, self.hparams.num_actions = list(observation_shape), num_actions

    def check_datamodule(self, datamodule) -> None:
        """Fail before anything runs if the datamodule cannot feed this learner."""
        if not all(hasattr(datamodule, name) for name in ("observation_space", "action_space", "update_priorities")):
            raise ConfigError(
                f"DQN learns from experience: set data.class_path to datamodules.experience.ExperienceDataModule, not {type(datamodule).__name__}"
            )
        action_space, obs_space = datamodule.action_space, datamodule.observation_space
        env_id = getattr(datamodule.hparams, "env_id", "the env")
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError(f"DQN needs a discrete action space; --data.init_args.env_id {env_id} has {action_space}")
        if self.hparams.q_network == "nature_cnn" and len(obs_space.shape) != 3:
            raise ConfigError(f"--model.init_args.q_network nature_cnn needs image observations [C, H, W]; {env_id} gives shape {obs_space.shape}; use mlp")
        if self.hparams.q_network == "mlp" and len(obs_space.shape) != 1:
            raise ConfigError(f"--model.init_args.q_network mlp needs flat observations; {env_id} gives shape {obs_space.shape}; use nature_cnn")

    def configure_model(self) -> None:
        if self.q_network is not None:
            return
        datamodule = self.trainer.datamodule
        self.check_datamodule(datamodule)
        self._build(tuple(datamodule.observation_space.shape), int(datamodule.action_space.n))

    def forward(self, obs: Tensor) -> Tensor:
        """Action values ``[B, num_actions]``."""
        return self.q_network(obs)

    def configure_optimizers(self):
        # the fused kernel saves most of Adam's per-parameter op overhead, which dominates for small Q-networks
        fused = next(self.q_network.parameters()).device.type in ("cpu", "cuda")
        return torch.optim.Adam(self.q_network.parameters(), lr=self.hparams.lr, eps=self.hparams.adam_eps, fused=fused)

    # ---- learning ----------------------------------------------------------------------------
    def td_target(self, rewards: Tensor, next_obs: Tensor, terminated: Tensor, bootstrap_steps: Tensor) -> Tensor:
        """sum_k gamma^k r_{t+k} + gamma^m (1 - terminated) Q_target(s_{t+m}, argmax); rewards are [B, n]."""
        gamma = self.hparams.gamma
        discounts = gamma ** torch.arange(rewards.shape[1], device=rewards.device, dtype=rewards.dtype)
        n_step_return = (rewards * discounts).sum(1)
        next_q_target = self.target_network(next_obs)
        if self.hparams.double_q:
            next_action = self.q_network(next_obs).argmax(1, keepdim=True)
        else:
            next_action = next_q_target.argmax(1, keepdim=True)
        next_value = next_q_target.gather(1, next_action).squeeze(1)
        return n_step_return + gamma**bootstrap_steps * (~terminated) * next_value

    def update_target(self) -> None:
        if self.hparams.tau == 1.0:
            self.target_network.load_state_dict(self.q_network.state_dict())
        else:
            torch._foreach_lerp_(list(self.target_network.parameters()), list(self.q_network.parameters()), self.hparams.tau)

    def minibatch_loss(self, obs: Tensor, action: Tensor, td_target: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(loss, td_error)`` of one minibatch: ``mean_i w_i * huber(td_target_i - Q(s_i, a_i))`` (or the squared error)."""
        q_value = self.q_network(obs).gather(1, action[:, None]).squeeze(1)
        td_error = td_target - q_value
        if self.hparams.loss == "huber":
            elementwise = F.smooth_l1_loss(q_value, td_target, reduction="none")
        else:
            elementwise = td_error.square()
        return (weights * elementwise).mean() if weights is not None else elementwise.mean(), td_error

    def training_step(self, cycle: dict[str, Tensor], cycle_idx: int) -> Tensor | None:
        if "action" not in cycle:  # replay still filling (learning_starts)
            return None
        optimizer = self.optimizers()
        env_steps = int(cycle["env_steps"])
        if env_steps - int(self.target_updated_at) >= self.hparams.target_update_interval:
            self.update_target()
            self.target_updated_at.fill_(env_steps)

        gradient_steps, batch_size = cycle["action"].shape
        if not self.hparams.double_q:
            # the target network is fixed for the whole cycle (updated only at its start), so every
            # minibatch's td_target comes from one batched call: [gradient_steps, B]
            with torch.no_grad():
                td_targets = self.td_target(*(cycle[k].flatten(0, 1) for k in ("rewards", "next_obs", "terminated", "bootstrap_steps")))
            td_targets = td_targets.view(gradient_steps, batch_size)

        losses, td_errors = [], []
        for g in range(gradient_steps):  # one gradient step per minibatch of the cycle
            obs, action = cycle["obs"][g], cycle["action"][g]  # [B, *obs_shape], [B]
            if self.hparams.double_q:  # the argmax moves with the online network: one step at a time
                with torch.no_grad():
                    td_target = self.td_target(cycle["rewards"][g], cycle["next_obs"][g], cycle["terminated"][g], cycle["bootstrap_steps"][g])
            else:
                td_target = td_targets[g]
            loss, td_error = self.minibatch_loss(obs, action, td_target, cycle["weights"][g] if "weights" in cycle else None)

            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            if self.hparams.max_grad_norm is not None:
                self.clip_gradients(optimizer, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm")
            optimizer.step()
            losses.append(loss.detach())
            td_errors.append(td_error.detach())

        td_error = torch.stack(td_errors)  # [gradient_steps, B]
        if "weights" in cycle:
            self.trainer.datamodule.update_priorities(cycle["index"], td_error)
        loss = torch.stack(losses).mean()
        self.log_dict(
            {
                "train/env_steps_per_second": self.env_steps_per_second(env_steps),
                "train/loss": loss,
                "train/td_error": td_error.abs().mean(),
                "train/q_value": (td_target - td_error[-1]).mean(),
                "train/epsilon": cycle["epsilon"].float(),
                "train/env_steps": cycle["env_steps"].float(),
            },
            batch_size=td_error.numel(),
        )
        return loss

    def predict_step(self, episode: dict, batch_idx: int) -> dict:
        """A recorded greedy episode (return, length, rendered frames), played by the datamodule."""
        return episode
