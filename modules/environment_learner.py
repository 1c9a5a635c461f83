"""What every learner fed by an environment datamodule shares: greedy-episode evaluation and env-step throughput."""

import time

from lightning.pytorch import LightningModule
from torch import Tensor


class EnvironmentLearner(LightningModule):
    """A LightningModule whose batches come from a :class:`datamodules.environments.EnvironmentDataModule`.

    Validation and test batches are greedy episodes the datamodule has already played; they are
    logged as ``<stage>/return`` (the checkpoint callback's metric), ``<stage>/return_std`` and
    ``<stage>/episode_length``, averaged over DDP ranks. :meth:`env_steps_per_second` measures
    training throughput (acting and learning together) between consecutive updates of an epoch.
    Subclasses implement the learning itself.
    """

    monitor = "val/return"
    monitor_mode = "max"

    def __init__(self) -> None:
        super().__init__()
        self._previous_update: tuple[float, int] | None = None  # (wall-clock, env steps) of the last update

    # ---- training throughput ------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._previous_update = None  # the time spent in validation is not training throughput

    def env_steps_per_second(self, env_steps: int) -> float:
        """Env steps per wall-clock second since the previous update: acting and learning together (0 at an epoch's first)."""
        now = time.perf_counter()
        previous = self._previous_update
        self._previous_update = (now, env_steps)
        if previous is None or now <= previous[0]:
            return 0.0
        return (env_steps - previous[1]) / (now - previous[0])

    # ---- evaluation: batches are greedy episodes run by the datamodule ----------------------------
    def log_episodes(self, episodes: dict[str, Tensor], stage: str) -> None:
        returns = episodes["episode_return"].float()
        self.log_dict(
            {
                f"{stage}/return": returns.mean(),
                f"{stage}/return_std": returns.std(unbiased=False),
                f"{stage}/episode_length": episodes["episode_length"].float().mean(),
            },
            batch_size=returns.numel(),
            sync_dist=True,
        )

    def validation_step(self, episodes: dict[str, Tensor], batch_idx: int) -> None:
        self.log_episodes(episodes, "val")

    def test_step(self, episodes: dict[str, Tensor], batch_idx: int) -> None:
        self.log_episodes(episodes, "test")
