"""Timing a loader: its batches across epoch ends, a few at a time, with the training thread's own CPU time inside
next(); and the training step on synthetic batches, what a pipeline must keep up with."""

from __future__ import annotations

import time
from typing import Any

from rn50.bench.timing import endless_batches
from rn50.env import synchronize


class Stream:
    """A loader's batches across epoch ends, taken a few at a time (one interleaved round after another)."""

    def __init__(self, loader, device) -> None:
        self.loader, self.device, self.epoch = loader, device, 0  # the epoch of the last batch taken
        empty = "the loader yields no batch: the split has fewer images than one batch; lower --batch"
        self.it = endless_batches(loader, empty)

    def take(self, n: int) -> float:
        """`n` untimed batches; their seconds."""
        t0 = time.perf_counter()
        for _ in range(n):
            self.epoch, _ = next(self.it)
        synchronize(self.device)
        return time.perf_counter() - t0

    def timed(self, n: int) -> tuple[int, float, int, Any, dict[str, float]]:
        """(images, seconds, epoch restarts, last batch, the loader's own `timings` deltas plus `host_s`, the
        training thread's CPU seconds inside next()) over `n` batches."""
        restarts_before = self.epoch
        own_before = dict(getattr(self.loader, "timings", {}))
        images, host = 0, 0.0
        start = time.perf_counter()
        for _ in range(n):
            cpu = time.thread_time()  # this thread only: worker processes and DALI's threads are not in it
            self.epoch, (x, _) = next(self.it)
            host += time.thread_time() - cpu
            images += x.shape[0]
        synchronize(self.device)
        seconds = time.perf_counter() - start
        own = {k: v - own_before[k] for k, v in getattr(self.loader, "timings", {}).items() if k in own_before}
        return images, seconds, self.epoch - restarts_before, x, own | {"host_s": host}


def time_train_step(recipe, device, warmup: int, iters: int) -> dict[str, Any]:
    """Img/s of the trainer's own step on synthetic batches: fp16 AMP on CUDA, fp32 on CPU (what CPUs train in)."""
    import torch

    from rn50.data.synthetic import SyntheticLoader
    from rn50.train.step import build_state, train_step

    precision = "fp16" if device.type == "cuda" else "fp32"
    layout = "channels_last" if device.type == "cuda" else "contiguous"
    recipe = recipe.replace(precision=precision, memory_format=layout, data_backend="synthetic")
    state = build_state(recipe, device, distributed=False)
    loader = SyntheticLoader(recipe, device, batches=max(1, warmup) + iters)
    stream = Stream(_Stepped(loader, lambda x, y: train_step(state, x, y)), device)
    stream.take(max(1, warmup))  # the first batch includes start-up: never timed
    images, seconds, _, _, _ = stream.timed(iters)
    del stream
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"precision": precision, "img_per_s": images / seconds, "images": images, "seconds": seconds}


class _Stepped:
    """A loader whose every batch has been through one training step (so a Stream times loader + step)."""

    def __init__(self, loader, step) -> None:
        self.loader, self.step = loader, step

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        for x, y in self.loader:
            self.step(x, y)
            yield x, y
