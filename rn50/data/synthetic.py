"""Synthetic batches that already live on the device: measures the model, not the input pipeline."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from rn50.data.batches import torch_memory_format
from rn50.recipes import Recipe

SYNTHETIC_EPOCH = {"train": 100, "val": 10}  # batches per epoch per rank


class SyntheticLoader:
    def __init__(
        self,
        recipe: Recipe,
        device: torch.device,
        split: str = "train",
        rank: int = 0,
        batches: int | None = None,
    ) -> None:
        self.bad_files: list[tuple[str, str]] = []
        self.batches = batches or SYNTHETIC_EPOCH.get(split, 100)
        self.start_batch = 0
        g = torch.Generator().manual_seed(rank)
        size = recipe.image_size
        fmt = torch_memory_format(recipe.memory_format)
        images = torch.randn(recipe.batch_size, 3, size, size, generator=g)
        self.images = images.to(device).contiguous(memory_format=fmt)
        self.labels = torch.randint(0, recipe.num_classes, (recipe.batch_size,), generator=g).to(device)
        self.num_samples = self.batches * recipe.batch_size

    def __len__(self) -> int:
        return self.batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.start_batch = start_batch

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for _ in range(self.start_batch, self.batches):
            yield self.images, self.labels
