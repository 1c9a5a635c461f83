"""Where data comes from: LightningDataModules that batch in-memory tensors (see ``batches.py``)."""

from datamodules.synthetic import ParityDataModule, ToyDataModule
from datamodules.vision import VisionDataModule

__all__ = ["ParityDataModule", "ToyDataModule", "VisionDataModule"]
