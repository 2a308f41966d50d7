"""The `pytorch` backend: torchvision.io decode in DataLoader workers, crop before resize, uint8 batches in pinned
memory, normalisation and layout on the device, prefetched on a side stream on CUDA."""

from __future__ import annotations

import atexit
import multiprocessing.resource_sharer
import signal
import sys
import warnings
import weakref
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from rn50.data.batches import LoaderSpec, min_batch, normalize_on_device, refill_candidates, torch_memory_format
from rn50.data.folders import FileList
from rn50.data.index import ImageIndex
from rn50.data.transforms import crop_resize_flip, decode_rgb, sample_windows
from rn50.errors import first_line
from rn50.recipes import Recipe

# torch warns "This DataLoader will create N worker processes ... suggested max number of worker" when a loader is
# made and again at every iter(), from two lines (so Python's default filter shows both), for every loader: once is
# enough to say that --workers exceeds the cores.
warnings.filterwarnings("once", message="This DataLoader will create", category=UserWarning)


class ImageDataset(torch.utils.data.Dataset):
    """Batches of (index, augmentation seed) -> [(uint8 CHW image or None, label, [(bad path, reason), ...]), ...].

    Files the dataset index found bad are not opened; in training a file that cannot be used is replaced by the first
    usable of its `refill_candidates`. The batch's crop windows are drawn at once (`sample_windows`) from the image
    sizes in the index, each image cropped as soon as it is decoded."""

    def __init__(self, files: FileList, recipe: Recipe, train: bool, index: ImageIndex) -> None:
        self.files, self.labels, self.train = files.files, files.labels, train
        self.image_size = recipe.image_size
        self.augment = (recipe.image_size, recipe.crop_area, recipe.crop_ratio, recipe.hflip)
        self.height, self.width = index.height, index.width
        self.known_bad = {int(i): index.reason(int(i)) for i in np.flatnonzero(index.bad())}

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, index: int) -> tuple[Tensor | None, int, list[tuple[str, str]]]:
        """(image or None, the file used, bad files met on the way)."""
        bad: list[tuple[str, str]] = []
        for c in [index, *refill_candidates(index, len(self.files))] if self.train else [index]:
            if c in self.known_bad:
                bad.append((self.files[c], self.known_bad[c]))
                continue
            try:
                return decode_rgb(self.files[c]), c, bad
            except Exception as e:  # any decoder failure means this one file is unusable: skip it, keep training
                bad.append((self.files[c], first_line(e, 200, typed=True)))
        return None, index, bad

    def __getitems__(self, items: list[tuple[int, int]]) -> list:
        idx, seeds = [i for i, _ in items], [s for _, s in items]
        windows = zip(*sample_windows(self.height[idx], self.width[idx], seeds, self.train, *self.augment), strict=True)
        out = []
        for i, seed, window in zip(idx, seeds, windows, strict=True):
            image, used, bad = self._decode(i)
            if image is None:
                out.append((None, None, bad))
                continue
            if used != i or tuple(image.shape[1:]) != (self.height[used], self.width[used]):  # a stand-in
                window = [
                    v[0] for v in sample_windows([image.shape[1]], [image.shape[2]], [seed], self.train, *self.augment)
                ]
            out.append((crop_resize_flip(image, window, self.image_size), self.labels[used], bad))
        return out

    def __getitem__(self, item: tuple[int, int]):
        return self.__getitems__([item])[0]


def collate(samples: list) -> tuple[Tensor, Tensor, list[tuple[str, str]]]:
    good = [s for s in samples if s[0] is not None]
    bad = [b for s in samples for b in s[2]]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), bad
    return torch.stack([s[0] for s in good]), torch.tensor([s[1] for s in good], dtype=torch.int64), bad


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
PREFETCH_FACTOR = 4  # batches each DataLoader worker makes ahead


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # one decode thread per worker process; the workers are the parallelism
    # SLURM, Kubernetes and torchrun signal the whole process group: the main process decides when to stop and
    # shuts its workers down itself. They were started with these signals blocked (see _start); ignoring them
    # first drops any that arrived since.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    sys.excepthook = _quiet_hang_ups(sys.excepthook)


def _quiet_hang_ups(report):
    """A worker's excepthook that drops the main process hanging up on a batch's hand-over.

    Each batch's shared-memory file descriptors go to the main process over a socket, one handshake per tensor,
    served by multiprocessing's resource-sharer thread in this worker (torch's file_descriptor sharing strategy).
    A main process stopped by a signal while it waits on that handshake drops the socket; the thread here then
    meets EOFError or BrokenPipe/ConnectionReset and prints a traceback through sys.excepthook. The main process
    reports the stop itself: this worker says nothing more."""
    serve = multiprocessing.resource_sharer._ResourceSharer._serve.__code__

    def hook(kind, value, tb) -> None:
        if not (issubclass(kind, (EOFError, ConnectionError)) and tb is not None and tb.tb_frame.f_code is serve):
            report(kind, value, tb)

    return hook


