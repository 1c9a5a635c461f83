"""Weight-shared depth with learned halting: accuracy against depth, tied against untied, early exit, parity.

Six parts, each measured side by side in one run (``modules.shared_depth.SharedDepthNetwork``):

1. ``fashion``: Fashion-MNIST, conv stem + one residual conv block (``--block residual_mlp``: a linear
   embedding of the pixels + one residual MLP block, about 30x cheaper on a CPU). Fixed depths ``--depths`` against the
   REINFORCE halting policy at each ``--step_costs``; test accuracy and mean depth (thresholded and
   sampled halting). Bar: a REINFORCE run within 0.3 points of the best fixed depth at <= 70% of its depth.
2. ``tied``: the same network at depth ``--max_steps`` with one shared block against one block per
   step: test accuracy and parameter counts.
3. ``speed``: wall-clock of inference with per-sample early exit against running every step and
   selecting the halting step (same answers), on the Fashion-MNIST test set with the first REINFORCE
   model of part 1 (or a freshly trained one), median of ``--repeats``, alternating.
4. ``gru``: training speed of the parity network (``configs/depth_parity_reinforce.yaml``'s, batch 128)
   whose GRU step reads the input's share of its gates once per forward (``GRUStepBlock.read_context``)
   against the same network calling ``nn.GRUCell`` at every step, ``--repeats`` fits of ``--gru_steps``
   training steps each, alternating, this thread's CPU time (median).
5. ``counts``: a parity checkpoint (``--checkpoint``, e.g. a CLI run's ``last.ckpt``) read count by count: accuracy
   and mean halting step (thresholded) on ``--count_size`` fresh vectors with exactly k nonzeros, k = 1..bits, and
   the readout's accuracy at each of the first 6 steps when every vector runs them all (what the policy chooses between),
   and the range of the halting logits over every step (a saturated policy no longer learns).
6. ``parity``: REINFORCE, ACT and PonderNet on parity (``--bits``, training on 1..``--train_max``
   nonzeros, testing on ``--test_min``..``--bits``; the defaults are the 64-bit task, ``--extrapolation``
   the 96-bit one of PonderNet), each trained for ``--minutes`` of wall-clock: test accuracy and mean steps;
   on an extrapolation split also the training range's accuracy and the test accuracy by the number of +1 entries.

    python benchmarks/shared_depth.py                                   # everything, 1 seed
    python benchmarks/shared_depth.py --parts fashion tied speed --epochs 3 --train_subset 20000
    python benchmarks/shared_depth.py --parts gru                         # the GRU step's speed-up
    python benchmarks/shared_depth.py --parts counts --seeds 123 --checkpoint runs/depth_parity_reinforce/version_0/checkpoints/last.ckpt
    python benchmarks/shared_depth.py --parts parity --bits 16 --minutes 5
    python benchmarks/shared_depth.py --parts parity --extrapolation --minutes 20
    python benchmarks/shared_depth.py --seeds 0 1 2                      # the README's 3-seed tables
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402

from callbacks.curriculum import NonzeroCurriculum  # noqa: E402
from datamodules.synthetic import ParityDataModule, sample_parity  # noqa: E402
from datamodules.vision import VisionDataModule  # noqa: E402
from modules.halting import GRUStepBlock  # noqa: E402
from modules.shared_depth import SharedDepthNetwork  # noqa: E402

FASHION = dict(num_classes=10, input_shape=(1, 28, 28), block="conv", state_dim=32, lr=1e-3)
TRAINER = dict(gradient_clip_val=1.0)
PARITY = dict(num_classes=2, block="gru", state_dim=128, max_steps=20, lr=1e-3)
CONTROLLER_ARGS = {
    "reinforce": dict(depth_controller="reinforce", step_cost=0.001, reward="neg_loss", uniform_step_mix=0.5, cost_warmup_steps=5000),
    "act": dict(depth_controller="act", act_tau=0.01),
    "pondernet": dict(depth_controller="pondernet", ponder_lambda_p=0.2, ponder_beta=0.01),
}


class LearningCurve(Callback):
    """Prints the thresholded test accuracy and mean steps on ``inputs`` every ``minutes`` of training (parity runs),
    and the accuracy of the readout at every step when every vector runs every step (what the policy can choose).
    ``train_range``: vectors of the training range, when the test range is another (extrapolation), read alongside."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, minutes: float, checkpoint: str | None = None,
                 train_range: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.inputs, self.labels, self.seconds, self.checkpoint = inputs, labels, 60 * minutes, checkpoint
        self.train_range = train_range
        self.start = self.last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.seconds:
            return
        accuracy, steps, _ = evaluate(pl_module, self.inputs, self.labels)
        per_step = step_accuracies(pl_module, self.inputs, self.labels)
        seen = f" (training range: {evaluate(pl_module, *self.train_range)[0]:.2f}%)" if self.train_range else ""
        pl_module.train()
        ranges = [f", curriculum 1..{c.max_nonzero}" for c in trainer.callbacks if isinstance(c, NonzeroCurriculum)]
        print(f"curve: {(now - self.start) / 60:.1f} min, step {trainer.global_step}{''.join(ranges)}: acc {accuracy:.2f}%{seen},"
              f" {steps:.2f} steps; readout at steps 1..{len(per_step)}: {per_step}", flush=True)
        if self.checkpoint:  # a stopped run keeps what it has learnt
            save_weights(trainer, self.checkpoint)
        self.last = time.perf_counter()


