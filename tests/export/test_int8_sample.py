"""INT8 on the model the main job trains: the CPU form keeps its predictions on every val image of the sample."""

import json

from rn50.env import cpu_has_vnni
from tests.conftest import run_cli


def test_int8_cpu_form_agrees_with_fp32_on_the_sample_model(sample_model, sample_dir, tmp_path):
    out = tmp_path / "int8.onnx"
    args = ["export", sample_model["checkpoint"], "--format", "onnx", "--precision", "int8", "--int8-target", "cpu"]
    args += ["--image-size", "32", "--max-batch", "64", "--calib", sample_dir / "train", "--images", sample_dir / "val"]
    res = run_cli([*args, "--parity-images", "360", "--out", out])
    assert res.exit_code == 0, res.output
    real = json.loads(out.with_name(out.name + ".json").read_text())["parity"]["real"]
    assert real["n"] == 360
    # Measured 100% on an AVX512-VNNI EPYC (docs/results/demo-epyc-avx512). Without VNNI, ONNX Runtime's u8s8
    # kernels take another instruction path, not measured with this model; 97.5% was measured there on a weaker one.
    assert real["top1_agreement"] >= (0.99 if cpu_has_vnni() else 0.97), real
