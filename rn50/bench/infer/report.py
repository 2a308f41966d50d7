"""bench infer's outputs: the seed-shaped table (batch | img/s and p50/p90/p99 per series), every measurement as CSV,
the whole result as JSON, throughput and latency plots, and the flags that say which figures cannot be trusted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rn50.bench.report import env_lines, line_figure, save_png, write_files
from rn50.bench.timing import load_flags, spread_flag, window_flags
from rn50.tables import csv_text, format_cell, markdown_table

ROW_COLUMNS = [
    ("backend", "backend"),
    ("precision", "precision"),
    ("math", "math"),
    ("layout", "layout"),
    ("batch", "batch"),
    ("status", "status"),
    ("img_s", "img/s"),
    ("speedup", "speedup vs eager fp32"),
    ("speedup_spread", "speedup spread"),
    ("flags", "flags"),
    ("mean_ms", "mean ms"),
    ("min_ms", "min ms"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("iters", "iters"),
    ("first_call_s", "first call s"),
    ("provider", "provider"),
    ("top1_agreement", "top-1 agreement vs fp32"),
    ("reason", "reason"),
]


SERIES_COLUMNS = [
    ("backend", "backend"),
    ("precision", "precision"),
    ("status", "status"),
    ("build_s", "build s"),
    ("provider", "provider"),
    ("trt_profile", "TensorRT profile min/opt/max"),
    ("top1_agreement", "top-1 agreement vs eager fp32"),
    ("agreement_n", "images"),
    ("reason", "reason"),
]


def infer_flags(result: dict[str, Any], load: dict[str, Any]) -> list[str]:
    """Flags for every figure that cannot be trusted (and each row's short `flags` cell)."""
    out: list[str] = []
    for row in result["rows"]:
        if row.get("status") != "ok":
            continue
        what = f"{row['backend']} {row['precision']} batch {row['batch']}"
        flags = window_flags(what, row["timed_s"], row["iters"])
        if row.get("rounds"):
            stats = {k: row[f"speedup{k[5:]}"] for k in ("ratio", "ratio_min", "ratio_max", "ratio_spread")}
            flags += spread_flag(f"speedup of {what}", {**stats, "rounds": row["rounds"]})
        row["flags"] = ", ".join(dict.fromkeys(f.split(":")[0] for f in flags)) or None
        out += flags
    return out + load_flags(load)


def write_infer_report(result: dict[str, Any], stem: Path) -> dict[str, str]:
    """The seed-shaped Markdown table (batch | img/s per series | p50/p90/p99 ms), the full table as CSV, the
    whole result as JSON, and two PNGs: throughput vs batch, latency vs throughput."""
    whole = {k: v for k, v in result.items() if k != "paths"}
    paths = write_files(stem, markdown(result), csv_text(result["rows"], ROW_COLUMNS), whole)
    paths.update(plots(result, stem))
    return {k: str(v) for k, v in paths.items()}


def _by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(r["backend"], r["precision"], r["batch"]): r for r in rows if r.get("batch") is not None}


def _ok_series(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in result["series"] if s.get("status") == "ok"]


def _batches(rows: list[dict[str, Any]]) -> list[int]:
    return sorted({r["batch"] for r in rows if r.get("batch") is not None})


def _cell(r: dict[str, Any] | None, kind: str) -> str:
    if r is None:
        return "-"
    if r.get("status") != "ok":
        return str(r.get("status")).upper()
    if kind == "img_s":
        return format_cell(float(r["img_s"]))
    return " / ".join(f"{r[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms"))


def _device(env: dict[str, Any]) -> str:
    return env["gpus"][0]["name"] if env.get("gpus") else f"CPU ({env.get('cpu', '?')})"


def markdown(result: dict[str, Any]) -> list[str]:
    """The report's lines: machine, method and flags, the wide table, the series, every measurement."""
    rows, series, by_key = result["rows"], result["series"], _by_key(result["rows"])
    wide, columns = [], [("batch", "batch")]
    for s in _ok_series(result):
        name = f"{s['backend']} {s['precision']}"
        columns += [(f"{name}|img_s", f"{name} img/s"), (f"{name}|lat", f"{name} p50 / p90 / p99 ms")]
    for b in _batches(rows):
        line: dict[str, Any] = {"batch": b}
        for s in _ok_series(result):
            name = f"{s['backend']} {s['precision']}"
            r = by_key.get((s["backend"], s["precision"], b))
            line[f"{name}|img_s"], line[f"{name}|lat"] = _cell(r, "img_s"), _cell(r, "lat")
        wide.append(line)
    env = result["env"]
    md = [f"# ResNet-50 v1.5 inference: img/s by batch size on {_device(env)}", ""]
    md += [f"- {line}" for line in env_lines(env)]
    md += [f"- Weights: {result['weights']}"]
    md += [f"- Method: {m}" for m in result["method"]]
    done = result.get("finished_batches")
    if done is not None and len(done) < len(result["config"]["batches"]):
        md.append(f"- PARTIAL: batch sizes {', '.join(map(str, done))} of {result['config']['batches']} finished")
    md += [f"- flag: {f}" for f in result.get("flags", [])]
    md += ["", markdown_table(wide, columns)]
    md += ["## Series", "", markdown_table(series, SERIES_COLUMNS)]
    if result.get("agreement_images"):
        md.append(
            f"Top-1 agreement on {result['agreement_images']['n']} real images from "
            f"{result['agreement_images']['dir']}.\n"
        )
    full = [r for r in rows if r.get("batch") is not None]
    return [*md, "## All measurements", "", markdown_table(full, ROW_COLUMNS)]


def plots(result: dict[str, Any], stem: Path) -> dict[str, Path]:
    """Throughput vs batch size and latency vs throughput (points labelled by batch), one line per series."""
    rows, by_key = result["rows"], _by_key(result["rows"])
    thr: dict[str, tuple[list[float], list[float]]] = {}
    lat: dict[str, tuple[list[float], list[float]]] = {}
    labels: dict[str, list[str]] = {}
    for s in _ok_series(result):
        name = f"{s['backend']} {s['precision']}"
        pts = [by_key.get((s["backend"], s["precision"], b)) for b in _batches(rows)]
        pts = [r for r in pts if r is not None and r.get("status") == "ok"]
        thr[name] = ([r["batch"] for r in pts], [r["img_s"] for r in pts])
        lat[name] = ([r["img_s"] for r in pts], [r["p50_ms"] for r in pts])
        labels[name] = [str(r["batch"]) for r in pts]
    env = result["env"]
    where = f"{result['config']['image_size']} px, {_device(env)}, torch {env.get('packages', {}).get('torch', '?')}"
    throughput = stem.with_name(stem.name + "-throughput.png")
    latency = stem.with_name(stem.name + "-latency.png")
    title = f"ResNet-50 throughput vs batch ({where})"
    save_png(line_figure(thr, "batch size", "images / s", title, logx=True), throughput)
    title = f"ResNet-50 latency vs throughput, points labelled by batch ({where})"
    save_png(line_figure(lat, "images / s", "p50 latency per batch (ms)", title, logy=True, labels=labels), latency)
    return {"throughput_png": throughput, "latency_png": latency}
