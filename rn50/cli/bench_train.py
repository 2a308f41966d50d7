"""`rn50 bench train`: the weak-scaling table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rn50.cli.common import DEVICE_HELP, bind, console, print_flags_and_files, switch
from rn50.env import resolve_device


def bench_train(
    ctx: typer.Context,
    gpus: Annotated[
        int | None,
        typer.Option(help="Largest worker count per node; runs 1, 2, 4 ... N. Default: all GPUs (CPU: 2 processes)."),
    ] = None,
    device: Annotated[str, typer.Option(help=f"{DEVICE_HELP}; cuda runs NCCL, cpu gloo worker processes.")] = "auto",
    batch: Annotated[
        int | None, typer.Option(help="Images per worker per iteration. Default 256 (CPU: 8).", show_default=False)
    ] = None,
    warmup: Annotated[
        int | None, typer.Option(help="Untimed iterations per launch. Default 20 (CPU: 2).", show_default=False)
    ] = None,
    iters: Annotated[
        int | None, typer.Option(help="Timed iterations per launch. Default 100 (CPU: 8).", show_default=False)
    ] = None,
    rounds: Annotated[
        int, typer.Option(help="Interleaved rounds of the worker counts; every ratio is the median over rounds.")
    ] = 3,
    precision: Annotated[
        list[str] | None,
        typer.Option(help="mixed,full (default) or fp16, bf16, tf32, fp32; comma-separated or repeated."),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="ImageNet-layout folder; default synthetic data.")] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="synthetic, pytorch, pytorch-gpu, dali-cpu, dali-gpu (default with --data: dali-gpu, on CPU pytorch)."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Data-loading workers per rank (real data).")] = None,
    recipe: Annotated[str, typer.Option(help="Recipe the step is built from (model, optimizer).")] = "dgxa100-fp16-90",
    image_size: Annotated[
        int | None, typer.Option(help="Input size in pixels. Default 224 (CPU: 64).", show_default=False)
    ] = None,
    num_classes: Annotated[int, typer.Option(help="Classifier outputs.")] = 1000,
    compile: Annotated[bool, switch("compile", help="torch.compile the model.")] = False,
    sweep: Annotated[bool, switch("sweep", help="Run 1, 2, 4 ... N workers, or only N.")] = True,
    nnodes: Annotated[int, typer.Option(help="Nodes (run the same command on each).")] = 1,
    node_rank: Annotated[int, typer.Option(help="This node's rank, 0 .. nnodes-1.")] = 0,
    rdzv_endpoint: Annotated[str | None, typer.Option(help="HOST:PORT of node 0, for multi-node runs.")] = None,
    rdzv_timeout: Annotated[
        int, typer.Option(help="Seconds a node waits for the others at the rendezvous before failing.")
    ] = 300,
    timeout: Annotated[float, typer.Option(help="Seconds per launch before it counts as hung.")] = 1800,
    out: Annotated[Path, typer.Option(help="Folder for the JSON, CSV, Markdown, PNG and logs.")] = Path(
        "runs/bench-train"
    ),
) -> None:
    """Training img/s for 1, 2, 4 ... N workers, mixed vs full precision: the weak-scaling table.

    GPU defaults are NVIDIA's published method (batch 256, 224 px, 20 + 100 iterations); CPU defaults (2 gloo
    processes, batch 8, 64 px, 2 + 8 iterations, 3 rounds) finish in about a minute and a half on 2 cores."""
    import os

    from rn50.bench.scaling import COLUMNS, TrainBenchConfig, caption, run_train_bench
    from rn50.tables import markdown_table

    device = resolve_device(device)
    cpu = device == "cpu"
    if gpus is None:
        import torch

        gpus = max(1, torch.cuda.device_count()) if device == "cuda" else min(2, os.cpu_count() or 1)
    cfg = bind(
        TrainBenchConfig,
        ctx.params,
        gpus=gpus,
        device=device,
        batch=batch if batch is not None else 8 if cpu else 256,
        warmup=warmup if warmup is not None else 2 if cpu else 20,
        iters=iters if iters is not None else 8 if cpu else 100,
        image_size=image_size if image_size is not None else 64 if cpu else 224,
        precisions=tuple(p for item in (precision or ["mixed,full"]) for p in item.split(",") if p.strip()),
    )
    report = run_train_bench(cfg, progress=True)
    if not report.rows:
        console.print(f"node {node_rank}: all ranks finished; the node that ran global rank 0 writes the table")
        return
    console.print(markdown_table(report.rows, COLUMNS), highlight=False, soft_wrap=True)
    console.print(caption(report), highlight=False)
    print_flags_and_files(report.flags, report.files)
