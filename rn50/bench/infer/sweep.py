"""`rn50 bench infer`: an img/s and latency sweep over batch sizes, backends and precisions.

Every (backend, precision) series is built once (compile/export/engine build timed on its own), then each batch
size gets a first call (timed apart: compile at a new shape, graph capture), `warmup` untimed iterations and a timed
loop (rn50.bench.timing). An eager fp32 series runs in the same process as the baseline for the speedup column.
An out-of-memory batch is recorded as "oom" and the sweep goes on; a combination that cannot run here is "skipped"
with the reason.

Every series is built first; then, batch size by batch size, all series are timed in `rounds` interleaved rounds (the
order rotated each round), and the speedup over eager fp32 is the median of the rounds' own ratios with their spread:
a load that comes and goes while one series runs lands in one round's ratio, not in the table. Results are rewritten
after every batch size; SIGINT/SIGTERM end the sweep with where its partial results are.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import torch

from rn50.bench.infer.config import InferConfig, images_dirs, load_source, method_lines, output_stem, plan_series
from rn50.bench.infer.report import infer_flags, write_infer_report
from rn50.bench.infer.series import agreement, build_series, reference_top1
from rn50.bench.progress import ProgressBar
from rn50.bench.report import config_dict
from rn50.bench.runtimes import Options, Runtime, is_oom
from rn50.bench.stop import Interrupted, StopSignals
from rn50.bench.timing import (
    LoadWatch,
    LoopResult,
    cuda_settings,
    ratio_stats,
    round_order,
    split_rounds,
    summarize,
    timed_loop,
)
from rn50.errors import first_line
from rn50.export.formats import is_artifact
from rn50.export.runner import math_mode, math_of
from rn50.io import make_folder

log = logging.getLogger("rn50.bench.infer")


def run_infer(cfg: InferConfig) -> dict[str, Any]:
    """Run the sweep; write Markdown/CSV/JSON/PNG under cfg.out; return the result dict (with "paths")."""
    cfg.validate()
    with cuda_settings(cfg.device):
        return _run_infer(cfg)


def _run_infer(cfg: InferConfig) -> dict[str, Any]:
    from rn50.env import capture_env
    from rn50.memory import check_fits

    make_folder(cfg.out, f"--out {cfg.out}")
    # On a GPU a batch past its memory is tried and recorded as oom while the sweep goes on; on the CPU it could
    # swap the machine to a halt, so there the largest batch must fit.
    cuda = cfg.device.startswith("cuda")
    check_fits(min(cfg.batches) if cuda else max(cfg.batches), cfg.image_size, cfg.device, "infer")
    env = capture_env()  # before any work: clocks at start
    env["loadavg"] = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="rn50-bench-") as tmp:
        workdir = Path(tmp)
        if cfg.keep_artifacts is not None:
            workdir = Path(cfg.keep_artifacts)
            workdir.mkdir(parents=True, exist_ok=True)
        sweep = Sweep(cfg, workdir, env)
        with (
            StopSignals("bench infer") as stop,
            ProgressBar("bench infer", sweep.units, cfg.progress, setup=True) as bar,
        ):
            try:
                sweep.build_all(bar, stop)
                bar.mark()  # the sweep's pace, not the builds' (compile and export times vary by minutes)
                sweep.time_all(bar, stop)
                sweep.agree_all(bar, stop)
            except (Interrupted, KeyboardInterrupt) as e:
                stopped = e if isinstance(e, Interrupted) else stop.interruption(signal.SIGINT)
                raise stopped.adding(sweep.keep_partial(stop)) from None
        sweep.write()
        return sweep.result


class Sweep:
    """One bench infer run: every series built, then timed batch size by batch size, then checked for agreement;
    `result` holds what finished, and is written after every batch size."""

    def __init__(self, cfg: InferConfig, workdir: Path, env: dict[str, Any]) -> None:
        self.cfg = cfg
        model, weights = load_source(cfg)
        self.model = model
        self.artifact = Path(cfg.source) if cfg.source is not None and is_artifact(Path(cfg.source)) else None
        self.plan = plan_series(cfg, self.artifact)
        eval_dir, calib_dir = images_dirs(cfg, workdir)
        as_given = ("device", "image_size", "channels_last", "cuda_graphs", "include_h2d", "compile_dynamic", "verify")
        self.opts = Options(
            **{k: getattr(cfg, k) for k in (*as_given, "threads")},
            max_batch=max(cfg.batches),
            workdir=workdir,
            calib_dir=calib_dir,
            images_dir=eval_dir,
            num_classes=model.fc.out_features,
        )
        use_reference = eval_dir is not None and self.artifact is None
        self.reference = reference_top1(model, eval_dir, cfg, self.opts) if use_reference else None
        self.result: dict[str, Any] = {
            "kind": "rn50-bench-infer",
            "config": config_dict(cfg),
            "weights": weights,
            "agreement_images": None if self.reference is None else {"dir": str(eval_dir), "n": len(self.reference[1])},
            "calibration_images": str(calib_dir) if calib_dir and "int8" in cfg.precisions else None,
            "method": method_lines(cfg),
            "env": env,
            "series": [],
            "rows": [],
            "flags": [],
            "finished_batches": [],
        }
        self.stem = Path(cfg.out) / output_stem(cfg, [b for b, _ in self.plan])
        self.watch = LoadWatch()
        self.runtimes: list[tuple[dict[str, Any], Runtime]] = []
        self.timed: list[dict[str, Any]] = []
        self.unbuilt: list[dict[str, Any]] = []  # a series that did not build: one row, after the timed ones
        # The whole command in units for the time-left estimate: one per series build, one per agreement check,
        # and the batch sizes together as many units as there are of them, each weighted by its share of the work
        # (with --iters, its images; with --min-time, the same time each).
        weight = {b: (b if cfg.iters is not None else 1) for b in cfg.batches}
        self.batch_units = {b: w * len(cfg.batches) / sum(weight.values()) for b, w in weight.items()}
        self.units = len(self.plan) + len(cfg.batches) + (len(self.plan) if self.reference is not None else 0)

    def build_all(self, bar: ProgressBar, stop: StopSignals) -> None:
        for backend, precision in self.plan:
            bar.update(f"{backend} {precision}: building")
            series, rt = build_series(backend, precision, self.model, self.opts, self.cfg, self.artifact)
            self.result["series"].append(series)
            if rt is None:
                self.unbuilt.append({**series, "batch": None})
                self.result["rows"] = self.timed + self.unbuilt
            else:
                self.runtimes.append((series, rt))
            stop.check()  # an exporter may have caught the signal's Interrupted as a failure of its own
            bar.update(advance=1)

    def time_all(self, bar: ProgressBar, stop: StopSignals) -> None:
        for batch in self.cfg.batches:
            bar.update(f"batch {batch}: {len(self.runtimes)} series in {self.cfg.rounds} interleaved rounds")
            rows = _time_batch(self.runtimes, batch, self.cfg, self.opts)
            stop.check()  # not a batch size that finished, should a runtime have caught the signal
            self.timed.extend(rows)
            self.result["rows"] = self.timed + self.unbuilt
            self.result["finished_batches"].append(batch)
            with stop.held():  # a signal while the tables are written waits for them
                self.write()
            bar.update(advance=self.batch_units[batch])

    def agree_all(self, bar: ProgressBar, stop: StopSignals) -> None:
        if self.reference is None:
            return
        for series, rt in self.runtimes:
            bar.update(f"{series['backend']} {series['precision']}: top-1 agreement")
            agreement(series, rt, self.reference, self.cfg, self.opts, self.result["rows"])
            stop.check()
            bar.update(advance=1)

    def write(self) -> None:
        self.result["flags"] = infer_flags(self.result, self.watch.summary())
        self.result["paths"] = write_infer_report(self.result, self.stem)

    def keep_partial(self, stop: StopSignals) -> str:
        """After a stop: the tables of the finished batch sizes, and where they are."""
        done = self.result["finished_batches"]
        if not done:
            return "no batch size had finished: nothing to write"
        with stop.held():
            self.write()
        batches = ", ".join(map(str, self.cfg.batches))
        return f"partial results (batch {', '.join(map(str, done))} of {batches}) in {self.result['paths']['md']}"


def failures(result: dict[str, Any]) -> str | None:
    """One line naming what was asked for and not measured (a series that failed to build, a batch that raised),
    or None. Skipped series (not possible here, e.g. TensorRT without a GPU) and out-of-memory batches are results."""
    failed = [
        f"{s['backend']} {s['precision']}: {s.get('reason')}"
        for s in result["series"]
        if s.get("status") in ("error", "oom")
    ]
    failed += [
        f"{r['backend']} {r['precision']} batch {r['batch']}: {r.get('reason')}"
        for r in result["rows"]
        if r.get("batch") is not None and r.get("status") == "error"
    ]
    if not failed:
        return None
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"not measured: {failed[0]}{more}; the tables hold the rest"


def _time_batch(
    runtimes: list[tuple[dict[str, Any], Runtime]], batch: int, cfg: InferConfig, opts: Options
) -> list[dict[str, Any]]:
    """One row per series at `batch`: every series gets its first call and warmup, then all are timed in
    interleaved rounds (the order rotated each round); the speedup is the median of per-round ratios to eager fp32
    in the same round."""
    rows: list[dict[str, Any]] = []
    active: list[tuple[dict[str, Any], Any, dict[str, Any]]] = []  # (row, step, series)
    for series, rt in runtimes:
        precision = series["precision"]
        row: dict[str, Any] = {"backend": series["backend"], "precision": precision, "math": math_of(precision)}
        row["layout"] = rt.layout
        row.update(batch=batch, provider=rt.info.get("provider"))
        rows.append(row)
        if rt.info.get("max_batch") and batch > rt.info["max_batch"]:
            row.update(status="skipped", reason=f"the artifact takes batches up to {rt.info['max_batch']}")
            continue
        try:
            with math_mode(precision, opts.cuda), torch.no_grad():
                step, first_s = rt.step_for(batch)
                for _ in range(cfg.warmup):
                    step()
            row.update(first_call_s=round(first_s, 4))
            active.append((row, step, series))
        except Interrupted:
            raise
        except Exception as e:
            _failed(row, e, f"{series['backend']} {precision}", opts)
    rounds = split_rounds(cfg.iters, cfg.rounds) if cfg.iters is not None else [0] * cfg.rounds
    per_round_time = cfg.min_time / cfg.rounds if cfg.min_time is not None else None
    loops: dict[int, list[LoopResult]] = {id(row): [] for row, _, _ in active}
    for r, n in enumerate(rounds):
        order = round_order(active, r)
        for row, step, series in order:
            if row.get("status") in ("error", "oom"):
                continue
            try:
                # the series' math mode and no_grad around its whole window, not entered again on every call
                with math_mode(row["precision"], opts.cuda), torch.no_grad():
                    loop = timed_loop(
                        step,
                        warmup=0,
                        iters=n if per_round_time is None else None,
                        min_time=per_round_time,
                        cuda=opts.cuda,
                        min_iters=1,
                    )
                loops[id(row)].append(loop)
            except Interrupted:
                raise
            except Exception as e:
                _failed(row, e, f"{series['backend']} {series['precision']}", opts)
    base = next((loops[id(row)] for row, _, s in active if s["backend"] == "eager" and s["precision"] == "fp32"), None)
    for row, _, _ in active:
        if row.get("status") in ("error", "oom"):
            continue
        mine = loops[id(row)]
        samples = [s for loop in mine for s in loop.samples_s]
        row.update(status="ok", **summarize(samples, batch, sum(loop.total_s for loop in mine)))
        row["round_img_s"] = [loop.img_s(batch) for loop in mine]
        row["round_iters"] = [len(loop.samples_s) for loop in mine]
        if base is not None and len(base) == len(mine):
            ratios = [rate / base_loop.img_s(batch) for rate, base_loop in zip(row["round_img_s"], base, strict=True)]
            stats = ratio_stats(ratios)
            row.update(speedup=stats["ratio"], speedup_min=stats["ratio_min"], speedup_max=stats["ratio_max"])
            row.update(speedup_spread=stats["ratio_spread"], rounds=stats["rounds"])
    return rows


def _failed(row: dict[str, Any], e: BaseException, label: str, opts: Options) -> None:
    if not is_oom(e):
        row.update(status="error", reason=f"{type(e).__name__}: {first_line(e, 300)}")
        log.debug("%s batch %d failed: %s", label, row["batch"], row["reason"])  # printed with the table
    else:
        row.update(status="oom", reason=first_line(e, 300))
        log.warning("%s batch %d: out of memory", label, row["batch"])
    if opts.cuda:
        torch.cuda.empty_cache()
