"""What a hyperparameter search found: every evaluated configuration, the top k, and the best one trained fully.

Both callbacks read the evaluations from the search env's on-disk cache
(:class:`datamodules.cnn_search.EvaluationCache`), the one record of what was trained under the
env's budget, so a resumed search shows the evaluations of its first part too.
"""

import json
from pathlib import Path

import numpy as np
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from callbacks.figures import curves_figure, log_figure, tensorboard
from datamodules.cnn_search import CNNSearchEnv, make_search_env, ranked, select_by_full_training
from datamodules.vision import VisionDataModule
from modules.errors import ConfigError


def search_env(trainer: Trainer) -> CNNSearchEnv:
    """A fresh copy of the env the run's experience datamodule searches with (it shares the cache)."""
    datamodule = trainer.datamodule
    hparams = getattr(datamodule, "hparams", {})
    if "env_id" not in hparams:
        raise ConfigError(f"the search callbacks need datamodules.experience.ExperienceDataModule, not {type(datamodule).__name__}")
    return make_search_env(hparams["env_id"], hparams.get("env_kwargs"))


def write_config(path: Path, config: dict, summary: str) -> None:
    """``config`` as a YAML that stacks on ``configs/cnn_fashion.yaml``, headed by ``summary`` and the command that trains it."""
    header = f"# {summary}\n# Train it fully: python cli.py fit --config configs/cnn_fashion.yaml --config {path}\n"
    path.write_text(header + yaml.safe_dump({"model": {"init_args": config}}, sort_keys=False))


