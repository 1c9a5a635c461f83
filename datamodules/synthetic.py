"""Synthetic tasks generated with torch, nothing to download.

``ParityDataModule`` is the parity task of Graves 2016, "Adaptive Computation Time for Recurrent
Neural Networks", Sec. 3.2; ``ToyDataModule`` holds 2-D two-class sets (moons, circles, spirals) for
quick sanity checks and decision-boundary figures.
"""

import math
from typing import Literal

import torch
from torch import Tensor

from datamodules.batches import InMemoryDataModule, SampledBatchDataset, TensorBatchDataset
from modules.errors import require


def sample_parity(
    batch_size: int, num_bits: int, min_nonzero: int, max_nonzero: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Parity vectors ``x`` [B, num_bits] in {-1, 0, +1}, labels ``y`` [B] and nonzero counts [B].

    Graves 2016, Sec. 3.2: a random number of entries (uniform in [min_nonzero, max_nonzero]) at random
    positions are set to +1 or -1, the rest are 0; the label is 1 when the number of +1 entries is odd.
    """
    num_nonzero = torch.randint(min_nonzero, max_nonzero + 1, (batch_size,), generator=generator)
    position = torch.rand(batch_size, num_bits, generator=generator).argsort(dim=1)  # a random order per row
    chosen = torch.arange(num_bits).expand(batch_size, -1) < num_nonzero[:, None]
    mask = torch.zeros(batch_size, num_bits, dtype=torch.bool).scatter_(1, position, chosen)
    sign = torch.randint(0, 2, (batch_size, num_bits), generator=generator) * 2 - 1
    x = (mask * sign).float()
    y = ((x == 1).sum(dim=1) % 2).long()
    return x, y, num_nonzero


class ParityDataModule(InMemoryDataModule):
    """Parity of ``num_bits``-long vectors; batches ``(x [B, num_bits] float32, y [B] int64)``.

    Training data is drawn fresh on every batch (infinite data; an epoch is ``train_size`` samples).
    Validation follows the training distribution; the test set draws its nonzero counts from
    ``[test_min_nonzero, test_max_nonzero]`` so the extrapolation setting (e.g. 96 bits, train 1..48,
    test 49..96) is one config. Both are fixed by ``seed``; ``test_num_nonzero`` [test_size] gives
    the nonzero count of each test vector in test-loader order (e.g. to plot ponder steps against it).
    """

    num_classes = 2
    shuffle_train = False  # every training batch is freshly sampled

    def __init__(
        self,
        num_bits: int = 64,
        min_nonzero: int = 1,
        max_nonzero: int | None = None,
        test_min_nonzero: int | None = None,
        test_max_nonzero: int | None = None,
        train_size: int = 100_000,
        val_size: int = 10_000,
        test_size: int = 10_000,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        max_nonzero = num_bits if max_nonzero is None else max_nonzero
        test_min_nonzero = min_nonzero if test_min_nonzero is None else test_min_nonzero
        test_max_nonzero = max_nonzero if test_max_nonzero is None else test_max_nonzero
        require(num_bits > 0, f"--data.num_bits must be positive, got {num_bits}")
        for low, high, name in (
            (min_nonzero, max_nonzero, "min_nonzero/--data.max_nonzero"),
            (test_min_nonzero, test_max_nonzero, "test_min_nonzero/--data.test_max_nonzero"),
        ):
            require(
                0 <= low <= high <= num_bits,
                f"--data.{name} must satisfy 0 <= min <= max <= num_bits ({num_bits}), got {low}..{high}",
            )
        for value, name in ((train_size, "train_size"), (val_size, "val_size"), (test_size, "test_size")):
            require(value > 0, f"--data.{name} must be positive, got {value}")
        self.save_hyperparameters()
        self.num_bits = num_bits
        self.min_nonzero, self.max_nonzero = min_nonzero, max_nonzero
        self.test_min_nonzero, self.test_max_nonzero = test_min_nonzero, test_max_nonzero
        self.train_size, self.val_size, self.test_size = train_size, val_size, test_size
        self.seed = seed
        self.val_num_nonzero: Tensor | None = None
        self.test_num_nonzero: Tensor | None = None

    @property
    def input_dim(self) -> int:
        return self.num_bits

    def sample_train(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y, _ = sample_parity(batch_size, self.num_bits, self.min_nonzero, self.max_nonzero, generator)
        return x, y

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = SampledBatchDataset(self.train_size, self.sample_train)
            generator = torch.Generator().manual_seed(self.seed)
            x, y, self.val_num_nonzero = sample_parity(
                self.val_size, self.num_bits, self.min_nonzero, self.max_nonzero, generator
            )
            self.val_set = TensorBatchDataset(x, y)
            x, y, self.test_num_nonzero = sample_parity(
                self.test_size, self.num_bits, self.test_min_nonzero, self.test_max_nonzero, generator
            )
            self.test_set = TensorBatchDataset(x, y)



def make_toy(kind: str, num_samples: int, noise: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``num_samples`` 2-D points ``x`` [N, 2] and labels ``y`` [N], half of each class (class 0 gets the odd one)."""
    counts = (num_samples - num_samples // 2, num_samples // 2)
    y = torch.cat([torch.full((n,), label, dtype=torch.long) for label, n in enumerate(counts)])
    t = torch.rand(num_samples, generator=generator)
    if kind == "moons":
        # class 0: upper half circle; class 1: lower half circle shifted by (1, 0.5)
        angle = math.pi * t
        x = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        x = torch.where(y[:, None] == 0, x, torch.stack([1 - x[:, 0], 0.5 - x[:, 1]], dim=1))
    elif kind == "circles":
        # class 0: outer circle of radius 1; class 1: inner circle of radius 0.5
        angle = 2 * math.pi * t
        radius = torch.where(y == 0, 1.0, 0.5)
        x = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    elif kind == "spirals":
        # two interleaved Archimedean spirals over 1.75 turns, the second rotated by pi
        angle = t.sqrt() * 3.5 * math.pi  # sqrt spreads points evenly along the arc
        radius = angle / (3.5 * math.pi)
        angle = angle + math.pi * y
        x = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    else:
        raise ValueError(f"unknown toy kind {kind!r}")
    x = x + noise * torch.randn(num_samples, 2, generator=generator)
    order = torch.randperm(num_samples, generator=generator)
    return x[order].float(), y[order]


class ToyDataModule(InMemoryDataModule):
    """2-D two-class point sets, fixed by ``seed``; batches ``(x [B, 2] float32, y [B] int64)``."""

    num_classes = 2
    input_dim = 2

    def __init__(
        self,
        kind: Literal["moons", "circles", "spirals"] = "moons",
        noise: float = 0.1,
        num_samples: int = 2000,
        val_size: int = 500,
        test_size: int = 500,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        require(kind in ("moons", "circles", "spirals"), f"--data.kind must be moons, circles or spirals, got {kind!r}")
        require(noise >= 0, f"--data.noise must be >= 0, got {noise}")
        for value, name in ((num_samples, "num_samples"), (val_size, "val_size"), (test_size, "test_size")):
            require(value > 0, f"--data.{name} must be positive, got {value}")
        self.save_hyperparameters()
        self.kind, self.noise = kind, noise
        self.num_samples, self.val_size, self.test_size = num_samples, val_size, test_size
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            generator = torch.Generator().manual_seed(self.seed)
            sizes = (self.num_samples, self.val_size, self.test_size)
            splits = [make_toy(self.kind, n, self.noise, generator) for n in sizes]
            self.train_set, self.val_set, self.test_set = (TensorBatchDataset(x, y) for x, y in splits)

