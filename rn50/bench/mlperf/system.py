"""The system under test before LoadGen sees it: the runtime that runs the source, and its calibration.

A checkpoint runs on any `bench infer` runtime (eager and compile in PyTorch; the artifact backends export it first,
with the export's parity check); an artifact runs on its own format's runtime (rn50.export.formats), loaded by
rn50.export's loader. The calibration times the SUT's own inference path (stack loaded samples, forward, top-1 to
the host) at the batch sizes the scenario uses, after one untimed call that compiles or warms each shape; from it
come the values a user.conf would hold (Offline expected QPS, the expected latencies LoadGen sizes its schedule by,
a Server target QPS), the Server batch and batcher timeout, and the refusal of a latency bound no QPS can meet.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rn50.bench.mlperf.settings import MlperfOptions, UserConf
from rn50.bench.mlperf.sut import SystemUnderTest
from rn50.bench.runtimes import Options, Runtime, Skip, make_runtime, math_mode
from rn50.bench.stop import Background
from rn50.errors import UserError, first_line
from rn50.export.formats import artifact_format, get_format, is_artifact
from rn50.export.sidecar import read_sidecar, sidecar_image_size, sidecar_max_batch

THREAD_SAFE = ("eager", "onnxruntime", "torchscript")  # runtimes whose forward may run on two threads at once
SIDECAR_KEYS = ("format", "precision", "source_checkpoint", "source_sha256", "num_classes", "rn50_version")
SERVER_MARGIN = 0.8  # of the latency bound, for the batcher's worst case; the rest absorbs jitter
MULTISTREAM_QUERY = 8  # samples per MultiStream query (MLPerf's rule); the SUT runs it in batches of up to --batch
# LoadGen sizes Offline's query and the SingleStream/MultiStream schedules from the expected speed, and a run that
# finishes them before its minimum duration is INVALID: expect this much faster than the fastest calibration call
# (a longer run, never a short one; CPU calls speed up for a while after the first ones).
HEADROOM = 1.5  # Offline: the query lasts HEADROOM x 1.1 x the minimum duration when the calibration holds
LATENCY_HEADROOM = 2.0  # SingleStream/MultiStream: more queries generated, the run no longer


def _source(opts: MlperfOptions) -> tuple[Any, str, dict[str, Any], int | None, int | None]:
    """(model or None, the runtime that runs it, source summary, image size, largest batch) of the source."""
    path = Path(opts.source)
    if is_artifact(path):
        sidecar = read_sidecar(path) or {}
        fmt = artifact_format(path, sidecar)
        if opts.backend and opts.backend.lower() not in fmt.names:
            raise UserError(f"{path} is a {fmt.name} artifact, run by {fmt.runtime}: drop --backend {opts.backend}")
        if opts.precision and sidecar.get("precision") and opts.precision != sidecar["precision"]:
            raise UserError(f"{path} was exported in {sidecar['precision']}: drop --precision {opts.precision}")
        summary = {"artifact": str(path), **{k: sidecar.get(k) for k in SIDECAR_KEYS if sidecar.get(k) is not None}}
        parity = sidecar.get("parity") or {}
        summary.update({f"parity_{k}": v for k, v in parity.items() if isinstance(v, int | float) and k != "seconds"})
        return None, fmt.runtime, summary, sidecar_image_size(sidecar), sidecar_max_batch(sidecar)
    from rn50.weights import meta_from, model_from, read_checkpoint

    obj = read_checkpoint(path)
    model = model_from(obj, path)
    recipe = meta_from(obj).get("recipe") or {}
    summary = {"checkpoint": str(path), "recipe": recipe.get("name"), "num_classes": model.fc.out_features}
    return model, opts.backend or "eager", summary, recipe.get("image_size"), None


def build_runtime(opts: MlperfOptions, folder: Path, workdir: Path) -> tuple[Runtime, dict[str, Any]]:
    """The built runtime (exported, compiled or loaded) and a summary of the source (the artifact's sidecar)."""
    model, backend, summary, size, max_batch = _source(opts)
    if opts.image_size and size and opts.image_size != size and model is None:
        raise UserError(f"{opts.source} takes {size} px images; drop --image-size or pass {size}")
    image_size = opts.image_size or size or 224
    cuda = opts.device.startswith("cuda")
    batch = opts.batch or (256 if cuda else 32)
    if max_batch:
        batch = min(batch, max_batch)
    rt_opts = Options(
        device=opts.device,
        image_size=image_size,
        max_batch=batch,
        workdir=workdir,
        images_dir=folder,
        num_classes=summary.get("num_classes") or 1000,
    )
    if model is None:
        rt = make_runtime(backend, None, "fp32", rt_opts, artifact=Path(opts.source))
    else:
        precision = opts.precision or ("fp16" if cuda else "fp32")
        rt = make_runtime(backend, model, precision, rt_opts)
    try:
        rt.check()
        with math_mode(rt.precision, cuda):
            rt.build()
    except Skip as e:
        raise UserError(f"{rt.name} {rt.precision} cannot run here: {e}") from None
    except UserError:
        raise
    except Exception as e:  # a damaged or foreign artifact: its loader's own error, as one line
        if model is not None:
            raise
        raise UserError(f"cannot load {opts.source}: {type(e).__name__}: {first_line(e, 300)}") from None
    if model is None:
        rt.precision = str(rt.info.get("precision") or summary.get("precision") or "fp32")
        rt.name = get_format(str(rt.info.get("format") or rt.name)).runtime
    if opts.concurrency > 1 and rt.name not in THREAD_SAFE:
        raise UserError(f"{rt.name} runs one call at a time here (not thread safe): drop --concurrency")
    summary.update(backend=rt.name, precision=rt.precision, image_size=image_size, batch=batch, device=opts.device)
    return rt, summary


def forward_fn(rt: Runtime):
    """The runtime's forward pass in its precision's math mode (fp32 means IEEE fp32 on CUDA)."""
    cuda = rt.opts.cuda

    def forward(x):
        with math_mode(rt.precision, cuda):
            return rt.forward(x)

    return forward


@dataclass
class Calibration:
    times: dict[int, list[float]]  # batch size -> seconds per call

    def fastest(self, batch: int) -> float:
        return min(self.times[batch])

    def median(self, batch: int) -> float:
        return statistics.median(self.times[batch])


def calibrate(
    sut: SystemUnderTest,
    sizes: list[int],
    min_s: float = 1.0,
    max_calls: int = 100,
    warmup: int = 3,
    limit_s: float | None = None,
) -> Calibration:
    """Time the SUT's inference at each size: `warmup` untimed calls (the first compiles or builds the shape), then
    at least 3 calls and `min_s` seconds; no larger size once a size's median call passes `limit_s`. On a worker
    thread, as the SUT runs (a CPU's OpenMP team can time very differently from the main thread on a loaded machine),
    waited for in short waits, so a signal stops it between calls."""
    library = sut.library
    indices = [i % len(library) for i in range(max(sizes))]
    times: dict[int, list[float]] = {}
    quit_ = threading.Event()

    def work() -> None:
        for b in sizes:
            batch = indices[:b]
            for _ in range(warmup):
                if quit_.is_set():  # stopped: no further size is warmed up (a new shape may compile or build)
                    return
                sut.infer(batch)
            calls = times.setdefault(b, [])
            end = time.perf_counter() + min_s
            while not quit_.is_set() and (len(calls) < 3 or time.perf_counter() < end and len(calls) < max_calls):
                t0 = time.perf_counter()
                sut.infer(batch)
                calls.append(time.perf_counter() - t0)
            if quit_.is_set():
                return
            if limit_s is not None and statistics.median(calls) > limit_s:
                return

    library.load(sorted(set(indices)))
    worker = Background(work, "calibrate").start()
    try:
        worker.wait()
    finally:
        quit_.set()
        worker.done.wait()
        library.unload(sorted(set(indices)))
    if worker.error is not None:
        raise worker.error
    return Calibration(times)


def calibration_sizes(scenario: str, batch: int) -> list[int]:
    if scenario in ("offline", "multistream"):  # multistream: the batch is at most one query's samples
        return [batch]
    if scenario == "singlestream":
        return [1]
    return [2**k for k in range(int(math.log2(batch)) + 1)]  # server: every power of two up to the batch


@dataclass
class Plan:
    """What the scenario runs at: the SUT's batch, the Server batcher timeout and the user.conf values."""

    batch: int
    timeout_s: float
    conf: UserConf
    capacity: float  # samples/s at the batch, from the fastest calibration call
    note: str = ""


def plan(opts: MlperfOptions, batch: int, cal: Calibration, bound_s: float) -> Plan:
    if not cal.times:  # an accuracy run outside Server: no calibration, LoadGen's defaults size nothing that matters
        return Plan(
            1 if opts.scenario == "singlestream" else batch, 0.0, UserConf(), 0.0, "accuracy run: not calibrated"
        )
    if opts.scenario == "offline":
        qps = opts.target_qps or HEADROOM * batch / cal.fastest(batch)
        return Plan(batch, 0.0, UserConf(offline_expected_qps=qps), batch / cal.fastest(batch))
    if opts.scenario in ("singlestream", "multistream"):
        b = 1 if opts.scenario == "singlestream" else batch
        calls = math.ceil((MULTISTREAM_QUERY if opts.scenario == "multistream" else 1) / b)  # the SUT's calls a query
        latency = calls * cal.fastest(b) / LATENCY_HEADROOM
        return Plan(b, 0.0, UserConf(expected_latency_s=latency), b / cal.fastest(b))
    if cal.fastest(1) > bound_s and opts.mode == "performance":  # an accuracy run is not judged by latency
        raise UserError(
            f"the Server latency bound cannot be met: the fastest of {len(cal.times[1])} batch-1 calls took "
            f"{cal.fastest(1) * 1e3:.1f} ms, over the {bound_s * 1e3:g} ms bound, so no target QPS can be VALID; "
            "use a faster runtime or device (or --target-latency-ms, not compliant)"
        )
    fits = [b for b in sorted(cal.times) if 2 * cal.median(b) <= SERVER_MARGIN * bound_s] or [1]
    b = fits[-1]
    timeout = opts.batch_timeout_ms / 1e3 if opts.batch_timeout_ms is not None else None
    if timeout is None:
        timeout = max(0.0, SERVER_MARGIN * bound_s - 2 * cal.median(b)) if b > 1 else 0.0
    capacity = b / cal.fastest(b)
    qps = opts.target_qps or 0.5 * capacity
    note = "" if opts.target_qps or opts.find_peak else "target QPS: half the calibrated capacity (--target-qps)"
    return Plan(b, timeout, UserConf(server_target_qps=qps), capacity, note)
