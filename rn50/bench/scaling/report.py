"""bench train's outputs: the weak-scaling table (Markdown, CSV, JSON), its caption and the img/s plot."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rn50.bench.scaling.config import ESTIMATE_EPOCHS, IMAGENET_TRAIN_IMAGES, TrainBenchReport

# The seed's columns, then the efficiency (weak scaling / ideal), the 90-epoch estimate and the figures' flags.
COLUMNS = (
    ("gpus", "GPUs"),
    ("mixed_img_s", "mixed img/s"),
    ("full_img_s", "full img/s"),
    ("mixed_speedup", "mixed speedup"),
    ("mixed_weak_scaling", "mixed weak scaling"),
    ("full_weak_scaling", "full weak scaling"),
    ("mixed_efficiency", "mixed efficiency"),
    ("full_efficiency", "full efficiency"),
    ("efficiency_spread", "spread"),
    ("mixed_90ep_hours", f"mixed {ESTIMATE_EPOCHS} epochs (h)"),
    ("full_90ep_hours", f"full {ESTIMATE_EPOCHS} epochs (h)"),
    ("flags", "flags"),
)


def caption(report: TrainBenchReport) -> str:
    c = report.config
    words = [f"{p.kind} = {p.name}" + (f" ({p.note})" if p.note else "") for p in report.precisions]
    unit = "GPU" if c["device"] == "cuda" else "CPU worker process (gloo; the GPUs column counts processes)"
    data = "synthetic data" if c["backend"] == "synthetic" else f"{c['data']} via the {c['backend']} backend"
    nodes = f", {c['nnodes']} nodes" if c["nnodes"] > 1 else ""
    base = report.rows[0]["gpus"] if report.rows else 1
    return (
        f"ResNet-50 v1.5 training at {c['image_size']} px, batch {c['batch']} per {unit}, {data}{nodes}; "
        f"{'; '.join(words)}; {c['iters']} timed iterations after {c['warmup']} warmup per launch; the worker counts "
        f"in {c['rounds']} interleaved round(s); img/s = global images over the synchronised wall time of the timed "
        f"iterations, median over rounds; weak scaling = img/s / ({base}-worker img/s / {base}) and efficiency = weak "
        f"scaling / (workers / {base}), each the median of the rounds' own ratios (spread = (max - min) / median of "
        f"the efficiency over rounds); {ESTIMATE_EPOCHS} epochs of {IMAGENET_TRAIN_IMAGES:,} images (ImageNet-1k) "
        "at that rate."
    )


def result_stem(report: TrainBenchReport) -> str:
    import torch

    from rn50.bench.report import file_tag
    from rn50.env import short_device_name

    precs = "-".join(p.name for p in report.precisions)
    torch_ver = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    nodes = f"-{report.config['nnodes']}nodes" if report.config["nnodes"] > 1 else ""
    device = short_device_name(report.config["device"])
    return file_tag(f"train-{precs}-bs{report.config['batch']}-torch{torch_ver}-{device}{nodes}")


def write_outputs(report: TrainBenchReport, out: Path) -> dict[str, str]:
    from rn50.bench.report import line_figure, save_png, write_table

    stem = out / result_stem(report)
    done = f"{len(report.launches)} of {report.planned} launches" if report.planned else ""
    partial = [f"PARTIAL: {done} finished"] if report.planned and len(report.launches) < report.planned else []
    paths = write_table(
        report.rows,
        COLUMNS,
        stem,
        "rn50 bench train: training img/s by worker count, mixed vs full precision",
        report.env,
        notes=[*partial, *report.flags, caption(report)],
        extra={
            "config": report.config,
            "precisions": [asdict(p) for p in report.precisions],
            "flags": report.flags,
            "complete": not partial,
            "launches": report.launches,
        },
    )
    gpus = [r["gpus"] for r in report.rows]
    series, refs = {}, {}
    for p in report.precisions:
        pts = [(r["gpus"], r[f"{p.kind}_img_s"]) for r in report.rows if f"{p.kind}_img_s" in r]
        series[f"{p.kind} ({p.name})"] = ([g for g, _ in pts], [v for _, v in pts])
        per_worker = report.rows[0][f"{p.kind}_img_s"] / report.rows[0]["gpus"]
        refs[f"linear scaling of {p.kind} (reference)"] = (gpus, [per_worker * g for g in gpus])
    unit = "GPUs" if report.config["device"] == "cuda" else "worker processes"
    device = report.env["gpus"][0]["name"] if report.env.get("gpus") else f"CPU ({report.env.get('cpu', '?')})"
    c = report.config
    title = f"ResNet-50 v1.5 training, {c['image_size']} px, batch {c['batch']} per worker, on {device}"
    paths["png"] = save_png(line_figure(series, unit, "img/s", title, logx=True, references=refs), f"{stem}.png")
    return {k: str(v) for k, v in paths.items()}
