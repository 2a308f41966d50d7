"""Timing primitives: batch-spec parsing, a timed loop (CUDA events on GPU, perf_counter on CPU), percentiles.

Method (the one hardware people trust): warmup iterations run first and are never timed; every timed iteration is a
sample; throughput is images over the total timed seconds (never a mean of per-iteration rates); latency mean/min/
p50/p90/p95/p99 come from the same samples.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rn50.errors import UserError

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
        if lo < 1 or hi < lo:
            raise UserError(f"bad --batch {text!r}: need 1 <= A <= B in A..B; {hint}")
        batches = [2**k for k in range(0, hi.bit_length() + 1) if lo <= 2**k <= hi]
        if not batches:
            raise UserError(f"bad --batch {text!r}: no power of two lies between {lo} and {hi}; {hint}")
        return batches
    if _LIST.match(text):
        batches = sorted({int(v) for v in text.split(",")})
        if batches[0] < 1:
            raise UserError(f"bad --batch {text!r}: batch sizes must be >= 1; {hint}")
        return batches
    raise UserError(f"bad --batch {text!r}: {hint}")


def parse_list(spec: str, allowed: Sequence[str], what: str) -> list[str]:
    """A comma list of names from `allowed`, order kept, duplicates dropped; anything else is one UserError."""
    names = [s.strip().lower() for s in str(spec).split(",")]
    if not names or any(not n for n in names):
        raise UserError(f"bad --{what} {spec!r}: give a comma list of {', '.join(allowed)}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise UserError(f"unknown --{what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of already sorted values."""
    if not sorted_values:
        raise ValueError("no samples")
    pos = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples_s: Sequence[float], batch: int, total_s: float | None = None) -> dict[str, Any]:
    """Throughput and latency statistics (ms) of one timed loop. `total_s` defaults to the sum of the samples."""
    if not samples_s:
        raise ValueError("no samples")
    ordered = sorted(samples_s)
    total = float(total_s) if total_s is not None else float(sum(samples_s))
    out: dict[str, Any] = {
        "iters": len(samples_s),
        "images": batch * len(samples_s),
        "timed_s": total,
        "img_s": batch * len(samples_s) / total,
        "mean_ms": 1e3 * sum(samples_s) / len(samples_s),
        "min_ms": 1e3 * ordered[0],
        "max_ms": 1e3 * ordered[-1],
    }
    for q in PERCENTILES:
        out[f"p{q}_ms"] = 1e3 * percentile(ordered, q)
    return out


@dataclass
class LoopResult:
    samples_s: list[float]  # per-iteration latency, seconds
    total_s: float  # first iteration start to last iteration end


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

        torch.cuda.synchronize()
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
        torch.cuda.synchronize()
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
