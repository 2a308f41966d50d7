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
    # No parity gate on the tiny model (its top-1 agreement is its training draw's): see sample_reference.
    return _export(
        tiny_checkpoint, sample_dir, export_dir, "onnx", "tiny-fp16.onnx", "--precision", "fp16", "--no-verify"
    )


@pytest.fixture(scope="session")
def onnx_int8_tensorrt(tiny_checkpoint, sample_dir, export_dir) -> Path:
    """The symmetric form TensorRT builds INT8 engines from (runs on ORT's CPU provider too, slowly); no parity
    gate on the tiny model."""
    return _export(
        tiny_checkpoint, sample_dir, export_dir, "onnx", "tiny-int8-trt.onnx", "--precision", "int8",
        "--int8-target", "tensorrt", "--no-verify",
    )  # fmt: skip


@pytest.fixture(scope="session")
def torchscript_fp32(tiny_checkpoint, sample_dir, export_dir) -> Path:
    return _export(tiny_checkpoint, sample_dir, export_dir, "torchscript", "tiny-fp32.ts")


@pytest.fixture(scope="session")
def aoti_fp32(tiny_checkpoint, sample_dir, export_dir) -> Path:
    return _export(tiny_checkpoint, sample_dir, export_dir, "aoti", "tiny-fp32.pt2")


# INT8, fp16 and bf16 agreement is judged on the model the sample recipe trains (about 99% val top-1), never on the
# tiny model: at 32 px the tiny model is at chance, its top-1 margins are hundredths of a logit, and its agreement
# measures the training draw (96.7-98.9% over four draws on one machine; 88.7% on an AMX Xeon), not the artifact.
SAMPLE_SIZE = 32  # px, the sample recipe's
AGREEMENT_FLOOR = 0.99
SURE_MARGIN = 0.5  # logits: an image whose fp32 top-1 leads its runner-up by more must keep its top-1


def assert_agrees(ref: torch.Tensor, got: torch.Tensor, floor: float = AGREEMENT_FLOOR) -> None:
    """Top-1 agreement of `got` with the fp32 logits `ref`: >= `floor` over all images and 100% on every image whose
    fp32 margin (top-1 minus top-2 logit) exceeds SURE_MARGIN."""
    top2 = ref.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    same = ref.argmax(1) == got.argmax(1)
    flips = sorted(round(float(m), 3) for m in margin[~same])
    assert float(same.float().mean()) >= floor, f"agreement {float(same.float().mean()):.4f}; flip margins {flips}"
    assert bool(same[margin > SURE_MARGIN].all()), f"flips above the {SURE_MARGIN} margin: {flips}"


@pytest.fixture(scope="session")
def sample_reference(sample_model, sample_dir) -> dict:
    """The sample model, every val image of the sample at 32 px and its eager fp32 logits. Precondition: the model
    has real margins (>= 90% val top-1), without which no agreement figure means anything."""
    from rn50.data.transforms import load_labeled_images
    from rn50.weights import load_model

    assert sample_model["top1"] >= 90, sample_model
    images, labels = load_labeled_images(sample_dir / "val", 10_000, SAMPLE_SIZE)
    with torch.inference_mode():
        logits = load_model(sample_model["checkpoint"])(images)
    return {"checkpoint": sample_model["checkpoint"], "images": images, "labels": labels, "logits": logits}


def export_sample(sample_model, sample_dir: Path, out: Path, *extra: str) -> dict:
    """`rn50 export` of the sample model at 32 px with its parity step on every val image; returns the sidecar."""
    import json

    args = ["export", sample_model["checkpoint"], "--format", "onnx", "--image-size", SAMPLE_SIZE, "--max-batch", 64]
    args += ["--calib", sample_dir / "train", "--images", sample_dir / "val", "--parity-images", 360, "--out", out]
    res = run_cli([*args, *extra])
    assert res.exit_code == 0, res.output
    return json.loads(out.with_name(out.name + ".json").read_text())


@pytest.fixture(scope="session")
def sample_int8(sample_model, sample_dir, tmp_path_factory) -> Path:
    """The sample model's CPU-form INT8 artifact (the default: stem float, min-max on 64 images), exported once."""
    out = tmp_path_factory.mktemp("sample_int8") / "int8.onnx"
    export_sample(sample_model, sample_dir, out, "--precision", "int8", "--int8-target", "cpu")
    return out
