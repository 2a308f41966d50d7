"""INT8 ONNX with explicit QuantizeLinear/DequantizeLinear pairs, calibrated on real images.

ONNX Runtime's own quantisation tool does the work: `quant_pre_process` (symbolic shape inference and ORT graph
optimisation, which folds BN into the convolutions), then `quantize_static` in QDQ format with per-channel symmetric
INT8 weights. The activations depend on where the model will run (`target`):

- "cpu" (ONNX Runtime's CPU provider): asymmetric UINT8 activations, ORT's recommended U8S8 form on x86. A ReLU's
  output range starts at 0, so its zero point is 0 and ORT folds the ReLU into the quantisation; every DQ -> Conv ->
  (ReLU) -> Q group then fuses into one QLinearConv and every residual add into a QLinearAdd. Weights have 7 bits
  (`reduce_range`, |w| <= 64): x86 CPUs without 8-bit dot products (AVX2, AVX-512 core) add pairs of uint8 x int8
  products in a saturating int16 (vpmaddubsw), and 2 * 255 * 64 = 32,640 fits where 2 * 255 * 127 does not, so
  every x86 kernel family computes the same integers as VNNI and AMX do. Measured on the sample model (AVX-512 VNNI
  EPYC, docs/results/int8-reduce-range-*): 8-bit weights give 498 saturating pair sums per 32 val images in
  emulation, 7-bit none; 100% top-1 agreement with fp32 either way; the same speed (7-bit / 8-bit medians
  0.99-1.07 over four interleaved runs).
- "tensorrt" (TensorRT, ORT's TensorRT provider): symmetric signed INT8 activations, every zero point 0, the only
  form TensorRT's explicit quantisation accepts. ORT's CPU provider cannot fold a ReLU into a symmetric signed
  range, so on the CPU this form leaves ReLUs and the convolutions that feed residual adds in float (measured on a
  2-core Zen 3 CPU: slower than fp32 ONNX); it is the form for GPUs.

The stem convolution stays float unless `--int8-stem int8` (see `export_onnx_int8`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from rn50.export.formats import INT8_TARGETS, ExportOptions
from rn50.export.images import calibration_images
from rn50.export.onnx import export_onnx
from rn50.export.runner import require

log = logging.getLogger(__name__)


class LogWriter(io.TextIOBase):
    """A stdout stand-in that sends what a library prints (progress bars, INFO lines) to a debug log."""

    def __init__(self, logger: logging.Logger = log) -> None:
        super().__init__()
        self.logger = logger

    def write(self, text: str) -> int:
        if text.strip():
            self.logger.debug("%s", text.rstrip())
        return len(text)


CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
CALIB_BATCH = 8


def _reader(images: Tensor, batch: int = CALIB_BATCH):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.chunks = iter([c.contiguous().numpy() for c in images.split(batch)])

        def get_next(self):
            chunk = next(self.chunks, None)
            return None if chunk is None else {"input": chunk}

    return Reader()


def qdq_summary(proto) -> dict[str, Any]:
    """Which ops run on quantised inputs, and whether every zero point is 0 (symmetric)."""
    from onnx import numpy_helper

    producers = {out: node for node in proto.graph.node for out in node.output}
    initializers = {t.name: t for t in proto.graph.initializer}
    quantized: Counter[str] = Counter()
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in node.input):
            quantized[node.op_type] += 1
    zero_points, per_channel_weights = [], 0
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) > 2 and node.input[2] in initializers:
            zp = numpy_helper.to_array(initializers[node.input[2]])
            zero_points.append(zp)
            if zp.ndim == 1 and zp.size > 1:
                per_channel_weights += 1
    counts = Counter(n.op_type for n in proto.graph.node)
    return {
        "quantize_linear": counts["QuantizeLinear"],
        "dequantize_linear": counts["DequantizeLinear"],
        "quantized_ops": dict(sorted(quantized.items())),
        "float_ops": {k: v for k, v in sorted(counts.items()) if k not in ("QuantizeLinear", "DequantizeLinear")},
        "all_zero_points_zero": all(int(abs(z).max()) == 0 for z in zero_points) if zero_points else False,
        "zero_point_dtypes": sorted({str(z.dtype) for z in zero_points}),
        "per_channel_weight_tensors": per_channel_weights,
    }


def ort_cpu_kernels(path: str | os.PathLike) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime's CPU provider actually runs once its QDQ fusions are done: shows
    whether every convolution became a QLinearConv or some stayed float."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="rn50-ort-opt-") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3  # the optimised file is hardware specific: fine, it is only counted
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])
        counts = Counter(n.op_type for n in onnx.load(so.optimized_model_filepath, load_external_data=False).graph.node)
    return dict(sorted(counts.items()))


def export(model: nn.Module, path: str | os.PathLike, opts: ExportOptions) -> dict[str, Any]:
    """The onnx format's exporter: float precisions through `export_onnx`, int8 as the Q/DQ model for
    `opts.int8_target`, calibrated on real images."""
    if opts.precision != "int8":
        return export_onnx(model, path, opts.precision, opts.image_size, opts.max_batch, simplify=opts.simplify)
    return export_onnx_int8(
        model,
        path,
        calibration_images(opts),
        opts.calib_method,
        opts.image_size,
        opts.max_batch,
        simplify=opts.simplify,
        keep_stem_float=opts.int8_stem == "float",
        target=opts.int8_target,
    )


def export_onnx_int8(
    model: nn.Module,
    path: str | os.PathLike,
    calib: Tensor,
    method: str = "minmax",
    image_size: int = 224,
    max_batch: int = 256,
    simplify: bool = False,
    percentile: float = 99.999,
    keep_stem_float: bool = True,
    target: str = "cpu",
    reduce_range: bool | None = None,
) -> dict[str, Any]:
    """Write the Q/DQ model for `target` ("cpu" or "tensorrt", see the module docstring) to `path`. Weights have
    7 bits for the cpu form and 8 for TensorRT's unless `reduce_range` says otherwise (benchmarks compare both)."""
    require("onnxruntime", "onnx")
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if target not in INT8_TARGETS:
        raise ValueError(f"unknown int8 target {target!r}; valid: {', '.join(INT8_TARGETS)}")
    symmetric = target == "tensorrt"
    reduce_range = target == "cpu" if reduce_range is None else reduce_range
    extra: dict[str, Any] = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    if target == "tensorrt":
        # Biases stay float: a quantised bias is an INT32 DequantizeLinear, which TensorRT's parser rejects (its
        # IDequantizeLayer takes INT8/FP8/INT4/FP4 only); TensorRT fuses the float bias into the INT8 convolution.
        extra["QuantizeBias"] = False
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    with tempfile.TemporaryDirectory(prefix="rn50-int8-") as tmp:
        fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        export_onnx(model, fp32, "fp32", image_size, max_batch, simplify=simplify)
        quant_pre_process(fp32, pre)
        graph = onnx.load(os.fspath(pre), load_external_data=False).graph
        # The stem conv reads the normalised image (3 channels, 3% of the MACs). Float by default: on a weak early
        # model quantising it cost top-1 agreement (86% vs 99% on the sample). `--int8-stem int8` quantises it, so
        # its output and the max pool after it stay 8-bit: 11.5% faster at batch 8, 224 px on an AVX-512 VNNI EPYC
        # (interleaved rounds), at 100% agreement on the sample's 360 val images for the sample model (32 px) and
        # for a 224 px model alike.
        stem = [n.name for n in graph.node if n.op_type == "Conv" and graph.input[0].name in n.input]
        exclude = stem if keep_stem_float else []
        # ORT's histogram calibrators print progress to stdout, which would corrupt `rn50 export --json`.
        with contextlib.redirect_stdout(LogWriter()):
            quantize_static(
                pre,
                os.fspath(path),
                _reader(calib),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=reduce_range,
                calibrate_method=getattr(CalibrationMethod, CALIBRATION[method]),
                calibration_providers=["CPUExecutionProvider"],
                extra_options=extra,
                nodes_to_exclude=exclude,
            )
    proto = onnx.load(os.fspath(path))
    onnx.checker.check_model(proto)
    kernels = {"ort_cpu_kernels": ort_cpu_kernels(path)} if target == "cpu" else {}
    return {
        "opset": int(next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))),
        "quantization": {
            "tool": "onnxruntime.quantization.quantize_static (after quant_pre_process)",
            "format": "QDQ",
            "target": target,
            "bias": "float" if target == "tensorrt" else "int32",
            "activations": "int8 symmetric, per tensor" if symmetric else "uint8 asymmetric, per tensor",
            "weights": f"int8 symmetric, per channel{', 7-bit (reduce_range)' if reduce_range else ''}",
            "reduce_range": reduce_range,
            "calibration": method,
            **({"percentile": percentile} if method == "percentile" else {}),
            "calibration_images": int(calib.shape[0]),
            "float_nodes": exclude,
            **qdq_summary(proto),
            **kernels,
        },
    }
