"""Stop a run with one clear message when training goes numerically wrong."""

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from modules.errors import NonFiniteLossError


class FiniteLossGuard(Callback):
    """Raise :class:`NonFiniteLossError` as soon as a training step returns a NaN or infinite loss.

    The check runs before the backward pass, so neither the weights in memory nor the checkpoints
    already on disk (the last good ones) are touched by the diverged step; the message names the step.
    """

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        value = loss.detach().float().item()
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training loss became {value} at global step {trainer.global_step} (epoch {trainer.current_epoch}) "
                f"of {type(pl_module).__name__}; lower the learning rate or enable gradient clipping "
                "(--trainer.gradient_clip_val). Checkpoints saved before this step are intact."
            )
