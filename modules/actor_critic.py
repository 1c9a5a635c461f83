"""Policy-gradient agents on gymnasium: REINFORCE with a baseline and advantage actor-critic (A2C).

Both are the score-function estimator of :mod:`modules.policy_gradient`, applied to a policy acting
in an environment; they differ only in the reward each action is credited with:

- ``reinforce`` (Williams 1992; Sutton & Barto 2018, sec. 13.4): whole episodes, each action weighted
  by the reward-to-go ``G_t`` that followed it, minus a baseline (a learned ``V(s_t)`` or a moving
  average of returns).
- ``a2c`` (Mnih et al. 2016, Algorithm S3, with GAE of Schulman et al. 2016): ``n_steps`` rollouts of
  parallel envs; the action is credited with the lambda-return ``G^lambda_t = A^GAE_t + V(s_t)`` and
  the baseline is ``V(s_t)``, so the estimator's advantage ``G^lambda_t - V(s_t)`` is exactly GAE,
  and its learned-baseline loss ``(V(s_t) - G^lambda_t)^2`` is the critic's loss.
"""

import math
from typing import Literal

import gymnasium as gym
import torch
from torch import Tensor, nn
from torchmetrics.functional import explained_variance

from datamodules.rollouts import generalized_advantage_estimation, reward_to_go
from modules.environment_learner import EnvironmentLearner
from modules.errors import ConfigError, require
from modules.networks import Activation
from modules.policy_gradient import AdvantageNormalization, ScoreFunctionEstimator
from modules.policy_networks import CategoricalPolicy, GaussianPolicy, LogStd, ValueNetwork
from modules.step_logging import step_logs_due


