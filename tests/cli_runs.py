"""Runs through ``cli.py`` that the module tests share: a fit on two CPU processes (DDP), and a stopped run resumed.

Each test passes the arguments that make its model small and quick; what is checked is the same for all.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback

from cli import GapbridgeCLI, main

ROOT = Path(__file__).resolve().parents[1]


def fit_on_two_cpu_processes(args: list[str], tmp_path: Path) -> dict:
    """``cli.py fit *args`` for one epoch of at most 3 steps under DDP on two CPU processes (gloo).

    ``args`` must write the run below ``tmp_path / "runs"``; returns the ``last.ckpt`` written there. The fit
    runs in a subprocess, as DDP launches one process per device from the command line.
    """
    command = [sys.executable, str(ROOT / "cli.py"), "fit", *args, "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
               "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # two processes on few cores
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stderr + result.stdout
    assert "GLOBAL_RANK: 1" in output or "world_size=2" in output
    return torch.load(next((tmp_path / "runs").rglob("last.ckpt")), weights_only=False)


class StopAfterFirstEpoch(Callback):
    """Stops a fit after its first epoch, as an interrupted run stops: its configuration (``max_epochs``, and
    with it a learning-rate schedule over the whole fit) is the one the resumed run finishes."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


def assert_resumed_run_matches_straight_run(args: list[str]) -> tuple[GapbridgeCLI, GapbridgeCLI]:
    """Fit two epochs straight; stop the same fit after one, resume from its ``last.ckpt``: same steps, same weights.

    ``args`` must write the run below a TensorBoard logger (the runs are told apart by its ``version``).
    Returns the straight and the resumed run.
    """
    straight = main(["fit", *args, "--trainer.max_epochs=2", "--trainer.logger.init_args.version=straight"])
    first = main(["fit", *args, "--trainer.max_epochs=2", "--trainer.logger.init_args.version=part",
                  f"--trainer.callbacks+={StopAfterFirstEpoch.__module__}.{StopAfterFirstEpoch.__name__}"])
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    resumed = main(["fit", *args, "--trainer.max_epochs=2", "--trainer.logger.init_args.version=resumed", f"--ckpt_path={last}"])
    assert resumed.trainer.global_step == straight.trainer.global_step == 2 * first.trainer.global_step > 0
    straight_state, resumed_state = straight.model.state_dict(), resumed.model.state_dict()
    assert straight_state.keys() == resumed_state.keys()
    for name, value in straight_state.items():
        assert torch.allclose(value, resumed_state[name], atol=1e-6), name
    return straight, resumed
