"""`rn50 bench train` on CPU: real gloo DDP through torchrun, the trainer's own step, tiny images."""

import csv
import json
import math
import os
import signal
from pathlib import Path

import pytest

from rn50.bench.scaling import (
    FAIL_ENV,
    TrainBenchConfig,
    resolve_precisions,
    run_train_bench,
    worker_counts,
)
from rn50.errors import UserError
from rn50.launch import LaunchResult
from tests.conftest import run_cli, signal_when_written
from tests.helpers import processes_mentioning

TINY = ["--device", "cpu", "--batch", "2", "--warmup", "1", "--iters", "2", "--image-size", "32", "--num-classes", "10"]
TINY += ["--rounds", "1"]


@pytest.fixture(autouse=True)
def one_thread_per_rank(monkeypatch):
    # Two ranks on two shared cores: one thread each keeps them from fighting (and the tests fast).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv(FAIL_ENV, raising=False)


def tiny_config(out: Path, **kw) -> TrainBenchConfig:
    base = dict(device="cpu", batch=2, warmup=1, iters=2, image_size=32, num_classes=10, out=out, timeout=240, rounds=1)
    base.update(kw)
    return TrainBenchConfig(**base)


def test_worker_counts_include_n():
    assert worker_counts(1) == [1]
    assert worker_counts(2) == [1, 2]
    assert worker_counts(6) == [1, 2, 4, 6]
    assert worker_counts(8) == [1, 2, 4, 8]


