"""`rn50 bench infer`: one real CPU sweep (eager, torchscript, onnxruntime, aoti; fp32 and int8) shared by the
assertions, bad input, OOM bookkeeping, and GPU checks (skipped without CUDA)."""

import csv
import glob
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import rn50.bench.infer as infer
from rn50.bench.infer import run_infer
from rn50.bench.timing import parse_batches, summarize, timed_loop
from rn50.data.transforms import load_eval_images
from rn50.errors import UserError
from rn50.export import load_artifact
from rn50.weights import load_model
from tests.conftest import run_cli
from tests.helpers import infer_config

BATCHES = [1, 2, 4]
TIMED = ["eager", "torchscript", "onnxruntime", "aoti"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_checkpoint, sample_dir):
    """The CLI on a trained checkpoint, batches 1..4 at 32 px; AOTInductor compiles once for the whole module."""
    out = tmp_path_factory.mktemp("infer")
    args = ["bench", "infer", tiny_checkpoint, "--batch", "1..4", "--backend", ",".join(TIMED) + ",tensorrt"]
    args += ["--precision", "fp32,int8", "--device", "cpu", "--image-size", "32", "--warmup", "1", "--iters", "3"]
    args += ["--images", sample_dir, "--no-verify", "--keep-artifacts", out / "artifacts", "--out", out]
    result = run_cli(args)
    assert result.exit_code == 0, result.stdout + result.stderr
    (json_path,) = out.glob("*.json")
    return out, json_path, json.loads(json_path.read_text()), result.stdout


def check_speedup(row: dict, base: dict) -> None:
    """The speedup against the rounds' raw measurements: every round's img/s must add up to the row's own images
    over its timed seconds, and the speedup be the median (so within the range) of the same-round ratios to eager
    fp32. A speedup of the totals, of the wrong rounds or of the mean would break it."""
    for r in (row, base):
        assert sum(r["round_iters"]) == r["iters"] and len(r["round_img_s"]) == len(r["round_iters"]) == r["rounds"]
        seconds = [r["batch"] * n / rate for n, rate in zip(r["round_iters"], r["round_img_s"], strict=True)]
        assert sum(seconds) == pytest.approx(r["timed_s"], rel=1e-9)
    ratios = [a / b for a, b in zip(row["round_img_s"], base["round_img_s"], strict=True)]
    assert min(ratios) <= row["speedup"] <= max(ratios)
    assert row["speedup"] == pytest.approx(statistics.median(ratios), rel=1e-9)
    assert (row["speedup_min"], row["speedup_max"]) == pytest.approx((min(ratios), max(ratios)), rel=1e-9)


def test_files_are_named_by_precision_layout_versions_device(sweep):
    out, json_path, _, _ = sweep
    stem = json_path.stem
    major_minor = ".".join(torch.__version__.split(".")[:2])
    assert stem.startswith(f"infer-fp32+int8-nhwc-torch{major_minor}-ort") and stem.endswith("-cpu")
    for suffix in (".md", ".csv", "-throughput.png", "-latency.png"):
        path = out / f"{stem}{suffix}"
        assert path.is_file() and path.stat().st_size > 200, path
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_timed_backend_ran_every_batch_with_sane_statistics(sweep):
    _, _, data, _ = sweep
    rows = {(r["backend"], r["precision"], r["batch"]): r for r in data["rows"] if r.get("batch")}
    for backend in TIMED:
        for batch in BATCHES:
            r = rows[(backend, "fp32", batch)]
            assert r["status"] == "ok", r
            assert r["iters"] == 3 and r["images"] == 3 * batch
            assert math.isclose(r["img_s"], r["images"] / r["timed_s"], rel_tol=1e-9)
            assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"]
            assert r["min_ms"] <= r["mean_ms"] <= r["max_ms"]
            assert r["first_call_s"] > 0
            check_speedup(r, rows[("eager", "fp32", batch)])
    for batch in BATCHES:  # the baseline is its own reference
        assert rows[("eager", "fp32", batch)]["speedup"] == 1.0
    assert rows[("onnxruntime", "fp32", 1)]["provider"] == "CPUExecutionProvider"


