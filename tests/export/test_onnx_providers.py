"""ONNX Runtime execution providers: what is asked for on a GPU, and what is read back as having run."""

from __future__ import annotations

import pytest
import torch

from rn50.export import load_artifact


def test_runner_reports_the_provider_that_ran_every_node(onnx_fp32, onnx_int8):
    fp32, int8 = load_artifact(onnx_fp32), load_artifact(onnx_int8)
    for runner in (fp32, int8):
        assert runner.provider == "CPUExecutionProvider"
        assert set(runner.node_providers) == {"CPUExecutionProvider"}
    # Read back from a profiled run: the int8 model runs as far fewer (fused QLinearConv) nodes than it declares.
    assert fp32.node_providers["CPUExecutionProvider"] >= 50
    assert 50 <= int8.node_providers["CPUExecutionProvider"] < 120
    x = torch.randn(3, 3, 64, 64)
    assert fp32(x).shape == (3, 10)  # profiling ended with the probe; the runner still works


def test_gpu_asks_for_tensorrt_then_cuda_then_cpu_with_the_model_profile(monkeypatch):
    """What ONNX Runtime is asked for on a GPU. The providers themselves cannot run here (no GPU): only the request
    is checked; the gpu-marked tests run it."""
    import onnxruntime as ort

    from rn50.export.onnx import ort_providers

    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPU"]
    )
    sidecar = {"input": {"shape": ["batch", 3, 160, 160], "batch_range": [1, 64]}}
    trt, cuda, cpu = ort_providers(torch.device("cuda:1"), "int8", sidecar, trt_cache="/c")
    # use_tf32=0: the CUDA provider's TF32 default (1) would make the float parts TF32 (issue #21, A3)
    assert trt[0] == "TensorrtExecutionProvider" and cuda == ("CUDAExecutionProvider", {"device_id": 1, "use_tf32": 0})
    assert cpu == "CPUExecutionProvider"
    opts = trt[1]
    assert opts["trt_int8_enable"] and not opts["trt_fp16_enable"] and opts["device_id"] == 1
    assert opts["trt_profile_min_shapes"] == "input:1x3x160x160"
    assert opts["trt_profile_max_shapes"] == "input:64x3x160x160"
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == "/c"
    assert ort_providers(torch.device("cuda"), "fp16", {})[0][1]["trt_fp16_enable"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    from rn50.errors import UserError

    with pytest.raises(UserError, match="onnxruntime-gpu"):
        ort_providers(torch.device("cuda"), "fp32", {})
