"""The score-function (REINFORCE) estimator: the one bridge across every non-differentiable step.

A network that samples an action ``a ~ pi_theta(a | s)`` and is rewarded by ``R`` cannot be trained
by backpropagating through the sample. The likelihood-ratio identity (Williams 1992, eq. 11;
Sutton & Barto 2018, eq. 13.8) gives the gradient of the expected reward anyway:

    grad_theta E[R] = E[(R - b) * grad_theta log pi_theta(a | s)]

for any baseline ``b`` that does not depend on the action. :class:`ScoreFunctionEstimator` returns a
surrogate loss whose gradient is the negative of that estimate, so an optimiser that minimises it
ascends the expected reward. Every model in gapbridge that crosses a discrete or sampled step calls
it; there is no second copy.

Baselines (control variates that lower the variance without moving the mean):

- ``none``: ``b = 0``.
- ``moving_average``: ``b`` is an exponential moving average of past rewards (NVIL's global baseline,
  Mnih & Gregor 2014, sec. 3.3).
- ``learned``: ``b = V(s)``, an input-dependent prediction the caller computes; it is regressed onto
  the reward with its own squared-error loss (NVIL's input-dependent baseline; the critic of
  actor-critic methods).
- ``self_critical``: ``b`` is the reward of the greedy action (Rennie et al. 2017).
- ``leave_one_out``: with ``S`` actions sampled per state, each one's baseline is the mean reward of
  the other ``S - 1`` (Kool et al. 2019); needs ``S >= 2`` along ``sample_dim``.

Advantage normalisation: ``running`` divides by ``max(1, running std)`` of the advantage (NVIL's
variance normalisation, which keeps the sign and relative scale across steps); ``batch`` standardises
within the batch (common in actor-critic code; it also recentres, so it acts as a second baseline);
``group`` standardises the samples drawn for the same state along ``sample_dim`` (GRPO, Shao et al.
2024, eq. 3): states whose samples all agree get no update and hard states are weighted up, which
changes the weighting of states in the objective, not the direction for any one state.
"""

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.errors import require

Baseline = Literal["none", "moving_average", "learned", "self_critical", "leave_one_out"]
AdvantageNormalization = Literal["none", "running", "batch", "group"]


@dataclass
class PolicyGradientTerms:
    """What one call of the estimator returns: the loss to minimise and the pieces worth logging.

    ``loss``, ``policy_loss`` and ``baseline_loss`` are differentiable (a caller may weigh the pieces
    itself); the rest are detached.
    """

    loss: Tensor  # policy_loss + value_coef * baseline_loss - entropy_coef * entropy
    policy_loss: Tensor  # -mean(advantage * log_prob): its gradient is the score-function estimate
    baseline_loss: Tensor  # squared error of a learned baseline, 0 otherwise
    entropy: Tensor  # mean policy entropy (0 if none was given)
    reward: Tensor  # mean reward
    advantage: Tensor  # R - b, detached, after normalisation; same shape as the reward
    baseline: Tensor  # b, detached, broadcast to the reward's shape


