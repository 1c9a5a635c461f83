"""MNIST and Fashion-MNIST held in memory, with the variants used by attention and generative models.

``plain`` and ``binarized`` are 28x28; ``translated`` and ``cluttered`` place the image on a larger
canvas as in Mnih et al. 2014, "Recurrent Models of Visual Attention", Sec. 4.1 (translated 60x60;
cluttered 60x60 with 4 or 100x100 with 8 distractors of 8x8). ``binarized`` is the dynamic
binarisation of the VAE/IWAE literature (Burda et al. 2016, Sec. 5.1). Training variants are
resampled on every draw; validation and test variants are drawn once from ``seed``.
"""

import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchvision import datasets

from datamodules.batches import InMemoryDataModule, TensorBatchDataset
from modules.errors import DataNotFoundError, require

# name -> (torchvision class, pixel mean, pixel std) of the 60k training images
_DATASETS = {
    "fashion_mnist": (datasets.FashionMNIST, 0.2860, 0.3530),
    "mnist": (datasets.MNIST, 0.1307, 0.3081),
}
_RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_DIGIT_SIZE = 28
_TRAIN_IMAGES = 60_000


def _paste_max(canvas: Tensor, patches: Tensor, top: Tensor, left: Tensor) -> Tensor:
    """Combine ``patches`` [B, P, h, w] into ``canvas`` [B, S, S] with max at offsets ``top``/``left`` [B, P]."""
    size = canvas.shape[-1]
    h, w = patches.shape[-2:]
    rows = top[..., None] + torch.arange(h)  # [B, P, h]
    cols = left[..., None] + torch.arange(w)  # [B, P, w]
    flat_index = (rows[..., :, None] * size + cols[..., None, :]).flatten(1)  # [B, P*h*w]
    canvas.view(len(canvas), -1).scatter_reduce_(1, flat_index, patches.flatten(1), reduce="amax")
    return canvas


