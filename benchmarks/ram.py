"""Recurrent Attention Model: the batched retina's speed, an epoch's time, and learned vs random glimpses.

Three parts, each measured side by side in one run:

1. ``sensor``: :class:`modules.glimpse.GlimpseSensor` (the whole batch and all scales in one
   ``grid_sample``) vs a per-sample Python loop that slices each scale's patch out of a zero-padded
   copy and average-pools it (the padding is done once for the whole batch, outside the loop, in the
   loop's favour). Batch 128, 60x60 images, 12x12 glimpses at 3 scales, pixel-aligned locations so
   that both read exactly the same pixels (checked). Median of ``--repeats`` timings taken in turn (bar: >= 10x).
2. ``train``: the same model trained with the learned policy and with random glimpse locations
   (``location_policy=random``), same data, epochs, seed. After each epoch the greedy test accuracy
   and the training seconds so far (evaluation excluded) are printed: accuracy against wall-clock and
   one epoch's time. At the end the test accuracy of the greedy policy and of M = 1 and M = 10
   sampled rollouts (probabilities averaged). Bar: learned beats random by >= 5 points on cluttered 60x60.

    python benchmarks/ram.py --part sensor
    python benchmarks/ram.py --part train --task cluttered60 --epochs 5
    python benchmarks/ram.py --part train --task 28 --epochs 3 --policies learned
    python benchmarks/ram.py --part train --policies learned --option policy_detach_state=false   # an ablation
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402

from datamodules.vision import VisionDataModule  # noqa: E402
from modules.glimpse import GlimpseSensor  # noqa: E402
from modules.ram import RecurrentAttentionModel  # noqa: E402

# the paper's settings per task (Mnih et al. 2014, Table 1)
TASKS = {
    "28": dict(data=dict(variant="plain"), model=dict(image_shape=(1, 28, 28), num_glimpses=6, glimpse_size=8, num_scales=1)),
    "translated60": dict(data=dict(variant="translated", canvas_size=60),
                         model=dict(image_shape=(1, 60, 60), num_glimpses=8, glimpse_size=12, num_scales=3)),
    "cluttered60": dict(data=dict(variant="cluttered", canvas_size=60, num_distractors=4),
                        model=dict(image_shape=(1, 60, 60), num_glimpses=8, glimpse_size=12, num_scales=3)),
    "cluttered100": dict(data=dict(variant="cluttered", canvas_size=100, num_distractors=8),
                         model=dict(image_shape=(1, 100, 100), num_glimpses=8, glimpse_size=12, num_scales=4)),
}


# --- 1. the sensor -------------------------------------------------------------------------------

def looped_sensor(padded: torch.Tensor, pad: int, centres: torch.Tensor, glimpse_size: int, num_scales: int) -> torch.Tensor:
    """Per-sample slicing: ``padded`` is the batch zero-padded by ``pad``; ``centres`` [B, 2] pixel edges (col, row)."""
    out = []
    for image, (col, row) in zip(padded, centres.tolist()):
        scales = []
        for k in range(num_scales):
            size = glimpse_size * 2**k
            top, left = row - size // 2 + pad, col - size // 2 + pad
            patch = image[:, top : top + size, left : left + size]
            scales.append(F.avg_pool2d(patch[None], 2**k)[0] if k else patch)
        out.append(torch.stack(scales))
    return torch.stack(out)


def alternating_medians(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of ``first`` and of ``second``, timed in turn so that drift in machine load hits both."""
    first(), second()  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, record in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def compare_sensor(batch: int = 128, side: int = 60, glimpse_size: int = 12, num_scales: int = 3, repeats: int = 50) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 1, side, side, generator=generator)
    centres = torch.randint(0, side + 1, (batch, 2), generator=generator)  # pixel edges, borders included
    location = centres.float() / side * 2 - 1  # (x, y) in [-1, 1]
    sensor = GlimpseSensor(glimpse_size, num_scales)
    pad = glimpse_size * 2 ** (num_scales - 1)
    padded = F.pad(images, (pad, pad, pad, pad))
    with torch.no_grad():
        batched = sensor(images, location)
        looped = looped_sensor(padded, pad, centres, glimpse_size, num_scales)
        difference = (batched - looped).abs().max().item()
        batched_s, looped_s = alternating_medians(
            lambda: sensor(images, location), lambda: looped_sensor(padded, pad, centres, glimpse_size, num_scales), repeats)
    ratio = looped_s / batched_s
    print(f"glimpse sensor, batch {batch}, {side}x{side} images, {glimpse_size}x{glimpse_size} at {num_scales} scales, "
          f"median of {repeats} (max |difference| {difference:.2e})")
    print(f"{'sensor':<34}{'ms / batch':>12}")
    print(f"{'batched grid_sample':<34}{1000 * batched_s:>12.3f}")
    print(f"{'per-sample slicing loop':<34}{1000 * looped_s:>12.3f}")
    print(f"loop / batched = {ratio:.1f}x  (bar: >= 10x) -> {'PASS' if ratio >= 10 else 'FAIL'}\n")


