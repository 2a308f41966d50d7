"""benchmarks/device_suite.sh cannot rot unnoticed: its DRY_RUN pass runs every step's command on CPU with tiny
settings and must end with every step ok (or skipped with the reason the script gives) and a summary; its PLAN pass
lists the GPU run's own command lines, which must fit the budget and be accepted by the CLI as they stand."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from rn50.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_IN_DRY_RUN = {"sample-data", "train-compile"}  # the JPEG folder stands in; torch.compile takes minutes on CPU
STEPS = ["make-jpegs", "sample-data", "sample-model", "train-synthetic", "train-pytorch-gpu", "overhead", "infer",
         "train-compile", "gpu-tests", "mlperf-offline", "mlperf-singlestream"]  # fmt: skip
BUDGET_S, RESERVED_S = 470, 10  # the GPU call's limit; kept for the environment and the summary


def gpu_plan() -> list[tuple[str, int, list[str]]]:
    """(step, timeout, argv) of every step of the real GPU run, as the script itself prints them with PLAN=1."""
    env = {**os.environ, "PLAN": "1", "PYTHON": sys.executable}
    res = subprocess.run(["bash", "benchmarks/device_suite.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = [line.split("\t") for line in res.stdout.splitlines()]
    assert lines[-1][0] == "planned"
    return [(name, int(limit), [shlex.split(w)[0] for w in words]) for name, limit, *words in lines[:-1]]


def parse_rn50(argv: list[str]) -> tuple[str, ...]:
    """What `rn50 ARGV` checks before it touches a device: the CLI parser (options, types, choices), then the value
    checks its command runs first (the ones A5's `--precision fp16,bf16` failed on the GPU, after a CPU dry run)."""
    from rn50.bench.runtimes import PRECISIONS, RUNTIMES
    from rn50.bench.scaling import resolve_precisions
    from rn50.bench.timing import parse_batches, parse_list
    from rn50.cli import app
    from rn50.recipes import get_recipe

    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("rn50", list(argv))
    path = []
    while hasattr(cmd, "resolve_command"):
        # the subcommand's name is in the protected args (click's `protected_args`, `_protected_args` in Typer's copy)
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        name, cmd, rest = cmd.resolve_command(ctx, [*protected, *ctx.args])
        path.append(name)
        ctx = cmd.make_context(name, rest, parent=ctx)
    p = ctx.params
    if path == ["bench", "train"]:
        resolve_precisions([w for item in p["precision"] or ["mixed,full"] for w in item.split(",") if w], "cuda")
    elif path == ["bench", "infer"]:
        parse_batches(p["batch"])
        parse_list(p["backend"], RUNTIMES, "backend")
        parse_list(p["precision"], PRECISIONS, "precision")
    elif path == ["bench", "mlperf"]:  # the command's own checks but the files' existence (PLAN makes none)
        from rn50.bench.mlperf import MlperfOptions

        keys = ("scenario", "mode", "batch", "min_query_count", "sample_count", "concurrency")
        MlperfOptions(ROOT, ROOT, min_duration_s=p["min_duration"], **{k: p[k] for k in keys}).validate()
    elif path == ["train"]:
        get_recipe(p["recipe"])
    return tuple(path)


def test_gpu_run_fits_its_budget_and_the_cli_accepts_every_command():
    plan = gpu_plan()
    assert [name for name, _, _ in plan] == STEPS
    assert sum(limit for _, limit, _ in plan) <= BUDGET_S - RESERVED_S
    rn50 = [argv[argv.index("rn50") + 1 :] for _, _, argv in plan if argv[1:3] == ["-m", "rn50"]]
    assert len(rn50) == 8
    commands = set()
    for argv in rn50:
        commands.add(parse_rn50(argv))
        assert "cuda" in argv or argv[:2] == ["data", "sample"], argv  # the GPU branch, not the dry run's
    assert commands == {("data", "sample"), ("train",), ("bench", "train"), ("bench", "infer"), ("bench", "mlperf")}
    # The check is not vacuous: the suite's old train-synthetic line is refused, as it was on the GPU.
    with pytest.raises(UserError, match="at most one mixed"):
        parse_rn50(["bench", "train", "--device", "cuda", "--precision", "fp16,bf16"])


def test_device_suite_dry_run_runs_every_step(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env["PYTHON"] = sys.executable  # the suite runs `$PYTHON -m rn50`: this interpreter, with rn50 installed
    res = subprocess.run(["bash", "benchmarks/device_suite.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == STEPS
    for name, s in steps.items():
        assert s["status"] == ("skipped" if name in SKIPPED_IN_DRY_RUN else "ok"), s
    assert summary["dry_run"] is True
    # every figure the summary reads was found in the files the steps wrote
    assert {t["backend"] for t in summary["training"]} == {"synthetic", "pytorch-gpu"}
    assert all(t["img_s"] > 0 for t in summary["training"])
    assert {(i["backend"], i["batch"]) for i in summary["inference"]} == {
        (b, n) for b in ("eager", "torchscript") for n in (1, 2)
    }
    assert all(i["top1_agreement"] is not None for i in summary["inference"])
    assert [(g["scenario"], g["result"], g["compliant"]) for g in summary["mlperf"]] == [
        ("offline", "VALID", False),
        ("singlestream", "VALID", False),
    ]
    assert summary["overhead"]["same_work"] is True
    text = (tmp_path / "summary.md").read_text()
    assert "DRY RUN" in text and "| train-pytorch-gpu | ok |" in text
    assert {"summary.md", "summary.json", "suite.log", "device-suite.tar.gz", "env.log"} <= {
        p.name for p in tmp_path.iterdir()
    }
