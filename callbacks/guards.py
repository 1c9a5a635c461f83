"""Stop a run with one clear message when training goes numerically wrong."""

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from modules.errors import NonFiniteLossError


class FiniteLossGuard(Callback):
    """Raise :class:`NonFiniteLossError` as soon as a training step returns a NaN or infinite loss.

    The step is named in the message. Raising before the optimiser's next checkpoint means the
    checkpoints already on disk (the last good ones) are never overwritten by a diverged model.
    """

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = loss.detach().float().item() if isinstance(loss, torch.Tensor) else float(loss)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training loss became {value} at global step {trainer.global_step} (epoch {trainer.current_epoch}, "
                f"batch {batch_idx}) of {type(pl_module).__name__}; lower the learning rate or enable gradient "
                "clipping (trainer.gradient_clip_val). Checkpoints saved before this step are intact."
            )
