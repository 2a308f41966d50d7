"""CUDA and TensorRT paths. Skipped without an NVIDIA GPU, and each without the package it needs (TensorRT,
onnxruntime-gpu), with the reason; a skip is never proof that they work."""

from __future__ import annotations

import json

import pytest
import torch

from rn50.export import export_model, load_artifact
from rn50.weights import load_model
from tests.export.conftest import SAMPLE_SIZE, SIZE

pytestmark = pytest.mark.gpu


def need_tensorrt():
    return pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'rn50[trt]')")


def reference(ckpt, x):
    with torch.inference_mode():
        return load_model(ckpt)(x.cpu())


MAX_REL = {"fp16": 0.02, "int8": 0.3, "bf16": 0.08, "fp32": 1e-3, "tf32": 0.02}  # worst logit, random inputs


@pytest.mark.parametrize("precision", list(MAX_REL))
def test_trt_engine_parity(precision, sample_model, sample_dir, tmp_path):
    # The sample model: the export's fp16/int8 parity gate judges top-1 agreement, which needs real margins.
    need_tensorrt()
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
    assert engine["tf32"] is (precision == "tf32")  # fp32 is IEEE fp32: TensorRT's default TF32 flag cleared
    if precision == "fp32":  # so the fp32 gate, the worst logit within 1e-3, holds on the GPU too
        assert result.sidecar["parity"]["random"]["max_rel"] < 1e-3
    assert cache.exists() and result.sidecar["parity"]["passed"]
    runner = load_artifact(out, device="cuda")
    for batch in (1, 7):
        x = torch.randn(batch, 3, SAMPLE_SIZE, SAMPLE_SIZE, device="cuda")
        got = runner.run(x)
        torch.cuda.synchronize()
        ref = reference(ckpt, x)
        assert got.shape == ref.shape
        assert float((got.cpu() - ref).abs().max() / ref.abs().max()) < MAX_REL[precision]
    # A second build reuses the timing cache.
    again = export_model(
        ckpt, "trt", out, precision=precision, image_size=SAMPLE_SIZE, max_batch=16, force=True,
        images_dir=sample_dir / "val", calib_dir=sample_dir / "train", timing_cache=cache,
    )  # fmt: skip
    assert again.sidecar["export"]["engine"]["timing_cache_reused"]


def test_trt_runs_on_its_own_stream_ordered_with_the_callers(tiny_checkpoint, sample_dir, tmp_path):
    need_tensorrt()
    out = tmp_path / "s.plan"
    export_model(tiny_checkpoint, "trt", out, image_size=SIZE, max_batch=8, images_dir=sample_dir / "val")
    runner = load_artifact(out, device="cuda")
    assert runner.stream.cuda_stream not in (0, torch.cuda.current_stream().cuda_stream)
    x = torch.randn(4, 3, SIZE, SIZE, device="cuda")
    first = runner.run(x)
    second = runner.run(x) * 1  # work on the caller's stream that must see the engine's output: no host sync between
    torch.cuda.synchronize()
    assert torch.equal(first, second) and torch.isfinite(first).all()


def test_trt_int8_engine_is_built_from_the_onnx_the_flags_ask_for(sample_model, sample_dir, tmp_path):
    # --int8-stem reaches the ONNX the engine is built from, as for --format onnx (the trt exporter dropped it)
    need_tensorrt()
    result = export_model(
        sample_model["checkpoint"], "trt", tmp_path / "stem.plan", precision="int8", int8_stem="int8",
        image_size=SAMPLE_SIZE, max_batch=16, images_dir=sample_dir / "val", calib_dir=sample_dir / "train",
    )  # fmt: skip
    quantization = result.sidecar["export"]["onnx"]["quantization"]
    assert quantization["target"] == "tensorrt" and quantization["float_nodes"] == [], quantization


def test_trt_engine_from_other_version_gives_one_line(tiny_checkpoint, sample_dir, tmp_path):
    need_tensorrt()
    from rn50.errors import UserError
    from rn50.export.sidecar import sidecar_path

    out = tmp_path / "e.plan"
    export_model(tiny_checkpoint, "trt", out, image_size=SIZE, max_batch=8, images_dir=sample_dir / "val")
    meta = json.loads(sidecar_path(out).read_text())
    meta["export"]["engine"]["tensorrt"] = "9.0.0"
    sidecar_path(out).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="engine built with TensorRT 9.0.0"):
        load_artifact(out, device="cuda")


@pytest.mark.parametrize(
    ("fmt", "suffix"), [pytest.param("aoti", ".pt2", marks=pytest.mark.slow), ("torchscript", ".ts")]
)
def test_cuda_compiled_artifacts(fmt, suffix, tiny_checkpoint, sample_dir, tmp_path):
    out = tmp_path / f"m{suffix}"
    # fp32 on CUDA is IEEE fp32 while exporting and checking parity (cuDNN's default is TF32): the 1e-3 gate holds
    result = export_model(
        tiny_checkpoint, fmt, out, image_size=SIZE, max_batch=16, device="cuda", images_dir=sample_dir / "val"
    )
    assert result.sidecar["math"] == "IEEE fp32 (TF32 off)" and result.sidecar["parity"]["passed"]
    runner = load_artifact(out, device="cuda")
    x = torch.randn(7, 3, SIZE, SIZE, device="cuda")
    assert float((runner.run(x).cpu() - reference(tiny_checkpoint, x)).abs().max()) < 1e-2


def need_onnxruntime_gpu():
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install onnxruntime-gpu)")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (this ONNX Runtime has the CPU provider only)")


def test_onnx_runtime_cuda_provider(tiny_checkpoint, sample_dir, tmp_path):
    need_onnxruntime_gpu()
    out = tmp_path / "m.onnx"
    result = export_model(tiny_checkpoint, "onnx", out, image_size=SIZE, max_batch=16, images_dir=sample_dir / "val")
    assert result.sidecar["parity"]["runtime"] == "CUDAExecutionProvider"  # fp32: IEEE on CUDA, no TensorRT provider
    runner = load_artifact(out, device="cuda")
    assert runner.provider == "CUDAExecutionProvider" and "TensorrtExecutionProvider" not in runner.node_providers
    x = torch.randn(7, 3, SIZE, SIZE, device="cuda")
    got = runner.run(x)
    assert got.device.type == "cuda"
    assert float((got.cpu() - reference(tiny_checkpoint, x)).abs().max() / 1) < 1e-2


def test_onnx_export_without_onnxruntime_gpu_checks_parity_on_the_cpu(tiny_checkpoint, sample_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install 'rn50[onnx]')")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed: this case needs the CPU-only onnxruntime")
    out = tmp_path / "m.onnx"
    result = export_model(
        tiny_checkpoint, "onnx", out, image_size=SIZE, max_batch=16, device="cuda", images_dir=sample_dir / "val"
    )
    assert result.sidecar["export_device"] == "cuda" and result.sidecar["parity"]["runtime"] == "CPUExecutionProvider"
