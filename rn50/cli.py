"""The `rn50` command line: parse options, call the library, print. No logic lives here."""

from __future__ import annotations

import json
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from rn50.env import resolve_device
from rn50.errors import UserError
from rn50.recipes import LR_SCHEDULES, PRECISIONS
from rn50.version import __version__

DEVICE_HELP = "auto (CUDA when present, else CPU), cpu or cuda"

console = Console()
err_console = Console(stderr=True)


class Rn50Group(TyperGroup):
    """Turns a UserError raised anywhere below into one line on stderr and exit code 2."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except typer.BadParameter as e:  # a range or choice the command line checks itself: one line too
            err_console.print(f"[bold red]rn50: error:[/] {escape(usage_line(e))}", highlight=False, soft_wrap=True)
            ctx.exit(2)
        except UserError as e:
            from rn50.launch import record_rank_error

            if not record_rank_error(e):  # a rank under `rn50 ... --gpus N`: its parent prints the line
                err_console.print(f"[bold red]rn50: error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            ctx.exit(e.exit_code)
        except OSError as e:
            # The world's faults (full disk, read-only or forbidden folder, a file where a folder should be) that
            # reached here unexplained: still one line. Anything else is a bug and keeps its traceback.
            import errno

            from rn50.io import WRITE_ERRNOS

            if e.errno not in WRITE_ERRNOS:
                raise
            where = f"{e.filename}: " if e.filename else ""
            # Only a full disk or a read-only file system is surely a write; EACCES/ENOTDIR may come from a read.
            writing = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
            hint = WRITE_ERRNOS[e.errno] if writing else "check the path and its permissions"
            message = f"{where}{e.strerror or e} ({hint})"
            err_console.print(f"[bold red]rn50: error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            ctx.exit(2)


_BOUNDS = [
    (r"greater than or equal to", ">="),
    (r"greater than", ">"),
    (r"less than or equal to", "<="),
    (r"less than", "<"),
]


def usage_line(e: typer.BadParameter) -> str:
    """'--keep-epochs must be >= 0' for Typer's 'Invalid value for --keep-epochs: Input should be greater than or
    equal to 0'; the option's name and Typer's reason otherwise."""
    param = getattr(e, "param", None)
    name = (getattr(param, "opts", None) or [getattr(param, "name", "")])[0] or "a value"
    message = e.format_message() if not getattr(e, "message", None) else e.message
    for words, sign in _BOUNDS:
        m = re.fullmatch(rf"Input should be {words} (\S+?)\.?", message)
        if m:
            return f"{name} must be {sign} {m.group(1)}"
    return f"{name}: {message.removeprefix('Value error, ')}"


def make_app(help: str) -> typer.Typer:
    return typer.Typer(
        cls=Rn50Group,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode="rich",  # option groups (rich_help_panel) in --help
    )


app = make_app("ResNet-50 v1.5: train with the NVIDIA recipe, export verified artifacts, benchmark honestly.")
data_app = make_app("Datasets: the built-in sample and a dataset doctor.")
bench_app = make_app("Benchmarks: inference sweeps, training scaling, input pipelines.")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")


