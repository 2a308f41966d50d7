"""`rn50 bench infer`: the inference batch sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from rn50.cli.common import DEVICE_HELP, bind, console, print_flags_and_files, switch
from rn50.env import resolve_device
from rn50.errors import UserError


def bench_infer(
    ctx: typer.Context,
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
        str,
        typer.Option(
            help="Comma list of eager, compile, torchscript, onnxruntime, tensorrt, aoti, openvino, "
            "openvino-throughput."
        ),
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
        typer.Option(help="Timed iterations per batch size and series, over the rounds (default: --min-time 1.5)."),
    ] = None,
    min_time: Annotated[
        float | None,
        typer.Option(help="Instead of --iters: time each batch size and series for at least S seconds in all."),
    ] = None,
    rounds: Annotated[
        int, typer.Option(help="Interleaved rounds of all series per batch size; speedups are medians over rounds.")
    ] = 5,
    cuda_graphs: Annotated[bool, switch("cuda-graphs", help="Replay CUDA graphs (eager, compile).")] = False,
    include_h2d: Annotated[bool, switch("include-h2d", help="Time the host-to-device input copy too.")] = False,
    channels_last: Annotated[bool, switch("channels-last", help="NHWC memory format for eager/compile.")] = True,
    compile_dynamic: Annotated[
        bool,
        switch("compile-dynamic", off="compile-static", help="compile: one symbolic-batch graph, or one per size."),
    ] = True,
    images: Annotated[
        Path | None, typer.Option(help="Real images (ImageNet layout) for top-1 agreement; int8 calibrates on train/.")
    ] = None,
    calib_dir: Annotated[
        Path | None, typer.Option(help="Calibration images for int8 (default: from --images).")
    ] = None,
    baseline: Annotated[bool, switch("baseline", help="Also run eager fp32 for the speedup column.")] = True,
    verify: Annotated[bool, switch("verify", help="Exports prove parity with eager PyTorch before timing.")] = True,
    keep_artifacts: Annotated[
        Path | None, typer.Option(help="Keep the exported artifacts in this folder (default: temporary).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the Markdown, CSV, JSON and PNG results.")] = Path(
        "runs/bench-infer"
    ),
) -> None:
    """Inference batch sweep: img/s and p50/p90/p95/p99 latency per backend, precision and batch size.

    GPU defaults: batch 1..256, 10 warmup + 1.5 s timed per batch size and series (a window long enough to trust,
    where 50 iterations of a fast backend last a fraction of a second). CPU defaults: batch 1..8, 3 warmup + 1.5 s
    timed (about half a minute for eager alone on 2 cores). The tables are rewritten after every batch size; Ctrl-C
    says where they are."""
    from rn50.bench.infer import InferConfig, failures, run_infer
    from rn50.bench.runtimes import PRECISIONS, RUNTIMES
    from rn50.bench.timing import parse_batches, parse_list
    from rn50.tables import markdown_table

    dev = resolve_device(device)
    cuda = dev.startswith("cuda")
    cfg = bind(
        InferConfig,
        ctx.params,
        batches=parse_batches(batch if batch is not None else "1..256" if cuda else "1..8"),
        backends=parse_list(backend, RUNTIMES, "backend"),
        precisions=parse_list(precision or ("fp16" if cuda else "fp32"), PRECISIONS, "precision"),
        device=dev,
        warmup=warmup if warmup is not None else 10 if cuda else 3,
        min_time=min_time if min_time is not None or iters is not None else 1.5,
    )
    result = run_infer(cfg)

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
            msg = escape(f"{r['backend']} {r['precision']} batch {r['batch']}: {r['status']}: {r['reason']}")
            console.print(msg, highlight=False, soft_wrap=True)
    for s in result["series"]:
        if s.get("reason"):
            line = escape(f"{s['backend']} {s['precision']}: {s['status']}: {s['reason']}")
            console.print(line, highlight=False, soft_wrap=True)
        if s.get("top1_agreement") is not None:
            console.print(
                f"{s['backend']} {s['precision']}: top-1 agreement with eager fp32 "
                f"{100 * s['top1_agreement']:.1f}% on {s['agreement_n']} real images"
            )
    print_flags_and_files(result.get("flags", []), result["paths"])
    problem = failures(result)
    if problem:  # a script must see that something it asked for was not measured
        raise UserError(problem)
