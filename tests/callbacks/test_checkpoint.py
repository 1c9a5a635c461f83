"""last.ckpt always holds the latest epoch, best checkpoints follow the module's metric."""

import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from callbacks.checkpoint import BestAndLastCheckpoint


class WorseEveryEpoch(LightningModule):
    monitor = "val/score"
    monitor_mode = "max"

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", -float(self.current_epoch))  # best at epoch 0, never improves

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_last_checkpoint_follows_every_epoch_even_without_a_new_best(tmp_path):
    checkpoint = BestAndLastCheckpoint(dirpath=tmp_path)
    trainer = Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[checkpoint])
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer.fit(WorseEveryEpoch(), data, data)
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 2
    assert checkpoint.monitor == "val/score" and checkpoint.mode == "max"
    assert "epoch=0" in checkpoint.best_model_path and "val_score=" in checkpoint.best_model_path
