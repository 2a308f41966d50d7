"""INT8 calibration methods compared on one checkpoint: top-1 agreement with eager fp32 on every val image.

Each row is one real `rn50 export CKPT --format onnx --precision int8 ...` (the CLI path users run), with its parity
check on all of the sample's val images, and `rn50 eval` of the artifact for accuracy beside the fp32 checkpoint.

    python benchmarks/int8_methods.py --checkpoint runs/demo/train/checkpoints/best.pth --sample sample \\
        --out docs/results/int8-sample-<cpu>
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rn50.env import cpu_flags, cpu_model  # noqa: E402

# (label, extra export options)
VARIANTS = [
    ("cpu form, minmax, 64 images (default)", ["--int8-target", "cpu"]),
    ("cpu form, entropy, 64 images", ["--int8-target", "cpu", "--calib-method", "entropy"]),
    ("cpu form, percentile, 64 images", ["--int8-target", "cpu", "--calib-method", "percentile"]),
    ("cpu form, minmax, 256 images", ["--int8-target", "cpu", "--calib-count", "256"]),
    ("cpu form, minmax, 64 images, stem conv in int8", ["--int8-target", "cpu", "--int8-stem", "int8"]),
    ("tensorrt form, minmax, 64 images", ["--int8-target", "tensorrt"]),
]


def rn50(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rn50", *args], capture_output=True, text=True, cwd=REPO)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--sample", type=Path, required=True, help="folder with train/ (calibration) and val/")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    n_val = sum(1 for _ in (args.sample / "val").glob("*/*"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="rn50-int8-") as tmp:
        for label, extra in VARIANTS:
            artifact = Path(tmp) / f"int8-{len(rows)}.onnx"
            t0 = time.perf_counter()
            exp = rn50(
                "export", str(args.checkpoint), "--format", "onnx", "--precision", "int8", "--out", str(artifact),
                "--image-size", str(args.image_size), "--max-batch", "64", "--calib", str(args.sample / "train"),
                "--images", str(args.sample / "val"), "--parity-images", str(n_val), "--json", *extra,
            )  # fmt: skip
            row = {"variant": label, "options": extra, "export_s": round(time.perf_counter() - t0, 1)}
            if exp.returncode != 0:
                row["error"] = (exp.stderr.strip().splitlines() or ["?"])[-1]
                rows.append(row)
                print(label, "ERROR", row["error"], flush=True)
                continue
            real = json.loads(exp.stdout)["parity"]["real"]
            row.update(agreement=real["top1_agreement"], n=real["n"], p95_rel=real["p95_rel"], max_rel=real["max_rel"])
            ev = rn50("eval", str(artifact), str(args.sample), "--json")
            if ev.returncode == 0:
                e = json.loads(ev.stdout)
                row.update(int8_top1=e["rows"][0]["top1"], fp32_top1=e["rows"][1]["top1"], top1_delta=e["top1_delta"])
            rows.append(row)
            print(f"{label}: agreement {100 * row['agreement']:.2f}% on {row['n']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags()}
    result = {"checkpoint": str(args.checkpoint), "image_size": args.image_size, "machine": machine, "rows": rows}
    (args.out / "int8_methods.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# INT8 calibration methods on the sample model",
        "",
        f"Checkpoint `{args.checkpoint}` ({args.image_size} px); machine {machine['cpu']}, {machine['cores']} cores "
        f"({' '.join(machine['flags'])}). Agreement: top-1 of the INT8 ONNX model (ONNX Runtime CPU) vs eager fp32 "
        "on every val image of the sample; accuracy from `rn50 eval`.",
        "",
        "| variant | top-1 agreement | p95 image rel | max rel | int8 top-1 | fp32 top-1 | export s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | error: {r['error']} | | | | | {r['export_s']} |")
            continue
        lines.append(
            f"| {r['variant']} | {100 * r['agreement']:.2f}% (n={r['n']}) | {r['p95_rel']:.3f} | {r['max_rel']:.3f} | "
            f"{r.get('int8_top1', float('nan')):.2f} | {r.get('fp32_top1', float('nan')):.2f} | {r['export_s']} |"
        )
    (args.out / "int8_methods.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
