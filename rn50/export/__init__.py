"""Export ResNet-50 v1.5 to deployable artifacts, each proven against eager PyTorch, and load them back.

from rn50.export import export_model, load_artifact, SUPPORTED
result = export_model("ckpt.pth", "onnx", "model.onnx", precision="fp16")   # or an nn.Module as source
runner = load_artifact(result.path, device="cpu")                            # runner(x) -> logits
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rn50.errors import UserError
from rn50.export.runner import Runner
from rn50.export.sidecar import build_sidecar, read_sidecar, sha256_file, sidecar_path

log = logging.getLogger(__name__)

# Format -> precisions it can be exported in; the first is the default. Every artifact keeps a float32
# interface (`input` float32 NCHW -> `logits` float32): casts to fp16/bf16 live inside the artifact.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32", "fp16", "int8"),
    "torchscript": ("fp32", "fp16", "bf16"),
    "aoti": ("fp32", "fp16", "bf16"),
    "trt": ("fp16", "bf16", "fp32", "int8"),
    "triton": ("fp32", "fp16", "int8"),
}
FORMATS = tuple(SUPPORTED)
SUFFIX = {"onnx": ".onnx", "torchscript": ".ts", "aoti": ".pt2", "trt": ".plan", "triton": ""}
CALIB_METHODS = ("minmax", "entropy", "percentile")
TRITON_BACKENDS = ("onnx", "torchscript", "trt")
_LOAD_SUFFIX = {".onnx": "onnx", ".ts": "torchscript", ".pt": "torchscript", ".pt2": "aoti", ".plan": "trt"}
_LOAD_SUFFIX[".engine"] = "trt"

__all__ = [
    "CALIB_METHODS",
    "FORMATS",
    "SUPPORTED",
    "TRITON_BACKENDS",
    "ExportResult",
    "Runner",
    "default_precision",
    "export_model",
    "load_artifact",
    "supported",
]


def supported() -> dict[str, tuple[str, ...]]:
    """Formats and the precisions each can be exported in (first = default)."""
    return dict(SUPPORTED)


def default_precision(fmt: str) -> str:
    return SUPPORTED[fmt][0]


@dataclass
class ExportResult:
    path: Path
    sidecar: dict[str, Any]
    sidecar_path: Path
    export_seconds: float

    @property
    def parity(self) -> dict[str, Any] | None:
        return self.sidecar.get("parity")


def _check_options(fmt: str, precision: str | None, calib_method: str, max_batch: int, image_size: int) -> str:
    if fmt not in SUPPORTED:
        raise UserError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    precision = precision or default_precision(fmt)
    if precision not in SUPPORTED[fmt]:
        raise UserError(f"{fmt} does not support precision {precision!r}; it supports {', '.join(SUPPORTED[fmt])}")
    if calib_method not in CALIB_METHODS:
        raise UserError(f"unknown calibration method {calib_method!r}; valid: {', '.join(CALIB_METHODS)}")
    if max_batch < 1:
        raise UserError(f"--max-batch must be >= 1, got {max_batch}")
    if image_size < 32 or image_size % 32:
        raise UserError(f"--image-size must be a multiple of 32 and >= 32, got {image_size}")
    return precision


_SAMPLE_DIR: Path | None = None


def builtin_sample() -> Path:
    """The built-in digits sample, written once per process into a temporary folder."""
    global _SAMPLE_DIR
    if _SAMPLE_DIR is None:
        from rn50.data.sample import make_sample

        folder = Path(tempfile.mkdtemp(prefix="rn50-sample-"))
        atexit.register(shutil.rmtree, folder, True)
        make_sample(folder)
        _SAMPLE_DIR = folder
    return _SAMPLE_DIR


def image_folder(root: str | os.PathLike | None, split: str) -> Path:
    """A folder of class subfolders: `root/split` when it exists, else `root` itself (built-in sample if None)."""
    from rn50.data.transforms import list_images

    base = builtin_sample() if root is None else Path(root)
    if not base.is_dir():
        raise UserError(f"image folder not found: {base}")
    for candidate in (base / split, base / ("val" if split == "train" else "train"), base):
        if candidate.is_dir() and list_images(candidate):
            return candidate
    raise UserError(f"no images under {base} (expected class folders of images, as in ImageNet's train/ or val/)")


def load_images(root: str | os.PathLike | None, split: str, n: int, image_size: int) -> Tensor:
    from rn50.data.transforms import load_eval_images

    return load_eval_images(image_folder(root, split), n, image_size)


def _resolve_source(source: str | os.PathLike | nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    if isinstance(source, nn.Module):
        # A copy: exporting must not move, cast or re-mode the caller's model.
        return copy.deepcopy(source).cpu().float(), {"source": None, "source_sha256": None, "recipe": None}
    from rn50.weights import checkpoint_meta, load_model

    path = Path(source)
    model = load_model(path)
    return model, {
        "source": str(path.resolve()),
        "source_sha256": sha256_file(path),
        "recipe": checkpoint_meta(path).get("recipe"),
    }


def default_output(source: str | os.PathLike | nn.Module, fmt: str, precision: str, backend: str = "onnx") -> Path:
    if isinstance(source, nn.Module):
        raise UserError("an in-memory model has no default output path; pass out=")
    source = Path(source)
    if fmt == "triton":
        return source.with_name(f"{source.stem}-triton-{backend}-{precision}")
    return source.with_name(f"{source.stem}-{precision}{SUFFIX[fmt]}")


def _temp_beside(out: Path, suffix: str) -> Path:
    # Same folder as the target so the final rename is atomic; the suffix survives for tools that check it.
    return out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


def _write_failed(e: RuntimeError) -> bool:
    text = str(e)
    return any(s in text for s in ("PytorchStreamWriter failed", "unexpected pos", "file write failed", "strerror:"))


def _write_failure_reason(e: RuntimeError) -> str:
    """torch's "... open file failed with strerror: Read-only file system" as our one line with its hint."""
    from rn50.io import WRITE_ERRNOS

    text = str(e)
    for code, hint in WRITE_ERRNOS.items():
        if f"strerror: {os.strerror(code)}" in text:
            return f"{os.strerror(code)} ({hint})"
    return f"{_first_line(e)} (is the disk full? free some space or choose another --out)"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _check_int8_target(target: str | None, fmt: str, device: str) -> str:
    from rn50.export.quant import INT8_TARGETS

    if target is None:
        return "tensorrt" if fmt == "trt" or str(device).startswith("cuda") else "cpu"
    if target not in INT8_TARGETS:
        raise UserError(f"unknown --int8-target {target!r}; valid: {', '.join(INT8_TARGETS)}")
    if fmt == "trt" and target != "tensorrt":
        raise UserError(
            "TensorRT engines are built from the symmetric Q/DQ form: use --int8-target tensorrt (or leave it out)"
        )
    return target


