"""What every classifier LightningModule here shares, written once.

A classifier maps a batch of inputs to class logits ``[B, num_classes]``, keeps its best checkpoint on
``val/acc``, must agree with its datamodule on the number of classes and the input shape, and logs its
accuracy under ``train/``, ``val/`` and ``test/``. The models built on :class:`Classifier` (the
REINFORCE classifier, the recurrent attention model, the searched CNN, the shared-depth network) keep
only what their papers say: the network, the training objective and the quantities it adds.
"""

import math
from typing import Literal, Sequence

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from modules.errors import ConfigError, require

_SHAPE_FORMS = {1: "[D]", 3: "[C, H, W]"}
LrSchedule = Literal["constant", "cosine"]
ClassificationReward = Literal["correct", "neg_loss"]


def classification_reward(logits: Tensor, labels: Tensor, kind: ClassificationReward) -> Tensor:
    """The reward an answer earns, for a policy trained by REINFORCE on what a classifier then says (detached, float32).

    ``correct``: 1 if the top class is the label, else 0. ``neg_loss``: the negative cross-entropy, i.e. the
    log-probability of the label (the reward in the learning rule of Ba et al. 2015, Sec. 3, for hard attention:
    dense where the 0/1 reward is flat). ``logits`` [..., K]; ``labels`` broadcast to ``logits.shape[:-1]``.
    """
    logits = logits.detach().float()
    if kind == "correct":
        return (logits.argmax(-1) == labels).float()
    return logits.log_softmax(-1).gather(-1, labels.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def require_optimizer_options(lr: float, lr_schedule: str = "constant") -> None:
    """The checks of the options :meth:`Classifier.configure_optimizers` reads."""
    require(lr > 0, f"--model.init_args.lr must be > 0, got {lr}")
    require(lr_schedule in LrSchedule.__args__, f"--model.init_args.lr_schedule must be one of {LrSchedule.__args__}, got {lr_schedule!r}")


class Classifier(LightningModule):
    """Base of the classifiers: the configuration and data checks, one accuracy per stage, predictions, Adam.

    A subclass calls ``super().__init__(num_classes, input_shape)``, then ``self.save_hyperparameters()``
    (with ``lr`` and ``weight_decay`` among them, and optionally ``lr_schedule``, unless it overrides
    :meth:`configure_optimizers`), and implements ``forward``. ``shape_option`` names its ``__init__``
    argument holding the input shape, ``input_ranks`` the shapes it takes (3: images ``[C, H, W]``, 1:
    vectors ``[D]``), ``data_hint`` which datamodules fit. Validation and test batches go to :meth:`evaluate`; a subclass that measures more
    than accuracy overrides it and passes its measures to :meth:`log_evaluation`.
    """

    monitor = "val/acc"
    monitor_mode = "max"
    shape_option = "image_shape"
    input_ranks: tuple[int, ...] = (3,)
    data_hint = "use datamodules.vision.VisionDataModule"

    def __init__(self, num_classes: int, input_shape: Sequence[int]) -> None:
        super().__init__()
        require(num_classes >= 2, f"--model.init_args.num_classes must be >= 2, got {num_classes}")
        forms = " or ".join(_SHAPE_FORMS[rank] for rank in self.input_ranks)
        require(len(input_shape) in self.input_ranks and min(input_shape) > 0,
                f"--model.init_args.{self.shape_option} must be {forms}, got {list(input_shape)}")
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    # --- checks ---------------------------------------------------------------------------------

    def data_shape(self, datamodule) -> tuple[int, ...] | None:
        """The input shape ``datamodule`` gives: its ``image_shape``, or ``(input_dim,)`` where vectors are taken."""
        image_shape = getattr(datamodule, "image_shape", None)
        if image_shape is not None:
            return tuple(image_shape)
        input_dim = getattr(datamodule, "input_dim", None)
        return (input_dim,) if input_dim is not None and 1 in self.input_ranks else None

    def check_datamodule(self, datamodule) -> None:
        """Fail before training if the data does not fit the network."""
        num_classes = getattr(datamodule, "num_classes", None)
        shape = self.data_shape(datamodule)
        if num_classes is None or shape is None:
            kind, fields = ("a classification", "input_dim or image_shape") if 1 in self.input_ranks else ("an image", "image_shape")
            raise ConfigError(
                f"{type(self).__name__} needs {kind} datamodule with num_classes and {fields}; "
                f"{type(datamodule).__name__} has neither: {self.data_hint}"
            )
        require(
            num_classes == self.hparams.num_classes,
            f"model has {self.hparams.num_classes} classes but the data has {num_classes}: set --model.init_args.num_classes {num_classes}",
        )
        expected = tuple(self.hparams[self.shape_option])
        require(
            shape == expected,
            f"model expects inputs of shape {list(expected)} but the data gives {list(shape)}: "
            f"set --model.init_args.{self.shape_option} '{list(shape)}'",
        )

    # --- logging --------------------------------------------------------------------------------

    def log_training(self, loss: Tensor, logits: Tensor, labels: Tensor, **measures: Tensor | float) -> None:
        """Log ``train/loss`` and ``train/acc`` of ``logits`` on this step, and each measure as ``train/<name>``.

        Call it on the steps whose logs are written (:func:`modules.step_logging.step_logs_due`).
        """
        self.train_acc(logits.detach().argmax(-1), labels)
        self.log_dict({"train/loss": loss.detach(), "train/acc": self.train_acc}, on_step=True, on_epoch=False, prog_bar=True)
        if measures:
            self.log_dict({f"train/{name}": value for name, value in measures.items()}, on_step=True, on_epoch=False)

    def log_evaluation(self, stage: str, logits: Tensor, labels: Tensor, suffix: str = "", **measures: Tensor | Metric) -> None:
        """Update and log ``{stage}/acc{suffix}`` of ``logits`` and each measure as ``{stage}/<name>{suffix}``.

        The accuracy metric is the attribute ``{stage}_acc{suffix}``; a ``suffix`` names a second answer of the
        same model (another decision rule), logged beside the first and kept off the progress bar.
        """
        accuracy = getattr(self, f"{stage}_acc{suffix}")
        accuracy(logits.argmax(-1), labels)
        logs = {f"{stage}/acc{suffix}": accuracy, **{f"{stage}/{name}{suffix}": value for name, value in measures.items()}}
        self.log_dict(logs, prog_bar=stage == "val" and not suffix, sync_dist=True)

    # --- the Lightning hooks --------------------------------------------------------------------

    def evaluate(self, batch, stage: str) -> None:
        """Measure one ``val`` or ``test`` batch: accuracy of the logits."""
        inputs, labels = batch[0], batch[1]
        self.log_evaluation(stage, self(inputs), labels)

    def validation_step(self, batch, batch_idx: int) -> None:
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self.evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(inputs).argmax(-1)

    def configure_optimizers(self):
        """Adam; with ``lr_schedule: cosine`` its rate falls to 0 along a half cosine over the whole fit, per step."""
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.get("lr_schedule", "constant") == "constant":
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches
        require(math.isfinite(total_steps),
                "--model.init_args.lr_schedule cosine needs a known training length: set --trainer.max_epochs or --trainer.max_steps")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
