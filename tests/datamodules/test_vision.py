"""VisionDataModule on tiny IDX files written by the test, read through the real prepare_data/setup path."""

import gzip
import os
import struct

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from datamodules.batches import TensorBatchDataset, pass_through
from datamodules.vision import VisionDataModule
from modules.errors import ConfigError, DataNotFoundError

NUM_TRAIN, NUM_TEST, VAL_SIZE = 200, 50, 40


def write_idx(path, array: torch.Tensor) -> None:
    """IDX as published for (Fashion-)MNIST: big-endian magic 2051 (images) or 2049 (labels), then sizes."""
    magic = 2051 if array.dim() == 3 else 2049
    header = struct.pack(f">{1 + array.dim()}I", magic, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.to(torch.uint8).numpy().tobytes())


@pytest.fixture(scope="module")
def system_dir(tmp_path_factory):
    """A stand-in for /usr/share/datasets/fashion-mnist with 200 train and 50 test images."""
    root = tmp_path_factory.mktemp("system")
    generator = torch.Generator().manual_seed(123)
    for prefix, n in (("train", NUM_TRAIN), ("t10k", NUM_TEST)):
        images = torch.randint(0, 256, (n, 28, 28), generator=generator, dtype=torch.uint8)
        images[:, :4] = 0  # a blank band, like the real digits' borders
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", torch.arange(n) % 10)
    return root


