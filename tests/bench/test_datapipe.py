"""`rn50 bench data` on the real sample JPEGs: the trainer's pytorch and DALI CPU loaders, timed for real."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli, signal_when_written
from tests.helpers import processes_mentioning

SMALL = ["--batch", "8", "--workers", "2", "--warmup", "1", "--iters", "4", "--image-size", "32", "--device", "cpu"]
SMALL += ["--rounds", "3"]


def test_bench_data_times_pytorch_and_dali_cpu_against_the_synthetic_ceiling(sample_dir, tmp_path):
    res = run_cli(["bench", "data", sample_dir, *SMALL, "--step", "--out", tmp_path, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    by = {r["backend"]: r for r in report["results"]}
    assert list(by) == ["synthetic", "pytorch", "pytorch-gpu", "dali-cpu", "dali-gpu"]
    for name in ("pytorch", "pytorch-gpu", "dali-cpu"):
        r = by[name]
        assert r["status"] == "ok", r
        assert r["images"] == 4 * 8 and r["cores"] == 2
        # Train augmentation output as the model gets it: 32 px crops, normalised floats.
        assert r["batch_shape"] == [8, 3, 32, 32] and r["batch_dtype"] == "float32"
        assert r["img_per_s"] == pytest.approx(r["images"] / r["seconds"])
        assert r["img_per_s_per_core"] == pytest.approx(r["img_per_s"] / 2)
        # Interleaved rounds (4 batches over 3 rounds: 2 + 1 + 1): ratios are medians of the rounds' own ratios.
        assert len(r["round_img_per_s"]) == 3
        rounds = sorted(a / b for a, b in zip(r["round_img_per_s"], by["synthetic"]["round_img_per_s"], strict=True))
        assert r["vs_ceiling"] == pytest.approx(rounds[1])
        # The training thread's CPU time inside next(), per image: some, and never more than the wall time.
        assert 0 < r["host_us_per_image"] * r["images"] <= 1e6 * r["seconds"]
    assert by["synthetic"]["status"] == "ok" and by["synthetic"]["cores"] is None
    # pytorch-gpu (decoding on the CPU here) splits its main-process time into the batched decode and the rest
    gpu = by["pytorch-gpu"]
    assert gpu["decode_ms_per_image"] > 0 and gpu["augment_ms_per_image"] > 0
    assert (gpu["decode_ms_per_image"] + gpu["augment_ms_per_image"]) * gpu["images"] <= 1000 * gpu["seconds"]
    assert by["pytorch"]["decode_ms_per_image"] is None  # its workers decode: nothing to split in the main process
    if not torch.cuda.is_available():
        assert by["dali-gpu"]["status"] == "skipped" and "CUDA" in by["dali-gpu"]["reason"]
    assert "loadavg" in report["env"]
    first = by["pytorch"]["round_img_per_s"]
    vs = sorted(a / b for a, b in zip(by["dali-cpu"]["round_img_per_s"], first, strict=True))
    assert by["dali-cpu"]["vs_first"] == pytest.approx(vs[1]) and by["pytorch"]["vs_first"] is None
    # 4 batches of 8 tiny images take far under a second: flagged, with what to do.
    assert any(f.startswith("SHORT WINDOW: pytorch") and "--iters" in f for f in report["flags"])
    # The trainer's step on synthetic data, so the user sees whether loading or compute limits training.
    step = report["train_step"]
    assert step["precision"] == "fp32" and step["images"] == 4 * 8
    assert step["img_per_s"] == pytest.approx(step["images"] / step["seconds"])
    assert report["verdict"].startswith(("compute-bound", "input-bound"))
    (md,) = tmp_path.glob("data-bs8-w2-32px-cpu.md")
    text = md.read_text()
    header = "| backend | img/s | host us/img | cores | img/s per core | of synthetic | vs first | spread | note |"
    assert header in text
    assert "host us/img: CPU time the training thread spends inside the loader per image" in text
    assert "SHORT WINDOW" in text
    assert "skipped" in text or torch.cuda.is_available()
    assert "| train step |" in text
    assert json.loads(md.with_suffix(".json").read_text())["results"][1]["backend"] == "pytorch"
    assert md.with_suffix(".csv").read_text().startswith("backend,img_per_s,host_us_per_image,cores,img_per_s_per_core")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "ffcv"], "unknown backend 'ffcv'"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--workers", "-1"], "--workers must be >= 0"),
        (["--split", "test"], "--split must be train or val"),
        (["--device", "tpu"], "--device must be cuda or cpu"),
    ],
)
def test_bad_input_is_one_line(sample_dir, args, message):
    res = run_cli(["bench", "data", sample_dir, *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_missing_folder_is_one_line(tmp_path):
    res = run_cli(["bench", "data", tmp_path / "nope"])
    assert res.exit_code == 2 and "data folder not found" in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_only_unrunnable_backends_is_a_clean_error(sample_dir):
    res = run_cli(["bench", "data", sample_dir, "--backend", "dali-gpu", "--device", "cpu", "--iters", "1"])
    assert res.exit_code == 2
    assert "no data backend could run here" in res.output and "dali-gpu: needs a CUDA GPU" in res.output


@pytest.mark.gpu
def test_dali_gpu_and_the_training_step_on_cuda(sample_dir):
    pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install 'rn50[dali]')")
    res = run_cli(["bench", "data", sample_dir, "--backend", "pytorch,dali-gpu", "--batch", "16", "--iters", "4"])
    assert res.exit_code == 0, res.output
    args = ["--backend", "dali-gpu", "--iters", "4", "--image-size", "64", "--json"]
    res = run_cli(["bench", "data", sample_dir, *args])
    report = json.loads(res.stdout)
    (dali,) = [r for r in report["results"] if r["backend"] == "dali-gpu"]
    assert dali["status"] == "ok" and dali["batch_shape"] == [32, 3, 64, 64]
    assert report["train_step"]["precision"] == "fp16" and report["verdict"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_keeps_the_finished_rounds_and_says_where(sample_dir, tmp_path, signum):
    # A real signal to the whole process group (DataLoader workers and DALI threads included), as Ctrl-C (SIGINT) or
    # a scheduler (SIGTERM) sends it, once the first round's tables are on disk.
    args = ["bench", "data", str(sample_dir), "--backend", "pytorch,dali-cpu", "--batch", "8", "--workers", "2"]
    args += ["--warmup", "1", "--iters", "2000", "--rounds", "20", "--image-size", "32", "--device", "cpu"]
    rc, out, err = signal_when_written(
        [*args, "--out", str(tmp_path)], tmp_path, "data-*.json", signum, merge_stderr=False
    )
    assert rc == 128 + signum, out + err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err  # one line, nothing else (no warning, no traceback); shown in full when not
    (line,) = lines
    name = signal.Signals(signum).name
    assert line.startswith(f"rn50: error: bench data: stopped by {name}; partial results (round "), line
    k, n = (int(v) for v in line.split("(round ")[1].split(")")[0].split(" of "))
    assert 1 <= k < n == 20
    md = Path(line.split(" in ")[-1])
    assert md.parent == tmp_path and f"PARTIAL: interrupted by {name} after round {k} of 20" in md.read_text()
    result = json.loads(md.with_suffix(".json").read_text())
    assert result["finished_rounds"] == k and not result["complete"] and result["interrupted"] == name
    by = {r["backend"]: r for r in result["results"]}
    per_round = 2000 // 20 * 8  # images per backend per round
    for backend in ("synthetic", "pytorch", "dali-cpu"):
        assert len(by[backend]["round_img_per_s"]) == k and by[backend]["images"] == k * per_round
    assert not processes_mentioning(str(tmp_path))


def test_more_workers_than_cores_is_said_once(sample_dir, tmp_path):
    # torch warns when a DataLoader is made and again at every iter(), from two lines, for every loader: one is enough.
    workers = str((os.cpu_count() or 1) + 1)
    args = ["bench", "data", str(sample_dir), "--backend", "pytorch,pytorch-gpu", "--batch", "4", "--warmup", "1"]
    args += ["--iters", "2", "--rounds", "2", "--image-size", "32", "--device", "cpu", "--workers", workers]
    res = subprocess.run(
        [sys.executable, "-m", "rn50", *args, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.count(f"This DataLoader will create {workers} worker processes") == 1, res.stderr
