"""Tune the `sample-cpu` recipe by measurement: run `rn50 train` on the built-in sample for a grid of settings.

Each configuration is one real `rn50 train SAMPLE --recipe sample-cpu <overrides>` process (so its wall time is what
a user waits, start-up included). Results are appended to `<out>/sweep.jsonl` as they finish (an interrupted sweep
keeps what it measured) and the table `<out>/sweep.md` is rewritten from all rows after each.

    python benchmarks/sample_sweep.py --stage aug --stage lr --out docs/results/sample-cpu-sweep-<cpu>
    python benchmarks/sample_sweep.py --stage seeds --out ...       # the chosen recipe, unchanged, on 3 seeds
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rn50.env import cpu_flags, cpu_model  # noqa: E402
from rn50.recipes import get_recipe  # noqa: E402

NOAUG = {"crop_area": (1, 1), "crop_ratio": (1, 1), "hflip": False}
BASE = {"lr": 0.02, "warmup": 1, "epochs": 8, **NOAUG}
# Stages: each is a list of override sets applied to `sample-cpu` (None in a value: the recipe's own).
STAGES: dict[str, list[dict]] = {
    # Augmentation at a fixed schedule: ImageNet's crop + flip, none, and milder crops.
    "aug": [
        {**BASE, "crop_area": (0.08, 1), "crop_ratio": (3 / 4, 4 / 3), "hflip": True},
        {**BASE},
        {**BASE, "crop_area": (0.35, 1), "crop_ratio": (3 / 4, 4 / 3)},
        {**BASE, "crop_area": (0.6, 1), "crop_ratio": (3 / 4, 4 / 3)},
        {**BASE, "crop_area": (0.6, 1), "crop_ratio": (3 / 4, 4 / 3), "hflip": True},
        {**BASE, "crop_area": (0.6, 0.85), "crop_ratio": (3 / 4, 4 / 3)},
    ],
    "lr": [{"lr": lr} for lr in (0.01, 0.04)],
    # At the best lr of the stage above (0.04): one step further, then each schedule knob on its own.
    "schedule": [
        {"lr": 0.08},
        {"epochs": 6},
        {"epochs": 10},
        {"warmup": 2},
        {"label_smoothing": 0.0},
        {"batch_size": 64, "lr": 0.08},
    ],
    # The last two schedule rows alone (a run of the stage above was cut short by an overloaded machine).
    "schedule-rest": [{"label_smoothing": 0.0}, {"batch_size": 64, "lr": 0.08}],
}


def cli_args(overrides: dict) -> list[str]:
    args = []
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, tuple):
            args += [flag, *(repr(float(v)) for v in value)]
        else:
            args += [flag, str(value)]
    return args


def run_one(sample: Path, overrides: dict, seed: int, workdir: Path) -> dict:
    out = workdir / f"run-{time.time_ns()}"
    cmd = [sys.executable, "-m", "rn50", "train", str(sample), "--recipe", "sample-cpu", "--no-progress"]
    cmd += ["--seed", str(seed), "--out", str(out), "--keep-epochs", "1", *cli_args(overrides)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    vals = []
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        vals = [json.loads(line) for line in metrics.read_text().splitlines()]
        vals = [v["top1"] for v in vals if v.get("type") == "val"]
    m = (
        re.search(r"training time ([\d.]+) s", (out / "report.md").read_text())
        if (out / "report.md").exists()
        else None
    )
    shutil.rmtree(out, ignore_errors=True)
    return {
        "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
        "seed": seed,
        "exit_code": proc.returncode,
        "error": proc.stderr.strip().splitlines()[-1] if proc.returncode else None,
        "top1_per_epoch": [round(v, 2) for v in vals],
        "best_top1": round(max(vals), 2) if vals else None,
        "last_top1": round(vals[-1], 2) if vals else None,
        "train_seconds": float(m.group(1)) if m else None,
        "wall_seconds": round(wall, 1),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def describe(overrides: dict) -> str:
    fields = {"warmup": "warmup_epochs"}
    r = get_recipe("sample-cpu").replace(**{fields.get(k, k): v for k, v in overrides.items() if k != "lr"})
    lr = overrides.get("lr", r.lr)
    return (
        f"lr {lr:g}, bs {r.batch_size}, ep {r.epochs}, warmup {r.warmup_epochs:g}, {r.lr_schedule}, "
        f"ls {r.label_smoothing:g}, crop area {r.crop_area[0]:g}-{r.crop_area[1]:g}, "
        f"ratio {r.crop_ratio[0]:.3g}-{r.crop_ratio[1]:.3g}, flip {'on' if r.hflip else 'off'}"
    )


def write_table(out: Path, rows: list[dict], machine: dict) -> None:
    lines = [
        "# sample-cpu sweep: `rn50 train sample --recipe sample-cpu` + overrides",
        "",
        f"Machine: {machine['cpu']} ({machine['cores']} cores; flags {' '.join(machine['flags'])}), "
        f"torch {machine['torch']}. One process per row; wall time includes start-up; val top-1 on the sample's "
        "360 val images. Overrides are relative to the `sample-cpu` recipe of the commit that ran the row. Rows run "
        "while other work loaded the machine (load column) took longer; the accuracy of a seed does not depend on load "
        "(the chosen recipe's seed 0 reproduced its sweep row exactly).",
        "",
        "| stage | settings | seed | best top-1 | last top-1 | train s | wall s | load before/after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['settings']} | {r['seed']} | {r['best_top1']} | {r['last_top1']} | "
            f"{r['train_seconds']} | {r['wall_seconds']} | {r['load_before']}/{r['load_after']} |"
        )
    (out / "sweep.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", action="append", default=[], help=f"{', '.join(STAGES)} or seeds")
    ap.add_argument("--base", type=json.loads, default={}, help="JSON overrides applied under every row of a stage")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sample", type=Path, default=None, help="the sample folder (default: written to a temp dir)")
    args = ap.parse_args()
    import torch

    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags(), "torch": torch.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "machine.json").write_text(json.dumps(machine, indent=1) + "\n")
    jsonl = args.out / "sweep.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    if not args.stage:  # rewrite the table from the rows (e.g. after appending rows run in parallel elsewhere)
        write_table(args.out, rows, machine)
        return
    with tempfile.TemporaryDirectory(prefix="rn50-sweep-") as tmp:
        sample = args.sample
        if sample is None:
            from rn50.data.sample import make_sample

            sample = Path(tmp) / "sample"
            make_sample(sample)
        for stage in args.stage:
            grid = [{}] if stage == "seeds" else STAGES[stage]
            for overrides in grid:
                merged = {**args.base, **overrides}
                merged = {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()}
                for seed in args.seeds:
                    row = {"stage": stage, "settings": describe(merged), **run_one(sample, merged, seed, Path(tmp))}
                    rows.append(row)
                    with jsonl.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    write_table(args.out, rows, machine)
                    print(
                        f"{row['settings']} seed {seed}: best {row['best_top1']} last {row['last_top1']} "
                        f"wall {row['wall_seconds']} s{' ERROR ' + row['error'] if row['error'] else ''}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