def test_precisions_on_cpu_are_labelled():
    mixed, full = resolve_precisions(["mixed", "full"], "cpu")
    assert (mixed.kind, mixed.name) == ("mixed", "bf16") and "bf16" in mixed.note
    assert (full.kind, full.name) == ("full", "fp32")
    assert [p.name for p in resolve_precisions(["fp32", "fp16"], "cpu")] == ["bf16", "fp32"]  # mixed column first
    with pytest.raises(UserError, match="at most one mixed"):
        resolve_precisions(["fp16", "bf16"], "cpu")
    with pytest.raises(UserError, match="unknown precision"):
        resolve_precisions(["fp8"], "cpu")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gpus", "0"], "--gpus must be >= 1"),
        (["--precision", "fp8"], "unknown precision"),
        (["--iters", "0"], "--iters must be >= 1"),
        (["--backend", "pytorch"], "give --data"),
        (["--backend", "dali-gpu", "--data", "."], "dali-gpu needs --device cuda"),
        (["--nnodes", "2"], "--rdzv-endpoint"),
        (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1"], "--node-rank must be in"),
        (["--nnodes", "2", "--rdzv-endpoint", "no-port"], "HOST:PORT"),
        (["--device", "tpu"], "--device must be cuda or cpu"),
        (["--recipe", "dgx9-fp16-90"], "unknown recipe"),
        (["--workers", "-1", "--backend", "synthetic"], "--workers must be >= 0"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    res = run_cli(["bench", "train", *TINY, "--out", tmp_path, *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not list(tmp_path.iterdir())  # nothing launched, nothing written


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clean_error(tmp_path):
    res = run_cli(["bench", "train", "--device", "cuda", "--gpus", "1", "--out", tmp_path])  # (auto would run on CPU)
    assert res.exit_code == 2 and "no CUDA GPU" in res.output


def failure(rank, exitcode, message="", timestamp=0):
    """One rank's record as the launcher writes it from torchelastic's ChildFailedError."""
    return {"rank": rank, "local_rank": rank, "pid": 100 + rank, "exitcode": exitcode, "host": "node",
            "timestamp": timestamp, "recorded": bool(message), "type": message.split(":")[0] or None,
            "message": message}  # fmt: skip


def test_failed_rank_names_the_cause_not_its_consequence():
    # Rank 1 was SIGKILLed; torchrun then stopped rank 0 with SIGTERM: rank 1 is the answer.
    result = LaunchResult(1, failures=[failure(0, -15), failure(1, -9)])
    assert result.root_cause()["rank"] == 1
    assert "rank 1 (host node, pid 101) was killed by SIGKILL" in result.describe("bench")
    # Race: rank 0 raised "closed by peer" (recorded first) before torchrun saw the killed rank 1.
    peer = "RuntimeError: [gloo] Connection closed by peer [127.0.0.1]:1"
    result = LaunchResult(1, failures=[failure(0, 1, peer, timestamp=1), failure(1, -9, timestamp=2)])
    assert result.root_cause()["rank"] == 1
    # A real error (out of memory) on rank 1, while rank 0 sat in a collective until torchrun SIGTERMed it.
    oom = "OutOfMemoryError: CUDA out of memory"
    result = LaunchResult(1, failures=[failure(0, -15), failure(1, 1, oom, timestamp=5)])
    assert result.describe("bench").endswith("rank 1 (host node, pid 101) exited with code 1: " + oom)
    # A rank's bad input is the same one line (exit 2), not a failure report.
    result = LaunchResult(1, failures=[failure(0, 2, "UserError: no train/ folder under /x")])
    with pytest.raises(UserError) as err:
        result.raise_for_failure("bench")
    assert str(err.value) == "no train/ folder under /x" and err.value.exit_code == 2


def test_one_and_two_process_gloo_sweep_writes_a_well_formed_table(tmp_path):
    res = run_cli(["bench", "train", *TINY, "--rounds", "2", "--gpus", "2", "--out", tmp_path])
    assert res.exit_code == 0, res.output
    header = (
        "| GPUs | mixed img/s | full img/s | mixed speedup | mixed weak scaling | full weak scaling | mixed efficiency "
        "| full efficiency | spread | mixed 90 epochs (h) | full 90 epochs (h) | flags |"
    )
    assert header in res.output
    # 2 iterations in a fraction of a second: every row says so, on screen and in every file.
    assert "flag: SHORT WINDOW" in res.output and "FEW ITERATIONS" in res.output

    (js,) = tmp_path.glob("train-bf16-fp32-bs2-torch*-cpu.json")
    result = json.loads(js.read_text())
    rows = result["rows"]
    assert [r["gpus"] for r in rows] == [1, 2]
    assert result["precisions"][0]["name"] == "bf16" and "falls back to bf16" in result["precisions"][0]["note"]
    # Two interleaved rounds, the order rotated: 1, 2 then 2, 1.
    assert [(x["round"], x["world_size"]) for x in result["launches"]] == [(1, 1), (1, 2), (2, 2), (2, 1)]
    runs = {(x["round"], x["world_size"]): x["precisions"] for x in result["launches"]}
    for row in rows:
        n = row["gpus"]
        for kind, prec in (("mixed", "bf16"), ("full", "fp32")):
            assert row[f"{kind}_precision"] == prec  # what the trainer's step really ran
            # img/s is global images over the timed wall time (2 iterations x batch 2 x workers), median of rounds.
            assert row[f"{kind}_global_images"] == 2 * (2 * 2 * n)
            rates = [runs[(r, n)][prec]["global_images"] / runs[(r, n)][prec]["seconds"] for r in (1, 2)]
            assert row[f"{kind}_img_s"] == pytest.approx(sum(rates) / 2)
            # a cross-entropy of a real step: finite (inf and NaN fail; the old x == approx(x) let inf through)
            assert math.isfinite(row[f"{kind}_final_loss"]) and row[f"{kind}_final_loss"] > 0
            # Weak scaling is the median of each round's own ratio, not a ratio of medians.
            ratios = [runs[(r, n)][prec]["img_per_s"] / runs[(r, 1)][prec]["img_per_s"] for r in (1, 2)]
            assert row[f"{kind}_weak_scaling"] == pytest.approx(sum(ratios) / 2)
            assert row[f"{kind}_efficiency"] == pytest.approx(row[f"{kind}_weak_scaling"] / n)
            assert row[f"{kind}_90ep_hours"] == pytest.approx(90 * 1_281_167 / row[f"{kind}_img_s"] / 3600)
        speedups = [runs[(r, n)]["bf16"]["img_per_s"] / runs[(r, n)]["fp32"]["img_per_s"] for r in (1, 2)]
        assert row["mixed_speedup"] == pytest.approx(sum(speedups) / 2)
        assert len(row["rank_seconds"]) == row["gpus"]  # every rank reported its own timing
        assert Path(row["logs"], "rank0.log").exists()
        assert "SHORT WINDOW" in row["flags"]
    assert rows[0]["mixed_weak_scaling"] == pytest.approx(1.0)
    assert result["env"]["packages"]["torch"] and "loadavg" in result["env"]
    assert result["complete"] and any("SHORT WINDOW" in f for f in result["flags"])

    md = js.with_suffix(".md").read_text()
    assert header in md and "bf16" in md and "SHORT WINDOW" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 3 and all(line.count("|") == 13 for line in table)
    with open(js.with_suffix(".csv")) as f:
        csv_rows = list(csv.DictReader(f))
    assert [int(r["gpus"]) for r in csv_rows] == [1, 2]
    assert float(csv_rows[1]["full_img_s"]) == pytest.approx(rows[1]["full_img_s"])
    assert "SHORT WINDOW" in csv_rows[1]["flags"]
    assert js.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not processes_mentioning(str(tmp_path))


def test_two_ranks_train_from_jpegs_through_dali_cpu(tmp_path, sample_dir):
    args = ["--gpus", "2", "--no-sweep", "--precision", "fp32", "--batch", "4", "--workers", "1"]
    res = run_cli(["bench", "train", *TINY, *args, "--data", sample_dir, "--backend", "dali-cpu", "--out", tmp_path])
    assert res.exit_code == 0, res.output
    (js,) = tmp_path.glob("train-fp32-bs4-*.json")
    result = json.loads(js.read_text())
    (row,) = result["rows"]
    assert row["gpus"] == 2 and row["full_global_images"] == 2 * 4 * 2  # counted from the batches, summed over ranks
    assert "full_weak_scaling" not in row  # one 2-worker run: nothing to scale against
    assert result["config"]["backend"] == "dali-cpu" and "via the dali-cpu backend" in js.with_suffix(".md").read_text()


def test_killed_worker_ends_with_one_message_and_no_leftover_process(tmp_path, monkeypatch):
    # Rank 1 of the 2-worker run SIGKILLs itself at its second iteration, while rank 0 waits in the all-reduce.
    monkeypatch.setenv(FAIL_ENV, "1:1:kill")
    with pytest.raises(UserError) as err:
        run_train_bench(tiny_config(tmp_path, gpus=2, sweep=False, precisions=("full",), iters=3))
    message = str(err.value)
    assert "with 2 worker(s): rank 1" in message and "SIGKILL" in message
    log = Path(message.split("its log: ")[1].split(" ")[0])
    assert log.name == "rank1.log" and "dying at iteration 1" in log.read_text()
    assert not processes_mentioning(str(tmp_path))


def test_crashed_worker_names_its_error(tmp_path, monkeypatch):
    monkeypatch.setenv(FAIL_ENV, "0:1:raise")
    res = run_cli(["bench", "train", *TINY, "--gpus", "1", "--precision", "fp32", "--out", tmp_path])
    # (--gpus 1 is a one-process torchrun launch: the same failure path as any rank of a larger run)
    assert res.exit_code == 1  # a failure, not bad input (2)
    assert "rank 0 (host " in res.output
    assert "exited with code 1: RuntimeError: RN50_BENCH_FAIL asked rank 0 to fail" in res.output
    assert "Traceback" not in res.output
    assert not processes_mentioning(str(tmp_path))


def test_hung_worker_is_stopped_by_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv(FAIL_ENV, "0:0:hang")
    with pytest.raises(UserError, match=r"did not finish within 12 s .*stopped it"):
        run_train_bench(tiny_config(tmp_path, gpus=1, precisions=("full",), timeout=12))
    assert not processes_mentioning(str(tmp_path))


@pytest.mark.gpu
def test_gpu_sweep_runs_fp16_and_tf32_through_nccl(tmp_path):
    import torch

    n = min(2, torch.cuda.device_count())
    args = ["--device", "cuda", "--gpus", n, "--batch", "16", "--warmup", "3", "--iters", "5", "--image-size", "64"]
    res = run_cli(["bench", "train", *args, "--num-classes", "10", "--out", tmp_path])
    assert res.exit_code == 0, res.output
    (js,) = tmp_path.glob("train-*.json")
    rows = json.loads(js.read_text())["rows"]
    assert [r["gpus"] for r in rows] == ([1, 2] if n == 2 else [1])
    ampere = torch.cuda.get_device_capability(0)[0] >= 8
    for row in rows:
        assert row["mixed_precision"] == "fp16" and row["full_precision"] == ("tf32" if ampere else "fp32")
        assert row["mixed_max_memory_gib"] > 0 and row["mixed_img_s"] > 0
    assert not processes_mentioning(str(tmp_path))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_sweep_keeps_the_finished_launches_and_says_where(tmp_path, signum):
    # A real signal to the whole process group, as Ctrl-C (SIGINT) or a scheduler (SIGTERM) sends it, once the first
    # launch's tables are on disk.
    args = [*TINY, "--gpus", "2", "--rounds", "2", "--precision", "fp32", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    rc, out, _ = signal_when_written(
        ["bench", "train", *args], tmp_path, "train-*.md", signum, wait_s=180, timeout_s=120, poll_s=0.2, env=env
    )
    assert rc == 128 + signum, out
    assert "partial results" in out and "Traceback" not in out
    where = Path(out.split("partial results (")[1].split(" in ", 1)[1].split()[0])
    result = json.loads(where.with_suffix(".json").read_text())
    assert not result["complete"] and 1 <= len(result["launches"]) < 4
    assert "PARTIAL" in where.read_text()
    assert not processes_mentioning(str(tmp_path))
