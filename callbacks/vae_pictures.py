"""Pictures of what a VAE has learned: reconstructions, samples from the prior and, in 2-D, its latent space."""

import matplotlib.pyplot as plt
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.distributions import Normal
from torchvision.utils import make_grid

from callbacks.figures import log_figure, tensorboard


class VAEPictures(Callback):
    """After each validation epoch, send to TensorBoard:

    - ``pictures/reconstructions``: ``num_images`` fixed held-out images (the validation split, whose
      binarisation is drawn once) in odd rows, the decoded posterior means below them;
    - ``pictures/prior_samples``: ``E[x | z]`` for ``num_samples`` codes ``z ~ N(0, I)`` drawn once from ``seed``;
    - with ``latent_dim == 2``: ``pictures/latent_manifold`` (decoded codes on a ``manifold_steps`` square grid
      of Gaussian quantiles, as in Kingma & Welling 2014, fig. 4) and ``pictures/latent_scatter`` (posterior
      means of up to ``scatter_images`` held-out images coloured by label).

    Works with any module with ``forward(images) -> posterior mean``, ``decode(z) -> images`` and
    ``hparams.latent_dim``, such as :class:`modules.vae.VAE`.
    """

    def __init__(self, num_images: int = 32, num_samples: int = 64, columns: int = 8, manifold_steps: int = 15,
                 scatter_images: int = 2000, seed: int = 0) -> None:
        self.num_images = num_images
        self.num_samples = num_samples
        self.columns = columns
        self.manifold_steps = manifold_steps
        self.scatter_images = scatter_images
        self.seed = seed
        self._images = None
        self._labels = None
        self._prior_z = None

    def _held_out(self, trainer: Trainer, count: int):
        images, labels = [], []
        for batch in trainer.datamodule.val_dataloader():
            images.append(batch[0])
            labels.append(batch[1])
            if sum(len(b) for b in images) >= count:
                break
        return torch.cat(images)[:count], torch.cat(labels)[:count]

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard(trainer)
        if trainer.sanity_checking or writer is None:
            return
        latent_dim = pl_module.hparams.latent_dim
        if self._images is None:
            self._images, self._labels = self._held_out(trainer, max(self.num_images, self.scatter_images if latent_dim == 2 else 0))
            self._prior_z = torch.randn(self.num_samples, latent_dim, generator=torch.Generator().manual_seed(self.seed))
        step = trainer.global_step
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            images = self._images[: self.num_images].to(pl_module.device)
            reconstructions = pl_module.reconstruct(images)
            # rows of originals followed by rows of their reconstructions
            rows = max(1, len(images) // self.columns)
            shape = (rows, -1, *images.shape[1:])
            pairs = torch.stack([images[: rows * self.columns].reshape(shape), reconstructions[: rows * self.columns].reshape(shape)], dim=1)
            pairs = pairs.flatten(0, 2)
            writer.add_image("pictures/reconstructions", make_grid(pairs.float().cpu(), nrow=self.columns, pad_value=0.5), step)
            samples = pl_module.decode(self._prior_z.to(pl_module.device))
            writer.add_image("pictures/prior_samples", make_grid(samples.float().cpu(), nrow=self.columns, pad_value=0.5), step)
            if latent_dim == 2:
                self._latent_pictures(trainer, pl_module, writer, step)
        pl_module.train(was_training)

    def _latent_pictures(self, trainer: Trainer, pl_module: LightningModule, writer, step: int) -> None:
        quantiles = Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, self.manifold_steps))
        # top row = highest z_2, so the picture reads like the scatter plot's axes
        z2, z1 = torch.meshgrid(quantiles.flip(0), quantiles, indexing="ij")
        grid = torch.stack([z1.flatten(), z2.flatten()], dim=-1).to(pl_module.device)
        manifold = pl_module.decode(grid).float().cpu()
        writer.add_image("pictures/latent_manifold", make_grid(manifold, nrow=self.manifold_steps, padding=0), step)
        codes = torch.cat([pl_module(part.to(pl_module.device)).cpu() for part in self._images.split(500)])
        figure, ax = plt.subplots(figsize=(6, 5))
        points = ax.scatter(codes[:, 0], codes[:, 1], c=self._labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
        figure.colorbar(points, ax=ax, ticks=range(10), label="label")
        ax.set_xlabel("$E_q[z_1]$")
        ax.set_ylabel("$E_q[z_2]$")
        ax.set_title(f"held-out images encoded, step {step}")
        figure.tight_layout()
        log_figure(trainer, "pictures/latent_scatter", figure)
