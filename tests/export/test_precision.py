"""One precision vocabulary: fp32 is IEEE fp32 wherever rn50 runs it (TF32 off in PyTorch, TensorRT and ONNX
Runtime's CUDA provider), tf32 is its own precision, each sidecar says which math it ran and with what tolerance.
What reaches a GPU library is checked here as the settings rn50 hands it; the gpu-marked tests run them."""

from __future__ import annotations

import json
import logging
import types

import onnx
import pytest
import torch

from rn50.errors import UserError
from rn50.export import get_format
from rn50.export.runner import MATH, math_mode
from rn50.export.sidecar import sidecar_path
from rn50.export.verify import TOLERANCES
from tests.conftest import run_cli


def test_every_precision_has_a_math_and_a_tolerance():
    for fmt in ("onnx", "torchscript", "aoti", "trt"):
        for precision in get_format(fmt).precisions:
            assert precision in MATH and precision in TOLERANCES, (fmt, precision)
    assert get_format("trt").precisions.count("tf32") == get_format("onnx").precisions.count("tf32") == 1


def test_a_tf32_artifact_on_the_cpu_is_not_called_tf32_math():
    from rn50.export.runner import math_of

    assert math_of("tf32") == MATH["tf32"] and math_of("tf32", cuda=False).startswith(MATH["fp32"])
    assert math_of("fp16", cuda=False) == MATH["fp16"]


def test_math_mode_turns_pytorch_tf32_off_for_fp32_and_on_for_tf32_only():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32)
    for precision, want in (("fp32", False), ("fp16", False), ("int8", False), ("tf32", True)):
        with math_mode(precision, cuda=True):
            assert (cudnn.allow_tf32, matmul.allow_tf32) == (want, want), precision
        assert (cudnn.allow_tf32, matmul.allow_tf32) == before


def test_bf16_onnx_is_valid_onnx_at_opset_22():
    from rn50.export.onnx import to_onnx_proto
    from rn50.model import resnet50

    proto = to_onnx_proto(resnet50(num_classes=10), "bf16", 32, 8)
    onnx.checker.check_model(proto, full_check=True)  # opset 18 fails here: its Conv takes no bfloat16
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 22
    weights = {onnx.TensorProto.DataType.Name(t.data_type) for t in proto.graph.initializer if len(t.dims) == 4}
    assert weights == {"BFLOAT16"}  # BN folded in fp32 by rn50, not left as float32 weights by the exporter


class _BuilderConfig:
    """Stands in for tensorrt.IBuilderConfig (TensorRT needs a GPU): records what rn50 sets on it."""

    def __init__(self) -> None:
        self.cleared, self.pool = [], None

    def clear_flag(self, flag) -> None:
        self.cleared.append(flag)

    def set_memory_pool_limit(self, pool, size) -> None:
        self.pool = (pool, size)


def test_tensorrt_builder_clears_tf32_unless_the_precision_is_tf32():
    from rn50.export.trt import configure

    trt = types.SimpleNamespace(
        BuilderFlag=types.SimpleNamespace(TF32="TF32"), MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE")
    )
    for precision in ("fp32", "fp16", "bf16", "int8", "tf32"):
        config = _BuilderConfig()
        assert configure(config, trt, precision, 2.0) == (precision == "tf32")
        assert config.cleared == ([] if precision == "tf32" else ["TF32"])
        assert config.pool == ("WORKSPACE", 2 << 30)


def test_bf16_engine_needs_a_parser_that_takes_opset_22():
    from rn50.export.trt import check_parser_takes

    with pytest.raises(UserError, match="opset-22.*TensorRT 10.1.0"):
        check_parser_takes("bf16", "10.1.0")
    for precision, version in (("bf16", "10.15.1"), ("bf16", "11.1.0"), ("fp16", "10.0.1")):
        check_parser_takes(precision, version)


@pytest.fixture
def gpu_ort(monkeypatch):
    """ONNX Runtime as onnxruntime-gpu with TensorRT reports itself (only the request is built here)."""
    import onnxruntime as ort

    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: providers)
    return monkeypatch


