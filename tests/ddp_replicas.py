"""Whether a DDP run keeps its replicas identical: every rank saves what it holds, the test compares them.

Runs through :func:`tests.cli_runs.fit_on_two_cpu_processes` with :class:`SaveRankState` added to the
run's callbacks (the subprocess imports it from here: ``cli.py``'s directory, the repository, is on
its path).
"""

from pathlib import Path

import torch
from lightning.pytorch import Callback

from tests.cli_runs import fit_on_two_cpu_processes


class SaveRankState(Callback):
    """Saves ``rank<N>.pt`` in ``directory``: trainable parameters at the start, the state_dict and the envs' last observations at the end."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {name: p.detach().clone() for name, p in pl_module.named_parameters() if p.requires_grad}

    def on_train_end(self, trainer, pl_module) -> None:
        collector = getattr(trainer.datamodule, "collector", None)
        state = {"start": self.start, "weights": pl_module.state_dict(), "obs": None if collector is None else torch.as_tensor(collector.obs)}
        torch.save(state, Path(self.directory) / f"rank{trainer.global_rank}.pt")


def fit_replicas(args: list[str], tmp_path: Path) -> list[dict]:
    """``fit_on_two_cpu_processes(args)``, asserting what data-parallel training must keep; returns each rank's saved state.

    Asserted: the trainable parameters moved from where training started; both ranks end with
    identical weights (only synchronised gradients keep them so); ranks with an environment
    datamodule played different episodes (each rank seeds its own envs).
    """
    fit_on_two_cpu_processes([*args, f"--trainer.callbacks+={__name__}.SaveRankState", f"--trainer.callbacks.directory={tmp_path}"], tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2))
    assert any(not torch.equal(start, rank0["weights"][name]) for name, start in rank0["start"].items())
    assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"])
    assert rank0["obs"] is None or not torch.equal(rank0["obs"], rank1["obs"])
    return [rank0, rank1]
