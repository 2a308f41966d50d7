"""Each CPU-runnable format, exported from the trained tiny checkpoint, reloads and matches eager PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rn50.data.transforms import load_labeled_images
from rn50.export import load_artifact
from rn50.export.sidecar import sha256_file, sidecar_path
from rn50.weights import load_model
from tests.export.conftest import MAX_BATCH, SIZE, assert_agrees


def eager(ckpt, x):
    with torch.inference_mode():
        return load_model(ckpt)(x)


def assert_close_logits(got, ref, max_rel):
    rel = float((got - ref).abs().max() / ref.abs().max())
    assert rel <= max_rel, rel
    assert torch.equal(got.argmax(1), ref.argmax(1))


def test_onnx_graph_contract(onnx_fp32):
    import onnx

    model = onnx.load(str(onnx_fp32))
    onnx.checker.check_model(model, full_check=True)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
    assert out.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_runtime_dynamic_batch_matches_eager(onnx_fp32, tiny_checkpoint, batch):
    import onnxruntime as ort

    x = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
    session = ort.InferenceSession(str(onnx_fp32), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"input": x.numpy()})
    assert got.shape == (batch, 10)
    assert_close_logits(torch.from_numpy(got), eager(tiny_checkpoint, x), 1e-4)


def test_onnx_fp16_keeps_float32_interface_and_matches(onnx_fp16, tiny_checkpoint, sample_dir):
    import onnx

    model = onnx.load(str(onnx_fp16))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    fp16_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_weights) >= 53  # every conv weight is half precision
    runner = load_artifact(onnx_fp16)
    assert (runner.format, runner.precision, runner.provider) == ("onnx", "fp16", "CPUExecutionProvider")
    images, _ = load_labeled_images(sample_dir / "val", 24, SIZE)
    ref = eager(tiny_checkpoint, images)
    got = runner(images)
    assert float((got - ref).abs().max() / ref.abs().max()) < 2e-2  # agreement: on the sample model (test_int8_sample)


@pytest.mark.parametrize("fixture", ["torchscript_fp32", "aoti_fp32", "onnx_fp32"])
def test_reload_matches_eager_at_batch_1_and_7(fixture, request, tiny_checkpoint):
    path = request.getfixturevalue(fixture)
    runner = load_artifact(path, device="cpu")
    for batch in (1, 7):
        x = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(10 + batch))
        got = runner(x)
        assert got.dtype == torch.float32 and got.shape == (batch, 10)
        assert_close_logits(got, eager(tiny_checkpoint, x), 1e-4)


def test_torchscript_is_frozen_trace(torchscript_fp32):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(torchscript_fp32))
    kinds = {n.kind() for n in module.graph.nodes()}
    assert "prim::GetAttr" not in kinds  # frozen: weights are inlined constants
    assert "aten::batch_norm" not in kinds  # frozen: BN folded into the convolutions


def test_sidecar_records_provenance_and_parity(onnx_fp32, tiny_checkpoint):
    meta = json.loads(sidecar_path(onnx_fp32).read_text())
    assert meta["format"] == "onnx" and meta["precision"] == "fp32"
    assert meta["source_sha256"] == sha256_file(tiny_checkpoint)
    assert meta["source_checkpoint"] == str(tiny_checkpoint.resolve())
    assert meta["recipe"]["name"] == "sample-cpu"
    assert meta["num_classes"] == 10
    assert meta["input"]["shape"] == ["batch", 3, SIZE, SIZE]
    assert meta["input"]["dynamic_axes"]["input"] == {"0": "batch"}
    assert meta["input"]["batch_range"] == [1, MAX_BATCH]
    pre = meta["preprocessing"]
    assert pre["center_crop"] == SIZE and len(pre["mean"]) == 3 and len(pre["std"]) == 3
    assert {"torch", "onnx", "onnxruntime"} <= set(meta["versions"])
    assert meta["rn50_version"] and "git_commit" in meta
    parity = meta["parity"]
    assert parity["passed"] and parity["random"]["batches"] == [1, 7]
    assert parity["real"]["n"] == 16 and parity["real"]["top1_agreement"] == 1.0
    assert parity["random"]["max_rel"] < 1e-3


def _zero_points(model):
    from onnx import numpy_helper

    init = {t.name: t for t in model.graph.initializer}
    return [numpy_helper.to_array(init[n.input[2]]) for n in model.graph.node if n.op_type == "DequantizeLinear"]


def test_int8_for_tensorrt_is_explicit_symmetric_per_channel_qdq(onnx_int8_tensorrt):
    import onnx

    model = onnx.load(str(onnx_int8_tensorrt))
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 100
    zero_points = _zero_points(model)
    assert zero_points and not any(z.any() for z in zero_points)  # symmetric: every zero point is 0
    assert {z.dtype for z in zero_points} <= {np.dtype(np.int8), np.dtype(np.int32)}  # signed int8 (int32 bias)
    assert sum(z.dtype == np.int8 for z in zero_points) > 100
    per_channel = [z for z in zero_points if z.ndim == 1 and z.size > 1]
    assert len(per_channel) >= 52  # one per quantised conv weight (the stem stays float)
    meta = json.loads(sidecar_path(onnx_int8_tensorrt).read_text())
    q = meta["export"]["quantization"]
    assert (
        q["quantized_ops"]["Conv"] == 52
        and q["float_nodes"]
        and q["all_zero_points_zero"]
        and q["calibration"] == "minmax"
        and q["target"] == "tensorrt"
        and q["reduce_range"] is False
    )


def test_int8_for_cpu_fuses_every_quantised_conv_into_integer_kernels(sample_int8):
    """uint8 activations let ORT fold each ReLU into its quantisation: every conv but the float stem runs as a
    QLinearConv and every residual add as a QLinearAdd, with no float ReLU left between them."""
    import onnx

    from rn50.export.quant import ort_cpu_kernels

    model = onnx.load(str(sample_int8))
    zero_points = _zero_points(model)
    activations = [z for z in zero_points if z.ndim == 0 and z.dtype != np.int32]
    weights = [z for z in zero_points if z.ndim == 1 and z.size > 1 and z.dtype != np.int32]  # not the biases
    assert activations and all(z.dtype == np.uint8 for z in activations)
    # 52 convs (the stem stays float) and the classifier, each per-channel symmetric int8
    assert len(weights) == 53 and all(z.dtype == np.int8 and not z.any() for z in weights)
    kernels = ort_cpu_kernels(sample_int8)
    assert kernels.get("QLinearConv") == 52 and kernels.get("Conv") == 1, kernels
    assert kernels.get("QLinearAdd") == 16 and "Relu" not in kernels and "Add" not in kernels, kernels
    assert kernels.get("QGemm") == 1, kernels
    q = json.loads(sidecar_path(sample_int8).read_text())["export"]["quantization"]
    assert q["target"] == "cpu" and q["ort_cpu_kernels"] == kernels
    # 7-bit weights (issue #22): exact on every x86 kernel family, see rn50/export/quant.py
    assert q["reduce_range"] is True and q["weights"] == "int8 symmetric, per channel, 7-bit (reduce_range)"


def test_int8_runs_on_onnx_runtime_and_classifies_as_fp32_does(sample_int8, sample_reference):
    runner = load_artifact(sample_int8)
    assert runner.precision == "int8" and runner.provider == "CPUExecutionProvider"
    ref, labels = sample_reference["logits"], sample_reference["labels"]
    got = runner(sample_reference["images"])
    assert_agrees(ref, got)
    # The INT8 model classifies the sample about as well as fp32 does.
    acc_fp32 = float((ref.argmax(1) == labels).float().mean())
    acc_int8 = float((got.argmax(1) == labels).float().mean())
    assert acc_int8 >= acc_fp32 - 0.01, (acc_int8, acc_fp32)


def test_optional_simplification_keeps_contract_and_function(onnx_fp32, tmp_path):
    import onnx
    import onnxruntime as ort

    from rn50.export.onnx import save_proto, simplify_proto

    simplified = simplify_proto(onnx.load(str(onnx_fp32)))
    out = tmp_path / "simplified.onnx"
    save_proto(simplified, out)  # runs onnx.checker
    assert simplified.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = torch.randn(7, 3, SIZE, SIZE).numpy()
    before = ort.InferenceSession(str(onnx_fp32), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    after = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(before - after).max() <= 1e-4 * np.abs(before).max()
