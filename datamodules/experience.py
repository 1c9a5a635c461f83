"""Experience for value-based RL: epsilon-greedy collection into replay, greedy evaluation and recording.

:class:`ExperienceDataModule` owns everything about *where experience comes from* (environment,
exploration schedule, replay buffer, how often and how much to train); the learner
(:class:`modules.dqn.DQN`) owns the loss, the discount, the target network and the optimiser. The
learner is reached for acting through ``trainer.lightning_module.q_network``. The environments
themselves, their seeds, evaluation loaders and checkpointed state are the shared
:class:`datamodules.environments.EnvironmentDataModule`'s.

One training "batch" is one collection cycle: step the vector env ``train_freq`` times with the
current Q-network, then draw ``gradient_steps`` minibatches at once (a tensor ``[gradient_steps,
batch_size, ...]``) that the learner consumes in one ``training_step``. An epoch is
``steps_per_epoch`` env steps; validation (greedy episodes) runs after each.
"""

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.utils.data import DataLoader

from datamodules.environments import EnvironmentDataModule, Requests, VectorEnvRunner, evaluate_policy, make_env
from datamodules.replay import PrioritizedReplayBuffer, ReplayBuffer
from modules.errors import ConfigError, require


@dataclass
class LinearSchedule:
    """A value moving linearly from ``start`` to ``end`` over ``duration`` steps, then constant."""

    start: float
    end: float
    duration: int

    def __call__(self, step: int) -> float:
        fraction = min(step / self.duration, 1.0) if self.duration > 0 else 1.0
        return self.start + fraction * (self.end - self.start)


@torch.no_grad()
def greedy_actions(q_network: nn.Module, obs: np.ndarray) -> np.ndarray:
    device = next(q_network.parameters()).device
    return q_network(torch.as_tensor(obs, device=device)).argmax(1).cpu().numpy()


class EpsilonGreedyCollector(VectorEnvRunner):
    """Steps a vector env with an epsilon-greedy policy on a Q-network and writes each step to replay.

    Keeps everything needed to continue exactly where it stopped (env state, last observation,
    exploration RNG, step counter), so a resumed run acts as the uninterrupted one would.
    """

    def __init__(self, envs: gym.vector.VectorEnv, buffer: ReplayBuffer, epsilon: LinearSchedule, seed: int, clip_rewards: bool = False) -> None:
        super().__init__(envs, seed)
        self.buffer = buffer
        self.epsilon = epsilon
        self.clip_rewards = clip_rewards
        self.num_actions = int(envs.single_action_space.n)

    def collect(self, q_network: nn.Module, vector_steps: int) -> None:
        for _ in range(vector_steps):
            explore = self.rng.random(self.num_envs) < self.epsilon(self.env_steps)
            actions = self.rng.integers(self.num_actions, size=self.num_envs)
            if not explore.all():
                actions = np.where(explore, actions, greedy_actions(q_network, self.obs))
            obs = self.obs
            reward, next_obs, terminated, truncated = self.step(actions)
            self.buffer.add(obs, actions, np.sign(reward) if self.clip_rewards else reward, next_obs, terminated, truncated)


@torch.no_grad()
def evaluate_greedy(q_network: nn.Module, envs: gym.vector.VectorEnv, episodes: int, seed: int) -> dict[str, Tensor]:
    """Returns and lengths of ``episodes`` greedy episodes, in rounds of ``envs.num_envs`` parallel episodes."""
    return evaluate_policy(lambda obs: greedy_actions(q_network, obs), envs, episodes, seed)


@torch.no_grad()
def record_greedy_episode(q_network: nn.Module, env: gym.Env, seed: int, max_frames: int) -> dict:
    """One greedy episode from ``seed`` on an env made with ``render_mode="rgb_array"``, with its frames.

    Returns ``episode_return`` and ``episode_length`` as one-element tensors and ``frames``, a uint8
    array ``[T, H, W, 3]`` of the first ``max_frames`` renders (the start state included); frames stay
    a NumPy array so that moving the batch to an accelerator leaves them where they are.
    """
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    episode_return, length, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(int(greedy_actions(q_network, obs[None])[0]))
        episode_return, length, done = episode_return + float(reward), length + 1, terminated or truncated
        if len(frames) < max_frames:
            frames.append(env.render())
    return {
        "episode_return": torch.tensor([episode_return]),
        "episode_length": torch.tensor([float(length)]),
        "frames": np.stack(frames),
    }


@dataclass
class RecordingRequest:
    """Request to play one greedy episode from ``seed`` and keep its rendered frames (``predict``)."""

    seed: int


