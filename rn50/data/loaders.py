"""One batch contract for every backend: `(images, labels)` normalised, in the recipe's memory format, on the device.

`make_loader` picks the backend. Every loader also has `set_epoch(epoch, start_batch)` (deterministic order,
resumable mid-epoch), `bad_files` (corrupt images skipped so far: (path, reason)) and `len()` = batches per epoch
on this rank.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from rn50.data.transforms import IMAGE_EXTENSIONS, MEAN, STD
from rn50.errors import UserError
from rn50.recipes import DATA_BACKENDS, Recipe

SPLITS = ("train", "val")


class Loader(Protocol):
    bad_files: list[tuple[str, str]]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...
    def close(self) -> None: ...


@dataclass
class FileList:
    """The images of one split with labels indexed by the sorted class names of the train split."""

    root: Path
    split: str
    classes: list[str]
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)


def list_split(root: str | os.PathLike, split: str) -> FileList:
    """Scan `root/split/<class>/*` (ImageNet layout); every problem is one UserError saying what to do."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    root = Path(root)
    if not root.exists():
        raise UserError(f"data folder not found: {root}")
    if not root.is_dir():
        raise UserError(f"DATA must be a folder in ImageNet layout (train/<class>/*.JPEG), not a file: {root}")
    folder = root / split
    if not folder.is_dir():
        raise UserError(f"{root} has no {split}/ folder (expected ImageNet layout: {split}/<class>/*.JPEG)")
    # Labels follow the train split's classes so train and val agree even if val lacks a class.
    class_root = root / "train" if (root / "train").is_dir() else folder
    classes = sorted(d.name for d in class_root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"{class_root} has no class folders (expected {class_root}/<class>/<image>)")
    index = {c: i for i, c in enumerate(classes)}
    out = FileList(root=root, split=split, classes=classes)
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name not in index:
            raise UserError(f"class {d.name!r} is in {split}/ but not in train/; run `rn50 data check {root}`")
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                out.files.append(str(f))
                out.labels.append(index[d.name])
    if not out.files:
        raise UserError(f"no images under {folder} (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return out


def require_decodable(files: FileList) -> None:
    """Refuse a split with no image that decodes (checked in file order until one does: one file, normally)."""
    from rn50.data.check import decode_error

    first = None
    for path in files.files:
        why = decode_error(path)
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


def shard_batches(
    n: int,
    batch_size: int,
    rank: int,
    world_size: int,
    train: bool,
    seed: int,
    epoch: int,
    accumulation: int = 1,
) -> list[list[tuple[int, int]]]:
    """This rank's batches of (sample index, augmentation seed) for one epoch.

    Train: one permutation per (seed, epoch) shared by all ranks; world batch b is perm[b*W*B:(b+1)*W*B] and rank r
    takes its r-th slice, so 2 ranks x B see exactly what 1 rank x B with 2 accumulation steps sees. The epoch is
    trimmed to whole optimizer steps. Each sample's augmentation seed depends on (seed, epoch, position) only,
    never on the worker or rank that decodes it, so runs are reproducible and resumable.
    Val: strided over ranks, no padding and no duplicates, the last batch may be short.
    """
    if not train:
        mine = list(range(rank, n, world_size))
        return [[(i, 0) for i in mine[k : k + batch_size]] for k in range(0, len(mine), batch_size)]
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    aug = torch.randint(0, 2**62, (n,), generator=g).tolist()
    world_batch = batch_size * world_size
    batches = n // world_batch
    batches -= batches % accumulation
    out = []
    for b in range(batches):
        start = b * world_batch + rank * batch_size
        out.append([(perm[k], aug[k]) for k in range(start, start + batch_size)])
    return out


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


def normalize_on_device(
    images: Tensor, device: torch.device, memory_format: torch.memory_format, non_blocking: bool = True
) -> Tensor:
    """uint8 NCHW on any device -> float32 normalised on `device` in `memory_format`."""
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    x = images.to(device, non_blocking=non_blocking).contiguous(memory_format=memory_format)
    return x.float().sub_(mean).div_(std)


def accumulation_for(recipe: Recipe, world_size: int) -> int:
    if recipe.optimizer_batch_size is None:
        return 1
    world_batch = recipe.batch_size * world_size
    if recipe.optimizer_batch_size % world_batch:
        raise UserError(
            f"optimizer batch {recipe.optimizer_batch_size} is not a multiple of {world_size} x {recipe.batch_size}"
        )
    return recipe.optimizer_batch_size // world_batch


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
    if backend not in DATA_BACKENDS:
        raise UserError(f"unknown data backend {backend!r}: use one of {', '.join(DATA_BACKENDS)}")
    workers = recipe.workers if workers is None else workers
    if workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    if backend == "synthetic":
        from rn50.data.synthetic import SyntheticLoader

        return SyntheticLoader(recipe, device, split=split, root=root, rank=rank, world_size=world_size)
    if root is None:
        raise UserError(f"the {backend} backend needs a data folder")
    files = list_split(root, split)
    check_classes(files, recipe)
    require_decodable(files)
    accumulation = accumulation_for(recipe, world_size)
    if backend == "pytorch":
        from rn50.data.torch_loader import TorchLoader

        return TorchLoader(files, recipe, device, rank, world_size, seed, workers, accumulation)
    if backend == "dali-gpu" and device.type != "cuda":
        raise UserError("--data-backend dali-gpu needs a CUDA GPU; use dali-cpu or pytorch on CPU")
    from rn50.data.dali import DaliLoader

    return DaliLoader(files, recipe, device, rank, world_size, seed, workers, accumulation, gpu=backend == "dali-gpu")


class ShardedEpochs:
    """This rank's batches of file indices for the current epoch (cached per epoch), shared by the file loaders.

    Needs `files`, `batch_size`, `rank`, `world_size`, `train`, `seed`, `accumulation`, `epoch`, `_batches`.
    """

    def epoch_batches(self) -> list:
        if self._batches is None or self._batches[0] != self.epoch:
            batches = shard_batches(
                len(self.files),
                self.batch_size,
                self.rank,
                self.world_size,
                self.train,
                self.seed,
                self.epoch,
                self.accumulation,
            )
            self._batches = (self.epoch, batches)
        return self._batches[1]

    def __len__(self) -> int:
        return len(self.epoch_batches())

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch
