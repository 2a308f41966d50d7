"""A Triton Inference Server model repository: `<repo>/rn50/config.pbtxt` + `<repo>/rn50/1/model.{onnx,pt,plan}`.

Packaging, not a format: `package` lays a finished, verified artifact (and its sidecar) out as a repository. What
each backend's file is called, its platform and tensor names come from the format registry (`Format.triton`).

config.pbtxt is produced from Triton's own ModelConfig protobuf (shipped in tritonclient), so field names and
enum values cannot drift from what the server parses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rn50.errors import UserError, need
from rn50.export.formats import TritonSpec, get_format
from rn50.export.runner import require

MODEL_NAME = "rn50"
VERSION = "1"


def spec(backend: str) -> TritonSpec:
    fmt = get_format(backend)
    need(fmt.triton is not None, f"Triton does not serve {fmt.name} artifacts")
    return fmt.triton


def model_config(
    backend: str, num_classes: int, image_size: int, max_batch: int, device: str = "cpu"
) -> Any:  # model_config_pb2.ModelConfig
    require("tritonclient.grpc", "triton", "tritonclient")
    from tritonclient.grpc import model_config_pb2 as mc

    triton = spec(backend)
    config = mc.ModelConfig(name=MODEL_NAME, platform=triton.platform, backend=triton.backend, max_batch_size=max_batch)
    in_name, out_name = triton.io_names
    # Every artifact keeps a float32 interface; fp16/bf16/int8 casts and Q/DQ live inside the model.
    config.input.add(name=in_name, data_type=mc.TYPE_FP32, dims=[3, image_size, image_size])
    config.output.add(name=out_name, data_type=mc.TYPE_FP32, dims=[num_classes])
    preferred = [b for b in (8, 16, 32, 64, 128) if b <= max_batch]
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    config.dynamic_batching.max_queue_delay_microseconds = 100
    if backend == "trt" or (backend == "torchscript" and device.startswith("cuda")):
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
    elif backend in ("torchscript", "openvino"):
        # A trace on CPU holds CPU constants; OpenVINO's backend runs on CPUs: keep their instances on CPU.
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    return config


def package(
    artifact: str | os.PathLike,
    repo: str | os.PathLike,
    backend: str,
    precision: str,
    num_classes: int,
    image_size: int,
    max_batch: int,
    device: str = "cpu",
) -> tuple[Path, dict[str, Any]]:
    """Move a finished `artifact` and its sidecar into the repository folder `repo` (created) and write its
    config.pbtxt; returns (the model file's new path, the sidecar's "triton" entry)."""
    from rn50.export.sidecar import sidecar_path

    artifact, model_dir = Path(artifact), Path(repo) / MODEL_NAME
    target = model_dir / VERSION / spec(backend).model_file
    target.parent.mkdir(parents=True, exist_ok=True)
    if artifact.is_dir():  # a folder artifact (OpenVINO IR): its files are the version folder's
        for f in artifact.iterdir():
            os.replace(f, target.parent / f.name)
        artifact.rmdir()
    else:
        os.replace(artifact, target)
    if sidecar_path(artifact).exists():
        os.replace(sidecar_path(artifact), sidecar_path(target))
    from google.protobuf import text_format

    config = model_config(backend, num_classes, image_size, max_batch, device)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    info = {
        "model_name": MODEL_NAME,
        "platform": config.platform or None,
        "backend": backend,
        "precision": precision,
        "config": "config.pbtxt",
        "model_file": f"{VERSION}/{target.name}",
        "max_batch_size": max_batch,
    }
    if config.backend:
        info["server_backend"] = config.backend
    if backend == "openvino":  # its Triton backend takes HINT_BF16 but no f32 hint (openvino_backend openvino.cc)
        info["inference_precision"] = (
            "the server's OpenVINO default: bf16 for float layers on CPUs with avx512_bf16 or AMX "
            "(rn50's own runner sets f32; the parity figures are its)"
        )
    return target, info


def find_model(repo: Path) -> Path:
    """The model file of a repository made by `package` (or any `<model>/<version>/model.*`): newest version."""
    configs = [repo / "config.pbtxt"] if (repo / "config.pbtxt").exists() else sorted(repo.glob("*/config.pbtxt"))
    for config in configs:
        versions = sorted(
            (p for p in config.parent.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
        )
        for version in reversed(versions):
            models = [m for m in sorted(version.glob("model.*")) if m.suffix not in (".json", ".bin")]
            if models:
                return models[0]
    raise UserError(f"{repo} is a folder but not a Triton model repository with a model file (<model>/1/model.*)")
