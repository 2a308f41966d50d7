"""CUDA and TensorRT paths. Skipped without an NVIDIA GPU; a skip is never proof that they work."""

from __future__ import annotations

import json

import pytest
import torch

from rn50.export import export_model, load_artifact
from rn50.weights import load_model
from tests.export.conftest import SAMPLE_SIZE, SIZE

pytestmark = pytest.mark.gpu


def reference(ckpt, x):
    with torch.inference_mode():
        return load_model(ckpt)(x.cpu())


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_trt_engine_parity(precision, sample_model, sample_dir, tmp_path):
    # The sample model: the export's fp16/int8 parity gate judges top-1 agreement, which needs real margins.
    pytest.importorskip("tensorrt")
    ckpt = sample_model["checkpoint"]
    out = tmp_path / f"sample-{precision}.plan"
    cache = tmp_path / "timing.cache"
    result = export_model(
        ckpt, "trt", out, precision=precision, image_size=SAMPLE_SIZE, max_batch=16,
        images_dir=sample_dir / "val", calib_dir=sample_dir / "train", timing_cache=cache,
    )  # fmt: skip
    engine = result.sidecar["export"]["engine"]
    assert engine["tensorrt"] and engine["gpu"] and engine["compute_capability"]
    assert engine["optimization_profile"] == {"min": 1, "opt": 16, "max": 16}
    assert cache.exists() and result.sidecar["parity"]["passed"]
    runner = load_artifact(out, device="cuda")
    for batch in (1, 7):
        x = torch.randn(batch, 3, SAMPLE_SIZE, SAMPLE_SIZE, device="cuda")
        got = runner.run(x)
        torch.cuda.synchronize()
        ref = reference(ckpt, x)
        assert got.shape == ref.shape
        assert float((got.cpu() - ref).abs().max() / ref.abs().max()) < (0.02 if precision == "fp16" else 0.3)
    # A second build reuses the timing cache.
    again = export_model(
        ckpt, "trt", out, precision=precision, image_size=SAMPLE_SIZE, max_batch=16, force=True,
        images_dir=sample_dir / "val", calib_dir=sample_dir / "train", timing_cache=cache,
    )  # fmt: skip
    assert again.sidecar["export"]["engine"]["timing_cache_reused"]


def test_trt_engine_from_other_version_gives_one_line(tiny_checkpoint, sample_dir, tmp_path):
    pytest.importorskip("tensorrt")
    from rn50.errors import UserError
    from rn50.export.sidecar import sidecar_path

    out = tmp_path / "e.plan"
    export_model(tiny_checkpoint, "trt", out, image_size=SIZE, max_batch=8, images_dir=sample_dir / "val")
    meta = json.loads(sidecar_path(out).read_text())
    meta["export"]["engine"]["tensorrt"] = "9.0.0"
    sidecar_path(out).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="engine built with TensorRT 9.0.0"):
        load_artifact(out, device="cuda")


@pytest.mark.parametrize(("fmt", "suffix"), [("aoti", ".pt2"), ("torchscript", ".ts")])
def test_cuda_compiled_artifacts(fmt, suffix, tiny_checkpoint, sample_dir, tmp_path):
    out = tmp_path / f"m{suffix}"
    export_model(tiny_checkpoint, fmt, out, image_size=SIZE, max_batch=16, device="cuda", images_dir=sample_dir / "val")
    runner = load_artifact(out, device="cuda")
    x = torch.randn(7, 3, SIZE, SIZE, device="cuda")
    assert float((runner.run(x).cpu() - reference(tiny_checkpoint, x)).abs().max()) < 1e-2


def test_onnx_runtime_cuda_provider(tiny_checkpoint, sample_dir, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    out = tmp_path / "m.onnx"
    export_model(tiny_checkpoint, "onnx", out, image_size=SIZE, max_batch=16, images_dir=sample_dir / "val")
    runner = load_artifact(out, device="cuda")
    assert runner.provider == "CUDAExecutionProvider"
    x = torch.randn(7, 3, SIZE, SIZE, device="cuda")
    got = runner.run(x)
    assert got.device.type == "cuda"
    assert float((got.cpu() - reference(tiny_checkpoint, x)).abs().max() / 1) < 1e-2
