"""Recurrent Attention Model: the batched retina's speed, an epoch's time, and learned vs random glimpses.

Three parts, each measured side by side in one run:

1. ``sensor``: :class:`modules.glimpse.GlimpseSensor` (the whole batch and all scales read from one
   summed-area table by one ``gather``) vs a per-sample Python loop that slices each scale's patch out of a
   zero-padded copy and average-pools it (the padding is done once for the whole batch, outside the loop,
   in the loop's favour). Batch 128, the paper's settings (28x28 with 8x8 at 1 scale, 60x60 with 12x12 at
   3 scales, 100x100 with 12x12 at 4 scales), pixel-aligned locations so that both read exactly the same
   pixels (checked). The batched sensor is timed per call (table + one read) and per forward (one table,
   ``T`` reads, divided by ``T``: how the model uses it). Medians of ``--repeats`` timings taken in turn
   (bar: >= 10x).
2. ``train``: the same model trained with the learned policy and with random glimpse locations
   (``location_policy=random``), same data, epochs, seed. After each epoch the greedy test accuracy
   and the training seconds so far (evaluation excluded) are printed: accuracy against wall-clock and
   one epoch's time. At the end the test accuracy of the greedy policy and of M = 1 and M = 10
   sampled rollouts (probabilities averaged). Bar: learned beats random by >= 5 points on cluttered 60x60.
   On translated and cluttered canvases, also where the greedy glimpses go: their mean distance to the
   object's centre, and the accuracy when they are all put on it (what a perfect policy would give).
3. ``paths``: several rollouts of each image (``train_samples`` paths in training, M in evaluation) read from one
   summed-area table per image against the same rollouts of the images repeated (``--part paths``, not in ``both``).

    python benchmarks/ram.py --part sensor
    python benchmarks/ram.py --part train --task cluttered60 --epochs 5
    python benchmarks/ram.py --part train --task 28 --epochs 3 --policies learned
    python benchmarks/ram.py --part paths --task cluttered60 --clock cpu
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


def timed_in_turn(functions, repeats: int, clock=time.perf_counter) -> list[float]:
    """Median seconds of each function, timed in turn so that drift in machine load hits all of them."""
    for function in functions:  # warm-up
        function()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for function, record in zip(functions, times):
            start = clock()
            function()
            record.append(clock() - start)
    return [statistics.median(record) for record in times]


def sensor_settings() -> list[tuple[int, int, int, int]]:
    """The paper's distinct (image side, glimpse size, scales, glimpses per image) among :data:`TASKS`."""
    settings = {(task["model"]["image_shape"][-1], task["model"]["glimpse_size"], task["model"]["num_scales"],
                 task["model"]["num_glimpses"]) for task in TASKS.values()}
    return sorted(settings)


def compare_sensor(batch: int = 128, repeats: int = 50, clock: str = "wall") -> None:
    """Loop vs batched sensor for each of the paper's settings, in ms per glimpse of the whole batch.

    ``per call``: ``sensor(images, location)``, which builds the summed-area table and reads one glimpse.
    ``per forward``: what a model glimpsing the same images ``T`` times pays: one table and ``T`` reads
    (at ``T`` different locations), divided by ``T``. The loop's zero padding is never timed (done once,
    in its favour), so its per-call time is also its time per glimpse within a forward. ``clock``: ``wall``
    (elapsed time) or ``cpu`` (this thread's CPU time, which time-slicing with other jobs does not inflate).
    """
    print(f"glimpse sensor alone, batch {batch}, pixel-aligned locations (borders included), {clock}-clock ms per "
          f"glimpse of the batch, medians of {repeats} timings taken in turn; bar: loop / batched >= 10x")
    print(f"{'images':<9}{'glimpse':<10}{'T':>3}{'loop':>9}{'per call':>10}{'ratio':>8}{'per forward':>13}{'ratio':>8}"
          f"{'max |diff|':>12}")
    generator = torch.Generator().manual_seed(0)
    verdicts = []
    for side, glimpse_size, num_scales, steps in sensor_settings():
        images = torch.rand(batch, 1, side, side, generator=generator)
        centres = torch.randint(0, side + 1, (steps, batch, 2), generator=generator)  # pixel edges (col, row)
        locations = centres.float() / side * 2 - 1  # (x, y) in [-1, 1]
        sensor = GlimpseSensor(glimpse_size, num_scales)
        pad = glimpse_size * 2 ** (num_scales - 1)
        padded = F.pad(images, (pad, pad, pad, pad))

        def loop():
            return looped_sensor(padded, pad, centres[0], glimpse_size, num_scales)

        def per_call():
            return sensor(images, locations[0])

        def per_forward():
            table = sensor.summed_area_table(images)
            return [sensor.read(table, location).to(images.dtype) for location in locations]

        with torch.no_grad():
            looped = [looped_sensor(padded, pad, centre, glimpse_size, num_scales) for centre in centres]
            difference = max((glimpse - expected).abs().max().item()
                             for glimpse, expected in zip([per_call(), *per_forward()], [looped[0], *looped]))
            clock_fn = dict(wall=time.perf_counter, cpu=time.thread_time)[clock]
            loop_s, call_s, forward_s = timed_in_turn([loop, per_call, per_forward], repeats, clock_fn)
        forward_s /= steps
        verdicts.append(f"{side}x{side} per call {'PASS' if loop_s / call_s >= 10 else 'FAIL'}, "
                        f"per forward {'PASS' if loop_s / forward_s >= 10 else 'FAIL'}")
        print(f"{f'{side}x{side}':<9}{f'{glimpse_size}x{glimpse_size} x{num_scales}':<10}{steps:>3}"
              f"{1000 * loop_s:>9.3f}{1000 * call_s:>10.3f}{loop_s / call_s:>7.1f}x"
              f"{1000 * forward_s:>13.3f}{loop_s / forward_s:>7.1f}x{difference:>12.1e}")
    print("bar >= 10x: " + "; ".join(verdicts) + "\n")


