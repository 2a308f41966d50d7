"""Bad input: one line, exit code 2, nothing half-written; parity failures name the figure and the excess."""

from __future__ import annotations

import re

import pytest
import torch

from rn50.export import FORMATS, export_model
from rn50.export.verify import TOLERANCES, ParityError, Tolerance, check_parity
from rn50.model import resnet50
from tests.conftest import run_cli
from tests.export.conftest import SIZE


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_checkpoint(tmp_path):
    one_line_error(run_cli(["export", tmp_path / "nope.pth", "--format", "onnx"]), "checkpoint not found")
    assert list(tmp_path.iterdir()) == []


def test_wrong_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    one_line_error(run_cli(["export", text, "--format", "onnx", "--out", tmp_path / "a.onnx"]), "notes.pth")
    other = tmp_path / "mlp.pth"
    torch.save(torch.nn.Linear(4, 2).state_dict(), other)
    one_line_error(run_cli(["export", other, "--format", "onnx", "--out", tmp_path / "b.onnx"]), "mlp.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.pth", "notes.pth"]


def test_unknown_format_lists_valid_ones(tiny_checkpoint):
    result = run_cli(["export", tiny_checkpoint, "--format", "tflite"])
    one_line_error(result, "unknown format 'tflite'", *FORMATS)


@pytest.mark.parametrize(("fmt", "precision"), [("torchscript", "int8"), ("onnx", "bf16"), ("aoti", "int4")])
def test_unsupported_precision(tiny_checkpoint, tmp_path, fmt, precision):
    result = run_cli(["export", tiny_checkpoint, "--format", fmt, "--precision", precision, "--out", tmp_path / "x"])
    one_line_error(result, f"{fmt} does not support precision {precision!r}")
    assert list(tmp_path.iterdir()) == []


def test_unknown_calibration_method(tiny_checkpoint, tmp_path):
    result = run_cli(
        [
            "export",
            tiny_checkpoint,
            "--format",
            "onnx",
            "--precision",
            "int8",
            "--calib-method",
            "kl",
            "--out",
            tmp_path / "x",
        ]
    )
    one_line_error(result, "minmax", "entropy", "percentile")


def test_unknown_int8_target(tiny_checkpoint, tmp_path):
    result = run_cli(
        ["export", tiny_checkpoint, "--format", "onnx", "--precision", "int8", "--int8-target", "arm",
         "--out", tmp_path / "x"]
    )  # fmt: skip
    one_line_error(result, "unknown --int8-target 'arm'", "cpu", "tensorrt")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_without_force(tiny_checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"precious")
    one_line_error(run_cli(["export", tiny_checkpoint, "--format", "onnx", "--out", out]), "already exists", "--force")
    assert out.read_bytes() == b"precious"


def test_trt_without_tensorrt_or_gpu_says_how_to_get_it(tiny_checkpoint, tmp_path):
    from rn50.errors import UserError
    from rn50.export import export_model

    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except ImportError:
        has_trt = False
    if has_trt and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present")
    expected = "pip install 'rn50[trt]'" if not has_trt else "NVIDIA GPU"
    with pytest.raises(UserError, match=re.escape(expected)):
        export_model(tiny_checkpoint, "trt", tmp_path / "m.plan")
    result = run_cli(["export", tiny_checkpoint, "--format", "trt", "--out", tmp_path / "m.plan"])
    one_line_error(result, "TensorRT is not installed" if not has_trt else "GPU")
    assert list(tmp_path.iterdir()) == []


def test_missing_calibration_folder(tiny_checkpoint, tmp_path):
    result = run_cli(
        ["export", tiny_checkpoint, "--format", "onnx", "--precision", "int8", "--calib", tmp_path / "none",
         "--out", tmp_path / "q.onnx", "--image-size", SIZE]
    )  # fmt: skip
    one_line_error(result, "image folder not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_parity_error_says_by_how_much():
    model = resnet50(num_classes=10).eval()

    def off_by_a_bit(x):
        with torch.inference_mode():
            return model(x) * 1.01  # 1% off everywhere: fine for fp16 (2%), not for fp32 (0.1%)

    figures = check_parity(model, off_by_a_bit, "fp16", 32, None)
    assert figures["passed"] and 0.009 < figures["random"]["max_rel"] < 0.011
    with pytest.raises(
        ParityError, match=r"max relative logit difference 0\.01 > 0\.001 on random inputs .*over by 10"
    ):
        check_parity(model, off_by_a_bit, "fp32", 32, None)


def test_reduced_precision_gate_does_not_flip_with_the_number_of_images():
    torch.manual_seed(0)
    model = resnet50(num_classes=10).eval()
    real = torch.randn(40, 3, 32, 32)
    real[7, 0, 0, 0] = 100.0  # marks the one outlier image

    def int8_like(x):  # 1% off everywhere, one image in 40 off by 50% (what a quantised model shows)
        with torch.inference_mode():
            out = model(x) * 1.01
            return torch.where((x[:, 0, 0, 0] > 50).unsqueeze(1), out * 1.5, out)

    few = check_parity(model, int8_like, "int8", 32, real[:16].clone().index_fill_(0, torch.tensor([7]), 0.0))
    many = check_parity(model, int8_like, "int8", 32, real)
    assert few["passed"] and many["passed"]
    # the worst single logit sees the outlier only in the larger set; the gate does not judge by it
    assert few["real"]["max_rel"] < 0.02 < 0.3 < many["real"]["max_rel"]
    assert many["real"]["p95_rel"] < 0.02 and many["real"]["top1_agreement"] == 1.0
    with pytest.raises(ParityError, match="95th-percentile relative logit difference .* on 40 real inputs"):
        check_parity(model, lambda x: int8_like(x) * 1.5, "int8", 32, real)


def test_parity_failure_exits_nonzero_and_leaves_nothing(tiny_checkpoint, sample_dir, tmp_path, monkeypatch):
    out = tmp_path / "model.ts"
    out.write_bytes(b"the previous export")  # --force must not destroy it when the new one fails parity
    monkeypatch.setitem(TOLERANCES, "fp32", Tolerance(max_rel=1e-12, top1=1.0))
    result = run_cli(
        ["export", tiny_checkpoint, "--format", "torchscript", "--out", out, "--force", "--image-size", SIZE,
         "--images", sample_dir / "val"]
    )  # fmt: skip
    one_line_error(result, "fails parity", "max relative logit difference", "over by")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ts"]
    assert out.read_bytes() == b"the previous export"


def test_in_memory_module_without_out_is_refused():
    from rn50.errors import UserError

    with pytest.raises(UserError, match="pass out="):
        export_model(resnet50(num_classes=10), "onnx")
