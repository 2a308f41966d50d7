"""Does an INT8 ONNX model give the same logits on every integer kernel path ONNX Runtime has on this CPU?

ONNX Runtime's MLAS picks its x86 integer kernels by CPUID alone, so one machine cannot run another's; but session
settings send the same Q/DQ model through different integer arithmetic on the machine at hand:

- default: the QLinearConvs run MLAS's ConvSym kernel for this CPU (AVX2, AVX-512, AVX-VNNI or AVX-512 VNNI), the
  classifier (QGemm) its QGEMM kernel (AMX on a Xeon that has it);
- `session.disable_prepacking=1`: every QLinearConv goes through QGEMM instead (through AMX on an AMX Xeon);
- `session.x64quantprecision=1` (x86 only): int8 weights outside [-64, 64] become uint8, so the U8U8 kernels run (a
  no-op for the CPU form's 7-bit weights).

Exact kernels give bit-identical logits on all of them: the integer sums are exact and the float requantisation after
them computes the same thing on either path (measured on AVX-512 VNNI EPYCs, Zen 4 and Zen 5); a difference is a
kernel bug (ONNX Runtime had AMX and AVX-VNNI QGEMM bugs before 1.25.0) or a saturating
kernel (AVX2 and AVX-512 without VNNI add pairs of uint8 x int8 products in int16, which 8-bit weights can overflow).
`session.disable_quant_qdq=1` runs the graph's float emulation (DQ -> float op -> Q) instead, which rounds
differently: it is compared by top-1, not bit for bit.

Sources (microsoft/onnxruntime): core/mlas/lib/platform.cpp (dispatch), core/mlas/lib/convsym.cpp,
core/providers/cpu/quantization/qlinearconv.cc (PrePack), core/optimizer/qdq_transformer/avx2_weight_s8_to_u8.h,
include/onnxruntime/core/session/onnxruntime_session_options_config_keys.h (the keys).
"""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np
from torch import Tensor

from rn50.env import cpu_flags, cpu_model, cpu_signature
from rn50.errors import UserError, need
from rn50.export.runner import require

INTEGER_PATHS: dict[str, dict[str, str]] = {
    "default": {},
    "disable_prepacking": {"session.disable_prepacking": "1"},
    "x64quantprecision": {"session.x64quantprecision": "1"},
}
FLOAT_EMULATION = {"session.disable_quant_qdq": "1"}
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


class KernelPathError(UserError):
    """Two exact integer kernel paths gave different logits for the same model on this CPU."""

    exit_code = 1


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def kernel_family(flags: list[str] | None = None) -> str:
    """The MLAS x86 integer kernel family CPUID selects here (platform.cpp), and whether its sums are exact."""
    have = set(cpu_flags(INT8_FLAGS) if flags is None else flags)
    if not is_x86():
        return f"{platform.machine()} (not x86)"
    if "amx_int8" in have:
        return "AVX-512 VNNI convolutions, AMX QGEMM where the OS grants AMX (exact)"
    if "avx512_vnni" in have:
        return "AVX-512 VNNI (exact)"
    if "avx_vnni" in have:
        return "AVX-VNNI (exact)"
    if {"avx512f", "avx512bw"} <= have:
        return "AVX-512 core (int16 pair sums: saturate beyond 7-bit weights)"
    if "avx2" in have:
        return "AVX2 (int16 pair sums: saturate beyond 7-bit weights)"
    return "SSE (exact, slow)"


def _logits(path: str | os.PathLike, config: dict[str, str], images: Tensor, batch: int, threads: int | None):
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: c.contiguous().numpy()})[0] for c in images.split(batch)])


