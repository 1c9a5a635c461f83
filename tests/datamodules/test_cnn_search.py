"""The CNN hyperparameter-search env: gymnasium's checks, the encoding, the evaluation cache, a tiny search via cli.py."""

import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import cli
import datamodules.cnn_search as cnn_search
from datamodules.cnn_search import ENV_ID, Budget, CNNSearchEnv, ConfigurationEvaluator, EvaluationCache, default_search_space
from modules.errors import ConfigError
from tests.conftest import write_learnable_digits

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "dqn_hpo_fashion.yaml")

# two values per hyperparameter: 2^9 = 512 configurations, 19 actions
TINY_SPACE = {
    "conv_layers": [1, 2],
    "filters": [4, 8],
    "kernel_size": [3, 5],
    "dense_layers": [0, 1],
    "dense_width": [8, 16],
    "activation": ["relu", "tanh"],
    "optimizer": ["adam", "sgd"],
    "lr": [1e-3, 1e-2],
    "dropout": [0.0, 0.5],
}


@pytest.fixture(scope="module")
def fake_fashion(tmp_path_factory) -> Path:
    return write_learnable_digits(tmp_path_factory.mktemp("fake-fashion"), num_train=600, num_test=100)


def tiny_kwargs(tmp_path: Path, source: Path, **extra) -> dict:
    """A budget that trains a CNN in well under a second: 64 images, one epoch."""
    return {
        "search_space": TINY_SPACE, "train_subset": 64, "val_size": 64, "batch_size": 32, "edits": 3,
        "cache_dir": str(tmp_path / "cache"), "data_dir": str(tmp_path / "data"), "system_dir": str(source), **extra,
    }  # fmt: skip


