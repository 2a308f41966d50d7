"""`rn50 bench data`: input-pipeline img/s per data backend, total and per CPU core, with synthetic as the ceiling.

Each backend is the trainer's own loader (`rn50.data.loaders.make_loader`) with the train augmentation, timed over
`iters` batches after `warmup` batches (pipeline start-up and the first batches excluded), until the batch is on
the device. Compare a backend's img/s with `rn50 bench train`'s: below it, data loading limits training.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rn50.bench.progress import ProgressBar
from rn50.bench.stop import Interrupted, StopSignals
from rn50.env import synchronize
from rn50.errors import UserError
from rn50.recipes import FILE_BACKENDS

log = logging.getLogger("rn50.bench")

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
    device: str | None = None  # None: cuda when present, else cpu
    ceiling: bool = True  # also time the synthetic loader
    step: bool | None = None  # also time the training step on synthetic data (None: on with CUDA, off on CPU)
    recipe: str = "dgxa100-fp16-90"
    rounds: int = 5  # interleaved rounds: the timed batches are split over them, backends rotated each round
    out: Path | None = None  # folder for the tables, rewritten after every round (None: no files)
    progress: bool = True  # a progress bar on stderr

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(msg)

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
        need(self.device in (None, "cpu", "cuda"), f"--device must be cuda or cpu, not {self.device!r}")
        need(self.out is None or not Path(self.out).is_file(), f"--out {self.out} is a file; give a folder")
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

    def take(self, n: int) -> float:
        """`n` untimed batches; their seconds."""
        t0 = time.perf_counter()
        for _ in range(n):
            next(self.it)
        synchronize(self.device)
        return time.perf_counter() - t0

    def timed(self, n: int) -> tuple[int, float, int, Any, dict[str, float]]:
        """(images, seconds, epoch restarts, last batch, the loader's own `timings` deltas plus `host_s`, the
        training thread's CPU seconds inside next()) over `n` batches."""
        restarts_before = self.epoch
        own_before = dict(getattr(self.loader, "timings", {}))
        images, host = 0, 0.0
        start = time.perf_counter()
        for _ in range(n):
            cpu = time.thread_time()  # this thread only: worker processes and DALI's threads are not in it
            x, _ = next(self.it)
            host += time.thread_time() - cpu
            images += x.shape[0]
        synchronize(self.device)
        seconds = time.perf_counter() - start
        own = {k: v - own_before[k] for k, v in getattr(self.loader, "timings", {}).items() if k in own_before}
        return images, seconds, self.epoch - restarts_before, x, own | {"host_s": host}


def time_loader(loader, warmup: int, iters: int, device) -> tuple[int, float, float, int, Any, dict[str, float]]:
    """(images, seconds, setup seconds, epoch restarts, last batch, the loader's own `timings` over the timed
    batches where it keeps them) for `iters` batches after `warmup` (>= 1)."""
    stream = _Stream(loader, device)
    setup = stream.take(max(1, warmup))  # the first batch includes start-up: never timed
    images, seconds, restarts, last, own = stream.timed(iters)
    return images, seconds, setup, restarts, last, own


def run_data_bench(cfg: DataBenchConfig) -> DataBenchReport:
    """Time each backend's train loader (and the synthetic ceiling) on `cfg.data`, in interleaved rounds.

    Every loader is built and warmed first; then each round times every backend for its share of `iters` batches,
    the order rotated round by round. A round starts with a few untimed batches per backend: the queue a
    prefetching loader filled while the others ran was made in their time, not its own. Img/s is a backend's images
    over its timed seconds; the ratios (of synthetic, vs the first backend) are medians of per-round ratios.

    With `cfg.out`, the tables are rewritten after every round; SIGINT/SIGTERM stop at once and keep the finished
    rounds (Interrupted says where)."""
    import torch

    from rn50.bench.timing import LoadWatch, round_order, split_rounds, wait_quiet
    from rn50.data.loaders import make_loader
    from rn50.env import capture_env
    from rn50.recipes import get_recipe

    cfg.validate()
    device_kind = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device("cuda", 0) if device_kind == "cuda" else torch.device("cpu")
    base = get_recipe(cfg.recipe).replace(batch_size=cfg.batch, gpus=1, image_size=cfg.image_size, workers=cfg.workers)
    config = asdict(cfg)
    config.update(data=str(cfg.data), backends=list(cfg.backends), out=str(cfg.out) if cfg.out else None)
    split = split_rounds(cfg.iters, cfg.rounds)
    report = DataBenchReport(config=config, device=str(device), rounds_planned=len(split))
    report.env = capture_env()  # before any work
    watch = LoadWatch()
    order = (["synthetic"] if cfg.ceiling else []) + list(dict.fromkeys(cfg.backends))
    streams: dict[str, _Stream] = {}
    results: dict[str, BackendResult] = {}
    rounds: dict[str, list[_Round]] = {}  # every timed (backend, round), in the order run
    step = cfg.step if cfg.step is not None else device.type == "cuda"
    settle = max(2, 4 * cfg.workers)  # for the time estimate: a DataLoader's prefetch (4 per worker) or DALI's 2
    # The whole command in batches, for the time-left estimate: each backend's setup (its warmup batches, start-up
    # included) and every backend's share of every round, then the training step when it is timed.
    per_round = [(settle if len(order) > 1 else 0) + n for n in split]
    total = len(order) * (max(1, cfg.warmup) + sum(per_round)) + (max(1, cfg.warmup) + cfg.iters if step else 0)
    with StopSignals("bench data") as stop, ProgressBar("bench data", total, cfg.progress, setup=True) as bar:
        try:
            for backend in order:
                bar.update(f"{backend}: setting up")
                reason = None if backend == "synthetic" else skip_reason(backend, device_kind)
                if reason:
                    results[backend] = BackendResult(backend, "skipped", reason)
                    log.info("%s: skipped (%s)", backend, reason)
                else:
                    try:
                        # The classifier size does not change the loader; the dataset's classes must fit the recipe.
                        root = None if backend == "synthetic" else cfg.data
                        recipe = base.replace(data_backend=backend)
                        loader = make_loader(root, cfg.split, recipe, backend, device, workers=cfg.workers)
                    except Interrupted:
                        raise
                    except UserError as e:
                        if backend == "synthetic":
                            raise
                        results[backend] = BackendResult(backend, "skipped", str(e))
                    else:
                        if hasattr(loader, "timing"):
                            loader.timing = True  # its own breakdown (pytorch-gpu: CUDA events, no device sync)
                        streams[backend] = _Stream(loader, device)
                        cores = None if backend == "synthetic" else max(1, cfg.workers)
                        results[backend] = BackendResult(backend, "ok", cores=cores, round_img_per_s=[])
                        rounds[backend] = []
                        results[backend].setup_seconds = streams[backend].take(max(1, cfg.warmup))
                bar.update(advance=max(1, cfg.warmup) + sum(per_round) * (backend not in streams))
            report.results = [results[b] for b in order]
            bar.mark()  # the rounds are alike: their pace says how long the rest takes, the setups' does not
            names = list(streams)
            if not [n for n in names if n != "synthetic"]:
                why = "; ".join(f"{r.backend}: {r.reason}" for r in report.results if r.status == "skipped")
                raise UserError(f"no data backend could run here ({why})")
            for r, n_iters in enumerate(split):
                for name in round_order(names, r):
                    bar.update(f"round {r + 1}/{len(split)}: {name}")
                    stream = streams[name]
                    # The batches its queue made while the others ran are not its own time: drained untimed.
                    stream.take(getattr(stream.loader, "prefetch_batches", 0) if len(names) > 1 else 0)
                    images, seconds, restarts, last, own = stream.timed(n_iters)
                    if len(names) > 1:  # its workers refill their queue now, not in the next backend's window
                        wait_quiet()
                    stop.check()  # should the loader have caught the signal's Interrupted
                    rounds[name].append(_Round(images, seconds, restarts, own))
                    res = results[name]
                    res.batch_shape, res.batch_dtype = list(last.shape), str(last.dtype).replace("torch.", "")
                    del last
                    bar.update(advance=per_round[r])
                with stop.held():  # the tables of the finished rounds, never half written
                    report.rounds_done = r + 1
                    _summarize(report, results, rounds, cfg, watch)
                    _write(report, cfg)
            if step:
                bar.update("the training step on synthetic data")
                report.step = time_train_step(base, device, cfg.warmup, cfg.iters)
                bar.update(advance=max(1, cfg.warmup) + cfg.iters)
        except (Exception, KeyboardInterrupt) as e:
            if isinstance(e, Interrupted):
                stopped = e
            elif isinstance(e, KeyboardInterrupt) or stop.signum is not None:
                # Ctrl-C before the guard, or a loader that turned the signal's Interrupted into an error of its own
                stopped = stop.interruption(stop.signum or signal.SIGINT)
            else:
                raise
            raise stopped.adding(_stopped(report, results, rounds, cfg, watch, stop, stopped)) from None
        finally:
            for stream in streams.values():
                stream.loader.close()
    for name in names:
        log.info("%s: %.1f img/s", name, results[name].img_per_s)
    _summarize(report, results, rounds, cfg, watch)
    _write(report, cfg)
    return report


@dataclass
class _Round:
    """One backend's share of one round: images, seconds, epoch restarts, the loader's own `timings` deltas."""

    images: int
    seconds: float
    restarts: int
    own: dict[str, float]


def _stopped(report, results, rounds, cfg, watch, stop, e: Interrupted) -> str:
    """Keep what finished after a signal: the partial tables (when a round had finished) and where they are."""
    n, k = report.rounds_planned, report.rounds_done
    report.interrupted = e.signal_name
    if not k:
        return "no round had finished: nothing to write"
    with stop.held():
        _summarize(report, results, rounds, cfg, watch)
        files = _write(report, cfg)
    if not files:
        return f"round {k} of {n} had finished; give --out to keep partial results"
    return f"partial results (round {k} of {n}) in {files['md']}"


def _summarize(
    report: DataBenchReport,
    results: dict[str, BackendResult],
    rounds: dict[str, list[_Round]],
    cfg: DataBenchConfig,
    watch,
) -> None:
    """Every figure and flag from the first `report.rounds_done` rounds (a backend timed in a round that did not
    finish is left out of it)."""
    from rn50.bench.timing import load_flags, ratio_stats, split_rounds, spread_flag, window_flags

    k = report.rounds_done
    names = [n for n in rounds if n in results]
    for name in names:
        res, done = results[name], rounds[name][:k]
        res.images = sum(d.images for d in done)
        res.seconds = sum(d.seconds for d in done)
        res.epochs = sum(d.restarts for d in done)
        res.round_img_per_s = [d.images / d.seconds for d in done]
        res.img_per_s = res.images / res.seconds if res.seconds else None
        res.img_per_s_per_core = res.img_per_s / res.cores if res.cores and res.img_per_s else None
        own: dict[str, float] = {}
        for d in done:
            for key, v in d.own.items():
                own[key] = own.get(key, 0.0) + v
        if res.images:
            res.host_us_per_image = 1e6 * own.get("host_s", 0.0) / res.images
        if own.get("images"):
            for key in ("decode_s", "augment_s"):
                if key in own:
                    setattr(res, f"{key.removesuffix('_s')}_ms_per_image", 1000 * own[key] / own["images"])
    flags: list[str] = []
    real = [n for n in names if n != "synthetic"]
    for name in real if k else []:
        res = results[name]
        if "synthetic" in names:
            ceil = results["synthetic"].round_img_per_s
            res.vs_ceiling = ratio_stats([a / b for a, b in zip(res.round_img_per_s, ceil, strict=True)])["ratio"]
        flags += window_flags(name, res.seconds, sum(split_rounds(cfg.iters, cfg.rounds)[:k]))
        if name != real[0]:
            first = results[real[0]].round_img_per_s
            stats = ratio_stats([a / b for a, b in zip(res.round_img_per_s, first, strict=True)])
            res.vs_first, res.vs_first_spread = stats["ratio"], stats["ratio_spread"]
            flags += spread_flag(f"{name} vs {real[0]}", stats)
    load = watch.summary()
    report.env.update(loadavg_before=load["loadavg_before"], loadavg=load["loadavg_after"], load=load)
    report.flags = flags + load_flags(load)


def _write(report: DataBenchReport, cfg: DataBenchConfig) -> dict[str, str]:
    """The tables under cfg.out (none without one); kept in report.files."""
    if cfg.out is not None:
        report.files = write_outputs(report, Path(cfg.out))
    return report.files


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
    ("host_us_per_image", "host us/img"),
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
        "(this backend over the first one listed) are medians of per-round ratios, spread = (max - min) / median. "
        "host us/img: CPU time the training thread spends inside the loader per image (worker processes and DALI "
        "threads excluded); at MLPerf-class H100 rates (~7,200 img/s per GPU) everything the training process does "
        "per image must fit in 139 us."
    ]
    if report.partial:
        notes.insert(0, report.partial)
    notes += report.flags
    if report.verdict:
        notes.append(report.verdict)
    paths = write_table(
        table_rows(report), COLUMNS, stem, "rn50 bench data: input pipeline img/s", report.env, notes, report.to_dict()
    )
    return {k: str(v) for k, v in paths.items()}
