"""When a training step's scalars will actually be written, so the other steps can skip computing them."""

from lightning.pytorch import LightningModule


def step_logs_due(module: LightningModule) -> bool:
    """True on the steps whose ``self.log(..., on_step=True)`` values the trainer writes.

    Lightning writes step logs only when ``(global_step + 1)`` is a multiple of ``log_every_n_steps``;
    on small networks each ``self.log`` (and the metric it computes) costs a sizeable share of a step,
    so modules compute and log their training scalars on these steps alone. Outside a trainer every
    step counts as due.
    """
    if module._trainer is None:
        return True
    every = module.trainer.log_every_n_steps
    return every > 0 and (module.global_step + 1) % every == 0