def _resolve_device(fmt: str, device: str) -> torch.device:
    if fmt == "trt":
        from rn50.export.trt import require_trt

        require_trt()
        return torch.device("cuda")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA GPU is visible here (torch.cuda.is_available() is False)")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
    return dev


def export_model(
    source: str | os.PathLike | nn.Module,
    fmt: str,
    out: str | os.PathLike | None = None,
    precision: str | None = None,
    max_batch: int = 256,
    image_size: int = 224,
    calib_dir: str | os.PathLike | None = None,
    calib_method: str = "minmax",
    calib_count: int = 64,
    images_dir: str | os.PathLike | None = None,
    parity_images: int = 16,
    force: bool = False,
    verify: bool = True,
    simplify: bool = False,
    device: str = "cpu",
    triton_backend: str = "onnx",
    workspace_gib: float = 4.0,
    timing_cache: str | os.PathLike | None = None,
    int8_target: str | None = None,
) -> ExportResult:
    """Export `source` (a checkpoint path or an nn.Module) to `fmt` at `out`, prove parity, write the sidecar.

    precision None means the format's default (fp16 for trt, fp32 elsewhere). Nothing is written at `out` until
    parity passes; an existing `out` is replaced only with force=True. int8_target picks the INT8 Q/DQ form
    ("cpu" for ONNX Runtime's CPU provider, "tensorrt" for TensorRT; None: tensorrt for trt and for a cuda device,
    cpu otherwise; see rn50.export.quant).
    """
    precision = _check_options(fmt, precision, calib_method, max_batch, image_size)
    if fmt == "triton" and triton_backend not in TRITON_BACKENDS:
        raise UserError(f"unknown Triton backend {triton_backend!r}; valid: {', '.join(TRITON_BACKENDS)}")
    if fmt == "triton":
        inner_precisions = SUPPORTED[triton_backend]
        if precision not in inner_precisions:
            raise UserError(
                f"triton with the {triton_backend} backend does not support {precision!r}; "
                f"it supports {', '.join(inner_precisions)}"
            )
    out = Path(out) if out is not None else default_output(source, fmt, precision, triton_backend)
    if out.exists() or sidecar_path(out).exists():
        if not force:
            raise UserError(f"{out} already exists; pass --force to replace it")
    artifact_fmt = triton_backend if fmt == "triton" else fmt
    int8_target = _check_int8_target(int8_target, artifact_fmt, device)
    dev = _resolve_device(artifact_fmt, device)
    model, provenance = _resolve_source(source)
    model = model.eval()
    num_classes = int(model.fc.out_features) if hasattr(model, "fc") else int(model(torch.zeros(1, 3, 32, 32)).shape[1])

    from rn50.io import write_error

    tmp = _temp_beside(out, SUFFIX[artifact_fmt] if fmt != "triton" else "")
    try:  # before the export (minutes for TensorRT): can anything be written there at all?
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.touch()
        tmp.unlink()
    except OSError as e:
        raise (write_error(out, e) or e) from None
    try:
        start = time.perf_counter()
        if fmt == "triton":
            tmp.mkdir(parents=True)
            inner_rel = (
                Path("rn50") / "1" / f"model{ {'onnx': '.onnx', 'torchscript': '.pt', 'trt': '.plan'}[triton_backend] }"
            )
            artifact = tmp / inner_rel
            artifact.parent.mkdir(parents=True)
        else:
            artifact = tmp
        details = _build(
            artifact_fmt,
            model,
            artifact,
            precision,
            image_size,
            max_batch,
            dev,
            calib_dir,
            calib_method,
            calib_count,
            simplify,
            workspace_gib,
            timing_cache,
            int8_target,
        )
        export_seconds = time.perf_counter() - start
        sidecar = build_sidecar(
            fmt=artifact_fmt,
            precision=precision,
            source=provenance["source"],
            source_sha256=provenance["source_sha256"],
            recipe=provenance["recipe"],
            num_classes=num_classes,
            image_size=image_size,
            max_batch=max_batch,
            device=str(dev),
            extra={"export": details, "export_seconds": round(export_seconds, 3)},
        )
        if verify:
            real = load_images(images_dir, "val", parity_images, image_size)
            runner = load_artifact(artifact, device=str(dev), sidecar=sidecar)
            start = time.perf_counter()
            from rn50.export.verify import check_parity

            sidecar["parity"] = check_parity(
                model, runner, precision, image_size, real, max_batch=max_batch, label=f"{artifact_fmt} export"
            )
            sidecar["parity"]["seconds"] = round(time.perf_counter() - start, 3)
            del runner
        else:
            sidecar["parity"] = None
        if fmt == "triton":
            from rn50.export.triton import write_config

            sidecar["triton"] = write_config(
                tmp / "rn50", triton_backend, precision, num_classes, image_size, max_batch, device=str(dev)
            )
        from rn50.io import atomic_write_json

        atomic_write_json(sidecar_path(artifact), sidecar)
        if out.exists() and force:
            _remove(out)
            sidecar_path(out).unlink(missing_ok=True)
        os.replace(tmp, out)
        if fmt != "triton":
            os.replace(sidecar_path(tmp), sidecar_path(out))
    except OSError as e:  # full disk, read-only folder, ... while writing the artifact or its sidecar
        raise (write_error(out, e) or e) from None
    except RuntimeError as e:
        # torch's own file writers (TorchScript, AOTInductor packages) report a failed write without an errno.
        if not _write_failed(e):
            raise
        raise UserError(f"cannot write {out}: {_write_failure_reason(e)}; nothing was replaced") from None
    finally:
        # exists() first: on a read-only file system unlinking even a missing file fails (EROFS).
        for leftover in (tmp, sidecar_path(tmp)):
            if leftover.exists():
                _remove(leftover)
    final = out / inner_rel if fmt == "triton" else out
    return ExportResult(path=out, sidecar=sidecar, sidecar_path=sidecar_path(final), export_seconds=export_seconds)


