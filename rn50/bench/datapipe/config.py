"""bench data's configuration and results: the options and their checks, one result per backend, the report (its
partial mark and its verdict), and why a backend cannot run here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rn50.env import resolve_device
from rn50.errors import need
from rn50.recipes import FILE_BACKENDS

# The default order: the plain PyTorch loader first, the one 'vs first' compares the others with.
DEFAULT_BACKENDS = ("pytorch", *(b for b in reversed(FILE_BACKENDS) if b != "pytorch"))


@dataclass(frozen=True)
class DataBenchConfig:
    data: Path
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    batch: int = 32
    workers: int = 2  # DataLoader processes (pytorch) or DALI CPU threads: the cores a backend may use
    warmup: int = 5
    iters: int = 50
    split: str = "train"
    image_size: int = 224
    device: str | None = None  # None: cuda when present, else cpu; cuda:N for another GPU
    ceiling: bool = True  # also time the synthetic loader
    step: bool | None = None  # also time the training step on synthetic data (None: on with CUDA, off on CPU)
    recipe: str = "dgxa100-fp16-90"
    rounds: int = 5  # interleaved rounds: the timed batches are split over them, backends rotated each round
    out: Path | None = None  # folder for the tables, rewritten after every round (None: no files)
    progress: bool = True  # a progress bar on stderr

    def validate(self) -> None:
        need(Path(self.data).is_dir(), f"data folder not found: {self.data}")
        need(self.split in ("train", "val"), f"--split must be train or val, not {self.split!r}")
        need(Path(self.data, self.split).is_dir(), f"{self.data} has no {self.split}/ folder (ImageNet layout)")
        need(bool(self.backends), "--backend needs at least one of " + ", ".join(DEFAULT_BACKENDS))
        for b in self.backends:
            need(
                b in FILE_BACKENDS,
                f"unknown backend {b!r}: use {', '.join(DEFAULT_BACKENDS)} (synthetic is always the ceiling)",
            )
        need(self.batch >= 1, f"--batch must be >= 1, got {self.batch}")
        need(self.workers >= 0, f"--workers must be >= 0, got {self.workers}")
        need(self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}")
        need(self.iters >= 1, f"--iters must be >= 1, got {self.iters}")
        need(self.rounds >= 1, f"--rounds must be >= 1, got {self.rounds}")
        need(self.image_size >= 32, f"--image-size must be >= 32, got {self.image_size}")
        resolve_device(self.device)  # cpu, cuda or cuda:N, with a GPU there when one is asked for
        need(self.out is None or not Path(self.out).is_file(), f"--out {self.out} is a file; give a folder")


@dataclass
class BackendResult:
    backend: str
    status: str  # "ok" or "skipped"
    reason: str = ""
    img_per_s: float | None = None
    cores: int | None = None  # worker processes or DALI threads; None for synthetic (no decode)
    img_per_s_per_core: float | None = None
    images: int = 0
    seconds: float | None = None
    setup_seconds: float | None = None  # building the loader and its first batch (not in img/s)
    epochs: int = 0  # epoch restarts within the timed batches (a small dataset pays pipeline restarts)
    batch_shape: list[int] | None = None  # of the last batch, as the model receives it
    batch_dtype: str | None = None
    vs_ceiling: float | None = None  # median over rounds of this backend's img/s over synthetic's in the same round
    vs_first: float | None = None  # the same against the first backend timed (backend vs backend)
    vs_first_spread: float | None = None  # (max - min) / median of that ratio over rounds
    round_img_per_s: list[float] | None = None
    # CPU time of the training thread inside the loader's next() per image (worker processes and DALI's threads not
    # counted): what feeding one GPU costs the process that drives it
    host_us_per_image: float | None = None
    # pytorch-gpu: main-process milliseconds per image spent in the batched decode and in crop/resize/normalise
    decode_ms_per_image: float | None = None
    augment_ms_per_image: float | None = None


@dataclass
class DataBenchReport:
    config: dict[str, Any]
    device: str
    results: list[BackendResult] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)
    step: dict[str, Any] | None = None  # the training step's img/s on synthetic data, when timed
    flags: list[str] = field(default_factory=list)
    rounds_planned: int = 0
    rounds_done: int = 0  # the figures come from these first rounds
    interrupted: str | None = None  # the signal that stopped the run (SIGINT, SIGTERM)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def partial(self) -> str | None:
        """'PARTIAL: ...' when the run did not finish (None when it did)."""
        if not self.interrupted:
            return None
        k, n = self.rounds_done, self.rounds_planned
        during = "; stopped while timing the training step" if k == n else ""
        return (
            f"PARTIAL: interrupted by {self.interrupted} after round {k} of {n}{during}; the figures come from the "
            "finished rounds"
        )

    @property
    def verdict(self) -> str | None:
        """Which limits training on this device: the input pipeline or the model's compute."""
        if not self.step:
            return None
        ok = [r for r in self.results if r.status == "ok" and r.backend != "synthetic"]
        best = max(ok, key=lambda r: r.img_per_s or 0)
        need = self.step["img_per_s"]
        if (best.img_per_s or 0) >= need:
            return f"compute-bound: {best.backend} delivers {best.img_per_s:.0f} img/s, the step takes {need:.3g}"
        got = best.img_per_s or 0
        return f"input-bound: the step could take {need:.0f} img/s, the best backend ({best.backend}) gives {got:.0f}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": "rn50 bench data",
            "config": self.config,
            "device": self.device,
            "results": [asdict(r) for r in self.results],
            "env": self.env,
            "train_step": self.step,
            "verdict": self.verdict,
            "flags": self.flags,
            "rounds": self.rounds_planned,
            "finished_rounds": self.rounds_done,
            "complete": not self.interrupted,
            "interrupted": self.interrupted,
        }


def skip_reason(backend: str, device: str) -> str | None:
    """Why `backend` cannot run here (None if it can)."""
    if backend.startswith("dali"):
        try:
            import nvidia.dali  # noqa: F401
        except ImportError:
            return "NVIDIA DALI is not installed: pip install 'rn50[dali]'"
    if backend == "dali-gpu" and device != "cuda":
        import torch

        return "needs a CUDA GPU (none visible)" if not torch.cuda.is_available() else "needs --device cuda"
    return None
