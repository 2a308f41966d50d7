"""What LoadGen wrote: its detail log read into a run record, and top-1 from its accuracy log.

mlperf_log_detail.txt is one `:::MLLOG {json}` record per line (key, value, metadata with is_error/is_warning);
the keys read here are the ones MLCommons' submission checker reads. The scenario metrics are the checker's own
(tools/submission/submission_checker/constants.py, RESULT_FIELD_NEW for v6.0/v6.1): Offline
`result_samples_per_second`, Server `result_completed_samples_per_sec`, SingleStream `early_stopping_latency_ss`
(the early-stopping estimate of the p90 latency) and MultiStream `early_stopping_latency_ms` (of the p99 per-query
latency; nanoseconds despite its name, like every LoadGen latency).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rn50.errors import UserError, need

DETAIL = "mlperf_log_detail.txt"
SUMMARY = "mlperf_log_summary.txt"
ACCURACY = "mlperf_log_accuracy.json"

# scenario -> (detail key, what it is, unit): the figure MLPerf publishes for the scenario.
METRICS = {
    "offline": ("result_samples_per_second", "throughput", "samples/s"),
    "server": ("result_completed_samples_per_sec", "completed throughput", "samples/s"),
    "singlestream": ("early_stopping_latency_ss", "p90 latency (early-stopping estimate)", "ms"),
    "multistream": ("early_stopping_latency_ms", "p99 per-query latency (early-stopping estimate)", "ms"),
}
PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")
# LoadGen's verdict on each criterion -> how a failed one is named
CRITERIA = (
    ("result_perf_constraints_met", "latency bound"),
    ("result_min_duration_met", "min duration"),
    ("result_min_queries_met", "min queries"),
    ("early_stopping_met", "early stopping"),
)


def read_detail(folder: Path) -> dict[str, Any]:
    """{key: value} of the detail log (the last record of each key), plus 'errors' and 'warnings' lists."""
    path = Path(folder) / DETAIL
    record: dict[str, Any] = {"errors": [], "warnings": []}
    if not path.is_file():
        return record
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG ") :])
        except ValueError:
            continue
        key, value, meta = entry.get("key"), entry.get("value"), entry.get("metadata") or {}
        if meta.get("is_error"):
            record["errors"].append(str(value))
        elif meta.get("is_warning"):
            record["warnings"].append(str(value))
        record[key] = value
    return record


def _ms(ns: Any) -> float | None:
    return None if ns is None else float(ns) / 1e6


def run_record(folder: Path, scenario: str) -> dict[str, Any]:
    """The verdict, the failed criteria, the scenario's metric, latency percentiles and the effective settings of the
    LoadGen run whose logs are in `folder` ({'result': None} when LoadGen wrote no verdict)."""
    d = read_detail(folder)
    key, what, unit = METRICS[scenario]
    failed = [name for k, name in CRITERIA if d.get(k) is False]
    reason = " ".join(str(d.get("result_invalid_reason") or "").split())
    value = d.get(key)
    rec: dict[str, Any] = {
        "result": d.get("result_validity"),
        "failed": failed,
        "reason": reason or None,
        "metric": what,
        "metric_value": _ms(value) if unit == "ms" else value,
        "unit": unit,
        "samples": d.get("result_query_count"),
        "mean_ms": _ms(d.get("result_mean_latency_ns")),
        "min_ms": _ms(d.get("result_min_latency_ns")),
        "max_ms": _ms(d.get("result_max_latency_ns")),
        "errors": d["errors"],
        "warnings": d["warnings"],
        "loadgen_version": d.get("loadgen_version"),
        "effective": {k[len("effective_") :]: v for k, v in d.items() if k.startswith("effective_")},
    }
    for p in PERCENTILES:
        rec[f"p{p.rstrip('0').rstrip('.').replace('.', '')}_ms"] = _ms(d.get(f"result_{p}_percentile_latency_ns"))
    if scenario in ("offline", "multistream"):  # samples per query: Offline's one query, MultiStream's 8
        rec["samples"] = (d.get("result_query_count") or 0) * int(d.get("effective_samples_per_query") or 1)
    if scenario == "multistream":
        for p in ("50.00", "90.00", "99.00"):
            tag = p.rstrip("0").rstrip(".")
            rec[f"query_p{tag}_ms"] = _ms(d.get(f"result_{p}_percentile_per_query_latency_ns"))
    if "early stopping" in failed and d.get("early_stopping_result"):
        rec["early_stopping"] = " ".join(str(d["early_stopping_result"]).split())
    if scenario == "server":
        rec["target_qps"] = d.get("effective_target_qps")
        rec["overlatency_queries"] = d.get("result_overlatency_query_count")
    return rec


def accuracy_top1(folder: Path, labels: Sequence[int]) -> dict[str, Any]:
    """Top-1 from LoadGen's accuracy log as MLCommons' accuracy-imagenet.py computes it: each QSL index counted
    once (LoadGen may send an image more than once), the response's first float32 is the predicted class."""
    import numpy as np

    path = Path(folder) / ACCURACY
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read LoadGen's accuracy log {path}: {e}") from None
    seen: set[int] = set()
    good = 0
    for entry in entries:
        idx = int(entry["qsl_idx"])
        if idx in seen:
            continue
        seen.add(idx)
        data = np.frombuffer(bytes.fromhex(entry["data"]), np.float32)
        if data.size and int(data[0]) == labels[idx]:
            good += 1
    need(bool(seen), f"LoadGen's accuracy log {path} holds no sample")
    return {"top1": 100.0 * good / len(seen), "correct": good, "images": len(seen), "logged": len(entries)}