def _random_offsets(count: tuple[int, int], high: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Uniform top-left corners in ``[0, high]`` for ``count`` = (batch, patches)."""
    top = torch.randint(0, high + 1, count, generator=generator)
    left = torch.randint(0, high + 1, count, generator=generator)
    return top, left


def translate(images: Tensor, canvas_size: int, generator: torch.Generator, offsets: list | None = None) -> Tensor:
    """Place each 28x28 image [B, 28, 28] uint8 at a uniform random position on a zero canvas.

    ``offsets``: a list to which the positions are appended, as one [B, 2] tensor of (top, left) pixels.
    """
    canvas = images.new_zeros(len(images), canvas_size, canvas_size)
    top, left = _random_offsets((len(images), 1), canvas_size - images.shape[-1], generator)
    if offsets is not None:
        offsets.append(torch.cat([top, left], dim=1))
    return _paste_max(canvas, images[:, None], top, left)


def clutter(
    images: Tensor,
    pool: Tensor,
    canvas_size: int,
    num_distractors: int,
    distractor_size: int,
    generator: torch.Generator,
    offsets: list | None = None,
) -> Tensor:
    """Translated images plus ``num_distractors`` random crops of random ``pool`` images, combined with max.

    ``offsets``: as in :func:`translate`, the positions of the images themselves (not of the distractors).
    """
    batch, k, d = len(images), num_distractors, distractor_size
    canvas = translate(images, canvas_size, generator, offsets)
    if k == 0:
        return canvas
    source = torch.randint(0, len(pool), (batch, k), generator=generator)
    crop_top, crop_left = _random_offsets((batch, k), pool.shape[-1] - d, generator)
    rows = (crop_top[..., None] + torch.arange(d))[..., :, None]  # [B, K, d, 1]
    cols = (crop_left[..., None] + torch.arange(d))[..., None, :]  # [B, K, 1, d]
    crops = pool[source[..., None, None], rows, cols]  # [B, K, d, d]
    top, left = _random_offsets((batch, k), canvas_size - d, generator)
    return _paste_max(canvas, crops, top, left)


@dataclass
class VisionBatchTransform:
    """Turns an indexed uint8 batch [B, H, W] into the model's float32 input [B, 1, H', W'].

    With ``resample`` the variant is drawn anew (training); without it the stored batch already is the
    variant (validation and test, drawn once in ``setup``).
    """

    variant: str
    mean: float
    std: float
    normalize: bool
    resample: bool
    canvas_size: int = 0
    num_distractors: int = 0
    distractor_size: int = 0
    pool: Tensor | None = None  # distractor sources for ``cluttered``

    def sample_variant(self, images: Tensor, generator: torch.Generator, offsets: list | None = None) -> Tensor:
        if self.variant == "binarized":
            # P(u < pixel) = pixel / 255 for u uniform on {0, ..., 254}: Bernoulli(pixel / 255) without floats
            uniform = torch.randint(0, 255, images.shape, generator=generator, dtype=torch.uint8)
            return (uniform < images).to(torch.uint8)
        if self.variant == "translated":
            return translate(images, self.canvas_size, generator, offsets)
        if self.variant == "cluttered":
            return clutter(images, self.pool, self.canvas_size, self.num_distractors, self.distractor_size, generator, offsets)
        return images

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if self.resample:
            images = self.sample_variant(images, generator)
        if self.variant == "binarized":
            return images[:, None].float()  # already {0, 1}; binary likelihoods need it unnormalised
        x = images[:, None].float()
        if not self.normalize:
            return x.div_(255.0)
        return x.mul_(1.0 / (255.0 * self.std)).sub_(self.mean / self.std)  # (x / 255 - mean) / std in two ops


class VisionDataModule(InMemoryDataModule):
    """Fashion-MNIST or MNIST, whole splits in memory as uint8, batches of ``(x [B, 1, H, W] float32, y [B] int64)``.

    The validation split is ``val_size`` images of the 60k training set, chosen by a permutation
    seeded with ``seed``; the test split is the official 10k test set (also used for ``predict``).
    """

    def __init__(
        self,
        dataset: Literal["fashion_mnist", "mnist"] = "fashion_mnist",
        data_dir: str = "data",
        download: bool = False,
        system_dir: str | None = "/usr/share/datasets/fashion-mnist",
        variant: Literal["plain", "binarized", "translated", "cluttered"] = "plain",
        canvas_size: int = 60,
        num_distractors: int = 4,
        distractor_size: int = 8,
        batch_size: int = 128,
        val_size: int = 5000,
        train_subset: int | None = None,
        normalize: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        require(dataset in _DATASETS, f"--data.dataset must be one of {sorted(_DATASETS)}, got {dataset!r}")
        require(
            variant in ("plain", "binarized", "translated", "cluttered"),
            f"--data.variant must be plain, binarized, translated or cluttered, got {variant!r}",
        )
        if variant in ("translated", "cluttered"):
            require(
                canvas_size >= _DIGIT_SIZE,
                f"--data.canvas_size must be at least {_DIGIT_SIZE} for variant {variant!r}, got {canvas_size}",
            )
        if variant == "cluttered":
            require(num_distractors >= 0, f"--data.num_distractors must be >= 0, got {num_distractors}")
            require(
                1 <= distractor_size <= min(_DIGIT_SIZE, canvas_size),
                f"--data.distractor_size must be between 1 and {_DIGIT_SIZE}, got {distractor_size}",
            )
        require(
            0 < val_size < _TRAIN_IMAGES,
            f"--data.val_size must be between 1 and {_TRAIN_IMAGES - 1}, got {val_size}",
        )
        require(
            train_subset is None or train_subset > 0,
            f"--data.train_subset must be positive or null, got {train_subset}",
        )
        self.save_hyperparameters()
        self.dataset = dataset
        self.data_dir = data_dir
        self.download = download
        self.system_dir = system_dir
        self.variant = variant
        self.canvas_size = canvas_size
        self.num_distractors = num_distractors
        self.distractor_size = distractor_size
        self.val_size = val_size
        self.train_subset = train_subset
        self.normalize = normalize
        self.seed = seed
        self.torchvision_class, self.mean, self.std = _DATASETS[dataset]
        self.test_offsets: Tensor | None = None  # filled by setup("test") for translated and cluttered

    # --- what models check before a run starts -------------------------------------------------

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def image_shape(self) -> tuple[int, int, int]:
        side = self.canvas_size if self.variant in ("translated", "cluttered") else _DIGIT_SIZE
        return (1, side, side)

    # --- files ---------------------------------------------------------------------------------

    @property
    def raw_dir(self) -> str:
        """Where torchvision reads the gunzipped IDX files: ``<data_dir>/<FashionMNIST|MNIST>/raw``."""
        return os.path.join(self.data_dir, self.torchvision_class.__name__, "raw")

    def _missing_raw_files(self) -> list[str]:
        return [name for name in _RAW_FILES if not os.path.isfile(os.path.join(self.raw_dir, name))]

    def _system_files(self) -> list[str] | None:
        """The four ``.gz`` files of the Debian package, or None when not usable."""
        if self.dataset != "fashion_mnist" or not self.system_dir:
            return None
        paths = [os.path.join(self.system_dir, f"{name}.gz") for name in _RAW_FILES]
        return paths if all(os.path.isfile(p) for p in paths) else None

    def _not_found(self, failure: Exception | None = None) -> DataNotFoundError:
        """One message saying what to do; ``failure`` is why filling ``raw_dir`` went wrong, if it did."""
        name = "Fashion-MNIST" if self.dataset == "fashion_mnist" else "MNIST"
        copy = f"copy the four IDX files ({', '.join(_RAW_FILES)}) there"
        if failure is not None:
            reason = " ".join(f"{type(failure).__name__}: {failure}".split())[:300]
            return DataNotFoundError(f"could not fill {self.raw_dir} with {name} ({reason}); {copy}")
        ways = ["run with --data.download true"]
        if self.dataset == "fashion_mnist":
            ways.append(f"`apt-get install dataset-fashion-mnist` (files in {self.system_dir or '--data.system_dir'})")
        ways.append(copy)
        return DataNotFoundError(f"no {name} in {self.raw_dir}; {', or '.join(ways)}")

    def prepare_data(self) -> None:
        """Make ``raw_dir`` hold the IDX files: already there, else from ``system_dir``, else downloaded."""
        missing = self._missing_raw_files()
        if not missing:
            return
        system_files = self._system_files()
        if system_files is None and not self.download:
            raise self._not_found()
        # from here on directories are created; undo them if filling them fails
        created = self._first_missing_dir(self.raw_dir)
        try:
            if system_files is not None:
                os.makedirs(self.raw_dir, exist_ok=True)
                for name in missing:
                    self._gunzip(os.path.join(self.system_dir, f"{name}.gz"), os.path.join(self.raw_dir, name))
            else:
                self.torchvision_class(self.data_dir, train=True, download=True)
                self.torchvision_class(self.data_dir, train=False, download=True)
        except Exception as error:
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise self._not_found(error) from error

    @staticmethod
    def _first_missing_dir(path: str) -> str | None:
        """The outermost directory of ``path`` that does not exist yet (what a cleanup must remove)."""
        first = None
        path = os.path.abspath(path)
        while not os.path.exists(path):
            first, path = path, os.path.dirname(path)
        return first

    @staticmethod
    def _gunzip(source: str, target: str) -> None:
        # torchvision 0.29 reads only the uncompressed IDX files; write then rename so no half file remains.
        # The partial file's name is this call's own, so that processes filling the same directory at once
        # (two benchmark runs started together) never rename each other's file away.
        handle, partial = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}-", suffix=".partial")
        try:
            with gzip.open(source, "rb") as src, os.fdopen(handle, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.remove(partial)

    # --- splits --------------------------------------------------------------------------------

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        if self._missing_raw_files():
            raise self._not_found()
        parsed = self.torchvision_class(self.data_dir, train=train, download=False)
        return parsed.data.contiguous(), parsed.targets.long()

    def _transform(self, resample: bool, pool: Tensor | None = None) -> VisionBatchTransform:
        return VisionBatchTransform(
            variant=self.variant,
            mean=self.mean,
            std=self.std,
            normalize=self.normalize,
            resample=resample,
            canvas_size=self.canvas_size,
            num_distractors=self.num_distractors,
            distractor_size=self.distractor_size,
            pool=pool,
        )

    def _fixed_variant(self, images: Tensor, offset: int, chunk: int = 4096, offsets: list | None = None) -> Tensor:
        """Draw the variant of an evaluation split once, reproducibly from ``seed``; stored as uint8.

        ``offsets``: as in :func:`translate`, filled for ``translated`` and ``cluttered``."""
        generator = torch.Generator().manual_seed(self.seed * 1_000 + offset)
        sampler = self._transform(resample=True, pool=images)
        return torch.cat([sampler.sample_variant(part, generator, offsets) for part in images.split(chunk)])

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = self._load(train=True)
            require(
                self.val_size < len(images),
                f"--data.val_size ({self.val_size}) must be smaller than the {len(images)} training images",
            )
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
            val_index, train_index = order[: self.val_size], order[self.val_size :]
            if self.train_subset is not None:
                train_index = train_index[: self.train_subset]
            train_images = images[train_index]
            self.train_set = TensorBatchDataset(
                train_images, labels[train_index], transform=self._transform(resample=True, pool=train_images)
            )
            self.val_set = TensorBatchDataset(
                self._fixed_variant(images[val_index], offset=1),
                labels[val_index],
                transform=self._transform(resample=False),
            )
        if stage in (None, "test", "predict") and self.test_set is None:
            images, labels = self._load(train=False)
            offsets = []
            self.test_set = TensorBatchDataset(
                self._fixed_variant(images, offset=2, offsets=offsets), labels, transform=self._transform(resample=False)
            )
            # where each test image lies on its canvas, [N, 2] (top, left) pixels (translated, cluttered): analysis only
            self.test_offsets = torch.cat(offsets) if offsets else None
