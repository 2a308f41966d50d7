"""`rn50 bench train`: the sweep over 1, 2, 4 ... N workers in interleaved rounds, one torchrun launch each."""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rn50.bench.progress import ProgressBar
from rn50.bench.report import config_dict
from rn50.bench.scaling.config import Precision, TrainBenchConfig, TrainBenchReport, resolve_precisions, worker_counts
from rn50.bench.scaling.derive import derive_rows, row_flags
from rn50.bench.scaling.report import write_outputs
from rn50.bench.stop import Interrupted, StopSignals
from rn50.errors import UserError
from rn50.io import atomic_write_json
from rn50.launch import Launch, launch

log = logging.getLogger("rn50.bench")


def _run_one(
    cfg: TrainBenchConfig, precisions: list[Precision], nproc: int, log_root: Path, round_: int = 0
) -> dict[str, Any] | None:
    """One torchrun launch with `nproc` ranks on this node; rank 0's figures (None on other nodes)."""
    total = nproc * cfg.nnodes
    tag = f"{total}w-round{round_ + 1}"
    run_dir = (log_root / tag).resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    spec_path = run_dir / "spec.json"
    spec = {
        "run_dir": str(run_dir),
        **{k: getattr(cfg, k) for k in ("device", "batch", "warmup", "iters")},
        "precisions": [asdict(p) for p in precisions],
        "data": str(Path(cfg.data).resolve()) if cfg.data else None,
        **{k: getattr(cfg, k) for k in ("backend", "recipe", "image_size", "num_classes", "workers", "compile")},
    }
    atomic_write_json(spec_path, spec)
    env = dict(os.environ)
    if cfg.device == "cpu" and "OMP_NUM_THREADS" not in env:
        # Weak scaling holds each worker's resources fixed: every launch gives a rank the cores the largest launch
        # gives it (torchrun would pin every rank to one thread). Giving the 1-worker launch all cores instead made
        # it compare 2 threads against 2 x 1: with another process on a 2-core machine, the 2-thread OpenMP barriers
        # waited on a preempted thread (0.2 -> 6 s per step) and 2 workers showed 6.9x linear scaling.
        most = max(worker_counts(cfg.gpus)) if cfg.sweep else cfg.gpus
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // most))
    # One launch per worker count reuses the endpoint; a distinct rendezvous id keeps a slow node from joining the
    # previous (finished) one. No elastic restarts in a benchmark: a failed rank ends the run.
    launch_spec = Launch(
        ["rn50.bench.scaling", "--worker", str(spec_path)],
        nproc=nproc,
        nnodes=cfg.nnodes,
        node_rank=cfg.node_rank,
        rdzv_endpoint=cfg.rdzv_endpoint,
        rdzv_id=f"rn50-bench-{tag}",
        rdzv_timeout=cfg.rdzv_timeout,
        env=env,
    )
    launcher_log = run_dir / "torchrun.log"
    log.info("%d worker(s): torchrun %s", total, " ".join(launch_spec.torchrun_args()))
    with open(launcher_log, "w") as out:
        result = launch(launch_spec, stdout=out, timeout=cfg.timeout)
    what = f"bench train with {total} worker(s)"
    if result.signal is not None and not result.ok:
        raise Interrupted(f"{what}: stopped by {signal.Signals(result.signal).name}; logs: {run_dir}", result.signal)
    if result.returncode == -1:
        raise UserError(
            f"{what} did not finish within {cfg.timeout:g} s (a hang, or raise --timeout); stopped it; logs: {run_dir}"
        )
    if not result.ok:
        cause = result.root_cause()
        logs = f"its log: {run_dir}/rank{cause['rank']}.log " if cause else ""
        try:
            result.raise_for_failure(what)
        except UserError as e:
            e.args = (f"{e}; {logs}(launcher log: {launcher_log})",)
            raise
    if cfg.nnodes > 1 and cfg.node_rank != 0:
        return None  # node 0 writes the table (every node holds the gathered figures in its logs)
    result_file = run_dir / "rank0.result.json"
    if not result_file.exists():
        raise UserError(f"bench train with {total} worker(s) finished but rank 0 wrote no result; logs: {run_dir}")
    result = json.loads(result_file.read_text())
    ranks = []
    for f in sorted(run_dir.glob("rank*.result.json")):
        r = json.loads(f.read_text())
        ranks.append({"rank": r["rank"], **{p: v["seconds"] for p, v in r["precisions"].items()}})
    result["rank_seconds"] = ranks
    result["logs"] = str(run_dir)
    return result


