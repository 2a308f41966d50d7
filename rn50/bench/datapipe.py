"""`rn50 bench data`: input-pipeline img/s per data backend, total and per CPU core, with synthetic as the ceiling.

Each backend is the trainer's own loader (`rn50.data.loaders.make_loader`) with the train augmentation, timed over
`iters` batches after `warmup` batches (pipeline start-up and the first batches excluded), until the batch is on
the device. Compare a backend's img/s with `rn50 bench train`'s: below it, data loading limits training.
"""

from __future__ import annotations

import logging
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
    rounds: int = 5  # interleaved rounds: the timed batches are split over them, backends rotated each round

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
        need(self.rounds >= 1, f"--rounds must be >= 1, got {self.rounds}")
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
    vs_ceiling: float | None = None  # median over rounds of this backend's img/s over synthetic's in the same round
    vs_first: float | None = None  # the same against the first backend timed (backend vs backend)
    vs_first_spread: float | None = None  # (max - min) / median of that ratio over rounds
    round_img_per_s: list[float] | None = None
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


class _Stream:
    """A loader's batches across epoch ends, taken a few at a time (one interleaved round after another)."""

    def __init__(self, loader, device) -> None:
        self.loader, self.device, self.epoch = loader, device, 0
        self.it = self._batches()

    def _batches(self):
        while True:
            self.loader.set_epoch(self.epoch)
            got = False
            for batch in self.loader:
                got = True
                yield batch
            if not got:
                raise UserError("the loader yields no batch: the split has fewer images than one batch; lower --batch")
            self.epoch += 1

    def sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def take(self, n: int) -> float:
        """`n` untimed batches; their seconds."""
        t0 = time.perf_counter()
        for _ in range(n):
            next(self.it)
        self.sync()
        return time.perf_counter() - t0

    def timed(self, n: int) -> tuple[int, float, int, Any, dict[str, float]]:
        """(images, seconds, epoch restarts, last batch, the loader's own `timings` deltas) over `n` batches."""
        restarts_before = self.epoch
        own_before = dict(getattr(self.loader, "timings", {}))
        images = 0
        start = time.perf_counter()
        for _ in range(n):
            x, _ = next(self.it)
            images += x.shape[0]
        self.sync()
        seconds = time.perf_counter() - start
        own = {k: v - own_before[k] for k, v in getattr(self.loader, "timings", {}).items() if k in own_before}
        return images, seconds, self.epoch - restarts_before, x, own


def time_loader(loader, warmup: int, iters: int, device) -> tuple[int, float, float, int, Any, dict[str, float]]:
    """(images, seconds, setup seconds, epoch restarts, last batch, the loader's own `timings` over the timed
    batches where it keeps them) for `iters` batches after `warmup` (>= 1)."""
    stream = _Stream(loader, device)
    setup = stream.take(max(1, warmup))  # the first batch includes start-up: never timed
    images, seconds, restarts, last, own = stream.timed(iters)
    return images, seconds, setup, restarts, last, own


