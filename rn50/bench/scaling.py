"""`rn50 bench train`: training img/s over 1, 2, 4 ... N workers, mixed vs full precision (weak scaling).

Each worker count is one launch of this module (`python -m rn50.bench.scaling --worker SPEC`) through rn50's one
launcher (`rn50.launch`, torchrun), the same that runs `rn50 train --gpus/--nnodes`; every rank runs the trainer's own
step (`rn50.train.step`) for `warmup` then `iters` iterations per precision. Img/s is the global images of the timed
iterations over their wall time, taken between two synchronise+barrier points; global rank 0 writes it. A crash (named
from torchelastic's error files), a hang (timeout) or a Ctrl-C ends with one message and no process left behind.

The worker counts run in `rounds` interleaved rounds (1, 2, 1, 2, ... with the order rotated each round), and every
ratio (weak scaling, efficiency, mixed speedup) is the median of the rounds' own ratios with their spread: a load
that changes between two launches lands in one round's ratio, not in the table. The tables are rewritten after every
launch, so an interrupted sweep keeps what it measured.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rn50.bench.progress import ProgressBar
from rn50.bench.stop import Interrupted, StopSignals
from rn50.errors import UserError
from rn50.io import atomic_write_json
from rn50.launch import Launch, launch
from rn50.recipes import DATA_BACKENDS

log = logging.getLogger("rn50.bench")

IMAGENET_TRAIN_IMAGES = 1_281_167
ESTIMATE_EPOCHS = 90
MIXED = ("fp16", "bf16")
FULL = ("tf32", "fp32")
PRECISION_WORDS = ("mixed", "full", *MIXED, *FULL)
# Test hook: "RANK:ITER[:kill|raise|hang]" makes that rank fail at that iteration, counted over all precisions.
FAIL_ENV = "RN50_BENCH_FAIL"


@dataclass(frozen=True)
class TrainBenchConfig:
    gpus: int = 8  # largest worker count per node; the sweep is 1, 2, 4 ... gpus
    device: str = "cuda"
    batch: int = 256  # per worker
    warmup: int = 20
    iters: int = 100
    precisions: tuple[str, ...] = ("mixed", "full")
    data: Path | None = None
    backend: str | None = None  # None: synthetic without --data, else dali-gpu on CUDA / pytorch on CPU
    recipe: str = "dgxa100-fp16-90"
    image_size: int = 224
    num_classes: int = 1000
    workers: int | None = None  # data-loading workers per rank (real data only)
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    rdzv_timeout: int = 300  # seconds a node waits for the others at the rendezvous
    out: Path = Path("runs/bench-train")
    timeout: float = 1800.0  # seconds per launch
    compile: bool = False  # torch.compile the model (compile time falls in the warmup)
    sweep: bool = True  # False: only `gpus` workers, no 1, 2, 4 ... sweep
    rounds: int = 3  # interleaved rounds of the worker counts; ratios are medians over rounds

    def resolved(self) -> TrainBenchConfig:
        """With the default backend filled in."""
        if self.backend is not None:
            return self
        backend = "synthetic" if self.data is None else "dali-gpu" if self.device == "cuda" else "pytorch"
        return dataclasses.replace(self, backend=backend)

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(msg)

        need(self.gpus >= 1, f"--gpus must be >= 1, got {self.gpus}")
        need(self.device in ("cuda", "cpu"), f"--device must be cuda or cpu, not {self.device!r}")
        need(self.batch >= 1, f"--batch must be >= 1, got {self.batch}")
        need(self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}")
        need(self.iters >= 1, f"--iters must be >= 1, got {self.iters}")
        need(self.rounds >= 1, f"--rounds must be >= 1, got {self.rounds}")
        need(self.image_size >= 32, f"--image-size must be >= 32, got {self.image_size}")
        need(self.timeout > 0, f"--timeout must be > 0 seconds, got {self.timeout}")
        need(self.nnodes >= 1, f"--nnodes must be >= 1, got {self.nnodes}")
        need(0 <= self.node_rank < self.nnodes, f"--node-rank must be in [0, {self.nnodes - 1}], got {self.node_rank}")
        need(
            self.nnodes == 1 or self.rdzv_endpoint is not None,
            "multi-node runs need --rdzv-endpoint HOST:PORT (the same on every node)",
        )
        if self.rdzv_endpoint is not None:
            need(
                re.fullmatch(r"[^\s:]+:\d{1,5}", self.rdzv_endpoint) is not None,
                f"--rdzv-endpoint must look like HOST:PORT, got {self.rdzv_endpoint!r}",
            )
        need(
            self.backend in DATA_BACKENDS,
            f"--backend must be one of {', '.join(DATA_BACKENDS)}, not {self.backend!r}",
        )
        need(self.workers is None or self.workers >= 0, f"--workers must be >= 0, got {self.workers}")
        need(self.num_classes >= 1, f"--num-classes must be >= 1, got {self.num_classes}")
        # An unknown recipe must fail here, in one line, not inside every rank.
        bench_recipe(self.recipe, "fp32", self.gpus, {**asdict(self), "backend": self.backend})
        if self.backend == "dali-gpu":
            need(self.device == "cuda", "--backend dali-gpu needs --device cuda; use dali-cpu or pytorch on CPU")
        if self.backend == "synthetic":
            need(self.data is None, "--data given with --backend synthetic; pick a backend that reads it")
        else:
            need(self.data is not None, f"--backend {self.backend} reads a dataset: give --data DIR")
            need(Path(self.data, "train").is_dir(), f"no train/ folder under {self.data}; point --data at the root")
        if self.device == "cuda":
            import torch

            need(torch.cuda.is_available(), "--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
            n = torch.cuda.device_count()
            need(self.gpus <= n, f"--gpus {self.gpus} but only {n} GPU(s) visible on this node")


def worker_counts(n: int) -> list[int]:
    """1, 2, 4 ... below n, then n itself (n need not be a power of two)."""
    counts = [1]
    while counts[-1] * 2 < n:
        counts.append(counts[-1] * 2)
    if counts[-1] != n:
        counts.append(n)
    return counts


@dataclass(frozen=True)
class Precision:
    kind: str  # "mixed" or "full": the table column
    name: str  # what runs: fp16, bf16, tf32 or fp32
    note: str = ""


def resolve_precisions(words: tuple[str, ...] | list[str], device: str) -> list[Precision]:
    """Map 'mixed'/'full'/fp16/bf16/tf32/fp32 to what this device runs; at most one mixed and one full."""
    if not words:
        raise UserError("--precision needs at least one of mixed, full, fp16, bf16, tf32, fp32")
    ampere = False
    if device == "cuda":
        import torch

        ampere = torch.cuda.is_available() and torch.cuda.get_device_capability(0)[0] >= 8
    out: list[Precision] = []
    for word in words:
        w = word.strip().lower()
        if w not in PRECISION_WORDS:
            raise UserError(f"unknown precision {word!r}: use mixed, full, fp16, bf16, tf32 or fp32")
        kind = "mixed" if w in ("mixed", *MIXED) else "full"
        if any(p.kind == kind for p in out):
            raise UserError(f"give at most one mixed (fp16/bf16) and one full (fp32/tf32) precision; {word!r} repeats")
        if kind == "mixed":
            name, note = ("fp16" if w == "mixed" else w), ""
            if device == "cpu" and name == "fp16":
                name, note = "bf16", "fp16 autocast falls back to bf16 on CPU"
        else:
            name, note = ("tf32" if ampere else "fp32") if w == "full" else w, ""
            if w == "tf32" and not ampere:
                name, note = "fp32", "tf32 needs an Ampere or newer GPU; ran fp32"
        out.append(Precision(kind, name, note))
    return sorted(out, key=lambda p: p.kind != "mixed")


def bench_recipe(base: str, precision: str, world_size: int, cfg: dict[str, Any]):
    """The trainer's recipe for one benchmark configuration (what `rn50 train` would run at this size)."""
    from rn50.recipes import get_recipe

    return get_recipe(base).replace(
        precision=precision,
        memory_format="channels_last" if precision in MIXED else "contiguous",
        gpus=world_size,
        batch_size=cfg["batch"],
        image_size=cfg["image_size"],
        num_classes=cfg["num_classes"],
        data_backend=cfg["backend"],
        workers=cfg["workers"],
    )