def _build(
    fmt: str,
    model: nn.Module,
    path: Path,
    precision: str,
    image_size: int,
    max_batch: int,
    device: torch.device,
    calib_dir: str | os.PathLike | None,
    calib_method: str,
    calib_count: int,
    simplify: bool,
    workspace_gib: float,
    timing_cache: str | os.PathLike | None,
    int8_target: str = "cpu",
) -> dict[str, Any]:
    if fmt == "onnx" and precision == "int8":
        from rn50.export.quant import export_onnx_int8

        calib = load_images(calib_dir, "train", calib_count, image_size)
        return export_onnx_int8(
            model, path, calib, calib_method, image_size, max_batch, simplify=simplify, target=int8_target
        )
    if fmt == "onnx":
        from rn50.export.onnx import export_onnx

        return export_onnx(model, path, precision, image_size, max_batch, simplify=simplify)
    if fmt == "torchscript":
        from rn50.export.torchscript import export_torchscript

        return export_torchscript(model, path, precision, image_size, device=str(device))
    if fmt == "aoti":
        from rn50.export.aoti import export_aoti

        return export_aoti(model, path, precision, image_size, max_batch, device=str(device))
    if fmt == "trt":
        from rn50.export.trt import export_trt

        calib = load_images(calib_dir, "train", calib_count, image_size) if precision == "int8" else None
        return export_trt(
            model,
            path,
            precision,
            image_size,
            max_batch,
            calib=calib,
            calib_method=calib_method,
            workspace_gib=workspace_gib,
            timing_cache=timing_cache,
        )
    raise AssertionError(fmt)


