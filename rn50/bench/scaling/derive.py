"""From launches to rows: img/s per worker count, weak scaling, efficiency and the mixed speedup as medians of each
round's own ratios, and the flags that say which figures cannot be trusted."""

from __future__ import annotations

from typing import Any

from rn50.bench.scaling.config import ESTIMATE_EPOCHS, IMAGENET_TRAIN_IMAGES, TrainBenchReport


def derive_rows(report: TrainBenchReport) -> None:
    """One row per worker count from the launches: img/s is the median over rounds; weak scaling (img/s over the
    smallest count's per-worker img/s), efficiency (weak scaling over the ideal) and the mixed speedup are medians
    of each round's own ratio, with their spread; then the 90-epoch estimate."""
    from statistics import median

    from rn50.bench.timing import ratio_stats

    by_count: dict[int, list[dict[str, Any]]] = {}
    for launch_ in report.launches:
        by_count.setdefault(launch_["world_size"], []).append(launch_)
    counts = sorted(by_count)
    base = counts[0]
    # A single multi-GPU run has nothing to scale against (its own per-GPU rate would make it perfect by definition).
    scaling = base == 1 or len(counts) > 1
    rows, report.efficiency = [], {}
    for n in counts:
        runs = by_count[n]
        first = runs[0]
        row: dict[str, Any] = {"gpus": n, "nodes": report.config["nnodes"], "gpus_per_node": first["nproc"]}
        spreads = []
        for p in report.precisions:
            k = p.kind
            entries = [r["precisions"][p.name] for r in runs if p.name in r["precisions"]]
            if not entries:
                continue
            rates = [e["img_per_s"] for e in entries]
            row[f"{k}_precision"] = entries[0]["precision"]
            row[f"{k}_img_s"] = median(rates)
            row[f"{k}_img_s_rounds"] = rates
            row[f"{k}_seconds"] = sum(e["seconds"] for e in entries)
            row[f"{k}_global_images"] = sum(e["global_images"] for e in entries)
            row[f"{k}_final_loss"] = entries[-1]["final_loss"]
            if any("max_memory_gib" in e for e in entries):
                row[f"{k}_max_memory_gib"] = max(e.get("max_memory_gib", 0) for e in entries)
            row[f"{k}_window_s"] = min(e["seconds"] for e in entries)
            row[f"{k}_90ep_hours"] = ESTIMATE_EPOCHS * IMAGENET_TRAIN_IMAGES / row[f"{k}_img_s"] / 3600
            if scaling:
                ratios = _round_ratios(by_count[base], runs, p.name)
                if ratios:
                    ws = ratio_stats([r * base for r in ratios])
                    row[f"{k}_weak_scaling"] = ws["ratio"]
                    eff = ratio_stats([r * base / n for r in ratios])
                    row[f"{k}_efficiency"] = eff["ratio"]
                    row[f"{k}_efficiency_min"], row[f"{k}_efficiency_max"] = eff["ratio_min"], eff["ratio_max"]
                    row[f"{k}_efficiency_rounds"] = eff["rounds"]
                    report.efficiency[n, k] = eff
                    if n != base:
                        spreads.append(eff["ratio_spread"])
        if "mixed_img_s" in row and "full_img_s" in row:
            names = {p.kind: p.name for p in report.precisions}
            sp = ratio_stats(
                [
                    r["precisions"][names["mixed"]]["img_per_s"] / r["precisions"][names["full"]]["img_per_s"]
                    for r in runs
                ]
            )
            row["mixed_speedup"] = sp["ratio"]
            row["mixed_speedup_spread"] = sp["ratio_spread"]
        if spreads:
            row["efficiency_spread"] = max(spreads)
        row["rank_seconds"] = first["rank_seconds"]
        row["logs"] = first["logs"]
        row["rounds"] = len(runs)
        rows.append(row)
    report.rows = rows


def _round_ratios(base_runs: list[dict[str, Any]], runs: list[dict[str, Any]], name: str) -> list[float]:
    """Per round: this count's img/s over the base count's img/s, both from the same round."""
    base = {r["round"]: r["precisions"][name]["img_per_s"] for r in base_runs if name in r["precisions"]}
    return [r["precisions"][name]["img_per_s"] / base[r["round"]] for r in runs if r["round"] in base]


def row_flags(report: TrainBenchReport) -> list[str]:
    """Flag every figure that cannot be trusted (sets each row's short `flags` cell); the sentences, deduplicated."""
    from rn50.bench.timing import MAX_SPREAD, efficiency_flag, spread_flag, window_flags

    out: list[str] = []
    for row in report.rows:
        flags: list[str] = []
        n = row["gpus"]
        for p in report.precisions:
            k = p.kind
            if f"{k}_window_s" in row:
                flags += window_flags(f"{k} at {n} worker(s)", row[f"{k}_window_s"], report.config["iters"])
            eff = report.efficiency.get((n, k))
            if eff is not None:
                flags += efficiency_flag(f"{k} efficiency at {n} worker(s)", eff["ratio"])
                flags += spread_flag(f"{k} efficiency at {n} worker(s)", eff)
        if row.get("mixed_speedup_spread", 0) > MAX_SPREAD:
            flags.append(
                f"UNSTABLE: mixed speedup at {n} worker(s) varies {100 * row['mixed_speedup_spread']:.0f}% over "
                f"rounds (> {100 * MAX_SPREAD:.0f}%): rerun on an idle machine or with more --iters"
            )
        row["flags"] = ", ".join(dict.fromkeys(f.split(":")[0] for f in flags)) or None
        out += [f for f in flags if f not in out]
    if report.config["rounds"] < 2 and len(report.rows) > 1:
        out.append(
            "ONE ROUND: the ratios come from one launch per worker count, not interleaved rounds: use --rounds 3"
        )
    return out