def make(system_dir, data_dir, **kwargs) -> VisionDataModule:
    dm = VisionDataModule(data_dir=str(data_dir), system_dir=str(system_dir), val_size=VAL_SIZE, batch_size=32, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def data_dir(system_dir, tmp_path_factory):
    """One prepared data dir shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("data")
    VisionDataModule(data_dir=str(root), system_dir=str(system_dir)).prepare_data()
    return root


def test_prepare_data_gunzips_system_files_into_torchvision_layout(system_dir, tmp_path):
    dm = make(system_dir, tmp_path / "data")
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert sorted(os.listdir(raw)) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    )
    with gzip.open(system_dir / "train-images-idx3-ubyte.gz", "rb") as f:
        expected = torch.frombuffer(bytearray(f.read()[16:]), dtype=torch.uint8).view(-1, 28, 28)
    # the train split plus the val split are exactly the 200 written images
    stored = torch.cat([dm.train_set.tensors[0], dm.val_set.tensors[0]])
    assert sorted(stored.flatten(1).sum(1).tolist()) == sorted(expected.flatten(1).sum(1).tolist())


def test_filling_leaves_another_process_s_partial_files_alone(system_dir, tmp_path):
    """Two runs started together fill the same directory: each writes through a temporary file of its own."""
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for name in names:  # what the old fixed name, '<file>.partial', would have collided with
        (raw / f"{name}.partial").write_bytes(b"another process")
    make(system_dir, tmp_path / "data")
    for name in names:
        assert (raw / f"{name}.partial").read_bytes() == b"another process"
        with gzip.open(system_dir / f"{name}.gz", "rb") as f:
            assert (raw / name).read_bytes() == f.read()
    assert sorted(os.listdir(raw)) == sorted(names + [f"{name}.partial" for name in names])


def test_plain_batches_have_model_shapes_dtypes_and_split_sizes(system_dir, data_dir):
    dm = make(system_dir, data_dir)
    assert len(dm.train_set) == NUM_TRAIN - VAL_SIZE and len(dm.val_set) == VAL_SIZE and len(dm.test_set) == NUM_TEST
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64
    # normalised with the Fashion-MNIST statistics: 0 -> -mean/std, 255 -> (1-mean)/std
    assert x.min().item() == pytest.approx(-0.2860 / 0.3530, abs=1e-5)
    assert x.max().item() <= (1 - 0.2860) / 0.3530 + 1e-5
    assert sum(len(b[1]) for b in dm.train_dataloader()) == NUM_TRAIN - VAL_SIZE
    assert sum(len(b[1]) for b in dm.predict_dataloader()) == NUM_TEST
    assert dm.num_classes == 10 and dm.image_shape == (1, 28, 28)


def test_unnormalised_pixels_lie_in_unit_interval(system_dir, data_dir):
    x, _ = next(iter(make(system_dir, data_dir, normalize=False).val_dataloader()))
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9


def test_image_shape_is_known_before_prepare_data(tmp_path):
    dm = VisionDataModule(data_dir=str(tmp_path / "nothing"), system_dir=None, variant="cluttered", canvas_size=100)
    assert dm.image_shape == (1, 100, 100) and dm.num_classes == 10
    assert not (tmp_path / "nothing").exists()


def test_split_is_fixed_by_seed_and_changes_with_it(system_dir, data_dir):
    a, b, c = (make(system_dir, data_dir, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.val_set.tensors[1], b.val_set.tensors[1])
    assert torch.equal(a.val_set.tensors[0], b.val_set.tensors[0])
    assert not torch.equal(a.val_set.tensors[0], c.val_set.tensors[0])


@pytest.mark.parametrize("variant", ["binarized", "translated", "cluttered"])
def test_eval_variants_are_fixed_by_seed_and_training_variants_resampled(system_dir, data_dir, variant):
    a, b = make(system_dir, data_dir, variant=variant), make(system_dir, data_dir, variant=variant)
    for split in ("val_dataloader", "test_dataloader"):
        xa, ya = next(iter(getattr(a, split)()))
        xb, yb = next(iter(getattr(b, split)()))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    first = a.train_set.__getitems__(list(range(16)))[0]
    second = a.train_set.__getitems__(list(range(16)))[0]
    assert not torch.equal(first, second)
    c = make(system_dir, data_dir, variant=variant, seed=5)
    assert not torch.equal(a.test_set.tensors[0], c.test_set.tensors[0])


def test_binarized_values_are_zero_or_one_with_pixel_probability(system_dir, data_dir):
    dm = make(system_dir, data_dir, variant="binarized")
    source = dm.train_set.tensors[0][:64]
    draws = torch.stack([dm.train_set.__getitems__(list(range(64)))[0] for _ in range(20)])
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    # the mean of 20 Bernoulli(p) draws is off by ~0.07 on average; thresholding at 0.5 would be off by ~0.25
    assert (draws.mean(0)[:, 0] - source / 255).abs().mean() < 0.1
    x, _ = next(iter(dm.test_dataloader()))
    assert set(x.unique().tolist()) <= {0.0, 1.0}


def test_translation_preserves_digit_mass_and_moves_it(system_dir, data_dir):
    dm = make(system_dir, data_dir, variant="translated", canvas_size=40, normalize=False)
    assert dm.image_shape == (1, 40, 40)
    x, _ = dm.train_set.__getitems__(list(range(32)))
    assert x.shape == (32, 1, 40, 40)
    source = dm.train_set.tensors[0][:32].float() / 255
    assert torch.allclose(x.sum((1, 2, 3)), source.sum((1, 2)), rtol=1e-5)
    rows_with_ink = (x[:, 0].sum(2) > 0).float().argmax(1)
    assert rows_with_ink.unique().numel() > 1  # not always pasted at the same place
    assert dm.val_set.tensors[0].shape == (VAL_SIZE, 40, 40) and dm.val_set.tensors[0].dtype == torch.uint8


def test_cluttered_canvas_adds_distractors_to_the_translated_digit(system_dir, data_dir):
    dm = make(system_dir, data_dir, variant="cluttered", canvas_size=60, num_distractors=4, normalize=False)
    x, y = dm.train_set.__getitems__(list(range(32)))
    assert x.shape == (32, 1, 60, 60) and y.shape == (32,) and dm.image_shape == (1, 60, 60)
    digit_mass = dm.train_set.tensors[0][:32].float().sum((1, 2))
    canvas_mass = x.sum((1, 2, 3)) * 255
    # max-combination never removes digit ink, and the distractors add some on most canvases
    assert (canvas_mass >= digit_mass - 1e-2).all()
    assert (canvas_mass > digit_mass + 1).float().mean() > 0.5
    assert dm.test_set.tensors[0].shape == (NUM_TEST, 60, 60)


@pytest.mark.parametrize("variant", ["translated", "cluttered"])
def test_test_offsets_say_where_each_test_image_lies_on_its_canvas(system_dir, data_dir, variant):
    """The recorded (top, left) cut each source image back out of its canvas (max-combination keeps its pixels)."""
    dm = make(system_dir, data_dir, variant=variant, canvas_size=44, normalize=False)
    canvases, offsets = dm.test_set.tensors[0], dm.test_offsets
    assert offsets.shape == (NUM_TEST, 2) and offsets.min() >= 0 and offsets.max() <= 44 - 28
    sources = dm._load(train=False)[0]
    for canvas, source, (top, left) in zip(canvases, sources, offsets.tolist()):
        crop = canvas[top : top + 28, left : left + 28]
        assert torch.equal(crop, source) if variant == "translated" else bool((crop >= source).all())
        if variant == "translated":
            assert crop.sum() == canvas.sum()  # nothing outside the recorded box
    assert offsets.unique(dim=0).shape[0] > 1
    assert make(system_dir, data_dir, variant="plain").test_offsets is None


def test_missing_data_raises_one_clear_error_and_creates_nothing(tmp_path):
    data_dir = tmp_path / "data"
    dm = VisionDataModule(data_dir=str(data_dir), system_dir=str(tmp_path / "no-system"))
    with pytest.raises(DataNotFoundError, match=r"no Fashion-MNIST in .*FashionMNIST/raw; run with --data.download true"):
        dm.prepare_data()
    assert not data_dir.exists()
    with pytest.raises(DataNotFoundError, match="--data.download true"):
        dm.setup("fit")
    mnist = VisionDataModule(dataset="mnist", data_dir=str(data_dir))
    with pytest.raises(DataNotFoundError, match=r"no MNIST in .*MNIST/raw"):
        mnist.prepare_data()
    assert not data_dir.exists()


def test_corrupt_system_file_leaves_no_half_made_directory(system_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in system_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    dm = VisionDataModule(data_dir=str(tmp_path / "data"), system_dir=str(broken))
    with pytest.raises(DataNotFoundError, match=r"could not fill .*FashionMNIST/raw with Fashion-MNIST \(.+\); copy"):
        dm.prepare_data()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "kwargs, option",
    [
        (dict(variant="translated", canvas_size=20), "--data.canvas_size"),
        (dict(variant="cluttered", distractor_size=30), "--data.distractor_size"),
        (dict(val_size=60_000), "--data.val_size"),
        (dict(batch_size=0), "--data.batch_size"),
    ],
)
def test_bad_options_raise_config_error_naming_the_option(tmp_path, kwargs, option):
    with pytest.raises(ConfigError, match=option):
        VisionDataModule(data_dir=str(tmp_path), **kwargs)


def test_train_subset_takes_the_first_training_images(system_dir, data_dir):
    dm = make(system_dir, data_dir, train_subset=25)
    full = make(system_dir, data_dir)
    assert len(dm.train_set) == 25
    assert torch.equal(dm.train_set.tensors[0], full.train_set.tensors[0][:25])


def test_distributed_sampler_gives_each_rank_half_the_data(system_dir, data_dir):
    dm = make(system_dir, data_dir)
    dataset = dm.train_set
    indices = []
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(dataset, batch_size=16, sampler=sampler, collate_fn=pass_through)
        batches = list(loader)
        assert all(x.shape[1:] == (1, 28, 28) for x, _ in batches)
        assert sum(len(y) for _, y in batches) == len(dataset) // 2
        indices.append(set(sampler))
    assert indices[0].isdisjoint(indices[1]) and len(indices[0] | indices[1]) == len(dataset)


def test_tensor_batch_dataset_single_item_matches_batch_row():
    dataset = TensorBatchDataset(torch.arange(10).view(5, 2), torch.arange(5))
    x, y = dataset[3]
    assert x.tolist() == [6, 7] and y.item() == 3
