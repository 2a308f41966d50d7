"""ONNX export (dynamo exporter, dynamic batch, `input` -> `logits`) and an ONNX Runtime runner."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rn50.errors import UserError
from rn50.export.runner import Runner, require, with_precision

log = logging.getLogger(__name__)
OPSET = 18  # >= 17; 18 is what the dynamo exporter targets natively (no version conversion pass)
INPUT, OUTPUT = "input", "logits"


def to_onnx_proto(model: nn.Module, precision: str, image_size: int, max_batch: int, opset: int = OPSET):
    """The ModelProto of `model` with a dynamic batch axis in [1, max_batch] and a float32 interface."""
    require("onnx", "onnx")
    require("onnxscript", "onnx", "onnxscript (the dynamo ONNX exporter)")
    wrapped = with_precision(model, precision)
    # The example batch must not be 1: torch.export specialises size-1 dims; the range still starts at 1.
    example = torch.randn(2, 3, image_size, image_size)
    # Newer torch defaults to the dynamo exporter, whose batch stays fixed unless dynamic_shapes says otherwise.
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapped,
            (example,),
            None,
            input_names=[INPUT],
            output_names=[OUTPUT],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    proto = program.model_proto
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return proto


def simplify_proto(proto):
    onnxsim = require("onnxsim", "onnx", "onnxsim (ONNX graph simplification)")
    simplified, ok = onnxsim.simplify(proto)
    if not ok:
        raise UserError("onnxsim could not validate the simplified graph; export again with --no-simplify")
    return simplified


def save_proto(proto, path: str | os.PathLike) -> None:
    """Check and save as one self-contained file (ResNet-50 is far below protobuf's 2 GiB limit)."""
    import onnx

    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, os.fspath(path), save_as_external_data=False)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    precision: str = "fp32",
    image_size: int = 224,
    max_batch: int = 256,
    simplify: bool = False,
    opset: int = OPSET,
) -> dict[str, Any]:
    proto = to_onnx_proto(model, precision, image_size, max_batch, opset)
    if simplify:
        proto = simplify_proto(proto)
    save_proto(proto, path)
    return {"opset": opset, "simplified": simplify, "nodes": len(proto.graph.node)}


def ort_providers(device: torch.device) -> list[str]:
    ort = require("onnxruntime", "onnx")
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UserError(
            "this ONNX Runtime has no CUDA execution provider: "
            "pip uninstall -y onnxruntime && pip install onnxruntime-gpu (or load with device='cpu')"
        )
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


class OnnxRunner(Runner):
    format = "onnx"

    def __init__(self, path: str, precision: str, sidecar: dict, device: torch.device, threads: int | None = None):
        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=ort_providers(device))
        except Exception as e:  # ORT raises its own exception types for unreadable or invalid models
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"ONNX Runtime cannot load {path}: {first}") from None
        super().__init__(path, precision, sidecar, device, self.session.get_providers()[0])
        outputs = self.session.get_outputs()
        self.output_name = outputs[0].name
        self.input_name = self.session.get_inputs()[0].name
        num_classes = outputs[0].shape[1]
        self.num_classes = int(num_classes) if isinstance(num_classes, int) else int(sidecar.get("num_classes", 0))

    def run(self, x: Tensor) -> Tensor:
        if self.provider == "CPUExecutionProvider":
            # torch CPU tensor -> numpy is a view, no copy.
            return torch.from_numpy(self.session.run([self.output_name], {self.input_name: x.numpy()})[0])
        # CUDA: bind the torch buffers directly so nothing goes through the host.
        import numpy as np

        out = torch.empty((x.shape[0], self.num_classes), dtype=torch.float32, device=x.device)
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", x.device.index or 0, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(self.output_name, "cuda", x.device.index or 0, np.float32, tuple(out.shape), out.data_ptr())
        torch.cuda.current_stream(x.device).synchronize()  # ORT runs on its own stream
        self.session.run_with_iobinding(binding)
        return out


def load_onnx(path: str | os.PathLike, device: torch.device, sidecar: dict, threads: int | None = None) -> OnnxRunner:
    return OnnxRunner(os.fspath(Path(path)), sidecar.get("precision", "fp32"), sidecar, device, threads=threads)
