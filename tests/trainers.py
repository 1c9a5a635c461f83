"""The Trainer that tests build directly (without cli.py): CPU, no logger, checkpoints, progress bar or summary."""

from lightning.pytorch import Trainer


def quiet_trainer(**kwargs) -> Trainer:
    """``Trainer(accelerator="cpu", ...)`` with nothing written or printed; ``kwargs`` add to or override it."""
    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False)
    return Trainer(**{**options, **kwargs})
