"""Choosing a CNN's hyperparameters as sequential decision making: a gymnasium env a DQN can search with.

The state is a CNN configuration (:class:`modules.cnn_classifier.CNNClassifier`'s hyperparameters),
an action sets one hyperparameter to one of its values (or stops), and the reward is how much the
validation accuracy of the CNN trained with the new configuration, under a fixed small budget,
improved over the previous configuration's. Rewards telescope, so an episode's undiscounted return is
``acc(final configuration) - acc(initial configuration)``: the agent is paid for where it ends up.
This is MetaQNN's idea (Baker et al. 2017, Q-learning over network designs) with edits of a whole
configuration as actions instead of layer-by-layer construction.

Training a CNN is by far the dearest part, so every evaluation is memoised on disk
(:class:`EvaluationCache`, keyed by configuration, budget and seed): a configuration seen before costs
nothing, and a search stopped half-way and started again (or resumed from a checkpoint) re-trains
nothing it had finished. Entries are written atomically and carry a checksum; an entry that fails the
check (a crash mid-write, a disk error, an edit by hand) is recomputed, never trusted.

The env registers itself with gymnasium as ``gapbridge/CNNSearch-v0``; the id
``datamodules.cnn_search:gapbridge/CNNSearch-v0`` makes ``gym.make`` import this module first, so a
YAML naming it in ``data.init_args.env_id`` needs no other import.
"""

import hashlib
import inspect
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from datamodules.vision import VisionDataModule
from modules.cnn_classifier import CNNClassifier, network_identity, train_classifier
from modules.errors import ConfigError, require

ENV_ID = "gapbridge/CNNSearch-v0"

# the hyperparameters of CNNClassifier a search may edit (the others describe the data)
SEARCHABLE = ("conv_layers", "filters", "kernel_size", "dense_layers", "dense_width", "activation", "optimizer", "lr", "dropout", "weight_decay")


def default_search_space() -> dict[str, list]:
    """The space of ``configs/dqn_hpo_fashion.yaml``: 3*3*2*3*3*4*3*4*3 = 23,328 configurations."""
    return {
        "conv_layers": [1, 2, 3],
        "filters": [8, 16, 32],
        "kernel_size": [3, 5],
        "dense_layers": [0, 1, 2],
        "dense_width": [32, 64, 128],
        "activation": ["relu", "tanh", "elu", "gelu"],
        "optimizer": ["adam", "sgd", "rmsprop"],
        "lr": [1e-4, 1e-3, 1e-2, 1e-1],
        "dropout": [0.0, 0.25, 0.5],
    }


def _canonical(name: str, value: Any) -> Any:
    """``value`` as the type ``CNNClassifier`` declares for ``name``, so 0 and 0.0 (YAML) make one cache key."""
    annotation = inspect.signature(CNNClassifier.__init__).parameters[name].annotation
    if annotation is float:
        return float(value)
    if annotation is int:
        require(float(value) == int(value), f"search space value {value!r} of {name} must be an integer")
        return int(value)
    return value


def _integer(name: str, value: Any) -> int:
    try:
        if float(value) == int(float(value)):
            return int(float(value))
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"env_kwargs.{name} must be an integer, got {value!r}")


class SearchSpace:
    """Named hyperparameters, each with a list of values: encodes configurations and decodes actions.

    Observation of a configuration: for each hyperparameter, a one-hot vector over its values, all
    concatenated (``size`` entries). Action ``a``: the ``a``-th (hyperparameter, value) pair in that
    same order; action ``size`` is "stop".
    """

    def __init__(self, values: dict[str, list]) -> None:
        require(isinstance(values, dict) and len(values) > 0, "env_kwargs.search_space must map hyperparameter names to lists of values")
        unknown = sorted(set(values) - set(SEARCHABLE))
        require(not unknown, f"env_kwargs.search_space has unknown hyperparameters {unknown}; searchable: {list(SEARCHABLE)}")
        self.values: dict[str, list] = {}
        for name, options in values.items():
            require(isinstance(options, (list, tuple)) and len(options) >= 1, f"env_kwargs.search_space.{name} must be a non-empty list")
            options = [_canonical(name, v) for v in options]
            require(len(set(map(repr, options))) == len(options), f"env_kwargs.search_space.{name} lists a value twice: {options}")
            self.values[name] = options
        self.names = list(self.values)
        self.offsets = np.cumsum([0] + [len(v) for v in self.values.values()])
        self.size = int(self.offsets[-1])
        self.actions = [(name, value) for name in self.names for value in self.values[name]]

    def check(self, config: dict, what: str) -> dict:
        """``config`` with canonical values; every hyperparameter of the space set to one of its values."""
        require(set(config) == set(self.names), f"{what} must set exactly {self.names}, got {sorted(config)}")
        config = {name: _canonical(name, config[name]) for name in self.names}
        for name, value in config.items():
            require(value in self.values[name], f"{what}.{name} = {value!r} is not in the search space {self.values[name]}")
        return config

    def encode(self, config: dict) -> np.ndarray:
        one_hot = np.zeros(self.size, dtype=np.float32)
        for name, offset in zip(self.names, self.offsets):
            one_hot[offset + self.values[name].index(config[name])] = 1.0
        return one_hot

    def decode(self, one_hot: np.ndarray) -> dict:
        return {name: self.values[name][int(np.argmax(one_hot[lo:hi]))] for name, lo, hi in zip(self.names, self.offsets[:-1], self.offsets[1:])}

    def contains(self, config: dict) -> bool:
        """Whether ``config`` sets exactly this space's hyperparameters, each to one of its values."""
        return set(config) == set(self.names) and all(config[name] in self.values[name] for name in self.names)

    def sample(self, rng: np.random.Generator) -> dict:
        return {name: options[int(rng.integers(len(options)))] for name, options in self.values.items()}

    @property
    def num_configurations(self) -> int:
        return math.prod(len(v) for v in self.values.values())


