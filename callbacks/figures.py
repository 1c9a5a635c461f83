"""Drawing helpers shared by the picture callbacks: figures go to TensorBoard on rank zero only."""

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch import Trainer  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402


def tensorboard(trainer: Trainer):
    """The TensorBoard ``SummaryWriter`` of this run, or None (other logger, no logger, non-zero rank)."""
    if not trainer.is_global_zero:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def log_figure(trainer: Trainer, tag: str, figure: plt.Figure) -> None:
    """Send a matplotlib figure to TensorBoard at the current global step and free it."""
    writer = tensorboard(trainer)
    if writer is not None:
        writer.add_figure(tag, figure, global_step=trainer.global_step)
    plt.close(figure)