# ---------------------------------------------------------------- worker (one per rank, under torchrun)


def _fail_hook(rank: int) -> tuple[int, str] | None:
    spec = os.environ.get(FAIL_ENV)
    if not spec:
        return None
    parts = spec.split(":")
    if int(parts[0]) != rank:
        return None
    return int(parts[1]), parts[2] if len(parts) > 2 else "kill"


def _sync_ranks(device) -> None:
    """This rank's device, then every rank: the timed window starts and ends at the same moment everywhere."""
    import torch.distributed as dist

    from rn50.env import synchronize

    synchronize(device)
    if dist.is_available() and dist.is_initialized():
        if device.type == "cuda":
            dist.barrier(device_ids=[device.index])
        else:
            dist.barrier()


def _sum_over_ranks(value: int, device) -> int:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item())


def _cycle(loader):
    """Batches across epoch ends (each epoch reshuffled, as in training)."""
    epoch = 0
    while True:
        yielded = False
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        epoch += 1
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise UserError("the data loader yielded no batch; is the dataset smaller than one global batch?")


def run_worker(spec_path: Path) -> None:
    """Body of one rank: time the trainer step for each precision in the spec; rank 0 writes the global figures."""
    spec = json.loads(Path(spec_path).read_text())
    run_dir = Path(spec["run_dir"])
    rank = int(os.environ.get("RANK", "0"))
    # Everything this rank prints, from here on, goes to its own log file (named in any failure message).
    log_file = open(run_dir / f"rank{rank}.log", "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(message)s", stream=sys.stderr)
    result = _run_timed(spec)  # an exception reaches torchelastic's error file through `as_rank`
    if "all_ranks" not in result:  # one node: each rank writes its own figures
        atomic_write_json(run_dir / f"rank{rank}.result.json", result)
    elif int(os.environ.get("LOCAL_RANK", "0")) == 0:  # several: one writer per node, with every rank's figures
        for r in result.pop("all_ranks"):
            atomic_write_json(run_dir / f"rank{r['rank']}.result.json", r)