def save_weights(trainer: Trainer, path: str) -> None:
    """The module's weights and hyperparameters, no optimiser state (a third of the size: small enough to keep in
    ``checkpoints/``; ``--init_checkpoint`` starts a fresh Adam anyway), with the module's class named as LightningCLI
    names it, so ``cli.py test --ckpt_path`` reads it (otherwise the CLI takes them for a bare LightningModule's)."""
    trainer.save_checkpoint(path, weights_only=True)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    module = trainer.lightning_module
    checkpoint["hyper_parameters"]["_class_path"] = f"{type(module).__module__}.{type(module).__qualname__}"
    torch.save(checkpoint, path)


def train(model: SharedDepthNetwork, data, epochs: int | None = None, minutes: float | None = None,
          callbacks: list[Callback] | None = None, checkpoint: str | None = None) -> float:
    """Fit without validation, then save to ``checkpoint`` if given; returns the seconds spent."""
    trainer = Trainer(max_epochs=epochs if epochs is not None else -1, max_time={"minutes": minutes} if minutes else None,
                      accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks, **TRAINER)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    if checkpoint:
        save_weights(trainer, checkpoint)
    return seconds


@torch.no_grad()
def step_accuracies(model: SharedDepthNetwork, inputs: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Accuracy in % of the readout at every step 1..N, every image running every step (what the policy chooses among)."""
    model.eval()
    predicted = torch.cat([model.trace(x).step_logits.argmax(-1) for x in inputs.split(1000)], dim=1)  # [N, B]
    return [round(100 * (p == labels).float().mean().item(), 2) for p in predicted]


@torch.no_grad()
def evaluate(model: SharedDepthNetwork, inputs: torch.Tensor, labels: torch.Tensor, mode: str = "threshold") -> tuple[float, float, torch.Tensor]:
    """(accuracy in %, mean halting step, halting steps [N]) with early exit."""
    model.eval()
    generator = torch.Generator().manual_seed(0)
    results = [model.infer(x, mode, generator=generator) for x in inputs.split(1000)]
    predicted = torch.cat([r.logits.argmax(-1) for r in results])
    steps = torch.cat([r.steps for r in results])
    return 100 * (predicted == labels).float().mean().item(), steps.float().mean().item(), steps


def accuracy_by_positives(model: SharedDepthNetwork, inputs: torch.Tensor, labels: torch.Tensor, least: int = 20) -> dict[int, float]:
    """Accuracy in % (thresholded) by the number of +1 entries, the count parity is taken of, where >= ``least`` vectors have it."""
    model.eval()
    predicted = torch.cat([model.infer(x).logits.argmax(-1) for x in inputs.split(1000)])
    positives = (inputs == 1).sum(dim=1)
    return {count: round(100 * (predicted == labels)[positives == count].float().mean().item(), 1)
            for count in positives.unique().tolist() if (positives == count).sum() >= least}


def fashion_data(args) -> VisionDataModule:
    data = VisionDataModule(dataset="fashion_mnist", data_dir=args.data_dir, batch_size=128, val_size=5000,
                            train_subset=args.train_subset)
    data.prepare_data()
    data.setup("fit")
    data.setup("test")
    return data


def test_split(data) -> tuple[torch.Tensor, torch.Tensor]:
    return data.test_set.tensors[0], data.test_set.tensors[1]


def test_inputs(data) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split with the datamodule's transform applied (normalisation for images)."""
    inputs, labels = [], []
    for batch in data.test_dataloader():
        inputs.append(batch[0])
        labels.append(batch[1])
    return torch.cat(inputs), torch.cat(labels)


def fashion_reinforce(args, step_cost: float) -> dict:
    """The REINFORCE halting options of every Fashion-MNIST run (accuracy against depth, and the speed part)."""
    return dict(depth_controller="reinforce", step_cost=step_cost, reward="correct", max_steps=args.max_steps,
                uniform_step_mix=args.uniform_step_mix, cost_warmup_steps=200, detach_halting_input=args.detach_halting_input,
                halting_reads_answer=args.halting_reads_answer)


def part_fashion(args, seed: int, trained: dict) -> list[dict]:
    data = fashion_data(args)
    inputs, labels = test_inputs(data)
    rows = []
    runs = [(f"fixed depth {d}", dict(depth_controller="fixed", fixed_depth=d, max_steps=args.max_steps)) for d in args.depths]
    runs += [(f"reinforce step_cost {c}", fashion_reinforce(args, c)) for c in args.step_costs]
    for name, options in runs:
        seed_everything(seed, verbose=False)
        model = SharedDepthNetwork(**{**FASHION, **options})
        seconds = train(model, data, epochs=args.epochs)
        accuracy, steps, _ = evaluate(model, inputs, labels)
        row = dict(part="fashion", seed=seed, run=name, acc=accuracy, steps=steps, train_s=seconds)
        if options["depth_controller"] == "reinforce":
            row["acc_sampled"], row["steps_sampled"], _ = evaluate(model, inputs, labels, "sample")
            row["step_acc"] = step_accuracies(model, inputs, labels)
            trained.setdefault("fashion_reinforce", model)
        rows.append(row)
        print(row, flush=True)
    return rows


def part_tied(args, seed: int) -> list[dict]:
    data = fashion_data(args)
    inputs, labels = test_inputs(data)
    depth = args.max_steps
    rows = []
    for tied in (True, False):
        seed_everything(seed, verbose=False)
        model = SharedDepthNetwork(**{**FASHION, "depth_controller": "fixed", "max_steps": depth, "tied": tied})
        seconds = train(model, data, epochs=args.epochs)
        accuracy, steps, _ = evaluate(model, inputs, labels)
        counts = model.parameter_counts()
        row = dict(part="tied", seed=seed, run=f"{'tied' if tied else 'untied'} depth {depth}", acc=accuracy, steps=steps,
                   params=counts["params/total"], block_params=counts["params/blocks"], train_s=seconds)
        rows.append(row)
        print(row, flush=True)
    return rows


@torch.no_grad()
def part_speed(args, seed: int, trained: dict) -> list[dict]:
    data = fashion_data(args)
    inputs, labels = test_inputs(data)
    model = trained.get("fashion_reinforce")
    if model is None:
        seed_everything(seed, verbose=False)
        model = SharedDepthNetwork(**{**FASHION, **fashion_reinforce(args, args.step_costs[0])})
        train(model, data, epochs=args.epochs)
    model.eval()
    batches = inputs.split(args.eval_batch)
    timings = {"early exit": [], "all steps": []}
    same = True
    for _ in range(args.repeats):
        for name, run in (("early exit", model.infer), ("all steps", model.infer_all_steps)):
            start = time.perf_counter()
            answers = [run(x).logits.argmax(-1) for x in batches]
            timings[name].append(time.perf_counter() - start)
            if name == "early exit":
                early = torch.cat(answers)
            else:
                same = same and torch.equal(early, torch.cat(answers))
    _, steps, _ = evaluate(model, inputs, labels)
    early_s, all_s = statistics.median(timings["early exit"]), statistics.median(timings["all steps"])
    row = dict(part="speed", seed=seed, run=f"test set, batch {args.eval_batch}", early_exit_s=early_s, all_steps_s=all_s,
               ratio=early_s / all_s, mean_steps=steps, max_steps=model.max_steps, same_predictions=same)
    print(row, flush=True)
    return [row]


class GRUCellEveryStep(GRUStepBlock):
    """The reference of part ``gru``: ``nn.GRUCell`` at every step, recomputing the input's share of the gates."""

    def read_context(self, context: torch.Tensor) -> torch.Tensor:
        return context

    def forward(self, state: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.cell(context, state)


def part_gru(args, seed: int) -> list[dict]:
    config = dict(depth_controller="reinforce", step_cost=0.001, uniform_step_mix=1.0, cost_warmup_steps=5000, max_steps=10)
    data = ParityDataModule(num_bits=64, max_nonzero=20, train_size=128 * args.gru_steps, val_size=100, test_size=100, seed=seed)
    models = {}
    for name in ("input gates read once", "nn.GRUCell every step"):
        seed_everything(seed, verbose=False)
        models[name] = SharedDepthNetwork(**{**PARITY, "input_shape": (64,), **config})
    reference = models["nn.GRUCell every step"].blocks.blocks
    reference[0] = GRUCellEveryStep(PARITY["state_dim"], 0)
    reference[0].load_state_dict(models["input gates read once"].blocks.blocks[0].state_dict())
    probe = torch.randn(256, 64)
    same = torch.allclose(*(model.trace(probe).states for model in models.values()), atol=1e-6)
    timings = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            trainer = Trainer(max_steps=args.gru_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                              num_sanity_val_steps=0, **TRAINER)
            start = time.thread_time()
            trainer.fit(model, datamodule=data)
            timings[name].append(time.thread_time() - start)
    fast, slow = (statistics.median(timings[name]) / args.gru_steps * 1000 for name in models)
    row = dict(part="gru", seed=seed, run=f"parity 64 bits, 10 steps, batch 128, {args.gru_steps} training steps per fit",
               read_once_ms_per_step=fast, cell_every_step_ms_per_step=slow, speedup=slow / fast, same_states=same)
    print(row, flush=True)
    return [row]


@torch.no_grad()
def part_counts(args, seed: int) -> list[dict]:
    model = SharedDepthNetwork.load_from_checkpoint(args.checkpoint, map_location="cpu").eval()
    bits = model.hparams.input_shape[0]
    generator = torch.Generator().manual_seed(seed)
    shown = min(model.max_steps, 6)
    rows = []
    for count in range(1, bits + 1):
        inputs, labels, _ = sample_parity(args.count_size, bits, count, count, generator)
        answer = model.infer(inputs)
        trace = model.trace(inputs)
        readouts = (trace.step_logits[:shown].argmax(-1) == labels).float().mean(1) * 100
        rows.append(dict(part="counts", seed=seed, run=f"{count} nonzeros of {bits}",
                         acc=100 * (answer.logits.argmax(-1) == labels).float().mean().item(), steps=answer.steps.float().mean().item(),
                         halt_logit_min=trace.halt_logits.min().item(), halt_logit_max=trace.halt_logits.max().item(),
                         **{f"acc_step_{n}": value.item() for n, value in enumerate(readouts, 1)}))
    print(f"{args.checkpoint}: accuracy % / mean steps by number of nonzeros: "
          + " ".join(f"{k}:{row['acc']:.0f}/{row['steps']:.1f}" for k, row in enumerate(rows, 1)), flush=True)
    print(f"the readout's accuracy % at steps 1..{shown}, every vector running every step (what the halting policy chooses between): "
          + " ".join(f"{k}:" + "/".join(f"{row[f'acc_step_{n}']:.0f}" for n in range(1, shown + 1)) for k, row in enumerate(rows, 1)), flush=True)
    low, high = min(row["halt_logit_min"] for row in rows), max(row["halt_logit_max"] for row in rows)
    print(f"halting logits l_n over every step and count: {low:.1f}..{high:.1f} (sigmoid' is below 5e-5 beyond +-10, where"
          " REINFORCE can hardly move them; see halt_logit_penalty)", flush=True)
    return rows


def part_parity(args, seed: int) -> list[dict]:
    bits, train_max, test_min = (96, 48, 49) if args.extrapolation else (args.bits, args.train_max or args.bits, args.test_min)
    data = ParityDataModule(num_bits=bits, max_nonzero=train_max, test_min_nonzero=test_min, test_max_nonzero=bits,
                            train_size=128 * 1000, val_size=100, test_size=args.parity_test_size, batch_size=128, seed=seed)
    data.setup()
    inputs, labels = test_split(data)
    extrapolating = test_min > 1  # then also read the training range (2,000 fresh vectors), to tell unlearnt from not extrapolated
    train_range = sample_parity(2000, bits, 1, train_max, torch.Generator().manual_seed(seed + 1))[:2] if extrapolating else None
    rows = []
    for controller in args.controllers:
        seed_everything(seed, verbose=False)
        if args.init_checkpoint:  # its weights and options, a fresh optimiser at --parity_lr
            options = {} if args.halt_logit_penalty is None else {"halt_logit_penalty": args.halt_logit_penalty}
            model = SharedDepthNetwork.load_from_checkpoint(args.init_checkpoint, map_location="cpu", lr=args.parity_lr, **options)
            controller = model.hparams.depth_controller
        else:
            model = SharedDepthNetwork(**{**PARITY, "input_shape": (bits,), **CONTROLLER_ARGS[controller]})
        callbacks = [LearningCurve(inputs[:2000], labels[:2000], args.curve_minutes, args.save_checkpoint, train_range)] if args.curve_minutes else []
        if args.curriculum:
            callbacks.append(curriculum := NonzeroCurriculum(start=args.curriculum, increment=args.curriculum_increment,
                                                                threshold=args.curriculum_threshold, eval_window=args.curriculum_window))
        seconds = train(model, data, minutes=args.minutes, callbacks=callbacks, checkpoint=args.save_checkpoint)
        accuracy, steps, halt_steps = evaluate(model, inputs, labels)
        sampled_accuracy, sampled_steps, _ = evaluate(model, inputs, labels, "sample")
        counts = data.test_num_nonzero
        low, high = counts <= counts.median(), counts > counts.median()
        row = dict(part="parity", seed=seed, run=f"{controller}, {bits} bits, train 1..{train_max}, test {test_min}..{bits}",
                   acc=accuracy, steps=steps, acc_sampled=sampled_accuracy, steps_sampled=sampled_steps,
                   acc_training_range=evaluate(model, *train_range)[0] if extrapolating else None,
                   steps_few_nonzeros=halt_steps[low].float().mean().item(), steps_many_nonzeros=halt_steps[high].float().mean().item(),
                   train_s=seconds, train_steps=model.global_step if model._trainer is not None else None,
                   curriculum_max_nonzero=curriculum.max_nonzero if args.curriculum else None)
        rows.append(row)
        print(row, flush=True)
        if extrapolating:  # beyond the training range the +1 count itself is new: where does the answer break?
            print("test accuracy by the number of +1 entries:", accuracy_by_positives(model, inputs, labels), flush=True)
    return rows


def table(rows: list[dict]) -> None:
    columns = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in ("part", "seed", "run")]
    print("\n| part | seed | run | " + " | ".join(columns) + " |")
    for row in rows:
        values = [f"{row[k]:.3f}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in columns]
        print(f"| {row['part']} | {row['seed']} | {row['run']} | " + " | ".join(values) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["fashion", "tied", "speed", "parity"],
                        choices=["fashion", "tied", "speed", "gru", "counts", "parity"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train_subset", type=int, default=None, help="first N training images (None: all 55,000)")
    parser.add_argument("--block", default="conv", choices=["conv", "residual_mlp"], help="Fashion-MNIST step block")
    parser.add_argument("--state_dim", type=int, default=32, help="Fashion-MNIST state width (channels for conv)")
    parser.add_argument("--readout_norm", action=argparse.BooleanOptionalAction, default=True,
                        help="Fashion-MNIST: LayerNorm before the readout (--no-readout_norm: the session-5 network)")
    parser.add_argument("--lr_schedule", default="cosine", choices=["constant", "cosine"],
                        help="Fashion-MNIST: Adam's rate decayed to 0 along a cosine over the epochs, or constant (the session-5/6 runs)")
    parser.add_argument("--max_steps", type=int, default=6, help="Fashion-MNIST: the most steps of a REINFORCE network; the tied part's depth")
    parser.add_argument("--depths", nargs="*", type=int, default=[1, 2, 4, 6], help="Fashion-MNIST fixed depths (none: REINFORCE runs only)")
    parser.add_argument("--step_costs", nargs="*", type=float, default=[0.003, 0.006, 0.01], help="none: fixed depths only")
    parser.add_argument("--uniform_step_mix", type=float, default=0.2, help="Fashion-MNIST REINFORCE runs (0.5: the session-5 runs)")
    parser.add_argument("--detach_halting_input", action=argparse.BooleanOptionalAction, default=False,
                        help="Fashion-MNIST REINFORCE runs: the halting policy reads the detached state")
    parser.add_argument("--halting_reads_answer", action=argparse.BooleanOptionalAction, default=False,
                        help="Fashion-MNIST REINFORCE runs: the halting policy also reads how sure the readout is at the step (log-odds, margin)")
    parser.add_argument("--gradient_clip_val", type=float, default=1.0, help="every run's gradient-norm clip (0: none)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eval_batch", type=int, default=1000)
    parser.add_argument("--gru_steps", type=int, default=200, help="part gru: training steps per timed fit")
    parser.add_argument("--checkpoint", default=None, help="part counts: the parity checkpoint to read")
    parser.add_argument("--count_size", type=int, default=500, help="part counts: vectors per number of nonzeros")
    parser.add_argument("--controllers", nargs="+", default=["reinforce", "act", "pondernet"], choices=list(CONTROLLER_ARGS))
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--train_max", type=int, default=None)
    parser.add_argument("--test_min", type=int, default=1)
    parser.add_argument("--extrapolation", action="store_true", help="96 bits, train 1..48, test 49..96")
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget per parity run")
    parser.add_argument("--parity_test_size", type=int, default=10_000)
    parser.add_argument("--curve_minutes", type=float, default=0.0,
                        help="parity: print accuracy and steps on 2,000 test vectors every this many minutes (0: never)")
    parser.add_argument("--parity_block", default="gru", choices=["gru", "residual_mlp"], help="parity: the step block")
    parser.add_argument("--parity_input_features", default="identity", choices=["identity", "crelu"],
                        help="parity: what the embedding reads (crelu: each entry's positive and negative parts)")
    parser.add_argument("--parity_state_dim", type=int, default=128)
    parser.add_argument("--parity_max_steps", type=int, default=20)
    parser.add_argument("--parity_lr", type=float, default=1e-3)
    parser.add_argument("--init_checkpoint", default=None,
                        help="parity: go on training this checkpoint's network (its options; a fresh Adam at --parity_lr) "
                             "instead of a new one; give --curriculum its range and one --controllers")
    parser.add_argument("--save_checkpoint", default=None,
                        help="parity: save the trained network here at the end and at every learning-curve point "
                             "(one --controllers; `cli.py test --ckpt_path` reads it)")
    parser.add_argument("--cost_warmup_steps", type=int, default=5000, help="REINFORCE step-cost warm-up on parity")
    parser.add_argument("--curriculum", type=int, default=0,
                        help="parity: train on 1..N nonzeros first, widened as the model masters them (callbacks.curriculum; 0: none)")
    parser.add_argument("--curriculum_increment", type=int, default=4, help="parity: how much the curriculum widens the range at a time")
    parser.add_argument("--curriculum_threshold", type=float, default=0.95, help="parity: the accuracy that widens the curriculum's range")
    parser.add_argument("--curriculum_window", type=int, default=None,
                        help="parity: the curriculum gates on the top N counts of its range (default: the whole range)")
    parser.add_argument("--parity_uniform_step_mix", type=float, default=0.5,
                        help="REINFORCE on parity: share of the uniform distribution in the block's per-step loss weights")
    parser.add_argument("--halt_logit_penalty", type=float, default=None,
                        help="REINFORCE on parity: weight of the mean squared halting logit in the loss (default: the "
                             "module's 0, or the --init_checkpoint's own)")
    args = parser.parse_args()
    if any(depth > args.max_steps for depth in args.depths):
        parser.error(f"--depths {args.depths}: each must be <= --max_steps {args.max_steps}")
    if args.save_checkpoint and len(args.controllers) * len(args.seeds) > 1:
        parser.error("--save_checkpoint keeps one parity run: give one --controllers and one --seeds")
    if "counts" in args.parts and not args.checkpoint:
        parser.error("--parts counts reads a parity checkpoint: give --checkpoint")
    if "speed" in args.parts and not args.step_costs:
        parser.error("--parts speed times a REINFORCE model: give at least one --step_costs value")
    torch.set_num_threads(args.threads)
    TRAINER.update(gradient_clip_val=args.gradient_clip_val or None)
    FASHION.update(block=args.block, state_dim=args.state_dim, readout_norm=args.readout_norm, lr_schedule=args.lr_schedule)
    PARITY.update(block=args.parity_block, input_features=args.parity_input_features, state_dim=args.parity_state_dim, max_steps=args.parity_max_steps, lr=args.parity_lr)
    CONTROLLER_ARGS["reinforce"].update(cost_warmup_steps=args.cost_warmup_steps, uniform_step_mix=args.parity_uniform_step_mix)
    if args.halt_logit_penalty is not None:
        CONTROLLER_ARGS["reinforce"].update(halt_logit_penalty=args.halt_logit_penalty)
    rows: list[dict] = []
    for seed in args.seeds:
        trained: dict = {}
        if "fashion" in args.parts:
            rows += part_fashion(args, seed, trained)
        if "tied" in args.parts:
            rows += part_tied(args, seed)
        if "speed" in args.parts:
            rows += part_speed(args, seed, trained)
        if "counts" in args.parts:
            rows += part_counts(args, seed)
        if "gru" in args.parts:
            rows += part_gru(args, seed)
        if "parity" in args.parts:
            rows += part_parity(args, seed)
    for part in dict.fromkeys(row["part"] for row in rows):
        table([row for row in rows if row["part"] == part])


if __name__ == "__main__":
    main()
