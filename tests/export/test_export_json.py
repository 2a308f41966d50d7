"""`rn50 export --json` writes exactly one JSON document to stdout, whatever the libraries it drives print."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.export.conftest import SAMPLE_SIZE

ROOT = Path(__file__).resolve().parents[2]


def test_int8_entropy_calibration_keeps_json_stdout_clean(sample_model, sample_dir, tmp_path):
    # ONNX Runtime's histogram calibrators (entropy, percentile) print their progress with print(). The sample model:
    # the export's parity gate judges agreement, which only a model with real margins passes on any CPU.
    out = tmp_path / "int8.onnx"
    cmd = [sys.executable, "-m", "rn50", "export", str(sample_model["checkpoint"]), "--format", "onnx",
           "--precision", "int8", "--calib-method", "entropy", "--calib", str(sample_dir / "train"),
           "--images", str(sample_dir / "val"), "--image-size", str(SAMPLE_SIZE), "--max-batch", "8", "--out", str(out),
           "--json"]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)  # the whole of stdout, nothing before or after
    assert doc["precision"] == "int8" and doc["export"]["quantization"]["calibration"] == "entropy"
    assert doc["parity"]["kernel_paths"]["bit_identical"]  # the kernel-path check ran and printed nothing
    assert "Collecting tensor data" not in res.stdout + res.stderr  # library chatter goes to the debug log