# Loaders whose workers may still run. The workers ignore SIGTERM (above), so multiprocessing's own exit handler,
# which terminates daemonic children with SIGTERM and then joins them without a timeout, would wait for ever on a
# loader nobody closed (one kept alive by a reference cycle until exit). This handler is registered after
# multiprocessing's (torch imports it first), so it runs before it and shuts those workers down the normal way.
# A worker whose loader was already collected while its iterator lives on (a suspended generator kept by a
# traceback, say) is not in _OPEN: every worker process started here is also remembered, and one still alive after
# the clean close is killed (SIGTERM would be ignored), as multiprocessing would have terminated it anyway.
_OPEN: weakref.WeakSet = weakref.WeakSet()
_WORKERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_loaders() -> None:
    for loader in list(_OPEN):
        loader.close()
    for worker in list(_WORKERS):
        if worker.is_alive():
            worker.kill()
            worker.join(timeout=10)


def _start(loader: torch.utils.data.DataLoader):
    """iter(loader), forking any worker with SIGTERM/SIGINT blocked (no window before _worker_init ignores them)."""
    if not loader.num_workers:
        return iter(loader)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        iterator = iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    for worker in getattr(iterator, "_workers", ()):
        _WORKERS.add(worker)
    return iterator


class _EpochBatches:
    """The batch sampler: re-read on every `iter()` so `set_epoch` takes effect with persistent workers."""

    def __init__(self, owner: TorchLoader) -> None:
        self.owner = owner

    def __iter__(self):
        for idx, seeds in self.owner.shards.remaining():
            yield list(zip(idx.tolist(), seeds.tolist(), strict=True))

    def __len__(self) -> int:
        return len(self.owner.shards.remaining())


class TorchLoader:
    def __init__(self, spec: LoaderSpec) -> None:
        workers = spec.workers
        self.files, self.train, self.device = spec.files, spec.train, spec.device
        self.memory_format = torch_memory_format(spec.recipe.memory_format)
        self.bad_files: list[tuple[str, str]] = []
        self._bad_set: set[str] = set()
        self._min_batch = min_batch(self.train, spec.recipe.batch_size)
        self.shards = spec.shards()
        _OPEN.add(self)
        self.loader = torch.utils.data.DataLoader(
            self._dataset(spec.files, spec.recipe, spec.index),
            batch_sampler=_EpochBatches(self),
            num_workers=workers,
            collate_fn=self._collate(),
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if workers else None,
            persistent_workers=workers > 0,
            prefetch_factor=PREFETCH_FACTOR if workers else None,
        )
        self.prefetch_batches = PREFETCH_FACTOR * workers  # batches made ahead of the consumer (bench data settles)
        self.num_samples = self.shards.num_samples()

    def _dataset(self, files: FileList, recipe: Recipe, index: ImageIndex) -> torch.utils.data.Dataset:
        """What the workers do per batch (here: decode and augment; the pytorch-gpu backend only reads)."""
        return ImageDataset(files, recipe, self.train, index)

    def _collate(self):
        return collate

    def __len__(self) -> int:
        return len(self.shards)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.shards.set_epoch(epoch, start_batch)

    def close(self) -> None:
        """Stop the persistent worker processes now (rather than whenever the garbage collector runs)."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            # torch gives a worker 5 s to see the done event, then SIGTERMs it, which our workers ignore.
            for worker in getattr(iterator, "_workers", ()):
                if worker.is_alive():
                    worker.kill()
                    worker.join(timeout=10)
        self.loader._iterator = None

    def _note_bad(self, bad: list[tuple[str, str]]) -> None:
        for path, why in bad:
            if path not in self._bad_set:
                self._bad_set.add(path)
                self.bad_files.append((path, why))

    def _usable(self, batch) -> bool:
        """Records the batch's bad files; False for a batch too small to train on (see `min_batch`)."""
        self._note_bad(batch[2])
        return len(batch[1]) >= self._min_batch

    def _to_device(self, batch) -> tuple[Tensor, Tensor] | None:
        """The batch ready for the model; None if it turned out too small to train on."""
        images, labels, _ = batch
        return (
            normalize_on_device(images, self.device, self.memory_format),
            labels.to(self.device, non_blocking=True),
        )

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.device.type != "cuda":
            for batch in _start(self.loader):
                if self._usable(batch) and (ready := self._to_device(batch)) is not None:
                    yield ready
            return
        # CUDA: copy and normalise batch k+1 on a side stream while the model runs batch k.
        stream = torch.cuda.Stream(self.device)
        pending = None
        for batch in _start(self.loader):
            if not self._usable(batch):
                continue
            with torch.cuda.stream(stream):
                ready = self._to_device(batch)
            if ready is None:
                continue
            if pending is not None:
                yield pending
            torch.cuda.current_stream(self.device).wait_stream(stream)
            for t in ready:
                t.record_stream(torch.cuda.current_stream(self.device))
            pending = ready
        if pending is not None:
            yield pending