class ScriptedAccuracy:
    """Stands in for training: accuracy = 0.1 + 0.1 * (index of lr) + 0.05 * (conv_layers); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, config: dict) -> float:
        self.calls += 1
        return 0.1 + 0.1 * TINY_SPACE["lr"].index(config["lr"]) + 0.05 * config["conv_layers"]


def test_env_passes_gymnasium_check_env(tmp_path, fake_fashion):
    env = gym.make(f"datamodules.cnn_search:{ENV_ID}", **tiny_kwargs(tmp_path, fake_fashion))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # gymnasium's checker only warns: make its warnings fail the test
        check_env(env.unwrapped, skip_render_check=False)
    assert env.unwrapped.evaluator.trained >= 1  # the steps really trained CNNs
    assert env.observation_space.shape == (2 * 9 + 1,) and env.action_space.n == 2 * 9 + 1


def test_observation_round_trips_to_configuration():
    env = CNNSearchEnv()  # the full default space; nothing is trained here
    rng = np.random.default_rng(0)
    for _ in range(50):
        env.config = env.space.sample(rng)
        observation = env.observe()
        assert env.observation_space.contains(observation)
        assert observation[:-1].sum() == len(env.space.names)  # one hot per hyperparameter
        assert env.decode(observation) == env.config
    assert env.space.num_configurations == 3 * 3 * 2 * 3 * 3 * 4 * 3 * 4 * 3


def test_an_action_sets_exactly_its_hyperparameter_and_counts_down_the_edits(tmp_path):
    env = CNNSearchEnv(search_space=TINY_SPACE, edits=4, cache_dir=str(tmp_path))
    env.evaluator = ScriptedAccuracy()
    observation, _ = env.reset(seed=3)
    for action in (0, 7, 15, 12):
        name, value = env.space.actions[action]
        before = env.decode(observation)
        observation, *_ = env.step(action)
        assert env.decode(observation) == {**before, name: value}
    assert observation[-1] == 0.0 and env.edits_left == 0


def test_rewards_telescope_to_the_gain_of_the_final_over_the_initial_configuration(tmp_path):
    env = CNNSearchEnv(search_space=TINY_SPACE, edits=5, cache_dir=str(tmp_path))
    env.evaluator = accuracy = ScriptedAccuracy()
    observation, _ = env.reset(seed=1)
    initial = env.decode(observation)
    rewards, terminated, steps = [], False, 0
    rng = np.random.default_rng(1)
    while not terminated:
        observation, reward, terminated, truncated, info = env.step(int(rng.integers(env.stop_action)))  # never stop
        rewards.append(reward)
        steps += 1
        assert not truncated
    assert steps == 5
    assert sum(rewards) == pytest.approx(accuracy(env.decode(observation)) - accuracy(initial))
    # setting lr from 1e-3 to 1e-2 is worth exactly 0.1
    env.reset(seed=1)
    env.config = {**env.config, "lr": 1e-3}
    assert env.step(env.space.actions.index(("lr", 1e-2)))[1] == pytest.approx(0.1)


def test_stop_ends_the_episode_with_zero_reward_and_trains_nothing(tmp_path):
    env = CNNSearchEnv(search_space=TINY_SPACE, cache_dir=str(tmp_path))
    env.evaluator = accuracy = ScriptedAccuracy()
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(env.stop_action)
    assert (reward, terminated, truncated, accuracy.calls) == (0.0, True, False, 0)


def test_reset_draws_the_initial_configuration_from_its_seed_or_takes_the_given_one(tmp_path):
    env = CNNSearchEnv(search_space=TINY_SPACE, cache_dir=str(tmp_path))
    assert np.array_equal(env.reset(seed=5)[0], env.reset(seed=5)[0])
    assert len({tuple(env.reset(seed=s)[0]) for s in range(20)}) > 10
    initial = {name: values[1] for name, values in TINY_SPACE.items()}
    fixed = CNNSearchEnv(search_space=TINY_SPACE, initial=initial, cache_dir=str(tmp_path))
    assert fixed.decode(fixed.reset(seed=7)[0]) == initial


def test_restart_from_best_starts_from_the_best_configuration_evaluated_so_far(tmp_path):
    env = CNNSearchEnv(search_space=TINY_SPACE, restart_from_best=1.0, cache_dir=str(tmp_path), train_subset=64, val_size=64)
    rng = np.random.default_rng(0)
    assert env.space.contains(env.decode(env.reset(seed=0)[0]))  # nothing evaluated yet: a random start
    budget = env.evaluator.budget
    configs = [env.space.sample(rng) for _ in range(5)]
    for acc, config in zip([0.3, 0.9, 0.5, 0.9, 0.1], configs):
        env.evaluator.cache.put(config, budget, val_acc=acc, seconds=0.0)
    env.evaluator.cache.put({**configs[0], "lr": 0.5}, budget, val_acc=0.99, seconds=0.0)  # outside the space: ignored
    env.evaluator.cache.put(configs[4], Budget(seed=1), val_acc=0.99, seconds=0.0)  # another budget: ignored
    assert env.best_configuration() == configs[1]  # the earlier of the two at 0.9
    assert all(env.decode(env.reset(seed=s)[0]) == configs[1] for s in range(5))
    half = CNNSearchEnv(search_space=TINY_SPACE, restart_from_best=0.5, cache_dir=str(tmp_path), train_subset=64, val_size=64)
    starts = [half.decode(half.reset(seed=s)[0]) == configs[1] for s in range(200)]
    assert 70 < sum(starts) < 130
    with pytest.raises(ConfigError, match="restart_from_best must be a probability"):
        CNNSearchEnv(search_space=TINY_SPACE, restart_from_best=1.5)


def test_bad_search_space_or_initial_configuration_is_named():
    with pytest.raises(ConfigError, match="unknown hyperparameters \\['depth'\\]"):
        CNNSearchEnv(search_space={"depth": [1, 2]})
    with pytest.raises(ConfigError, match="initial.lr = 0.5 is not in the search space"):
        CNNSearchEnv(search_space=TINY_SPACE, initial={**{n: v[0] for n, v in TINY_SPACE.items()}, "lr": 0.5})
    with pytest.raises(ConfigError, match="env_kwargs.edits must be an integer"):
        CNNSearchEnv(edits="two")


def test_cache_key_depends_on_budget_and_seed_but_not_on_how_a_number_is_written(tmp_path):
    env = CNNSearchEnv(search_space={**TINY_SPACE, "dropout": [0, 0.5]}, cache_dir=str(tmp_path))
    assert env.space.values["dropout"] == [0.0, 0.5]  # YAML's 0 and 0.0 are one value
    config = {name: values[0] for name, values in env.space.values.items()}
    assert EvaluationCache.key(config, Budget()) == EvaluationCache.key(dict(reversed(config.items())), Budget())
    assert EvaluationCache.key(config, Budget(seed=0)) != EvaluationCache.key(config, Budget(seed=1))
    assert EvaluationCache.key(config, Budget(epochs=1)) != EvaluationCache.key(config, Budget(epochs=2))


def fail_if_trained(*args, **kwargs):
    raise AssertionError("the evaluator trained a CNN although the cache held the answer")


def test_cache_returns_the_stored_value_without_training(tmp_path, monkeypatch):
    evaluator = ConfigurationEvaluator(Budget(), str(tmp_path))
    config = {name: values[0] for name, values in TINY_SPACE.items()}
    evaluator.cache.put(config, Budget(), val_acc=0.777, seconds=1.0)
    monkeypatch.setattr(cnn_search, "train_classifier", fail_if_trained)
    assert evaluator(config) == 0.777 and evaluator.trained == 0
    assert ConfigurationEvaluator(Budget(seed=1), str(tmp_path)).cache.get(config, Budget(seed=1)) is None  # other seed: a miss


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.replace("0.777", "0.999"),  # value changed, checksum not: a tampered or bit-flipped entry
        lambda text: text[: len(text) // 2],  # half-written
        lambda text: "",  # empty file
    ],
    ids=["checksum_mismatch", "half_written", "empty"],
)
def test_corrupt_cache_entry_is_recomputed_never_trusted(tmp_path, monkeypatch, damage):
    evaluator = ConfigurationEvaluator(Budget(), str(tmp_path))
    config = {name: values[0] for name, values in TINY_SPACE.items()}
    evaluator.cache.put(config, Budget(), val_acc=0.777, seconds=1.0)
    path = evaluator.cache.path(config, Budget())
    path.write_text(damage(path.read_text()))
    trained = []
    monkeypatch.setattr(cnn_search, "train_classifier", lambda config, *a, **k: trained.append(config) or {"val_acc": 0.5, "seconds": 0.1})
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        assert evaluator(config) == 0.5
    assert trained == [config] and evaluator.trained == 1
    assert json.loads(path.read_text())["record"]["val_acc"] == 0.5  # replaced by a whole entry
    assert evaluator(config) == 0.5 and evaluator.trained == 1


def test_entry_under_another_key_is_not_trusted(tmp_path):
    cache = EvaluationCache(tmp_path)
    a = {name: values[0] for name, values in TINY_SPACE.items()}
    b = {**a, "lr": 1e-2}
    cache.put(a, Budget(), val_acc=0.9, seconds=1.0)
    cache.path(b, Budget()).write_text(cache.path(a, Budget()).read_text())  # a whole, valid entry in the wrong file
    with pytest.warns(UserWarning, match="corrupt"):
        assert cache.get(b, Budget()) is None
    assert [r["config"] for r in cache.records(Budget())] == [a]


def test_evaluator_pickles_without_its_images(tmp_path, fake_fashion):
    import pickle

    env = CNNSearchEnv(**tiny_kwargs(tmp_path, fake_fashion))
    data = env.evaluator.data()
    data.prepare_data()
    data.setup("fit")
    assert data.train_set is not None
    restored = pickle.loads(pickle.dumps(env))
    assert restored.evaluator._data is None and restored.evaluator.budget == env.evaluator.budget


def tiny_search(tmp_path: Path, source: Path, epochs: int, *extra: str) -> list[str]:
    env_kwargs = tiny_kwargs(tmp_path, source)
    return [
        "fit", "--config", CONFIG,
        "--trainer.max_epochs", str(epochs),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.callbacks", json.dumps([
            {"class_path": "callbacks.search_log.SearchLog", "init_args": {"top_k": 3}},
            {"class_path": "callbacks.search_log.TrainBestConfiguration", "init_args": {"epochs": 1, "top_k": 2, "val_size": 100, "batch_size": 64}},
        ]),
        "--model.init_args.hidden_sizes", "[16]",
        "--data.init_args.env_kwargs", json.dumps(env_kwargs),
        "--data.init_args.train_freq", "3",
        "--data.init_args.steps_per_epoch", "6",
        "--data.init_args.learning_starts", "3",
        "--data.init_args.gradient_steps", "2",
        "--data.init_args.batch_size", "4",
        "--data.init_args.exploration_steps", "6",
        "--data.init_args.eval_episodes", "1",
        *extra,
    ]  # fmt: skip


def test_tiny_search_runs_end_to_end_through_the_cli_and_a_repeat_trains_nothing(tmp_path, fake_fashion, monkeypatch):
    run = cli.main(tiny_search(tmp_path, fake_fashion, 2))
    log_dir = Path(run.trainer.log_dir)
    records = EvaluationCache(tmp_path / "cache").records(Budget(train_subset=64, val_size=64, batch_size=32))
    assert len(records) >= 3  # the DQN's edits trained several distinct configurations
    # every evaluated configuration is one hparams run; the best one is written out for the full run
    assert len(list((log_dir / "evaluations").iterdir())) == len(records)
    best = yaml.safe_load((log_dir / "best_config.yaml").read_text())["model"]["init_args"]
    assert best == max(records, key=lambda r: r["val_acc"])["config"] and set(best) == set(TINY_SPACE)
    assert (log_dir / "top_k.md").read_text().count("\n| ") == min(3, len(records))
    result = json.loads((log_dir / "best_result.json").read_text())
    # the two best distinct networks were trained fully; the answer is the one with the better full validation accuracy
    assert [f["config"] for f in result["finalists"]] == [r["config"] for r in cnn_search.finalists(records, 2)]
    assert result["finalists"][0]["config"] == best and len(result["finalists"]) == 2
    assert result["val_acc"] == max(f["val_acc"] for f in result["finalists"]) and 0.0 <= result["test_acc"] <= 1.0
    assert yaml.safe_load((log_dir / "answer_config.yaml").read_text())["model"]["init_args"] == result["config"]
    assert "val/return" in run.trainer.callback_metrics

    # the same search again (an interrupted one restarted) is answered from the cache alone
    monkeypatch.setattr(cnn_search, "train_classifier", fail_if_trained)
    cli.main(tiny_search(tmp_path, fake_fashion, 2, "--trainer.callbacks", '[{"class_path": "callbacks.search_log.SearchLog"}]'))
    assert len(EvaluationCache(tmp_path / "cache").records(Budget(train_subset=64, val_size=64, batch_size=32))) == len(records)


def scripted_records(val_accs: list[float], **config_changes) -> list[dict]:
    base = {name: values[0] for name, values in TINY_SPACE.items()}
    return [
        {"config": {**base, "lr": lr, **config_changes}, "val_acc": acc, "evaluated_at": float(i)}
        for i, (lr, acc) in enumerate(zip([1e-4, 1e-3, 1e-2, 1e-1], val_accs))
    ]


def test_finalists_are_the_best_distinct_networks():
    records = scripted_records([0.5, 0.8, 0.7, 0.6], dense_layers=1)
    assert [r["val_acc"] for r in cnn_search.finalists(records, 3)] == [0.8, 0.7, 0.6]
    base = {**records[1]["config"], "dense_layers": 0}
    twins = [{"config": {**base, "dense_width": w}, "val_acc": 0.9, "evaluated_at": 10.0 + w} for w in (8, 16)]  # one network
    assert [r["config"] for r in cnn_search.finalists(records + twins, 2)] == [twins[0]["config"], records[1]["config"]]


def test_full_training_chooses_the_finalist_with_the_best_full_validation_accuracy(monkeypatch):
    records = scripted_records([0.5, 0.8, 0.7, 0.6])  # search order of lr: 1e-3, 1e-2, 1e-1
    full = {1e-3: (0.85, 0.84), 1e-2: (0.90, 0.88), 1e-1: (0.87, 0.95)}  # lr -> (full val acc, test acc)
    trained = []

    def scripted_training(config, data, epochs, seed, accelerator, precision, test):
        trained.append(config["lr"])
        val, test_acc = full[config["lr"]]
        return {"val_acc": val, "test_acc": test_acc, "seconds": 1.0}

    monkeypatch.setattr(cnn_search, "train_classifier", scripted_training)
    memo: dict = {}
    chosen = cnn_search.select_by_full_training(records, 3, None, epochs=1, trained=memo)
    # the search's second best wins on validation; the best test accuracy (the third) plays no part
    assert chosen["config"]["lr"] == 1e-2 and chosen["search_rank"] == 2 and chosen["test_acc"] == 0.88
    assert [f["config"]["lr"] for f in chosen["finalists"]] == [1e-3, 1e-2, 1e-1] == trained
    assert cnn_search.select_by_full_training(records, 1, None, epochs=1, trained=memo)["config"]["lr"] == 1e-3  # top 1: the search's best
    assert trained == [1e-3, 1e-2, 1e-1]  # the memo trained nothing twice
    with pytest.raises(ConfigError, match="must be >= 1"):
        cnn_search.select_by_full_training(records, 0, None, epochs=1)


def test_default_search_space_matches_the_config():
    config = yaml.safe_load(Path(CONFIG).read_text())
    space = config["data"]["init_args"]["env_kwargs"]["search_space"]
    assert cnn_search.SearchSpace(space).values == cnn_search.SearchSpace(default_search_space()).values
