"""Greedy episodes recorded by ``predict``, written as animated GIFs."""

import os

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image


class EpisodeVideo(Callback):
    """Writes each episode that ``predict`` plays (a batch with ``frames`` [T, H, W, 3]) as a GIF.

    Files go to ``output_dir`` (default: ``<log dir>/episodes``) as
    ``episode_<index>_return_<return>.gif``; the path of each is printed.

    Args:
        output_dir: where the GIFs go; ``None`` puts them beside the run's logs.
        fps: frames per second of the animation (GIF timing has 10 ms steps: 25 fps is exact).
        scale: resize factor of every frame (e.g. 0.5 halves a 600x400 CartPole frame).
    """

    def __init__(self, output_dir: str | None = None, fps: int = 25, scale: float = 0.5) -> None:
        self.output_dir, self.fps, self.scale = output_dir, fps, scale
        self.written: list[str] = []

    @rank_zero_only
    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, dict) or "frames" not in outputs:
            return
        directory = self.output_dir or os.path.join(trainer.log_dir or trainer.default_root_dir, "episodes")
        os.makedirs(directory, exist_ok=True)
        episode_return = float(outputs["episode_return"][0])
        path = os.path.join(directory, f"episode_{batch_idx}_return_{episode_return:g}.gif")
        frames = [Image.fromarray(np.asarray(frame)) for frame in outputs["frames"]]
        if self.scale != 1.0:
            size = (max(1, round(frames[0].width * self.scale)), max(1, round(frames[0].height * self.scale)))
            frames = [frame.resize(size) for frame in frames]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / self.fps), loop=0)
        self.written.append(path)
        print(f"episode {batch_idx}: return {episode_return:g}, {int(outputs['episode_length'][0])} steps -> {path}")
