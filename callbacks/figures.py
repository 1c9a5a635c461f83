"""Drawing helpers shared by the picture callbacks: figures go to TensorBoard on rank zero only."""

from typing import Callable

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


def curves_figure(draw: Callable[[plt.Axes], None], xlabel: str, ylabel: str, legend_loc: str = "best") -> plt.Figure:
    """A 6x4-inch chart of labelled curves against one axis: ``draw(ax)`` plots them, this adds labels, grid and legend."""
    figure, ax = plt.subplots(figsize=(6, 4), dpi=100)
    draw(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend_loc, fontsize=8)
    figure.tight_layout()
    return figure
