"""INT8 and fp16 on the model the main job trains: the exports keep its predictions on every val image of the
sample, with thresholds that hold on any CPU (tests/export/conftest.py: assert_agrees)."""

import json

import numpy as np
import pytest

from rn50.export import load_artifact
from rn50.export.kernel_paths import INTEGER_PATHS, KernelPathError, check_kernel_paths, is_x86
from tests.conftest import run_cli
from tests.export.conftest import assert_agrees, export_sample
from tests.export.test_precision import assert_sidecar_math_and_tolerance


def int8_weights(path) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]


def check_int8_artifact(path, sidecar: dict, reference: dict, stem: str) -> None:
    assert sidecar["parity"]["real"]["n"] == 360
    q = sidecar["export"]["quantization"]
    kernels = q["ort_cpu_kernels"]
    # the stem conv in float (one Conv) or as the 53rd QLinearConv
    assert (kernels["QLinearConv"], kernels.get("Conv", 0)) == ((52, 1) if stem == "float" else (53, 0)), kernels
    # 7-bit weights: a pair of uint8 x int8 products stays within int16 on every x86 kernel family
    weights = [w for w in int8_weights(path) if w.ndim > 1]
    assert q["reduce_range"] is True and len(weights) == (53 if stem == "float" else 54)
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    assert_agrees(reference["logits"], load_artifact(path)(reference["images"]))
    # export's parity step ran the kernel-path check on this CPU and recorded where it ran
    paths = sidecar["parity"]["kernel_paths"]
    assert paths["bit_identical"], paths
    assert set(paths["paths"]) == {k for k in INTEGER_PATHS if is_x86() or k != "x64quantprecision"}
    assert paths["images"] == 360 and paths["onnxruntime"] and paths["cpu_model"] and "kernel_family" in paths
    assert paths["float_emulation"]["top1_agreement"] >= 0.99, paths


def test_int8_cpu_form_agrees_with_fp32_on_the_sample_model(sample_int8, sample_reference):
    sidecar = json.loads(sample_int8.with_name(sample_int8.name + ".json").read_text())
    check_int8_artifact(sample_int8, sidecar, sample_reference, "float")


def test_int8_stem_agrees_with_fp32_on_the_sample_model(sample_model, sample_dir, sample_reference, tmp_path):
    out = tmp_path / "int8-stem.onnx"
    sidecar = export_sample(sample_model, sample_dir, out, "--precision", "int8", "--int8-stem", "int8")
    check_int8_artifact(out, sidecar, sample_reference, "int8")


def test_fp16_agrees_with_fp32_on_the_sample_model(sample_model, sample_dir, sample_reference, tmp_path):
    out = tmp_path / "fp16.onnx"
    sidecar = export_sample(sample_model, sample_dir, out, "--precision", "fp16")
    assert sidecar["precision"] == "fp16" and sidecar["parity"]["real"]["n"] == 360
    assert_sidecar_math_and_tolerance(sidecar, "fp16")
    assert_agrees(sample_reference["logits"], load_artifact(out)(sample_reference["images"]))


def test_kernel_paths_are_bit_identical_and_a_difference_fails(sample_int8, sample_reference, monkeypatch):
    images = sample_reference["images"][:64]
    result = check_kernel_paths(sample_int8, images)
    assert result["bit_identical"] and all(p["max_abs"] == 0.0 for p in result["paths"].values()), result
    # The float emulation rounds differently from the integer kernels: as a fourth "integer" path it must fail.
    emulation = {"session.disable_quant_qdq": "1"}
    monkeypatch.setitem(INTEGER_PATHS, "float_emulation", emulation)
    with pytest.raises(KernelPathError, match=r"kernel paths disagree on this CPU .* float_emulation differ"):
        check_kernel_paths(sample_int8, images)
    assert not check_kernel_paths(sample_int8, images, enforce=False)["paths"]["float_emulation"]["bit_identical"]


def test_kernel_path_self_test_from_the_command_line(sample_int8, sample_dir, tiny_checkpoint):
    res = run_cli(["eval", sample_int8, sample_dir, "--kernel-paths", "--limit", "2"])
    assert res.exit_code == 0, res.output
    assert "bit-identical" in res.stdout and "default" in res.stdout and "disable_prepacking" in res.stdout
    bad = run_cli(["eval", tiny_checkpoint, sample_dir, "--kernel-paths"])
    assert bad.exit_code == 2 and "--kernel-paths" in bad.output and "Traceback" not in bad.output


def test_bad_int8_stem_is_one_line(sample_dir, tmp_path):
    res = run_cli(["export", tmp_path / "none.pth", "--format", "onnx", "--precision", "int8", "--int8-stem", "half"])
    assert res.exit_code == 2 and "--int8-stem" in res.output and "Traceback" not in res.output
