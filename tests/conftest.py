"""Shared fixtures: small data written by the tests themselves, real Fashion-MNIST when installed."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as a gzip IDX file: magic 0x0803 for images, 0x0801 for labels, big-endian dims."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_learnable_digits(directory: Path, num_train: int = 6000, num_test: int = 1000, seed: int = 0) -> Path:
    """Fake 28x28 IDX data a classifier can learn: class k is a bright bar at rows 2k..2k+4, plus noise."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("t10k", num_test)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 90, (count, 28, 28)).astype(np.uint8)
        for k in range(10):
            images[labels == k, 2 * k + 4 : 2 * k + 8, 4:24] = 230
        write_idx(directory / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz", labels)
    return directory


@pytest.fixture(scope="session")
def fashion_source(tmp_path_factory) -> Path:
    """A directory with the four gzip IDX files: the real Debian copy if installed, else learnable fake data."""
    if all((SYSTEM_FASHION_MNIST / f"{name}.gz").is_file() for name in IDX_FILES):
        return SYSTEM_FASHION_MNIST
    return write_learnable_digits(tmp_path_factory.mktemp("fake-fashion-mnist"))


@pytest.fixture
def vision_args(tmp_path, fashion_source) -> list[str]:
    """CLI arguments pointing a VisionDataModule and the run directory into this test's tmp_path."""
    return [
        f"--data.init_args.data_dir={tmp_path / 'data'}",
        f"--data.init_args.system_dir={fashion_source}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]
