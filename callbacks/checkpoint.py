"""Checkpointing that follows the metric each LightningModule declares it is judged by."""

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` keeping ``last.ckpt`` plus the best checkpoint on the module's metric.

    Every gapbridge module names the metric it is judged by in the class attributes ``monitor``
    and ``monitor_mode`` (for example ``"val/acc"``, ``"max"``). Leaving ``monitor`` unset here
    adopts the module's choice, so one trainer default serves every experiment; setting it in the
    config overrides it.

    ``last.ckpt`` is rewritten at every epoch end. (Lightning 2.6's ``ModelCheckpoint`` rewrites it
    only when a top-k checkpoint was saved at the same step, so after a few epochs without a new best
    ``last.ckpt`` silently lags behind and a resume would go back in time.)
    """

    def __init__(self, monitor: str | None = None, mode: str = "min", save_last: bool = True, save_top_k: int = 1, **kwargs) -> None:
        super().__init__(monitor=monitor, mode=mode, save_last=save_last, save_top_k=save_top_k, **kwargs)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.monitor is None and getattr(pl_module, "monitor", None):
            self.monitor = pl_module.monitor
            self.mode = getattr(pl_module, "monitor_mode", "min")
            self.kth_value = torch.tensor(torch.inf if self.mode == "min" else -torch.inf)
            # the checkpoint file names carry the metric, e.g. "epoch=3-step=120-val_acc=0.8731.ckpt"
            if self.filename is None:
                self.filename = "epoch={epoch}-step={step}-" + self.monitor.replace("/", "_") + "={" + self.monitor + ":.4f}"
                self.auto_insert_metric_name = False
        super().setup(trainer, pl_module, stage)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning 2.6 writes last.ckpt here even under fast_dev_run, which promises to write nothing
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def _refresh_last(self, trainer: Trainer) -> None:
        # skipped when the parent already saved at this step (then last.ckpt is current)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
