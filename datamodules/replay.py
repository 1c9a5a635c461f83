"""Experience replay: a circular buffer of transitions served as n-step transitions, uniformly or by priority.

The buffer knows nothing of Lightning, of the Q-network or of the discount: it returns the ``n``
rewards that follow a transition (zero after its episode ends) and how many steps to bootstrap
over, and the learner applies ``gamma`` (see :class:`modules.dqn.DQN`).
"""

import math

import numpy as np
import torch
from torch import Tensor


class ReplayBuffer:
    """Preallocated circular store of ``(obs, action, reward, next_obs, terminated, truncated)`` transitions.

    Transitions from ``num_envs`` parallel environments are stored side by side: slot ``t`` holds
    one transition per environment, so the transition that follows ``(t, e)`` in its episode is
    ``(t + 1, e)``. That layout lets :meth:`sample` build n-step transitions at sampling time:

        R_t^(n) = sum_{k < m} gamma^k r_{t+k},   bootstrap from next_obs_{t+m-1} with gamma^m,

    where ``m <= n`` stops at the first step whose episode ended (terminated *or* truncated), and
    ``terminated`` is taken from that last step ``t+m-1``: a truncated episode still bootstraps, a
    terminated one does not. The newest ``n - 1`` slots are not sampled until their look-ahead exists.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        observation_shape: tuple[int, ...],
        observation_dtype: torch.dtype = torch.float32,
        n_step: int = 1,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        self.slots = max(capacity // num_envs, n_step + 1)
        self.num_envs = num_envs
        self.n_step = n_step
        self.device = torch.device(device)
        shape = (self.slots, num_envs)
        self.storage = {
            "obs": torch.zeros(shape + tuple(observation_shape), dtype=observation_dtype, device=self.device),
            "next_obs": torch.zeros(shape + tuple(observation_shape), dtype=observation_dtype, device=self.device),
            "action": torch.zeros(shape, dtype=torch.long, device=self.device),
            "reward": torch.zeros(shape, dtype=torch.float32, device=self.device),
            "terminated": torch.zeros(shape, dtype=torch.bool, device=self.device),
            "episode_end": torch.zeros(shape, dtype=torch.bool, device=self.device),
        }
        # on CPU, numpy views of the same memory make the per-step writes ~10x cheaper than tensor indexing
        self._views = {k: v.numpy() for k, v in self.storage.items()} if self.device.type == "cpu" else None
        self.position = 0  # next slot to write
        self.filled = 0  # slots holding data
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @property
    def capacity(self) -> int:
        return self.slots * self.num_envs

    def __len__(self) -> int:
        return self.filled * self.num_envs

    @property
    def sampleable_slots(self) -> int:
        return max(self.filled - (self.n_step - 1), 0)

    def add(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Store one vector-env step: each argument has a leading ``num_envs`` dimension (numpy arrays)."""
        values = {
            "obs": obs,
            "next_obs": next_obs,
            "action": action,
            "reward": reward,
            "terminated": terminated,
            "episode_end": np.logical_or(terminated, truncated),
        }
        for name, value in values.items():
            if self._views is not None:
                self._views[name][self.position] = value
            else:
                self.storage[name][self.position] = torch.as_tensor(value, device=self.device)
        self._on_write(self.position)
        self.position = (self.position + 1) % self.slots
        self.filled = min(self.filled + 1, self.slots)

    def _on_write(self, slot: int) -> None:
        """Hook for subclasses that index slots (priorities)."""

    def sample_indices(self, count: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """``count`` uniformly drawn (slot, env) pairs and no importance weights."""
        oldest = self.position if self.filled == self.slots else 0
        offset = torch.randint(self.sampleable_slots, (count,), generator=self.generator, device=self.device)
        env = torch.randint(self.num_envs, (count,), generator=self.generator, device=self.device)
        return (oldest + offset) % self.slots, env, None

    def sample(self, count: int) -> dict[str, Tensor]:
        """``count`` n-step transitions: obs, action, rewards [count, n], next_obs, terminated, bootstrap_steps, index."""
        slot, env, weights = self.sample_indices(count)
        batch = self.gather(slot, env)
        if weights is not None:
            batch["weights"] = weights
        return batch

    def gather(self, slot: Tensor, env: Tensor) -> dict[str, Tensor]:
        s = self.storage
        lookahead = (slot[:, None] + torch.arange(self.n_step, device=self.device)) % self.slots  # [B, n]
        env_n = env[:, None].expand_as(lookahead)
        ended = s["episode_end"][lookahead, env_n]
        # step k belongs to the sampled transition's episode iff none of steps 0..k-1 ended it
        same_episode = torch.ones_like(ended)
        same_episode[:, 1:] = torch.cumprod(~ended[:, :-1], dim=1).bool()
        bootstrap_steps = same_episode.sum(1)  # m in [1, n]
        last = (slot + bootstrap_steps - 1) % self.slots
        return {
            "obs": s["obs"][slot, env],
            "action": s["action"][slot, env],
            "rewards": s["reward"][lookahead, env_n] * same_episode,
            "next_obs": s["next_obs"][last, env],
            "terminated": s["terminated"][last, env],
            "bootstrap_steps": bootstrap_steps,
            "index": slot * self.num_envs + env,
        }

    def state_dict(self) -> dict:
        return {
            "storage": {k: v.clone() for k, v in self.storage.items()},
            "position": self.position,
            "filled": self.filled,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for name, value in state["storage"].items():
            if value.shape != self.storage[name].shape:
                raise ValueError(f"replay buffer {name} has shape {tuple(value.shape)} in the checkpoint, {tuple(self.storage[name].shape)} here")
            self.storage[name].copy_(value)
        self.position, self.filled = state["position"], state["filled"]
        self.generator.set_state(state["generator"])


class SumTree:
    """Binary tree whose every node holds the sum of its children: O(log N) update and prefix-sum search.

    Leaves are stored in a power-of-two array in float64 so that long runs of updates do not drift.
    Both operations are vectorised over a batch of leaves (one tensor op per tree level).
    """

    def __init__(self, size: int, device: str | torch.device = "cpu") -> None:
        self.size = size
        self.leaf_start = 1 << max(math.ceil(math.log2(max(size, 1))), 0)
        self.nodes = torch.zeros(2 * self.leaf_start, dtype=torch.float64, device=device)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def __getitem__(self, leaf: Tensor) -> Tensor:
        return self.nodes[leaf + self.leaf_start]

    def update(self, leaf: Tensor, value: Tensor) -> None:
        node = leaf + self.leaf_start
        self.nodes[node] = value.to(self.nodes.dtype)
        node = torch.unique(node // 2)
        while node.numel() and int(node[0]) >= 1:
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]
            if int(node[0]) == 1:
                break
            node = torch.unique(node // 2)

    def find(self, prefix_sum: Tensor) -> Tensor:
        """The leaf ``i`` with ``sum(leaves[:i]) <= prefix_sum < sum(leaves[:i+1])`` for each value."""
        node = torch.ones_like(prefix_sum, dtype=torch.long)
        value = prefix_sum.to(self.nodes.dtype).clone()
        for _ in range(self.leaf_start.bit_length() - 1):  # one level per iteration, root to leaves
            left = 2 * node
            left_sum = self.nodes[left]
            go_right = value >= left_sum
            value = torch.where(go_right, value - left_sum, value)
            node = torch.where(go_right, left + 1, left)
        return (node - self.leaf_start).clamp_(max=self.size - 1)


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritised replay (Schaul et al. 2016, Sec. 3.3 and Alg. 1).

    A transition is drawn with probability P(i) = p_i^alpha / sum_k p_k^alpha, where p_i = |delta_i| + eps
    is its last TD error (new transitions get the largest priority seen so far), and its loss is
    weighted by w_i = (N P(i))^-beta / max_j w_j (max over the batch) to undo the bias; ``beta`` is
    annealed to 1 by the caller (:class:`datamodules.experience.ExperienceDataModule`).
    """

    def __init__(self, *args, alpha: float = 0.6, eps: float = 1e-6, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.alpha = alpha
        self.eps = eps
        self.beta = 0.4
        self.tree = SumTree(self.capacity, device=self.device)
        self.max_priority = 1.0

    def _on_write(self, slot: int) -> None:
        envs = torch.arange(self.num_envs, device=self.device)
        # the slot just written has no n-step look-ahead yet: unsampleable until n-1 more writes
        self.tree.update(slot * self.num_envs + envs, torch.zeros(self.num_envs, device=self.device))
        ready = (slot - (self.n_step - 1)) % self.slots
        if self.filled + 1 >= self.n_step:
            self.tree.update(ready * self.num_envs + envs, torch.full((self.num_envs,), self.max_priority**self.alpha, device=self.device))

    def sample_indices(self, count: int) -> tuple[Tensor, Tensor, Tensor]:
        total = self.tree.total
        # stratified: one draw from each of ``count`` equal segments of the priority mass
        segment = total / count
        uniform = torch.rand(count, generator=self.generator, device=self.device, dtype=torch.float64)
        leaf = self.tree.find((torch.arange(count, device=self.device, dtype=torch.float64) + uniform) * segment)
        probability = (self.tree[leaf] / total).clamp_min(1e-12)
        weights = (self.sampleable_slots * self.num_envs * probability).pow(-self.beta)
        weights = (weights / weights.max()).float()
        return leaf // self.num_envs, leaf % self.num_envs, weights

    def update_priorities(self, index: Tensor, td_error: Tensor) -> None:
        priority = td_error.detach().abs().to(self.device, torch.float64) + self.eps
        self.max_priority = max(self.max_priority, float(priority.max()))
        # indices drawn twice in a batch: the later error wins, as in a sequential update
        self.tree.update(index.to(self.device), priority.pow(self.alpha))

    def state_dict(self) -> dict:
        return super().state_dict() | {"tree": self.tree.nodes.clone(), "max_priority": self.max_priority, "beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.tree.nodes.copy_(state["tree"])
        self.max_priority, self.beta = state["max_priority"], state["beta"]
