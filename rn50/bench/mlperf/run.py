"""The `bench mlperf` driver: build the system, calibrate it, run LoadGen (once, or a bounded search for the Server
peak), score accuracy, write the tables. LoadGen's own logs go untouched into a folder per run under `out`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from rn50.bench.mlperf import report
from rn50.bench.mlperf.library import SampleLibrary, eval_folder
from rn50.bench.mlperf.loadgen import require_loadgen, run_test
from rn50.bench.mlperf.logs import accuracy_top1
from rn50.bench.mlperf.settings import (
    ACCURACY_TARGET,
    MlperfOptions,
    UserConf,
    deviations,
    loadgen_settings,
    official_settings,
    settings_record,
)
from rn50.bench.mlperf.sut import SystemUnderTest
from rn50.bench.mlperf.system import (
    MULTISTREAM_QUERY,
    SERVER_MARGIN,
    Calibration,
    Plan,
    build_runtime,
    calibrate,
    calibration_sizes,
    forward_fn,
    plan,
)
from rn50.bench.progress import ProgressBar
from rn50.bench.stop import Interrupted, StopSignals
from rn50.errors import UserError
from rn50.io import atomic_write_text, make_folder

PEAK_PRECISION = 0.02  # --find-peak stops once the VALID and INVALID target QPS are this close


class InvalidResult(UserError):
    """LoadGen judged the run INVALID (or accuracy missed its target): results written, exit 1 for scripts."""

    exit_code = 1


class Session:
    """What every LoadGen run of one command shares."""

    def __init__(self, lg: Any, opts: MlperfOptions, sut: SystemUnderTest, stop: StopSignals, bar: ProgressBar):
        self.lg, self.opts, self.sut, self.stop, self.bar = lg, opts, sut, stop, bar
        self.official = official_settings(lg, opts.scenario)
        self.runs: list[dict[str, Any]] = []

    def run(self, conf: UserConf, folder: Path) -> dict[str, Any]:
        opts, sut = self.opts, self.sut
        settings = loadgen_settings(self.lg, opts, conf)
        if opts.scenario == "server":
            sut.hold_limit = int(settings.server_max_async_queries)
            sut.hold_s = 2 * sut.hold_limit / float(settings.server_target_qps) + 1.0
        done = len(self.runs)
        what = f"{opts.scenario} {opts.mode}"
        self.bar.update(f"{what}: LoadGen run {done + 1}", done=done)

        def tick(fraction: float) -> None:
            self.bar.update(f"{what}: {sut.completed:,} samples answered", done=done + fraction)

        rec = run_test(self.lg, sut, settings, folder, self.stop, tick, opts.scenario, opts.mode)
        rec["settings"] = settings_record(settings)
        rec["deviations"] = deviations(settings, self.official, opts.scenario)
        rec["compliant"] = not rec["deviations"]
        if opts.mode == "accuracy" and not rec.get("stopped"):
            atomic_write_text(folder / "val_map.txt", sut.library.val_map())
            rec["accuracy"] = accuracy_top1(folder, sut.library.labels)
        self.runs.append(rec)
        return rec


def find_peak(session: Session, p: Plan, base: Path) -> float | None:
    """Bounded search for the highest VALID Server target QPS: from half the calibrated capacity, doubling (up to
    1.25x capacity) or halving until VALID and INVALID bracket it, then bisecting; at most --peak-tries runs."""
    cap = 1.25 * p.capacity
    qps, valid, invalid = 0.5 * p.capacity, None, None
    for n in range(1, session.opts.peak_tries + 1):
        rec = session.run(UserConf(server_target_qps=qps), base / f"try{n}-qps{qps:.5g}")
        if rec.get("stopped"):
            break
        if rec["result"] == "VALID":
            valid = qps
        else:
            invalid = qps
        if valid is not None and invalid is not None:
            if (invalid - valid) / invalid <= PEAK_PRECISION:
                break
            qps = (valid + invalid) / 2
        elif invalid is None:
            if qps >= cap:
                break  # VALID at the capacity bound: the batcher keeps up with everything it can compute
            qps = min(2 * qps, cap)
        else:
            qps = qps / 2
    return valid


def fp32_reference(
    opts: MlperfOptions, source: dict[str, Any], library: SampleLibrary, top1: float
) -> dict[str, Any] | None:
    """The fp32 top-1 the 99% target is taken from: --fp32-top1, this run when it is eager fp32 from a
    checkpoint, or the checkpoint (given, or the source the artifact's sidecar names) evaluated here in eager fp32
    on the same images."""
    if opts.fp32_top1 is not None:
        return {"top1": opts.fp32_top1, "from": "--fp32-top1"}
    if "checkpoint" in source and source["backend"] == "eager" and source["precision"] == "fp32":
        return {"top1": top1, "from": "this run (eager fp32)"}
    src = source.get("source_checkpoint") or source.get("checkpoint")
    if not src or not Path(src).is_file():
        return None
    import torch

    from rn50.weights import load_model

    model = load_model(src).to(opts.device).eval()
    library.prepare = lambda x: x.to(opts.device)  # the run is over, nothing loaded: the samples as fp32 takes them
    good = 0
    for start in range(0, len(library), 64):
        chunk = list(range(start, min(start + 64, len(library))))
        library.load(chunk)
        with torch.no_grad():
            pred = model(library.batch(chunk)).argmax(1).cpu().tolist()
        library.unload(chunk)
        good += sum(int(p == library.labels[i]) for p, i in zip(pred, chunk, strict=True))
    return {"top1": 100.0 * good / len(library), "from": f"checkpoint {src} (eager fp32, same images)"}


def _check_counts(opts: MlperfOptions, library: SampleLibrary, official: Any) -> None:
    count = opts.sample_count or int(official.performance_sample_count_override)
    if opts.mode == "performance" and len(library) < count:
        given = "--sample-count" if opts.sample_count else "the MLPerf performance sample count"
        raise UserError(
            f"{library.folder} has {len(library)} images, fewer than {given} {count}: give a folder with at least "
            f"{count} images, or --sample-count {len(library)} (not compliant)"
        )


def _setup(
    lg: Any, opts: MlperfOptions, workdir: Path, stop: StopSignals, bar: ProgressBar
) -> tuple[Session, dict[str, Any], Plan, Any]:
    """The session over the calibrated SUT, the source summary, the plan and the calibration."""
    folder = eval_folder(opts.data)
    rt, source = build_runtime(opts, folder, workdir)
    device, dtype = rt.opts.device, rt.input_dtype
    library = SampleLibrary(folder, source["image_size"], lambda x: x.to(device=device, dtype=dtype), opts.threads)
    sut = SystemUnderTest(
        lg, forward_fn(rt), library, opts.scenario, source["batch"], rt.input_channels_last, opts.concurrency
    )
    session = Session(lg, opts, sut, stop, bar)
    _check_counts(opts, library, session.official)
    batch = min(MULTISTREAM_QUERY, source["batch"]) if opts.scenario == "multistream" else source["batch"]
    # An accuracy run issues every sample once whatever the expected speed; only Server's schedule needs its QPS.
    timed = opts.mode == "performance" or opts.scenario == "server"
    bound_s = (opts.target_latency_ms or session.official.server_target_latency_ns / 1e6) / 1e3
    # Server: no batch size past the first whose median call cannot fit the bound (a larger one cannot either)
    limit = SERVER_MARGIN * bound_s / 2 if opts.scenario == "server" else None
    cal = calibrate(sut, calibration_sizes(opts.scenario, batch), limit_s=limit) if timed else Calibration({})
    p = plan(opts, batch, cal, bound_s)
    sut.batch, sut.timeout_s = p.batch, p.timeout_s
    return session, source, p, cal


def run_mlperf(opts: MlperfOptions) -> dict[str, Any]:
    """Run the scenario; write LoadGen's logs and rn50's tables under opts.out; return the result dict."""
    opts.validate()
    lg = require_loadgen()
    out = make_folder(opts.out, f"--out {opts.out}")
    from rn50.env import capture_env, package_versions

    env = capture_env()
    env["loadavg"] = list(os.getloadavg())
    env["packages"].update(package_versions(("mlcommons-loadgen",)))
    base = out / f"{opts.scenario}-{opts.mode}"
    result: dict[str, Any] = {"kind": "rn50-bench-mlperf", "scenario": opts.scenario, "mode": opts.mode}
    result.update(data=str(opts.data), env=env, runs=[])
    tries = opts.peak_tries if opts.find_peak else 1
    with (
        tempfile.TemporaryDirectory(prefix="rn50-mlperf-") as tmp,
        StopSignals("bench mlperf") as stop,
        ProgressBar("bench mlperf", tries, opts.progress, setup=True) as bar,
    ):
        try:
            bar.update("building and calibrating the system under test")
            session, source, p, cal = _setup(lg, opts, Path(tmp), stop, bar)
            result.update(source=source, images=len(session.sut.library), plan=report.plan_record(p, cal))
            bar.mark()
            result["runs"] = session.runs
            if opts.find_peak:
                result["peak_qps"] = find_peak(session, p, base)
            else:
                session.run(p.conf, base)
            stopped = next((r["stopped"] for r in session.runs if r.get("stopped")), None)
            if stopped is not None:
                raise stopped
        except (Interrupted, KeyboardInterrupt) as e:
            stopped = e if isinstance(e, Interrupted) else stop.interruption()
            if not result["runs"]:
                raise stopped.adding("no LoadGen run had started: nothing to write") from None
            with stop.held():
                report.finish(result, opts, None)
                paths = report.write(result, out)
            raise stopped.adding(f"LoadGen's logs are in {base}, the table of what ran in {paths['md']}") from None
    if opts.mode == "accuracy":
        acc = result["runs"][-1]["accuracy"]
        ref = fp32_reference(opts, result["source"], session.sut.library, acc["top1"])
        if ref is not None:
            ref["target_top1"] = ACCURACY_TARGET * ref["top1"]
            ref["met"] = acc["top1"] >= ref["target_top1"]
        acc["fp32_reference"] = ref
    report.finish(result, opts, result.get("peak_qps"))
    result["files"] = {k: str(v) for k, v in report.write(result, out).items()}
    result["files"]["loadgen_logs"] = str(base)
    return result
