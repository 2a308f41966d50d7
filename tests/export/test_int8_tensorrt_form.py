"""The INT8 form TensorRT builds engines from, checked on ONNX Runtime's CPU provider with the model the main job
trains: every DequantizeLinear takes an 8-bit input (TensorRT's IDequantizeLayer takes no INT32) and the predictions
are kept."""

import json

import onnx

from tests.conftest import run_cli


def dequantize_input_types(proto) -> set[str]:
    """The element types of every DequantizeLinear's quantised input, from the graph's own type information."""
    proto = onnx.shape_inference.infer_shapes(proto)
    types = {t.name: t.data_type for t in proto.graph.initializer}
    for value in (*proto.graph.input, *proto.graph.value_info, *proto.graph.output):
        types[value.name] = value.type.tensor_type.elem_type
    return {
        onnx.TensorProto.DataType.Name(types[n.input[0]]) for n in proto.graph.node if n.op_type == "DequantizeLinear"
    }


def test_tensorrt_int8_form_has_no_int32_dequantize_and_agrees(sample_model, sample_dir, tmp_path):
    out = tmp_path / "int8-trt.onnx"
    args = ["export", sample_model["checkpoint"], "--format", "onnx", "--precision", "int8"]
    args += ["--int8-target", "tensorrt"]
    args += ["--image-size", "32", "--max-batch", "64", "--calib", sample_dir / "train", "--images", sample_dir / "val"]
    res = run_cli([*args, "--parity-images", "360", "--device", "cpu", "--out", out])
    assert res.exit_code == 0, res.output
    assert dequantize_input_types(onnx.load(out)) == {"INT8"}
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    quant = sidecar["export"]["quantization"]
    assert quant["target"] == "tensorrt" and quant["bias"] == "float" and quant["all_zero_points_zero"]
    real = sidecar["parity"]["real"]
    assert real["n"] == 360 and real["top1_agreement"] >= 0.99, real
