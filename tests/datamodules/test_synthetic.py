"""ParityDataModule and ToyDataModule: labels, ranges, balance and determinism."""

import pytest
import torch

from datamodules.synthetic import ParityDataModule, ToyDataModule, sample_parity
from modules.errors import ConfigError


def parity_label(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor([int((row == 1).sum().item()) % 2 for row in x])


def test_parity_labels_are_the_parity_of_plus_ones():
    dm = ParityDataModule(num_bits=16, train_size=256, val_size=128, test_size=128, batch_size=64)
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (64, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert set(x.unique().tolist()) <= {-1.0, 0.0, 1.0}
        assert torch.equal(y, parity_label(x))
    assert 0.35 < dm.val_set.tensors[1].float().mean() < 0.65
    assert dm.num_classes == 2 and dm.input_dim == 16


def test_nonzero_counts_are_within_bounds_and_cover_them():
    x, _, count = sample_parity(4000, num_bits=10, min_nonzero=3, max_nonzero=6, generator=torch.Generator())
    assert torch.equal((x != 0).sum(1), count)
    assert set(count.tolist()) == {3, 4, 5, 6}
    # positions are random: every bit is sometimes set
    assert ((x != 0).float().mean(0) > 0.2).all()


def test_extrapolation_ranges_split_train_and_test():
    dm = ParityDataModule(
        num_bits=96, max_nonzero=48, test_min_nonzero=49, test_max_nonzero=96, val_size=500, test_size=500
    )
    dm.setup()
    train_x, _ = dm.train_set.__getitems__(list(range(500)))
    train_counts = (train_x != 0).sum(1)
    assert train_counts.min() >= 1 and train_counts.max() <= 48
    test_x, test_y = dm.test_set.tensors
    assert torch.equal((test_x != 0).sum(1), dm.test_num_nonzero)
    assert dm.test_num_nonzero.min() >= 49 and dm.test_num_nonzero.max() <= 96
    assert torch.equal(test_y, parity_label(test_x))
    # the test order of test_num_nonzero matches the loader
    x, _ = next(iter(dm.test_dataloader()))
    assert torch.equal((x != 0).sum(1), dm.test_num_nonzero[: len(x)])


def test_parity_training_data_is_fresh_and_eval_data_fixed_by_seed():
    a, b, c = (ParityDataModule(num_bits=32, val_size=64, test_size=64, seed=s) for s in (0, 0, 1))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.val_set.tensors[0], b.val_set.tensors[0])
    assert torch.equal(a.test_set.tensors[0], b.test_set.tensors[0])
    assert not torch.equal(a.test_set.tensors[0], c.test_set.tensors[0])
    first, second = (a.train_set.__getitems__(list(range(64)))[0] for _ in range(2))
    assert not torch.equal(first, second)
    assert len(a.train_dataloader()) == 100_000 // 128 + 1


def test_parity_rejects_impossible_ranges():
    with pytest.raises(ConfigError, match="--data.min_nonzero"):
        ParityDataModule(num_bits=8, min_nonzero=5, max_nonzero=4)
    with pytest.raises(ConfigError, match="--data.test_min_nonzero"):
        ParityDataModule(num_bits=8, test_max_nonzero=9)


@pytest.mark.parametrize("kind", ["moons", "circles", "spirals"])
def test_toy_sets_are_balanced_with_the_right_shapes_and_fixed_by_seed(kind):
    a = ToyDataModule(kind=kind, num_samples=301, val_size=100, test_size=50, seed=3)
    b = ToyDataModule(kind=kind, num_samples=301, val_size=100, test_size=50, seed=3)
    a.setup(), b.setup()
    x, y = a.train_set.tensors
    assert x.shape == (301, 2) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [151, 150]
    assert torch.bincount(a.val_set.tensors[1]).tolist() == [50, 50]
    assert len(a.test_set) == 50
    assert torch.equal(x, b.train_set.tensors[0]) and torch.equal(y, b.train_set.tensors[1])
    assert not torch.equal(x, a.val_set.tensors[0][:1].expand(301, 2))
    xb, yb = next(iter(a.train_dataloader()))
    assert xb.shape == (128, 2) and yb.shape == (128,)
    assert a.num_classes == 2 and a.input_dim == 2


def test_toy_classes_are_separable_where_the_geometry_says_so():
    dm = ToyDataModule(kind="circles", noise=0.05, num_samples=1000)
    dm.setup()
    x, y = dm.train_set.tensors
    radius = x.norm(dim=1)
    # outer circle (class 0) radius 1, inner (class 1) radius 0.5
    assert ((radius < 0.75).long() == y).float().mean() > 0.97
