"""What a long run meets: kill -9 (periodic checkpoints, stale temporaries), datasets with too many bad files,
checkpoints that do not fit. Each ends in a resumable state or one line naming the real cause."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rn50.errors import UserError
from rn50.recipes import get_recipe
from rn50.train.checkpoint import load_checkpoint, save_checkpoint
from rn50.train.loop import TrainOptions, fit
from rn50.train.step import build_state
from rn50.weights import read_checkpoint
from tests.data.images import write_corrupt

ROOT = Path(__file__).resolve().parents[2]
# 20 train images, batch 4: 5 iterations per epoch
RECIPE = get_recipe("sample-cpu").replace(image_size=32, batch_size=4, epochs=1, warmup_epochs=0, workers=0)


@pytest.mark.parametrize("backend", ["pytorch", "dali-cpu"])
def test_kill_9_loses_at_most_checkpoint_every_and_resumes_bitwise(tiny_data, tmp_path, backend):
    if backend == "dali-cpu":
        pytest.importorskip("nvidia.dali")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rn50", "train", str(tiny_data), "--recipe", "sample-cpu", "--image-size", "32",
           "--batch-size", "4", "--epochs", "1", "--warmup", "0", "--workers", "0", "--training-only",
           "--print-freq", "1", "--checkpoint-every", "2", "--no-progress", "--out", str(out),
           "--data-backend", backend]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics, deadline = out / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(r["iteration"] >= 3 for r in _records(metrics)):  # a mid-epoch checkpoint (iteration 2) exists
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill; the test proves nothing"
    done = max(r["iteration"] for r in _records(metrics))
    last = read_checkpoint(out / "checkpoints" / "last.pth")
    assert not last["epoch_complete"] and last["iteration"] in (2, 4), last["iteration"]
    assert done - last["iteration"] <= 2  # kill -9 lost at most --checkpoint-every iterations
    # what a kill during a checkpoint write leaves; the next start removes it
    stale = out / "checkpoints" / ".epoch-001.pth.k9x2ab7q.tmp"
    stale.write_bytes(b"\0" * 4096)
    opts = dict(data=tiny_data, recipe=RECIPE.replace(data_backend=backend), training_only=True, progress=False)
    opts["print_freq"] = 5
    resumed = fit(TrainOptions(**opts, out=out, resume="auto"))
    assert resumed["status"] == "complete" and not stale.exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    fit(TrainOptions(**opts, out=tmp_path / "whole"))
    a = read_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pth")["model"]
    b = read_checkpoint(out / "checkpoints" / "last.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _records(metrics: Path) -> list[dict]:
    """The complete lines of a metrics.jsonl another process is appending to (a line being written is skipped)."""
    text = metrics.read_text() if metrics.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def test_too_many_undecodable_files_stop_the_run(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    write_corrupt(data / "train" / "digit3", np.random.default_rng(0))  # 4 of 24 train images
    opts = dict(data=data, recipe=RECIPE, training_only=True, progress=False, print_freq=1)
    with pytest.raises(UserError, match=r"of the 24 train images could not be decoded, more than --max-skipped 0.01"):
        fit(TrainOptions(**opts, out=tmp_path / "strict"))
    listed = (tmp_path / "strict" / "bad_files.txt").read_text().splitlines()
    assert listed and all("/digit3/" in line for line in listed)
    summary = fit(TrainOptions(**opts, out=tmp_path / "lenient", max_skipped=0.2))
    assert summary["status"] == "complete" and summary["bad_files"] == 4


def test_resume_names_the_class_count_and_the_architecture(tmp_path):
    twelve = build_state(RECIPE.replace(num_classes=12), "cpu", False, steps_per_epoch=10)
    save_checkpoint(tmp_path / "c12.pth", twelve, epoch=0, iteration=0, epoch_complete=True, best_top1=None)
    ten = build_state(RECIPE, "cpu", False, steps_per_epoch=10)
    with pytest.raises(UserError, match=r"has 12 classes \(fc\.weight \(12, 2048\)\) .* has 10 .*--num-classes 12"):
        load_checkpoint(tmp_path / "c12.pth", ten)
    obj = torch.load(tmp_path / "c12.pth", weights_only=True)
    obj["model"] = {k: v for k, v in obj["model"].items() if not k.startswith("layer4.")}  # another architecture
    obj["model"]["fc.weight"] = ten.module.fc.weight.detach().clone()
    obj["model"]["fc.bias"] = ten.module.fc.bias.detach().clone()
    torch.save(obj, tmp_path / "other.pth")
    with pytest.raises(UserError, match=r"is not this run's model: .*missing keys \(layer4\."):
        load_checkpoint(tmp_path / "other.pth", ten)


def test_junk_is_called_corrupt_not_unsafe(tmp_path):
    """Random bytes, text and a cut-short checkpoint are damaged files; only a pickle that asks for code is unsafe."""
    from rn50.weights import read_checkpoint as read

    good = tmp_path / "good.pth"
    torch.save({"w": torch.zeros(1000)}, good)
    cases = {
        "random": os.urandom(3000),
        "text": b"this is not a checkpoint\n" * 20,
        "cut": good.read_bytes()[: good.stat().st_size // 2],
        "pickle-junk": b"\x80\x04" + os.urandom(500),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError) as e:
            read(tmp_path / name)
        message = str(e.value)
        assert "arbitrary code" not in message and ("corrupt" in message or "truncated" in message), (name, message)
        assert "list index" not in message and "pop from" not in message, (name, message)