def check_kernel_paths(
    path: str | os.PathLike, images: Tensor, batch: int = 16, threads: int | None = None, enforce: bool = True
) -> dict[str, Any]:
    """Run the INT8 ONNX model at `path` on `images` under every integer kernel path and the float emulation.
    Returns the figures (with this CPU, its flags and the ONNX Runtime version); raises KernelPathError when an
    integer path's logits differ from the default's and `enforce`."""
    import onnxruntime as ort

    paths = {k: v for k, v in INTEGER_PATHS.items() if is_x86() or k != "x64quantprecision"}
    logits = {name: _logits(path, config, images, batch, threads) for name, config in paths.items()}
    base = logits["default"]
    emulated = _logits(path, FLOAT_EMULATION, images, batch, threads)
    flags = cpu_flags(INT8_FLAGS)
    result: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "cpu_model": cpu_model(),
        "cpu_signature": cpu_signature(),
        "cpu_flags": flags,
        "kernel_family": kernel_family(flags),
        "images": int(base.shape[0]),
        "paths": {
            name: {
                "session_config": paths[name],
                "bit_identical": bool(np.array_equal(got, base)),
                "max_abs": float(np.abs(got - base).max()),
            }
            for name, got in logits.items()
        },
        "float_emulation": {
            "session_config": FLOAT_EMULATION,
            "top1_agreement": float((emulated.argmax(1) == base.argmax(1)).mean()),
            "max_abs": float(np.abs(emulated - base).max()),
        },
    }
    result["bit_identical"] = all(p["bit_identical"] for p in result["paths"].values())
    if enforce and not result["bit_identical"]:
        raise KernelPathError(disagreement(result))
    return result


def summary(result: dict[str, Any]) -> str:
    """One line for people: each path's verdict and the float emulation's top-1 agreement."""
    paths = result["paths"]
    verdicts = ", ".join(f"{k} {'bit-identical' if p['bit_identical'] else 'DIFFERS'}" for k, p in paths.items())
    emulation = result["float_emulation"]
    return (
        f"kernel paths on {result['cpu_model']} ({result['kernel_family']}), onnxruntime {result['onnxruntime']}, "
        f"{result['images']} images: {verdicts}; float emulation top-1 {100 * emulation['top1_agreement']:.1f}% "
        f"(max |diff| {emulation['max_abs']:.3g} logits)"
    )


def disagreement(result: dict[str, Any]) -> str:
    """One line: which paths differ from the default, on which CPU and ONNX Runtime, and what to do."""
    differ = {name: p["max_abs"] for name, p in result["paths"].items() if not p["bit_identical"]}
    return (
        f"INT8 kernel paths disagree on this CPU ({result['cpu_model']}, {result['kernel_family']}) with onnxruntime "
        f"{result['onnxruntime']}: {', '.join(differ)} differ from the default by up to {max(differ.values()):.3g} "
        "logits; upgrade onnxruntime (1.25.0 fixed AMX and AVX-VNNI QGEMM bugs) or report this model upstream"
    )


def self_test(model: str | os.PathLike, data: str | os.PathLike, n: int = 64) -> dict[str, Any]:
    """`rn50 eval MODEL DATA --kernel-paths`: the check on the first `n` images of DATA's val split, for an INT8
    ONNX artifact copied to this machine (one line if MODEL is anything else)."""
    from pathlib import Path

    from rn50.export.images import load_images
    from rn50.export.sidecar import read_sidecar, sidecar_image_size

    onnx = require("onnx", "onnx")
    path = Path(model)
    need(path.is_file(), f"model not found: {path}")
    graph = onnx.load(os.fspath(path), load_external_data=False).graph if path.suffix == ".onnx" else None
    if graph is None or not any(node.op_type == "DequantizeLinear" for node in graph.node):
        raise UserError(f"--kernel-paths needs an INT8 ONNX model (Q/DQ, from `rn50 export --precision int8`): {path}")
    dims = graph.input[0].type.tensor_type.shape.dim
    size = sidecar_image_size(read_sidecar(path) or {}) or dims[-1].dim_value or 224
    return check_kernel_paths(path, load_images(data, "val", n, size), enforce=False)
