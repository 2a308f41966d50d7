"""The artifact formats: one record per format, read by `rn50 export`, `rn50 bench infer` and `rn50 eval`.

A record says everything rn50 knows about a format: its names (the export name, the runtime name bench uses,
aliases), the suffixes it is written and recognised with, the precisions it can be exported in (the first is the
default), the functions that export and load it (`exporter(model, path, opts) -> details` and
`loader(path, device, sidecar, threads) -> Runner`, named "module:function" and imported on first use) and how
Triton serves it. Triton itself is a packaging step: `kind="package"` wraps a finished artifact of one of its
`backends` in a model repository.

Adding a format: one module with an exporter and a loader, one `Format(...)` entry below, tests.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rn50.errors import UserError, need

CALIB_METHODS = ("minmax", "entropy", "percentile")
INT8_TARGETS = ("cpu", "tensorrt")
# Suffixes also used for training checkpoints: such a file is an artifact only with a sidecar beside it.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar")


@dataclass(frozen=True)
class TritonSpec:
    platform: str  # config.pbtxt `platform`
    model_file: str  # the file name inside <repo>/rn50/<version>/
    io_names: tuple[str, str]  # (input, output) tensor names the server sees
    backend: str = ""  # config.pbtxt `backend`, for the backends named that way instead of by a platform


@dataclass(frozen=True)
class Format:
    name: str  # what `rn50 export --format` takes and the sidecar's "format" says
    runtime: str  # what `rn50 bench infer --backend` takes and its tables say
    suffixes: tuple[str, ...]  # the first is what export writes; all are recognised
    precisions: tuple[str, ...]  # the first is the default
    exporter: str = ""  # "module:function"; function(model, path, opts: ExportOptions) -> sidecar "export" details
    loader: str = ""  # "module:function"; function(path, device, sidecar, threads) -> Runner
    aliases: tuple[str, ...] = ()
    needs_cuda: bool = False  # built and run on a CUDA GPU only
    cpu_only: bool = False  # built and run on the CPU, whatever --device says
    int8_target: str | None = None  # the INT8 Q/DQ form this format needs (None: whichever the device suits)
    triton: TritonSpec | None = None  # how Triton serves it (None: not servable by Triton)
    kind: str = "artifact"  # or "package": wraps an artifact of one of `backends`
    backends: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, self.runtime, *self.aliases)

    @property
    def suffix(self) -> str:
        return self.suffixes[0] if self.suffixes else ""

    @property
    def is_package(self) -> bool:
        return self.kind == "package"

    def export(self, model: Any, path: Path, opts: ExportOptions) -> dict[str, Any]:
        return _resolve(self.exporter)(model, path, opts)

    def load(self, path: Path, device: Any, sidecar: dict[str, Any], threads: int | None = None, **options: Any) -> Any:
        return _resolve(self.loader)(path, device, sidecar, threads, **options)


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


REGISTRY: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "onnx",
            runtime="onnxruntime",
            suffixes=(".onnx",),
            precisions=("fp32", "fp16", "int8", "tf32"),
            exporter="rn50.export.quant:export",
            loader="rn50.export.onnx:load_onnx",
            triton=TritonSpec("onnxruntime_onnx", "model.onnx", ("input", "logits")),
        ),
        Format(
            "torchscript",
            runtime="torchscript",
            suffixes=(".ts", ".pt"),
            precisions=("fp32", "fp16", "bf16", "tf32"),
            exporter="rn50.export.torchscript:export",
            loader="rn50.export.torchscript:load_torchscript",
            # TorchScript keeps no tensor names: Triton's PyTorch backend maps `<name>__<index>` to positions.
            triton=TritonSpec("pytorch_libtorch", "model.pt", ("input__0", "logits__0")),
        ),
        Format(
            "aoti",
            runtime="aoti",
            suffixes=(".pt2",),
            precisions=("fp32", "fp16", "bf16", "tf32"),
            exporter="rn50.export.aoti:export",
            loader="rn50.export.aoti:load_aoti",
            aliases=("aotinductor",),
        ),
        Format(
            "trt",
            runtime="tensorrt",
            suffixes=(".plan", ".engine"),
            precisions=("fp16", "bf16", "fp32", "tf32", "int8"),
            exporter="rn50.export.trt:export",
            loader="rn50.export.trt:load_trt",
            needs_cuda=True,
            int8_target="tensorrt",
            triton=TritonSpec("tensorrt_plan", "model.plan", ("input", "logits")),
        ),
        Format(
            "openvino",
            runtime="openvino",
            suffixes=(".ov", ".xml"),  # a folder holding model.xml + model.bin, or the .xml beside its .bin
            precisions=("fp32", "bf16", "int8"),
            exporter="rn50.export.openvino:export",
            loader="rn50.export.openvino:load_openvino",
            aliases=("ov",),
            int8_target="cpu",
            cpu_only=True,  # OpenVINO's GPU plugin is for Intel GPUs
            triton=TritonSpec("", "model.xml", ("input", "logits"), backend="openvino"),
        ),
        Format(
            "triton",
            runtime="triton",
            suffixes=(),
            precisions=("fp32", "fp16", "int8"),
            kind="package",
            backends=("onnx", "torchscript", "trt", "openvino"),
        ),
    )
}
FORMATS = tuple(REGISTRY)  # export names, in the order help and errors list them
_BY_NAME = {n: f for f in REGISTRY.values() for n in f.names}


def get_format(name: str) -> Format:
    """The record for an export name, a runtime name or an alias; one line listing the valid names otherwise."""
    found = _BY_NAME.get(str(name).lower())
    need(found is not None, f"unknown format {name!r}; valid formats: {', '.join(FORMATS)}")
    return found


def artifact_formats() -> list[Format]:
    """The formats that are files a runtime loads (not packages)."""
    return [f for f in REGISTRY.values() if not f.is_package]


def format_by_suffix(path: str | os.PathLike) -> Format | None:
    suffix = Path(path).suffix.lower()
    return next((f for f in artifact_formats() if suffix in f.suffixes), None)


def artifact_format(path: str | os.PathLike, sidecar: dict[str, Any] | None) -> Format:
    """The format of an artifact file: its sidecar's word first, then its suffix."""
    if sidecar and sidecar.get("format"):
        return get_format(sidecar["format"])
    found = format_by_suffix(path)
    if found is None:
        from rn50.export.sidecar import sidecar_path

        known = sorted(s for f in artifact_formats() for s in f.suffixes)
        raise UserError(
            f"cannot tell the format of {path}: no sidecar ({sidecar_path(path).name}) and an unknown suffix; "
            f"known suffixes: {', '.join(known)}"
        )
    return found


