"""Timing primitives: batch-spec parsing, a timed loop (CUDA events on GPU, perf_counter on CPU), statistics.

Method (the one hardware people trust): warmup iterations run first and are never timed; every timed iteration is a
sample; throughput is images over the total timed seconds (never a mean of per-iteration rates); latency mean/min/
p50/p90/p95/p99 come from the same samples.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rn50.env import synchronize
from rn50.errors import UserError, need

PERCENTILES = (50, 90, 95, 99)
_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")
_LIST = re.compile(r"^\s*\d+\s*(,\s*\d+\s*)*$")


def parse_batches(spec: str) -> list[int]:
    """`A..B` -> the powers of two from A to B (1..256 -> 1, 2, 4, ..., 256); `1,3,8` -> that list, sorted."""
    text = str(spec)
    hint = "use A..B (powers of two from A to B, e.g. 1..256) or a comma list such as 1,3,8"
    m = _RANGE.match(text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        need(lo >= 1 and hi >= lo, f"bad --batch {text!r}: need 1 <= A <= B in A..B; {hint}")
        batches = [2**k for k in range(0, hi.bit_length() + 1) if lo <= 2**k <= hi]
        need(bool(batches), f"bad --batch {text!r}: no power of two lies between {lo} and {hi}; {hint}")
        return batches
    if _LIST.match(text):
        batches = sorted({int(v) for v in text.split(",")})
        need(batches[0] >= 1, f"bad --batch {text!r}: batch sizes must be >= 1; {hint}")
        return batches
    raise UserError(f"bad --batch {text!r}: {hint}")


def parse_list(spec: str, allowed: Sequence[str], what: str) -> list[str]:
    """A comma list of names from `allowed`, order kept, duplicates dropped; anything else is one UserError."""
    names = [s.strip().lower() for s in str(spec).split(",")]
    if not names or any(not n for n in names):
        raise UserError(f"bad --{what} {spec!r}: give a comma list of {', '.join(allowed)}")
    unknown = [n for n in names if n not in allowed]
    need(not unknown, f"unknown --{what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def summarize(samples_s: Sequence[float], batch: int, total_s: float | None = None) -> dict[str, Any]:
    """Throughput and latency statistics (ms) of one timed loop. `total_s` defaults to the sum of the samples."""
    if not samples_s:
        raise ValueError("no samples")
    ms = 1e3 * np.asarray(samples_s, dtype=np.float64)
    total = float(total_s) if total_s is not None else float(sum(samples_s))
    out: dict[str, Any] = {
        "iters": len(samples_s),
        "images": batch * len(samples_s),
        "timed_s": total,
        "img_s": batch * len(samples_s) / total,
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
    }
    for q, value in zip(PERCENTILES, np.percentile(ms, PERCENTILES), strict=True):  # linear interpolation
        out[f"p{q}_ms"] = float(value)
    return out


@dataclass
class LoopResult:
    samples_s: list[float]  # per-iteration latency, seconds
    total_s: float  # first iteration start to last iteration end

    def img_s(self, images_per_iter: int) -> float:
        """Throughput: the images of every timed iteration over the total timed seconds."""
        return images_per_iter * len(self.samples_s) / self.total_s


def timed_loop(
    step: Callable[[], Any],
    *,
    warmup: int,
    iters: int | None,
    min_time: float | None = None,
    cuda: bool = False,
    min_iters: int = 5,
) -> LoopResult:
    """Run `step` `warmup` times untimed, then `iters` times (or until `min_time` seconds, at least `min_iters`).

    On CUDA each iteration is bracketed by events on the current stream and the host never waits inside the loop,
    so the samples are device time and the total is first start event to last end event. On CPU each call is
    synchronous and timed with perf_counter.
    """
    if (iters is None) == (min_time is None):
        raise ValueError("give exactly one of iters and min_time")
    for _ in range(warmup):
        step()
    if cuda:
        import torch

        synchronize("cuda")
        events: list[tuple[Any, Any]] = []
        host_start = time.perf_counter()
        while True:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            events.append((start, end))
            if _done(len(events), iters, min_time, min_iters, host_start):
                break
        synchronize("cuda")
        samples = [s.elapsed_time(e) / 1e3 for s, e in events]
        total = events[0][0].elapsed_time(events[-1][1]) / 1e3
        return LoopResult(samples, total)
    samples = []
    host_start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
        if _done(len(samples), iters, min_time, min_iters, host_start):
            break
    return LoopResult(samples, time.perf_counter() - host_start)


def _done(n: int, iters: int | None, min_time: float | None, min_iters: int, start: float) -> bool:
    if iters is not None:
        return n >= iters
    return n >= min_iters and time.perf_counter() - start >= min_time


def endless_batches(loader: Any, empty: str) -> Iterator[tuple[int, Any]]:
    """(epoch, batch) across epoch ends, each epoch started with `loader.set_epoch` (reshuffled, as in training);
    a loader that yields no batch in an epoch is one UserError(`empty`) rather than an endless wait."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        got = False
        for batch in loader:
            got = True
            yield epoch, batch
        need(got, empty)
        epoch += 1