def test_onnx_runtime_runs_fp32_as_ieee_and_tf32_as_tf32(gpu_ort):
    from rn50.export.onnx import ort_providers

    cuda = torch.device("cuda")
    fp32 = ort_providers(cuda, "fp32", {})
    # TensorRT's provider builds with TF32 on and has no option to clear it: fp32 does not ask for it.
    assert [p if isinstance(p, str) else p[0] for p in fp32] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert fp32[0][1]["use_tf32"] == 0
    tf32 = ort_providers(cuda, "tf32", {})
    assert tf32[0][0] == "TensorrtExecutionProvider" and tf32[1][1]["use_tf32"] == 1
    assert ort_providers(cuda, "fp16", {})[1][1]["use_tf32"] == 0


@pytest.mark.parametrize("weak", [True, False])
def test_onnx_runtime_tensorrt_precision_switches_only_for_weakly_typed_tensorrt(gpu_ort, weak):
    import rn50.export.onnx as onnx_export

    gpu_ort.setattr(onnx_export, "trt_weak_typing", lambda: weak)
    for precision in ("fp16", "int8", "bf16", "tf32"):
        trt = onnx_export.ort_providers(torch.device("cuda"), precision, {})[0][1]
        if weak:  # TensorRT 10.x: its builder picks FP16/INT8 kernels only with these on
            assert (trt["trt_fp16_enable"], trt["trt_int8_enable"]) == (precision == "fp16", precision == "int8")
        else:  # TensorRT 11: no such flags; the ONNX's types and Q/DQ nodes are the precision
            assert "trt_fp16_enable" not in trt and "trt_int8_enable" not in trt


def test_tf32_is_refused_on_the_cpu_in_one_line(tiny_checkpoint, tmp_path):
    res = run_cli(["export", tiny_checkpoint, "--format", "onnx", "--precision", "tf32", "--device", "cpu"])
    assert res.exit_code == 2 and "tf32 is a CUDA math mode" in res.output and "Traceback" not in res.output


def assert_sidecar_math_and_tolerance(meta: dict, precision: str) -> None:
    assert meta["math"] == MATH[precision]
    tol = TOLERANCES[precision]
    assert meta["parity"]["tolerance"] == {
        "max_rel": tol.max_rel, "p95_rel": tol.p95_rel, "top1_agreement": tol.top1,
        "random_enforced": tol.enforce_random,
    }  # fmt: skip
    assert meta["parity"]["runtime"] == "CPUExecutionProvider"


def test_sidecar_records_the_math_and_the_tolerance_of_its_precision(onnx_fp32, onnx_fp16):
    """fp32 here; fp16's parity is judged on the sample model (tests/export/test_int8_sample.py), whose margins
    are real: the tiny model's fp16 export is written with --no-verify, which its sidecar says."""
    assert_sidecar_math_and_tolerance(json.loads(sidecar_path(onnx_fp32).read_text()), "fp32")
    meta = json.loads(sidecar_path(onnx_fp16).read_text())
    assert meta["math"] == MATH["fp16"] and meta["parity"] is None


def test_onnx_parity_runs_on_the_provider_that_is_installed(caplog):
    """A GPU box with the `onnx` extra's CPU-only onnxruntime (as here): the ONNX export checks parity on ONNX
    Runtime's CPU provider and says so in one line, instead of refusing for a GPU package ONNX does not need."""
    import onnxruntime as ort

    from rn50.export import _parity_device

    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    cuda = torch.device("cuda")
    with caplog.at_level(logging.WARNING, logger="rn50.export"):
        assert _parity_device(get_format("onnx"), cuda, "fp32") == torch.device("cpu")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "no CUDA provider" in line and "parity checked on the CPU" in line
    assert _parity_device(get_format("torchscript"), cuda, "fp32") == cuda  # torch formats run where exported
    with pytest.raises(UserError, match="onnxruntime-gpu"):
        _parity_device(get_format("onnx"), cuda, "tf32")
