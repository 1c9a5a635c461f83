"""Experience for value-based RL: gymnasium vector envs, epsilon-greedy collection into replay, greedy evaluation.

:class:`ExperienceDataModule` owns everything about *where experience comes from* (environment,
exploration schedule, replay buffer, how often and how much to train); the learner
(:class:`modules.dqn.DQN`) owns the loss, the discount, the target network and the optimiser. The
learner is reached for acting through ``trainer.lightning_module.q_network``.

One training "batch" is one collection cycle: step the vector env ``train_freq`` times with the
current Q-network, then draw ``gradient_steps`` minibatches at once (a tensor ``[gradient_steps,
batch_size, ...]``) that the learner consumes in one ``training_step``. An epoch is
``steps_per_epoch`` env steps; validation (greedy episodes) runs after each.
"""

import os
import pickle
import warnings
from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from lightning.pytorch import LightningDataModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from datamodules.replay import PrioritizedReplayBuffer, ReplayBuffer
from modules.errors import ConfigError, require


def make_env(env_id: str, env_kwargs: dict | None = None) -> gym.Env:
    """One environment; Atari ids (``ALE/...``) get the DQN preprocessing of Mnih et al. (2015).

    Atari: 84x84 grayscale frames, 4 frames per action (max over the last two), up to 30 no-op
    starts, and a stack of the last 4 frames, observed as uint8 ``[4, 84, 84]``.
    """
    kwargs = dict(env_kwargs or {})
    if env_id.startswith("ALE/"):
        try:
            import ale_py
        except ImportError as error:
            raise ConfigError(f"--data.init_args.env_id {env_id} needs ale-py; install it with: uv sync --extra atari") from error
        gym.register_envs(ale_py)
        kwargs.setdefault("frameskip", 1)  # AtariPreprocessing does the frame skipping
        env = gym.make(env_id, **kwargs)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True, scale_obs=False)
        return gym.wrappers.FrameStackObservation(env, stack_size=4)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as error:
        hint = " (Box2D envs need: uv sync --extra box2d)" if "LunarLander" in env_id or "box2d" in str(error).lower() else ""
        raise ConfigError(f"--data.init_args.env_id {env_id!r} cannot be made: {error}{hint}") from error
    except ImportError as error:
        raise ConfigError(f"--data.init_args.env_id {env_id!r} needs a missing package ({error}); for Box2D envs run: uv sync --extra box2d") from error


def make_vector_env(env_id: str, num_envs: int, env_kwargs: dict | None = None, vectorization: str = "sync") -> gym.vector.VectorEnv:
    """``num_envs`` copies stepped as one; a finished episode resets in the same step (its last obs in ``info``)."""
    fns = [lambda: make_env(env_id, env_kwargs) for _ in range(num_envs)]
    vector_cls = gym.vector.AsyncVectorEnv if vectorization == "async" else gym.vector.SyncVectorEnv
    return vector_cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)


def env_spaces(env_id: str, env_kwargs: dict | None = None) -> tuple[gym.Space, gym.Space]:
    """``(observation_space, action_space)`` of ``env_id``, read from one env made and closed at once."""
    env = make_env(env_id, env_kwargs)
    spaces = (env.observation_space, env.action_space)
    env.close()
    return spaces


def rank_seed(seed: int | None, trainer) -> int:
    """This process's env seed: ``seed`` (``None``: ``seed_everything``'s) plus ``10_000 * rank``.

    Under DDP every rank then plays different episodes; a datamodule outside a trainer is rank 0.
    """
    base = seed if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
    rank = trainer.global_rank if trainer is not None else 0
    return base + 10_000 * rank


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