class ScoreFunctionEstimator(nn.Module):
    """Surrogate loss for the score-function gradient estimator with a choice of baseline.

    Args:
        baseline: which control variate ``b`` to subtract from the reward (see the module docstring).
        baseline_momentum: decay of the moving averages (baseline and running advantage variance).
        value_coef: weight of the learned baseline's regression loss in ``loss``.
        entropy_coef: weight of the entropy bonus (subtracted from ``loss``, so entropy is rewarded).
        normalize_advantage: ``none``, ``running`` (NVIL variance normalisation) or ``batch``.
    """

    def __init__(
        self,
        baseline: Baseline = "moving_average",
        baseline_momentum: float = 0.9,
        value_coef: float = 0.5,
        entropy_coef: float = 0.0,
        normalize_advantage: AdvantageNormalization = "none",
    ) -> None:
        super().__init__()
        require(baseline in Baseline.__args__, f"baseline must be one of {Baseline.__args__}, got {baseline!r}")
        require(
            normalize_advantage in AdvantageNormalization.__args__,
            f"normalize_advantage must be one of {AdvantageNormalization.__args__}, got {normalize_advantage!r}",
        )
        require(0.0 <= baseline_momentum < 1.0, f"baseline_momentum must be in [0, 1), got {baseline_momentum}")
        require(entropy_coef >= 0.0, f"entropy_coef must be >= 0, got {entropy_coef}")
        self.baseline = baseline
        self.baseline_momentum = baseline_momentum
        self.value_coef = value_coef
        self.entropy_coef = entropy_coef
        self.normalize_advantage = normalize_advantage
        # running statistics live in buffers so that checkpoints carry them and resumed runs continue
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("advantage_var", torch.ones(()))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def forward(
        self,
        log_prob: Tensor,
        reward: Tensor,
        *,
        entropy: Tensor | None = None,
        value: Tensor | None = None,
        greedy_reward: Tensor | None = None,
        sample_dim: int = 0,
        update_statistics: bool = True,
    ) -> PolicyGradientTerms:
        """Build the surrogate loss.

        Args:
            log_prob: ``log pi(a | s)`` of the sampled actions, differentiable w.r.t. the policy.
            reward: the reward each action earned; any shape equal to ``log_prob``'s. Not differentiated.
            entropy: the policy's entropy per state (any shape), for the entropy bonus and logging.
            value: the learned baseline's prediction, broadcastable to ``reward`` (``baseline="learned"``).
            greedy_reward: the greedy action's reward, broadcastable to ``reward`` (``"self_critical"``).
            sample_dim: the axis holding the samples drawn for the same state (``leave_one_out``, ``group``).
            update_statistics: update the moving averages (off when re-evaluating, e.g. to measure variance).
        """
        require(
            log_prob.shape == reward.shape,
            f"log_prob and reward must have the same shape, got {tuple(log_prob.shape)} and {tuple(reward.shape)}",
        )
        reward = reward.detach().float()
        baseline, baseline_loss = self._baseline(reward, value, greedy_reward, sample_dim)
        advantage = reward - baseline
        if update_statistics and self.training:
            self._update_statistics(reward, advantage)
        advantage = self._normalize(advantage, sample_dim)

        policy_loss = -(advantage * log_prob).mean()
        mean_entropy = entropy.mean() if entropy is not None else log_prob.new_zeros(())
        loss = policy_loss + self.value_coef * baseline_loss - self.entropy_coef * mean_entropy
        return PolicyGradientTerms(
            loss=loss,
            policy_loss=policy_loss,
            baseline_loss=baseline_loss,
            entropy=mean_entropy.detach(),
            reward=reward.mean(),
            advantage=advantage,
            baseline=baseline.expand_as(reward),
        )

    def _baseline(
        self, reward: Tensor, value: Tensor | None, greedy_reward: Tensor | None, sample_dim: int
    ) -> tuple[Tensor, Tensor]:
        zero = reward.new_zeros(())
        if self.baseline == "none":
            return zero, zero
        if self.baseline == "moving_average":
            # before the first update there is no average yet: the batch mean is the best guess
            started = self.num_updates > 0
            return torch.where(started, self.reward_mean, reward.mean()).detach(), zero
        if self.baseline == "learned":
            require(value is not None, "baseline='learned' needs the value prediction: pass value=V(s)")
            value = value.float()
            baseline_loss = F.mse_loss(value.expand_as(reward), reward)
            return value.detach(), baseline_loss
        if self.baseline == "self_critical":
            require(greedy_reward is not None, "baseline='self_critical' needs greedy_reward, the greedy action's reward")
            return greedy_reward.detach().float(), zero
        # leave_one_out
        num_samples = reward.shape[sample_dim]
        require(num_samples >= 2, f"baseline='leave_one_out' needs at least 2 samples along dim {sample_dim}, got {num_samples}")
        others = (reward.sum(dim=sample_dim, keepdim=True) - reward) / (num_samples - 1)
        return others, zero

    def _normalize(self, advantage: Tensor, sample_dim: int) -> Tensor:
        if self.normalize_advantage == "batch" and advantage.numel() > 1:
            return (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        if self.normalize_advantage == "group":
            require(advantage.shape[sample_dim] >= 2, f"normalize_advantage='group' needs at least 2 samples along dim {sample_dim}")
            centred = advantage - advantage.mean(dim=sample_dim, keepdim=True)
            return centred / (centred.std(dim=sample_dim, keepdim=True) + 1e-6)
        if self.normalize_advantage == "running":
            return advantage / self.advantage_var.sqrt().clamp(min=1.0)
        return advantage

    def _update_statistics(self, reward: Tensor, advantage: Tensor) -> None:
        """Exponential moving averages of the reward and of the squared advantage (first call: batch values)."""
        decay = torch.where(self.num_updates > 0, self.baseline_momentum, 0.0)
        self.reward_mean.copy_(decay * self.reward_mean + (1 - decay) * reward.mean())
        self.advantage_var.copy_(decay * self.advantage_var + (1 - decay) * advantage.pow(2).mean())
        self.num_updates += 1


def gradient_variance(surrogate: Callable[[], Tensor], parameters: Sequence[Tensor], repeats: int = 8) -> Tensor:
    """Variance of a stochastic gradient estimate, averaged over parameter coordinates.

    ``surrogate`` is called ``repeats`` times (each call draws fresh samples on the same inputs) and
    differentiated w.r.t. ``parameters``; the result is the per-coordinate sample variance across the
    repeats, averaged over all coordinates. This is how the estimators in gapbridge are compared on one
    number (e.g. REINFORCE vs reparameterisation for the VAE encoder).
    """
    require(repeats >= 2, f"gradient variance needs at least 2 repeats, got {repeats}")
    parameters = [p for p in parameters if p.requires_grad]
    estimates = []
    for _ in range(repeats):
        grads = torch.autograd.grad(surrogate(), parameters, allow_unused=True)
        estimates.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, parameters)]))
    return torch.stack(estimates).var(dim=0).mean()
