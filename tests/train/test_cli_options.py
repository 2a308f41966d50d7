"""`rn50 train` options bound to the recipe (one place, rn50.train.cli_options) and the relaunch's argv."""

import json
import sys

import pytest
import typer

from rn50.cli import app, command_argv
from rn50.train.cli_options import LAUNCHER_OPTIONS, plan_train
from tests.conftest import run_cli


def parse(args):
    """The train command's context for `args`, parsed by the real command line (no run)."""
    train = typer.main.get_command(app).get_command(None, "train")
    return train.make_context("train", [str(a) for a in args])


def plan(args):
    ctx = parse(args)
    return plan_train(ctx.params, command_argv(ctx, skip=LAUNCHER_OPTIONS))


def test_options_set_recipe_fields(tmp_path):
    base = [tmp_path, "--recipe", "sample-cpu", "-b", "4"]
    recipe = plan([*base, "--optimizer-batch-size", "8", "--lr", "0.1"]).options.recipe
    assert recipe.optimizer_batch_size == 8 and recipe.accumulation_steps == 2
    assert recipe.lr == pytest.approx(0.1)  # --lr is the peak lr of the optimizer batch
    assert plan([*base, "--ema", "0.999"]).options.recipe.ema == 0.999
    assert plan([*base, "--recipe", "sample-cpu", "--ema", "0"]).options.recipe.ema is None
    recipe = plan([*base, "--static-loss-scale", "64"]).options.recipe
    assert recipe.loss_scale == 64 and recipe.dynamic_loss_scale is False
    assert plan([*base, "--memory-format", "NCHW"]).options.recipe.memory_format == "contiguous"
    assert plan([*base, "--memory-format", "nhwc"]).options.recipe.memory_format == "channels_last"
    assert plan([*base, "--warmup", "0.5", "--precision", "bf16"]).options.recipe.warmup_epochs == 0.5
    opts = plan([*base, "--print-freq", "3", "--keep-epochs", "0", "--device", "cpu"]).options
    assert (opts.print_freq, opts.keep_epochs, opts.device) == (3, 0, "cpu")


def test_relaunch_repeats_the_given_argv_not_sys_argv(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["python-host", "--host-flag", "host-value"])
    out = tmp_path / "run"
    p = plan([tmp_path, "--gpus", "2", "--lr", "0.1", "--memory-format", "nchw", "--no-progress", "--out", out])
    assert p.launch is not None and p.launch.nproc == 2
    assert p.launch.module == ["rn50", "train", str(tmp_path), "--lr", "0.1", "--memory-format", "nchw",
                               "--out", str(out), "--no-progress"]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--print-freq", "0"], "--print-freq must be >= 1"),
        (["--max-skipped", "2"], "--max-skipped must be <= 1"),
        (["--precision", "fp8"], "--precision: 'fp8' is not one of"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--device", "tpu"], "--device: 'tpu' is not one of"),
    ],
)
def test_ranges_and_choices_give_one_line(tmp_path, args, message):
    res = run_cli(["train", tmp_path, *args, "--no-progress"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.output, res.stderr


def test_help_groups_and_shows_ranges():
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for panel in ("Data", "Optimisation", "Precision", "Distributed", "Checkpoints", "Output"):
        assert f"─ {panel} ─" in res.stdout, panel
    assert "--print-freq" in res.stdout and "[x>=1]" in res.stdout and "<cosine|linear|step>" in res.stdout


def test_train_options_reach_the_run(tiny_data, tmp_path):
    out = tmp_path / "run"
    res = run_cli(
        ["train", tiny_data, "--recipe", "sample-cpu", "--epochs", "1", "--warmup", "0", "-b", "4", "-j", "0",
         "--image-size", "32", "--prof", "2", "--no-progress", "--out", out,
         "--lr", "0.05", "--ema", "0.9", "--static-loss-scale", "32", "--memory-format", "nchw",
         "--optimizer-batch-size", "8"]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    recipe = json.loads((out / "recipe.json").read_text())
    recipe = recipe.get("recipe", recipe)
    assert recipe["optimizer_batch_size"] == 8 and recipe["accumulation_steps"] == 2
    assert recipe["lr"] == pytest.approx(0.05) and recipe["ema"] == 0.9
    assert recipe["loss_scale"] == 32 and recipe["dynamic_loss_scale"] is False
    assert recipe["memory_format"] == "contiguous"
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in train if r.get("type") == "train"]
    assert lrs and max(lrs) <= 0.05 + 1e-9