class ExperienceDataModule(EnvironmentDataModule):
    """Gymnasium env + epsilon-greedy collection + replay, served to a value-based learner one cycle at a time.

    Args:
        env_id: gymnasium id; ``ALE/...`` ids get Atari preprocessing (needs ``uv sync --extra atari``).
        env_kwargs: keyword arguments for ``gym.make``.
        num_envs: environments stepped in parallel (one batched Q-network call per step).
        vectorization: ``sync`` (one process; best for cheap envs) or ``async`` (a process per env).
        seed: seeds envs, exploration and sampling; ``None`` takes ``seed_everything``'s seed. Each
            DDP rank adds ``10_000 * rank``.
        buffer_size: transitions kept in replay (all envs together).
        buffer_device: where replay lives (``cuda`` keeps sampling on the GPU).
        batch_size: transitions per minibatch.
        learning_starts: no training until this many env steps were collected.
        train_freq: vector-env steps per collection cycle (``train_freq * num_envs`` transitions).
        gradient_steps: minibatches (gradient steps) per collection cycle.
        steps_per_epoch: env steps per epoch; greedy evaluation runs after each. A multiple of
            ``train_freq * num_envs``.
        n_step: transitions are served as n-step returns (the learner discounts them).
        exploration_initial_eps, exploration_final_eps, exploration_steps: epsilon decays linearly
            from the first to the second over ``exploration_steps`` env steps.
        prioritized: proportional prioritised replay (Schaul et al. 2016).
        prioritized_alpha, prioritized_eps: priority p = (|td error| + eps)^alpha.
        prioritized_beta, prioritized_beta_steps: importance-sampling exponent, annealed linearly to
            1 over ``prioritized_beta_steps`` env steps.
        clip_rewards: store sign(reward) (Atari); logged returns stay unclipped.
        eval_episodes: greedy episodes per validation (and per test).
        eval_num_envs: environments used in parallel for evaluation.
        checkpoint_buffer: save replay (and env state) in checkpoints so a resumed run continues
            exactly; turn off for very large buffers (a resumed run then refills replay first).
        predict_episodes: greedy episodes that ``predict`` plays and renders (one batch each; the
            ``callbacks.episode_video.EpisodeVideo`` callback writes them as GIFs).
        record_max_frames: frames kept per recorded episode (the episode itself runs to its end).
    """

    PREDICT_SEED_OFFSET = 3_000_000  # recorded episodes start apart from training, validation and test

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        env_kwargs: dict | None = None,
        num_envs: int = 1,
        vectorization: str = "sync",
        seed: int | None = None,
        buffer_size: int = 100_000,
        buffer_device: str = "cpu",
        batch_size: int = 64,
        learning_starts: int = 1000,
        train_freq: int = 256,
        gradient_steps: int = 128,
        steps_per_epoch: int = 2048,
        n_step: int = 1,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.04,
        exploration_steps: int = 8000,
        prioritized: bool = False,
        prioritized_alpha: float = 0.6,
        prioritized_eps: float = 1e-6,
        prioritized_beta: float = 0.4,
        prioritized_beta_steps: int = 100_000,
        clip_rewards: bool = False,
        eval_episodes: int = 20,
        eval_num_envs: int = 10,
        checkpoint_buffer: bool = True,
        predict_episodes: int = 1,
        record_max_frames: int = 1000,
    ) -> None:
        super().__init__(num_envs, vectorization, eval_episodes, eval_num_envs)
        require(batch_size >= 1, f"--data.init_args.batch_size must be at least 1, got {batch_size}")
        require(train_freq >= 1 and gradient_steps >= 0, "--data.init_args.train_freq must be >= 1 and gradient_steps >= 0")
        require(n_step >= 1, f"--data.init_args.n_step must be at least 1, got {n_step}")
        require(
            steps_per_epoch >= train_freq * num_envs and steps_per_epoch % (train_freq * num_envs) == 0,
            f"--data.init_args.steps_per_epoch ({steps_per_epoch}) must be a multiple of train_freq * num_envs "
            f"({train_freq} * {num_envs}); e.g. {max(1, round(steps_per_epoch / (train_freq * num_envs))) * train_freq * num_envs}",
        )
        require(buffer_size >= batch_size and buffer_size // num_envs > n_step, f"--data.init_args.buffer_size ({buffer_size}) must exceed batch_size and n_step * num_envs")
        require(
            n_step * num_envs <= learning_starts < (buffer_size // num_envs) * num_envs,
            f"--data.init_args.learning_starts ({learning_starts}) must be at least n_step * num_envs and below buffer_size",
        )
        require(0.0 <= exploration_final_eps <= 1.0 and 0.0 <= exploration_initial_eps <= 1.0, "--data.init_args.exploration_*_eps must lie in [0, 1]")
        require(predict_episodes >= 1 and record_max_frames >= 1, "--data.init_args.predict_episodes and record_max_frames must be at least 1")
        self.save_hyperparameters()
        self.render_env: gym.Env | None = None
        self.beta = LinearSchedule(prioritized_beta, 1.0, prioritized_beta_steps)

    @property
    def buffer(self) -> ReplayBuffer:
        return self.collector.buffer

    @property
    def batches_per_epoch(self) -> int:
        return self.hparams.steps_per_epoch // (self.hparams.train_freq * self.hparams.num_envs)

    def make_collector(self, envs: gym.vector.VectorEnv, seed: int) -> EpsilonGreedyCollector:
        hp = self.hparams
        obs_space = self.observation_space
        buffer_cls = PrioritizedReplayBuffer if hp.prioritized else ReplayBuffer
        extra = {"alpha": hp.prioritized_alpha, "eps": hp.prioritized_eps} if hp.prioritized else {}
        dtype = torch.uint8 if obs_space.dtype == np.uint8 else torch.float32
        buffer = buffer_cls(hp.buffer_size, hp.num_envs, obs_space.shape, dtype, n_step=hp.n_step, device=hp.buffer_device, seed=seed, **extra)
        schedule = LinearSchedule(hp.exploration_initial_eps, hp.exploration_final_eps, hp.exploration_steps)
        return EpsilonGreedyCollector(envs, buffer, schedule, seed=seed, clip_rewards=hp.clip_rewards)

    # ---- Lightning hooks --------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "predict" and self.render_env is None:
            self.render_env = self._make_render_env()

    def _make_render_env(self) -> gym.Env:
        hp = self.hparams
        env = make_env(hp.env_id, {**(hp.env_kwargs or {}), "render_mode": "rgb_array"})
        try:
            env.reset(seed=0)
            frame = env.render()
        except Exception as error:  # a missing display library, an env without rgb_array rendering
            raise ConfigError(f"predict records episodes, but {hp.env_id} cannot render rgb_array frames here: {error}") from error
        if not isinstance(frame, np.ndarray) or frame.ndim != 3:
            raise ConfigError(f"predict records episodes, but {hp.env_id} renders no rgb_array frame (got {type(frame).__name__})")
        return env

    def teardown(self, stage: str) -> None:
        if stage == "predict" and self.render_env is not None:
            self.render_env.close()
            self.render_env = None
        super().teardown(stage)

    def predict_dataloader(self) -> DataLoader:
        first = self._seed() + self.PREDICT_SEED_OFFSET
        return DataLoader(Requests(lambda i: RecordingRequest(first + i), self.hparams.predict_episodes), batch_size=None)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, RecordingRequest):
            q_network = self.trainer.lightning_module.q_network
            return record_greedy_episode(q_network, self.render_env, batch.seed, self.hparams.record_max_frames)
        return super().on_before_batch_transfer(batch, dataloader_idx)

    def training_batch(self, learner: LightningModule) -> dict[str, Tensor]:
        return self.next_cycle(learner.q_network)

    def evaluation_batch(self, learner: LightningModule, seed: int) -> dict[str, Tensor]:
        return evaluate_greedy(learner.q_network, self.eval_envs, self.hparams.eval_episodes, seed)

    def next_cycle(self, q_network: nn.Module) -> dict[str, Tensor]:
        """Collect ``train_freq`` vector steps, then draw the cycle's minibatches ``[gradient_steps, batch_size, ...]``."""
        hp = self.hparams
        self.collector.collect(q_network, hp.train_freq)
        # counted in replay rather than env steps so that a run resumed without its buffer refills it first
        if len(self.buffer) > hp.learning_starts and hp.gradient_steps > 0:
            if isinstance(self.buffer, PrioritizedReplayBuffer):
                self.buffer.beta = self.beta(self.collector.env_steps)
            flat = self.buffer.sample(hp.gradient_steps * hp.batch_size)
            batch = {k: v.reshape(hp.gradient_steps, hp.batch_size, *v.shape[1:]) for k, v in flat.items()}
        else:
            batch = {}
        batch["env_steps"] = torch.tensor(self.collector.env_steps)
        batch["epsilon"] = torch.tensor(self.collector.epsilon(self.collector.env_steps))
        return batch

    def update_priorities(self, index: Tensor, td_error: Tensor) -> None:
        """Give sampled transitions their new TD errors (a no-op for uniform replay)."""
        if isinstance(self.buffer, PrioritizedReplayBuffer):
            self.buffer.update_priorities(index.reshape(-1), td_error.reshape(-1))

    # ---- checkpointing: replay too, unless it is too large to save ------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        if not state:
            return state
        if self.hparams.checkpoint_buffer:
            state["buffer"] = self.buffer.state_dict()
        else:
            state["collector"]["env_state"] = None
        return state

    def _load_now(self, state: dict) -> None:
        super()._load_now(state)
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