def run_train_bench(cfg: TrainBenchConfig, progress: bool = False) -> TrainBenchReport:
    """Sweep 1, 2, 4 ... N workers per node through torchrun in interleaved rounds; rewrite JSON, CSV, Markdown and
    a PNG into cfg.out after every launch. `progress`: a bar on stderr, launches done of the whole sweep."""
    from rn50.bench.timing import LoadWatch, round_order
    from rn50.env import capture_env
    from rn50.memory import check_fits

    cfg = cfg.resolved()
    cfg.validate()
    precisions = resolve_precisions(cfg.precisions, cfg.device)
    check_fits(cfg.batch, cfg.image_size, cfg.device, "train", cfg.gpus if cfg.device == "cpu" else 1)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (Path(cfg.out) / "logs").mkdir(parents=True, exist_ok=True)
    log_root = Path(tempfile.mkdtemp(prefix=f"train-{stamp}-node{cfg.node_rank}-", dir=Path(cfg.out) / "logs"))
    report = TrainBenchReport(config=config_dict(cfg), precisions=precisions)
    report.config["logs"] = str(log_root)
    watch = LoadWatch()
    counts = worker_counts(cfg.gpus) if cfg.sweep else [cfg.gpus]
    plan = [(r, n) for r in range(cfg.rounds) for n in round_order(counts, r)]
    report.planned = len(plan)
    env = capture_env()
    with StopSignals("bench train") as stop, ProgressBar("bench train", len(plan), progress, count=True) as bar:
        try:
            for done, (round_, nproc) in enumerate(plan):
                what = f"round {round_ + 1}/{cfg.rounds}: {nproc * cfg.nnodes} worker(s)"
                bar.update(what)
                result = _run_one(cfg, precisions, nproc, log_root, round_)
                if result is not None:
                    for i, p in enumerate(precisions):
                        ran = result["precisions"][p.name]["precision"]
                        if ran != p.name:  # label what the trainer really ran, should it differ
                            precisions[i] = Precision(p.kind, ran, f"asked for {p.name}; the trainer ran it so")
                    with stop.held():  # the tables so far, never half written: an interrupted sweep keeps them
                        report.launches.append({"round": round_ + 1, "nproc": nproc, **result})
                        _finish(report, env, watch, cfg)
                bar.update(what, done=done + 1)
        except Interrupted as e:
            with stop.held():
                where = _finish(report, env, watch, cfg)
            done_text = f"{len(report.launches)} of {len(plan)} launches"
            more = f"partial results ({done_text}) in {where}" if where else "no launch had finished: nothing to write"
            raise e.adding(more) from None
    if not report.launches:
        log.info("node %d finished its ranks; node 0 writes the table", cfg.node_rank)
    return report


def _finish(report: TrainBenchReport, env: dict[str, Any], watch: Any, cfg: TrainBenchConfig) -> str | None:
    """Rows, flags and files from the launches so far; the Markdown path (None when nothing finished)."""
    from rn50.bench.timing import load_flags

    if not report.launches:
        return None
    derive_rows(report)
    load = watch.summary()
    report.env = {**env, "loadavg": load["loadavg_after"], "loadavg_before": load["loadavg_before"], "load": load}
    report.flags = row_flags(report) + load_flags(load)
    report.files = write_outputs(report, Path(cfg.out))
    return report.files.get("md")