class VectorEnvRunner:
    """Steps a vector env and keeps what every learner needs from it, in a form checkpoints can carry.

    Knows each step's true next observation (an episode that autoresets in the step has its last
    observation in ``info``, not in the returned ``obs``), the finished episodes' returns and lengths,
    and a numpy RNG for whatever the collector draws; :meth:`state_dict` holds the env state, the
    last observation, the RNG and the counters, so a resumed run acts as the uninterrupted one would.
    """

    def __init__(self, envs: gym.vector.VectorEnv, seed: int) -> None:
        self.envs = envs
        self.rng = np.random.default_rng(seed)
        self.num_envs = envs.num_envs
        self.obs, _ = envs.reset(seed=seed)
        self.env_steps = 0  # transitions collected, all envs together
        self.running_return = np.zeros(self.num_envs)
        self.running_length = np.zeros(self.num_envs, dtype=np.int64)
        self.episodes: list[tuple[int, float, int]] = []  # (env_steps at its end, return, length)

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every env; returns ``(reward, next_obs, terminated, truncated)``, ``next_obs`` being the true next state.

        ``active`` (bool per env, default all) says whose steps count: steps of inactive envs are not
        counted in ``env_steps`` and their episodes are not recorded (e.g. an env that has already
        finished the one episode a rollout wanted from it).
        """
        obs, reward, terminated, truncated, info = self.envs.step(actions)
        next_obs = obs
        if "_final_obs" in info:  # those envs were reset in this step: keep their true last observation
            next_obs = obs.copy()
            for env in np.flatnonzero(info["_final_obs"]):
                next_obs[env] = info["final_obs"][env]
        self.obs = obs
        counted = np.ones(self.num_envs, dtype=bool) if active is None else active
        self.env_steps += int(counted.sum())
        self.running_return += reward * counted
        self.running_length += counted
        for env in np.flatnonzero(counted & np.logical_or(terminated, truncated)):
            self.episodes.append((self.env_steps, float(self.running_return[env]), int(self.running_length[env])))
            self.running_return[env], self.running_length[env] = 0.0, 0
        return reward, next_obs, terminated, truncated

    def restart_episodes(self) -> None:
        """Reset every env to a new episode (seeded from the RNG), dropping unfinished ones."""
        self.obs, _ = self.envs.reset(seed=int(self.rng.integers(2**31)))
        self.running_return[:], self.running_length[:] = 0.0, 0

    def state_dict(self) -> dict:
        try:
            env_state = torch.frombuffer(bytearray(pickle.dumps(self.envs.envs)), dtype=torch.uint8)
        except Exception:  # e.g. emulators or physics engines that cannot be pickled
            env_state = None
        return {
            "env_state": env_state,
            "obs": torch.as_tensor(self.obs),
            "rng": self.rng.bit_generator.state,
            "env_steps": self.env_steps,
            "running_return": torch.as_tensor(self.running_return),
            "running_length": torch.as_tensor(self.running_length),
            "episodes": torch.tensor(self.episodes, dtype=torch.float64).reshape(-1, 3),
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = state["env_steps"]
        self.episodes = [(int(s), float(r), int(n)) for s, r, n in state["episodes"].tolist()]
        if state["env_state"] is not None and hasattr(self.envs, "envs"):
            self.envs.envs = pickle.loads(state["env_state"].numpy().tobytes())
            self.obs = state["obs"].numpy()
            self.running_return = state["running_return"].numpy().copy()
            self.running_length = state["running_length"].numpy().copy()
        else:
            warnings.warn(
                "the checkpoint holds no environment state (checkpoint_buffer=false, or envs that cannot be pickled, "
                "e.g. vectorization=async): resumed training starts new episodes",
                stacklevel=2,
            )
            self.restart_episodes()


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
def evaluate_policy(act: Callable[[np.ndarray], np.ndarray], envs: gym.vector.VectorEnv, episodes: int, seed: int) -> dict[str, Tensor]:
    """Returns and lengths of ``episodes`` episodes acted by ``act`` (observations to actions), ``envs.num_envs`` at a time.

    Round ``i`` resets the envs with ``seed + i * num_envs``, so the same seed plays the same start states.
    """
    returns, lengths = [], []
    round_seed = seed
    while len(returns) < episodes:
        obs, _ = envs.reset(seed=round_seed)
        round_seed += envs.num_envs
        running = np.zeros(envs.num_envs)
        steps = np.zeros(envs.num_envs, dtype=np.int64)
        active = np.ones(envs.num_envs, dtype=bool)
        active[episodes - len(returns):] = False  # the last round may need fewer envs
        while active.any():
            obs, reward, terminated, truncated, _ = envs.step(act(obs))
            running += reward * active
            steps += active
            for env in np.flatnonzero(active & (terminated | truncated)):
                returns.append(float(running[env]))
                lengths.append(int(steps[env]))
                active[env] = False
    return {"episode_return": torch.tensor(returns), "episode_length": torch.tensor(lengths, dtype=torch.float32)}


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
class CollectionCycle:
    """Request for one training batch; the datamodule fulfils it with fresh experience just before the step."""

    index: int


@dataclass
class EvaluationRound:
    """Request for one batch of greedy evaluation episodes starting from ``seed``."""

    seed: int


@dataclass
class RecordingRequest:
    """Request to play one greedy episode from ``seed`` and keep its rendered frames (``predict``)."""

    seed: int


class Requests(IterableDataset):
    """Yields ``count`` requests, fulfilled in :meth:`ExperienceDataModule.on_before_batch_transfer` (see there for why)."""

    def __init__(self, make, count: int) -> None:
        self.make, self.count = make, count

    def __iter__(self):
        return (self.make(i) for i in range(self.count))

    def __len__(self) -> int:
        return self.count


class ExperienceDataModule(LightningDataModule):
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
        super().__init__()
        require(num_envs >= 1, f"--data.init_args.num_envs must be at least 1, got {num_envs}")
        require(vectorization in ("sync", "async"), f"--data.init_args.vectorization must be 'sync' or 'async', got {vectorization!r}")
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
        require(eval_episodes >= 1 and eval_num_envs >= 1, "--data.init_args.eval_episodes and eval_num_envs must be at least 1")
        require(predict_episodes >= 1 and record_max_frames >= 1, "--data.init_args.predict_episodes and record_max_frames must be at least 1")
        self.save_hyperparameters()
        self._spaces: tuple[gym.Space, gym.Space] | None = None
        self.render_env: gym.Env | None = None
        self.collector: EpsilonGreedyCollector | None = None
        self.eval_envs: gym.vector.VectorEnv | None = None
        self._pending_state: dict | None = None

    # ---- what the learner needs to know before any env runs ---------------------------------
    def _probe_spaces(self) -> tuple[gym.Space, gym.Space]:
        if self._spaces is None:
            self._spaces = env_spaces(self.hparams.env_id, self.hparams.env_kwargs)
        return self._spaces

    @property
    def observation_space(self) -> gym.Space:
        return self._probe_spaces()[0]

    @property
    def action_space(self) -> gym.Space:
        return self._probe_spaces()[1]

    @property
    def buffer(self) -> ReplayBuffer:
        return self.collector.buffer

    @property
    def episodes(self) -> list[tuple[int, float, int]]:
        """Finished training episodes on this rank as (env steps at the end, return, length)."""
        return self.collector.episodes if self.collector is not None else []

    @property
    def env_steps(self) -> int:
        return self.collector.env_steps if self.collector is not None else 0

    # ---- Lightning hooks --------------------------------------------------------------------
    def _seed(self) -> int:
        return rank_seed(self.hparams.seed, self.trainer)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        seed = self._seed()
        if stage == "fit" and self.collector is None:
            obs_space = self.observation_space
            buffer_cls = PrioritizedReplayBuffer if hp.prioritized else ReplayBuffer
            extra = {"alpha": hp.prioritized_alpha, "eps": hp.prioritized_eps} if hp.prioritized else {}
            dtype = torch.uint8 if obs_space.dtype == np.uint8 else torch.float32
            buffer = buffer_cls(hp.buffer_size, hp.num_envs, obs_space.shape, dtype, n_step=hp.n_step, device=hp.buffer_device, seed=seed, **extra)
            envs = make_vector_env(hp.env_id, hp.num_envs, hp.env_kwargs, hp.vectorization)
            schedule = LinearSchedule(hp.exploration_initial_eps, hp.exploration_final_eps, hp.exploration_steps)
            self.collector = EpsilonGreedyCollector(envs, buffer, schedule, seed=seed, clip_rewards=hp.clip_rewards)
            self.beta = LinearSchedule(hp.prioritized_beta, 1.0, hp.prioritized_beta_steps)
        if stage == "predict" and self.render_env is None:
            self.render_env = self._make_render_env()
        if self.eval_envs is None and stage != "predict":
            self.eval_envs = make_vector_env(hp.env_id, min(hp.eval_num_envs, hp.eval_episodes), hp.env_kwargs, hp.vectorization)
        if self._pending_state is not None and self.collector is not None:
            self._load_now(self._pending_state)
            self._pending_state = None

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
        if stage == "fit" and self.collector is not None:
            self.collector.envs.close()
        if self.eval_envs is not None and stage != "fit":
            self.eval_envs.close()
            self.eval_envs = None

    def train_dataloader(self) -> DataLoader:
        cycles = self.hparams.steps_per_epoch // (self.hparams.train_freq * self.hparams.num_envs)
        return DataLoader(Requests(CollectionCycle, cycles), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(Requests(lambda i: EvaluationRound(self._seed() + 1_000_000), 1), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(Requests(lambda i: EvaluationRound(self._seed() + 2_000_000), 1), batch_size=None)

    def predict_dataloader(self) -> DataLoader:
        first = self._seed() + 3_000_000
        return DataLoader(Requests(lambda i: RecordingRequest(first + i), self.hparams.predict_episodes), batch_size=None)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        # Experience is made here rather than in the dataset's iterator: Lightning fetches one item
        # ahead of the step it runs, so an iterator that stepped the envs would act with a Q-network
        # one update cycle older than the one that has just been trained.
        q_network = self.trainer.lightning_module.q_network
        if isinstance(batch, CollectionCycle):
            return self.next_cycle(q_network)
        if isinstance(batch, EvaluationRound):
            return evaluate_greedy(q_network, self.eval_envs, self.hparams.eval_episodes, batch.seed)
        if isinstance(batch, RecordingRequest):
            return record_greedy_episode(q_network, self.render_env, batch.seed, self.hparams.record_max_frames)
        return batch

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

    # ---- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        if self.collector is None:
            return {}
        state = {"collector": self.collector.state_dict()}
        if self.hparams.checkpoint_buffer:
            state["buffer"] = self.buffer.state_dict()
        else:
            state["collector"]["env_state"] = None
        return state

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        if self.collector is None:  # restored before setup (e.g. load_from_checkpoint)
            self._pending_state = state
        else:
            self._load_now(state)

    def _load_now(self, state: dict) -> None:
        self.collector.load_state_dict(state["collector"])
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
