"""VAE on binarised Fashion-MNIST: against pythae, estimator against estimator, Lightning against a bare loop.

Three comparisons, measured side by side in one run (784-200-200-50 tanh, Bernoulli likelihood,
batch 100, Adam 1e-3, the 55,000 training images of ``VisionDataModule(variant="binarized")``):

1. peer: ``modules.vae.VAE`` (reparameterised, k=1) vs pythae 0.1.2's ``VAE`` with the same encoder and
   decoder: seconds per training epoch (median of ``--repeats`` single epochs, the contestants
   alternating; ``--compile`` adds ours with ``compile=True``) and, after ``--epochs``, the test NLL importance-sampled with
   ``--nll_k`` samples on the first ``--nll_images`` test images. pythae's trained weights are copied
   into our module (same architecture), so both NLLs come from the same code
   (``VAE.importance_sampled_nll``). Bars: our NLL no worse (within 0.5 nats), our epoch time at most 0.5x.
   Beside them, the floor: the same network, loader and optimiser in a bare PyTorch loop, timed in turn.
   pythae has no dynamic binarisation: it gets one binarisation of the same training images, drawn once.
2. estimators: the same VAE trained with ``reparam``, ``score_function`` with NVIL control variates
   and ``score_function`` without a baseline: test ELBO after the same epochs, and the variance of the
   encoder gradient on one fixed batch of 100 test images at ONE set of parameters (the NVIL model's,
   after training), so only the estimator differs. Bar: control variates cut it >= 10x vs no baseline.
3. overhead: one epoch through ``lightning.Trainer`` (whole ``fit``) vs the same model, loader and
   optimiser in a bare loop, alternating, median of ``--repeats`` (bar: <= 1.15x).

    python benchmarks/vae.py                    # 10 epochs each
    python benchmarks/vae.py --epochs 3         # what fits in ~15 min on 2 CPU cores
    python benchmarks/vae.py --quick            # 1 epoch, NLL with k=100 on 500 images: a smoke run
    python benchmarks/vae.py --parts peer overhead
    python benchmarks/vae.py --epochs 3 --threads 1   # on a machine shared with other jobs

pythae comes from the ``bench`` dependency group: ``uv sync --frozen --group bench``.
"""

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.overhead import EpochClock, bare_epoch, report_overhead, seconds  # noqa: E402
from datamodules.vision import VisionDataModule  # noqa: E402
from modules.networks import mlp  # noqa: E402
from modules.vae import VAE  # noqa: E402

LATENT, HIDDEN, BATCH, LR = 50, (200, 200), 100, 1e-3
FLOOR = "bare PyTorch loop (floor)"


def quiet_trainer(epochs: int, workdir: str, callbacks=(), **kwargs) -> Trainer:
    return Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False, callbacks=list(callbacks),
                   default_root_dir=workdir, limit_val_batches=0, num_sanity_val_steps=0, **kwargs)


def train_ours(data: VisionDataModule, epochs: int, workdir: str, **model_args) -> tuple[VAE, list[float]]:
    """Our VAE trained through Lightning for ``epochs``; returns (model, seconds per epoch)."""
    seed_everything(0, verbose=False)
    model = VAE(latent_dim=LATENT, hidden_sizes=HIDDEN, lr=LR, grad_variance_every=0, **model_args)
    clock = EpochClock()
    quiet_trainer(epochs, workdir, [clock]).fit(model, datamodule=data)
    return model, clock.seconds


# --- pythae -------------------------------------------------------------------------------------


