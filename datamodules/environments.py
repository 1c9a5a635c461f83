"""Gymnasium environments as a datamodule: what every learner that acts in an environment shares.

Making environments (:func:`make_env`, :func:`make_vector_env`), stepping a vector env with state a
checkpoint can carry (:class:`VectorEnvRunner`), playing evaluation episodes from fixed start states
(:func:`evaluate_policy`), and :class:`EnvironmentDataModule`, the base of the value-based
(:class:`datamodules.experience.ExperienceDataModule`) and the policy-gradient
(:class:`datamodules.rollouts.RolloutDataModule`) datamodules. The base owns the envs of each DDP rank,
their seeds, the evaluation loaders, teardown and the checkpointed env state; a subclass says how a
training batch is collected and how the learner acts when evaluated.
"""

import os
import pickle
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from lightning.pytorch import LightningDataModule, LightningModule
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

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


@dataclass
class CollectionCycle:
    """Request for one training batch; the datamodule fulfils it with fresh experience just before the step."""

    index: int


@dataclass
class EvaluationRound:
    """Request for one batch of greedy evaluation episodes starting from ``seed``."""

    seed: int


class Requests(IterableDataset):
    """Yields ``count`` requests, fulfilled in :meth:`EnvironmentDataModule.on_before_batch_transfer` (see there for why)."""

    def __init__(self, make, count: int) -> None:
        self.make, self.count = make, count

    def __iter__(self):
        return (self.make(i) for i in range(self.count))

    def __len__(self) -> int:
        return self.count


class EnvironmentDataModule(LightningDataModule, ABC):
    """Gymnasium vector envs on each rank, served to a learner that acts in them: the base of the RL datamodules.

    Owns the training envs (stepped by :attr:`collector`, a :class:`VectorEnvRunner` the subclass
    makes in :meth:`make_collector`), the evaluation envs, the seeds (each DDP rank adds ``10_000 *
    rank``; validation and test play from fixed start states of their own), teardown, and the
    checkpointed env state and counters, so a resumed run continues where it stopped. A subclass
    fills in :meth:`training_batch` (one batch of fresh experience) and :meth:`evaluation_batch`
    (the learner's greedy episodes) and :attr:`batches_per_epoch`. Its ``__init__`` takes the options
    read here as typed arguments (``env_id``, ``env_kwargs``, ``num_envs``, ``vectorization``,
    ``seed``, ``eval_episodes``, ``eval_num_envs``: LightningCLI exposes them), passes the ones
    checked here to this ``__init__``, checks its own and calls ``save_hyperparameters()``.
    """

    # offsets of the evaluation start states from the rank's seed: never the training episodes
    VAL_SEED_OFFSET, TEST_SEED_OFFSET = 1_000_000, 2_000_000

    def __init__(self, num_envs: int, vectorization: str, eval_episodes: int, eval_num_envs: int) -> None:
        super().__init__()
        require(num_envs >= 1, f"--data.init_args.num_envs must be at least 1, got {num_envs}")
        require(vectorization in ("sync", "async"), f"--data.init_args.vectorization must be 'sync' or 'async', got {vectorization!r}")
        require(eval_episodes >= 1 and eval_num_envs >= 1, "--data.init_args.eval_episodes and eval_num_envs must be at least 1")
        self._spaces: tuple[gym.Space, gym.Space] | None = None
        self.collector: VectorEnvRunner | None = None
        self.eval_envs: gym.vector.VectorEnv | None = None
        self._pending_state: dict | None = None

    # ---- what a subclass says ----------------------------------------------------------------
    @abstractmethod
    def make_collector(self, envs: gym.vector.VectorEnv, seed: int) -> VectorEnvRunner:
        """The runner that steps this rank's training envs (and whatever it writes to, e.g. replay)."""

    @property
    @abstractmethod
    def batches_per_epoch(self) -> int:
        """Training batches in one epoch."""

    @abstractmethod
    def training_batch(self, learner: LightningModule) -> dict[str, Tensor]:
        """One training batch of fresh experience, played by ``learner``'s current networks."""

    @abstractmethod
    def evaluation_batch(self, learner: LightningModule, seed: int) -> dict[str, Tensor]:
        """``episode_return`` and ``episode_length`` of ``eval_episodes`` greedy episodes from ``seed``."""

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
    def episodes(self) -> list[tuple[int, float, int]]:
        """Finished training episodes on this rank as (env steps at the end, return, length)."""
        return self.collector.episodes if self.collector is not None else []

    @property
    def env_steps(self) -> int:
        return self.collector.env_steps if self.collector is not None else 0

    def _seed(self) -> int:
        return rank_seed(self.hparams.seed, self.trainer)

    # ---- Lightning hooks --------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit" and self.collector is None:
            envs = make_vector_env(hp.env_id, hp.num_envs, hp.env_kwargs, hp.vectorization)
            self.collector = self.make_collector(envs, self._seed())
        if self.eval_envs is None and stage != "predict":
            self.eval_envs = make_vector_env(hp.env_id, min(hp.eval_num_envs, hp.eval_episodes), hp.env_kwargs, hp.vectorization)
        if self._pending_state is not None and self.collector is not None:
            self._load_now(self._pending_state)
            self._pending_state = None

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self.collector is not None:
            self.collector.envs.close()
        if self.eval_envs is not None and stage != "fit":
            self.eval_envs.close()
            self.eval_envs = None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Requests(CollectionCycle, self.batches_per_epoch), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(Requests(lambda i: EvaluationRound(self._seed() + self.VAL_SEED_OFFSET), 1), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(Requests(lambda i: EvaluationRound(self._seed() + self.TEST_SEED_OFFSET), 1), batch_size=None)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        # Experience is made here rather than in the dataset's iterator: Lightning fetches one item
        # ahead of the step it runs, so an iterator that stepped the envs would act with networks
        # one update older than the ones that have just been trained.
        if isinstance(batch, CollectionCycle):
            return self.training_batch(self.trainer.lightning_module)
        if isinstance(batch, EvaluationRound):
            return self.evaluation_batch(self.trainer.lightning_module, batch.seed)
        return batch

    # ---- checkpointing: env state, last observations and counters, so a resumed run continues ---
    def state_dict(self) -> dict:
        return {"collector": self.collector.state_dict()} if self.collector is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        if self.collector is None:  # restored before setup (e.g. load_from_checkpoint)
            self._pending_state = state
        else:
            self._load_now(state)

    def _load_now(self, state: dict) -> None:
        self.collector.load_state_dict(state["collector"])
