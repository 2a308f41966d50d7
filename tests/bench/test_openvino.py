"""`rn50 bench infer --backend openvino,openvino-throughput`: both modes timed in the same interleaved rounds, with
their threads, streams and infer requests recorded."""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec

import pytest
import torch

from rn50.bench.infer import run_infer
from rn50.export import load_artifact
from tests.conftest import run_cli
from tests.helpers import infer_config

# find_spec, not importorskip: a plain `import openvino` here would send its telemetry (rn50.export.openvino does not).
pytestmark = pytest.mark.skipif(find_spec("openvino") is None, reason="openvino is not installed (rn50[openvino])")


def test_latency_and_throughput_modes_side_by_side(sample_model, sample_dir, tmp_path):
    cfg = infer_config(
        tmp_path / "out",
        source=sample_model["checkpoint"],
        backends=["openvino", "openvino-throughput"],
        precisions=["fp32"],
        batches=[1, 4],
        iters=4,
        rounds=2,
        images=sample_dir,
        agreement_images=64,
        num_classes=None,
    )
    result = run_infer(cfg)
    series = {s["backend"]: s for s in result["series"]}
    latency, throughput = series["openvino"], series["openvino-throughput"]
    assert latency["status"] == throughput["status"] == "ok", result["series"]
    assert (latency["ov_mode"], latency["ov_streams"], latency["ov_infer_requests"]) == ("latency", 1, 1)
    assert throughput["ov_mode"] == "throughput"
    assert throughput["ov_infer_requests"] >= throughput["ov_streams"] >= 1
    for s in (latency, throughput):
        assert s["ov_inference_precision"] == "float32" and s["ov_threads"] >= 1 and s["top1_agreement"] == 1.0
        assert "brgconv" in s["ov_kernels"] or "jit" in s["ov_kernels"], s["ov_kernels"]
    rows = [r for r in result["rows"] if r["backend"].startswith("openvino")]
    assert len(rows) == 4 and all(r["status"] == "ok" and r["rounds"] == 2 for r in rows)  # speedup vs eager per round
    assert "ov2026" in result["paths"]["json"] or "-ov" in result["paths"]["json"]


def test_throughput_mode_splits_a_batch_and_returns_the_same_logits(openvino_fp32):
    x = torch.randn(7, 3, 32, 32)
    latency = load_artifact(openvino_fp32, threads=2)
    throughput = load_artifact(openvino_fp32, mode="throughput")
    assert throughput.requests >= 1 and throughput.mode == "throughput"
    torch.testing.assert_close(throughput(x), latency(x), rtol=1e-4, atol=1e-4)


def test_an_ir_folder_is_a_bench_source(openvino_fp32, tmp_path):
    args = ["bench", "infer", openvino_fp32, "--batch", "2", "--image-size", "32", "--iters", "2", "--warmup", "1"]
    res = run_cli([*args, "--rounds", "1", "--out", tmp_path])
    assert res.exit_code == 0, res.output
    assert "| openvino | fp32 | 2 |" in res.stdout


def test_missing_openvino_is_a_skip_with_the_install_line(tmp_path):
    code = (
        "import sys\nsys.modules['openvino'] = None\nfrom rn50.cli import main\n"
        f"main(['bench', 'infer', '--backend', 'openvino', '--batch', '1', '--image-size', '32', '--iters', '1', "
        f"'--warmup', '0', '--rounds', '1', '--no-baseline', '--out', {str(tmp_path)!r}])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    text = " ".join(res.stdout.split())
    assert (
        "openvino fp32" in text
        and "skipped" in text
        and "openvino is not installed: pip install 'rn50[openvino]'" in text
    )
