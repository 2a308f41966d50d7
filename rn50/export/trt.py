"""TensorRT engines built from the ONNX export, against the current Python API (TensorRT 10.x and 11.x).

Precision lives in the ONNX, not in builder flags: TensorRT 11 accepts only strongly typed networks (the FP16/INT8
flags and the INT8 calibrators are gone), so an fp16 ONNX gives an FP16 engine, a bf16 ONNX a BF16 one and the
Q/DQ ONNX an INT8 one. On 10.x the STRONGLY_TYPED network flag gives the same behaviour. fp32 is IEEE fp32: the
TF32 builder flag (on by default) is cleared unless the precision is tf32. I/O uses named tensors
(`set_input_shape`, `set_tensor_address`, `execute_async_v3`) on the engine's own CUDA stream; one optimisation
profile spans batch 1..max-batch.

UNVERIFIED here: the development machines have no GPU. Tests carry the `gpu` marker.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rn50.errors import UserError, need
from rn50.export.formats import ExportOptions
from rn50.export.onnx import INPUT
from rn50.export.quant import export as export_onnx_format
from rn50.export.runner import Runner

log = logging.getLogger(__name__)


def require_trt():
    """The tensorrt module, or one line saying what is missing and how to get it."""
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError("TensorRT is not installed: pip install 'rn50[trt]' (it also needs an NVIDIA GPU)") from None
    if not torch.cuda.is_available():
        raise UserError(
            "TensorRT needs an NVIDIA GPU with a working CUDA driver; none is visible here "
            "(torch.cuda.is_available() is False)"
        )
    return trt


def gpu_identity(device: int = 0) -> dict[str, str]:
    import tensorrt as trt

    major, minor = torch.cuda.get_device_capability(device)
    return {
        "tensorrt": trt.__version__,
        "gpu": torch.cuda.get_device_name(device),
        "compute_capability": f"{major}.{minor}",
    }


def default_timing_cache() -> Path:
    """One cache per TensorRT version and GPU architecture, shared by every build on this machine."""
    ident = gpu_identity()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rn50" / "tensorrt"
    return base / f"timing-trt{ident['tensorrt']}-sm{ident['compute_capability'].replace('.', '')}.cache"


def make_logger():
    """A TensorRT logger that forwards to `logging` and keeps the errors for the one-line message."""
    import tensorrt as trt

    severity = trt.ILogger.Severity

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level, msg) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif level == severity.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return Logger()


def network_flags(version: str, strongly_typed_flag: Any) -> tuple[int, bool]:
    """(network creation flags, whether the network is strongly typed) for this TensorRT version.

    10.x with the STRONGLY_TYPED flag: opt in; 11.x and later: always strongly typed (the flag is deprecated and
    ignored); older builds without the flag: weakly typed (the builder picks layer precisions itself).
    """
    if int(version.split(".")[0]) >= 11:
        return 0, True
    if strongly_typed_flag is None:
        return 0, False
    return 1 << int(strongly_typed_flag), True


# A bf16 engine is built from an opset-22 ONNX: TensorRT 10.0's parser takes opsets 9-20, 10.15's 9-24
# (onnx-tensorrt docs/operators.md of each release).
BF16_MIN_TRT = (10, 15)


def check_parser_takes(precision: str, version: str) -> None:
    if precision == "bf16" and tuple(int(p) for p in version.split(".")[:2]) < BF16_MIN_TRT:
        raise UserError(
            f"a bf16 engine is built from an opset-22 ONNX, which TensorRT {version}'s parser does not take "
            f"(TensorRT {'.'.join(map(str, BF16_MIN_TRT))} and later do): upgrade TensorRT or use --precision fp16"
        )


def configure(config: Any, trt: Any, precision: str, workspace_gib: float) -> bool:
    """The builder settings rn50 chooses; returns whether TF32 is on (TensorRT's default), which only tf32 keeps."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    tf32 = precision == "tf32"
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    return tf32


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    image_size: int,
    max_batch: int,
    workspace_gib: float = 4.0,
    timing_cache: str | os.PathLike | None = None,
    precision: str = "fp16",
) -> dict[str, Any]:
    trt = require_trt()
    from rn50.io import atomic_path

    logger = make_logger()
    builder = trt.Builder(logger)
    flags, strongly_typed = network_flags(
        trt.__version__, getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT's ONNX parser rejected the model: {errors}")

    config = builder.create_builder_config()
    tf32 = configure(config, trt, precision, workspace_gib)
    profile = builder.create_optimization_profile()
    opt = max(1, min(max_batch, 32))
    shape = (3, image_size, image_size)
    profile.set_shape(INPUT, (1, *shape), (opt, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else default_timing_cache()
    blob = cache_path.read_bytes() if cache_path.exists() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, False)  # ignore_mismatch=False: a cache from another GPU/version is not reused

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError("TensorRT could not build the engine: " + ("; ".join(logger.errors[-3:]) or "unknown error"))
    Path(engine_path).write_bytes(bytes(serialized))
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {
        **gpu_identity(),
        "strongly_typed": strongly_typed,
        "tf32": tf32,
        "optimization_profile": {"min": 1, "opt": opt, "max": max_batch},
        "workspace_gib": workspace_gib,
        "timing_cache": str(cache_path),
        "timing_cache_reused": bool(blob),
    }


def export(model: nn.Module, path: str | os.PathLike, opts: ExportOptions) -> dict[str, Any]:
    """The onnx format's export (Q/DQ in TensorRT's form for int8, which `opts` is bound to; --simplify and
    --int8-stem honoured) -> engine. The ONNX goes to a temporary folder."""
    precision, size, max_batch = str(opts.precision), opts.image_size, opts.max_batch
    trt = require_trt()
    check_parser_takes(precision, trt.__version__)
    with tempfile.TemporaryDirectory(prefix="rn50-trt-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        details = export_onnx_format(model, onnx_path, opts)
        engine = build_engine(
            onnx_path, path, size, max_batch, opts.workspace_gib, opts.timing_cache, precision=precision
        )
    return {"onnx": details, "engine": engine}


def check_engine_compatible(sidecar: dict[str, Any], device: int = 0) -> None:
    """One clear line when the engine was built for another TensorRT version or GPU architecture."""
    built = (sidecar.get("export") or {}).get("engine") or {}
    if not built:
        return
    here = gpu_identity(device)
    if built.get("tensorrt") != here["tensorrt"] or built.get("compute_capability") != here["compute_capability"]:
        raise UserError(
            f"engine built with TensorRT {built.get('tensorrt')} for {built.get('gpu')} "
            f"(compute capability {built.get('compute_capability')}); this is TensorRT {here['tensorrt']} on "
            f"{here['gpu']} ({here['compute_capability']}): rebuild it here with `rn50 export CKPT --format trt`"
        )


class TrtRunner(Runner):
    format = "trt"

    def __init__(self, path: str, precision: str, sidecar: dict, device: torch.device):
        trt = require_trt()
        check_engine_compatible(sidecar, device.index or 0)
        self._logger = make_logger()
        self.runtime = trt.Runtime(self._logger)
        with torch.cuda.device(device):
            self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
            if self.engine is None:
                why = "; ".join(self._logger.errors[-2:]) or "not an engine for this TensorRT version/GPU"
                raise UserError(f"TensorRT cannot load {path}: {why}; rebuild it with `rn50 export --format trt`")
            self.context = self.engine.create_execution_context()
            # Its own stream: on the legacy default stream every enqueue syncs the host (TensorRT's own warning).
            self.stream = torch.cuda.Stream(device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        super().__init__(path, precision, sidecar, device, f"TensorRT {trt.__version__}")

    def run(self, x: Tensor) -> Tensor:
        if x.shape[0] > self.max_batch:
            raise UserError(f"batch {x.shape[0]} exceeds the engine's max batch {self.max_batch}; re-export")
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32, device=x.device)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        caller = torch.cuda.current_stream(x.device)
        self.stream.wait_stream(caller)  # x was written, and out allocated, on the caller's stream
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        # Neither buffer is reused before TensorRT is done with it; the caller's later work waits, the host does not.
        x.record_stream(self.stream)
        out.record_stream(self.stream)
        caller.wait_stream(self.stream)
        return out


def load_trt(path: str | os.PathLike, device: torch.device, sidecar: dict, threads: int | None = None) -> TrtRunner:
    need(device.type == "cuda", "a TensorRT engine runs only on an NVIDIA GPU: load it with device='cuda'")
    return TrtRunner(os.fspath(Path(path)), sidecar.get("precision", "fp16"), sidecar, device)