def _split(iters: int, rounds: int) -> list[int]:
    """`iters` batches over at most `rounds` rounds, as evenly as whole batches allow."""
    rounds = min(rounds, iters)
    return [iters // rounds + (1 if r < iters % rounds else 0) for r in range(rounds)]


def run_data_bench(cfg: DataBenchConfig) -> DataBenchReport:
    """Time each backend's train loader (and the synthetic ceiling) on `cfg.data`, in interleaved rounds.

    Every loader is built and warmed first; then each round times every backend for its share of `iters` batches,
    the order rotated round by round. A round starts with a few untimed batches per backend: the queue a
    prefetching loader filled while the others ran was made in their time, not its own. Img/s is a backend's images
    over its timed seconds; the ratios (of synthetic, vs the first backend) are medians of per-round ratios."""
    import torch

    from rn50.bench.timing import LoadWatch, load_flags, ratio_stats, spread_flag, window_flags
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
    watch = LoadWatch()
    order = (["synthetic"] if cfg.ceiling else []) + list(dict.fromkeys(cfg.backends))
    streams: dict[str, _Stream] = {}
    results: dict[str, BackendResult] = {}
    try:
        for backend in order:
            reason = None if backend == "synthetic" else skip_reason(backend, device_kind)
            if reason:
                results[backend] = BackendResult(backend, "skipped", reason)
                log.info("%s: skipped (%s)", backend, reason)
                continue
            recipe = base.replace(data_backend=backend)
            try:
                # The classifier size does not change the loader; the dataset's class count must fit the recipe.
                root = None if backend == "synthetic" else cfg.data
                loader = make_loader(root, cfg.split, recipe, backend, device, workers=cfg.workers)
            except UserError as e:
                if backend == "synthetic":
                    raise
                results[backend] = BackendResult(backend, "skipped", str(e))
                continue
            streams[backend] = _Stream(loader, device)
            cores = None if backend == "synthetic" else max(1, cfg.workers)
            results[backend] = BackendResult(backend, "ok", cores=cores, round_img_per_s=[])
            results[backend].setup_seconds = streams[backend].take(max(1, cfg.warmup))
        names = list(streams)
        own: dict[str, dict[str, float]] = {n: {} for n in names}
        settle = max(2, 2 * cfg.workers)  # a DataLoader's prefetch (2 per worker) or DALI's queue
        for r, n_iters in enumerate(_split(cfg.iters, cfg.rounds)):
            for k in range(len(names)):
                name = names[(r + k) % len(names)]
                stream, res = streams[name], results[name]
                stream.take(settle if len(names) > 1 else 0)
                images, seconds, restarts, last, mine = stream.timed(n_iters)
                res.images += images
                res.seconds = (res.seconds or 0.0) + seconds
                res.epochs += restarts
                res.round_img_per_s.append(images / seconds)
                res.batch_shape, res.batch_dtype = list(last.shape), str(last.dtype).replace("torch.", "")
                for key, v in mine.items():
                    own[name][key] = own[name].get(key, 0.0) + v
                del last
    finally:
        for stream in streams.values():
            stream.loader.close()
    for name in names:
        res = results[name]
        res.img_per_s = res.images / res.seconds
        res.img_per_s_per_core = res.img_per_s / res.cores if res.cores else None
        if own[name].get("images"):
            for key in ("decode_s", "augment_s"):
                if key in own[name]:
                    setattr(res, f"{key.removesuffix('_s')}_ms_per_image", 1000 * own[name][key] / own[name]["images"])
        log.info("%s: %.1f img/s", name, res.img_per_s)
    report.results = [results[b] for b in order]
    real = [n for n in names if n != "synthetic"]
    if not real:
        why = "; ".join(f"{r.backend}: {r.reason}" for r in report.results if r.status == "skipped")
        raise UserError(f"no data backend could run here ({why})")
    flags: list[str] = []
    for name in real:
        res = results[name]
        if "synthetic" in results and results["synthetic"].status == "ok":
            ceil = results["synthetic"].round_img_per_s
            res.vs_ceiling = ratio_stats([a / b for a, b in zip(res.round_img_per_s, ceil, strict=True)])["ratio"]
        flags += window_flags(name, res.seconds, cfg.iters)
        if name != real[0]:
            first = results[real[0]].round_img_per_s
            stats = ratio_stats([a / b for a, b in zip(res.round_img_per_s, first, strict=True)])
            res.vs_first, res.vs_first_spread = stats["ratio"], stats["ratio_spread"]
            flags += spread_flag(f"{name} vs {real[0]}", stats)
    if cfg.step if cfg.step is not None else device.type == "cuda":
        report.step = time_train_step(base, device, cfg.warmup, cfg.iters)
    report.env = capture_env()
    load = watch.summary()
    report.env.update(loadavg_before=load["loadavg_before"], loadavg=load["loadavg_after"], load=load)
    report.flags = flags + load_flags(load)
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
    ("vs_first", "vs first"),
    ("vs_first_spread", "spread"),
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
        f"{c['warmup']} warmup, on {report.device}; cores = workers or DALI threads used. The timed batches are "
        f"split over {c['rounds']} interleaved rounds (backends rotated each round); 'of synthetic' and 'vs first' "
        "(this backend over the first one listed) are medians of per-round ratios, spread = (max - min) / median."
    ]
    notes += report.flags
    if report.verdict:
        notes.append(report.verdict)
    paths = write_table(
        table_rows(report), COLUMNS, stem, "rn50 bench data: input pipeline img/s", report.env, notes, report.to_dict()
    )
    return {k: str(v) for k, v in paths.items()}
