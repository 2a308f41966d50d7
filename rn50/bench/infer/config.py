"""bench infer's configuration: the options and their checks, what to load, which series to run, the images
agreement and calibration use, the result's file name and the method lines every table carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from rn50.bench.report import file_tag
from rn50.bench.runtimes import PRECISIONS, RUNTIMES
from rn50.errors import UserError, need
from rn50.export.formats import artifact_format, is_artifact
from rn50.export.sidecar import read_sidecar, sidecar_image_size


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
        need(bool(self.batches) and min(self.batches) >= 1, "batch sizes must be >= 1")
        bad = [b for b in self.backends if b not in RUNTIMES]
        need(not bad, f"unknown backend {', '.join(bad)}; choose from {', '.join(RUNTIMES)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        need(not bad, f"unknown precision {', '.join(bad)}; choose from {', '.join(PRECISIONS)}")
        cuda = self.device.startswith("cuda")
        need(self.device == "cpu" or cuda, f"bad --device {self.device!r}: use cpu or cuda (cuda:N)")
        need(not cuda or torch.cuda.is_available(), "--device cuda but PyTorch sees no CUDA GPU here; use --device cpu")
        need(cuda or not self.cuda_graphs, "--cuda-graphs needs --device cuda")
        need(cuda or not self.include_h2d, "--include-h2d needs --device cuda (on CPU there is no host-to-device copy)")
        need(self.iters is None or self.min_time is None, "give --iters or --min-time, not both")
        need(self.iters is not None or self.min_time is not None, "give --iters N or --min-time S")
        need(self.iters is None or self.iters >= 1, f"--iters must be >= 1, got {self.iters}")
        need(self.min_time is None or self.min_time > 0, f"--min-time must be > 0 seconds, got {self.min_time}")
        need(self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}")
        need(self.rounds >= 1, f"--rounds must be >= 1, got {self.rounds}")
        need(self.image_size >= 32, f"--image-size must be >= 32 (ResNet-50 downsamples 32x), got {self.image_size}")
        artifact = self.source is not None and is_artifact(Path(self.source))
        need(
            self.source is None or Path(self.source).is_file() or artifact,
            f"not a file: {self.source} (give a checkpoint or an exported artifact)",
        )
        for name, path in (("--images", self.images), ("--calib-dir", self.calib_dir)):
            need(path is None or Path(path).is_dir(), f"{name} {path}: not a folder")
        need(not Path(self.out).exists() or Path(self.out).is_dir(), f"--out {self.out} is a file; give a folder")
        keep = self.keep_artifacts
        need(keep is None or not Path(keep).is_file(), f"--keep-artifacts {keep} is a file; give a folder")
        if artifact:
            _check_artifact_size(Path(self.source), self.image_size)

    @property
    def layout(self) -> str:
        return "nhwc" if self.channels_last else "nchw"


def _check_artifact_size(path: Path, image_size: int) -> None:
    size = sidecar_image_size(read_sidecar(path) or {})
    need(not size or size == image_size, f"{path} was exported for {size} px images; pass --image-size {size}")


def load_source(cfg: InferConfig) -> tuple[torch.nn.Module, str]:
    """(model for the eager/compile/export backends, a description of the weights)."""
    from rn50.model import resnet50

    if cfg.source is not None and not is_artifact(Path(cfg.source)):
        from rn50.weights import load_model

        model = load_model(cfg.source, num_classes=cfg.num_classes)
        return model, f"checkpoint {cfg.source}"
    num_classes = cfg.num_classes
    if cfg.source is not None:  # an artifact: the eager baseline gets the artifact's class count
        num_classes = num_classes or int((read_sidecar(cfg.source) or {}).get("num_classes") or 0) or None
    torch.manual_seed(0)
    model = resnet50(num_classes=num_classes or 1000).eval()
    weights = "random init (seed 0): speed does not depend on the weights"
    if cfg.source is not None:
        weights = f"artifact {cfg.source}; the eager fp32 baseline is a random-init model of the same shape"
    return model, weights


def images_dirs(cfg: InferConfig, workdir: Path) -> tuple[Path | None, Path | None]:
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
    return file_tag("-".join(parts))


def plan_series(cfg: InferConfig, artifact: Path | None) -> list[tuple[str, str]]:
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


def method_lines(cfg: InferConfig) -> list[str]:
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
        "fp32 is IEEE fp32 on every backend (TF32 off in cuDNN, TensorRT and ONNX Runtime's CUDA provider; ONNX "
        "Runtime's TensorRT provider, which cannot turn TF32 off, is not used for fp32); tf32 turns TF32 on",
        "cuDNN autotuner (cudnn.benchmark) on" if cfg.device.startswith("cuda") else "CPU: no cuDNN",
        f"CPU threads: torch {torch.get_num_threads()}, ONNX Runtime {cfg.threads or 'its default (all cores)'}",
    ]
    if any(b.startswith("openvino") for b in cfg.backends):
        lines.append(
            "OpenVINO: fp32 runs with INFERENCE_PRECISION_HINT=f32; latency = 1 stream, 1 infer request; "
            "openvino-throughput = the THROUGHPUT hint's streams, one request per stream (AsyncInferQueue), each "
            "batch split across them; threads, streams and kernels per series in the JSON"
        )
    return lines