def is_artifact(path: str | os.PathLike) -> bool:
    """An exported artifact rather than a training checkpoint: a sidecar beside it, or an artifact-only suffix."""
    from rn50.export.sidecar import sidecar_path

    path = Path(path)
    if sidecar_path(path).is_file():
        return True
    found = format_by_suffix(path)
    return found is not None and path.suffix.lower() not in CHECKPOINT_SUFFIXES


INT8_STEM = ("int8", "float")


@dataclass
class ExportOptions:
    """Everything an export can be asked for besides its source, format and output path."""

    precision: str | None = None  # None: the format's default (fp16 for trt, fp32 elsewhere)
    max_batch: int = 256
    image_size: int = 224
    calib_dir: str | os.PathLike | None = None  # INT8 calibration images (None: the built-in sample)
    calib_method: str = "minmax"
    calib_count: int = 64
    int8_target: str | None = None  # None: tensorrt for trt and for a cuda device, cpu otherwise
    int8_stem: str = "float"  # the first convolution kept float (default) or in int8 ("int8": faster)
    images_dir: str | os.PathLike | None = None  # real images for the parity check (None: the built-in sample)
    parity_images: int = 16
    force: bool = False
    verify: bool = True
    simplify: bool = False
    device: str = "cpu"  # where torchscript/aoti are traced and run (trt: always cuda)
    triton_backend: str = "onnx"
    workspace_gib: float = 4.0
    timing_cache: str | os.PathLike | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # format-specific settings a new format may read

    def resolved(self, fmt: Format) -> ExportOptions:
        """A copy with the defaults filled in for the artifact format `fmt`, every value checked (one line each)."""
        precision = self.precision or fmt.precisions[0]
        if precision not in fmt.precisions:
            raise UserError(
                f"{fmt.name} does not support precision {precision!r}; it supports {', '.join(fmt.precisions)}"
            )
        if precision == "tf32" and not (fmt.needs_cuda or str(self.device).startswith("cuda")):
            raise UserError(
                "tf32 is a CUDA math mode (Ampere or newer GPUs): export it with --device cuda; on a CPU use fp32"
            )
        method, size = self.calib_method, self.image_size
        need(method in CALIB_METHODS, f"unknown calibration method {method!r}; valid: {', '.join(CALIB_METHODS)}")
        need(self.max_batch >= 1, f"--max-batch must be >= 1, got {self.max_batch}")
        need(size >= 32 and size % 32 == 0, f"--image-size must be a multiple of 32 and >= 32, got {size}")
        need(self.int8_stem in INT8_STEM, f"unknown --int8-stem {self.int8_stem!r}; valid: {', '.join(INT8_STEM)}")
        target = self.int8_target
        if target is None:
            target = fmt.int8_target or ("tensorrt" if str(self.device).startswith("cuda") else "cpu")
        elif target not in INT8_TARGETS:
            raise UserError(f"unknown --int8-target {target!r}; valid: {', '.join(INT8_TARGETS)}")
        elif fmt.int8_target is not None and target != fmt.int8_target:
            raise UserError(
                f"{fmt.name} is built from the {fmt.int8_target} Q/DQ form: use --int8-target {fmt.int8_target} "
                "(or leave it out)"
            )
        return replace(self, precision=precision, int8_target=target)


def packaged_format(package: Format, opts: ExportOptions) -> tuple[Format, ExportOptions]:
    """The artifact format a package (Triton) wraps and the options with the package's default precision,
    checked against what the package can serve."""
    backend = opts.triton_backend
    need(backend in package.backends, f"unknown Triton backend {backend!r}; valid: {', '.join(package.backends)}")
    inner = get_format(backend)
    precision = opts.precision or package.precisions[0]
    if precision not in package.precisions:
        raise UserError(
            f"{package.name} does not support precision {precision!r}; it supports {', '.join(package.precisions)}"
        )
    if precision not in inner.precisions:
        raise UserError(
            f"{package.name} with the {inner.name} backend does not support {precision!r}; "
            f"it supports {', '.join(inner.precisions)}"
        )
    return inner, replace(opts, precision=precision)
