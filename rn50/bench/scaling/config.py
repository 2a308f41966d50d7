"""bench train's configuration: the options, the worker counts, the precisions and the recipe each launch runs, and
the report the sweep fills."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rn50.errors import UserError, need
from rn50.recipes import DATA_BACKENDS

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
    need(bool(words), "--precision needs at least one of mixed, full, fp16, bf16, tf32, fp32")
    ampere = False
    if device == "cuda":
        import torch

        ampere = torch.cuda.is_available() and torch.cuda.get_device_capability(0)[0] >= 8
    out: list[Precision] = []
    for word in words:
        w = word.strip().lower()
        need(w in PRECISION_WORDS, f"unknown precision {word!r}: use mixed, full, fp16, bf16, tf32 or fp32")
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


@dataclass
class TrainBenchReport:
    config: dict[str, Any]
    precisions: list[Precision]
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per worker count, flat (see COLUMNS)
    env: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    launches: list[dict[str, Any]] = field(default_factory=list)  # every finished launch, in the order run
    flags: list[str] = field(default_factory=list)  # what makes a figure untrustworthy, and what to do
    efficiency: dict[tuple[int, str], dict[str, float]] = field(default_factory=dict)  # (workers, kind): ratio_stats
    planned: int = 0  # launches in the whole sweep
