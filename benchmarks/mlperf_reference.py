"""`rn50 bench mlperf` against MLCommons' reference harness (vision/classification_and_detection/python/main.py) on
the same ONNX file, images, batch, performance sample count, duration and scenario, in alternating rounds.

    python benchmarks/mlperf_reference.py MODEL.onnx DATA --reference CHECKOUT/vision/classification_and_detection \
        --reference-python VENV/bin/python [--rounds 3] [--seconds 15] [--batch 8] [--sample-count 64] --out DIR

The reference is not vendored: give a checkout of github.com/mlcommons/inference and a Python with what its main.py
imports (numpy, opencv-python-headless, onnxruntime, pycocotools, mlcommons-loadgen). It runs with its own ORT
backend, QueueRunner (--threads worker threads; both get --concurrency) and the `imagenet_mobilenet` dataset entry
(OpenCV preprocessing, argmax response: the same work per sample as rn50's top-1 response; its `imagenet` entry
expects a model whose output is already an ArgMax). rn50 runs `bench mlperf MODEL DATA --scenario offline`. Both
are reduced runs (NOT COMPLIANT). Each round runs both, order alternating; the figure is LoadGen's own Offline
samples/s from each mlperf_log_detail.txt, and the ratio is per round. Writes DIR/mlperf-reference.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rn50.bench.mlperf.library import SampleLibrary, eval_folder  # noqa: E402
from rn50.bench.mlperf.logs import read_detail  # noqa: E402
from rn50.io import atomic_write_json, atomic_write_text  # noqa: E402


def run_rn50(args: argparse.Namespace, out: Path) -> dict:
    argv = [
        sys.executable,
        "-m",
        "rn50",
        "bench",
        "mlperf",
        str(args.model),
        str(args.data),
        "--batch",
        str(args.batch),
    ]
    argv += [
        "--sample-count",
        str(args.sample_count),
        "--min-duration",
        str(args.seconds),
        "--min-query-count",
        str(args.sample_count),
    ]
    argv += [
        "--target-qps",
        str(args.qps),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--concurrency",
        str(args.concurrency),
    ]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    return read(out / "offline-performance", proc, argv)


def run_reference(args: argparse.Namespace, out: Path, folder: Path) -> dict:
    argv = [
        str(args.reference_python),
        "main.py",
        "--backend",
        "onnxruntime",
        "--model",
        str(Path(args.model).resolve()),
    ]
    argv += [
        "--inputs",
        "input",
        "--outputs",
        "logits",
        "--dataset",
        "imagenet_mobilenet",
        "--dataset-path",
        str(folder),
    ]
    argv += ["--profile", "resnet50-onnxruntime", "--model-name", "resnet50"]
    argv += ["--scenario", "Offline", "--time", str(int(args.seconds)), "--max-batchsize", str(args.batch)]
    # --count: its dataset's first N images and the minimum query count (Offline: samples), as rn50's options say
    argv += ["--performance-sample-count", str(args.sample_count), "--count", str(args.sample_count)]
    argv += ["--qps", str(int(args.qps)), "--threads", str(args.concurrency)]
    argv += [
        "--user_conf",
        str(out.parent / "user.conf"),
        "--output",
        str(out),
        "--cache_dir",
        str(out.parent / "cache"),
    ]
    proc = subprocess.run(argv, cwd=args.reference / "python", capture_output=True, text=True)
    return read(out, proc, argv)


def read(folder: Path, proc: subprocess.CompletedProcess, argv: list[str]) -> dict:
    d = read_detail(folder)
    if d.get("result_samples_per_second") is None:
        raise SystemExit(f"no LoadGen result in {folder} (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return {"samples_s": d["result_samples_per_second"], "result": d.get("result_validity"),
            "samples": d.get("effective_samples_per_query"), "argv": argv}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--reference", type=Path, required=True, help="CHECKOUT/vision/classification_and_detection")
    ap.add_argument("--reference-python", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sample-count", type=int, default=64)
    ap.add_argument("--qps", type=float, default=20, help="Offline expected QPS for both (sizes the one query)")
    ap.add_argument("--concurrency", type=int, default=1, help="inference threads: rn50 --concurrency, its --threads")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    folder = eval_folder(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    if not (folder / "val_map.txt").is_file():  # the reference's image list; rn50 ignores non-folder entries
        atomic_write_text(folder / "val_map.txt", SampleLibrary(folder, 224).val_map())
    atomic_write_text(args.out / "user.conf", "")  # the reference insists on one; empty: mlperf.conf only
    rounds, load = [], [os.getloadavg()]
    for r in range(args.rounds):
        pair = {}
        for who in ("rn50", "reference") if r % 2 == 0 else ("reference", "rn50"):
            out = args.out / f"round{r + 1}-{who}"
            pair[who] = run_rn50(args, out) if who == "rn50" else run_reference(args, out, folder)
            print(f"round {r + 1} {who}: {pair[who]['samples_s']:.2f} samples/s ({pair[who]['result']})", flush=True)
        pair["ratio"] = pair["rn50"]["samples_s"] / pair["reference"]["samples_s"]
        rounds.append(pair)
    load.append(os.getloadavg())
    from rn50.env import capture_env

    res = {"rounds": rounds, "median_ratio": statistics.median(p["ratio"] for p in rounds), "loadavg": load}
    res["env"] = capture_env()
    atomic_write_json(args.out / "mlperf-reference.json", res)
    lines = ["| round | rn50 samples/s | reference samples/s | rn50 / reference |", "|---|---|---|---|"]
    lines += [
        f"| {i + 1} | {p['rn50']['samples_s']:.2f} ({p['rn50']['result']}) | {p['reference']['samples_s']:.2f} "
        f"({p['reference']['result']}) | {p['ratio']:.3f} |"
        for i, p in enumerate(rounds)
    ]
    lines.append(
        f"\nMedian rn50 / reference: {res['median_ratio']:.3f}; load average before {load[0]}, after {load[1]}"
    )
    atomic_write_text(args.out / "mlperf-reference.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"median_ratio": res["median_ratio"]}))


if __name__ == "__main__":
    main()
