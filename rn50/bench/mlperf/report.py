"""rn50's table of a `bench mlperf` command: one row per LoadGen run (Markdown, CSV, JSON via rn50.bench.report),
the verdict lines a terminal shows, and the one line that says whether the settings were the official ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rn50.bench.report import file_tag, write_table

COLUMNS = [
    ("scenario", "scenario"),
    ("mode", "mode"),
    ("run", "run"),
    ("backend", "backend"),
    ("precision", "precision"),
    ("batch", "batch"),
    ("target_qps", "target QPS"),
    ("result", "result"),
    ("failed", "failed criteria"),
    ("metric", "metric"),
    ("metric_value", "value"),
    ("unit", "unit"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("p999_ms", "p99.9 ms"),
    ("samples", "samples"),
    ("seconds", "seconds"),
    ("runtime_busy", "runtime busy"),
    ("compliance", "compliance"),
    ("top1", "top-1 %"),
]
OFFICIAL_NOTE = (
    "settings: official (LoadGen's built-in mlperf.conf); still not an MLPerf submission: no audit tests, no "
    "review, rn50's model and preprocessing"
)


def plan_record(p: Any, cal: Any) -> dict[str, Any]:
    return {
        "batch": p.batch,
        "batch_timeout_ms": round(p.timeout_s * 1e3, 3),
        "capacity_samples_s": round(p.capacity, 3),
        "note": p.note or None,
        "calibration": {
            str(b): {"fastest_ms": 1e3 * cal.fastest(b), "median_ms": 1e3 * cal.median(b), "calls": len(t)}
            for b, t in cal.times.items()
        },
    }


def compliance(deviations: list[str]) -> str:
    return "official settings" if not deviations else "NOT COMPLIANT: " + "; ".join(deviations)


def finish(result: dict[str, Any], opts: Any, peak: float | None) -> None:
    """The command's verdict from its runs: the last run's (the highest VALID one for --find-peak)."""
    runs = result["runs"]
    for n, rec in enumerate(runs, 1):
        rec["try"] = n
        if rec.get("stopped") is not None and not isinstance(rec["stopped"], str):
            rec["stopped"] = rec["stopped"].signal_name
    devs = sorted({d for r in runs for d in r.get("deviations", [])})
    result.update(compliant=not devs, deviations=devs, compliance=compliance(devs))
    chosen = runs[-1] if runs else {}
    if opts.find_peak:
        valid = [r for r in runs if r.get("result") == "VALID" and not r.get("stopped")]
        chosen = max(valid, key=lambda r: r.get("target_qps") or 0, default=chosen)
        result["peak_qps"] = peak
    result["result"] = "stopped" if chosen.get("stopped") else chosen.get("result")
    result["failed"] = chosen.get("failed", [])
    result["metric"] = {k: chosen.get(k) for k in ("metric", "metric_value", "unit")}
    if chosen.get("stopped"):
        result["metric"]["metric_value"] = None
    if "accuracy" in chosen:  # LoadGen gives an accuracy run no verdict: the MLPerf target is the verdict
        acc = result["accuracy"] = chosen["accuracy"]
        ref = acc.get("fp32_reference")
        result["result"] = "target not checked" if ref is None else "target met" if ref["met"] else "target MISSED"
        result["metric"] = {"metric": "top-1", "metric_value": acc["top1"], "unit": "%"}


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    source = result.get("source", {})
    out = []
    for rec in result["runs"]:
        verdict = rec.get("result") or "no verdict"
        if rec.get("stopped"):
            verdict = f"stopped by {rec['stopped']} ({verdict})"
        acc = rec.get("accuracy") or {}
        keys = ("metric", "metric_value", "unit", "samples", "seconds", "target_qps", "runtime_busy")
        row = {k: rec.get(k) for k in keys}
        row.update({k: rec.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms")})
        if acc:
            row.update(metric="top-1", metric_value=acc["top1"], unit="%")
            verdict = result.get("result") or verdict
        if rec.get("stopped"):  # samples answered without inference after the signal: no figure to quote
            row.update(dict.fromkeys(("metric_value", "p50_ms", "p90_ms", "p99_ms", "p999_ms")))
        row.update(
            scenario=result["scenario"],
            mode=result["mode"],
            run=rec.get("try"),
            backend=source.get("backend"),
            precision=source.get("precision"),
            batch=result.get("plan", {}).get("batch"),
            result=verdict,
            failed="; ".join(rec.get("failed") or []) or None,
            compliance=compliance(rec.get("deviations") or []),
            top1=acc.get("top1"),
        )
        out.append(row)
    return out


def notes(result: dict[str, Any]) -> list[str]:
    source, plan = result.get("source", {}), result.get("plan", {})
    lines = [result["compliance"] if not result["compliant"] else OFFICIAL_NOTE]
    system = f"system: {source.get('backend')} {source.get('precision')} on {source.get('device')}"
    system += f", batch {plan.get('batch')}"
    if result["scenario"] == "server":
        system += f", batcher timeout {plan.get('batch_timeout_ms')} ms"
    if plan.get("capacity_samples_s"):
        system += f"; calibrated capacity {plan['capacity_samples_s']} samples/s"
    lines.append(system)
    lines.append(
        "source: " + ", ".join(f"{k} {v}" for k, v in source.items() if k not in ("backend", "device", "batch"))
    )
    lines.append(f"query sample library: {result.get('images')} images of {result['data']}")
    if plan.get("note"):
        lines.append(plan["note"])
    if result.get("peak_qps") is not None or result["scenario"] == "server" and len(result["runs"]) > 1:
        lines.append(f"--find-peak: highest VALID target QPS {result.get('peak_qps')} in {len(result['runs'])} runs")
    acc = result.get("accuracy")
    if acc:
        lines.append(accuracy_line(acc))
    return lines


def accuracy_line(acc: dict[str, Any]) -> str:
    line = (
        f"top-1 {acc['top1']:.2f}% on {acc['images']} images (LoadGen's accuracy log, scored as accuracy-imagenet.py)"
    )
    ref = acc.get("fp32_reference")
    if ref is None:
        return line + "; MLPerf target not checked: no fp32 reference (pass --fp32-top1)"
    verdict = "met" if ref["met"] else "MISSED"
    return (
        line + f"; MLPerf target 99% of fp32 {ref['top1']:.2f}% ({ref['from']}) = {ref['target_top1']:.2f}%: {verdict}"
    )


def headline(result: dict[str, Any]) -> str:
    """One line for the terminal: the verdict, the metric, the system, the compliance."""
    m = result.get("metric") or {}
    value = m.get("metric_value")
    figure = f"{value:,.3f} {m.get('unit')} ({m.get('metric')})" if value is not None else "no figure"
    if result["mode"] == "accuracy" and value is not None:
        figure = f"top-1 {value:.2f}%"
    source = result.get("source", {})
    verdict = result.get("result") or "no verdict"
    if result.get("failed"):
        verdict += f" ({', '.join(result['failed'])})"
    where = f"{source.get('backend')} {source.get('precision')} on {source.get('device')}"
    text = f"MLPerf {result['scenario']} {result['mode']}: {verdict}, {figure} - {where} - {result['compliance']}"
    if result.get("peak_qps") is not None:
        text += f" - peak VALID target QPS {result['peak_qps']:.5g}"
    return text


def problem(result: dict[str, Any]) -> str | None:
    """Why a script should see a failure: an INVALID verdict, or accuracy under its target."""
    if result.get("result") != "VALID" and result["mode"] == "performance":
        return f"LoadGen judged the {result['scenario']} run {result.get('result') or 'without a verdict'}"
    ref = (result.get("accuracy") or {}).get("fp32_reference")
    if ref is not None and not ref["met"]:
        return f"top-1 {result['accuracy']['top1']:.2f}% is under the MLPerf target {ref['target_top1']:.2f}%"
    return None


def write(result: dict[str, Any], out: Path) -> dict[str, Path]:
    stem = Path(out) / file_tag(f"mlperf-{result['scenario']}-{result['mode']}")
    title = f"MLPerf Inference ResNet-50 {result['scenario']} {result['mode']} (rn50 bench mlperf, LoadGen)"
    extra = {k: v for k, v in result.items() if k not in ("env", "files")}
    return write_table(rows(result), COLUMNS, stem, title, result["env"], notes(result), extra)
