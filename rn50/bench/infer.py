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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rn50.bench import report
from rn50.bench.progress import ProgressBar
from rn50.bench.runtimes import (
    PRECISIONS,
    RUNTIMES,
    Options,
    Runtime,
    Skip,
    is_oom,
    make_runtime,
    math_mode,
)
from rn50.bench.stop import Interrupted, StopSignals
from rn50.bench.timing import (
    LoadWatch,
    LoopResult,
    load_flags,
    ratio_stats,
    round_order,
    split_rounds,
    spread_flag,
    summarize,
    timed_loop,
    window_flags,
)
from rn50.errors import UserError, first_line
from rn50.export.formats import artifact_format, get_format, is_artifact
from rn50.export.sidecar import read_sidecar, sidecar_image_size
from rn50.tables import csv_text, format_cell, markdown_table

log = logging.getLogger(__name__)

ROW_COLUMNS = [
    ("backend", "backend"),
    ("precision", "precision"),
    ("layout", "layout"),
    ("batch", "batch"),
    ("status", "status"),
    ("img_s", "img/s"),
    ("speedup", "speedup vs eager fp32"),
    ("speedup_spread", "speedup spread"),
    ("flags", "flags"),
    ("mean_ms", "mean ms"),
    ("min_ms", "min ms"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("iters", "iters"),
    ("first_call_s", "first call s"),
    ("provider", "provider"),
    ("top1_agreement", "top-1 agreement vs fp32"),
    ("reason", "reason"),
]


@dataclass
class InferConfig:
    source: Path | None = None  # checkpoint or exported artifact; None: random-init ResNet-50
    batches: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128, 256])
    backends: list[str] = field(default_factory=lambda: ["eager"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    device: str = "cpu"
    image_size: int = 224
    warmup: int = 10
    iters: int | None = 50
    min_time: float | None = None  # instead of iters: seconds per batch size per series, split over the rounds
    rounds: int = 5  # interleaved rounds per batch size; speedups are medians of per-round ratios
    cuda_graphs: bool = False
    include_h2d: bool = False
    channels_last: bool = True
    compile_dynamic: bool = True
    out: Path = Path("runs/bench-infer")
    images: Path | None = None  # real images (ImageNet layout) for top-1 agreement and int8 calibration
    calib_dir: Path | None = None
    num_classes: int | None = None
    agreement_images: int = 256
    verify: bool = True  # exports run their parity check (rn50.export) before being timed
    keep_artifacts: Path | None = None  # keep the exported artifacts here (default: a temporary folder)
    threads: int | None = None  # ONNX Runtime intra-op threads (None: its default, all cores)
    baseline: bool = True
    progress: bool = True

    def validate(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise UserError("batch sizes must be >= 1")
        bad = [b for b in self.backends if b not in RUNTIMES]
        if bad:
            raise UserError(f"unknown backend {', '.join(bad)}; choose from {', '.join(RUNTIMES)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise UserError(f"unknown precision {', '.join(bad)}; choose from {', '.join(PRECISIONS)}")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise UserError(f"bad --device {self.device!r}: use cpu or cuda (cuda:N)")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device cuda but PyTorch sees no CUDA GPU here; use --device cpu")
        if not self.device.startswith("cuda"):
            if self.cuda_graphs:
                raise UserError("--cuda-graphs needs --device cuda")
            if self.include_h2d:
                raise UserError("--include-h2d needs --device cuda (on CPU there is no host-to-device copy)")
        if self.iters is not None and self.min_time is not None:
            raise UserError("give --iters or --min-time, not both")
        if self.iters is None and self.min_time is None:
            raise UserError("give --iters N or --min-time S")
        if self.iters is not None and self.iters < 1:
            raise UserError(f"--iters must be >= 1, got {self.iters}")
        if self.min_time is not None and not self.min_time > 0:
            raise UserError(f"--min-time must be > 0 seconds, got {self.min_time}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be >= 0, got {self.warmup}")
        if self.rounds < 1:
            raise UserError(f"--rounds must be >= 1, got {self.rounds}")
        if self.image_size < 32:
            raise UserError(f"--image-size must be >= 32 (ResNet-50 downsamples 32x), got {self.image_size}")
        if self.source is not None and not (Path(self.source).is_file() or is_artifact(Path(self.source))):
            raise UserError(f"not a file: {self.source} (give a checkpoint or an exported artifact)")
        for name, path in (("--images", self.images), ("--calib-dir", self.calib_dir)):
            if path is not None and not Path(path).is_dir():
                raise UserError(f"{name} {path}: not a folder")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise UserError(f"--out {self.out} is a file; give a folder")
        if self.keep_artifacts is not None and Path(self.keep_artifacts).is_file():
            raise UserError(f"--keep-artifacts {self.keep_artifacts} is a file; give a folder")
        if self.source is not None and is_artifact(Path(self.source)):
            _check_artifact_size(Path(self.source), self.image_size)

    @property
    def layout(self) -> str:
        return "nhwc" if self.channels_last else "nchw"


def _check_artifact_size(path: Path, image_size: int) -> None:
    size = sidecar_image_size(read_sidecar(path) or {})
    if size and size != image_size:
        raise UserError(f"{path} was exported for {size} px images; pass --image-size {size}")


def _load_source(cfg: InferConfig) -> tuple[torch.nn.Module, str, Any]:
    """(model for the eager/compile/export backends, a description of the weights, the artifact runner or None)."""
    from rn50.model import resnet50

    if cfg.source is not None and not is_artifact(Path(cfg.source)):
        from rn50.weights import load_model

        model = load_model(cfg.source, num_classes=cfg.num_classes)
        return model, f"checkpoint {cfg.source}", None
    num_classes = cfg.num_classes
    if cfg.source is not None:  # an artifact: the eager baseline gets the artifact's class count
        num_classes = num_classes or int((read_sidecar(cfg.source) or {}).get("num_classes") or 0) or None
    torch.manual_seed(0)
    model = resnet50(num_classes=num_classes or 1000).eval()
    weights = "random init (seed 0): speed does not depend on the weights"
    if cfg.source is not None:
        weights = f"artifact {cfg.source}; the eager fp32 baseline is a random-init model of the same shape"
    return model, weights, None


def _images_dirs(cfg: InferConfig, workdir: Path) -> tuple[Path | None, Path | None]:
    """(agreement images, calibration images). With int8 and no --images, the built-in sample is used."""
    root = cfg.images
    if root is None and "int8" in cfg.precisions:
        from rn50.data.sample import make_sample

        root = workdir / "sample"
        try:
            make_sample(root)
        except ImportError as e:
            raise UserError(
                f"int8 calibration uses the built-in sample, which needs {e.name}: "
                "pip install 'rn50[sample]', or give --images DIR"
            ) from None
    if root is None:
        return None, cfg.calib_dir
    root = Path(root)
    eval_dir = root / "val" if (root / "val").is_dir() else root
    calib = cfg.calib_dir or (root / "train" if (root / "train").is_dir() else eval_dir)
    return eval_dir, Path(calib)


def output_stem(cfg: InferConfig, backends: list[str]) -> str:
    """e.g. infer-fp16+bf16-nhwc-torch2.11-h100 (precision, layout, library versions, device)."""
    from importlib import metadata

    from rn50.env import short_device_name

    def short(version: str) -> str:
        return ".".join(version.split("+")[0].split(".")[:2])

    parts = ["infer", "+".join(cfg.precisions), cfg.layout, f"torch{short(torch.__version__)}"]
    for backend, dist, tag in (
        ("onnxruntime", ("onnxruntime-gpu", "onnxruntime"), "ort"),
        ("tensorrt", ("tensorrt",), "trt"),
        ("openvino", ("openvino",), "ov"),
    ):
        if any(b == backend or b.startswith(f"{backend}-") for b in backends):
            for d in dist:
                try:
                    parts.append(f"{tag}{short(metadata.version(d))}")
                    break
                except metadata.PackageNotFoundError:
                    continue
    parts.append(short_device_name(cfg.device))
    return report.file_tag("-".join(parts))


def run_infer(cfg: InferConfig) -> dict[str, Any]:
    """Run the sweep; write Markdown/CSV/JSON/PNG under cfg.out; return the result dict (with "paths")."""
    cfg.validate()
    from rn50.env import capture_env

    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from rn50.io import write_error

        raise (write_error(f"--out {out}", e) or e) from None
    from rn50.memory import check_fits

    check_fits(max(cfg.batches), cfg.image_size, cfg.device, "infer")
    env = capture_env()  # before any work: clocks at start
    env["loadavg"] = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="rn50-bench-") as tmp:
        workdir = Path(tmp)
        if cfg.keep_artifacts is not None:
            workdir = Path(cfg.keep_artifacts)
            workdir.mkdir(parents=True, exist_ok=True)
        model, weights, _ = _load_source(cfg)
        artifact = Path(cfg.source) if cfg.source is not None and is_artifact(Path(cfg.source)) else None
        plan = _plan(cfg, artifact)
        eval_dir, calib_dir = _images_dirs(cfg, workdir)
        opts = Options(
            device=cfg.device,
            image_size=cfg.image_size,
            max_batch=max(cfg.batches),
            channels_last=cfg.channels_last,
            cuda_graphs=cfg.cuda_graphs,
            include_h2d=cfg.include_h2d,
            compile_dynamic=cfg.compile_dynamic,
            workdir=workdir,
            calib_dir=calib_dir,
            images_dir=eval_dir,
            verify=cfg.verify,
            threads=cfg.threads,
            num_classes=model.fc.out_features,
        )
        reference = _reference(model, eval_dir, cfg, opts) if eval_dir is not None and artifact is None else None
        result: dict[str, Any] = {
            "kind": "rn50-bench-infer",
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "weights": weights,
            "agreement_images": None if reference is None else {"dir": str(eval_dir), "n": len(reference[1])},
            "calibration_images": str(calib_dir) if calib_dir and "int8" in cfg.precisions else None,
            "method": _method(cfg),
            "env": env,
            "series": [],
            "rows": [],
        }
        stem = out / output_stem(cfg, [b for b, _ in plan])
        result["flags"], result["finished_batches"] = [], []
        watch = LoadWatch()
        runtimes: list[tuple[dict[str, Any], Runtime]] = []
        timed: list[dict[str, Any]] = []
        unbuilt: list[dict[str, Any]] = []  # a series that did not build: one row, after the timed ones
        # The whole command in units for the time-left estimate: one per series build, one per agreement check,
        # and the batch sizes together as many units as there are of them, each weighted by its share of the work
        # (with --iters, its images; with --min-time, the same time each).
        weights = {b: (b if cfg.iters is not None else 1) for b in cfg.batches}
        scale = len(cfg.batches) / sum(weights.values())
        total = len(plan) + len(cfg.batches) + (len(plan) if reference is not None else 0)
        with StopSignals("bench infer") as stop, ProgressBar("bench infer", total, cfg.progress, setup=True) as bar:
            try:
                for backend, precision in plan:
                    bar.update(f"{backend} {precision}: building")
                    series, rt = _build(backend, precision, model, opts, cfg, artifact)
                    result["series"].append(series)
                    if rt is None:
                        unbuilt.append({**series, "batch": None})
                        result["rows"] = timed + unbuilt
                    else:
                        runtimes.append((series, rt))
                    stop.check()  # an exporter may have caught the signal's Interrupted as a failure of its own
                    bar.update(advance=1)
                bar.mark()  # the sweep's pace, not the builds' (compile and export times vary by minutes)
                for batch in cfg.batches:
                    bar.update(f"batch {batch}: {len(runtimes)} series in {cfg.rounds} interleaved rounds")
                    rows = _time_batch(runtimes, batch, cfg, opts)
                    stop.check()  # not a batch size that finished, should a runtime have caught the signal
                    timed.extend(rows)
                    result["rows"] = timed + unbuilt
                    result["finished_batches"].append(batch)
                    with stop.held():  # a signal while the tables are written waits for them
                        result["flags"] = infer_flags(result, watch.summary())
                        result["paths"] = write_infer_report(result, stem)
                    bar.update(advance=weights[batch] * scale)
                for series, rt in runtimes:
                    if reference is not None:
                        bar.update(f"{series['backend']} {series['precision']}: top-1 agreement")
                        _agreement(series, rt, reference, cfg, opts, result["rows"])
                        stop.check()
                        bar.update(advance=1)
            except (Interrupted, KeyboardInterrupt) as e:
                stopped = e if isinstance(e, Interrupted) else stop.interruption(signal.SIGINT)
                done = result["finished_batches"]
                if done:
                    with stop.held():
                        result["flags"] = infer_flags(result, watch.summary())
                        result["paths"] = write_infer_report(result, stem)
                    where = (
                        f"partial results (batch {', '.join(map(str, done))} of {', '.join(map(str, cfg.batches))}) "
                        f"in {result['paths']['md']}"
                    )
                else:
                    where = "no batch size had finished: nothing to write"
                raise stopped.adding(where) from None
        result["flags"] = infer_flags(result, watch.summary())
        result["paths"] = write_infer_report(result, stem)
        return result


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


def _plan(cfg: InferConfig, artifact: Path | None) -> list[tuple[str, str]]:
    plan: list[tuple[str, str]] = []
    if cfg.baseline:
        plan.append(("eager", "fp32"))
    if artifact is not None:
        backend = artifact_format(artifact, read_sidecar(artifact)).runtime
        plan.append((backend, "artifact"))
        return plan
    for backend in cfg.backends:
        for precision in cfg.precisions:
            if (backend, precision) not in plan:
                plan.append((backend, precision))
    return plan


def _method(cfg: InferConfig) -> list[str]:
    loop = f"{cfg.iters} timed iterations" if cfg.iters is not None else f"timed iterations for >= {cfg.min_time} s"
    loop += (
        f" per batch size, split over {cfg.rounds} interleaved rounds of all series (order rotated each round); "
        "speedup = median over rounds of the series' img/s over eager fp32's in the same round"
    )
    timer = "CUDA events per iteration" if cfg.device.startswith("cuda") else "time.perf_counter per iteration"
    lines = [
        f"{cfg.warmup} warmup iterations excluded, then {loop}; {timer}",
        "img/s = images / total timed seconds; latency percentiles from the same per-iteration samples",
        "compile/export/engine build and each batch's first call (new shape, graph capture) timed separately",
        "inputs: random normal, "
        + ("pinned on the host, copy timed" if cfg.include_h2d else "already on the device")
        + f", {cfg.image_size} px, {cfg.layout} for eager/compile (exported formats take NCHW)",
        f"CUDA graphs: {'on where the backend allows (eager, compile)' if cfg.cuda_graphs else 'off'}",
        "fp32 means IEEE fp32 on GPUs (TF32 off); tf32 turns the TF32 math mode on",
        f"CPU threads: torch {torch.get_num_threads()}, ONNX Runtime {cfg.threads or 'its default (all cores)'}",
    ]
    if any(b.startswith("openvino") for b in cfg.backends):
        lines.append(
            "OpenVINO: fp32 runs with INFERENCE_PRECISION_HINT=f32; latency = 1 stream, 1 infer request; "
            "openvino-throughput = the THROUGHPUT hint's streams, one request per stream (AsyncInferQueue), each "
            "batch split across them; threads, streams and kernels per series in the JSON"
        )
    return lines


def _reference(model: torch.nn.Module, eval_dir: Path, cfg: InferConfig, opts: Options) -> tuple[Any, Any]:
    """Real images and the eager fp32 top-1 on them: what every series' top-1 agreement is measured against."""
    from rn50.data.transforms import load_eval_images

    try:
        images = load_eval_images(eval_dir, cfg.agreement_images, cfg.image_size)
    except FileNotFoundError as e:
        raise UserError(f"--images: {e}") from None
    ref = make_runtime("eager", model, "fp32", Options(**{**asdict(opts), "cuda_graphs": False}))
    ref.build()
    with math_mode("fp32", opts.cuda):
        top1 = _infer_all(ref, images, cfg.batches).argmax(1)
    del ref
    return images, top1


def _infer_all(rt: Runtime, images: torch.Tensor, batches: list[int]) -> torch.Tensor:
    # A batch size the sweep already ran, so compiled backends need no new shape.
    chunk = max([b for b in batches if b <= 64] or [min(batches)])
    return torch.cat([rt.infer(images[i : i + chunk]) for i in range(0, len(images), chunk)])


def _build(
    backend: str, precision: str, model: torch.nn.Module, opts: Options, cfg: InferConfig, artifact: Path | None
) -> tuple[dict[str, Any], Runtime | None]:
    """Build one series' runtime (compile/export/engine build timed apart): (series record, runtime or None)."""
    label = f"{backend} {precision}"
    use_artifact = artifact if precision == "artifact" else None
    rt = make_runtime(backend, model, "fp32" if use_artifact else precision, opts, artifact=use_artifact)
    if use_artifact is not None:
        rt.precision = "artifact"
    series: dict[str, Any] = {"backend": backend, "precision": precision, "layout": rt.layout}
    try:
        rt.check()
        with math_mode(precision, opts.cuda):
            rt.build()
    except Skip as e:
        series.update(status="skipped", reason=str(e))
        log.warning("%s skipped: %s", label, e)
        return series, None
    except Interrupted:
        raise
    except Exception as e:
        if opts.cuda and is_oom(e):
            series.update(status="oom", reason=first_line(e, 300))
        elif isinstance(e, UserError):  # already one line saying what is wrong
            series.update(status="error", reason=first_line(e, 300))
        else:
            series.update(status="error", reason=f"{type(e).__name__}: {first_line(e, 300)}")
        log.debug("%s failed to build: %s", label, series["reason"])  # printed with the table, and exits non-zero
        return series, None
    if use_artifact is not None:
        series["precision"] = rt.precision = str(rt.info.get("precision", "artifact"))
        rt.name = _artifact_backend(rt, backend)
        series["backend"] = rt.name
    series.update(status="ok", build_s=round(rt.build_s, 3), **rt.info)
    if cfg.cuda_graphs and not rt.graphs_supported:
        series["cuda_graphs"] = "not supported by this backend: timed without"
    return series, rt


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
        row: dict[str, Any] = {"backend": series["backend"], "precision": precision, "layout": rt.layout}
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
            active.append((row, _in_mode(step, precision, opts.cuda), series))
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
                loops[id(row)].append(
                    timed_loop(
                        step,
                        warmup=0,
                        iters=n if per_round_time is None else None,
                        min_time=per_round_time,
                        cuda=opts.cuda,
                        min_iters=1,
                    )
                )
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
        row["round_img_s"] = [batch * len(loop.samples_s) / loop.total_s for loop in mine]
        row["round_iters"] = [len(loop.samples_s) for loop in mine]
        if base is not None and len(base) == len(mine):
            ratios = [mine_r / base_r for mine_r, base_r in zip(row["round_img_s"], _rates(base, batch), strict=True)]
            stats = ratio_stats(ratios)
            row.update(speedup=stats["ratio"], speedup_min=stats["ratio_min"], speedup_max=stats["ratio_max"])
            row.update(speedup_spread=stats["ratio_spread"], rounds=stats["rounds"])
    return rows


def _rates(loops: list[LoopResult], batch: int) -> list[float]:
    return [batch * len(loop.samples_s) / loop.total_s for loop in loops]


def _in_mode(step: Any, precision: str, cuda: bool) -> Any:
    """`step` under its series' math mode and no_grad: series with different modes alternate within one round."""

    def run() -> Any:
        with math_mode(precision, cuda), torch.no_grad():
            return step()

    return run


def _failed(row: dict[str, Any], e: BaseException, label: str, opts: Options) -> None:
    if not is_oom(e):
        row.update(status="error", reason=f"{type(e).__name__}: {first_line(e, 300)}")
        log.debug("%s batch %d failed: %s", label, row["batch"], row["reason"])  # printed with the table
    else:
        row.update(status="oom", reason=first_line(e, 300))
        log.warning("%s batch %d: out of memory", label, row["batch"])
    if opts.cuda:
        torch.cuda.empty_cache()


def _agreement(
    series: dict[str, Any], rt: Runtime, reference: tuple[Any, Any], cfg: InferConfig, opts: Options, rows: list
) -> None:
    """Top-1 agreement with eager fp32 on the real images, after the timed sweep (compiled backends reuse shapes)."""
    try:
        with math_mode(series["precision"], opts.cuda):
            top1 = _infer_all(rt, reference[0], cfg.batches).argmax(1)
        series["top1_agreement"] = float((top1 == reference[1]).float().mean())
        series["agreement_n"] = len(top1)
        for row in rows:
            if (row.get("backend"), row.get("precision")) == (series["backend"], series["precision"]):
                row["top1_agreement"] = series["top1_agreement"]
    except Interrupted:
        raise
    except Exception as e:  # agreement is reported beside the speed; its failure must not hide the speed
        series["agreement_error"] = f"{type(e).__name__}: {first_line(e, 300)}"


def infer_flags(result: dict[str, Any], load: dict[str, Any]) -> list[str]:
    """Flags for every figure that cannot be trusted (and each row's short `flags` cell)."""
    out: list[str] = []
    for row in result["rows"]:
        if row.get("status") != "ok":
            continue
        what = f"{row['backend']} {row['precision']} batch {row['batch']}"
        flags = window_flags(what, row["timed_s"], row["iters"])
        if row.get("rounds"):
            stats = {k: row[f"speedup{k[5:]}"] for k in ("ratio", "ratio_min", "ratio_max", "ratio_spread")}
            flags += spread_flag(f"speedup of {what}", {**stats, "rounds": row["rounds"]})
        row["flags"] = ", ".join(dict.fromkeys(f.split(":")[0] for f in flags)) or None
        out += flags
    return out + load_flags(load)


def _artifact_backend(rt: Runtime, backend: str) -> str:
    return get_format(str(rt.info["format"])).runtime if rt.info.get("format") else backend


def _add_speedups(rows: list[dict[str, Any]]) -> None:
    base = {
        r["batch"]: r["img_s"]
        for r in rows
        if r.get("backend") == "eager" and r.get("precision") == "fp32" and r.get("status") == "ok"
    }
    for r in rows:  # rows timed in interleaved rounds already hold the median of their per-round ratios
        if r.get("status") == "ok" and r.get("batch") in base and "speedup" not in r:
            r["speedup"] = r["img_s"] / base[r["batch"]]


def series_label(backend: str, precision: str) -> str:
    return f"{backend} {precision}"


def write_infer_report(result: dict[str, Any], stem: Path) -> dict[str, str]:
    """The seed-shaped Markdown table (batch | img/s per series | p50/p90/p99 ms), the full table as CSV, the
    whole result as JSON, and two PNGs: throughput vs batch, latency vs throughput."""
    rows, series = result["rows"], result["series"]
    ok_series = [s for s in series if s.get("status") == "ok"]
    batches = sorted({r["batch"] for r in rows if r.get("batch") is not None})
    by_key = {(r["backend"], r["precision"], r["batch"]): r for r in rows if r.get("batch") is not None}

    def cell(r: dict[str, Any] | None, kind: str) -> str:
        if r is None:
            return "-"
        if r.get("status") != "ok":
            return str(r.get("status")).upper()
        if kind == "img_s":
            return format_cell(float(r["img_s"]))
        return " / ".join(f"{r[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms"))

    wide, columns = [], [("batch", "batch")]
    for s in ok_series:
        name = series_label(s["backend"], s["precision"])
        columns += [(f"{name}|img_s", f"{name} img/s"), (f"{name}|lat", f"{name} p50 / p90 / p99 ms")]
    for b in batches:
        line: dict[str, Any] = {"batch": b}
        for s in ok_series:
            name = series_label(s["backend"], s["precision"])
            r = by_key.get((s["backend"], s["precision"], b))
            line[f"{name}|img_s"], line[f"{name}|lat"] = cell(r, "img_s"), cell(r, "lat")
        wide.append(line)

    env = result["env"]
    device = env["gpus"][0]["name"] if env.get("gpus") else f"CPU ({env.get('cpu', '?')})"
    md = [f"# ResNet-50 v1.5 inference: img/s by batch size on {device}", ""]
    md += [f"- {line}" for line in report.env_lines(env)]
    md += [f"- Weights: {result['weights']}"]
    md += [f"- Method: {m}" for m in result["method"]]
    done = result.get("finished_batches")
    if done is not None and len(done) < len(result["config"]["batches"]):
        md.append(f"- PARTIAL: batch sizes {', '.join(map(str, done))} of {result['config']['batches']} finished")
    md += [f"- flag: {f}" for f in result.get("flags", [])]
    md += ["", markdown_table(wide, columns)]
    series_cols = [
        ("backend", "backend"),
        ("precision", "precision"),
        ("status", "status"),
        ("build_s", "build s"),
        ("provider", "provider"),
        ("top1_agreement", "top-1 agreement vs eager fp32"),
        ("agreement_n", "images"),
        ("reason", "reason"),
    ]
    md += ["## Series", "", markdown_table(series, series_cols)]
    if result.get("agreement_images"):
        md.append(
            f"Top-1 agreement on {result['agreement_images']['n']} real images from "
            f"{result['agreement_images']['dir']}.\n"
        )
    full = [r for r in rows if r.get("batch") is not None]
    md += ["## All measurements", "", markdown_table(full, ROW_COLUMNS)]

    paths = {"md": stem.with_name(stem.name + ".md"), "csv": stem.with_name(stem.name + ".csv")}
    paths["json"] = stem.with_name(stem.name + ".json")
    from rn50.io import atomic_write_json, atomic_write_text

    atomic_write_text(paths["md"], "\n".join(md))
    atomic_write_text(paths["csv"], csv_text(rows, ROW_COLUMNS))
    atomic_write_json(paths["json"], {k: v for k, v in result.items() if k != "paths"})

    thr: dict[str, tuple[list[float], list[float]]] = {}
    lat: dict[str, tuple[list[float], list[float]]] = {}
    labels: dict[str, list[str]] = {}
    for s in ok_series:
        name = series_label(s["backend"], s["precision"])
        pts = [
            by_key[(s["backend"], s["precision"], b)] for b in batches if (s["backend"], s["precision"], b) in by_key
        ]
        pts = [r for r in pts if r.get("status") == "ok"]
        thr[name] = ([r["batch"] for r in pts], [r["img_s"] for r in pts])
        lat[name] = ([r["img_s"] for r in pts], [r["p50_ms"] for r in pts])
        labels[name] = [str(r["batch"]) for r in pts]
    size = result["config"]["image_size"]
    where = f"{size} px, {device}, torch {env.get('packages', {}).get('torch', '?')}"
    paths["throughput_png"] = report.plot_lines(
        thr,
        stem.with_name(stem.name + "-throughput.png"),
        "batch size",
        "images / s",
        f"ResNet-50 throughput vs batch ({where})",
        logx=True,
    )
    paths["latency_png"] = report.plot_lines(
        lat,
        stem.with_name(stem.name + "-latency.png"),
        "images / s",
        "p50 latency per batch (ms)",
        f"ResNet-50 latency vs throughput, points labelled by batch ({where})",
        logy=True,
        labels=labels,
    )
    return {k: str(v) for k, v in paths.items()}