def _find_triton_model(repo: Path) -> Path:
    configs = [repo / "config.pbtxt"] if (repo / "config.pbtxt").exists() else sorted(repo.glob("*/config.pbtxt"))
    for config in configs:
        versions = sorted(
            (p for p in config.parent.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
        )
        for version in reversed(versions):
            models = sorted(version.glob("model.*"))
            models = [m for m in models if m.suffix != ".json"]
            if models:
                return models[0]
    raise UserError(f"{repo} is a folder but not a Triton model repository with a model file (<model>/1/model.*)")


def load_artifact(
    path: str | os.PathLike, device: str = "cpu", sidecar: dict[str, Any] | None = None, threads: int | None = None
) -> Runner:
    """Load any exported artifact (or a Triton repository made by export) as a Runner: `runner(x) -> logits`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"artifact not found: {path}")
    if path.is_dir():
        path = _find_triton_model(path)
    if sidecar is None:
        sidecar = read_sidecar(path) or {}
    fmt = sidecar.get("format") or _LOAD_SUFFIX.get(path.suffix)
    if fmt is None:
        raise UserError(
            f"cannot tell the format of {path}: no sidecar ({sidecar_path(path).name}) and an unknown suffix; "
            f"known suffixes: {', '.join(sorted(_LOAD_SUFFIX))}"
        )
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but no CUDA GPU is visible here")
    if fmt == "onnx":
        from rn50.export.onnx import load_onnx

        return load_onnx(path, dev, sidecar, threads=threads)
    if fmt == "torchscript":
        from rn50.export.torchscript import load_torchscript

        return load_torchscript(path, dev, sidecar)
    if fmt == "aoti":
        from rn50.export.aoti import load_aoti

        return load_aoti(path, dev, sidecar)
    if fmt == "trt":
        from rn50.export.trt import load_trt

        return load_trt(path, dev, sidecar)
    raise UserError(f"unknown artifact format {fmt!r} in {sidecar_path(path)}")
