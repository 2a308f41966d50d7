"""`rn50 bench data`: input-pipeline img/s per data backend, total and per CPU core, with synthetic as the ceiling.

Each backend is the trainer's own loader (`rn50.data.loaders.make_loader`) with the train augmentation, timed over
`iters` batches after `warmup` batches (pipeline start-up and the first batches excluded), until the batch is on
the device. Compare a backend's img/s with `rn50 bench train`'s: below it, data loading limits training.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rn50.errors import UserError

log = logging.getLogger("rn50.bench")

BACKENDS = ("pytorch", "pytorch-gpu", "dali-cpu", "dali-gpu")


@dataclass(frozen=True)
class DataBenchConfig:
    data: Path
    backends: tuple[str, ...] = BACKENDS
    batch: int = 32
    workers: int = 2  # DataLoader processes (pytorch) or DALI CPU threads: the cores a backend may use
    warmup: int = 5
    iters: int = 50
    split: str = "train"
    image_size: int = 224
    device: str | None = None  # None: cuda when present, else cpu
    ceiling: bool = True  # also time the synthetic loader
    step: bool | None = None  # also time the training step on synthetic data (None: on with CUDA, off on CPU)
    recipe: str = "dgxa100-fp16-90"

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(msg)

        need(Path(self.data).is_dir(), f"data folder not found: {self.data}")
        need(self.split in ("train", "val"), f"--split must be train or val, not {self.split!r}")
        need(Path(self.data, self.split).is_dir(), f"{self.data} has no {self.split}/ folder (ImageNet layout)")
        need(bool(self.backends), "--backend needs at least one of " + ", ".join(BACKENDS))
        for b in self.backends:
            need(b in BACKENDS, f"unknown backend {b!r}: use {', '.join(BACKENDS)} (synthetic is always the ceiling)")
        need(self.batch >= 1, f"--batch must be >= 1, got {self.batch}")
        need(self.workers >= 0, f"--workers must be >= 0, got {self.workers}")
        need(self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}")
        need(self.iters >= 1, f"--iters must be >= 1, got {self.iters}")
        need(self.image_size >= 32, f"--image-size must be >= 32, got {self.image_size}")
        need(self.device in (None, "cpu", "cuda"), f"--device must be cuda or cpu, not {self.device!r}")
        if self.device == "cuda":
            import torch

            need(torch.cuda.is_available(), "--device cuda asked for, but no CUDA GPU is visible; use --device cpu")


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
    vs_ceiling: float | None = None
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


def time_loader(loader, warmup: int, iters: int, device) -> tuple[int, float, float, int, Any, dict[str, float]]:
    """(images, seconds, setup seconds, epoch restarts, last batch, the loader's own `timings` over the timed
    batches where it keeps them) for `iters` batches after `warmup` (>= 1)."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    epoch = 0

    def batches():
        nonlocal epoch
        while True:
            loader.set_epoch(epoch)
            got = False
            for batch in loader:
                got = True
                yield batch
            if not got:
                raise UserError("the loader yields no batch: the split has fewer images than one batch; lower --batch")
            epoch += 1

    it = batches()
    t0 = time.perf_counter()
    for _ in range(max(1, warmup)):  # the first batch includes start-up: never timed
        next(it)
    sync()
    setup = time.perf_counter() - t0
    restarts_before = epoch
    own_before = dict(getattr(loader, "timings", {}))
    images = 0
    start = time.perf_counter()
    for _ in range(iters):
        x, _ = next(it)
        images += x.shape[0]
    sync()
    seconds = time.perf_counter() - start
    own = {k: v - own_before[k] for k, v in getattr(loader, "timings", {}).items() if k in own_before}
    return images, seconds, setup, epoch - restarts_before, x, own