def test_exports_compute_the_same_function_on_real_images(sweep):
    _, _, data, _ = sweep
    series = {(s["backend"], s["precision"]): s for s in data["series"]}
    assert data["agreement_images"]["n"] >= 200
    for backend in TIMED:
        s = series[(backend, "fp32")]
        assert s["status"] == "ok" and s["agreement_n"] == data["agreement_images"]["n"]
        assert s["top1_agreement"] >= 0.99, s
    for backend in ("torchscript", "onnxruntime", "aoti"):
        assert series[(backend, "fp32")]["build_s"] > 0 and series[(backend, "fp32")]["export_s"] > 0


def test_int8_is_the_qdq_onnx_model_with_its_agreement_reported(sweep, tiny_checkpoint):
    out, _, data, stdout = sweep
    series = {(s["backend"], s["precision"]): s for s in data["series"]}
    int8 = series[("onnxruntime", "int8")]
    assert int8["status"] == "ok", int8
    assert int8["format"] == "onnx" and int8["precision"] == "int8"
    # which execution provider ran the nodes, read back from ORT's profiler: all of them on the CPU here
    assert int8["provider"] == "CPUExecutionProvider" and int8["node_providers"].startswith("CPUExecutionProvider: ")
    # The figure reported is the one the kept artifact gives against eager fp32 on the same images. Its size is not
    # judged: the tiny model is at chance at 32 px, so its agreement is its training draw's (88.7% on an AMX Xeon,
    # 96.7-98.9% over four draws on one EPYC); INT8 agreement is judged on the sample model (tests/export).
    images = load_eval_images(data["agreement_images"]["dir"], data["agreement_images"]["n"], 32)
    with torch.inference_mode():
        ref = load_model(tiny_checkpoint)(images).argmax(1)
    got = load_artifact(out / "artifacts" / "onnxruntime-int8.onnx")(images).argmax(1)
    assert int8["agreement_n"] == len(images) == data["agreement_images"]["n"] >= 200
    # eager runs channels-last in the sweep: a near-tie may flip one image between layouts
    assert abs(int8["top1_agreement"] - float((got == ref).float().mean())) <= 1 / len(images), int8
    assert data["calibration_images"].endswith("train")
    assert "onnxruntime int8: top-1 agreement with eager fp32" in stdout
    rows = [r for r in data["rows"] if r["backend"] == "onnxruntime" and r["precision"] == "int8"]
    assert [r["status"] for r in rows] == ["ok"] * len(BATCHES)
    for backend in ("eager", "torchscript", "aoti"):
        s = series[(backend, "int8")]
        assert s["status"] == "skipped" and "onnx" in s["reason"].lower()


def test_onnx_runtime_leaves_no_profile_file(sweep):
    # Every ONNX Runtime session profiles its first run (to read back which provider ran each node); the profile
    # goes under the temp folder with this process's id and must be deleted, nor may ORT's default name appear here.
    out = sweep[0]
    assert sweep[2]["series"] and any(s["backend"] == "onnxruntime" for s in sweep[2]["series"])
    leftovers = glob.glob(os.path.join(tempfile.gettempdir(), f"rn50-ort-{os.getpid()}-*"))
    for folder in (Path.cwd(), out, out / "artifacts"):
        leftovers += [str(p) for p in folder.glob("onnxruntime_profile_*.json")]
    assert not leftovers


def test_missing_backend_is_skipped_with_its_reason(sweep):
    _, json_path, data, stdout = sweep
    series = {(s["backend"], s["precision"]): s for s in data["series"]}
    for precision in ("fp32", "int8"):
        s = series[("tensorrt", precision)]
        assert s["status"] == "skipped" and "GPU" in s["reason"]
    md = json_path.with_suffix(".md").read_text()
    assert "tensorrt needs an NVIDIA GPU" in md and "tensorrt fp32: skipped" in stdout


