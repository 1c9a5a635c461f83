"""Lightning's cost per training epoch against a bare PyTorch loop: the pieces every benchmark shares.

A model's ``training_step`` is timed twice on the same network, data loader and optimiser: once
through ``lightning.Trainer`` (its epoch measured by :class:`EpochClock`, or the whole ``fit``), once
as the plain loop of :func:`bare_epoch`. :func:`report_overhead` prints the two side by side and the
ratio against the bar the issues set (at most 1.15x).
"""

import statistics
import time
from typing import Callable, Iterable

import torch
from lightning.pytorch import Callback

OVERHEAD_BAR = 1.15


class EpochClock(Callback):
    """Seconds of each Lightning training epoch (start of the first batch fetch to the end of the epoch)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def bare_epoch(loss: Callable[[object], torch.Tensor], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               loader: Iterable) -> float:
    """Seconds of one epoch of ``loss(batch)`` minimised in a plain loop: the training step without Lightning."""
    start = time.perf_counter()
    model.train()
    for batch in loader:
        value = loss(batch)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    return time.perf_counter() - start


def seconds(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def report_overhead(title: str, lightning_times: list[float], bare_times: list[float], bar: float = OVERHEAD_BAR) -> float:
    """Print both loops' median epoch time and their ratio against ``bar``; return the ratio."""
    ratio = statistics.median(lightning_times) / statistics.median(bare_times)
    print(title)
    print(f"{'loop':<12}{'median s':>10}   all (s)")
    print(f"{'lightning':<12}{statistics.median(lightning_times):>10.2f}   {seconds(lightning_times)}")
    print(f"{'bare torch':<12}{statistics.median(bare_times):>10.2f}   {seconds(bare_times)}")
    print(f"lightning / bare = {ratio:.3f}x  (bar: <= {bar}x) -> {'PASS' if ratio <= bar else 'FAIL'}\n")
    return ratio
