"""Triton model repositories, checked with Triton's own ModelConfig protobuf (tritonclient), not by regex."""

from __future__ import annotations

import json

import pytest
import torch

from rn50.export import export_model, load_artifact
from rn50.export.triton import model_config
from rn50.weights import load_model
from tests.export.conftest import MAX_BATCH, SIZE


def parse(path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse(path.read_text(), mc.ModelConfig()), mc


def test_onnx_repository_config_and_model(tiny_checkpoint, sample_dir, tmp_path):
    repo = tmp_path / "repo"
    result = export_model(
        tiny_checkpoint, "triton", repo, image_size=SIZE, max_batch=MAX_BATCH, images_dir=sample_dir / "val"
    )
    assert result.path == repo
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == [
        "rn50",
        "rn50/1",
        "rn50/1/model.onnx",
        "rn50/1/model.onnx.json",
        "rn50/config.pbtxt",
    ]
    config, mc = parse(repo / "rn50" / "config.pbtxt")
    assert config.name == "rn50" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == MAX_BATCH
    (inp,), (out,) = config.input, config.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("input", mc.TYPE_FP32, [3, SIZE, SIZE])
    assert (out.name, out.data_type, list(out.dims)) == ("logits", mc.TYPE_FP32, [10])
    assert config.HasField("dynamic_batching")
    assert max(config.dynamic_batching.preferred_batch_size) <= MAX_BATCH
    # The names and dims in the config are the model's own.
    import onnx

    model = onnx.load(str(repo / "rn50" / "1" / "model.onnx"))
    assert model.graph.input[0].name == inp.name and model.graph.output[0].name == out.name
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == list(inp.dims)
    meta = json.loads((repo / "rn50" / "1" / "model.onnx.json").read_text())
    assert meta["triton"]["platform"] == "onnxruntime_onnx" and meta["parity"]["passed"]
    # The repository loads as an artifact and computes the checkpoint's function.
    runner = load_artifact(repo)
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.inference_mode():
        ref = load_model(tiny_checkpoint)(x)
    assert float((runner(x) - ref).abs().max() / ref.abs().max()) < 1e-4


@pytest.mark.parametrize(
    ("backend", "platform", "names"),
    [("torchscript", "pytorch_libtorch", ("input__0", "logits__0")), ("trt", "tensorrt_plan", ("input", "logits"))],
)
def test_other_backends_configs_parse(backend, platform, names, tmp_path):
    from google.protobuf import text_format

    path = tmp_path / "config.pbtxt"
    path.write_text(text_format.MessageToString(model_config(backend, 1000, 224, 256)))
    config, mc = parse(path)
    assert config.platform == platform and config.max_batch_size == 256
    assert (config.input[0].name, config.output[0].name) == names
    assert list(config.input[0].dims) == [3, 224, 224] and list(config.output[0].dims) == [1000]
    kinds = [g.kind for g in config.instance_group]
    assert kinds == ([mc.ModelInstanceGroup.KIND_GPU] if backend == "trt" else [mc.ModelInstanceGroup.KIND_CPU])


def test_triton_rejects_precision_its_backend_lacks(tiny_checkpoint, tmp_path):
    from rn50.errors import UserError

    with pytest.raises(UserError, match="torchscript backend does not support 'int8'"):
        export_model(tiny_checkpoint, "triton", tmp_path / "r", precision="int8", triton_backend="torchscript")
    assert not (tmp_path / "r").exists()