def test_markdown_csv_and_json_agree(sweep):
    _, json_path, data, _ = sweep
    md = json_path.with_suffix(".md").read_text()
    assert "| batch | eager fp32 img/s | eager fp32 p50 / p90 / p99 ms |" in md
    for batch in BATCHES:
        assert f"\n| {batch} | " in md
    with json_path.with_suffix(".csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(data["rows"])
    measured = [r for r in table if r["status"] == "ok"]
    assert len(measured) == len(BATCHES) * (len(TIMED) + 1)
    for r in measured:
        assert float(r["p50_ms"]) <= float(r["p90_ms"]) <= float(r["p99_ms"])
    env = data["env"]
    assert env["cpu_cores"] and env["packages"]["torch"] and len(env["loadavg"]) == 3


def test_an_exported_artifact_is_benchmarked_through_its_loader(sweep, tmp_path):
    out = sweep[0]
    onnx = out / "artifacts" / "onnxruntime-fp32.onnx"
    args = ["bench", "infer", onnx, "--batch", "1,2,8", "--device", "cpu", "--warmup", "0", "--iters", "2"]
    result = run_cli([*args, "--image-size", "32", "--out", tmp_path])
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    rows = {(r["backend"], r["batch"]): r for r in data["rows"] if r.get("batch")}
    assert rows[("onnxruntime", 1)]["status"] == "ok" and rows[("onnxruntime", 1)]["precision"] == "fp32"
    check_speedup(rows[("onnxruntime", 2)], rows[("eager", 2)])
    assert rows[("eager", 2)]["speedup"] == 1.0
    assert rows[("onnxruntime", 8)]["status"] == "skipped" and "up to 4" in rows[("onnxruntime", 8)]["reason"]
    result = run_cli([*args, "--image-size", "64", "--out", tmp_path / "x"])
    assert result.exit_code == 2 and "exported for 32 px" in result.stderr


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("1..256", [1, 2, 4, 8, 16, 32, 64, 128, 256]), ("3..20", [4, 8, 16]), ("8,1,3", [1, 3, 8]), ("4..4", [4])],
)
def test_batch_specs(spec, expected):
    assert parse_batches(spec) == expected


