"""Pictures of a weight-shared depth network: where the states travel, and where the network stops."""

import matplotlib.pyplot as plt
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from callbacks.figures import log_figure, tensorboard
from modules.halting import state_features


def project_to_plane(features: Tensor) -> Tensor:
    """[..., F] -> [..., 2]: the features themselves when ``F == 2``, else one PCA projection fitted to all of them.

    One projection for every step and every point of a figure, so arrows compare like with like.
    """
    if features.shape[-1] == 2:
        return features
    flat = features.reshape(-1, features.shape[-1])
    centred = flat - flat.mean(0)
    _, _, principal = torch.linalg.svd(centred, full_matrices=False)  # rows: principal directions
    return (centred @ principal[:2].T).reshape(*features.shape[:-1], 2)


class DepthPictures(Callback):
    """After each validation epoch (and after testing), send to TensorBoard:

    - ``pictures/trajectories``: ``num_points`` held-out inputs as paths ``s_0 -> s_1 -> ... -> s_T``
      through state space (the state if it has 2 units, else a 2-D PCA projection of all steps),
      coloured by class, arrows along the steps, a cross where the sample halts (thresholded halting);
    - for 2-D inputs: ``pictures/halting_map``, the halting step over a ``grid_size``-square grid of
      the input plane with the data on top;
    - for parity data (a datamodule with ``val_num_nonzero`` / ``test_num_nonzero``):
      ``pictures/steps_vs_nonzeros``, halting steps against the number of nonzero entries, sampled
      and thresholded halting (for the test split after ``trainer.test``: ``pictures/test_steps_vs_nonzeros``).

    Validation pictures are drawn every ``every_n_epochs`` epochs (the halting map runs the network on
    ``grid_size**2`` points). Works with :class:`modules.shared_depth.SharedDepthNetwork` (``trace``, ``infer``, ``max_steps``).
    """

    def __init__(self, num_points: int = 150, grid_size: int = 120, parity_points: int = 2000, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_points = num_points
        self.grid_size = grid_size
        self.parity_points = parity_points

    @staticmethod
    def _split(loader, count: int) -> tuple[Tensor, Tensor]:
        inputs, labels = [], []
        for batch in loader:
            inputs.append(batch[0])
            labels.append(batch[1])
            if sum(len(b) for b in inputs) >= count:
                break
        return torch.cat(inputs)[:count], torch.cat(labels)[:count]

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or tensorboard(trainer) is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._draw(trainer, pl_module, trainer.datamodule.val_dataloader(), "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if tensorboard(trainer) is None:
            return
        self._draw(trainer, pl_module, trainer.datamodule.test_dataloader(), "test")

    def _draw(self, trainer: Trainer, pl_module: LightningModule, loader, split: str) -> None:
        was_training = pl_module.training
        pl_module.eval()
        prefix = "pictures/" if split == "val" else "pictures/test_"
        with torch.no_grad():
            inputs, labels = self._split(loader, max(self.num_points, self.parity_points))
            log_figure(trainer, f"{prefix}trajectories", self.trajectories(pl_module, inputs[: self.num_points], labels[: self.num_points]))
            if inputs.dim() == 2 and inputs.shape[1] == 2:
                log_figure(trainer, f"{prefix}halting_map", self.halting_map(pl_module, inputs, labels))
            counts = getattr(trainer.datamodule, f"{split}_num_nonzero", None)
            if counts is not None:
                log_figure(trainer, f"{prefix}steps_vs_nonzeros", self.steps_vs_nonzeros(pl_module, inputs, counts[: len(inputs)]))
        pl_module.train(was_training)

    def trajectories(self, pl_module: LightningModule, inputs: Tensor, labels: Tensor) -> plt.Figure:
        trace = pl_module.trace(inputs.to(pl_module.device))
        halt_steps = pl_module.infer(inputs.to(pl_module.device), "threshold").steps.cpu()
        # feature maps [N + 1, B, C, H, W] are pooled step by step, like the readout and the halting policy see them
        points = project_to_plane(torch.stack([state_features(s.float()) for s in trace.states]).cpu())  # [N + 1, B, 2]
        figure, ax = plt.subplots(figsize=(6, 5.5))
        colours = plt.get_cmap("tab10")
        for i in range(points.shape[1]):
            path = points[: halt_steps[i] + 1, i]
            colour = colours(int(labels[i]) % 10)
            ax.plot(path[:, 0], path[:, 1], color=colour, alpha=0.35, linewidth=0.8)
            steps = path[1:] - path[:-1]
            ax.quiver(path[:-1, 0], path[:-1, 1], steps[:, 0], steps[:, 1], color=colour, alpha=0.5,
                      angles="xy", scale_units="xy", scale=1, width=0.003)
            ax.scatter(path[0, 0], path[0, 1], color=colour, s=6)
            ax.scatter(path[-1, 0], path[-1, 1], color=colour, marker="x", s=18)
        ax.set_title(f"states s_0 -> s_T (x: halt), mean T = {halt_steps.float().mean():.2f}")
        raw = trace.states.dim() == 3 and trace.states.shape[-1] == 2  # a 2-unit vector state is drawn as it is
        ax.set_xlabel("state 1" if raw else "PC 1")
        ax.set_ylabel("state 2" if raw else "PC 2")
        figure.tight_layout()
        return figure

    def halting_map(self, pl_module: LightningModule, inputs: Tensor, labels: Tensor) -> plt.Figure:
        low, high = inputs.min(0).values - 0.5, inputs.max(0).values + 0.5
        xs, ys = (torch.linspace(low[d], high[d], self.grid_size) for d in (0, 1))
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1).to(pl_module.device)
        result = pl_module.infer(grid, "threshold")
        steps = result.steps.reshape(self.grid_size, self.grid_size).cpu()
        predicted = result.logits.argmax(-1).reshape(self.grid_size, self.grid_size).cpu()
        figure, ax = plt.subplots(figsize=(6, 5))
        image = ax.imshow(steps, origin="lower", extent=(low[0], high[0], low[1], high[1]), cmap="viridis",
                          vmin=1, vmax=pl_module.max_steps, aspect="auto")
        figure.colorbar(image, ax=ax, label="halting step")
        ax.contour(grid_x, grid_y, predicted, levels=[0.5], colors="white", linewidths=1)
        ax.scatter(inputs[:, 0], inputs[:, 1], c=labels, cmap="coolwarm", s=4, edgecolors="none")
        ax.set_title("halting step over the input plane (white: decision boundary)")
        figure.tight_layout()
        return figure

    def steps_vs_nonzeros(self, pl_module: LightningModule, inputs: Tensor, counts: Tensor) -> plt.Figure:
        figure, ax = plt.subplots(figsize=(6, 4))
        for mode, marker, label in (("threshold", "o", "thresholded halting"), ("sample", ".", "sampled halting")):
            steps = torch.cat([pl_module.infer(part.to(pl_module.device), mode).steps.cpu() for part in inputs.split(500)]).float()
            values = counts.unique()
            means = torch.stack([steps[counts == v].mean() for v in values])
            ax.plot(values, means, marker=marker, label=label)
        ax.set_xlabel("number of nonzero entries")
        ax.set_ylabel("mean halting step")
        ax.legend()
        figure.tight_layout()
        return figure
