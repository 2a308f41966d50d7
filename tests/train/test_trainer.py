"""The trainer end to end on CPU: run directory, checkpoints, resume equivalence, SIGTERM, 2-process DDP, DALI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rn50.recipes import get_recipe
from rn50.train.loop import TrainOptions, fit
from rn50.weights import load_model, read_checkpoint
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]


def tiny_recipe(**kw):
    base = dict(epochs=2, batch_size=4, image_size=32, workers=0, warmup_epochs=1, lr_per_256=0.05 * 256 / 4)
    return get_recipe("sample-cpu").replace(**{**base, **kw})


def run_fit(data, out, **kw):
    opts = dict(data=data, recipe=tiny_recipe(), out=out, progress=False, print_freq=2)
    return fit(TrainOptions(**{**opts, **kw}))


def test_a_recipe_for_another_world_size_is_refused_not_rebound(tiny_data, tmp_path):
    """The world size is bound once, with the options: a recipe for 8 processes in a 1-process run is a mistake
    (its optimizer batch and lr were derived for 8), said in one line before anything is written."""
    from rn50.errors import UserError

    with pytest.raises(UserError, match=r"the recipe is for 8 process\(es\) but this run has 1: .*gpus=1"):
        run_fit(tiny_data, tmp_path / "run", recipe=tiny_recipe(gpus=8))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_run_directory_and_checkpoints(tiny_data, tmp_path):
    out = tmp_path / "run"
    summary = run_fit(tiny_data, out, recipe=tiny_recipe(workers=1), keep_epochs=1)
    assert summary["status"] == "complete"
    for name in ("recipe.json", "env.json", "metrics.jsonl", "report.md"):
        assert (out / name).is_file(), name
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["best.pth", "epoch-002.pth", "last.pth"]  # --keep-epochs 1 pruned epoch-001.pth
    assert (out / "checkpoints" / "last.pth").samefile(out / "checkpoints" / "epoch-002.pth")  # a link, not a copy
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    val = [r for r in records if r["type"] == "val"]
    assert {"loss", "lr", "img_per_s", "data_time", "compute_time", "loss_scale"} <= set(train[0])
    assert [r["epoch"] for r in val] == [1, 2] and all(r["images"] == 10 for r in val)
    assert {"val_loss", "top1", "top5"} <= set(val[0])
    ckpt = read_checkpoint(out / "checkpoints" / "last.pth")
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    assert {"optimizer", "scaler", "schedule", "epoch", "iteration", "rng", "recipe", "best_top1"} <= set(ckpt)
    assert ckpt["epoch_complete"] and ckpt["schedule"]["opt_step"] == 10  # 2 epochs x 5 steps
    assert load_model(out / "checkpoints" / "best.pth").fc.out_features == 10
    assert "top-1" in (out / "report.md").read_text()
    # a second run into the same folder is refused, not mixed in
    with pytest.raises(Exception, match="already holds a run"):
        run_fit(tiny_data, out)


def test_resume_mid_epoch_gives_identical_weights(tiny_data, tmp_path):
    full = tmp_path / "full"
    run_fit(tiny_data, full)
    part = tmp_path / "part"
    stopped = run_fit(tiny_data, part, stop_after=7)  # epoch 2, after 2 of its 5 iterations
    assert stopped["status"] == "stopped"
    mid = read_checkpoint(part / "checkpoints" / "last.pth")
    assert (mid["epoch"], mid["iteration"], mid["epoch_complete"]) == (1, 2, False)
    resumed = run_fit(tiny_data, part, resume="auto")
    assert resumed["status"] == "complete"
    a = read_checkpoint(full / "checkpoints" / "last.pth")["model"]
    b = read_checkpoint(part / "checkpoints" / "last.pth")["model"]
    assert a.keys() == b.keys()
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert diff == 0.0


def test_sigterm_saves_a_mid_epoch_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rn50", "train", str(tiny_data), "--recipe", "sample-cpu", "--image-size", "32",
           "--batch-size", "2", "--epochs", "3", "--workers", "0", "--print-freq", "1", "--no-progress",
           "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output  # 128 + SIGTERM: interrupted (resumable), not done and not failed
    ckpt = read_checkpoint(out / "checkpoints" / "last.pth")
    assert ckpt["epoch_complete"] is False and ckpt["epoch"] == 0 and 1 <= ckpt["iteration"] < 10
    assert "--resume auto" in output


def test_ddp_two_gloo_processes_match_one_process(tiny_data, tmp_path):
    common = ["--recipe", "sample-cpu", "--image-size", "32", "--epochs", "1", "--workers", "0", "--warmup", "0",
              "--no-progress", "--device", "cpu", "--lr", "0.05"]  # fmt: skip
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rn50", "train", str(tiny_data), *common, "--batch-size", "2", "--gpus", "2",
           "--out", str(ddp)]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert json.loads((ddp / "recipe.json").read_text())["world_size"] == 2
    val = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert val[0]["images"] == 10  # both ranks' shards summed, each image once
    # one process, same global batch: 2 per micro-step, 2 accumulation steps per optimizer step. Same thread
    # count as the DDP ranks: other conv reduction orders differ in the last bit, and 5 steps amplify that.
    one = tmp_path / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run_cli(["train", tiny_data, *common, "--batch-size", "2", "--optimizer-batch-size", "4", "--out", one])
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    a = read_checkpoint(ddp / "checkpoints" / "last.pth")
    b = read_checkpoint(one / "checkpoints" / "last.pth")
    assert a["schedule"]["opt_step"] == b["schedule"]["opt_step"] == 5
    names = [n for n, _ in load_model(one / "checkpoints" / "last.pth").named_parameters()]
    diff = max((a["model"][n] - b["model"][n]).abs().max().item() for n in names)
    assert diff < 1e-6, diff


def test_dali_cpu_backend_end_to_end(tiny_data, tmp_path):
    pytest.importorskip("nvidia.dali")
    out = tmp_path / "dali"
    summary = run_fit(tiny_data, out, recipe=tiny_recipe(epochs=1, data_backend="dali-cpu", workers=1))
    assert summary["status"] == "complete"
    val = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert val[0]["images"] == 10


def test_evaluate_any_checkpoint(tiny_checkpoint, tiny_data, tmp_path):
    args = ["--no-progress", "--image-size", "64", "--data-backend", "pytorch"]
    res = run_cli(["train", tiny_data, "--evaluate", tiny_checkpoint, *args])
    assert res.exit_code == 0, res.output
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("top-1") and "(10 images)" in line
    # a plain torchvision-style state_dict and an NVIDIA-style `module.` one give the same figures; evaluate
    # together with --resume runs (the original refused)
    sd = load_model(tiny_checkpoint).state_dict()
    plain, nvidia = tmp_path / "plain.pth", tmp_path / "nvidia.pth"
    torch.save(sd, plain)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, nvidia)
    a = run_cli(["train", tiny_data, "--evaluate", plain, *args, "--resume", "auto", "--out", tmp_path / "r"])
    b = run_cli(["train", tiny_data, "--evaluate", nvidia, *args])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert a.stdout.strip().splitlines()[-1] == b.stdout.strip().splitlines()[-1] == line


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "not found"),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "folder"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no train/"),
    ],
)
def test_bad_data_gives_one_line(tmp_path, make, message):
    res = run_cli(["train", make(tmp_path), "--recipe", "sample-cpu", "--no-progress", "--out", tmp_path / "o"])
    assert res.exit_code == 2
    assert message in res.stderr and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipe", "nope"], "unknown recipe"),
        (["--workers", "-1"], "workers"),
        (["--memory-format", "nchwc"], "memory-format"),
        (["--data-backend", "tfrecord"], "data_backend"),
        (["--prof", "0"], "--prof"),
        (["--keep-epochs", "-1"], "--keep-epochs must be >= 0"),
        (["--resume", "/no/such.pth", "--batch-size", "4"], "no such checkpoint"),
        (["--batch-size", "4", "--optimizer-batch-size", "6"], "multiple"),
    ],
)
def test_bad_options_give_one_line(tiny_data, tmp_path, args, message):
    res = run_cli(["train", tiny_data, *args, "--no-progress", "--out", tmp_path / "o"])
    assert res.exit_code == 2, res.output
    assert message in res.stderr and "Traceback" not in res.output