def _run_timed(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from rn50.data.loaders import make_loader
    from rn50.train.dist import cleanup, init_distributed, seed_everything
    from rn50.train.step import build_state, train_step

    rank, world_size, local_rank, device = init_distributed(spec["device"])
    seed_everything(0, rank)  # the same weights and batches on every run: a loss to compare, not only a speed
    fail = _fail_hook(rank)
    log.info("rank %d/%d on %s, pid %d", rank, world_size, device, os.getpid())
    results: dict[str, Any] = {"rank": rank, "world_size": world_size, "local_rank": local_rank, "precisions": {}}
    step_index = 0
    for prec in spec["precisions"]:
        recipe = bench_recipe(spec["recipe"], prec["name"], world_size, spec)
        state = build_state(recipe, device, distributed=world_size > 1, compile=spec["compile"], rank=rank)
        data = spec["data"]
        loader = make_loader(
            Path(data) if data else None,
            "train",
            recipe,
            spec["backend"],
            device,
            rank=rank,
            world_size=world_size,
            seed=0,
            workers=spec["workers"],
        )
        batches = _cycle(loader)
        loss = None
        local_images = 0  # counted from the batches (a loader may skip an unreadable file), no host sync
        for phase, n in (("warmup", spec["warmup"]), ("timed", spec["iters"])):
            if phase == "timed":
                _sync_ranks(device)
                start = time.perf_counter()
            for _ in range(n):
                if fail is not None and step_index == fail[0]:
                    log.error("%s: dying at iteration %d on purpose (%s)", FAIL_ENV, step_index, fail[1])
                    if fail[1] == "raise":
                        raise RuntimeError(f"{FAIL_ENV} asked rank {rank} to fail")
                    if fail[1] == "hang":
                        while True:
                            time.sleep(1)
                    os.kill(os.getpid(), signal.SIGKILL)
                images, labels = next(batches)
                loss = train_step(state, images, labels)
                step_index += 1
                if phase == "timed":
                    local_images += images.shape[0]
        _sync_ranks(device)
        elapsed = time.perf_counter() - start
        final_loss = float(loss.detach().float().item()) if loss is not None else math.nan
        images_timed = _sum_over_ranks(local_images, device)
        entry = {
            "precision": state.precision,  # what the trainer really ran
            "kind": prec["kind"],
            "seconds": elapsed,
            "local_images": local_images,
            "global_images": images_timed,
            "img_per_s": images_timed / elapsed,
            "final_loss": final_loss,
        }
        if device.type == "cuda":
            entry["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            torch.cuda.reset_peak_memory_stats(device)
        results["precisions"][prec["name"]] = entry
        log.info("%s: %.1f img/s (%d images in %.3f s), loss %.4f", prec["name"], entry["img_per_s"],
                 images_timed, elapsed, final_loss)  # fmt: skip
        del state, loader, batches
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if world_size > int(os.environ.get("LOCAL_WORLD_SIZE", world_size)):  # several nodes
        results["all_ranks"] = _gather(results)
    cleanup()
    return results


def _gather(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's result, on every rank (each node then holds the global figures, whichever node torchrun's
    rendezvous gave global rank 0 in this launch)."""
    import torch.distributed as dist

    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, result)
    dist.barrier()  # every rank has received everything before any tears the group down
    return everyone


# ---------------------------------------------------------------- launcher (one torchrun per worker count)


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
        "device": cfg.device,
        "batch": cfg.batch,
        "warmup": cfg.warmup,
        "iters": cfg.iters,
        "precisions": [asdict(p) for p in precisions],
        "data": str(Path(cfg.data).resolve()) if cfg.data else None,
        "backend": cfg.backend,
        "recipe": cfg.recipe,
        "image_size": cfg.image_size,
        "num_classes": cfg.num_classes,
        "workers": cfg.workers,
        "compile": cfg.compile,
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


@dataclass
class TrainBenchReport:
    config: dict[str, Any]
    precisions: list[Precision]
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per worker count, flat (see COLUMNS)
    env: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    launches: list[dict[str, Any]] = field(default_factory=list)  # every finished launch, in the order run
    flags: list[str] = field(default_factory=list)  # what makes a figure untrustworthy, and what to do
    planned: int = 0  # launches in the whole sweep

    @property
    def caption(self) -> str:
        return caption(self)


# The seed's columns, then the efficiency (weak scaling / ideal), the 90-epoch estimate and the figures' flags.
COLUMNS = (
    ("gpus", "GPUs"),
    ("mixed_img_s", "mixed img/s"),
    ("full_img_s", "full img/s"),
    ("mixed_speedup", "mixed speedup"),
    ("mixed_weak_scaling", "mixed weak scaling"),
    ("full_weak_scaling", "full weak scaling"),
    ("mixed_efficiency", "mixed efficiency"),
    ("full_efficiency", "full efficiency"),
    ("efficiency_spread", "spread"),
    ("mixed_90ep_hours", f"mixed {ESTIMATE_EPOCHS} epochs (h)"),
    ("full_90ep_hours", f"full {ESTIMATE_EPOCHS} epochs (h)"),
    ("flags", "flags"),
)


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
    report = TrainBenchReport(config=_config_dict(cfg), precisions=precisions)
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
    _derive(report)
    load = watch.summary()
    report.env = {**env, "loadavg": load["loadavg_after"], "loadavg_before": load["loadavg_before"], "load": load}
    report.flags = _row_flags(report) + load_flags(load)
    report.files = write_outputs(report, Path(cfg.out))
    return report.files.get("md")


def _config_dict(cfg: TrainBenchConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["out"] = str(cfg.out)
    d["data"] = str(cfg.data) if cfg.data else None
    d["precisions"] = list(cfg.precisions)
    return d


def _derive(report: TrainBenchReport) -> None:
    """One row per worker count from the launches: img/s is the median over rounds; weak scaling (img/s over the
    smallest count's per-worker img/s), efficiency (weak scaling over the ideal) and the mixed speedup are medians
    of each round's own ratio, with their spread; then the 90-epoch estimate."""
    from statistics import median

    from rn50.bench.timing import ratio_stats

    by_count: dict[int, list[dict[str, Any]]] = {}
    for launch_ in report.launches:
        by_count.setdefault(launch_["world_size"], []).append(launch_)
    counts = sorted(by_count)
    base = counts[0]
    # A single multi-GPU run has nothing to scale against (its own per-GPU rate would make it perfect by definition).
    scaling = base == 1 or len(counts) > 1
    rows = []
    for n in counts:
        runs = by_count[n]
        first = runs[0]
        row: dict[str, Any] = {"gpus": n, "nodes": report.config["nnodes"], "gpus_per_node": first["nproc"]}
        spreads = []
        for p in report.precisions:
            k = p.kind
            entries = [r["precisions"][p.name] for r in runs if p.name in r["precisions"]]
            if not entries:
                continue
            rates = [e["img_per_s"] for e in entries]
            row[f"{k}_precision"] = entries[0]["precision"]
            row[f"{k}_img_s"] = median(rates)
            row[f"{k}_img_s_rounds"] = rates
            row[f"{k}_seconds"] = sum(e["seconds"] for e in entries)
            row[f"{k}_global_images"] = sum(e["global_images"] for e in entries)
            row[f"{k}_final_loss"] = entries[-1]["final_loss"]
            if any("max_memory_gib" in e for e in entries):
                row[f"{k}_max_memory_gib"] = max(e.get("max_memory_gib", 0) for e in entries)
            row[f"{k}_window_s"] = min(e["seconds"] for e in entries)
            row[f"{k}_90ep_hours"] = ESTIMATE_EPOCHS * IMAGENET_TRAIN_IMAGES / row[f"{k}_img_s"] / 3600
            if scaling:
                ratios = _round_ratios(by_count[base], runs, p.name)
                if ratios:
                    ws = ratio_stats([r * base for r in ratios])
                    row[f"{k}_weak_scaling"] = ws["ratio"]
                    eff = ratio_stats([r * base / n for r in ratios])
                    row[f"{k}_efficiency"] = eff["ratio"]
                    row[f"{k}_efficiency_min"], row[f"{k}_efficiency_max"] = eff["ratio_min"], eff["ratio_max"]
                    row[f"{k}_efficiency_rounds"] = eff["rounds"]
                    if n != base:
                        spreads.append(eff["ratio_spread"])
        if "mixed_img_s" in row and "full_img_s" in row:
            names = {p.kind: p.name for p in report.precisions}
            sp = ratio_stats(
                [
                    r["precisions"][names["mixed"]]["img_per_s"] / r["precisions"][names["full"]]["img_per_s"]
                    for r in runs
                ]
            )
            row["mixed_speedup"] = sp["ratio"]
            row["mixed_speedup_spread"] = sp["ratio_spread"]
        if spreads:
            row["efficiency_spread"] = max(spreads)
        row["rank_seconds"] = first["rank_seconds"]
        row["logs"] = first["logs"]
        row["rounds"] = len(runs)
        rows.append(row)
    report.rows = rows


def _round_ratios(base_runs: list[dict[str, Any]], runs: list[dict[str, Any]], name: str) -> list[float]:
    """Per round: this count's img/s over the base count's img/s, both from the same round."""
    base = {r["round"]: r["precisions"][name]["img_per_s"] for r in base_runs if name in r["precisions"]}
    return [r["precisions"][name]["img_per_s"] / base[r["round"]] for r in runs if r["round"] in base]


def _row_flags(report: TrainBenchReport) -> list[str]:
    """Flag every figure that cannot be trusted (sets each row's short `flags` cell); the sentences, deduplicated."""
    from rn50.bench.timing import MAX_SPREAD, efficiency_flag, spread_flag, window_flags

    out: list[str] = []
    for row in report.rows:
        flags: list[str] = []
        n = row["gpus"]
        for p in report.precisions:
            k = p.kind
            if f"{k}_window_s" in row:
                flags += window_flags(f"{k} at {n} worker(s)", row[f"{k}_window_s"], report.config["iters"])
            if f"{k}_efficiency" in row:
                flags += efficiency_flag(f"{k} efficiency at {n} worker(s)", row[f"{k}_efficiency"])
                stats = {
                    "ratio": row[f"{k}_efficiency"],
                    "ratio_min": row[f"{k}_efficiency_min"],
                    "ratio_max": row[f"{k}_efficiency_max"],
                    "rounds": row[f"{k}_efficiency_rounds"],
                    "ratio_spread": (row[f"{k}_efficiency_max"] - row[f"{k}_efficiency_min"]) / row[f"{k}_efficiency"],
                }
                flags += spread_flag(f"{k} efficiency at {n} worker(s)", stats)
        if row.get("mixed_speedup_spread", 0) > MAX_SPREAD:
            flags.append(
                f"UNSTABLE: mixed speedup at {n} worker(s) varies {100 * row['mixed_speedup_spread']:.0f}% over "
                f"rounds (> {100 * MAX_SPREAD:.0f}%): rerun on an idle machine or with more --iters"
            )
        row["flags"] = ", ".join(dict.fromkeys(f.split(":")[0] for f in flags)) or None
        out += [f for f in flags if f not in out]
    if report.config["rounds"] < 2 and len(report.rows) > 1:
        out.append(
            "ONE ROUND: the ratios come from one launch per worker count, not interleaved rounds: use --rounds 3"
        )
    return out


def caption(report: TrainBenchReport) -> str:
    c = report.config
    words = [f"{p.kind} = {p.name}" + (f" ({p.note})" if p.note else "") for p in report.precisions]
    unit = "GPU" if c["device"] == "cuda" else "CPU worker process (gloo; the GPUs column counts processes)"
    data = "synthetic data" if c["backend"] == "synthetic" else f"{c['data']} via the {c['backend']} backend"
    nodes = f", {c['nnodes']} nodes" if c["nnodes"] > 1 else ""
    base = report.rows[0]["gpus"] if report.rows else 1
    return (
        f"ResNet-50 v1.5 training at {c['image_size']} px, batch {c['batch']} per {unit}, {data}{nodes}; "
        f"{'; '.join(words)}; {c['iters']} timed iterations after {c['warmup']} warmup per launch; the worker counts "
        f"in {c['rounds']} interleaved round(s); img/s = global images over the synchronised wall time of the timed "
        f"iterations, median over rounds; weak scaling = img/s / ({base}-worker img/s / {base}) and efficiency = weak "
        f"scaling / (workers / {base}), each the median of the rounds' own ratios (spread = (max - min) / median of "
        f"the efficiency over rounds); {ESTIMATE_EPOCHS} epochs of {IMAGENET_TRAIN_IMAGES:,} images (ImageNet-1k) "
        "at that rate."
    )


def result_stem(report: TrainBenchReport) -> str:
    import torch

    from rn50.bench.report import file_tag
    from rn50.env import short_device_name

    precs = "-".join(p.name for p in report.precisions)
    torch_ver = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    nodes = f"-{report.config['nnodes']}nodes" if report.config["nnodes"] > 1 else ""
    device = short_device_name(report.config["device"])
    return file_tag(f"train-{precs}-bs{report.config['batch']}-torch{torch_ver}-{device}{nodes}")


def write_outputs(report: TrainBenchReport, out: Path) -> dict[str, str]:
    from rn50.bench.report import plot_lines, write_table

    stem = out / result_stem(report)
    done = f"{len(report.launches)} of {report.planned} launches" if report.planned else ""
    partial = [f"PARTIAL: {done} finished"] if report.planned and len(report.launches) < report.planned else []
    paths = write_table(
        report.rows,
        COLUMNS,
        stem,
        "rn50 bench train: training img/s by worker count, mixed vs full precision",
        report.env,
        notes=[*partial, *report.flags, report.caption],
        extra={
            "config": report.config,
            "precisions": [asdict(p) for p in report.precisions],
            "flags": report.flags,
            "complete": not partial,
            "launches": report.launches,
        },
    )
    gpus = [r["gpus"] for r in report.rows]
    series, refs = {}, {}
    for p in report.precisions:
        pts = [(r["gpus"], r[f"{p.kind}_img_s"]) for r in report.rows if f"{p.kind}_img_s" in r]
        series[f"{p.kind} ({p.name})"] = ([g for g, _ in pts], [v for _, v in pts])
        per_worker = report.rows[0][f"{p.kind}_img_s"] / report.rows[0]["gpus"]
        refs[f"linear scaling of {p.kind} (reference)"] = (gpus, [per_worker * g for g in gpus])
    unit = "GPUs" if report.config["device"] == "cuda" else "worker processes"
    device = report.env["gpus"][0]["name"] if report.env.get("gpus") else f"CPU ({report.env.get('cpu', '?')})"
    paths["png"] = plot_lines(
        series,
        stem.with_name(stem.name + ".png"),
        unit,
        "img/s",
        f"ResNet-50 v1.5 training, {report.config['image_size']} px, batch {report.config['batch']} per worker, "
        f"on {device}",
        logx=True,
        references=refs,
    )
    return {k: str(v) for k, v in paths.items()}


def main(argv: list[str] | None = None) -> None:
    from rn50.launch import as_rank

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--worker":
        as_rank(lambda: run_worker(Path(argv[1])))()
        return
    raise SystemExit("usage: python -m rn50.bench.scaling --worker SPEC.json (started by `rn50 bench train`)")


if __name__ == "__main__":
    main()
