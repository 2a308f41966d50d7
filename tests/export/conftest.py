"""One export per format, shared by every test that inspects it (AOTInductor compiles take about a minute)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli

SIZE = 64  # px: small images keep the CPU tests fast; 224 px is exercised by benchmarks/export_time.py
MAX_BATCH = 16


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="session")
def torchvision_checkpoint(tmp_path_factory) -> Path:
    """A torchvision ResNet-50 state_dict (10 classes), BN statistics set from real-looking data."""
    import torchvision

    torch.manual_seed(1)
    model = torchvision.models.resnet50(weights=None, num_classes=10)
    model.train()
    with torch.no_grad():  # a few forward passes give BN non-trivial running statistics
        for _ in range(3):
            model(torch.randn(8, 3, SIZE, SIZE))
    path = tmp_path_factory.mktemp("tv") / "torchvision_resnet50.pth"
    torch.save(model.eval().state_dict(), path)
    return path


def export_cli(ckpt: Path, fmt: str, out: Path, sample_dir: Path, *extra: str):
    result = run_cli(
        [
            "export",
            ckpt,
            "--format",
            fmt,
            "--out",
            out,
            "--image-size",
            SIZE,
            "--max-batch",
            MAX_BATCH,
            "--images",
            sample_dir / "val",
            "--calib",
            sample_dir / "train",
            *extra,
        ]
    )
    assert result.exit_code == 0, result.output
    return result


def _export(tiny_checkpoint, sample_dir, export_dir, fmt, name, *extra):
    out = export_dir / name
    export_cli(tiny_checkpoint, fmt, out, sample_dir, *extra)
    return out


@pytest.fixture(scope="session")
def onnx_fp32(tiny_checkpoint, sample_dir, export_dir) -> Path:
    return _export(tiny_checkpoint, sample_dir, export_dir, "onnx", "tiny-fp32.onnx")


@pytest.fixture(scope="session")
def onnx_fp16(tiny_checkpoint, sample_dir, export_dir) -> Path:
    return _export(tiny_checkpoint, sample_dir, export_dir, "onnx", "tiny-fp16.onnx", "--precision", "fp16")


@pytest.fixture(scope="session")
def onnx_int8(tiny_checkpoint, sample_dir, export_dir) -> Path:
    return _export(tiny_checkpoint, sample_dir, export_dir, "onnx", "tiny-int8.onnx", "--precision", "int8")


@pytest.fixture(scope="session")
def onnx_int8_tensorrt(tiny_checkpoint, sample_dir, export_dir) -> Path:
    """The symmetric form TensorRT builds INT8 engines from (runs on ORT's CPU provider too, slowly)."""
    return _export(
        tiny_checkpoint, sample_dir, export_dir, "onnx", "tiny-int8-trt.onnx", "--precision", "int8",
        "--int8-target", "tensorrt",
    )  # fmt: skip


@pytest.fixture(scope="session")
def torchscript_fp32(tiny_checkpoint, sample_dir, export_dir) -> Path:
    return _export(tiny_checkpoint, sample_dir, export_dir, "torchscript", "tiny-fp32.ts")


@pytest.fixture(scope="session")
def aoti_fp32(tiny_checkpoint, sample_dir, export_dir) -> Path:
    return _export(tiny_checkpoint, sample_dir, export_dir, "aoti", "tiny-fp32.pt2")