@contextlib.contextmanager
def cuda_settings(device: str) -> Iterator[None]:
    """On CUDA: the GPU asked for (`cuda:N`) made current, so CUDA events, syncs and new tensors use it rather than
    GPU 0, and cuDNN's autotuner on, as NVIDIA's own ResNet-50 benchmark sets it; both restored afterwards."""
    if not device.startswith("cuda"):
        yield
        return
    import torch

    before = (torch.cuda.current_device(), torch.backends.cudnn.benchmark)
    index = torch.device(device).index
    if index is not None:
        torch.cuda.set_device(index)
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.cuda.set_device(before[0])
        torch.backends.cudnn.benchmark = before[1]


# ---------------------------------------------------------------- interleaved rounds and the figures' own checks
#
# A ratio of two throughputs measured one after the other is also a ratio of two moments of the machine: any drift
# (another process, clocks, thermals) between them lands in the ratio, which is how 2 processes on 2 cores once
# showed a weak-scaling efficiency of 5.7. Measured in rounds (A, B, A, B, ..., the order rotated each round) every
# round's ratio compares two moments a few seconds apart; the median over rounds drops the rounds a burst hit, and
# the rounds' spread says how much the machine moved.

MAX_EFFICIENCY = 1.05  # weak scaling above this is not a measurement of scaling
MIN_WINDOW_S = 1.0  # a timed window shorter than this is mostly clock noise and start-up
MIN_ITERS = 5
MAX_SPREAD = 0.10  # (max - min) / median of the per-round ratios
MAX_OTHER_LOAD = 0.25  # cores' worth of other processes' CPU use during the run


def round_order(items: Sequence[Any], r: int) -> list[Any]:
    """The order of round `r`: `items` rotated by r (A B C, B C A, C A B, ...), so no series always runs first or
    last; every interleaving bench uses this one rule."""
    items = list(items)
    if not items:
        return []
    k = r % len(items)
    return items[k:] + items[:k]


def split_rounds(total: int, rounds: int) -> list[int]:
    """`total` iterations (or batches) over at most `rounds` rounds, as evenly as whole iterations allow."""
    rounds = max(1, min(rounds, total))
    return [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]


