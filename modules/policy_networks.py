"""Policies and value functions for policy-gradient agents: plain ``nn.Module``s over flat observations.

A policy maps observations ``[B, obs_size]`` to a distribution over actions whose ``log_prob`` and
``entropy`` are one number per observation (a Gaussian sums over action dimensions), and to its mode,
the greedy action used for evaluation. Outputs are float32 even under autocast, so log-probabilities
keep full precision in bf16-mixed runs.
"""

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from modules.networks import Activation, mlp

LogStd = Literal["state_independent", "learned"]


def orthogonal_init(network: nn.Sequential, output_gain: float) -> None:
    """Orthogonal weights, zero biases: gain sqrt(2) on hidden layers, ``output_gain`` on the last (as OpenAI Baselines / SB3).

    A small output gain (0.01) starts the policy near uniform, a unit gain the value near zero.
    """
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        nn.init.orthogonal_(layer.weight, gain=output_gain if i == len(linears) - 1 else math.sqrt(2))
        nn.init.zeros_(layer.bias)


class CategoricalPolicy(nn.Module):
    """pi(a | s) = softmax(f(s))_a over ``num_actions`` discrete actions."""

    def __init__(
        self,
        observation_size: int,
        num_actions: int,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: Activation = "tanh",
        orthogonal: bool = True,
    ) -> None:
        super().__init__()
        self.logits = mlp([observation_size, *hidden_sizes, num_actions], activation)
        if orthogonal:
            orthogonal_init(self.logits, output_gain=0.01)

    def forward(self, obs: Tensor) -> Distribution:
        return Categorical(logits=self.logits(obs.float()).float(), validate_args=False)

    def sample(self, obs: Tensor) -> Tensor:
        """a ~ pi(. | s) by the Gumbel-max trick, argmax_a (logit_a + g_a): the same law as ``forward(obs).sample()``
        in a few tensor ops, for acting one env step at a time."""
        logits = self.logits(obs.float()).float()
        gumbel = -torch.empty_like(logits).exponential_().log()
        return (logits + gumbel).argmax(-1)

    def mode(self, obs: Tensor) -> Tensor:
        """The most probable action ``[B]``."""
        return self.logits(obs.float()).argmax(-1)


class GaussianPolicy(nn.Module):
    """pi(a | s) = N(mu(s), diag(sigma^2)), with log sigma one free vector (``state_independent``) or a second head (``learned``).

    Actions are sampled unbounded; the environment side clips them to the action space, and the
    log-probability is that of the unclipped sample (as SB3 and CleanRL do).
    """

    def __init__(
        self,
        observation_size: int,
        action_size: int,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: Activation = "tanh",
        log_std: LogStd = "state_independent",
        log_std_init: float = 0.0,
        orthogonal: bool = True,
    ) -> None:
        super().__init__()
        self.log_std_kind = log_std
        self.trunk = mlp([observation_size, *hidden_sizes], activation, activate_last=True)
        width = hidden_sizes[-1] if hidden_sizes else observation_size
        self.mean = nn.Linear(width, action_size)
        if orthogonal:
            orthogonal_init(nn.Sequential(self.trunk, self.mean), output_gain=0.01)
        if log_std == "learned":
            self.log_std_head = nn.Linear(width, action_size)
            nn.init.zeros_(self.log_std_head.weight)
            nn.init.constant_(self.log_std_head.bias, log_std_init)
        else:
            self.log_std = nn.Parameter(torch.full((action_size,), float(log_std_init)))

    def forward(self, obs: Tensor) -> Distribution:
        features = self.trunk(obs.float())
        mean = self.mean(features).float()
        log_std = self.log_std_head(features).float() if self.log_std_kind == "learned" else self.log_std.float().expand_as(mean)
        return Independent(Normal(mean, log_std.clamp(-20.0, 2.0).exp(), validate_args=False), 1, validate_args=False)

    def sample(self, obs: Tensor) -> Tensor:
        """a ~ N(mu(s), sigma(s)^2), ``[B, action_size]``."""
        return self(obs).sample()

    def mode(self, obs: Tensor) -> Tensor:
        """The mean action ``[B, action_size]``."""
        return self.mean(self.trunk(obs.float()))


class ValueNetwork(nn.Module):
    """V(s): the expected discounted return from ``s`` under the current policy, ``[B]``."""

    def __init__(self, observation_size: int, hidden_sizes: tuple[int, ...] = (64, 64), activation: Activation = "tanh", orthogonal: bool = True) -> None:
        super().__init__()
        self.net = mlp([observation_size, *hidden_sizes, 1], activation)
        if orthogonal:
            orthogonal_init(self.net, output_gain=1.0)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs.float()).squeeze(-1).float()