# --- 2. training ---------------------------------------------------------------------------------

class TestAccuracyCurve(Callback):
    """After each training epoch: greedy test accuracy and the training seconds so far (evaluation excluded)."""

    def __init__(self, data: VisionDataModule, label: str) -> None:
        self.data = data
        self.label = label
        self.training_seconds = 0.0
        self.epoch_seconds: list[float] = []
        self.curve: list[tuple[int, float, float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = time.perf_counter() - self._start
        self.epoch_seconds.append(seconds)
        self.training_seconds += seconds
        was_training = pl_module.training
        pl_module.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in self.data.test_dataloader():
                correct += (pl_module(images).argmax(-1) == labels).sum().item()
        pl_module.train(was_training)
        accuracy = correct / len(self.data.test_set)
        self.curve.append((trainer.current_epoch + 1, self.training_seconds, accuracy))
        print(f"  [{self.label}] epoch {trainer.current_epoch + 1}: {seconds:.1f} s, "
              f"trained {self.training_seconds:.0f} s, greedy test acc {accuracy:.4f}", flush=True)


def train(task: str, policy: str, epochs: int, data: VisionDataModule, **options) -> dict:
    seed_everything(0, verbose=False)
    model = RecurrentAttentionModel(location_policy=policy, **{**TASKS[task]["model"], **options})
    curve = TestAccuracyCurve(data, policy)
    trainer = Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0, callbacks=[curve])
    trainer.fit(model, datamodule=data)
    tested = trainer.test(model, datamodule=data, verbose=False)[0]
    return dict(curve=curve, tested=tested)


def compare_training(task: str, epochs: int, policies: list[str], dataset: str, **options) -> None:
    data = VisionDataModule(dataset=dataset, batch_size=128, val_size=5000, **TASKS[task]["data"])
    data.prepare_data()
    data.setup("fit")
    data.setup("test")
    print(f"{dataset} {task}, {TASKS[task]['model']}, {options}, {epochs} epochs, batch 128, Adam, seed 0")
    results = {policy: train(task, policy, epochs, data, **options) for policy in policies}
    print(f"\n{'policy':<10}{'s/epoch':>9}{'train s':>9}{'greedy':>9}{'M=1':>9}{'M=10':>9}")
    for policy, result in results.items():
        curve, tested = result["curve"], result["tested"]
        print(f"{policy:<10}{statistics.median(curve.epoch_seconds):>9.1f}{curve.training_seconds:>9.0f}"
              f"{tested['test/acc']:>9.4f}{tested['test/acc_mc1']:>9.4f}{tested['test/acc_mc10']:>9.4f}")
    print("\ngreedy test accuracy against training wall-clock (s):")
    for policy, result in results.items():
        print(f"  {policy}: " + ", ".join(f"{s:.0f}s {a:.4f}" for _, s, a in result["curve"].curve))
    if {"learned", "random"} <= set(results):
        gap = 100 * (results["learned"]["tested"]["test/acc"] - results["random"]["tested"]["test/acc"])
        bar = f"(bar on cluttered60: >= 5) -> {'PASS' if gap >= 5 else 'FAIL'}" if task == "cluttered60" else ""
        print(f"learned - random (greedy test acc) = {gap:.2f} points {bar}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["sensor", "train", "both"], default="both")
    parser.add_argument("--task", choices=sorted(TASKS), default="cluttered60")
    parser.add_argument("--dataset", choices=["fashion_mnist", "mnist"], default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--policies", nargs="+", choices=["learned", "random"], default=["learned", "random"])
    parser.add_argument("--location_std", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=50, help="timings of each sensor (median)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="any other RecurrentAttentionModel argument, e.g. --option policy_detach_state=false")
    args = parser.parse_args()
    options = {name: yaml.safe_load(value) for name, value in (item.split("=", 1) for item in args.option)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    if args.part in ("sensor", "both"):
        compare_sensor(repeats=args.repeats)
    if args.part in ("train", "both"):
        compare_training(args.task, args.epochs, args.policies, args.dataset, location_std=args.location_std, lr=args.lr,
                         **options)


if __name__ == "__main__":
    main()
