"""`rn50 bench data`: input-pipeline img/s per data backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rn50.cli.common import DEVICE_HELP, bind, console, print_flags_and_files, switch
from rn50.env import resolve_device


def bench_data(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="ImageNet-layout folder (train/<class>/*.JPEG).")],
    backend: Annotated[
        list[str] | None,
        typer.Option(help="pytorch, pytorch-gpu, dali-cpu, dali-gpu (default all); comma-separated or repeated."),
    ] = None,
    batch: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    workers: Annotated[int, typer.Option(help="DataLoader processes / DALI threads (the cores used).")] = 2,
    warmup: Annotated[int, typer.Option(help="Untimed batches first (start-up).")] = 5,
    iters: Annotated[
        int | None,
        typer.Option(
            min=1, help="Timed batches per backend, split over the rounds. Default 50 (CPU: 150).", show_default=False
        ),
    ] = None,
    rounds: Annotated[
        int, typer.Option(help="Interleaved rounds (backends rotated each round); ratios are medians over rounds.")
    ] = 5,
    split: Annotated[str, typer.Option(help="train (random crop + flip) or val (resize + centre crop).")] = "train",
    image_size: Annotated[int, typer.Option(help="Output size in pixels.")] = 224,
    device: Annotated[str, typer.Option(help=f"Where batches go: {DEVICE_HELP}.")] = "auto",
    ceiling: Annotated[bool, switch("ceiling", help="Also time synthetic data.")] = True,
    step: Annotated[
        bool | None,
        switch("step", help="Also time the training step (default: on with CUDA, off on CPU)."),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for the Markdown, CSV and JSON results, rewritten after every round.")
    ] = Path("runs/bench-data"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Input-pipeline img/s per data backend, total and per CPU core, with synthetic data as the ceiling.

    The CPU defaults (batch 32, 5 + 150 batches in 5 rounds, 224 px) take about 40 s on 2 cores with ImageNet-like
    JPEGs (500x375, 100 KiB; 50 batches per backend left the rounds' ratios spread 30-60%); on tiny images the timed
    window is short and flagged: raise --iters. The tables are rewritten
    after every round; Ctrl-C keeps the finished rounds and says where they are."""
    from rn50.bench.datapipe import COLUMNS, DEFAULT_BACKENDS, DataBenchConfig, run_data_bench, table_rows
    from rn50.tables import markdown_table

    chosen = backend or [",".join(DEFAULT_BACKENDS)]
    backends = tuple(b.strip() for item in chosen for b in item.split(",") if b.strip())
    dev = resolve_device(device)
    cfg = bind(
        DataBenchConfig,
        ctx.params,
        backends=backends,
        iters=iters if iters is not None else 50 if dev.startswith("cuda") else 150,
        device=dev,
    )
    report = run_data_bench(cfg)
    files = report.files
    if as_json:
        console.print_json(json.dumps({**report.to_dict(), "files": files}, default=str))
        return
    console.print(markdown_table(table_rows(report), COLUMNS), highlight=False, soft_wrap=True)
    load = report.env.get("loadavg", [0])[0]
    console.print(f"device {report.device}; load average {load:.2f} (figures on a busy machine are low)")
    if report.verdict:
        console.print(report.verdict, highlight=False)
    print_flags_and_files(report.flags, files)
