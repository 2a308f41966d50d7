"""bench data's table (Markdown, CSV, JSON): img/s, host us/img, per-core rates and the medians of per-round ratios."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from rn50.bench.datapipe.config import DataBenchReport

COLUMNS = (
    ("backend", "backend"),
    ("img_per_s", "img/s"),
    ("host_us_per_image", "host us/img"),
    ("cores", "cores"),
    ("img_per_s_per_core", "img/s per core"),
    ("vs_ceiling", "of synthetic"),
    ("vs_first", "vs first"),
    ("vs_first_spread", "spread"),
    ("note", "note"),
)


def table_rows(report: DataBenchReport) -> list[dict[str, Any]]:
    rows = []
    if report.step:
        s = report.step
        note = f"the training step ({s['precision']}, synthetic data): what the input pipeline must keep up with"
        rows.append({"backend": "train step", "img_per_s": s["img_per_s"], "note": note})
    for r in report.results:
        note = r.reason if r.status == "skipped" else "ceiling: batches already on the device"
        if r.status == "ok" and r.backend != "synthetic":
            note = f"{r.images} images in {r.seconds:.2f} s"
            if r.epochs:
                note += f"; {r.epochs} epoch restart(s) timed (small dataset)"
            if r.decode_ms_per_image is not None:
                note += (
                    f"; main process per image: batched decode {r.decode_ms_per_image:.2f} ms, crop/resize/normalise "
                    f"{r.augment_ms_per_image:.2f} ms"
                )
        rows.append({**asdict(r), "note": note if r.status == "ok" else f"skipped: {note}"})
    return rows


def write_outputs(report: DataBenchReport, out: Path) -> dict[str, str]:
    from rn50.bench.report import file_tag, write_table
    from rn50.env import short_device_name

    c = report.config
    stem = out / file_tag(f"data-bs{c['batch']}-w{c['workers']}-{c['image_size']}px-{short_device_name(report.device)}")
    notes = [
        f"{c['data']} ({c['split']} split, train augmentation: random resized crop, flip, normalise) at "
        f"{c['image_size']} px, batch {c['batch']}, {c['workers']} workers/threads, {c['iters']} timed batches after "
        f"{c['warmup']} warmup, on {report.device}; cores = workers or DALI threads used. The timed batches are "
        f"split over {c['rounds']} interleaved rounds (backends rotated each round); 'of synthetic' and 'vs first' "
        "(this backend over the first one listed) are medians of per-round ratios, spread = (max - min) / median. "
        "host us/img: CPU time the training thread spends inside the loader per image (worker processes and DALI "
        "threads excluded); at MLPerf-class H100 rates (~7,200 img/s per GPU) everything the training process does "
        "per image must fit in 139 us."
    ]
    if report.partial:
        notes.insert(0, report.partial)
    notes += report.flags
    if report.verdict:
        notes.append(report.verdict)
    paths = write_table(
        table_rows(report), COLUMNS, stem, "rn50 bench data: input pipeline img/s", report.env, notes, report.to_dict()
    )
    return {k: str(v) for k, v in paths.items()}
