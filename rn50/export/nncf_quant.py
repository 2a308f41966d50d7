"""INT8 by NNCF (OpenVINO's post-training quantiser) on an fp32 OpenVINO model, calibrated on real images.

NNCF inserts FakeQuantize nodes (per-channel symmetric int8 weights, per-tensor activations) with its own range
estimators and a fast bias correction; OpenVINO's CPU plugin fuses them into INT8 kernels. It is its own extra
(`rn50[openvino-quant]`: about 230 MB of scipy, scikit-learn, networkx, ... and numpy < 2.5).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rn50.export.images import calibration_images
from rn50.export.quant import LogWriter
from rn50.export.runner import require

if TYPE_CHECKING:
    from rn50.export.formats import ExportOptions

log = logging.getLogger(__name__)
PRESET = "PERFORMANCE"  # symmetric activations: NNCF's preset for CNNs


@contextlib.contextmanager
def _quiet(nncf_logger: logging.Logger) -> Iterator[None]:
    """NNCF writes progress and INFO lines to stdout, which would corrupt `rn50 export --json`: to the debug log."""
    sink = LogWriter(log)
    handlers = [h for h in nncf_logger.handlers if isinstance(h, logging.StreamHandler)]
    # Not setStream: it flushes the old stream, which may be closed (a stdout that was redirected at `import nncf`).
    before = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = sink
    try:
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        for handler, stream in zip(handlers, before, strict=True):
            handler.stream = stream


def quantize(model: Any, opts: ExportOptions) -> tuple[Any, dict[str, Any]]:
    """(the quantised OpenVINO model, the sidecar's "quantization" entry)."""
    # `model` came through rn50.export.openvino.openvino(), which turned telemetry off for NNCF too.
    nncf = require("nncf", "openvino-quant", "nncf (the NNCF quantizer)")
    # One image per item: NNCF's subset_size counts items, not images.
    items = [image.unsqueeze(0).numpy() for image in calibration_images(opts)]
    convs = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    float_nodes = convs[:1] if opts.int8_stem == "float" else []  # the stem: the first convolution
    kwargs: dict[str, Any] = {"ignored_scope": nncf.IgnoredScope(names=float_nodes)} if float_nodes else {}
    with _quiet(logging.getLogger("nncf")):
        quantized = nncf.quantize(
            model,
            nncf.Dataset(items),
            preset=getattr(nncf.QuantizationPreset, PRESET),
            target_device=nncf.TargetDevice.CPU,
            subset_size=len(items),
            fast_bias_correction=True,
            **kwargs,
        )
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    from importlib import metadata

    return quantized, {
        "tool": f"nncf.quantize {metadata.version('nncf')} (post-training, on the fp32 OpenVINO model)",
        "preset": PRESET.lower(),
        "target_device": "CPU",
        "activations": "int8 symmetric, per tensor (uint8 after a ReLU)",
        "weights": "int8 symmetric, per channel",
        "calibration": "NNCF defaults: activations mean over images of each image's min/max, weights min/max",
        "fast_bias_correction": True,
        "calibration_images": len(items),
        "float_nodes": float_nodes,
        "fake_quantize": fake_quantize,
    }
