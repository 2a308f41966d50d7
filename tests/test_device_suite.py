"""benchmarks/device_suite.sh cannot rot unnoticed: its DRY_RUN pass runs every step's command on CPU with tiny
settings and must end with every step ok (or skipped with the reason the script gives) and a summary."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_IN_DRY_RUN = {"train-compile", "infer-aoti"}  # torch.compile / AOTInductor take minutes on 2 CPU cores


def test_device_suite_dry_run_runs_every_step(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env["PYTHON"] = sys.executable  # the suite runs `$PYTHON -m rn50`: this interpreter, with rn50 installed
    res = subprocess.run(["bash", "benchmarks/device_suite.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == ["make-jpegs", "sample-model", "train-synthetic", "train-pytorch-gpu", "train-pytorch",
                           "gpu-tests", "infer", "train-compile", "overhead", "infer-aoti"]  # fmt: skip
    for name, s in steps.items():
        assert s["status"] == ("skipped" if name in SKIPPED_IN_DRY_RUN else "ok"), s
    assert summary["dry_run"] is True
    # every figure the summary reads was found in the files the steps wrote
    assert {t["backend"] for t in summary["training"]} == {"synthetic", "pytorch-gpu", "pytorch"}
    assert all(t["img_s"] > 0 for t in summary["training"])
    assert {(i["backend"], i["batch"]) for i in summary["inference"]} == {
        (b, n) for b in ("eager", "torchscript") for n in (1, 2)
    }
    assert all(i["top1_agreement"] is not None for i in summary["inference"])
    assert summary["overhead"]["same_work"] is True
    text = (tmp_path / "summary.md").read_text()
    assert "DRY RUN" in text and "| train-pytorch-gpu | ok |" in text
    assert {"summary.md", "summary.json", "suite.log", "device-suite.tar.gz", "env.log"} <= {
        p.name for p in tmp_path.iterdir()
    }