def compare_paths(task: str, paths: int, mc_samples: int, repeats: int, clock: str, batch: int = 128) -> None:
    """Several rollouts per image (``train_samples``, the M evaluation rollouts) read from one summed-area table per
    image (``rollout(images, paths=S)``) vs the same rollouts of the images repeated S times (what the model did
    before session 18): the rollouts of a training step, forward and backward, and an M-rollout evaluation forward."""
    settings = TASKS[task]["model"]
    model = RecurrentAttentionModel(**settings)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, *settings["image_shape"], generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    repeat = lambda n: images.repeat(n, *([1] * (images.dim() - 1)))  # noqa: E731

    def train_step(repeated: bool):
        def step():  # the rollouts hybrid_loss draws, and a loss through all of their parts (the rest is the same)
            model.zero_grad(set_to_none=True)
            rollout = model.rollout(repeat(paths)) if repeated else model.rollout(images, paths=paths)
            (F.cross_entropy(rollout.logits, labels.repeat(paths)) + rollout.log_prob.sum() + rollout.baseline.sum()).backward()
        return step

    def evaluation(repeated: bool):
        def forward():
            with torch.no_grad():
                return model.rollout(repeat(mc_samples)) if repeated else model.rollout(images, paths=mc_samples)
        return forward

    clock_fn = dict(wall=time.perf_counter, cpu=time.thread_time)[clock]
    print(f"{task}, batch {batch}: one summed-area table per image vs the images repeated, {clock}-clock ms, medians of {repeats} in turn")
    for name, functions in ((f"training step, {paths} paths per image", [train_step(False), train_step(True)]),
                            (f"evaluation, M = {mc_samples} rollouts", [evaluation(False), evaluation(True)])):
        one_table, repeated = timed_in_turn(functions, repeats, clock_fn)
        print(f"{name:<36} one table {1000 * one_table:8.1f}   repeated {1000 * repeated:8.1f}   {repeated / one_table:5.2f}x")
    print()


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


@torch.no_grad()
def where_it_looks(model: RecurrentAttentionModel, data: VisionDataModule) -> dict | None:
    """Greedy glimpses against the object itself (translated and cluttered tasks; None for 28x28).

    ``distance``: mean distance of the chosen glimpses ``l_1 .. l_{T-1}`` to the centre of the object (the
    28x28 source image) on its canvas, in location units (1 = half the canvas); ``on_object``: the greedy
    test accuracy when the chosen glimpses are put on the object instead, each at its centre plus Gaussian
    noise of the policy's std (seeded; T - 1 looks at exactly one point would see one view ``T - 1`` times):
    what a policy that finds the object would give this "what"; ``centre_distance``: the same distance
    for ``l_0``, the canvas centre; ``border``: the share of chosen glimpses with a coordinate at
    ``|l| >= 0.95`` (a ``tanh`` mean pinned at the canvas edge, where its gradient vanishes).
    """
    if data.test_offsets is None:
        return None
    model.eval()
    half = data.image_shape[-1] / 2
    top, left = (data.test_offsets.float() + 14).unbind(1)
    centres = torch.stack([left / half - 1, top / half - 1], dim=1)  # (x, y) in [-1, 1]
    generator = torch.Generator().manual_seed(0)
    distance = correct = seen = border = 0.0
    for images, labels in data.test_dataloader():
        centre = centres[int(seen) : int(seen) + len(images)]
        rollout = model.rollout(images, greedy=True)
        distance += (rollout.locations[1:] - centre).norm(dim=-1).mean(0).sum().item()
        border += (rollout.locations[1:].abs() >= 0.95).any(-1).float().mean(0).sum().item()
        noise = torch.randn(rollout.locations[1:].shape, generator=generator) * model.hparams.location_std
        looks = (centre + noise).clamp(-1.0, 1.0)
        correct += (model.rollout(images, looks=looks).logits.argmax(-1) == labels).sum().item()
        seen += len(images)
    return dict(distance=distance / seen, on_object=correct / seen, border=border / seen,
                centre_distance=centres.norm(dim=-1).mean().item())