def train_pythae(images: torch.Tensor, epochs: int, workdir: str):
    """pythae's VAE with our architecture, trained by its own BaseTrainer; returns (model, seconds per epoch)."""
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE as PythaeVAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = mlp([784, *HIDDEN], "tanh", activate_last=True)
            self.mu = nn.Linear(HIDDEN[-1], LATENT)
            self.log_var = nn.Linear(HIDDEN[-1], LATENT)

        def forward(self, x):
            h = self.trunk(x.reshape(len(x), -1))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp([LATENT, *reversed(HIDDEN), 784], "tanh")

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(len(z), 1, 28, 28))

    class Clock(TrainingCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_epoch_begin(self, training_config, **kwargs):
            self._start = time.perf_counter()

        def on_epoch_end(self, training_config, **kwargs):
            self.seconds.append(time.perf_counter() - self._start)

    logging.getLogger("pythae").setLevel(logging.WARNING)
    torch.manual_seed(0)
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
    model = PythaeVAE(config, encoder=Encoder(), decoder=Decoder())
    training = BaseTrainerConfig(output_dir=os.path.join(workdir, "pythae"), num_epochs=epochs, learning_rate=LR,
                                 per_device_train_batch_size=BATCH, optimizer_cls="Adam", no_cuda=True)
    clock = Clock()
    trainer = BaseTrainer(model, BaseDataset(images, torch.zeros(len(images))), training_config=training, callbacks=[clock])
    trainer.train()
    return model, clock.seconds


def pythae_as_ours(pythae_model) -> VAE:
    """Our VAE holding pythae's trained weights (same layers), so one NLL routine scores both."""
    ours = VAE(latent_dim=LATENT, hidden_sizes=HIDDEN)
    encoder, decoder = pythae_model.encoder, pythae_model.decoder
    with torch.no_grad():
        for mine, theirs in zip(ours.encoder.trunk.parameters(), encoder.trunk.parameters()):
            mine.copy_(theirs)
        ours.encoder.head.weight.copy_(torch.cat([encoder.mu.weight, encoder.log_var.weight]))
        ours.encoder.head.bias.copy_(torch.cat([encoder.mu.bias, encoder.log_var.bias]))
        for mine, theirs in zip(ours.decoder.parameters(), decoder.parameters()):
            mine.copy_(theirs)
    return ours


# --- evaluation -----------------------------------------------------------------------------------


@torch.no_grad()
def test_scores(model: VAE, images: torch.Tensor, nll_k: int) -> tuple[float, float, float]:
    """(test ELBO with the closed-form KL, importance-sampled NLL with nll_k samples, seconds for the NLL)."""
    model.eval()
    torch.manual_seed(1)
    elbo = torch.cat([-(t.reconstruction + t.kl) for t in (model.bound(part, 1) for part in images.split(500))]).mean().item()
    start = time.perf_counter()
    nll = torch.cat([model.importance_sampled_nll(part, nll_k, chunk=100) for part in images.split(100)]).mean().item()
    return elbo, nll, time.perf_counter() - start


def lightning_epoch(data: VisionDataModule, workdir: str) -> float:
    seed_everything(0, verbose=False)
    model = VAE(latent_dim=LATENT, hidden_sizes=HIDDEN, lr=LR, grad_variance_every=0)
    trainer = quiet_trainer(1, workdir)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - start


# --- the three comparisons ------------------------------------------------------------------------


def peer(args, data: VisionDataModule, test_images: torch.Tensor, workdir: str) -> None:
    generator = torch.Generator().manual_seed(0)
    train_uint8 = data.train_set.tensors[0]
    fixed_binarisation = (torch.randint(0, 255, train_uint8.shape, generator=generator, dtype=torch.uint8) < train_uint8).float()[:, None]

    # speed: single epochs alternating between the contestants, so drift in machine load hits all alike
    contestants = {"gapbridge VAE": VAE(latent_dim=LATENT, hidden_sizes=HIDDEN, lr=LR, grad_variance_every=0)}
    if args.compile:
        compiled = VAE(latent_dim=LATENT, hidden_sizes=HIDDEN, lr=LR, grad_variance_every=0, compile=True)
        start = time.perf_counter()
        quiet_trainer(1, workdir, limit_train_batches=3).fit(compiled, datamodule=data)  # compiles outside the clock
        print(f"(torch.compile of the bound: {time.perf_counter() - start:.0f} s, once per process)")
        contestants["gapbridge VAE, compile=True"] = compiled
    # the floor: the same network, loader and optimiser in a bare PyTorch loop (no Lightning, nothing logged)
    bare = VAE(latent_dim=LATENT, hidden_sizes=HIDDEN, lr=LR, grad_variance_every=0)
    bare_optimizer = bare.configure_optimizers()
    times: dict[str, list[float]] = {"pythae 0.1.2 VAE": [], **{name: [] for name in contestants}, FLOOR: []}
    for _ in range(args.repeats):
        times["pythae 0.1.2 VAE"] += train_pythae(fixed_binarisation, 1, workdir)[1]
        for name, model in contestants.items():
            clock = EpochClock()
            quiet_trainer(1, workdir, [clock]).fit(model, datamodule=data)
            times[name] += clock.seconds
        times[FLOOR].append(bare_epoch(lambda batch: bare.loss(batch[0])[0], bare, bare_optimizer, data.train_dataloader()))

    # quality: full runs of the same length, scored by the same code
    ours = train_ours(data, args.epochs, workdir)[0]
    theirs = train_pythae(fixed_binarisation, args.epochs, workdir)[0]
    copy = pythae_as_ours(theirs)
    probe = test_images[:8]
    with torch.no_grad():  # the copy decodes exactly what pythae decodes
        expected = theirs.decoder(theirs.encoder(probe).embedding).reconstruction
        assert torch.allclose(copy.reconstruct(probe), expected, atol=1e-5)
    scores = {"gapbridge VAE": test_scores(ours, test_images, args.nll_k), "pythae 0.1.2 VAE": test_scores(copy, test_images, args.nll_k)}

    print(f"1. peer: test scores after {args.epochs} epochs, NLL with k={args.nll_k} on {len(test_images)} test images "
          f"(same code for both); seconds per epoch from {args.repeats} alternating single epochs")
    print(f"{'model':<30}{'s/epoch (median)':>17}{'test ELBO':>11}{'test NLL':>10}{'NLL s':>8}   epochs (s)")
    for name, epoch_times in times.items():
        elbo, nll, nll_seconds = (f"{v:>{w}.{p}f}" for v, w, p in zip(scores[name], (11, 10, 8), (2, 2, 1))) if name in scores else ("-".rjust(11), "-".rjust(10), "-".rjust(8))
        print(f"{name:<30}{statistics.median(epoch_times):>17.2f}{elbo}{nll}{nll_seconds}   {seconds(epoch_times)}")
    pythae_time = statistics.median(times["pythae 0.1.2 VAE"])
    for name in contestants:
        ratio = statistics.median(times[name]) / pythae_time
        print(f"epoch time {name} / pythae = {ratio:.3f}x  (bar: <= 0.5x) -> {'PASS' if ratio <= 0.5 else 'FAIL'}")
    floor = statistics.median(times[FLOOR]) / pythae_time
    print(f"epoch time {FLOOR} / pythae = {floor:.3f}x: the same computation without any framework; "
          f"a 0.5x bar {'lies below' if floor > 0.5 else 'is above'} this floor on this machine")
    gap = scores["gapbridge VAE"][1] - scores["pythae 0.1.2 VAE"][1]
    print(f"NLL ours - pythae = {gap:+.2f} nats  (bar: <= +0.5) -> {'PASS' if gap <= 0.5 else 'FAIL'}\n")


def estimators(args, data: VisionDataModule, test_images: torch.Tensor, workdir: str) -> None:
    variants = {
        "reparam": dict(estimator="reparam"),
        "score_function, NVIL": dict(estimator="score_function", baseline="nvil", normalize_advantage="running"),
        "score_function, none": dict(estimator="score_function", baseline="none", normalize_advantage="none"),
    }
    trained = {name: train_ours(data, args.epochs, workdir, **kwargs) for name, kwargs in variants.items()}
    batch = test_images[:BATCH]
    # one point in parameter space for all: the NVIL model after training, its learned baseline included
    reference = trained["score_function, NVIL"][0]
    probes = {**variants, "score_function, moving avg": dict(estimator="score_function", baseline="moving_average", normalize_advantage="running")}
    variance = {}
    for name, kwargs in probes.items():
        probe = VAE(latent_dim=LATENT, hidden_sizes=HIDDEN, grad_variance_repeats=args.variance_repeats, **kwargs)
        probe.load_state_dict(reference.state_dict(), strict=False)  # the baseline net only exists for NVIL
        probe.estimator.num_updates.fill_(1)  # the moving averages are warm, as in training
        torch.manual_seed(2)
        variance[name] = probe.encoder_gradient_variance(batch).item()

    print(f"2. estimators: {args.epochs} epochs each; encoder-gradient variance on 100 fixed test images, "
          f"{args.variance_repeats} re-samplings, at the NVIL model's trained parameters")
    print(f"{'encoder gradient':<28}{'test ELBO':>11}{'s/epoch':>9}{'grad variance':>15}{'vs reparam':>12}")
    for name in probes:
        if name in trained:
            model, times = trained[name]
            elbo = test_scores(model, test_images, 1)[0]
            elbo_text, time_text = f"{elbo:>11.2f}", f"{statistics.median(times):>9.2f}"
        else:
            elbo_text, time_text = f"{'-':>11}", f"{'-':>9}"
        print(f"{name:<28}{elbo_text}{time_text}{variance[name]:>15.4g}{variance[name] / variance['reparam']:>11.1f}x")
    cut = variance["score_function, none"] / variance["score_function, NVIL"]
    print(f"variance without baseline / with NVIL control variates = {cut:.1f}x  (bar: >= 10x) -> {'PASS' if cut >= 10 else 'FAIL'}\n")


def overhead(args, data: VisionDataModule, workdir: str) -> None:
    lightning_times, bare_times = [], []
    for _ in range(args.repeats):
        lightning_times.append(lightning_epoch(data, workdir))
        seed_everything(0, verbose=False)
        model = VAE(latent_dim=LATENT, hidden_sizes=HIDDEN, lr=LR, grad_variance_every=0)
        bare_times.append(bare_epoch(lambda batch: model.loss(batch[0])[0], model, model.configure_optimizers(),
                                     data.train_dataloader()))
    report_overhead("3. one training epoch (55,000 images), whole Trainer.fit vs bare loop, alternating",
                    lightning_times, bare_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--nll_k", type=int, default=1000, help="importance samples per test image for the NLL")
    parser.add_argument("--nll_images", type=int, default=2000, help="first N test images scored")
    parser.add_argument("--variance_repeats", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed for each of Lightning and the bare loop")
    parser.add_argument("--compile", action="store_true", help="also time our VAE with compile=True in the peer comparison")
    parser.add_argument("--parts", nargs="+", default=["peer", "estimators", "overhead"], choices=["peer", "estimators", "overhead"])
    parser.add_argument("--quick", action="store_true", help="1 epoch, NLL k=100 on 500 images, 2 repeats")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for everything (0: torch's default); 1 on a machine shared with other jobs, "
                             "where OpenMP threads spinning against each other slow every kernel many times over")
    parser.add_argument("--data_dir", default="data")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.nll_k, args.nll_images, args.repeats, args.variance_repeats = 1, 100, 500, 2, 16

    data = VisionDataModule(data_dir=args.data_dir, variant="binarized", batch_size=BATCH)
    data.prepare_data()
    data.setup("fit")
    data.setup("test")
    test_images = data.test_set.tensors[0][: args.nll_images, None].float()  # binarised once, from the seed
    workdir = tempfile.mkdtemp(prefix="gapbridge-vae-bench-")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; binarised Fashion-MNIST, "
          f"MLP 784-200-200-{LATENT} tanh, Bernoulli, batch {BATCH}, Adam {LR}\n")
    if "peer" in args.parts:
        peer(args, data, test_images, workdir)
    if "estimators" in args.parts:
        estimators(args, data, test_images, workdir)
    if "overhead" in args.parts:
        overhead(args, data, workdir)


if __name__ == "__main__":
    main()
