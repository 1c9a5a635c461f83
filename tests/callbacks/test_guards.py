"""A NaN loss stops the run with one message and leaves the checkpoints already written intact."""

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from callbacks.checkpoint import BestAndLastCheckpoint
from callbacks.guards import FiniteLossGuard
from modules.errors import NonFiniteLossError


class DivergesAtStep(LightningModule):
    monitor = "train/loss"
    monitor_mode = "min"

    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.bad_step = bad_step
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss * float("nan") if self.global_step == self.bad_step else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_nan_loss_stops_with_a_clear_message_and_keeps_checkpoints(tmp_path):
    checkpoint = BestAndLastCheckpoint(dirpath=tmp_path, every_n_train_steps=1)
    trainer = Trainer(max_steps=10, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[FiniteLossGuard(), checkpoint], default_root_dir=tmp_path)
    data = DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=4)
    with pytest.raises(NonFiniteLossError, match="loss became nan at global step 3"):
        trainer.fit(DivergesAtStep(bad_step=3), data)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 3  # the last good step, written before the NaN
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())  # no NaN step applied
    assert checkpoint.monitor == "train/loss"  # adopted from the module