def interleaved(
    steps: Sequence[Callable[[], Any]],
    *,
    rounds: int,
    iters: int | None = None,
    min_time: float | None = None,
    cuda: bool = False,
) -> list[list[LoopResult]]:
    """Time each step in `rounds` rounds; round r runs the steps in an order rotated by r (A B C, B C A, ...).

    Each (round, step) is one `timed_loop` of `iters` iterations (or `min_time` seconds), no warmup: warm the steps
    up before. Returns results[round][step]."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    n = len(steps)
    results: list[list[LoopResult]] = []
    for r in range(rounds):
        row: list[LoopResult | None] = [None] * n
        for i in round_order(range(n), r):
            row[i] = timed_loop(steps[i], warmup=0, iters=iters, min_time=min_time, cuda=cuda, min_iters=1)
        results.append(row)  # type: ignore[arg-type]
    return results


def ratio_stats(ratios: Sequence[float]) -> dict[str, float]:
    """Median of per-round ratios, their min, max and relative spread ((max - min) / median)."""
    if not ratios:
        raise ValueError("no rounds")
    lo, med, hi = (float(v) for v in np.percentile(ratios, (0, 50, 100)))
    return {
        "ratio": med,
        "ratio_min": lo,
        "ratio_max": hi,
        "ratio_spread": (hi - lo) / med if med else math.inf,
        "rounds": len(ratios),
    }


def per_round_rates(results: list[list[LoopResult]], index: int, images_per_iter: int) -> list[float]:
    """Img/s of step `index` in every round."""
    return [row[index].img_s(images_per_iter) for row in results]


def _proc_stat_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat (None elsewhere)."""
    try:
        fields = [float(v) for v in open("/proc/stat").readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / hz, sum(fields[:8]) / hz


def wait_quiet(max_wait: float = 5.0, cores: float = 0.25, step: float = 0.1) -> float:
    """Wait until the machine is quiet (busy CPU time over `step` seconds below `cores` cores), at most `max_wait`
    seconds; the seconds waited. Between two loaders' timed windows: a prefetching loader left alone refills its
    queue (worker processes, DALI's in-flight batches) and only then goes idle; that work must not fall into the
    next loader's window. On a machine that stays busy it returns after `max_wait` (and the load flags say so)."""
    t0 = time.perf_counter()
    prev = _proc_stat_busy()
    if prev is None:
        return 0.0
    n = os.cpu_count() or 1
    while time.perf_counter() - t0 < max_wait:
        time.sleep(step)
        cur = _proc_stat_busy()
        if cur is None or (cur[0] - prev[0]) / max(cur[1] - prev[1], 1e-9) * n < cores:
            break
        prev = cur
    return time.perf_counter() - t0


def _own_cpu_s() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished children: workers, torchrun and its ranks
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class LoadWatch:
    """What else ran on this machine while a benchmark ran: the 1-minute load average before and after, and the
    CPU time of every other process (machine busy time from /proc/stat minus this process and its finished
    children) as cores' worth of work. The load average alone cannot say it: the benchmark raises it itself."""

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self.before = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
        self._t0 = time.perf_counter()
        self._stat0 = _proc_stat_busy()
        self._own0 = _own_cpu_s()

    def summary(self) -> dict[str, Any]:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        out: dict[str, Any] = {
            "cores": self.cores,
            "loadavg_before": list(self.before),
            "loadavg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "wall_s": wall,
        }
        stat1 = _proc_stat_busy()
        if self._stat0 is not None and stat1 is not None:
            other = (stat1[0] - self._stat0[0]) - (_own_cpu_s() - self._own0)
            out["other_load_cores"] = max(0.0, other / wall)
        return out


def load_flags(load: dict[str, Any]) -> list[str]:
    """Flags for a machine that was not the benchmark's alone."""
    flags = []
    cores = load.get("cores") or 1
    before = (load.get("loadavg_before") or [0.0])[0]
    if before > cores:
        flags.append(
            f"BUSY MACHINE: 1-minute load average {before:.2f} before the run, above the {cores} cores: "
            "rerun on an idle machine"
        )
    other = load.get("other_load_cores")
    if other is not None and other > MAX_OTHER_LOAD:
        flags.append(
            f"LOAD CHANGED: other processes used {other:.2f} cores on average during the run "
            f"(> {MAX_OTHER_LOAD:g}): rerun on an idle machine"
        )
    return flags


def window_flags(what: str, timed_s: float, iters: int) -> list[str]:
    """Flags for a timed window too short to trust."""
    flags = []
    if timed_s < MIN_WINDOW_S:
        flags.append(f"SHORT WINDOW: {what} timed for {timed_s:.2f} s (< {MIN_WINDOW_S:g} s): use more --iters")
    if iters < MIN_ITERS:
        flags.append(f"FEW ITERATIONS: {what} timed over {iters} iterations (< {MIN_ITERS}): use more --iters")
    return flags


def spread_flag(what: str, stats: dict[str, float], threshold: float = MAX_SPREAD) -> list[str]:
    """A flag for a ratio whose rounds disagree by more than `threshold`."""
    if stats["rounds"] < 2 or stats["ratio_spread"] <= threshold:
        return []
    return [
        f"UNSTABLE: {what} {stats['ratio']:.3g} varies {stats['ratio_min']:.3g}-{stats['ratio_max']:.3g} over "
        f"{stats['rounds']} rounds ({100 * stats['ratio_spread']:.0f}% > {100 * threshold:.0f}%): rerun on an idle "
        "machine or with more --iters"
    ]


def efficiency_flag(what: str, efficiency: float) -> list[str]:
    if efficiency <= MAX_EFFICIENCY:
        return []
    return [
        f"IMPOSSIBLE: {what} {efficiency:.2f} > {MAX_EFFICIENCY} (more than linear scaling): the machine's load "
        "changed between stages; rerun on an idle machine"
    ]