def run_data_bench(cfg: DataBenchConfig) -> DataBenchReport:
    """Time each backend's train loader (and the synthetic ceiling) on `cfg.data`."""
    import torch

    from rn50.data.loaders import make_loader
    from rn50.env import capture_env
    from rn50.recipes import get_recipe

    cfg.validate()
    device_kind = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device("cuda", 0) if device_kind == "cuda" else torch.device("cpu")
    base = get_recipe(cfg.recipe).replace(batch_size=cfg.batch, gpus=1, image_size=cfg.image_size, workers=cfg.workers)
    config = asdict(cfg)
    config.update(data=str(cfg.data), backends=list(cfg.backends))
    report = DataBenchReport(config=config, device=str(device))
    load_before = os.getloadavg()
    order = (["synthetic"] if cfg.ceiling else []) + list(dict.fromkeys(cfg.backends))
    for backend in order:
        reason = None if backend == "synthetic" else skip_reason(backend, device_kind)
        if reason:
            report.results.append(BackendResult(backend, "skipped", reason))
            log.info("%s: skipped (%s)", backend, reason)
            continue
        recipe = base.replace(data_backend=backend)
        try:
            # The classifier size does not change the loader; the dataset's class count must fit the recipe.
            loader = make_loader(
                None if backend == "synthetic" else cfg.data, cfg.split, recipe, backend, device, workers=cfg.workers
            )
        except UserError as e:
            if backend == "synthetic":
                raise
            report.results.append(BackendResult(backend, "skipped", str(e)))
            continue
        images, seconds, setup, restarts, last, own = time_loader(loader, cfg.warmup, cfg.iters, device)
        per_image = {
            f"{k.removesuffix('_s')}_ms_per_image": 1000 * own[k] / own["images"]
            for k in ("decode_s", "augment_s")
            if own.get("images")
        }
        cores = None if backend == "synthetic" else max(1, cfg.workers)
        rate = images / seconds
        report.results.append(
            BackendResult(
                backend,
                "ok",
                img_per_s=rate,
                cores=cores,
                img_per_s_per_core=rate / cores if cores else None,
                images=images,
                seconds=seconds,
                setup_seconds=setup,
                epochs=restarts,
                batch_shape=list(last.shape),
                batch_dtype=str(last.dtype).replace("torch.", ""),
                **per_image,
            )
        )
        loader.close()
        del loader, last
        log.info("%s: %.1f img/s", backend, rate)
    ceiling = next((r.img_per_s for r in report.results if r.backend == "synthetic"), None)
    for r in report.results:
        if ceiling and r.img_per_s is not None and r.backend != "synthetic":
            r.vs_ceiling = r.img_per_s / ceiling
    if not any(r.status == "ok" and r.backend != "synthetic" for r in report.results):
        why = "; ".join(f"{r.backend}: {r.reason}" for r in report.results if r.status == "skipped")
        raise UserError(f"no data backend could run here ({why})")
    if cfg.step if cfg.step is not None else device.type == "cuda":
        report.step = time_train_step(base, device, cfg.warmup, cfg.iters)
    report.env = capture_env()
    report.env["loadavg_before"] = list(load_before)
    report.env["loadavg"] = list(os.getloadavg())
    return report


def time_train_step(recipe, device, warmup: int, iters: int) -> dict[str, Any]:
    """Img/s of the trainer's own step on synthetic batches: fp16 AMP on CUDA, fp32 on CPU (what CPUs train in)."""
    import torch

    from rn50.data.synthetic import SyntheticLoader
    from rn50.train.step import build_state, train_step

    precision = "fp16" if device.type == "cuda" else "fp32"
    layout = "channels_last" if device.type == "cuda" else "contiguous"
    recipe = recipe.replace(precision=precision, memory_format=layout, data_backend="synthetic")
    state = build_state(recipe, device, distributed=False)
    loader = SyntheticLoader(recipe, device, batches=max(1, warmup) + iters)
    stepped = _Stepped(loader, lambda x, y: train_step(state, x, y))
    images, seconds, _, _, _, _ = time_loader(stepped, warmup, iters, device)
    del stepped
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"precision": precision, "img_per_s": images / seconds, "images": images, "seconds": seconds}


class _Stepped:
    """A loader whose every batch has been through one training step (so time_loader times loader + step)."""

    def __init__(self, loader, step) -> None:
        self.loader, self.step = loader, step

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        for x, y in self.loader:
            self.step(x, y)
            yield x, y


COLUMNS = (
    ("backend", "backend"),
    ("img_per_s", "img/s"),
    ("cores", "cores"),
    ("img_per_s_per_core", "img/s per core"),
    ("vs_ceiling", "of synthetic"),
    ("note", "note"),
)


def table_rows(report: DataBenchReport) -> list[dict[str, Any]]:
    rows = []
    if report.step:
        s = report.step
        note = f"the training step ({s['precision']}, synthetic data): what the input pipeline must keep up with"
        rows.append({"backend": "train step", "img_per_s": s["img_per_s"], "note": note})
    for r in report.results:
        note = r.reason if r.status == "skipped" else "ceiling: batches already on the device"
        if r.status == "ok" and r.backend != "synthetic":
            note = f"{r.images} images in {r.seconds:.2f} s"
            if r.epochs:
                note += f"; {r.epochs} epoch restart(s) timed (small dataset)"
            if r.decode_ms_per_image is not None:
                note += (
                    f"; main process per image: batched decode {r.decode_ms_per_image:.2f} ms, crop/resize/normalise "
                    f"{r.augment_ms_per_image:.2f} ms"
                )
        rows.append({**asdict(r), "note": note if r.status == "ok" else f"skipped: {note}"})
    return rows


def write_outputs(report: DataBenchReport, out: Path) -> dict[str, str]:
    from rn50.bench.report import file_tag, write_table
    from rn50.env import short_device_name

    c = report.config
    stem = out / file_tag(f"data-bs{c['batch']}-w{c['workers']}-{c['image_size']}px-{short_device_name(report.device)}")
    notes = [
        f"{c['data']} ({c['split']} split, train augmentation: random resized crop, flip, normalise) at "
        f"{c['image_size']} px, batch {c['batch']}, {c['workers']} workers/threads, {c['iters']} timed batches after "
        f"{c['warmup']} warmup, on {report.device}; cores = workers or DALI threads used."
    ]
    if report.verdict:
        notes.append(report.verdict)
    paths = write_table(
        table_rows(report), COLUMNS, stem, "rn50 bench data: input pipeline img/s", report.env, notes, report.to_dict()
    )
    return {k: str(v) for k, v in paths.items()}
