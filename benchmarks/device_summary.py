"""The device suite's summary: steps, machine, training, overhead and inference figures, and the #11 targets.

    python benchmarks/device_summary.py WORK OUT SECONDS [DRY_RUN]

Reads WORK/steps.tsv, WORK/logs/env.log and the JSON that `rn50 bench train`, `rn50 bench infer` and
benchmarks/trainer_overhead.py wrote under WORK/results; writes OUT/summary.md (also printed) and OUT/summary.json.
Only figures found in those files appear; a step that did not run leaves its rows out and its status says why.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

# The figures issue #11 asks of one H100 (recorded, not asserted).
TARGETS = {
    "train_fp16_synthetic_compile_img_s": 4000.0,  # >= with --compile, batch 256
    "pytorch_gpu_gap_to_synthetic": 0.10,  # <= (real-JPEG training within 10% of synthetic)
    "trainer_overhead": 0.03,  # <=
    "infer_fp16_bs256_img_s": 15000.0,  # >= (best torch backend)
    "infer_bs1_p99_ms_cuda_graphs": 1.0,  # <=
}


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def machine(env_log: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = env_log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("name, driver_version") and i + 1 < len(lines):
            parts = [p.strip() for p in lines[i + 1].split(",")]
            out["gpu"], out["driver"] = parts[0], parts[1] if len(parts) > 1 else "?"
        m = re.search(r"torch (\S+) torchvision (\S+) cuda (\S+)", line)
        if m:
            out["torch"], out["torchvision"], out["cuda"] = m.groups()
        if line.startswith("Model name"):
            out["cpu"] = line.split(":", 1)[1].strip()
    return out


def training(results: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(results.glob("train-*/train-*.json")):
        data = _load(path)
        if not data:
            continue
        cfg = data.get("config", {})
        for r in data.get("rows", []):
            if r.get("gpus") != 1:
                continue
            for kind in ("mixed", "full"):
                if r.get(f"{kind}_img_s") is None:
                    continue
                rows.append(
                    {
                        "step": path.parent.name,
                        "backend": cfg.get("backend"),
                        "compile": bool(cfg.get("compile")),
                        "precision": r.get(f"{kind}_precision"),
                        "batch": cfg.get("batch"),
                        "img_s": r[f"{kind}_img_s"],
                        "flags": r.get("flags") or "",
                    }
                )
    synthetic = {(r["precision"], r["compile"]): r["img_s"] for r in rows if r["backend"] == "synthetic"}
    for r in rows:
        base = synthetic.get((r["precision"], r["compile"]))
        r["gap_to_synthetic"] = None if r["backend"] == "synthetic" or not base else 1 - r["img_s"] / base
    return rows


def inference(results: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(results.glob("infer*/infer-*.json")):
        data = _load(path)
        if not data:
            continue
        agreement = {(s["backend"], s["precision"]): s.get("top1_agreement") for s in data.get("series", [])}
        for r in data.get("rows", []):
            if r.get("batch") is None or r.get("status") != "ok":
                continue
            out.append(
                {
                    "step": path.parent.name,
                    "backend": r["backend"],
                    "precision": r["precision"],
                    "batch": r["batch"],
                    "img_s": r["img_s"],
                    "p50_ms": r.get("p50_ms"),
                    "p99_ms": r.get("p99_ms"),
                    "cuda_graphs": bool(data.get("config", {}).get("cuda_graphs")),
                    "top1_agreement": agreement.get((r["backend"], r["precision"])),
                }
            )
    return out


def mlperf(results: Path) -> list[dict[str, Any]]:
    """One row per LoadGen run that `rn50 bench mlperf` wrote (reduced runs: never compliant here)."""
    out = []
    for path in sorted(results.glob("mlperf/mlperf-*-performance.json")):
        data = _load(path)
        for r in (data or {}).get("runs", []):
            out.append(
                {
                    "scenario": data.get("scenario"),
                    "batch": (data.get("plan") or {}).get("batch"),
                    "result": r.get("result"),
                    "metric": r.get("metric"),
                    "value": r.get("metric_value"),
                    "unit": r.get("unit"),
                    "samples": r.get("samples"),
                    "p50_ms": r.get("p50_ms"),
                    "p90_ms": r.get("p90_ms"),
                    "p99_ms": r.get("p99_ms"),
                    "compliant": bool(r.get("compliant")),
                }
            )
    return out


def targets(train: list[dict], overhead: dict | None, infer: list[dict]) -> list[dict[str, Any]]:
    def best(rows, key=lambda r: r["img_s"]):
        return max(rows, key=key) if rows else None

    got: list[dict[str, Any]] = []
    r = best([t for t in train if t["backend"] == "synthetic" and t["compile"] and t["precision"] == "fp16"])
    got.append(
        ("training fp16, bs 256, synthetic, --compile (img/s)", ">= 4000", r and r["img_s"], r and r["img_s"] >= 4000)
    )
    r = best([t for t in train if t["backend"] == "pytorch-gpu" and t["gap_to_synthetic"] is not None])
    gap = r and r["gap_to_synthetic"]
    got.append(("pytorch-gpu real JPEGs vs synthetic (gap)", "<= 10%", gap, gap is not None and gap <= 0.10))
    ov = overhead and overhead.get("overhead")
    got.append(("trainer overhead vs bare loop", "<= 3%", ov, ov is not None and ov <= 0.03))
    r = best([i for i in infer if i["precision"] == "fp16" and i["batch"] == 256])
    got.append(
        ("inference fp16 bs 256, best torch backend (img/s)", ">= 15000", r and r["img_s"], r and r["img_s"] >= 15000)
    )
    bs1 = [i for i in infer if i["batch"] == 1 and i["cuda_graphs"] and i["p99_ms"] is not None]
    r = min(bs1, key=lambda i: i["p99_ms"]) if bs1 else None
    p99 = r and r["p99_ms"]
    got.append(("bs 1 p99 latency with CUDA graphs (ms)", "<= 1.0", p99, p99 is not None and p99 <= 1.0))
    return [
        {
            "figure": f,
            "target": t,
            "measured": v,
            "met": bool(ok) if v is not None else None,
            "unit": "%" if "%" in t else "ms" if "(ms)" in f else "",
        }
        for f, t, v, ok in got
    ]


def _num(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit == "%":
        return f"{100 * v:.1f}%"
    if unit == "ms":
        return f"{v:.3f} ms"
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def main(argv: list[str]) -> int:
    work, out, total = Path(argv[0]), Path(argv[1]), argv[2]
    dry = len(argv) > 3 and argv[3] == "1"
    env_log = (work / "logs" / "env.log").read_text() if (work / "logs" / "env.log").exists() else ""
    m = machine(env_log)
    steps = []
    for row in (work / "steps.tsv").read_text().splitlines() if (work / "steps.tsv").exists() else []:
        name, status, secs, last = (row.split("\t") + ["", "", ""])[:4]
        steps.append({"step": name, "status": status, "seconds": int(secs or 0), "last_line": last})
    train = training(work / "results")
    overhead = _load(work / "results" / "overhead.json")
    infer = inference(work / "results")
    loadgen = mlperf(work / "results")
    goals = targets(train, overhead, infer)
    gpu = m.get("gpu", "no GPU (dry run)" if "no nvidia-smi" in env_log else "?")
    lines = [
        f"# rn50 device suite ({total} s)"
        + (" - DRY RUN on CPU: plumbing only, no figure means anything" if dry else ""),
        "",
        f"GPU: {gpu}, driver {m.get('driver', '-')}; torch {m.get('torch', '?')}, torchvision "
        f"{m.get('torchvision', '?')}, CUDA {m.get('cuda', '?')}; CPU: {m.get('cpu', '?')}.",
        "",
        "| step | status | seconds | last line |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']} | {s['last_line'].replace('|', '/')} |" for s in steps]
    lines += ["", "## Targets (issue #11, one H100)", "", "| figure | target | measured | met |", "|---|---|---|---|"]
    for g in goals:
        met = "-" if g["met"] is None else ("yes" if g["met"] else "NO")
        lines.append(f"| {g['figure']} | {g['target']} | {_num(g['measured'], g['unit'])} | {met} |")
    if train:
        lines += [
            "",
            "## Training, 1 GPU",
            "",
            "| step | data | compile | precision | batch | img/s | gap to synthetic | flags |",
        ]
        lines.append("|---|---|---|---|---|---|---|---|")
        for t in train:
            lines.append(
                f"| {t['step']} | {t['backend']} | {'yes' if t['compile'] else 'no'} | {t['precision']} | {t['batch']} "
                f"| {_num(t['img_s'])} | {_num(t['gap_to_synthetic'], '%')} | {t['flags']} |"
            )
    if overhead:
        lines += [
            "",
            f"Trainer overhead vs bare loop: {100 * overhead['overhead']:+.2f}% (rounds: "
            f"{100 * overhead['overhead_min']:+.2f}% .. {100 * overhead['overhead_max']:+.2f}%); same work checked: "
            f"{overhead.get('same_work')}.",
        ]
    if infer:
        lines += [
            "",
            "## Inference",
            "",
            "| step | backend | precision | batch | img/s | p50 ms | p99 ms | CUDA graphs | top-1 agreement |",
        ]
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for i in infer:
            agree = "-" if i["top1_agreement"] is None else f"{100 * i['top1_agreement']:.1f}%"
            lines.append(
                f"| {i['step']} | {i['backend']} | {i['precision']} | {i['batch']} | {_num(i['img_s'])} | "
                f"{i['p50_ms']:.3f} | {i['p99_ms']:.3f} | {'yes' if i['cuda_graphs'] else 'no'} | {agree} |"
            )
    if loadgen:
        lines += ["", "## MLPerf LoadGen (reduced runs: NOT COMPLIANT)", ""]
        lines += ["| scenario | batch | result | metric | samples | p50 ms | p90 ms | p99 ms |", "|---" * 8 + "|"]
        for g in loadgen:
            lines.append(
                f"| {g['scenario']} | {g['batch']} | {g['result']} | {_num(g['value'])} {g['unit']} | {g['samples']} | "
                f"{_num(g['p50_ms'])} | {_num(g['p90_ms'])} | {_num(g['p99_ms'])} |"
            )
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    summary = {"dry_run": dry, "seconds": int(total), "machine": m, "steps": steps, "targets": goals, "training": train,
               "overhead": overhead, "inference": infer, "mlperf": loadgen}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
