"""REINFORCE-only classifier vs the same network by cross-entropy, and Lightning's cost per epoch.

Two comparisons, measured side by side in one run on Fashion-MNIST:

1. accuracy: ``ReinforceClassifier`` trained by the score-function estimator on the 0/1 reward vs
   ``objective=cross_entropy``, same network, data, epochs and batch size (bar: within 3 points);
2. speed: one training epoch through ``lightning.Trainer`` (timed from the epoch's start to its end by
   a callback; the one-time ``fit`` set-up is printed beside it) vs the same network, data loader and
   optimiser in a bare PyTorch loop (bar: at most 1.15x). Epochs alternate between the two so that
   drift in machine load hits both; the median of ``--repeats`` epochs is compared.

    python benchmarks/reinforce_classifier.py                 # full: 10 epochs each
    python benchmarks/reinforce_classifier.py --epochs 2      # quick
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from benchmarks.overhead import EpochClock, bare_epoch, report_overhead, seconds  # noqa: E402
from datamodules.vision import VisionDataModule  # noqa: E402
from modules.reinforce_classifier import ReinforceClassifier  # noqa: E402


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed for each of Lightning and the bare loop")
    parser.add_argument("--entropy_coef", type=float, default=0.1)
    parser.add_argument("--num_samples", type=int, default=32, help="actions sampled per image")
    parser.add_argument("--normalize_advantage", default="none", choices=["none", "running", "batch", "group"])
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--part", choices=["speed", "accuracy", "both"], default="both")
    args = parser.parse_args()

    data = VisionDataModule(data_dir=args.data_dir, batch_size=128)
    data.prepare_data()
    data.setup("fit")
    workdir = tempfile.mkdtemp(prefix="gapbridge-bench-")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, Fashion-MNIST, MLP 784-256-256-10, batch 128, Adam 1e-3\n")

    if args.part in ("speed", "both"):
        compare_speed(data, workdir, args.repeats)
    if args.part in ("accuracy", "both"):
        compare_accuracy(data, workdir, args.epochs, entropy_coef=args.entropy_coef, num_samples=args.num_samples,
                         normalize_advantage=args.normalize_advantage)


def compare_speed(data: VisionDataModule, workdir: str, repeats: int) -> None:
    """One epoch, Lightning vs bare loop, alternating so that load drift hits both."""
    lightning_times, fit_times, bare_times, barebones_times = [], [], [], []
    for _ in range(repeats):
        seed_everything(0, verbose=False)
        model = ReinforceClassifier(grad_variance_every=0)
        epoch_seconds, fit_seconds = lightning_epoch(model, data, workdir)
        lightning_times.append(epoch_seconds)
        fit_times.append(fit_seconds)
        seed_everything(0, verbose=False)
        barebones_times.append(lightning_epoch(ReinforceClassifier(grad_variance_every=0), data, workdir, barebones=True)[0])
        seed_everything(0, verbose=False)
        model = ReinforceClassifier(grad_variance_every=0)
        bare_times.append(bare_epoch(lambda batch: model._policy_terms(*batch)[1].loss, model,
                                     model.configure_optimizers(), data.train_dataloader()))
    print(f"(whole Trainer.fit including its one-time set-up: median {statistics.median(fit_times):.2f} s)")
    report_overhead("one training epoch (55,000 images, REINFORCE, 32 samples/image)", lightning_times, bare_times)
    print(f"diagnostic: Trainer(barebones=True), no training scalars logged: median {statistics.median(barebones_times):.2f} s "
          f"({statistics.median(barebones_times) / statistics.median(bare_times):.3f}x the bare loop; all: {seconds(barebones_times)})")


def compare_accuracy(data: VisionDataModule, workdir: str, epochs: int, **reinforce_options) -> None:
    """The same network trained by REINFORCE on the 0/1 reward and by cross-entropy."""
    results = {"reinforce": train_and_test("reinforce", epochs, data, workdir, **reinforce_options),
               "cross_entropy": train_and_test("cross_entropy", epochs, data, workdir)}
    print(f"test accuracy after {epochs} epochs; REINFORCE with leave-one-out baseline, {reinforce_options}")
    print(f"{'objective':<16}{'test acc':>10}{'train s':>10}")
    for objective, (accuracy, train_seconds) in results.items():
        print(f"{objective:<16}{accuracy:>10.4f}{train_seconds:>10.1f}")
    gap = 100 * (results["cross_entropy"][0] - results["reinforce"][0])
    print(f"cross-entropy - REINFORCE = {gap:.2f} points  (bar: <= 3) -> {'PASS' if gap <= 3 else 'FAIL'}")


if __name__ == "__main__":
    main()
