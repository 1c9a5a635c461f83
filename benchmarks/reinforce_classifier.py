"""REINFORCE-only classifier vs the same network by cross-entropy, and Lightning's cost per epoch.

Two comparisons on Fashion-MNIST, each measured side by side in one run, with the settings of
``configs/reinforce_classifier_fashion.yaml`` (network, estimator options, batch size, epochs):

1. accuracy: ``ReinforceClassifier`` trained by the score-function estimator on the 0/1 reward vs
   ``objective=cross_entropy``, same network, data, epochs and batch size (bar: within 3 points);
2. speed: one training epoch through ``lightning.Trainer`` (timed from the epoch's start to its end by
   a callback; the one-time ``fit`` set-up is printed beside it) vs the same network, data loader and
   optimiser in a bare PyTorch loop (bar: at most 1.15x at the config's batch size). Lightning's cost
   is a fixed time per optimiser step, so its ratio is also printed at ``--speed_batch_sizes``. Epochs
   alternate between the two so that drift in machine load hits both; the median of ``--repeats``
   epochs is compared.

    python benchmarks/reinforce_classifier.py                 # both comparisons
    python benchmarks/reinforce_classifier.py --epochs 2      # quick
"""

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from benchmarks.configs import load_config  # noqa: E402
from benchmarks.overhead import OVERHEAD_BAR, EpochClock, bare_epoch, report_overhead, seconds  # noqa: E402
from datamodules.vision import VisionDataModule  # noqa: E402
from modules.reinforce_classifier import ReinforceClassifier  # noqa: E402

CONFIG = "reinforce_classifier_fashion"


def train_and_test(objective: str, epochs: int, data: VisionDataModule, workdir: str, **options) -> tuple[float, float]:
    seed_everything(0, verbose=False)
    model = ReinforceClassifier(objective=objective, grad_variance_every=0, **options)
    trainer = Trainer(max_epochs=epochs, accelerator="cpu", logger=TensorBoardLogger(workdir, name=objective),
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    return trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"], seconds


def lightning_epoch(model: ReinforceClassifier, data: VisionDataModule, workdir: str,
                    barebones: bool = False) -> tuple[float, float]:
    """(epoch seconds, whole ``Trainer.fit`` seconds including its one-time set-up).

    ``barebones`` runs Lightning's ``Trainer(barebones=True)`` (no logger, ``log_every_n_steps=0``, so the
    module computes and logs no training scalars): a diagnostic of what the loop itself costs.
    """
    clock = EpochClock()
    logging = dict(barebones=True, logger=False) if barebones else dict(logger=TensorBoardLogger(workdir, name="overhead"))
    trainer = Trainer(max_epochs=1, accelerator="cpu", **logging,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock])
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return clock.seconds[0], time.perf_counter() - start


def main() -> None:
    model_args, data_args, config_epochs = load_config(CONFIG)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=config_epochs)
    parser.add_argument("--repeats", type=int, default=5, help="epochs timed for each of Lightning and the bare loop")
    parser.add_argument("--speed_batch_sizes", type=int, nargs="+", default=[128],
                        help="batch sizes timed besides the config's (%(default)s)")
    parser.add_argument("--data_dir", default=data_args.get("data_dir", "data"))
    parser.add_argument("--part", choices=["speed", "accuracy", "both"], default="both")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # the tables, not Lightning's per-fit notices

    batch_size = data_args["batch_size"]
    options = {k: v for k, v in model_args.items() if k not in ("objective", "num_classes", "image_shape")}
    workdir = tempfile.mkdtemp(prefix="gapbridge-bench-")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, Fashion-MNIST, configs/{CONFIG}.yaml: {options}, "
          f"batch {batch_size}\n")

    if args.part in ("speed", "both"):
        for size in sorted({batch_size, *args.speed_batch_sizes}):
            ratio = compare_speed(fashion_mnist(args.data_dir, size), workdir, args.repeats, options)
            if size == batch_size:
                config_ratio = ratio
        print(f"at the config's batch size ({batch_size}): lightning / bare = {config_ratio:.3f}x (bar: <= {OVERHEAD_BAR}x) -> "
              f"{'PASS' if config_ratio <= OVERHEAD_BAR else 'FAIL'}\n")
    if args.part in ("accuracy", "both"):
        compare_accuracy(fashion_mnist(args.data_dir, batch_size), workdir, args.epochs, options)


def fashion_mnist(data_dir: str, batch_size: int) -> VisionDataModule:
    data = VisionDataModule(data_dir=data_dir, batch_size=batch_size)
    data.prepare_data()
    data.setup("fit")
    return data


def compare_speed(data: VisionDataModule, workdir: str, repeats: int, options: dict) -> float:
    """One epoch, Lightning vs bare loop, alternating so that load drift hits both; returns the ratio."""
    lightning_times, fit_times, bare_times, barebones_times = [], [], [], []
    options = options | {"grad_variance_every": 0}
    for _ in range(repeats):
        seed_everything(0, verbose=False)
        epoch_seconds, fit_seconds = lightning_epoch(ReinforceClassifier(**options), data, workdir)
        lightning_times.append(epoch_seconds)
        fit_times.append(fit_seconds)
        seed_everything(0, verbose=False)
        barebones_times.append(lightning_epoch(ReinforceClassifier(**options), data, workdir, barebones=True)[0])
        seed_everything(0, verbose=False)
        model = ReinforceClassifier(**options)
        bare_times.append(bare_epoch(lambda batch: model._policy_terms(*batch)[1].loss, model,
                                     model.configure_optimizers(), data.train_dataloader()))
    steps = len(data.train_dataloader())
    print(f"batch {data.hparams.batch_size}, {steps} steps per epoch "
          f"(whole Trainer.fit including its one-time set-up: median {statistics.median(fit_times):.2f} s)")
    ratio = report_overhead(f"one training epoch (55,000 images, REINFORCE, {options['num_samples']} samples/image)",
                            lightning_times, bare_times)
    extra_ms = 1000 * (statistics.median(lightning_times) - statistics.median(bare_times)) / steps
    print(f"Lightning's extra cost per optimiser step: {extra_ms:.2f} ms")
    print(f"diagnostic: Trainer(barebones=True), no training scalars logged: median {statistics.median(barebones_times):.2f} s "
          f"({statistics.median(barebones_times) / statistics.median(bare_times):.3f}x the bare loop; all: {seconds(barebones_times)})\n")
    return ratio


def compare_accuracy(data: VisionDataModule, workdir: str, epochs: int, options: dict) -> None:
    """The same network trained by REINFORCE on the 0/1 reward and by cross-entropy."""
    results = {objective: train_and_test(objective, epochs, data, workdir, **options) for objective in ("reinforce", "cross_entropy")}
    print(f"test accuracy after {epochs} epochs, batch {data.hparams.batch_size}")
    print(f"{'objective':<16}{'test acc':>10}{'train s':>10}")
    for objective, (accuracy, train_seconds) in results.items():
        print(f"{objective:<16}{accuracy:>10.4f}{train_seconds:>10.1f}")
    gap = 100 * (results["cross_entropy"][0] - results["reinforce"][0])
    print(f"cross-entropy - REINFORCE = {gap:.2f} points  (bar: <= 3) -> {'PASS' if gap <= 3 else 'FAIL'}")


if __name__ == "__main__":
    main()
