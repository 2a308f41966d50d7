"""What the file loaders share: an epoch cut into this rank's batches, stand-ins for bad files, and the batch
contract on the device (normalised, in the recipe's memory format)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from rn50.data.transforms import normalize

if TYPE_CHECKING:
    from rn50.data.folders import FileList
    from rn50.data.index import ImageIndex
    from rn50.recipes import Recipe

Batch = tuple[np.ndarray, np.ndarray]  # (file indices, augmentation seeds), int64


def shard_plan(
    n: int,
    batch_size: int,
    rank: int,
    world_size: int,
    train: bool,
    seed: int,
    epoch: int,
    accumulation: int = 1,
) -> list[Batch]:
    """This rank's batches for one epoch, each (file indices, augmentation seeds) as int64 arrays.

    Train: one permutation per (seed, epoch) shared by all ranks; world batch b is perm[b*W*B:(b+1)*W*B] and rank r
    takes its r-th slice, so 2 ranks x B see exactly what 1 rank x B with 2 accumulation steps sees. The epoch is
    trimmed to whole optimizer steps. Each sample's augmentation seed depends on (seed, epoch, position) only,
    never on the worker or rank that decodes it, so runs are reproducible and resumable.
    Val: strided over ranks, no padding and no duplicates, the last batch may be short.
    """
    if not train:
        mine = np.arange(rank, n, world_size, dtype=np.int64)
        return [(mine[k : k + batch_size], np.zeros(len(mine[k : k + batch_size]), np.int64))
                for k in range(0, len(mine), batch_size)]  # fmt: skip
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).numpy()
    aug = torch.randint(0, 2**62, (n,), generator=g).numpy()
    world_batch = batch_size * world_size
    batches = n // world_batch
    batches -= batches % accumulation
    positions = np.arange(batches)[:, None] * world_batch + rank * batch_size + np.arange(batch_size)
    return list(zip(perm[positions], aug[positions], strict=True))


def shard_batches(*args, **kwargs) -> list[list[tuple[int, int]]]:
    """`shard_plan` as lists of (sample index, augmentation seed) pairs."""
    return [list(zip(i.tolist(), s.tolist(), strict=True)) for i, s in shard_plan(*args, **kwargs)]


@dataclass
class EpochShards:
    """This rank's batches of (file indices, augmentation seeds) for the current epoch, cached per epoch.

    A file loader holds one (`loader.shards`) and forwards `set_epoch` and `len()` to it.
    """

    n: int
    batch_size: int
    rank: int
    world_size: int
    train: bool
    seed: int
    accumulation: int = 1
    epoch: int = 0
    start_batch: int = 0
    _cache: tuple[int, list] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def batches(self) -> list[Batch]:
        """All of this epoch's batches (from batch 0)."""
        if self._cache is None or self._cache[0] != self.epoch:
            args = (self.n, self.batch_size, self.rank, self.world_size, self.train, self.seed, self.epoch)
            self._cache = (self.epoch, shard_plan(*args, self.accumulation))
        return self._cache[1]

    def remaining(self) -> list[Batch]:
        """The batches still to run this epoch (from `start_batch`)."""
        return self.batches()[self.start_batch :]

    def num_samples(self) -> int:
        return sum(len(i) for i, _ in self.batches())

    def __len__(self) -> int:
        return len(self.batches())


REFILL_TRIES = 16


def refill_candidates(index: int, n: int) -> list[int]:
    """Files that stand in, in this order, for training file `index` when it cannot be decoded.

    Training batches keep their size (BatchNorm needs two or more images; DDP ranks must take the same number of
    steps); the stand-ins hop by the golden ratio over the sorted files, so a class whose every file is bad is
    left behind in a few tries, and depend on nothing but `index`, so runs stay reproducible and resumable.
    """
    hop = max(1, round(n * 0.6180339887))
    return [(index + k * hop) % n for k in range(1, REFILL_TRIES + 1)]


def min_batch(train: bool, batch_size: int) -> int:
    """The smallest batch a loader yields: a training batch of one image breaks BatchNorm, so it is dropped."""
    return min(2, batch_size) if train else 1


def torch_memory_format(name: str) -> torch.memory_format:
    """A recipe's `memory_format` ("channels_last" or "contiguous") as torch's."""
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


def normalize_on_device(
    images: Tensor, device: torch.device, memory_format: torch.memory_format, non_blocking: bool = True
) -> Tensor:
    """uint8 NCHW on any device -> float32 normalised on `device` in `memory_format`."""
    return normalize(images.to(device, non_blocking=non_blocking).contiguous(memory_format=memory_format))


@dataclass(frozen=True)
class LoaderSpec:
    """What every file loader (pytorch, pytorch-gpu, dali) is built from: `make_loader` fills it once."""

    files: FileList
    recipe: Recipe
    device: torch.device
    rank: int
    world_size: int
    seed: int
    workers: int
    accumulation: int  # micro-batches per optimizer step (the recipe derives it)
    index: ImageIndex  # the dataset's headers and verdicts, parsed once

    @property
    def train(self) -> bool:
        return self.files.split == "train"

    def shards(self) -> EpochShards:
        args = (self.recipe.batch_size, self.rank, self.world_size, self.train, self.seed, self.accumulation)
        return EpochShards(len(self.files), *args)
