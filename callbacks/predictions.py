"""Pictures of what a classifier predicts on a fixed set of validation images."""

import matplotlib.pyplot as plt
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from callbacks.figures import log_figure, tensorboard


class PredictionGrid(Callback):
    """After each validation epoch, draw ``num_images`` fixed validation images titled ``predicted (p) / true``.

    Works with any module whose ``forward`` maps images to class logits. Wrong predictions are red.
    """

    def __init__(self, num_images: int = 16, columns: int = 8) -> None:
        self.num_images = num_images
        self.columns = columns
        self._batch = None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or tensorboard(trainer) is None:
            return
        if self._batch is None:
            images, labels = next(iter(trainer.datamodule.val_dataloader()))[:2]
            self._batch = images[: self.num_images], labels[: self.num_images]
        images, labels = self._batch
        with torch.no_grad():
            probs = pl_module(images.to(pl_module.device)).float().softmax(-1).cpu()
        confidence, predicted = probs.max(-1)
        rows = -(-len(images) // self.columns)
        figure, axes = plt.subplots(rows, self.columns, figsize=(1.6 * self.columns, 1.8 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, image, pred, conf, label in zip(axes.flat, images, predicted, confidence, labels):
            ax.imshow(image[0].float(), cmap="gray")
            ax.set_title(f"{pred.item()} ({conf.item():.2f}) / {label.item()}", fontsize=8,
                         color="black" if pred == label else "red")
        figure.tight_layout()
        log_figure(trainer, "val/predictions", figure)
