"""In-memory batching shared by every datamodule: one tensor index per batch instead of one call per sample.

A torch ``DataLoader`` whose dataset defines ``__getitems__`` hands it the whole list of indices of a batch
(``torch.utils.data._utils.fetch._MapDatasetFetcher``), so a batch of 128 images is one indexing operation
on a uint8 tensor plus one vectorised transform. The datasets stay ordinary map-style datasets with
``__len__``, so Lightning can still swap in a ``DistributedSampler`` under DDP: the sampler and
``batch_size`` decide which indices form a batch, the dataset only fetches them.
"""

from collections.abc import Callable, Sequence

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from modules.errors import require

# (inputs of a batch, generator for this draw) -> inputs ready for the model
BatchTransform = Callable[[Tensor, torch.Generator], Tensor]


def draw_generator(indices: Tensor) -> torch.Generator:
    """A generator for the random augmentation of one batch, different on every draw, worker and DDP rank.

    The global RNG alone is not enough: ``seed_everything`` gives every DDP rank the same global state,
    so ranks would draw identical translations or identical fresh parity vectors. The sampler gives
    each rank disjoint indices, so mixing the first index into the seed separates the ranks, while the
    global RNG (reseeded per epoch in dataloader workers) makes every epoch differ.
    """
    base = int(torch.randint(0, 2**62, ()))
    return torch.Generator().manual_seed((base + 0x9E3779B97F4A7C15 * (int(indices[0]) + 1)) % 2**63)


def _as_index(indices: Sequence[int] | Tensor) -> Tensor:
    return torch.as_tensor(indices, dtype=torch.long)


class TensorBatchDataset(Dataset):
    """Equal-length tensors (inputs first, e.g. uint8 images and int64 labels) fetched a batch at a time.

    ``transform(inputs, generator)`` runs once per batch on the indexed inputs (normalisation,
    binarisation, translation); the other tensors are returned as indexed.
    """

    def __init__(self, *tensors: Tensor, transform: BatchTransform | None = None) -> None:
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorBatchDataset needs one or more tensors of equal length")
        self.tensors = tensors
        self.transform = transform

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitems__(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, ...]:
        index = _as_index(indices)
        inputs, *rest = (t[index] for t in self.tensors)
        if self.transform is not None:
            inputs = self.transform(inputs, draw_generator(index))
        return (inputs, *rest)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([index]))


class SampledBatchDataset(Dataset):
    """``length`` samples per epoch drawn fresh on every access: the infinite-data regime.

    ``sample(batch_size, generator)`` returns a tuple of tensors with ``batch_size`` rows; the indices
    only set how many samples a batch has and, through :func:`draw_generator`, keep DDP ranks apart.
    """

    def __init__(self, length: int, sample: Callable[[int, torch.Generator], tuple[Tensor, ...]]) -> None:
        self.length = length
        self.sample = sample

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, ...]:
        index = _as_index(indices)
        return self.sample(len(index), draw_generator(index))

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([index]))


def pass_through(batch):
    """``collate_fn`` for datasets with ``__getitems__``: the batch is already built."""
    return batch


def batch_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool = False, num_workers: int = 0
) -> DataLoader:
    """The DataLoader every gapbridge datamodule returns; a plain one, so Lightning can re-create it for DDP."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=pass_through,
        persistent_workers=False,
    )


class InMemoryDataModule(LightningDataModule):
    """Base of the datamodules built on these datasets: ``setup`` fills ``train_set``/``val_set``/``test_set``.

    The loaders are the same for all of them; ``predict`` reads the test split. Subclasses whose
    training data is drawn fresh on every access set ``shuffle_train = False``.
    """

    shuffle_train = True

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__()
        require(batch_size > 0, f"--data.batch_size must be positive, got {batch_size}")
        require(num_workers >= 0, f"--data.num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before its dataloaders are requested")
        return batch_loader(dataset, self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=self.shuffle_train)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