def train(task: str, policy: str, epochs: int, data: VisionDataModule, seed: int = 0, **options) -> dict:
    seed_everything(seed, verbose=False)
    model = RecurrentAttentionModel(location_policy=policy, **{**TASKS[task]["model"], **options})
    curve = TestAccuracyCurve(data, policy)
    trainer = Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0, callbacks=[curve])
    trainer.fit(model, datamodule=data)
    tested = trainer.test(model, datamodule=data, verbose=False)[0]
    return dict(curve=curve, tested=tested, where=where_it_looks(model, data))


def compare_training(task: str, epochs: int, policies: list[str], dataset: str, seed: int = 0, **options) -> None:
    data = VisionDataModule(dataset=dataset, batch_size=128, val_size=5000, seed=seed, **TASKS[task]["data"])
    data.prepare_data()
    data.setup("fit")
    data.setup("test")
    print(f"{dataset} {task}, {TASKS[task]['model']}, {options}, {epochs} epochs, batch 128, Adam, seed {seed}")
    results = {policy: train(task, policy, epochs, data, seed, **options) for policy in policies}
    print(f"\n{'policy':<10}{'s/epoch':>9}{'train s':>9}{'greedy':>9}{'M=1':>9}{'M=10':>9}{'distance':>10}{'on object':>11}{'border':>8}")
    for policy, result in results.items():
        curve, tested, where = result["curve"], result["tested"], result["where"]
        print(f"{policy:<10}{statistics.median(curve.epoch_seconds):>9.1f}{curve.training_seconds:>9.0f}"
              f"{tested['test/acc']:>9.4f}{tested['test/acc_mc1']:>9.4f}{tested['test/acc_mc10']:>9.4f}"
              + (f"{where['distance']:>10.3f}{where['on_object']:>11.4f}{where['border']:>8.3f}" if where else ""))
    where = next(iter(results.values()))["where"]
    if where:
        print(f"distance: mean distance of the greedy glimpses l_1..l_T-1 to the object's centre (1 = half the canvas; "
              f"l_0, the canvas centre: {where['centre_distance']:.3f}); on object: greedy accuracy with those glimpses "
              "put on the object's centre plus noise of the policy's std; border: share of greedy glimpses with |x| or |y| >= 0.95")
    print("\ngreedy test accuracy against training wall-clock (s):")
    for policy, result in results.items():
        print(f"  {policy}: " + ", ".join(f"{s:.0f}s {a:.4f}" for _, s, a in result["curve"].curve))
    if {"learned", "random"} <= set(results):
        gap = 100 * (results["learned"]["tested"]["test/acc"] - results["random"]["tested"]["test/acc"])
        bar = f"(bar on cluttered60: >= 5) -> {'PASS' if gap >= 5 else 'FAIL'}" if task == "cluttered60" else ""
        print(f"learned - random (greedy test acc) = {gap:.2f} points {bar}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["sensor", "paths", "train", "both"], default="both",
                        help="both: sensor and train")
    parser.add_argument("--task", choices=sorted(TASKS), default="cluttered60")
    parser.add_argument("--dataset", choices=["fashion_mnist", "mnist"], default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--policies", nargs="+", choices=["learned", "random"], default=["learned", "random"])
    parser.add_argument("--location_std", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="seeds the data split, the canvases and the training")
    parser.add_argument("--repeats", type=int, default=50, help="timings of each sensor (median)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="sensor timings: elapsed time, or this thread's CPU time (not inflated by other jobs)")
    parser.add_argument("--paths", type=int, default=4, help="part paths: rollouts per training image (train_samples)")
    parser.add_argument("--mc_samples", type=int, default=10, help="part paths: evaluation rollouts per image (M)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="any other RecurrentAttentionModel argument, e.g. --option policy_detach_state=false")
    args = parser.parse_args()
    options = {name: yaml.safe_load(value) for name, value in (item.split("=", 1) for item in args.option)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    if args.part in ("sensor", "both"):
        compare_sensor(repeats=args.repeats, clock=args.clock)
    if args.part == "paths":
        compare_paths(args.task, args.paths, args.mc_samples, max(5, args.repeats // 5), args.clock)
    if args.part in ("train", "both"):
        compare_training(args.task, args.epochs, args.policies, args.dataset, args.seed, location_std=args.location_std, lr=args.lr,
                         **options)


if __name__ == "__main__":
    main()
