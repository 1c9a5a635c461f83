"""gapbridge command line: ``python cli.py {fit,validate,test,predict} --config configs/<experiment>.yaml``.

LightningCLI in subclass mode: the YAML names the LightningModule (``model.class_path``) and the
LightningDataModule (``data.class_path``), so new models plug in without touching this file.
Presets in ``configs/presets/`` (cpu, gpu, ddp, smoke) stack as a second ``--config``.
"""

import sys

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI

from callbacks.checkpoint import BestAndLastCheckpoint
from callbacks.guards import FiniteLossGuard
from callbacks.rng import RandomStateCheckpoint
from modules.errors import GapbridgeError


class GapbridgeCLI(LightningCLI):
    """LightningCLI with the project's default callbacks and a model/data compatibility check."""

    def add_arguments_to_parser(self, parser) -> None:
        # always present and configurable, e.g. ``--checkpoint.save_top_k 3``
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(RichProgressBar, "progress_bar")
        parser.add_lightning_class_args(FiniteLossGuard, "finite_loss_guard")
        parser.add_lightning_class_args(RandomStateCheckpoint, "random_state")

    def instantiate_trainer(self, **kwargs):
        """The trainer with the default callbacks, less the progress bar where ``enable_progress_bar`` is false
        (Lightning refuses a progress bar callback beside that flag)."""
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        callbacks = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        if not config.get("enable_progress_bar", True):
            callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
        return self._instantiate_trainer(config, callbacks)

    def after_instantiate_classes(self) -> None:
        # before any run directory exists: a mismatch must not leave a half-made run behind
        check = getattr(self.model, "check_datamodule", None)
        if callable(check) and self.datamodule is not None:
            check(self.datamodule)

    def after_fit(self) -> None:
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and log_dir:
            print(f"\nTensorBoard logs and checkpoints: {log_dir}\nOpen them with: tensorboard --logdir {log_dir}")


def main(args=None) -> GapbridgeCLI | None:
    """Run the CLI; user-fixable problems print one line and exit with status 2.

    After a run that ends normally, a distributed process group (DDP) is destroyed: left to the interpreter's
    exit, gloo's worker threads can abort the process (SIGABRT, "terminate called without an active exception")
    after a fit that succeeded. A run that failed leaves it alone, as other ranks may still wait in
    a collective that destroying it would hang.
    """
    try:
        cli = GapbridgeCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            trainer_defaults={
                "default_root_dir": "runs",
                "logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "runs", "name": "default"},
                },
            },
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except Exception as error:
        cause = _user_error(error)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return cli


def _user_error(error: BaseException | None) -> GapbridgeError | None:
    """The GapbridgeError behind ``error``: jsonargparse wraps errors raised while instantiating classes."""
    while error is not None and not isinstance(error, GapbridgeError):
        error = error.__cause__ or error.__context__
    return error


if __name__ == "__main__":
    main()
