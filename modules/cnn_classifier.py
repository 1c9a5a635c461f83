"""A CNN image classifier built from a hyperparameter configuration, and the one function that trains it.

The configuration is what a hyperparameter search edits (``datamodules.cnn_search``): number of conv
blocks, filters, kernel size, number and width of dense layers, activation, optimiser, learning rate
and dropout. Every one of them is a typed ``__init__`` argument of :class:`CNNClassifier`, so the
same configuration trains the search's cheap reward runs (:func:`train_classifier`) and, from the
CLI, the full run of the configuration the search found best (``configs/cnn_fashion.yaml``).
"""

import logging
import time
import warnings
from contextlib import contextmanager
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.seed import isolate_rng
from lightning.pytorch import LightningDataModule, Trainer
from torch import Tensor, nn

from modules.classifier import Classifier
from modules.errors import require
from modules.networks import _ACTIVATIONS, Activation
from modules.step_logging import step_logs_due

Optimizer = Literal["adam", "adamw", "sgd", "rmsprop"]


class ConvNet(nn.Module):
    """``conv_layers`` blocks of conv -> activation -> 2x2 max-pool, then ``dense_layers`` hidden layers.

    Block ``i`` has ``filters * 2**i`` channels (the usual doubling as the resolution halves) and
    ``kernel_size`` with "same" padding; dropout is applied to the flattened features and after every
    hidden dense layer. Output: class logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        conv_layers: int,
        filters: int,
        kernel_size: int,
        dense_layers: int,
        dense_width: int,
        activation: Activation,
        dropout: float,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        act = _ACTIVATIONS[activation]
        blocks: list[nn.Module] = []
        for i in range(conv_layers):
            out_channels = filters * 2**i
            blocks += [nn.Conv2d(channels, out_channels, kernel_size, padding=kernel_size // 2), act(), nn.MaxPool2d(2)]
            channels = out_channels
        self.features = nn.Sequential(*blocks, nn.Flatten())
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *image_shape)).shape[1]
        head: list[nn.Module] = [nn.Dropout(dropout)]
        for n_in in ([flat] + [dense_width] * (dense_layers - 1)) if dense_layers else []:
            head += [nn.Linear(n_in, dense_width), act(), nn.Dropout(dropout)]
        head.append(nn.Linear(dense_width if dense_layers else flat, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


class CNNClassifier(Classifier):
    """A CNN trained by cross-entropy; its architecture and optimiser are hyperparameters to search over.

    Args:
        num_classes: number of classes (must match the datamodule's).
        image_shape: ``[channels, height, width]`` (must match the datamodule's).
        conv_layers: conv blocks, each halving the resolution (at most log2 of the image side).
        filters: channels of the first block (doubled in each further block).
        kernel_size: conv kernel side (odd).
        dense_layers: hidden dense layers between the convolutions and the output layer (0: none).
        dense_width: units of each hidden dense layer.
        activation: nonlinearity after every conv and hidden dense layer.
        optimizer: ``adam``, ``adamw``, ``sgd`` (Nesterov momentum 0.9) or ``rmsprop``.
        lr: learning rate.
        dropout: dropout probability on the flattened features and after each hidden dense layer.
        weight_decay: the optimiser's weight decay.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        conv_layers: int = 2,
        filters: int = 32,
        kernel_size: int = 3,
        dense_layers: int = 1,
        dense_width: int = 128,
        activation: Activation = "relu",
        optimizer: Optimizer = "adam",
        lr: float = 1e-3,
        dropout: float = 0.25,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(num_classes, image_shape)
        max_blocks = min(image_shape[1:]).bit_length() - 1
        require(
            1 <= conv_layers <= max_blocks,
            f"--model.init_args.conv_layers must lie in [1, {max_blocks}] for images of side {min(image_shape[1:])} (each block halves it), got {conv_layers}",
        )
        require(filters >= 1 and dense_width >= 1, f"--model.init_args.filters and dense_width must be >= 1, got {filters}, {dense_width}")
        require(kernel_size >= 1 and kernel_size % 2 == 1, f"--model.init_args.kernel_size must be odd and >= 1, got {kernel_size}")
        require(dense_layers >= 0, f"--model.init_args.dense_layers must be >= 0, got {dense_layers}")
        require(activation in _ACTIVATIONS, f"--model.init_args.activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        require(optimizer in ("adam", "adamw", "sgd", "rmsprop"), f"--model.init_args.optimizer must be adam, adamw, sgd or rmsprop, got {optimizer!r}")
        require(lr > 0, f"--model.init_args.lr must be > 0, got {lr}")
        require(0.0 <= dropout < 1.0, f"--model.init_args.dropout must lie in [0, 1), got {dropout}")
        self.save_hyperparameters()
        self.network = ConvNet(image_shape, num_classes, conv_layers, filters, kernel_size, dense_layers, dense_width, activation, dropout)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``[B, num_classes]``."""
        return self.network(images)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits.float(), labels)
        if step_logs_due(self):
            self.log_training(loss, logits, labels)
        return loss

    def evaluate(self, batch, stage: str) -> None:
        images, labels = batch
        logits = self(images)
        self.log_evaluation(stage, logits, labels, loss=F.cross_entropy(logits.float(), labels))

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=0.9, nesterov=True, weight_decay=hp.weight_decay)
        optimizer_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}[hp.optimizer]
        return optimizer_cls(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)


def network_identity(config: dict) -> dict:
    """The part of a ``CNNClassifier`` configuration that decides what is trained: ``dense_width`` goes when there are no dense layers.

    Two configurations with the same identity build the same network and train it the same way, so
    they reach the same accuracy (a search space lists such twins as distinct configurations).
    """
    if config.get("dense_layers", 1) == 0:
        return {name: value for name, value in config.items() if name != "dense_width"}
    return dict(config)


@contextmanager
def _quiet():
    """Silence the per-run banners ("GPU available ...") and dataloader hints of short nested runs."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def train_classifier(
    config: dict,
    datamodule: LightningDataModule,
    max_epochs: int = 1,
    seed: int = 0,
    accelerator: str = "cpu",
    precision: str = "32-true",
    test: bool = False,
) -> dict[str, float]:
    """Train ``CNNClassifier(**config)`` on ``datamodule`` with a Lightning ``Trainer``; returns its accuracies.

    ``val_acc`` after the last epoch (and ``test_acc`` with ``test``), plus ``seconds`` of training.
    The run draws all its randomness (initial weights, batch order) from ``seed`` and leaves the
    caller's random states as they were, so it can run inside another training loop (the search's
    DQN) without changing what that loop draws. Nothing is logged or checkpointed.
    """
    with isolate_rng(), torch.inference_mode(False), torch.enable_grad(), _quiet():
        torch.manual_seed(seed)
        model = CNNClassifier(num_classes=datamodule.num_classes, image_shape=tuple(datamodule.image_shape), **config)
        trainer = Trainer(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=1,
            precision=precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            check_val_every_n_epoch=max_epochs,
        )
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule)
        result = {"val_acc": float(trainer.callback_metrics["val/acc"]), "seconds": time.perf_counter() - start}
        if test:
            result["test_acc"] = float(trainer.test(model, datamodule=datamodule, verbose=False)[0]["test/acc"])
    return result
