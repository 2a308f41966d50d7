"""LoadGen's system under test over one rn50 runtime, with each scenario's batching.

SingleStream and MultiStream: the query (1 sample, or MultiStream's 8, in batches of up to `batch`) runs in LoadGen's
issue call as MLCommons' reference does, since LoadGen waits for it before the next query anyway. Offline and Server:
the issue call only queues the samples; worker threads run them in batches of up to `batch` (Offline: LoadGen's one
large query cut into full batches; Server: a dynamic batcher that waits at most `timeout_s` after a batch's first sample
for it to fill, a timeout chosen below the latency bound). One worker by default: the batch fills the device, and
runtimes that are not thread safe (a TensorRT execution context) stay correct; `workers` > 1 overlaps calls where a
runtime allows it (ONNX Runtime's session.run is thread safe, and two calls fill the gaps between one call's operators).

Each sample is answered with its top-1 class index as a float32, the response MLCommons' reference sends and its
accuracy-imagenet.py reads. Nothing here may raise into LoadGen (its C++ threads would abort the process): a failure
is kept in `error`, the SUT stops, and the driver raises it once LoadGen returns.

Stopping (a signal, a failure): samples are answered without inference so LoadGen finishes its schedule at once
and writes its logs. Server runs on a time schedule, so there the SUT instead holds queries until more than
`hold_limit` are outstanding, which ends LoadGen's issuing (its max_async_queries), then answers them all (or
after `hold_s`, should LoadGen have issued its last query already).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from rn50.bench.mlperf.library import SampleLibrary

Item = tuple[int, int, float]  # (LoadGen response id, QSL index, arrival time)


class SystemUnderTest:
    def __init__(
        self,
        lg: Any,
        forward: Callable[[Tensor], Tensor],
        library: SampleLibrary,
        scenario: str,
        batch: int,
        channels_last: bool = False,
        workers: int = 1,
    ) -> None:
        self.lg, self.forward, self.library = lg, forward, library
        self.workers = workers  # Offline/Server: inference threads (more than one only for thread-safe runtimes)
        self.inline = scenario in ("singlestream", "multistream")
        self.batch, self.timeout_s, self.channels_last = batch, 0.0, channels_last  # Server: timeout_s from the plan
        self.hold_limit: int | None = None  # Server: see the module docstring
        self.hold_s = 0.0  # ... for at most this long (LoadGen may have issued its last query already)
        self._hold_until = 0.0
        self.pending: deque[Item] = deque()
        self.cv = threading.Condition()
        self.stopping = False
        self.closed = False
        self.issued = 0  # samples, for progress
        self.completed = 0
        self.infer_s = 0.0  # seconds inside inference calls (summed over workers): the runtime's share of a run
        self.error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    # -- LoadGen's callbacks (its threads)
    def issue(self, samples: list[Any]) -> None:
        try:
            now = time.perf_counter()
            items = [(s.id, s.index, now) for s in samples]
            with self.cv:
                self.issued += len(items)
            if self.inline and not self.stopping:
                self._run(items)
                return
            with self.cv:
                self.pending.extend(items)
                self.cv.notify_all()
            if self.inline:  # stopping: answered here, LoadGen waits for nothing
                self._drain()
        except BaseException as e:
            self.fail(e)

    def flush(self) -> None:
        """LoadGen's FlushQueries: nothing is held back in any scenario."""

    # -- the driver's side
    def start(self) -> None:
        self.stopping = self.closed = False
        self.issued = self.completed = 0
        self.infer_s = 0.0
        self.error = None
        if not self.inline:
            self._threads = [
                threading.Thread(target=self._work, name="rn50-sut", daemon=True) for _ in range(self.workers)
            ]
            for thread in self._threads:
                thread.start()

    def stop(self) -> None:
        with self.cv:
            if not self.stopping:
                self._hold_until = time.perf_counter() + self.hold_s
            self.stopping = True
            self.cv.notify_all()

    def fail(self, e: BaseException) -> None:
        if self.error is None:
            self.error = e
        self.stop()
        try:
            self._drain()
        except BaseException:  # noqa: S110 - answering without inference cannot be helped further
            pass

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()
        for thread in self._threads:
            thread.join()  # no signal reaches here: it runs after LoadGen returned, on answered work
        self._threads = []

    def infer(self, indices: list[int]) -> Tensor:
        """Top-1 class per loaded sample, as float32 on the host (the calibration times exactly this)."""
        return self._top1(self.library.batch(indices, self.channels_last))

    def _top1(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            logits = self.forward(x)
        return logits.argmax(1).to(torch.float32).cpu()

    # -- inside
    def _work(self) -> None:
        while True:
            try:
                items = self._take()
                if items is None:
                    return
                self._run(items)
            except BaseException as e:
                self.fail(e)

    def _take(self) -> list[Item] | None:
        with self.cv:
            while not self.closed and (not self.pending or self._holding()):
                self.cv.wait(0.05 if self.pending else None)
            if not self.pending:
                return None
            release = self.stopping
            if release:
                items = list(self.pending)
                self.pending.clear()
            else:
                items = self._fill()
        if release and self.hold_limit is not None:
            time.sleep(0.05)  # LoadGen checks its outstanding count just after the issue call that passed the limit
        return items

    def _fill(self) -> list[Item]:
        """The next batch (lock held): Server waits for it to fill, up to the timeout after its first sample."""
        if self.timeout_s > 0:
            deadline = self.pending[0][2] + self.timeout_s
            while len(self.pending) < self.batch and not (self.closed or self.stopping):
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self.cv.wait(left)
        n = min(len(self.pending), self.batch)
        return [self.pending.popleft() for _ in range(n)]

    def _holding(self) -> bool:
        """Stopping a Server run: keep queries unanswered until LoadGen's outstanding count passes the limit."""
        if not self.stopping or self.hold_limit is None or time.perf_counter() > self._hold_until:
            return False
        return self.issued - self.completed <= self.hold_limit

    def _run(self, items: list[Item]) -> None:
        if self.stopping:
            self._complete(items, None)
            return
        for start in range(0, len(items), self.batch):
            chunk = items[start : start + self.batch]
            x = self.library.batch([i for _, i, _ in chunk], self.channels_last)
            t0 = time.perf_counter()
            top1 = self._top1(x).numpy()  # the runtime's call and the readback it waits for
            self._complete(chunk, top1, time.perf_counter() - t0)
            if self.stopping:
                self._complete(items[start + self.batch :], None)
                return

    def _drain(self) -> None:
        with self.cv:
            items = list(self.pending)
            self.pending.clear()
        self._complete(items, None)

    def _complete(self, items: list[Item], top1: Any, infer_s: float = 0.0) -> None:
        if not items:
            return
        response = self.lg.QuerySampleResponse
        if top1 is None:  # stopped: answered without data (LoadGen copies none)
            responses = [response(rid, 0, 0) for rid, _, _ in items]
        else:
            base, size = top1.ctypes.data, top1.itemsize
            responses = [response(rid, base + k * size, size) for k, (rid, _, _) in enumerate(items)]
        self.lg.QuerySamplesComplete(responses)  # copies the data it logs before it returns; top1 lives until then
        with self.cv:
            self.completed += len(items)
            self.infer_s += infer_s
