"""Where a hard-attention model looks: the glimpse path on a fixed set of test images, to TensorBoard."""

import matplotlib.pyplot as plt
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from matplotlib.patches import Rectangle

from callbacks.figures import log_figure, tensorboard


def location_to_pixels(location: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(x, y)`` in ``[-1, 1]`` to pixel coordinates of the glimpse centre (``-1`` is the image's outer edge).

    The same convention as :class:`modules.glimpse.GlimpseSensor` (``l -> (l + 1) W / 2`` from the outer edge),
    shifted by half a pixel because matplotlib puts pixel ``i``'s centre at ``i``. The sensor rounds each patch
    to whole pixels, so a drawn box can sit up to half a pixel from the patch actually read.
    """
    x = (location[..., 0] + 1) * width / 2 - 0.5
    y = (location[..., 1] + 1) * height / 2 - 0.5
    return torch.stack([x, y], dim=-1)


class GlimpsePaths(Callback):
    """After each validation epoch, draw the greedy glimpse path on ``num_images`` fixed test images.

    For each glimpse one square per scale (its side is the patch's pixels) in the step's colour, its
    centre numbered ``1 .. T`` and joined to the next by a line; the title gives the prediction and the
    label (red when wrong). Logged as ``pictures/glimpse_paths``. Works with any module that has
    ``glimpse_path(images) -> (locations [B, T, 2], logits [B, K])`` and a ``glimpse.sensor.patch_sizes``
    list, such as :class:`modules.ram.RecurrentAttentionModel`.
    """

    def __init__(self, num_images: int = 8, columns: int = 4) -> None:
        self.num_images = num_images
        self.columns = columns
        self._batch = None

    def _fixed_images(self, trainer: Trainer):
        """The first test images (the test variant is drawn once from the datamodule's seed); else validation."""
        datamodule = trainer.datamodule
        try:
            datamodule.setup("test")
            loader = datamodule.test_dataloader()
        except Exception:  # a datamodule without a test split: fall back to validation images
            loader = datamodule.val_dataloader()
        images, labels = next(iter(loader))[:2]
        return images[: self.num_images], labels[: self.num_images]

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or tensorboard(trainer) is None:
            return
        if self._batch is None:
            self._batch = self._fixed_images(trainer)
        images, labels = self._batch
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            locations, logits = pl_module.glimpse_path(images.to(pl_module.device))
        pl_module.train(was_training)
        figure = draw_glimpse_paths(images.float().cpu(), locations.float().cpu(), logits.argmax(-1).cpu(), labels,
                                    pl_module.glimpse.sensor.patch_sizes, self.columns)
        log_figure(trainer, "pictures/glimpse_paths", figure)


def draw_glimpse_paths(images, locations, predicted, labels, patch_sizes, columns: int = 4) -> plt.Figure:
    """One panel per image: the image, a box per scale at each glimpse, numbered steps joined by a line."""
    height, width = images.shape[-2:]
    steps = locations.shape[1]
    colours = plt.cm.cool(torch.linspace(0, 1, steps).tolist())
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, path, pred, label in zip(axes.flat, images, locations, predicted, labels):
        ax.imshow(image[0], cmap="gray")
        centres = location_to_pixels(path, height, width)
        ax.plot(centres[:, 0], centres[:, 1], color="white", linewidth=0.6, alpha=0.7)
        for step, ((x, y), colour) in enumerate(zip(centres.tolist(), colours), start=1):
            for size in patch_sizes:
                ax.add_patch(Rectangle((x - size / 2, y - size / 2), size, size, fill=False, edgecolor=colour, linewidth=1.0))
            ax.text(x, y, str(step), color=colour, fontsize=7, ha="center", va="center", fontweight="bold")
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.set_title(f"{pred.item()} / {label.item()}", fontsize=8, color="black" if pred == label else "red")
    figure.tight_layout()
    return figure
