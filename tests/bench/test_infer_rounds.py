"""`rn50 bench infer` in interleaved rounds: speedups as medians of per-round ratios, flags, a signal loses nothing."""

import json
import os
import signal
import statistics
from pathlib import Path

import pytest

from rn50.bench.infer import run_infer
from tests.conftest import signal_when_written
from tests.helpers import infer_config


def test_speedup_is_the_median_of_same_round_ratios_and_few_iterations_are_flagged(tmp_path):
    cfg = infer_config(tmp_path, batches=[1, 2], precisions=["bf16"], rounds=3)
    result = run_infer(cfg)
    rows = {(r["precision"], r["batch"]): r for r in result["rows"]}
    for batch in (1, 2):
        base, bf16 = rows[("fp32", batch)], rows[("bf16", batch)]
        assert base["rounds"] == bf16["rounds"] == 3 and base["iters"] == bf16["iters"] == 3
        ratios = [a / b for a, b in zip(bf16["round_img_s"], base["round_img_s"], strict=True)]
        assert bf16["speedup"] == pytest.approx(statistics.median(ratios))
        assert bf16["speedup_min"] == pytest.approx(min(ratios)) and base["speedup"] == 1.0
        assert "FEW ITERATIONS" in bf16["flags"]  # 3 < 5, whatever the machine's speed
    assert any(f.startswith("FEW ITERATIONS: eager bf16 batch 2") and "--iters" in f for f in result["flags"])
    md = Path(result["paths"]["md"]).read_text()
    assert "flag: FEW ITERATIONS" in md and "speedup spread" in md and "PARTIAL" not in md
    assert "FEW ITERATIONS" in Path(result["paths"]["csv"]).read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_keeps_the_finished_batch_sizes_and_says_where(tmp_path, signum):
    args = ["bench", "infer", "--device", "cpu", "--batch", "1,2,4,8,16,32,64", "--image-size", "32"]
    args += ["--warmup", "1", "--min-time", "2", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    rc, out, _ = signal_when_written(args, tmp_path, "infer-*.md", signum, env=env)
    assert rc == 128 + signum, out
    assert "partial results (batch 1" in out and "Traceback" not in out
    md = Path(out.split(" in ")[-1].split()[0])
    assert "PARTIAL" in md.read_text()
    finished = json.loads(md.with_suffix(".json").read_text())["finished_batches"]
    assert finished and finished == [1, 2, 4, 8, 16, 32, 64][: len(finished)] and len(finished) < 7