@pytest.mark.parametrize("spec", ["", "abc", "8..2", "0", "1,,2", "1..", "-1", "2.5", "5..7", "0,4"])
def test_bad_batch_spec_gets_one_line(spec):
    with pytest.raises(UserError):
        parse_batches(spec)
    result = run_cli(["bench", "infer", "--batch", spec, "--device", "cpu"])
    assert result.exit_code == 2
    assert "--batch" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--backend", "eager,tvm"], "unknown --backend"),
        (["--precision", "fp8"], "unknown --precision"),
        (["--iters", "5", "--min-time", "1"], "not both"),
        (["--iters", "0"], "--iters"),
        (["--warmup", "-1"], "--warmup"),
        (["--image-size", "16"], "--image-size"),
        (["--cuda-graphs"], "--cuda-graphs needs --device cuda"),
        (["--include-h2d"], "--include-h2d needs"),
        (["--device", "tpu"], "--device"),
        (["missing.pth"], "not a file"),
        (["--images", "nowhere"], "not a folder"),
    ],
)
def test_bad_options_get_one_line(args, needle, tmp_path):
    base = ["--device", "cpu"] if "--device" not in args else []
    result = run_cli(["bench", "infer", *base, *args, "--out", tmp_path / "o"])
    assert result.exit_code == 2, result.stdout
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_compile_on_cpu_prints_nothing_a_user_cannot_act_on(tmp_path):
    # Inductor's first C++ build imports torch.utils.cpp_extension, which logs "No CUDA runtime is found, using
    # CUDA_HOME=..." wherever a CUDA toolkit or nvcc is installed without a GPU (this test machine has one).
    args = ["bench", "infer", "--batch", "1", "--backend", "compile", "--no-baseline", "--device", "cpu"]
    args += ["--warmup", "0", "--iters", "1", "--rounds", "1", "--image-size", "32", "--out", str(tmp_path)]
    res = subprocess.run([sys.executable, "-m", "rn50", *args], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "compile" in res.stdout and res.stderr.strip() == "", res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_device_cuda_without_gpu_gets_one_line():
    result = run_cli(["bench", "infer", "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA GPU" in result.stderr


def test_percentiles_interpolate_between_samples_and_throughput_is_images_over_time():
    samples = [0.010, 0.012, 0.011, 0.030, 0.009, 0.010, 0.013]
    stats = summarize(samples, batch=8, total_s=0.1)
    # Sorted: 9, 10, 10, 11, 12, 13, 30 ms; the q-th percentile sits at rank 6q/100, between its two neighbours.
    expected = {50: 11.0, 90: 13 + 0.4 * 17, 95: 13 + 0.7 * 17, 99: 13 + 0.94 * 17}
    for q, ms in expected.items():
        assert stats[f"p{q}_ms"] == pytest.approx(ms), q
    assert stats["img_s"] == pytest.approx(8 * 7 / 0.1)  # not the mean of per-iteration rates
    assert stats["img_s"] != pytest.approx(sum(8 / s for s in samples) / 7)
    assert stats["min_ms"] == pytest.approx(9.0) and stats["max_ms"] == pytest.approx(30.0)


def test_timed_loop_excludes_warmup_and_honours_min_time():
    calls = []
    loop = timed_loop(lambda: calls.append(1), warmup=4, iters=6)
    assert len(calls) == 10 and len(loop.samples_s) == 6 and loop.total_s >= sum(loop.samples_s)
    calls.clear()
    loop = timed_loop(lambda: calls.append(1), warmup=0, iters=None, min_time=0.05, min_iters=3)
    assert loop.total_s >= 0.05 and len(loop.samples_s) == len(calls) >= 3


def test_oom_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    """A batch that runs out of device memory becomes an "oom" row; later batches and series still run.
    (Out-of-memory is raised by fault injection here; the GPU test below provokes a real one.)"""
    from rn50.bench import runtimes

    real_step_for = runtimes.EagerRuntime.step_for

    def step_for(self, batch):
        if batch == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real_step_for(self, batch)

    monkeypatch.setattr(runtimes.EagerRuntime, "step_for", step_for)
    cfg = infer_config(tmp_path, batches=[1, 2, 4], precisions=["bf16"], warmup=0, iters=1)
    result = run_infer(cfg)
    status = {(r["precision"], r["batch"]): r["status"] for r in result["rows"]}
    assert status == {
        ("fp32", 1): "ok",
        ("fp32", 2): "oom",
        ("fp32", 4): "ok",
        ("bf16", 1): "ok",
        ("bf16", 2): "oom",
        ("bf16", 4): "ok",
    }
    md = next(tmp_path.glob("*.md")).read_text()
    assert "| 2 | OOM | OOM | OOM | OOM |" in md


# ---- GPU (skipped without CUDA; run by benchmarks/device_suite.sh)
ON_GPU = dict(device="cuda", image_size=64)


@pytest.mark.gpu
def test_gpu_eager_precisions_with_cuda_graphs(tmp_path):
    cfg = infer_config(
        tmp_path,
        batches=[1, 8],
        precisions=["fp16", "bf16", "tf32"],
        **ON_GPU,
        warmup=3,
        iters=10,
        cuda_graphs=True,
        num_classes=None,
    )
    result = run_infer(cfg)
    ok = [r for r in result["rows"] if r.get("status") == "ok"]
    assert len(ok) == 2 * 4, [(r["backend"], r["precision"], r.get("batch"), r.get("reason")) for r in result["rows"]]
    for r in ok:
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["img_s"] > 0
    env = result["env"]
    assert env["gpus"] and env.get("nvidia_smi") and "clocks.sm" in env["nvidia_smi"][0]
    assert next(tmp_path.glob("infer-fp16+bf16+tf32-nhwc-torch*.json")).is_file()


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_compile_with_cuda_graphs(tmp_path):
    cfg = infer_config(
        tmp_path,
        batches=[8],
        backends=["compile"],
        precisions=["fp16"],
        **ON_GPU,
        warmup=3,
        iters=10,
        cuda_graphs=True,
    )
    rows = [r for r in run_infer(cfg)["rows"] if r["backend"] == "compile"]
    assert [r["status"] for r in rows] == ["ok"], rows
    assert rows[0]["first_call_s"] > 0 and rows[0]["p50_ms"] <= rows[0]["p99_ms"]


@pytest.mark.gpu
def test_gpu_include_h2d_with_and_without_graphs(tmp_path):
    for graphs in (False, True):
        cfg = infer_config(
            tmp_path / str(graphs),
            batches=[4],
            precisions=["fp16"],
            **ON_GPU,
            warmup=2,
            iters=5,
            include_h2d=True,
            cuda_graphs=graphs,
            baseline=False,
            num_classes=None,
        )
        rows = run_infer(cfg)["rows"]
        assert [r["status"] for r in rows] == ["ok"], rows


@pytest.mark.gpu
def test_gpu_sweep_times_the_gpu_it_is_given_with_cudnn_autotuning(tmp_path, monkeypatch):
    last = torch.cuda.device_count() - 1
    before = (torch.cuda.current_device(), torch.backends.cudnn.benchmark)
    seen = []
    timed = infer.sweep.timed_loop

    def watched(step, **kwargs):
        seen.append((torch.cuda.current_device(), torch.backends.cudnn.benchmark))
        return timed(step, **kwargs)

    monkeypatch.setattr(infer.sweep, "timed_loop", watched)  # where the sweep looks it up
    cfg = infer_config(tmp_path, batches=[4], precisions=["fp16"], device=f"cuda:{last}", image_size=64)
    rows = run_infer(cfg)["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    assert seen and set(seen) == {(last, True)}  # CUDA events and syncs on GPU `last`, cuDNN autotuner on
    assert (torch.cuda.current_device(), torch.backends.cudnn.benchmark) == before  # both restored


@pytest.mark.gpu
def test_gpu_tensorrt_fp32_and_tf32_are_timed_with_their_profile(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'rn50[trt]')")
    cfg = infer_config(
        tmp_path,
        batches=[1, 8],
        backends=["tensorrt"],
        precisions=["fp32", "tf32"],
        **ON_GPU,
        warmup=2,
        iters=5,
    )
    result = run_infer(cfg)
    series = {s["precision"]: s for s in result["series"] if s["backend"] == "tensorrt"}
    assert {p: s["status"] for p, s in series.items()} == {"fp32": "ok", "tf32": "ok"}, result["series"]
    assert series["fp32"]["math"] == "IEEE fp32 (TF32 off)" and series["fp32"]["trt_profile"] == "1/8/8"


@pytest.mark.gpu
def test_gpu_real_oom_is_recorded_and_the_sweep_goes_on(tmp_path):
    # 2**20 images of 64 px: the first conv's output alone needs over 100 GiB. On a GPU only the smallest batch must
    # pass the memory estimate before the sweep; a larger one that does not fit is tried and recorded as oom.
    cfg = infer_config(tmp_path, batches=[2, 2**20], precisions=["fp16"], device="cuda", image_size=64)
    result = run_infer(cfg)
    status = {(r["precision"], r["batch"]): r["status"] for r in result["rows"]}
    assert status == {("fp32", 2): "ok", ("fp32", 2**20): "oom", ("fp16", 2): "ok", ("fp16", 2**20): "oom"}, [
        r.get("reason") for r in result["rows"]
    ]


def _wrong_shape_onnx(path):
    """A valid ONNX model that is not an image classifier: input [1, 10] -> [1, 3]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((10, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "not-an-image-model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("kind", ["garbage.onnx", "garbage.ts", "garbage.pt2", "wrong-shape.onnx"])
def test_an_artifact_that_does_not_load_exits_non_zero_with_its_reason(kind, tmp_path):
    """The eager baseline is still measured and written; the artifact's series failing is one line and exit 2,
    so a script sees that it was not measured. ONNX Runtime leaves no profile in the temp folder."""
    import glob
    import os
    import tempfile

    from tests.faults import last_line_error

    artifact = tmp_path / kind
    if kind.startswith("wrong"):
        _wrong_shape_onnx(artifact)
    else:
        artifact.write_bytes(os.urandom(3000))
    profiles = os.path.join(tempfile.gettempdir(), f"rn50-ort-{os.getpid()}-*.json")  # this process's own
    before = set(glob.glob(profiles))
    args = ["bench", "infer", artifact, "--device", "cpu", "--batch", "1", "--iters", "1", "--warmup", "0"]
    result = run_cli([*args, "--image-size", "32", "--out", tmp_path / "out"])
    line = last_line_error(result, "not measured: ")  # after the progress bar
    reason = {"onnx": "ONNX Runtime cannot load", "ts": "not a TorchScript file", "pt2": "cannot load AOTInductor"}
    if kind.startswith("wrong"):
        assert "input x of shape [1, 10]" in line and "[N, 3, H, W]" in line
    else:
        assert reason[kind.split(".")[1]] in line
    data = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert [r["status"] for r in data["rows"]] == ["ok", "error"]  # the baseline's row, the artifact's series
    assert set(glob.glob(profiles)) <= before