def version_callback(value: bool) -> None:
    if value:
        console.print(f"rn50 {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """ResNet-50 v1.5: train with the NVIDIA recipe, export verified artifacts, benchmark honestly."""


# ---- recipes
@app.command()
def recipes(
    name: Annotated[str | None, typer.Argument(help="A recipe name; omit to list them all.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column (precision, schedule, smoothing, size, backend...).")
    ] = False,
) -> None:
    """List the training recipes (fits 80 columns; --wide for all), or print every field of one."""
    from rn50.recipes import RECIPES, get_recipe

    if name is not None:
        recipe = get_recipe(name)
        if as_json:
            console.print_json(json.dumps(recipe.to_dict()))
            return
        table = Table(title=f"recipe {recipe.name}", show_header=False)
        for key, value in recipe.to_dict().items():
            table.add_row(key, " - ".join(f"{v:.4g}" for v in value) if isinstance(value, tuple) else str(value))
        console.print(table)
        return
    if as_json:
        console.print_json(json.dumps({n: r.to_dict() for n, r in RECIPES.items()}))
        return
    # The narrow table fits 80 columns with every value whole (rich cut each column's values before).
    table = Table(title="rn50 recipes", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    cols = ["name", "GPU×bs", "global", "lr", "wd", "warmup", "epochs", "mixup", "layout"]
    if wide:
        cols += ["precision", "schedule", "smoothing", "size", "crop area", "backend", "notes"]
    for col in cols:
        table.add_column(col, no_wrap=True)
    for r in RECIPES.values():
        row = [
            r.name,
            f"{r.gpus}x{r.batch_size}",
            str(r.global_batch),
            f"{r.lr:g}",
            f"1/{round(1 / r.weight_decay)}" if r.weight_decay else "0",
            f"{r.warmup_epochs:g}",
            str(r.epochs),
            f"{r.mixup:g}",
            "NHWC" if r.memory_format == "channels_last" else "NCHW",
        ]
        if wide:
            area = " - ".join(f"{v:g}" for v in r.crop_area)
            row += [r.precision, r.lr_schedule, f"{r.label_smoothing:g}", str(r.image_size), area, r.data_backend]
            row.append(r.notes or "")
        table.add_row(*row)
    console.print(table, soft_wrap=wide)  # --wide: whole lines, for a wide terminal or a pipe
    if not wide:
        console.print("all columns: rn50 recipes --wide; every field of one: rn50 recipes NAME", highlight=False)


# ---- demo
@app.command()
def demo(
    sample: Annotated[Path, typer.Option(help="The built-in sample's folder (written here if absent).")] = Path(
        "sample"
    ),
    out: Annotated[Path, typer.Option(help="Folder for the run, exports, benchmark results and summary.")] = Path(
        "runs/demo"
    ),
    recipe: Annotated[str, typer.Option(help="Recipe to train.")] = "sample-cpu",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs (default: the recipe's; the warmup shrinks to fit).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier demo in --out.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")] = True,
) -> None:
    """The main job on the built-in sample: train, export ONNX fp32 + INT8 with parity, benchmark, one summary."""
    from rn50.demo import DemoConfig, run_demo, summary_markdown

    summary = run_demo(
        DemoConfig(sample=sample, out=out, recipe=recipe, epochs=epochs, seed=seed, force=force, progress=progress),
        say=lambda text: err_console.print(text, highlight=False, soft_wrap=True),
    )
    console.print(summary_markdown(summary), highlight=False, soft_wrap=True, markup=False)


# ---- data
@data_app.command("sample")
def data_sample(
    out: Annotated[Path, typer.Argument(help="Folder to write train/ and val/ into.")],
    force: Annotated[bool, typer.Option("--force", help="Replace train/ and val/ in a non-empty folder.")] = False,
) -> None:
    """Write the built-in sample (1,797 real handwritten digits, 10 classes) in ImageNet layout."""
    from rn50.data.sample import make_sample

    counts = make_sample(out, force=force)
    console.print(f"wrote {counts['train']} train and {counts['val']} val images (10 classes) to {out}")


@data_app.command("check")
def data_check(
    root: Annotated[Path, typer.Argument(help="Dataset folder with train/ and/or val/.")],
    workers: Annotated[int | None, typer.Option(help="Decode processes (default: up to 8).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Count images per class and split, find undecodable files and classes missing from a split."""
    from rn50.data.check import check_dataset

    with err_console.status(f"decoding every image under {root} ..."):
        report = check_dataset(root, workers=workers)
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        splits = list(report.counts)
        table = Table(title=f"dataset {root}")
        table.add_column("class")
        for s in splits:
            table.add_column(s, justify="right")
        classes = sorted({c for counts in report.counts.values() for c in counts})
        for c in classes:
            table.add_row(c, *(str(report.counts[s].get(c, "-")) for s in splits))
        table.add_row("[bold]total", *(f"[bold]{sum(report.counts[s].values())}" for s in splits))
        console.print(table)
        if report.other_files:
            console.print(
                f"{len(report.other_files)} entries not read by the loaders (non-image files, nested or hidden "
                f"folders; e.g. {report.other_files[0]})"
            )
        for problem in report.problems:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
        console.print("[green]ok[/]" if report.ok else f"[red]{len(report.problems)} problem(s)[/]")
    if not report.ok:
        raise typer.Exit(1)


# ---- train (issue: the trainer)
DATA, OPTIM, PRECISION, DIST, CKPT, OUTPUT = "Data", "Optimisation", "Precision", "Distributed", "Checkpoints", "Output"
Precision = Enum("Precision", {p: p for p in PRECISIONS}, type=str)
LrSchedule = Enum("LrSchedule", {s: s for s in LR_SCHEDULES}, type=str)
MemoryFormat = Enum("MemoryFormat", {"nhwc": "nhwc", "nchw": "nchw"}, type=str)
Device = Enum("Device", {"auto": "auto", "cuda": "cuda", "cpu": "cpu"}, type=str)


def _argv_value(value: object) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def command_argv(ctx: typer.Context, skip: tuple[str, ...] = ()) -> list[str]:
    """The arguments and options given on this command line (not defaults), as argv: what a relaunch repeats."""
    args: list[str] = []
    opts: list[str] = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.name in skip or source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        value = ctx.params[param.name]
        if param.param_type_name == "argument":
            args.append(_argv_value(value))
        elif getattr(param, "is_flag", False):
            if param.secondary_opts:
                opts.append(param.opts[0] if value else param.secondary_opts[0])
            elif value:
                opts.append(param.opts[0])
        elif value is not None:
            opts += [
                param.opts[0],
                *(map(_argv_value, value) if isinstance(value, tuple | list) else [_argv_value(value)]),
            ]
    return [*args, *opts]


@app.command()
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
        typer.Option("--hflip/--no-hflip", help="Random horizontal flips in training.", rich_help_panel=DATA),
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
        typer.Option(
            "--zero-init-last/--no-zero-init-last", help="Zero the last BN of each block.", rich_help_panel=OPTIM
        ),
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
    compile: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile the model.", rich_help_panel=PRECISION)
    ] = False,
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
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Rich progress bar.", rich_help_panel=OUTPUT)
    ] = True,
    prof: Annotated[
        int | None,
        typer.Option(min=1, help="Stop each phase after N iterations (benchmarking).", rich_help_panel=OUTPUT),
    ] = None,
    training_only: Annotated[
        bool,
        typer.Option("--training-only/--no-training-only", help="Skip validation.", rich_help_panel=OUTPUT),
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


# ---- eval
@app.command("eval")
def eval_command(
    model: Annotated[Path, typer.Argument(help="Checkpoint or exported artifact (.onnx, .ts, .pt2, .plan).")],
    data: Annotated[Path, typer.Argument(help="Labelled ImageNet-layout folder (its val/ split is used).")],
    reference: Annotated[
        Path | None, typer.Option(help="fp32 checkpoint to compare with (default: the one the sidecar names).")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Images per call.")] = 32,
    image_size: Annotated[
        int | None, typer.Option(min=32, help="Input size (default: the artifact's, or the checkpoint's recipe's).")
    ] = None,
    workers: Annotated[int, typer.Option(min=0, help="Decode processes.")] = 2,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N batches.")] = None,
    kernel_paths: Annotated[
        bool,
        typer.Option(
            "--kernel-paths",
            help="INT8 ONNX: also run the first 2 batches under every integer kernel path ONNX Runtime has on this "
            "CPU; exit 1 unless their logits are bit-identical.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Top-1/top-5 of a checkpoint or exported artifact on labelled images, beside its fp32 source."""
    from rn50.bench.accuracy import EvalConfig, evaluate_models

    paths = None
    if kernel_paths:
        from rn50.export.kernel_paths import KernelPathError, disagreement, self_test

        paths = self_test(model, data, batch * min(limit or 2, 2))
    cfg = EvalConfig(model, data, reference, batch, image_size, workers, limit)
    with err_console.status(f"evaluating {model} on {data} ...") as status:
        result = evaluate_models(cfg, say=lambda text: status.update(f"evaluating {model}: {text}"))
    if paths is not None:
        result["kernel_paths"] = paths
    if as_json:
        console.print_json(json.dumps(result))
    else:
        print_eval(result)
    if paths is not None and not paths["bit_identical"]:
        raise KernelPathError(disagreement(paths))


def print_eval(result: dict) -> None:
    from rn50.bench.report import markdown_table

    cols = [("role", "model"), ("format", "format"), ("precision", "precision"), ("top1", "top-1 %")]
    cols += [("top5", "top-5 %"), ("img_s", "img/s"), ("path", "path")]
    console.print(markdown_table(result["rows"], cols), highlight=False, soft_wrap=True)
    console.print(f"{result['images']} images of {result['data']} ({result['split']}) at {result['image_size']} px")
    if "top1_agreement" in result:
        console.print(
            f"top-1 delta {result['top1_delta']:+.2f} points; top-1 agreement with the reference "
            f"{100 * result['top1_agreement']:.2f}%"
        )
    if result.get("note"):
        console.print(result["note"], highlight=False, soft_wrap=True)
    if result.get("kernel_paths"):
        from rn50.export.kernel_paths import summary

        console.print(summary(result["kernel_paths"]), highlight=False, soft_wrap=True)


# ---- export (issue: export)
@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="rn50, torchvision or NVIDIA checkpoint.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx | torchscript | aoti | trt | triton")],
    out: Annotated[Path | None, typer.Option(help="Output path (default: beside the checkpoint).")] = None,
    precision: Annotated[
        str | None, typer.Option(help="fp32 | fp16 | bf16 | int8 (default: fp16 for trt, else fp32).")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Largest batch (dynamic batch range 1..N).")] = 256,
    image_size: Annotated[int, typer.Option(help="Input height and width.")] = 224,
    calib: Annotated[
        Path | None, typer.Option(help="INT8 calibration images (class folders; default: the built-in sample).")
    ] = None,
    calib_method: Annotated[str, typer.Option(help="minmax | entropy | percentile")] = "minmax",
    calib_count: Annotated[int, typer.Option(help="Number of calibration images.")] = 64,
    int8_target: Annotated[
        str | None,
        typer.Option(
            help="INT8 Q/DQ form: cpu (ONNX Runtime CPU, uint8 activations) | tensorrt (symmetric int8). "
            "Default: tensorrt for trt or --device cuda, else cpu."
        ),
    ] = None,
    int8_stem: Annotated[
        str, typer.Option(help="INT8: keep the first convolution float (default) or quantise it too: int8, faster.")
    ] = "float",
    images: Annotated[
        Path | None, typer.Option(help="Real images for the parity check (default: the built-in sample).")
    ] = None,
    parity_images: Annotated[int, typer.Option(help="Number of real images in the parity check.")] = 16,
    device: Annotated[
        str, typer.Option(help=f"{DEVICE_HELP}: where torchscript/aoti run (trt: always cuda).")
    ] = "auto",
    triton_backend: Annotated[str, typer.Option(help="Model inside a triton repository: onnx | torchscript | trt")] = (
        "onnx"
    ),
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Simplify the ONNX graph (onnxsim).")] = (
        False
    ),
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Prove parity with eager PyTorch.")] = True,
    force: Annotated[bool, typer.Option("--force/--no-force", help="Replace an existing output.")] = False,
    workspace_gib: Annotated[float, typer.Option(help="TensorRT builder workspace limit (GiB).")] = 4.0,
    timing_cache: Annotated[
        Path | None, typer.Option(help="TensorRT timing cache file (reused across builds).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sidecar as JSON.")] = False,
) -> None:
    """Export a checkpoint to ONNX (fp32/fp16/int8 Q/DQ), TorchScript, AOTInductor, TensorRT or a Triton repository,
    proving parity with eager PyTorch."""
    from rn50.export import ExportOptions, export_model

    options = ExportOptions(
        precision=precision,
        max_batch=max_batch,
        image_size=image_size,
        calib_dir=calib,
        calib_method=calib_method,
        calib_count=calib_count,
        int8_target=int8_target,
        int8_stem=int8_stem,
        images_dir=images,
        parity_images=parity_images,
        force=force,
        verify=verify,
        simplify=simplify,
        device=resolve_device(device),
        triton_backend=triton_backend,
        workspace_gib=workspace_gib,
        timing_cache=timing_cache,
    )
    with err_console.status(f"exporting {checkpoint} to {fmt} ..."):
        result = export_model(checkpoint, fmt, out, options)
    if as_json:
        console.print_json(json.dumps(result.sidecar, default=str))
        return
    parity = result.sidecar.get("parity")
    if parity:
        table = Table(title=f"parity vs eager fp32 ({result.sidecar['format']} {result.sidecar['precision']})")
        for col in ("inputs", "n", "max abs", "max rel", "p95 image rel", "top-1 agree"):
            table.add_column(col, justify="right")
        for name in ("random", "real"):
            if name in parity:
                s = parity[name]
                table.add_row(
                    name,
                    str(s["n"]),
                    f"{s['max_abs']:.3g}",
                    f"{s['max_rel']:.3g}",
                    f"{s['p95_rel']:.3g}",
                    f"{s['top1_agreement']:.1%}",
                )
        console.print(table)
        if parity.get("kernel_paths"):
            from rn50.export.kernel_paths import summary

            console.print(summary(parity["kernel_paths"]), highlight=False, soft_wrap=True)
    else:
        console.print("[yellow]parity not checked (--no-verify)[/]")
    console.print(f"wrote {result.path} in {result.export_seconds:.1f} s (sidecar {result.sidecar_path})")


# ---- bench (issues: bench infer, bench train)
@bench_app.command("infer")
def bench_infer(
    source: Annotated[
        Path | None, typer.Argument(help="Checkpoint or exported artifact; omit for a random-init ResNet-50.")
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(
            help="A..B (powers of two from A to B) or a list such as 1,3,8. Default 1..256 (CPU: 1..8).",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="Comma list of eager, compile, torchscript, onnxruntime, tensorrt, aoti.")
    ] = "eager",
    precision: Annotated[
        str | None, typer.Option(help="Comma list of fp32, tf32, fp16, bf16, int8 (default: fp16 on cuda, else fp32).")
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    image_size: Annotated[int, typer.Option(help="Input height and width in pixels.")] = 224,
    warmup: Annotated[
        int | None,
        typer.Option(help="Untimed iterations per batch size before timing. Default 10 (CPU: 3).", show_default=False),
    ] = None,
    iters: Annotated[
        int | None,
        typer.Option(help="Timed iterations per batch size and series, over the rounds (default 50; CPU: 1.5 s)."),
    ] = None,
    min_time: Annotated[
        float | None,
        typer.Option(help="Instead of --iters: time each batch size and series for at least S seconds in all."),
    ] = None,
    rounds: Annotated[
        int, typer.Option(help="Interleaved rounds of all series per batch size; speedups are medians over rounds.")
    ] = 5,
    cuda_graphs: Annotated[
        bool, typer.Option("--cuda-graphs/--no-cuda-graphs", help="Replay CUDA graphs (eager, compile).")
    ] = False,
    include_h2d: Annotated[
        bool, typer.Option("--include-h2d/--no-include-h2d", help="Time the host-to-device input copy too.")
    ] = False,
    channels_last: Annotated[
        bool, typer.Option("--channels-last/--no-channels-last", help="NHWC memory format for eager/compile.")
    ] = True,
    compile_dynamic: Annotated[
        bool,
        typer.Option("--compile-dynamic/--compile-static", help="compile: one symbolic-batch graph, or one per size."),
    ] = True,
    images: Annotated[
        Path | None, typer.Option(help="Real images (ImageNet layout) for top-1 agreement; int8 calibrates on train/.")
    ] = None,
    calib_dir: Annotated[
        Path | None, typer.Option(help="Calibration images for int8 (default: from --images).")
    ] = None,
    baseline: Annotated[
        bool, typer.Option("--baseline/--no-baseline", help="Also run eager fp32 for the speedup column.")
    ] = True,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Exports prove parity with eager PyTorch before timing.")
    ] = True,
    keep_artifacts: Annotated[
        Path | None, typer.Option(help="Keep the exported artifacts in this folder (default: temporary).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the Markdown, CSV, JSON and PNG results.")] = Path(
        "runs/bench-infer"
    ),
) -> None:
    """Inference batch sweep: img/s and p50/p90/p95/p99 latency per backend, precision and batch size.

    GPU defaults: batch 1..256, 10 warmup + 50 timed iterations per batch size. CPU defaults: batch 1..8, 3 warmup
    + 1.5 s timed per batch size and series (about half a minute for eager alone on 2 cores). The tables are
    rewritten after every batch size; Ctrl-C says where they are."""
    from rn50.bench.infer import InferConfig, run_infer
    from rn50.bench.runtimes import PRECISIONS, RUNTIMES
    from rn50.bench.timing import parse_batches, parse_list

    dev = resolve_device(device)
    cfg = InferConfig(
        source=source,
        batches=parse_batches(batch if batch is not None else "1..256" if dev.startswith("cuda") else "1..8"),
        backends=parse_list(backend, RUNTIMES, "backend"),
        precisions=parse_list(precision or ("fp16" if dev.startswith("cuda") else "fp32"), PRECISIONS, "precision"),
        device=dev,
        image_size=image_size,
        warmup=warmup if warmup is not None else 10 if dev.startswith("cuda") else 3,
        iters=iters if iters is not None or min_time is not None or not dev.startswith("cuda") else 50,
        min_time=min_time if min_time is not None or iters is not None or dev.startswith("cuda") else 1.5,
        rounds=rounds,
        cuda_graphs=cuda_graphs,
        include_h2d=include_h2d,
        channels_last=channels_last,
        compile_dynamic=compile_dynamic,
        images=images,
        calib_dir=calib_dir,
        baseline=baseline,
        verify=verify,
        keep_artifacts=keep_artifacts,
        out=out,
    )
    result = run_infer(cfg)
    from rn50.bench.report import markdown_table

    shown = []
    for r in result["rows"]:
        ok = r.get("status") == "ok"
        lat = " / ".join(f"{r[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms")) if ok else None
        shown.append({**r, "lat": lat})
    cols = [("backend", "backend"), ("precision", "precision"), ("batch", "batch"), ("img_s", "img/s")]
    cols += [("speedup", "speedup"), ("lat", "p50 / p90 / p99 ms"), ("status", "status")]
    console.print(markdown_table(shown, cols), highlight=False, soft_wrap=True)
    for r in result["rows"]:
        if r.get("batch") is not None and r.get("reason"):
            msg = f"{r['backend']} {r['precision']} batch {r['batch']}: {r['status']}: {r['reason']}"
            console.print(msg, highlight=False, soft_wrap=True)
    for s in result["series"]:
        if s.get("reason"):
            console.print(
                f"{s['backend']} {s['precision']}: {s['status']}: {s['reason']}", highlight=False, soft_wrap=True
            )
        if s.get("top1_agreement") is not None:
            console.print(
                f"{s['backend']} {s['precision']}: top-1 agreement with eager fp32 "
                f"{100 * s['top1_agreement']:.1f}% on {s['agreement_n']} real images"
            )
    print_flags(result.get("flags", []))
    for key, path in result["paths"].items():
        console.print(f"{key}: {path}", highlight=False, soft_wrap=True)
    from rn50.bench.infer import failures

    problem = failures(result)
    if problem:  # a script must see that something it asked for was not measured
        raise UserError(problem)


@bench_app.command("train")
def bench_train(
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
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the model.")] = False,
    sweep: Annotated[bool, typer.Option("--sweep/--no-sweep", help="Run 1, 2, 4 ... N workers, or only N.")] = True,
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

    from rn50.bench.report import markdown_table
    from rn50.bench.scaling import COLUMNS, TrainBenchConfig, run_train_bench

    device = resolve_device(device)
    cpu = device == "cpu"
    if gpus is None:
        import torch

        gpus = max(1, torch.cuda.device_count()) if device == "cuda" else min(2, os.cpu_count() or 1)
    batch = batch if batch is not None else 8 if cpu else 256
    warmup = warmup if warmup is not None else 2 if cpu else 20
    iters = iters if iters is not None else 8 if cpu else 100
    image_size = image_size if image_size is not None else 64 if cpu else 224
    precisions = tuple(p for item in (precision or ["mixed,full"]) for p in item.split(",") if p.strip())
    cfg = TrainBenchConfig(
        gpus=gpus,
        device=device,
        batch=batch,
        warmup=warmup,
        iters=iters,
        precisions=precisions,
        data=data,
        backend=backend,
        recipe=recipe,
        image_size=image_size,
        num_classes=num_classes,
        workers=workers,
        nnodes=nnodes,
        node_rank=node_rank,
        rdzv_endpoint=rdzv_endpoint,
        rdzv_timeout=rdzv_timeout,
        out=out,
        timeout=timeout,
        compile=compile,
        sweep=sweep,
        rounds=rounds,
    )
    report = run_train_bench(cfg, progress=True)
    if not report.rows:
        console.print(f"node {node_rank}: all ranks finished; the node that ran global rank 0 writes the table")
        return
    console.print(markdown_table(report.rows, COLUMNS), highlight=False, soft_wrap=True)
    console.print(report.caption, highlight=False)
    print_flags(report.flags)
    for kind, path in report.files.items():
        console.print(f"{kind}: {path}", highlight=False, soft_wrap=True)


def print_flags(flags: list[str]) -> None:
    """Each flag on its own line, on stdout beside the table it qualifies."""
    for flag in flags:
        console.print(f"[bold yellow]flag:[/] {escape(flag)}", highlight=False, soft_wrap=True)


@bench_app.command("data")
def bench_data(
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
    ceiling: Annotated[bool, typer.Option("--ceiling/--no-ceiling", help="Also time synthetic data.")] = True,
    step: Annotated[
        bool | None,
        typer.Option("--step/--no-step", help="Also time the training step (default: on with CUDA, off on CPU)."),
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
    from rn50.bench.report import markdown_table

    chosen = backend or [",".join(DEFAULT_BACKENDS)]
    backends = tuple(b.strip() for item in chosen for b in item.split(",") if b.strip())
    dev = resolve_device(device)
    cfg = DataBenchConfig(
        data=data,
        backends=backends,
        batch=batch,
        workers=workers,
        warmup=warmup,
        iters=iters if iters is not None else 50 if dev.startswith("cuda") else 150,
        split=split,
        image_size=image_size,
        device=dev,
        ceiling=ceiling,
        step=step,
        rounds=rounds,
        out=out,
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
    print_flags(report.flags)
    for kind, path in files.items():
        console.print(f"{kind}: {path}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="rn50")