@dataclass(frozen=True)
class Budget:
    """How a configuration is trained for its reward: part of every cache key."""

    dataset: str = "fashion_mnist"
    train_subset: int = 2000
    val_size: int = 1000
    epochs: int = 1
    batch_size: int = 64
    seed: int = 0


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class EvaluationCache:
    """One JSON file per (configuration, budget) in ``directory``: ``{"record": ..., "checksum": sha256(record)}``.

    Writes go to a temporary file in the same directory that is then renamed over the entry
    (``os.replace`` is atomic), so a reader sees either no entry or a whole one; an entry that cannot
    be parsed, fails its checksum or belongs to another key is reported, removed and recomputed.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    @staticmethod
    def key(config: dict, budget: Budget) -> str:
        return _digest({"config": config, "budget": asdict(budget)})

    def path(self, config: dict, budget: Budget) -> Path:
        return self.directory / f"{self.key(config, budget)}.json"

    def _read(self, path: Path) -> dict | None:
        """The record in ``path`` if it is whole and its own; None otherwise."""
        try:
            entry = json.loads(path.read_text())
            record = entry["record"]
            if entry["checksum"] == _digest(record) and path.stem == _digest({"config": record["config"], "budget": record["budget"]}):
                return record
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def get(self, config: dict, budget: Budget) -> dict | None:
        path = self.path(config, budget)
        if not path.exists():
            return None
        record = self._read(path)
        if record is None:
            warnings.warn(f"corrupt cache entry {path} (unreadable or checksum mismatch): recomputing it", stacklevel=2)
            path.unlink(missing_ok=True)
        return record

    def put(self, config: dict, budget: Budget, val_acc: float, seconds: float) -> dict:
        record = {"config": config, "budget": asdict(budget), "val_acc": float(val_acc), "seconds": float(seconds), "evaluated_at": time.time()}
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = json.dumps({"record": record, "checksum": _digest(record)}, sort_keys=True)
        handle, partial = tempfile.mkstemp(dir=self.directory, prefix=".partial-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as f:
                f.write(entry)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, self.path(config, budget))
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        return record

    def records(self, budget: Budget) -> list[dict]:
        """Every whole entry made under ``budget``, oldest first (corrupt ones are skipped here, recomputed on demand)."""
        if not self.directory.is_dir():
            return []
        found = (self._read(path) for path in self.directory.glob("*.json"))
        mine = [r for r in found if r is not None and r["budget"] == asdict(budget)]
        return sorted(mine, key=lambda r: r["evaluated_at"])


def ranked(records: list[dict]) -> list[dict]:
    """Evaluation records best first (ties: the earlier evaluation first)."""
    return sorted(records, key=lambda r: (-r["val_acc"], r["evaluated_at"]))


def finalists(records: list[dict], k: int) -> list[dict]:
    """The ``k`` best evaluation records that build different networks (:func:`network_identity`), best first."""
    chosen, seen = [], set()
    for record in ranked(records):
        identity = json.dumps(network_identity(record["config"]), sort_keys=True)
        if identity not in seen:
            seen.add(identity)
            chosen.append(record)
        if len(chosen) == k:
            break
    return chosen


def select_by_full_training(
    records: list[dict],
    k: int,
    datamodule: VisionDataModule,
    epochs: int,
    seed: int = 0,
    accelerator: str = "cpu",
    precision: str = "32-true",
    trained: dict[str, dict] | None = None,
) -> dict:
    """The search's answer: its :func:`finalists` trained on ``datamodule`` (the full training set), the best on its validation split.

    The search's small budget ranks configurations only loosely (``k = 1`` takes its best at face
    value); training the ``k`` best fully and keeping the one with the highest validation accuracy
    (ties: the better search rank) corrects that, at ``k`` full trainings. Every finalist is also
    tested, so its test accuracy can be reported beside the chosen one's; the test set plays no part
    in the choice. ``trained`` memoises full results by configuration across calls (the runs are
    deterministic), for benchmarks that select for several searches over one budget.

    Returns the chosen configuration's ``config``, ``search_val_acc``, ``search_rank`` (1 = the
    search's best), ``val_acc``, ``test_acc``, ``seconds``, ``epochs`` and ``finalists`` (the same
    fields for each, best search rank first).
    """
    require(k >= 1, f"the number of finalists to train fully must be >= 1, got {k}")
    trained = {} if trained is None else trained
    results = []
    for rank, record in enumerate(finalists(records, k), start=1):
        key = json.dumps(record["config"], sort_keys=True)
        if key not in trained:
            trained[key] = train_classifier(record["config"], datamodule, epochs, seed, accelerator, precision, test=True)
        results.append({"config": record["config"], "search_val_acc": record["val_acc"], "search_rank": rank, **trained[key]})
    chosen = max(results, key=lambda r: (r["val_acc"], -r["search_rank"]))
    return {**chosen, "epochs": epochs, "finalists": results}


class ConfigurationEvaluator:
    """Validation accuracy of a configuration trained under ``budget``: from the cache, or trained once and stored.

    Training goes through :func:`modules.cnn_classifier.train_classifier` (a Lightning ``Trainer``) on a
    ``VisionDataModule`` holding ``budget.train_subset`` training images and ``budget.val_size``
    validation images, both chosen by ``budget.seed``. The data is loaded on the first cache miss.
    """

    def __init__(
        self,
        budget: Budget,
        cache_dir: str,
        data_dir: str = "data",
        system_dir: str | None = "/usr/share/datasets/fashion-mnist",
        download: bool = False,
        accelerator: str = "cpu",
        precision: str = "32-true",
    ) -> None:
        self.budget = budget
        self.cache = EvaluationCache(cache_dir)
        self.data_args = {"data_dir": data_dir, "system_dir": system_dir, "download": download}
        self.accelerator, self.precision = accelerator, precision
        self.trained = 0  # evaluations this object had to train (cache misses)
        self._data: VisionDataModule | None = None

    def data(self) -> VisionDataModule:
        if self._data is None:
            b = self.budget
            self._data = VisionDataModule(
                dataset=b.dataset, train_subset=b.train_subset, val_size=b.val_size, batch_size=b.batch_size, seed=b.seed, **self.data_args
            )
        return self._data

    def __call__(self, config: dict) -> float:
        record = self.cache.get(config, self.budget)
        if record is None:
            result = train_classifier(config, self.data(), self.budget.epochs, self.budget.seed, self.accelerator, self.precision)
            record = self.cache.put(config, self.budget, result["val_acc"], result["seconds"])
            self.trained += 1
        return record["val_acc"]

    def records(self) -> list[dict]:
        return self.cache.records(self.budget)

    def __getstate__(self) -> dict:
        # envs are pickled into DQN checkpoints: keep the 60k images out, they reload on demand
        return {**self.__dict__, "_data": None}


class CNNSearchEnv(gym.Env):
    """Edit a CNN configuration one hyperparameter at a time; reward = gain in validation accuracy.

    Observation: the configuration's one-hot encoding (:class:`SearchSpace`) followed by the fraction
    of edits left, so the finite horizon is part of the state. Action: set one hyperparameter to one
    of its values, or stop. Reward of an edit: ``acc(new) - acc(previous)`` (0 for stop). The episode
    ends (``terminated``) after ``edits`` edits or at stop; it never truncates.

    Args:
        search_space: hyperparameter name -> list of values (names from ``SEARCHABLE``); the others
            keep ``CNNClassifier``'s defaults. ``None``: :func:`default_search_space`.
        initial: the configuration every episode starts from; ``None`` draws one uniformly at each reset.
        restart_from_best: probability that an episode starts instead from the best configuration
            evaluated so far (this budget, this cache, inside this space): the agent's edits then
            refine the incumbent, as a local search restarts from its best point. 0 (default): never.
        edits: edits per episode.
        dataset, train_subset, val_size, epochs, batch_size, seed: the training budget of one
            evaluation (:class:`Budget`).
        cache_dir: where evaluations are memoised.
        data_dir, system_dir, download: where the images come from (as ``VisionDataModule``).
        accelerator, precision: of the evaluations' Lightning ``Trainer``.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        search_space: dict[str, list] | None = None,
        initial: dict | None = None,
        restart_from_best: float = 0.0,
        edits: int = 6,
        dataset: str = "fashion_mnist",
        train_subset: int = 2000,
        val_size: int = 1000,
        epochs: int = 1,
        batch_size: int = 64,
        seed: int = 0,
        cache_dir: str = "runs/cnn_search_cache",
        data_dir: str = "data",
        system_dir: str | None = "/usr/share/datasets/fashion-mnist",
        download: bool = False,
        accelerator: str = "cpu",
        precision: str = "32-true",
        render_mode: str | None = None,
    ) -> None:
        # values overridden on the command line (--data.init_args.env_kwargs.edits 4) arrive as strings
        edits, train_subset, val_size, epochs, batch_size, seed = (
            _integer(name, value)
            for name, value in (("edits", edits), ("train_subset", train_subset), ("val_size", val_size), ("epochs", epochs), ("batch_size", batch_size), ("seed", seed))
        )
        require(edits >= 1, f"env_kwargs.edits must be at least 1, got {edits}")
        require(train_subset >= 1 and val_size >= 1 and epochs >= 1 and batch_size >= 1, "env_kwargs.train_subset, val_size, epochs and batch_size must be >= 1")
        restart_from_best = float(restart_from_best)
        require(0.0 <= restart_from_best <= 1.0, f"env_kwargs.restart_from_best must be a probability in [0, 1], got {restart_from_best}")
        require(render_mode in (None, "ansi"), f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.space = SearchSpace(default_search_space() if search_space is None else search_space)
        self.initial = None if initial is None else self.space.check(initial, "env_kwargs.initial")
        self.restart_from_best = restart_from_best
        self.edits = edits
        self.render_mode = render_mode
        budget = Budget(dataset, train_subset, val_size, epochs, batch_size, seed)
        self.evaluator = ConfigurationEvaluator(budget, cache_dir, data_dir, system_dir, download, accelerator, precision)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(self.space.size + 1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.space.size + 1)
        self.config: dict = {}
        self.edits_left = 0

    @property
    def stop_action(self) -> int:
        return self.space.size

    def observe(self) -> np.ndarray:
        return np.append(self.space.encode(self.config), np.float32(self.edits_left / self.edits))

    def decode(self, observation: np.ndarray) -> dict:
        """The configuration an observation encodes."""
        return self.space.decode(observation[: self.space.size])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # the draws do not depend on what the cache holds, so a seed gives one random stream
        restart = self.restart_from_best > 0 and self.np_random.random() < self.restart_from_best
        sample = self.space.sample(self.np_random) if self.initial is None else dict(self.initial)
        best = self.best_configuration() if restart else None
        self.config = best if best is not None else sample
        self.edits_left = self.edits
        return self.observe(), {}

    def best_configuration(self) -> dict | None:
        """The configuration of this space with the highest validation accuracy evaluated so far (ties: the earliest)."""
        records = ranked([r for r in self.evaluator.records() if self.space.contains(r["config"])])
        return dict(records[0]["config"]) if records else None

    def step(self, action):
        action = int(action)
        if action == self.stop_action:
            self.edits_left = 0
            return self.observe(), 0.0, True, False, {}
        name, value = self.space.actions[action]
        previous_acc = self.evaluator(self.config)
        self.config = {**self.config, name: value}
        val_acc = self.evaluator(self.config)
        self.edits_left -= 1
        return self.observe(), float(val_acc - previous_acc), self.edits_left == 0, False, {"val_acc": val_acc}

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return f"{self.config} ({self.edits_left} edits left)"
        return None


def make_search_env(env_id: str, env_kwargs: dict | None) -> CNNSearchEnv:
    """The :class:`CNNSearchEnv` an experience datamodule's ``env_id`` / ``env_kwargs`` make, for callbacks and benchmarks."""
    env = gym.make(env_id, **dict(env_kwargs or {})).unwrapped
    if not isinstance(env, CNNSearchEnv):
        raise ConfigError(f"--data.init_args.env_id {env_id!r} is not the CNN search env; use datamodules.cnn_search:{ENV_ID}")
    return env


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=CNNSearchEnv)