class PolicyGradientAgent(EnvironmentLearner):
    """An actor (and critic) trained on on-policy rollouts by the shared score-function estimator.

    For a rollout ``[T, N]`` (time, env):

        reinforce:  R_t = G_t = r_t + gamma G_{t+1}  (within the episode)           b_t = V(s_t) or EMA(G)
        a2c:        R_t = A^GAE_t + V(s_t),  A^GAE_t = sum_l (gamma lambda)^l delta_{t+l}   b_t = V(s_t)
        loss = -mean[(R_t - b_t) log pi(a_t | s_t)] + value_coef mean[(V(s_t) - R_t)^2] - entropy_coef mean[H(pi(. | s_t))]

    Truncated episodes bootstrap from ``V`` of their last state (REINFORCE with a moving-average
    baseline has no ``V`` and stops the sum there). One rollout is one gradient step, clipped to
    ``max_grad_norm``. Experience comes from :class:`datamodules.rollouts.RolloutDataModule`, which
    plays ``self.policy``; greedy evaluation is logged by
    :class:`modules.environment_learner.EnvironmentLearner` as ``val/return`` and ``test/return``.

    Args:
        algorithm: ``reinforce`` (needs ``rollout: episodes``) or ``a2c`` (needs ``rollout: n_steps``).
        policy: ``auto`` (from the action space), ``categorical`` or ``gaussian``.
        hidden_sizes: hidden layers of the policy and of the (separate) value network.
        activation: their nonlinearity.
        orthogonal_init: orthogonal weights with small policy output gain (as SB3 / OpenAI Baselines).
        log_std: Gaussian policy's log-std: one ``state_independent`` vector or a ``learned`` head.
        log_std_init: its initial value.
        gamma: discount.
        gae_lambda: GAE lambda (``a2c``); 1 is the n-step Monte Carlo return, 0 the one-step TD target.
        baseline: ``learned`` (a value network) or ``moving_average`` (``reinforce`` only) or ``none``.
        baseline_momentum: decay of the moving-average baseline.
        value_coef: weight of the value loss.
        entropy_coef: weight of the entropy bonus.
        normalize_advantage: advantage normalisation of the estimator (``none``, ``batch``, ``running``).
        max_grad_norm: clip the gradient norm of each update (``null``: no clipping).
        optimizer: ``rmsprop`` (A2C's, alpha 0.99) or ``adam``.
        lr: learning rate.
        optimizer_eps: the optimiser's epsilon (SB3's A2C: 1e-5).
        lr_schedule: ``constant`` or ``linear`` decay to 0 over the run's updates.
        reward_scale: rewards are multiplied by this before discounting (e.g. 0.1 keeps Pendulum's returns,
            down to about -160, near the unit scale of the critic's output); logged returns stay unscaled.
        observation_size, action_size: filled in from the datamodule's env (``action_size`` is the number
            of actions for a categorical policy); recorded so checkpoints load without an env.
    """

    def __init__(
        self,
        algorithm: Literal["reinforce", "a2c"] = "a2c",
        policy: Literal["auto", "categorical", "gaussian"] = "auto",
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: Activation = "tanh",
        orthogonal_init: bool = True,
        log_std: LogStd = "state_independent",
        log_std_init: float = 0.0,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        baseline: Literal["learned", "moving_average", "none"] = "learned",
        baseline_momentum: float = 0.9,
        value_coef: float = 0.5,
        entropy_coef: float = 0.0,
        normalize_advantage: AdvantageNormalization = "none",
        max_grad_norm: float | None = 0.5,
        optimizer: Literal["rmsprop", "adam"] = "rmsprop",
        lr: float = 7e-4,
        optimizer_eps: float = 1e-5,
        lr_schedule: Literal["constant", "linear"] = "constant",
        reward_scale: float = 1.0,
        observation_size: int | None = None,
        action_size: int | None = None,
    ) -> None:
        super().__init__()
        require(algorithm in ("reinforce", "a2c"), f"--model.init_args.algorithm must be reinforce or a2c, got {algorithm!r}")
        require(0.0 <= gamma <= 1.0, f"--model.init_args.gamma must lie in [0, 1], got {gamma}")
        require(0.0 <= gae_lambda <= 1.0, f"--model.init_args.gae_lambda must lie in [0, 1], got {gae_lambda}")
        require(lr > 0, f"--model.init_args.lr must be positive, got {lr}")
        require(reward_scale > 0, f"--model.init_args.reward_scale must be positive, got {reward_scale}")
        require(max_grad_norm is None or max_grad_norm > 0, "--model.init_args.max_grad_norm must be positive or null")
        require(value_coef >= 0 and entropy_coef >= 0, "--model.init_args.value_coef and entropy_coef must be >= 0")
        require(
            algorithm == "reinforce" or baseline == "learned",
            f"--model.init_args.algorithm a2c bootstraps from its critic: it needs baseline learned, got {baseline!r}",
        )
        require(normalize_advantage != "group", "--model.init_args.normalize_advantage group needs several samples per state; use none, batch or running")
        self.save_hyperparameters()
        self.automatic_optimization = False
        # the one score-function estimator of the project; for A2C its reward is the lambda-return
        self.estimator = ScoreFunctionEstimator(
            baseline=baseline,
            baseline_momentum=baseline_momentum,
            value_coef=value_coef,
            entropy_coef=entropy_coef,
            normalize_advantage=normalize_advantage,
        )
        # the estimator's running averages serve only these options; other runs skip updating them
        self._estimator_keeps_statistics = baseline == "moving_average" or normalize_advantage == "running"
        self.policy: nn.Module | None = None
        self.critic: nn.Module | None = None
        if observation_size is not None and action_size is not None and policy != "auto":
            self._build(observation_size, action_size, policy)

    # ---- networks ----------------------------------------------------------------------------
    def _build(self, observation_size: int, action_size: int, kind: str) -> None:
        hp = self.hparams
        hidden = tuple(hp.hidden_sizes)
        if kind == "gaussian":
            self.policy = GaussianPolicy(observation_size, action_size, hidden, hp.activation, hp.log_std, hp.log_std_init, hp.orthogonal_init)
        else:
            self.policy = CategoricalPolicy(observation_size, action_size, hidden, hp.activation, hp.orthogonal_init)
        self.critic = ValueNetwork(observation_size, hidden, hp.activation, hp.orthogonal_init) if hp.baseline == "learned" else None
        # recorded so that load_from_checkpoint rebuilds the networks without an environment
        self.hparams.observation_size, self.hparams.action_size, self.hparams.policy = observation_size, action_size, kind

    def check_datamodule(self, datamodule) -> None:
        """Fail before anything runs if the datamodule cannot feed this learner."""
        if not all(hasattr(datamodule, name) for name in ("observation_space", "action_space")) or not hasattr(datamodule.hparams, "rollout"):
            raise ConfigError(
                f"PolicyGradientAgent learns from on-policy rollouts: set data.class_path to datamodules.rollouts.RolloutDataModule, not {type(datamodule).__name__}"
            )
        hp, data = self.hparams, datamodule.hparams
        wanted = "episodes" if hp.algorithm == "reinforce" else "n_steps"
        if data.rollout != wanted:
            raise ConfigError(f"--model.init_args.algorithm {hp.algorithm} learns from rollout {wanted}: set --data.init_args.rollout {wanted}")
        obs_space, action_space = datamodule.observation_space, datamodule.action_space
        if len(obs_space.shape) != 1:
            raise ConfigError(f"PolicyGradientAgent needs flat observations; --data.init_args.env_id {data.env_id} gives shape {obs_space.shape}")
        discrete = isinstance(action_space, gym.spaces.Discrete)
        if not discrete and not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
            raise ConfigError(f"PolicyGradientAgent needs discrete or 1-d box actions; {data.env_id} has {action_space}")
        if hp.policy == "categorical" and not discrete or hp.policy == "gaussian" and discrete:
            raise ConfigError(f"--model.init_args.policy {hp.policy} does not fit {data.env_id}'s actions {action_space}: use policy auto")

    def configure_model(self) -> None:
        if self.policy is not None:
            return
        datamodule = self.trainer.datamodule
        self.check_datamodule(datamodule)
        action_space = datamodule.action_space
        discrete = isinstance(action_space, gym.spaces.Discrete)
        action_size = int(action_space.n) if discrete else int(action_space.shape[0])
        self._build(math.prod(datamodule.observation_space.shape), action_size, "categorical" if discrete else "gaussian")

    def forward(self, obs: Tensor) -> Tensor:
        """The greedy action for each observation (argmax or Gaussian mean)."""
        return self.policy.mode(obs)

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "rmsprop":
            optimizer = torch.optim.RMSprop(self.parameters(), lr=hp.lr, alpha=0.99, eps=hp.optimizer_eps, foreach=True)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, eps=hp.optimizer_eps, foreach=True)
        if hp.lr_schedule == "constant":
            return optimizer
        total = max(1, self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- learning ----------------------------------------------------------------------------
    def values(self, rollout: dict[str, Tensor]) -> tuple[Tensor | None, Tensor | None]:
        """``V(s_t)`` (differentiable) and ``V(s_{t+1})`` (detached; the final observation at episode ends), ``[T, N]`` each."""
        if self.critic is None:
            return None, None
        value, next_value = self.critic(torch.stack((rollout["obs"], rollout["next_obs"]))).unbind(0)  # one batched call
        return value, next_value.detach()

    def credited_reward(self, rollout: dict[str, Tensor], value: Tensor | None, next_value: Tensor | None) -> Tensor:
        """The reward each action is credited with, ``[T, N]``: reward-to-go (reinforce) or lambda-return (a2c)."""
        hp = self.hparams
        reward, terminated, truncated = rollout["reward"] * hp.reward_scale, rollout["terminated"], rollout["truncated"]
        if hp.algorithm == "reinforce":
            return reward_to_go(reward, terminated, truncated, hp.gamma, next_value)
        value = value.detach()
        return generalized_advantage_estimation(reward, value, next_value, terminated, truncated, hp.gamma, hp.gae_lambda) + value

    def training_step(self, rollout: dict[str, Tensor], rollout_idx: int) -> Tensor:
        log_now = step_logs_due(self)  # asked before the optimiser step advances global_step
        optimizer = self.optimizers()
        obs, action, mask = rollout["obs"], rollout["action"], rollout["mask"]  # [T, N, obs], [T, N(, A)], [T, N]
        policy = self.policy(obs)
        log_prob, entropy = policy.log_prob(action), policy.entropy()  # [T, N]
        value, next_value = self.values(rollout)
        credited = self.credited_reward(rollout, value, next_value)
        if not mask.all():  # steps taken after an env's episode ended (REINFORCE rollouts)
            log_prob, entropy, credited = log_prob[mask], entropy[mask], credited[mask]
            value = value[mask] if value is not None else None
        terms = self.estimator(log_prob, credited, entropy=entropy, value=value, update_statistics=self._estimator_keeps_statistics)

        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(terms.loss)
        if self.hparams.max_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

        env_steps = int(rollout["env_steps"])
        throughput = self.env_steps_per_second(env_steps)
        if log_now:
            self._log_training(rollout, terms, credited, value, throughput)
        return terms.loss.detach()

    def _log_training(self, rollout: dict[str, Tensor], terms, credited: Tensor, value: Tensor | None, throughput: float) -> None:
        logs = {
            "train/loss": terms.loss.detach(),
            "train/policy_loss": terms.policy_loss.detach(),
            "train/entropy": terms.entropy,
            "train/advantage": terms.advantage.abs().mean(),
            "train/env_steps": rollout["env_steps"].float(),
            "train/episodes": rollout["episodes"].float(),
            "train/env_steps_per_second": throughput,
        }
        if value is not None:
            logs["train/value_loss"] = terms.baseline_loss.detach()
            # 1 - Var(R - V) / Var(R): how much of the credited reward the critic explains
            logs["train/explained_variance"] = explained_variance(value.detach().flatten(), credited.flatten())
        if rollout["episode_return"].numel() > 0:
            logs["train/episode_return"] = rollout["episode_return"].mean()
            logs["train/episode_length"] = rollout["episode_length"].mean()
        self.log_dict(logs, batch_size=credited.numel())
