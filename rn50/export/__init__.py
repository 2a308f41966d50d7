"""Export ResNet-50 v1.5 to deployable artifacts, each proven against eager PyTorch, and load them back.

from rn50.export import export_model, load_artifact, ExportOptions
result = export_model("ckpt.pth", "onnx", "model.onnx", precision="fp16")   # or an nn.Module as source
result = export_model("ckpt.pth", "trt", options=ExportOptions(precision="int8", calib_dir="imagenet"))
runner = load_artifact(result.path, device="cpu")                            # runner(x) -> logits

What each format is (names, suffixes, precisions, exporter, loader) lives in rn50.export.formats.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rn50.errors import UserError, first_line
from rn50.export.formats import (
    CALIB_METHODS,
    FORMATS,
    REGISTRY,
    ExportOptions,
    Format,
    artifact_format,
    format_by_suffix,
    get_format,
    is_artifact,
    packaged_format,
)
from rn50.export.images import builtin_sample, image_folder, load_images
from rn50.export.runner import Runner, math_mode, math_of
from rn50.export.sidecar import build_sidecar, read_sidecar, sidecar_path

log = logging.getLogger(__name__)

__all__ = [
    "CALIB_METHODS",
    "FORMATS",
    "REGISTRY",
    "ExportOptions",
    "ExportResult",
    "Format",
    "Runner",
    "builtin_sample",
    "default_precision",
    "export_model",
    "get_format",
    "image_folder",
    "is_artifact",
    "load_artifact",
    "load_images",
]


def default_precision(fmt: str) -> str:
    return get_format(fmt).precisions[0]


@dataclass
class ExportResult:
    path: Path
    sidecar: dict[str, Any]
    sidecar_path: Path
    export_seconds: float


def _resolve_source(source: str | os.PathLike | nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    if isinstance(source, nn.Module):
        # A copy: exporting must not move, cast or re-mode the caller's model.
        return copy.deepcopy(source).cpu().float(), {"source": None, "source_sha256": None, "recipe": None}
    from rn50.weights import meta_from, model_from, read_checkpoint_hashed

    path = Path(source)
    obj, digest = read_checkpoint_hashed(path)  # one read: weights, recipe and hash
    model = model_from(obj, path)
    return model, {"source": str(path.resolve()), "source_sha256": digest, "recipe": meta_from(obj).get("recipe")}


def default_output(source: str | os.PathLike | nn.Module, fmt: Format, precision: str, backend: str = "onnx") -> Path:
    if isinstance(source, nn.Module):
        raise UserError("an in-memory model has no default output path; pass out=")
    source = Path(source)
    if fmt.is_package:
        return source.with_name(f"{source.stem}-{fmt.name}-{backend}-{precision}")
    return source.with_name(f"{source.stem}-{precision}{fmt.suffix}")


def _temp_beside(out: Path, suffix: str) -> Path:
    # Same folder as the target so the final rename is atomic; the suffix survives for tools that check it.
    return out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


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
    return f"{first_line(e, 200)} (is the disk full? free some space or choose another --out)"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _resolve_device(fmt: Format, device: str) -> torch.device:
    if fmt.needs_cuda:
        if fmt.name == "trt":
            from rn50.export.trt import require_trt

            require_trt()
        return torch.device("cuda")
    if fmt.cpu_only:
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA GPU is visible here (torch.cuda.is_available() is False)")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
    return dev


def _parity_device(fmt: Format, dev: torch.device, precision: str) -> torch.device:
    """Where the parity check runs: the export device, except that an ONNX model is checked on ONNX Runtime's CPU
    provider when the installed ONNX Runtime has no CUDA one (onnxruntime rather than onnxruntime-gpu)."""
    if fmt.runtime != "onnxruntime" or dev.type != "cuda":
        return dev
    from rn50.export.onnx import cuda_provider_available

    if cuda_provider_available():
        return dev
    if precision == "tf32":
        raise UserError("tf32 ONNX runs on ONNX Runtime's CUDA provider: pip install onnxruntime-gpu (or use fp32)")
    log.warning("ONNX Runtime has no CUDA provider here (onnxruntime, not onnxruntime-gpu): parity checked on the CPU")
    return torch.device("cpu")


def export_model(
    source: str | os.PathLike | nn.Module,
    fmt: str,
    out: str | os.PathLike | None = None,
    options: ExportOptions | None = None,
    **overrides: Any,
) -> ExportResult:
    """Export `source` (a checkpoint path or an nn.Module) to `fmt` at `out`, prove parity, write the sidecar.

    `options` (an ExportOptions) and/or keyword overrides of its fields (precision=, max_batch=, device=, ...).
    precision None means the format's default (fp16 for trt, fp32 elsewhere). Nothing is written at `out` until
    parity passes; an existing `out` is replaced only with force=True. A Triton repository is the artifact of
    `triton_backend`, exported and verified as usual, then packaged (rn50.export.triton.package).
    """
    opts = dataclasses.replace(options or ExportOptions(), **overrides)
    record = get_format(fmt)
    package = record if record.is_package else None
    if package is not None:
        record, opts = packaged_format(package, opts)
    opts = opts.resolved(record)
    precision = opts.precision
    assert precision is not None
    out = Path(out) if out is not None else default_output(source, package or record, precision, opts.triton_backend)
    if (out.exists() or sidecar_path(out).exists()) and not opts.force:
        raise UserError(f"{out} already exists; pass --force to replace it")
    dev = _resolve_device(record, opts.device)
    check_dev = _parity_device(record, dev, precision) if opts.verify else dev
    opts = dataclasses.replace(opts, device=str(dev))
    model, provenance = _resolve_source(source)
    model = model.eval()
    num_classes = int(model.fc.out_features) if hasattr(model, "fc") else int(model(torch.zeros(1, 3, 32, 32)).shape[1])

    from rn50.io import write_error

    tmp = _temp_beside(out, "" if package else record.suffix)
    try:  # before the export (minutes for TensorRT): can anything be written there at all?
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.touch()
        tmp.unlink()
    except OSError as e:
        raise (write_error(out, e) or e) from None
    try:
        start = time.perf_counter()
        if package:
            tmp.mkdir(parents=True)
            artifact = tmp / f"model{record.suffix}"
        else:
            artifact = tmp
        cuda = dev.type == "cuda"
        with math_mode(precision, cuda):  # Inductor bakes the TF32 choice into the kernels it compiles
            details = record.export(model, artifact, opts)
        export_seconds = time.perf_counter() - start
        sidecar = build_sidecar(
            fmt=record.name,
            precision=precision,
            source=provenance["source"],
            source_sha256=provenance["source_sha256"],
            recipe=provenance["recipe"],
            num_classes=num_classes,
            image_size=opts.image_size,
            max_batch=opts.max_batch,
            device=str(dev),
            extra={"math": math_of(precision), "export": details, "export_seconds": round(export_seconds, 3)},
        )
        if opts.verify:
            real = load_images(opts.images_dir, "val", opts.parity_images, opts.image_size)
            runner = load_artifact(artifact, device=str(check_dev), sidecar=sidecar)
            start = time.perf_counter()
            from rn50.export.verify import check_parity

            with math_mode(precision, cuda):
                sidecar["parity"] = check_parity(
                    model, runner, precision, opts.image_size, real, opts.max_batch, label=f"{record.name} export"
                )
            sidecar["parity"].update(runtime=runner.provider, seconds=round(time.perf_counter() - start, 3))
            del runner
        else:
            sidecar["parity"] = None
        if package:
            from rn50.export import triton

            artifact, sidecar["triton"] = triton.package(
                artifact, tmp, record.name, precision, num_classes, opts.image_size, opts.max_batch, device=str(dev)
            )
        from rn50.io import atomic_write_json

        atomic_write_json(sidecar_path(artifact), sidecar)
        if out.exists() and opts.force:
            _remove(out)
            sidecar_path(out).unlink(missing_ok=True)
        os.replace(tmp, out)
        if not package:
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
    final = out / artifact.relative_to(tmp) if package else out
    return ExportResult(path=out, sidecar=sidecar, sidecar_path=sidecar_path(final), export_seconds=export_seconds)


def load_artifact(
    path: str | os.PathLike,
    device: str = "cpu",
    sidecar: dict[str, Any] | None = None,
    threads: int | None = None,
    **options: Any,
) -> Runner:
    """Load any exported artifact (or a Triton repository made by export) as a Runner: `runner(x) -> logits`.
    `options` go to the format's loader (openvino: mode="latency" | "throughput")."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"artifact not found: {path}")
    if path.is_dir() and format_by_suffix(path) is None:  # a folder artifact (.ov) is not a repository
        from rn50.export.triton import find_model

        path = find_model(path)
    if sidecar is None:
        sidecar = read_sidecar(path) or {}
    fmt = artifact_format(path, sidecar)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but no CUDA GPU is visible here")
    return fmt.load(path, dev, sidecar, threads, **options)
