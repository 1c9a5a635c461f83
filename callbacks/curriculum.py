"""A curriculum on the number of nonzero entries of parity vectors, gated by the model's own accuracy."""

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from datamodules.synthetic import ParityDataModule, sample_parity
from modules.errors import require


class NonzeroCurriculum(Callback):
    """Train parity on few nonzero entries first, and widen the range as the model masters it.

    The label of a parity vector with ``k`` nonzero entries depends on all ``k`` of them, so the
    gradient a vector gives is weaker the larger ``k`` is: drawn uniformly from ``1..64``, most
    training vectors teach almost nothing before the small counts are learnt (the 64-bit task stays at
    chance where 16 and 32 bits are learnt; README, issue 6). This callback sets the training draws'
    ``max_nonzero`` to ``start`` and, every ``every_n_steps`` optimizer steps, measures the model's
    answer (its ``forward``: for a halting network, the depth its halting rule picks) on ``eval_size``
    fresh vectors with ``min_nonzero..max_nonzero`` entries; when the accuracy reaches ``threshold`` the
    range grows by ``increment``, up to the datamodule's own ``max_nonzero``. Lower counts stay in
    the draws, so nothing learnt is dropped.

    ``eval_window`` gates on the newest counts instead: the evaluation vectors have
    ``max_nonzero - eval_window + 1 .. max_nonzero`` entries, so the range grows only once the model
    answers the counts at its top. Gated on the whole range (``None``), the average lets the range run
    ahead of what the model answers: at step 190,747 the 64-bit run of ``configs/depth_parity_reinforce.yaml``
    trained on 1..48 while it answered 100% of the vectors up to 26 nonzeros and chance from about 50.
    Running ahead helps: with ``eval_window: 4`` at 0.9 the same network learnt more slowly per step
    (README, session 15), so the parity config gates on the whole range.

    The evaluation vectors are drawn from a generator seeded by the global step, so every DDP process
    (same weights, same vectors) takes the same decision. The current range is saved in checkpoints
    and restored on resume. Training draws happen in the main process (``num_workers: 0``, the parity
    default): with worker processes the change would not reach them.
    """

    def __init__(self, start: int = 8, increment: int = 4, threshold: float = 0.95, every_n_steps: int = 500,
                 eval_size: int = 1000, eval_window: int | None = None) -> None:
        require(start >= 1 and increment >= 1, f"NonzeroCurriculum start and increment must be >= 1, got {start}, {increment}")
        require(0.0 < threshold <= 1.0, f"NonzeroCurriculum threshold must be in (0, 1], got {threshold}")
        require(every_n_steps >= 1 and eval_size >= 1, f"NonzeroCurriculum every_n_steps and eval_size must be >= 1, got {every_n_steps}, {eval_size}")
        self.start, self.increment, self.threshold = start, increment, threshold
        require(eval_window is None or eval_window >= 1, f"NonzeroCurriculum eval_window must be >= 1 or null, got {eval_window}")
        self.every_n_steps, self.eval_size, self.eval_window = every_n_steps, eval_size, eval_window
        self.max_nonzero: int | None = None  # the current top of the training range (None: not started)
        self.target: int | None = None  # the datamodule's own max_nonzero, where the curriculum ends

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        data = trainer.datamodule
        require(isinstance(data, ParityDataModule),
                f"NonzeroCurriculum needs a ParityDataModule, got {type(data).__name__}: remove the callback or use parity data")
        require(data.hparams.num_workers == 0, "NonzeroCurriculum needs --data.num_workers 0: worker processes would not see the range change")
        self.target = data.hparams.max_nonzero if data.hparams.max_nonzero is not None else data.num_bits
        if self.max_nonzero is None:  # a fresh fit; on resume the checkpoint's value is kept
            self.max_nonzero = max(data.min_nonzero, min(self.start, self.target))
        data.max_nonzero = self.max_nonzero

    @torch.no_grad()
    def accuracy(self, trainer: Trainer, pl_module: LightningModule) -> float:
        """The model's accuracy on ``eval_size`` fresh vectors of the current range (its top ``eval_window`` counts)."""
        data = trainer.datamodule
        generator = torch.Generator().manual_seed(data.seed * 1_000_003 + trainer.global_step)
        lowest = data.min_nonzero if self.eval_window is None else max(data.min_nonzero, self.max_nonzero - self.eval_window + 1)
        inputs, labels, _ = sample_parity(self.eval_size, data.num_bits, lowest, self.max_nonzero, generator)
        was_training = pl_module.training
        pl_module.eval()
        predicted = pl_module(inputs.to(pl_module.device)).argmax(-1).cpu()
        pl_module.train(was_training)
        return (predicted == labels).float().mean().item()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.max_nonzero >= self.target or trainer.global_step % self.every_n_steps:
            return
        accuracy = self.accuracy(trainer, pl_module)
        if accuracy >= self.threshold:
            self.max_nonzero = min(self.target, self.max_nonzero + self.increment)
            trainer.datamodule.max_nonzero = self.max_nonzero
        # one point per check, straight to the loggers: a value self.log'ged from a callback stays in the epoch's
        # results and would be written again at every logging step until the next check
        metrics = {"train/curriculum_max_nonzero": float(self.max_nonzero), "train/curriculum_acc": accuracy}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def state_dict(self) -> dict:
        return {"max_nonzero": self.max_nonzero}

    def load_state_dict(self, state_dict: dict) -> None:
        self.max_nonzero = state_dict["max_nonzero"]
