"""One batch contract for every backend: `(images, labels)` normalised, in the recipe's memory format, on the device.

`make_loader` picks the backend. Every loader also has `set_epoch(epoch, start_batch)` (deterministic order,
resumable mid-epoch), `bad_files` (corrupt images skipped so far: (path, reason)) and `len()` = batches per epoch
on this rank.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from rn50.data.batches import LoaderSpec, shard_batches
from rn50.data.folders import FileList, list_split
from rn50.data.index import ImageIndex, dataset_index
from rn50.errors import UserError, need
from rn50.recipes import DATA_BACKENDS, Recipe

__all__ = ["Loader", "list_split", "make_loader", "shard_batches", "skipped_error"]


class Loader(Protocol):
    bad_files: list[tuple[str, str]]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...
    def close(self) -> None: ...


def require_decodable(files: FileList, index: ImageIndex) -> None:
    """Refuse a split with no image that decodes (checked in file order, past the files the index found bad, until
    one does: one file, normally)."""
    from rn50.data.check import decode_error

    bad = index.bad()
    first = None
    for i, path in enumerate(files.files):
        why = index.reason(i) if bad[i] else decode_error(path)
        if why is None:
            return
        first = first or (path, why)
    where = Path(files.root) / files.split
    raise UserError(
        f"none of the {len(files)} images under {where} can be decoded (e.g. {first[0]}: {first[1]}); "
        f"run `rn50 data check {files.root}` to list them, and replace or remove them"
    )


def skipped_error(loader: Loader, max_share: float, split: str = "train") -> str | None:
    """The line that stops a run whose undecodable files (counted once each) pass `max_share` of the split."""
    total = getattr(loader, "files", None)
    if total is None or not loader.bad_files:
        return None
    n = len(total)
    bad = len({p for p, _ in loader.bad_files})
    if bad <= max_share * n:
        return None
    path, why = loader.bad_files[0]
    return (
        f"{bad} of the {n} {split} images could not be decoded, more than --max-skipped {max_share:g} allows "
        f"(e.g. {path}: {why}); run `rn50 data check` on the dataset and fix or remove them, or raise --max-skipped"
    )


def check_classes(files: FileList, recipe: Recipe) -> None:
    if len(files.classes) > recipe.num_classes:
        raise UserError(
            f"{files.root} has {len(files.classes)} classes but the recipe's model has {recipe.num_classes} "
            f"outputs; pass --num-classes {len(files.classes)}"
        )


def make_loader(
    root: str | os.PathLike | None,
    split: str,
    recipe: Recipe,
    backend: str,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    workers: int | None = None,
) -> Loader:
    """A loader of `(images, labels)` ready for the model: normalised, `recipe.memory_format`, on `device`."""
    device = torch.device(device)
    need(backend in DATA_BACKENDS, f"unknown data backend {backend!r}: use one of {', '.join(DATA_BACKENDS)}")
    workers = recipe.workers if workers is None else workers
    need(workers >= 0, f"--workers must be >= 0, got {workers}")
    if backend == "synthetic":
        from rn50.data.synthetic import SyntheticLoader

        return SyntheticLoader(recipe, device, split=split, rank=rank)
    need(root is not None, f"the {backend} backend needs a data folder")
    files = list_split(root, split)
    check_classes(files, recipe)
    index = dataset_index(Path(root) / split, files.files, max(1, workers))  # headers parsed once per dataset
    require_decodable(files, index)
    # The recipe derives gradient accumulation (and refuses an optimizer batch that is no multiple of the world's).
    accumulation = recipe.replace(gpus=world_size).accumulation_steps
    spec = LoaderSpec(files, recipe, device, rank, world_size, seed, workers, accumulation, index)
    if backend == "pytorch":
        from rn50.data.torch_loader import TorchLoader

        return TorchLoader(spec)
    if backend == "pytorch-gpu":
        from rn50.data.gpu_decode import GpuDecodeLoader

        return GpuDecodeLoader(spec)
    if backend == "dali-gpu" and device.type != "cuda":
        raise UserError("--data-backend dali-gpu needs a CUDA GPU; use dali-cpu or pytorch on CPU")
    from rn50.data.dali import DaliLoader

    gpu = backend == "dali-gpu"
    return DaliLoader(spec, gpu=gpu)