def top_k_table(records: list[dict], k: int) -> str:
    """Markdown table of the ``k`` best configurations by validation accuracy."""
    if not records:
        return "no configuration evaluated yet"
    names = list(records[0]["config"])
    lines = ["| rank | val acc | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for rank, record in enumerate(ranked(records)[:k], start=1):
        lines.append(f"| {rank} | {record['val_acc']:.4f} | " + " | ".join(str(record["config"][n]) for n in names) + " |")
    return "\n".join(lines)


class SearchLog(Callback):
    """After each validation and at the end: evaluated configurations to TensorBoard's hparams view, and a top-k table.

    Each configuration becomes one hparams run ``evaluations/NNNN`` with metric ``hparam/val_acc``
    (the validation accuracy its reward is computed from). Also logged: ``search/best_val_acc`` and
    ``search/val_acc`` against the number of evaluations, the figure ``search/val_acc_by_evaluation``
    and the text ``search/top_k``. The run directory gets ``top_k.md`` and ``best_config.yaml``,
    which stacks on ``configs/cnn_fashion.yaml`` to train the best configuration fully:
    ``python cli.py fit --config configs/cnn_fashion.yaml --config <run dir>/best_config.yaml``.

    Args:
        top_k: rows of the table.
    """

    def __init__(self, top_k: int = 10) -> None:
        self.top_k = top_k
        self.logged = 0  # evaluations already sent to TensorBoard
        self.env: CNNSearchEnv | None = None

    def state_dict(self) -> dict:
        return {"logged": self.logged}

    def load_state_dict(self, state_dict: dict) -> None:
        self.logged = state_dict["logged"]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.env = search_env(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.log_search(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.log_search(trainer)

    @rank_zero_only
    def log_search(self, trainer: Trainer) -> None:
        records = self.env.evaluator.records()
        writer = tensorboard(trainer)
        if not records:
            return
        val_acc = np.array([r["val_acc"] for r in records])
        best_so_far = np.maximum.accumulate(val_acc)
        if writer is not None:
            domains = {n: v for n, v in self.env.space.values.items() if all(isinstance(x, (str, bool, int, float)) for x in v)}
            for index in range(self.logged, len(records)):
                writer.add_hparams(records[index]["config"], {"hparam/val_acc": val_acc[index]}, hparam_domain_discrete=domains, run_name=f"evaluations/{index:04d}")
                writer.add_scalar("search/val_acc", val_acc[index], index + 1)
                writer.add_scalar("search/best_val_acc", best_so_far[index], index + 1)
            writer.add_text("search/top_k", top_k_table(records, self.top_k), trainer.global_step)
            log_figure(trainer, "search/val_acc_by_evaluation", self.figure(val_acc, best_so_far))
        self.logged = len(records)
        if trainer.log_dir:
            self.write_files(Path(trainer.log_dir), records)

    def write_files(self, directory: Path, records: list[dict]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "top_k.md").write_text(top_k_table(records, self.top_k) + "\n")
        best = ranked(records)[0]
        summary = f"Best of {len(records)} evaluated configurations: val acc {best['val_acc']:.4f} under budget {json.dumps(best['budget'])}."
        write_config(directory / "best_config.yaml", best["config"], summary)

    @staticmethod
    def figure(val_acc: np.ndarray, best_so_far: np.ndarray):
        evaluations = np.arange(1, len(val_acc) + 1)

        def draw(ax) -> None:
            ax.plot(evaluations, val_acc, ".", color="tab:blue", alpha=0.5, label="evaluated configuration")
            ax.plot(evaluations, best_so_far, "-", color="tab:orange", label="best so far")

        return curves_figure(draw, "configurations evaluated", "validation accuracy (search budget)", legend_loc="lower right")


class TrainBestConfiguration(Callback):
    """At the end of the search, trains its best configurations on the whole training set and reports the test accuracy.

    The search's ``top_k`` best configurations that build different networks are trained by the same
    :func:`modules.cnn_classifier.train_classifier` as its evaluations, on the full training split
    (60k minus ``val_size``) for ``epochs`` epochs, and the one with the highest validation accuracy
    is the search's answer (:func:`datamodules.cnn_search.select_by_full_training`; ``top_k: 1``
    takes the search's best as it is). Its test accuracy is printed, logged as
    ``search/best_test_acc`` and written with every finalist's to ``best_result.json`` in the run
    directory; ``answer_config.yaml`` there stacks on ``configs/cnn_fashion.yaml`` as ``best_config.yaml`` does.

    Args:
        epochs: training epochs of each final run.
        top_k: finalists trained fully (each a full training).
        val_size: validation images held out of the 60k training images (the finalists are compared on them).
        batch_size: batch size of the final runs.
        seed: seed of the final runs.
        accelerator, precision: of the final runs' ``Trainer``.
    """

    def __init__(
        self, epochs: int = 5, top_k: int = 1, val_size: int = 5000, batch_size: int = 128, seed: int = 0, accelerator: str = "cpu", precision: str = "32-true"
    ) -> None:
        if top_k < 1:
            raise ConfigError(f"TrainBestConfiguration's top_k (finalists trained fully) must be >= 1, got {top_k}")
        self.epochs, self.top_k, self.val_size, self.batch_size, self.seed = epochs, top_k, val_size, batch_size, seed
        self.accelerator, self.precision = accelerator, precision
        self.result: dict | None = None

    @rank_zero_only
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        env = search_env(trainer)
        records = env.evaluator.records()
        if not records:
            return
        dataset = records[0]["budget"]["dataset"]
        data = VisionDataModule(dataset=dataset, val_size=self.val_size, batch_size=self.batch_size, seed=self.seed, **env.evaluator.data_args)
        self.result = select_by_full_training(records, self.top_k, data, self.epochs, self.seed, self.accelerator, self.precision)
        for finalist in self.result["finalists"]:
            print(f"finalist {finalist['search_rank']}: {finalist['config']} (search val acc {finalist['search_val_acc']:.4f}) trained {self.epochs} "
                  f"epochs on the full training set: val acc {finalist['val_acc']:.4f}, test acc {finalist['test_acc']:.4f} ({finalist['seconds']:.0f} s)")
        r = self.result
        print(f"\nbest configuration {r['config']} (search rank {r['search_rank']} of {len(r['finalists'])} finalists, search val acc "
              f"{r['search_val_acc']:.4f}, full val acc {r['val_acc']:.4f}): test acc {r['test_acc']:.4f}")
        writer = tensorboard(trainer)
        if writer is not None:
            writer.add_scalar("search/best_test_acc", r["test_acc"], trainer.global_step)
            writer.add_text("search/best_result", json.dumps(self.result), trainer.global_step)
        if trainer.log_dir:
            directory = Path(trainer.log_dir)
            (directory / "best_result.json").write_text(json.dumps(self.result, indent=1) + "\n")
            summary = (f"The search's answer: finalist {r['search_rank']} of {len(r['finalists'])}, val acc {r['val_acc']:.4f} after "
                       f"{self.epochs} epochs on the full training set (search val acc {r['search_val_acc']:.4f}).")
            write_config(directory / "answer_config.yaml", r["config"], summary)
