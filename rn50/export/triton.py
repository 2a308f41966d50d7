"""A Triton Inference Server model repository: `<repo>/rn50/config.pbtxt` + `<repo>/rn50/1/model.{onnx,pt,plan}`.

config.pbtxt is produced from Triton's own ModelConfig protobuf (shipped in tritonclient), so field names and
enum values cannot drift from what the server parses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rn50.export.runner import require

MODEL_NAME = "rn50"
PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch", "trt": "tensorrt_plan"}
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "trt": "model.plan"}
# TorchScript keeps no tensor names: Triton's PyTorch backend maps `<name>__<index>` to positions.
IO_NAMES = {"onnx": ("input", "logits"), "torchscript": ("input__0", "logits__0"), "trt": ("input", "logits")}


def model_config(
    backend: str, num_classes: int, image_size: int, max_batch: int, device: str = "cpu"
) -> Any:  # model_config_pb2.ModelConfig
    require("tritonclient.grpc", "triton", "tritonclient")
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=MODEL_NAME, platform=PLATFORMS[backend], max_batch_size=max_batch)
    in_name, out_name = IO_NAMES[backend]
    # Every artifact keeps a float32 interface; fp16/bf16/int8 casts and Q/DQ live inside the model.
    config.input.add(name=in_name, data_type=mc.TYPE_FP32, dims=[3, image_size, image_size])
    config.output.add(name=out_name, data_type=mc.TYPE_FP32, dims=[num_classes])
    preferred = [b for b in (8, 16, 32, 64, 128) if b <= max_batch]
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    config.dynamic_batching.max_queue_delay_microseconds = 100
    if backend == "trt" or (backend == "torchscript" and device.startswith("cuda")):
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
    elif backend == "torchscript":
        # A trace on CPU holds CPU constants: keep its instances on CPU.
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    return config


def write_config(
    model_dir: str | os.PathLike,
    backend: str,
    precision: str,
    num_classes: int,
    image_size: int,
    max_batch: int,
    device: str = "cpu",
) -> dict[str, Any]:
    from google.protobuf import text_format

    config = model_config(backend, num_classes, image_size, max_batch, device)
    path = Path(model_dir) / "config.pbtxt"
    path.write_text(text_format.MessageToString(config))
    return {
        "model_name": MODEL_NAME,
        "platform": config.platform,
        "backend": backend,
        "precision": precision,
        "config": str(path.name),
        "model_file": f"1/{MODEL_FILES[backend]}",
        "max_batch_size": max_batch,
    }


def read_config(path: str | os.PathLike) -> Any:
    """Parse a config.pbtxt with Triton's protobuf (raises on any unknown field or bad value)."""
    require("tritonclient.grpc", "triton", "tritonclient")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())
