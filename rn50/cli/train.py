"""`rn50 train`: one line per option, bound to a Recipe by rn50.train.cli_options."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from rn50.cli.common import command_argv, console, switch
from rn50.recipes import LR_SCHEDULES, PRECISIONS

DATA, OPTIM, PRECISION, DIST, CKPT, OUTPUT = "Data", "Optimisation", "Precision", "Distributed", "Checkpoints", "Output"
Precision = Enum("Precision", {p: p for p in PRECISIONS}, type=str)
LrSchedule = Enum("LrSchedule", {s: s for s in LR_SCHEDULES}, type=str)
MemoryFormat = Enum("MemoryFormat", {"nhwc": "nhwc", "nchw": "nchw"}, type=str)
Device = Enum("Device", {"auto": "auto", "cuda": "cuda", "cpu": "cpu"}, type=str)


def train(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Argument(help="ImageNet-layout folder (train/, val/); omit for synthetic.")
    ] = None,
    recipe: Annotated[str, typer.Option("--recipe", help="Recipe name (`rn50 recipes` lists them).")] = "sample-cpu",
    data_backend: Annotated[
        str | None,
        typer.Option(
            help="pytorch, pytorch-gpu (nvJPEG decode in torchvision), dali-cpu, dali-gpu or synthetic.",
            rich_help_panel=DATA,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-j", min=0, help="Loader processes/threads (0: inline).", rich_help_panel=DATA),
    ] = None,
    image_size: Annotated[int | None, typer.Option(min=32, help="Training crop in px.", rich_help_panel=DATA)] = None,
    crop_area: Annotated[
        tuple[float, float] | None,
        typer.Option(
            help="Random-resized-crop area range as a fraction of the image, MIN MAX (ImageNet: 0.08 1).",
            rich_help_panel=DATA,
        ),
    ] = None,
    crop_ratio: Annotated[
        tuple[float, float] | None,
        typer.Option(
            help="Random-resized-crop aspect range (width/height), MIN MAX (ImageNet: 0.75 1.333).",
            rich_help_panel=DATA,
        ),
    ] = None,
    hflip: Annotated[
        bool | None,
        switch("hflip", help="Random horizontal flips in training.", rich_help_panel=DATA),
    ] = None,
    num_classes: Annotated[int | None, typer.Option(min=1, help="Model outputs.", rich_help_panel=DATA)] = None,
    max_skipped: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Stop once undecodable images pass this share of a split (0.01 = 1%; 1: never stop).",
            rich_help_panel=DATA,
        ),
    ] = 0.01,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs.", rich_help_panel=OPTIM)] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", "-b", min=1, help="Images per device per step.", rich_help_panel=OPTIM),
    ] = None,
    optimizer_batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Images per optimizer step; above world x batch it accumulates gradients.",
            rich_help_panel=OPTIM,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="Peak lr for the optimizer batch, > 0 (default 0.256 x batch/256).", rich_help_panel=OPTIM),
    ] = None,
    warmup: Annotated[
        float | None, typer.Option(min=0.0, help="Linear warmup epochs (fractions allowed).", rich_help_panel=OPTIM)
    ] = None,
    lr_schedule: Annotated[
        LrSchedule | None, typer.Option(case_sensitive=False, help="Learning-rate schedule.", rich_help_panel=OPTIM)
    ] = None,
    momentum: Annotated[float | None, typer.Option(min=0.0, help="SGD momentum.", rich_help_panel=OPTIM)] = None,
    weight_decay: Annotated[
        float | None, typer.Option(min=0.0, help="Weight decay on tensors with ndim >= 2.", rich_help_panel=OPTIM)
    ] = None,
    label_smoothing: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Label smoothing.", rich_help_panel=OPTIM)
    ] = None,
    mixup: Annotated[float | None, typer.Option(min=0.0, help="Mixup alpha (0: off).", rich_help_panel=OPTIM)] = None,
    ema: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Keep an EMA of the weights with this decay (e.g. 0.9999; 0: off).",
            rich_help_panel=OPTIM,
        ),
    ] = None,
    zero_init_last: Annotated[
        bool | None,
        switch("zero-init-last", help="Zero the last BN of each block.", rich_help_panel=OPTIM),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed (each rank uses seed + rank).", rich_help_panel=OPTIM)] = 0,
    max_nonfinite: Annotated[
        int, typer.Option(min=1, help="Stop after this many non-finite losses in a row.", rich_help_panel=OPTIM)
    ] = 10,
    precision: Annotated[
        Precision | None,
        typer.Option(case_sensitive=False, help="fp16 (AMP), bf16, tf32 or fp32.", rich_help_panel=PRECISION),
    ] = None,
    static_loss_scale: Annotated[
        float | None,
        typer.Option(min=0.0, help="fp16: a fixed loss scale instead of dynamic.", rich_help_panel=PRECISION),
    ] = None,
    memory_format: Annotated[
        MemoryFormat | None,
        typer.Option(case_sensitive=False, help="nhwc (channels_last) or nchw.", rich_help_panel=PRECISION),
    ] = None,
    compile: Annotated[bool, switch("compile", help="torch.compile the model.", rich_help_panel=PRECISION)] = False,
    device: Annotated[
        Device, typer.Option(case_sensitive=False, help="auto: CUDA when present, else CPU.", rich_help_panel=DIST)
    ] = Device.auto,
    gpus: Annotated[
        int, typer.Option(min=1, help="Processes per node; > 1 relaunches under torchrun.", rich_help_panel=DIST)
    ] = 1,
    nnodes: Annotated[
        int, typer.Option(min=1, help="Nodes (multi-node: same command on each).", rich_help_panel=DIST)
    ] = 1,
    node_rank: Annotated[int, typer.Option(min=0, help="This node's rank.", rich_help_panel=DIST)] = 0,
    rdzv_endpoint: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of the rendezvous, node 0's address (multi-node).", rich_help_panel=DIST),
    ] = None,
    rdzv_timeout: Annotated[
        int,
        typer.Option(
            min=1, help="Seconds a node waits for the others at the rendezvous before failing.", rich_help_panel=DIST
        ),
    ] = 300,
    max_restarts: Annotated[
        int,
        typer.Option(
            min=0,
            help="torchrun restarts of the worker group after a failure; each resumes --resume auto.",
            rich_help_panel=DIST,
        ),
    ] = 0,
    resume: Annotated[
        str | None,
        typer.Option(help="Continue from a checkpoint path, or `auto` (the run's last).", rich_help_panel=CKPT),
    ] = None,
    evaluate: Annotated[
        str | None,
        typer.Option(help="Only evaluate this checkpoint (any format rn50 loads), or `auto`.", rich_help_panel=CKPT),
    ] = None,
    keep_epochs: Annotated[
        int,
        typer.Option(
            min=0,
            help="Keep the newest N checkpoints/epoch-NNN.pth (0: all); last.pth, best.pth always.",
            rich_help_panel=CKPT,
        ),
    ] = 3,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Also save checkpoints/last.pth every N iterations mid-epoch (a kill loses at most N).",
            rich_help_panel=CKPT,
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/<recipe>-<time>).", rich_help_panel=OUTPUT)
    ] = None,
    print_freq: Annotated[
        int, typer.Option(min=1, help="Log metrics every N iterations.", rich_help_panel=OUTPUT)
    ] = 10,
    report_file: Annotated[
        Path | None, typer.Option(help="Also write the final report.md here.", rich_help_panel=OUTPUT)
    ] = None,
    progress: Annotated[bool, switch("progress", help="Rich progress bar.", rich_help_panel=OUTPUT)] = True,
    prof: Annotated[
        int | None,
        typer.Option(min=1, help="Stop each phase after N iterations (benchmarking).", rich_help_panel=OUTPUT),
    ] = None,
    training_only: Annotated[
        bool,
        switch("training-only", help="Skip validation.", rich_help_panel=OUTPUT),
    ] = False,
) -> None:
    """Train ResNet-50 v1.5 with a recipe: DALI or PyTorch data, AMP, DDP, resumable; or --evaluate a checkpoint.

    Stopped by SIGTERM/SIGINT it saves a resumable checkpoint and exits 128 + signal (143, 130).
    """
    from rn50.train.cli_options import LAUNCHER_OPTIONS, plan_train

    plan = plan_train(ctx.params, command_argv(ctx, skip=LAUNCHER_OPTIONS))
    if plan.launch is not None:
        raise typer.Exit(plan.relaunch())
    opts = plan.options
    from rn50.train.loop import fit

    summary = fit(opts)
    if summary["status"] == "stopped":
        raise typer.Exit(summary["exit_code"])
    if summary.get("rank", 0) != 0:  # one summary line per run, not one per rank
        return
    if summary["status"] == "evaluated":
        console.print(f"top-1 {summary['top1']:.2f}%  top-5 {summary['top5']:.2f}%  ({summary['images']} images)")
    elif summary.get("top1") is not None:
        console.print(
            f"{summary['status']}: top-1 {summary['top1']:.2f}% (best {summary['best_top1']:.2f}%); {summary['out']}"
        )
    else:
        console.print(f"{summary['status']}: {summary['out']}")
