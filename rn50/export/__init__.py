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

from rn50.errors import UserError, first_line, need
from rn50.export.formats import (
    FORMATS,
    ExportOptions,
    Format,
    artifact_format,
    format_by_suffix,
    get_format,
    packaged_format,
)
from rn50.export.images import image_folder, load_images
from rn50.export.runner import Runner, math_mode, math_of
from rn50.export.sidecar import build_sidecar, read_sidecar, sidecar_path

log = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "ExportOptions",
    "ExportResult",
    "Format",
    "Runner",
    "export_model",
    "get_format",
    "image_folder",
    "load_artifact",
    "load_images",
]


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
    need(not isinstance(source, nn.Module), "an in-memory model has no default output path; pass out=")
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
    need(dev.type in ("cpu", "cuda"), f"--device must be cpu or cuda, got {device!r}")
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
    from rn50.io import write_error

    job = _ExportJob(source, fmt, out, dataclasses.replace(options or ExportOptions(), **overrides))
    out, tmp = job.out, job.writable_temp()
    try:
        artifact, sidecar, export_seconds = job.run(tmp)
        _publish(tmp, out, artifact, sidecar, job.opts.force, job.package is not None)
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
    final = out / artifact.relative_to(tmp) if job.package else out
    return ExportResult(path=out, sidecar=sidecar, sidecar_path=sidecar_path(final), export_seconds=export_seconds)


class _ExportJob:
    """One export: the format, options and paths resolved up front (one line for what is wrong, before any work),
    then the artifact written into a temporary path with its sidecar and its parity proven."""

    def __init__(self, source: str | os.PathLike | nn.Module, fmt: str, out, opts: ExportOptions) -> None:
        record = get_format(fmt)
        self.package = record if record.is_package else None
        if self.package is not None:
            record, opts = packaged_format(self.package, opts)
        opts = opts.resolved(record)
        self.record, self.precision = record, str(opts.precision)
        target = self.package or record
        self.out = Path(out) if out is not None else default_output(source, target, self.precision, opts.triton_backend)
        if (self.out.exists() or sidecar_path(self.out).exists()) and not opts.force:
            raise UserError(f"{self.out} already exists; pass --force to replace it")
        self.dev = _resolve_device(record, opts.device)
        self.check_dev = _parity_device(record, self.dev, self.precision) if opts.verify else self.dev
        self.opts = dataclasses.replace(opts, device=str(self.dev))
        model, self.provenance = _resolve_source(source)
        self.model = model.eval()
        fc = getattr(model, "fc", None)
        self.num_classes = int(fc.out_features) if fc is not None else int(model(torch.zeros(1, 3, 32, 32)).shape[1])

    def writable_temp(self) -> Path:
        """The temporary path beside `out`, after checking (before minutes of TensorRT) that it can be written."""
        from rn50.io import write_error

        tmp = _temp_beside(self.out, "" if self.package else self.record.suffix)
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            tmp.touch()
            tmp.unlink()
        except OSError as e:
            raise (write_error(self.out, e) or e) from None
        return tmp

    def run(self, tmp: Path) -> tuple[Path, dict[str, Any], float]:
        """(the artifact written under `tmp`, its sidecar with the parity results, export seconds)."""
        record, opts, precision = self.record, self.opts, self.precision
        start = time.perf_counter()
        if self.package:
            tmp.mkdir(parents=True)
        artifact = tmp / f"model{record.suffix}" if self.package else tmp
        with math_mode(precision, self.dev.type == "cuda"):  # Inductor bakes the TF32 choice into its kernels
            details = record.export(self.model, artifact, opts)
        export_seconds = time.perf_counter() - start
        sidecar = build_sidecar(
            fmt=record.name,
            precision=precision,
            source=self.provenance["source"],
            source_sha256=self.provenance["source_sha256"],
            recipe=self.provenance["recipe"],
            num_classes=self.num_classes,
            image_size=opts.image_size,
            max_batch=opts.max_batch,
            device=str(self.dev),
            extra={"math": math_of(precision), "export": details, "export_seconds": round(export_seconds, 3)},
        )
        sidecar["parity"] = self.verify(artifact, sidecar) if opts.verify else None
        if self.package:
            from rn50.export import triton

            artifact, sidecar["triton"] = triton.package(
                artifact, tmp, record.name, precision, self.num_classes, opts.image_size, opts.max_batch, str(self.dev)
            )
        return artifact, sidecar, export_seconds

    def verify(self, artifact: Path, sidecar: dict[str, Any]) -> dict[str, Any]:
        """Parity with eager fp32 on random and real images, on the device that checks it; INT8 ONNX also on
        every integer kernel path ONNX Runtime has here."""
        from rn50.export.verify import check_parity

        opts, precision = self.opts, self.precision
        real = load_images(opts.images_dir, "val", opts.parity_images, opts.image_size)
        runner = load_artifact(artifact, device=str(self.check_dev), sidecar=sidecar)
        start = time.perf_counter()
        label = f"{self.record.name} export"
        parity = check_parity(self.model, runner, precision, opts.image_size, real, opts.max_batch, label=label)
        if self.record.name == "onnx" and precision == "int8":
            from rn50.export.kernel_paths import check_kernel_paths

            # The CPU form must give one answer on every integer kernel path (7-bit weights); the TensorRT form's
            # 8-bit weights may saturate on the CPU provider of x86 CPUs without VNNI: recorded only.
            parity["kernel_paths"] = check_kernel_paths(
                artifact, real, batch=min(16, opts.max_batch), enforce=opts.int8_target == "cpu"
            )
        parity.update(runtime=runner.provider, seconds=round(time.perf_counter() - start, 3))
        return parity


def _publish(tmp: Path, out: Path, artifact: Path, sidecar: dict[str, Any], force: bool, package: bool) -> None:
    """The sidecar beside the artifact, then both moved onto `out` (an existing one replaced only with force)."""
    from rn50.io import atomic_write_json

    atomic_write_json(sidecar_path(artifact), sidecar)
    if out.exists() and force:
        _remove(out)
        sidecar_path(out).unlink(missing_ok=True)
    os.replace(tmp, out)
    if not package:
        os.replace(sidecar_path(tmp), sidecar_path(out))


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
    need(path.exists(), f"artifact not found: {path}")
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
