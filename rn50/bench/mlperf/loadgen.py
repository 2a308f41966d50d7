"""One LoadGen test: the QSL and SUT handed to LoadGen, its run watched from the main thread, its logs read back.

LoadGen's StartTest blocks in C++ with the GIL released, and Python runs signal handlers only in the main thread:
so the test runs in a thread of its own while the main thread waits in short joins, updates the progress bar and
takes SIGINT/SIGTERM (rn50.bench.stop). A signal stops the SUT (sut.py: answered without inference), LoadGen ends
its test and writes its logs, and the record says the run was stopped. LoadGen writes to file descriptor 1 from C++
(its warning/error counts, timestamps): during the test fd 1 points at stderr, so `--json` stdout stays clean.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rn50.bench.mlperf.logs import run_record
from rn50.bench.mlperf.sut import SystemUnderTest
from rn50.bench.stop import Background, Interrupted, StopSignals


def require_loadgen() -> Any:
    """The mlperf_loadgen module, or one line naming the extra that installs it."""
    from rn50.export.runner import require

    return require("mlperf_loadgen", "mlperf", "MLPerf LoadGen (mlcommons-loadgen)")


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr for the block: C/C++ writes included (their stdio buffers are flushed
    before fd 1 is restored, or they would reach stdout later)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def progress(scenario: str, mode: str, settings: Any, sut: SystemUnderTest, total: int, elapsed: float) -> float:
    """How far the test is (0-1): LoadGen ends when both its duration and its query count are reached."""
    if mode == "accuracy":
        return sut.completed / max(1, total)
    if scenario == "offline":  # one query: its samples
        return sut.completed / max(1, sut.issued) if sut.issued else 0.0
    per_query = settings.multi_stream_samples_per_query if scenario == "multistream" else 1
    by_count = sut.completed / per_query / max(1, settings.min_query_count)
    by_time = elapsed / max(1e-3, settings.min_duration_ms / 1000)
    return max(0.0, min(1.0, by_time, by_count))


def run_test(
    lg: Any,
    sut: SystemUnderTest,
    settings: Any,
    folder: Path,
    stop: StopSignals,
    tick: Callable[[float], None] = lambda _: None,
    scenario: str = "offline",
    mode: str = "performance",
) -> dict[str, Any]:
    """Run one test with logs in `folder`; the run record (logs.run_record) with 'seconds', and 'stopped' (the
    Interrupted) when a signal ended it."""
    library = sut.library
    folder.mkdir(parents=True, exist_ok=True)
    out = lg.LogOutputSettings()
    out.outdir = str(folder)
    out.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = out
    log_settings.enable_trace = False

    def load(indices: list[int]) -> None:
        try:
            library.load(indices)
        except BaseException as e:  # never into LoadGen's C++: the SUT stops and the driver raises it after
            sut.fail(e)

    # The performance sample count the QSL reports (mlperf.conf's override takes precedence inside LoadGen)
    count = min(len(library), int(settings.performance_sample_count_override) or 1024)
    sut_handle = lg.ConstructSUT(sut.issue, sut.flush)
    qsl_handle = lg.ConstructQSL(len(library), count, load, library.unload)
    stopped: Interrupted | None = None
    sut.start()
    start = time.perf_counter()
    test = Background(lambda: lg.StartTestWithLogSettings(sut_handle, qsl_handle, settings, log_settings), "loadgen")

    def watch() -> None:
        tick(progress(scenario, mode, settings, sut, len(library), time.perf_counter() - start))
        stop.check()

    try:
        with stdout_to_stderr():
            test.start()
            try:
                test.wait(tick=watch)
            except (Interrupted, KeyboardInterrupt) as e:
                stopped = e if isinstance(e, Interrupted) else stop.interruption()
                sut.stop()
                test.wait()  # LoadGen finishes its schedule without inference, then writes its logs
    finally:
        if test.done.is_set():  # never free what a running LoadGen still uses (an error before it started)
            sut.close()
            lg.DestroyQSL(qsl_handle)
            lg.DestroySUT(sut_handle)
            library.unload(list(library.loaded))
    if test.error is not None:
        raise test.error
    if sut.error is not None and stopped is None:
        raise sut.error
    record = run_record(folder, scenario)
    record["seconds"] = round(time.perf_counter() - start, 3)
    record["inference_s"] = round(sut.infer_s, 3)
    if scenario == "offline" and record.get("max_ms") and not stopped:
        # The share of LoadGen's Offline duration spent inside the runtime's calls (up to the top-1 on the host);
        # the rest is the harness: gathering batches, LoadGen's responses. Over 100% with --concurrency: calls overlap.
        record["runtime_busy"] = round(sut.infer_s / (record["max_ms"] / 1e3), 4)
    record["folder"] = str(folder)
    if stopped is not None:
        record["stopped"] = stopped
    return record
