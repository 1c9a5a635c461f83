"""Episode returns against env steps, drawn for TensorBoard."""

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from callbacks.figures import curves_figure, log_figure, tensorboard


class ReturnCurve(Callback):
    """After each validation, logs training-episode returns and greedy evaluation returns against env steps.

    Reads the finished training episodes the datamodule keeps (``datamodule.episodes``: env step,
    return, length) and the module's ``val/return``. Scalars go to TensorBoard with the env step
    as x-axis (``rollout/episode_return``); the figure ``return_curve`` shows both curves.

    Args:
        smoothing: window (episodes) of the moving average drawn over training returns.
    """

    def __init__(self, smoothing: int = 20) -> None:
        self.smoothing = smoothing
        self.evaluations: list[tuple[int, float]] = []
        self._episodes_logged = 0

    def state_dict(self) -> dict:
        return {"evaluations": self.evaluations, "episodes_logged": self._episodes_logged}

    def load_state_dict(self, state_dict: dict) -> None:
        self.evaluations = [tuple(e) for e in state_dict["evaluations"]]
        self._episodes_logged = state_dict["episodes_logged"]

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = trainer.datamodule
        if trainer.sanity_checking or datamodule is None or "val/return" not in trainer.callback_metrics:
            return
        env_steps = getattr(datamodule, "env_steps", trainer.global_step)
        self.evaluations.append((env_steps, float(trainer.callback_metrics["val/return"])))
        writer = tensorboard(trainer)
        if writer is None:
            return
        episodes = list(getattr(datamodule, "episodes", []))
        for step, episode_return, length in episodes[self._episodes_logged :]:
            writer.add_scalar("rollout/episode_return", episode_return, step)
            writer.add_scalar("rollout/episode_length", length, step)
        self._episodes_logged = len(episodes)
        writer.add_scalar("val/return_by_env_step", self.evaluations[-1][1], env_steps)
        log_figure(trainer, "return_curve", self.figure(episodes))

    def figure(self, episodes: list[tuple[int, float, int]]):
        def draw(ax) -> None:
            if episodes:
                steps = [e[0] for e in episodes]
                returns = [e[1] for e in episodes]
                ax.plot(steps, returns, color="tab:blue", alpha=0.25, linewidth=0.8, label="training episodes")
                window = max(1, min(self.smoothing, len(returns)))
                smoothed = [sum(returns[max(0, i - window + 1) : i + 1]) / len(returns[max(0, i - window + 1) : i + 1]) for i in range(len(returns))]
                ax.plot(steps, smoothed, color="tab:blue", label=f"training (mean of {window})")
            if self.evaluations:
                ax.plot(*zip(*self.evaluations), "o-", color="tab:orange", label="greedy evaluation")

        return curves_figure(draw, "env steps", "episode return")
