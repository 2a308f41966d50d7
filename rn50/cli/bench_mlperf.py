"""`rn50 bench mlperf`: MLPerf Inference scenarios under MLCommons' LoadGen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rn50.cli.common import DEVICE_HELP, bind, console
from rn50.env import resolve_device

SHORTER = "Shorter runs (each marks the result NOT COMPLIANT)"
SERVER = "Server scenario"


def bench_mlperf(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="Checkpoint or exported artifact (.onnx, .ts, .pt2, .plan).")],
    data: Annotated[Path, typer.Argument(help="Labelled ImageNet-layout folder (its val/ split is used).")],
    scenario: Annotated[str, typer.Option(help="offline, server, singlestream or multistream.")] = "offline",
    mode: Annotated[str, typer.Option(help="performance or accuracy.")] = "performance",
    backend: Annotated[
        str | None,
        typer.Option(help="For a checkpoint: eager (default), compile, torchscript, onnxruntime, tensorrt, aoti."),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="For a checkpoint: fp32, tf32, fp16, bf16, int8 (default fp16 on cuda, else fp32)."),
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    image_size: Annotated[
        int | None, typer.Option(min=32, help="Input size (default: the artifact's, or the checkpoint's recipe's).")
    ] = None,
    batch: Annotated[
        int | None, typer.Option(min=1, help="Offline batch; Server's largest batch (default 256 on cuda, 32 on cpu).")
    ] = None,
    target_qps: Annotated[
        float | None,
        typer.Option(help="Server target QPS (default: half the calibrated capacity); Offline expected QPS."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Offline/Server inference threads (eager, onnxruntime, torchscript).")
    ] = 1,
    fp32_top1: Annotated[
        float | None, typer.Option(help="Accuracy: the fp32 reference top-1 % for the 99% target.")
    ] = None,
    min_duration: Annotated[float | None, typer.Option(help="Seconds (official 600).", rich_help_panel=SHORTER)] = None,
    min_query_count: Annotated[
        int | None,
        typer.Option(help="Queries (Offline: samples; official 24,576 Offline).", rich_help_panel=SHORTER),
    ] = None,
    sample_count: Annotated[
        int | None, typer.Option(help="Performance sample count (official 1,024).", rich_help_panel=SHORTER)
    ] = None,
    target_latency_ms: Annotated[
        float | None, typer.Option(help="Server latency bound (official 15 ms at p99).", rich_help_panel=SHORTER)
    ] = None,
    batch_timeout_ms: Annotated[
        float | None,
        typer.Option(help="How long a batch waits to fill (default: from the bound).", rich_help_panel=SERVER),
    ] = None,
    find_peak: Annotated[
        bool,
        typer.Option("--find-peak", help="Search for the highest VALID target QPS.", rich_help_panel=SERVER),
    ] = False,
    peak_tries: Annotated[
        int, typer.Option(min=1, help="LoadGen runs the search may take.", rich_help_panel=SERVER)
    ] = 8,
    out: Annotated[Path, typer.Option(help="Folder for LoadGen's logs and rn50's tables.")] = Path("runs/bench-mlperf"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON (LoadGen's chatter goes to stderr).")
    ] = False,
) -> None:
    """MLPerf Inference ResNet-50 under MLCommons' LoadGen: Offline, Server, SingleStream, MultiStream.

    The official settings by default (600 s minimum duration, 1,024 performance samples, 24,576 Offline samples,
    15 ms p99 Server bound, 8-sample MultiStream queries); --min-duration, --min-query-count, --sample-count and
    --target-latency-ms shorten or loosen a run and mark it NOT COMPLIANT everywhere. LoadGen's logs stay untouched
    in OUT/SCENARIO-MODE/; exit code 1 when LoadGen judges the run INVALID or accuracy misses its target."""
    from rn50.bench.mlperf import InvalidResult, MlperfOptions, run_mlperf
    from rn50.bench.mlperf.report import accuracy_line, headline, problem

    opts = bind(MlperfOptions, ctx.params, device=resolve_device(device), min_duration_s=min_duration)
    result = run_mlperf(opts)
    if as_json:
        console.print_json(json.dumps(result, default=str))
    else:
        console.print(headline(result), highlight=False, soft_wrap=True)
        if result.get("accuracy"):
            console.print(accuracy_line(result["accuracy"]), highlight=False, soft_wrap=True)
        for key, path in result["files"].items():
            console.print(f"{key}: {path}", highlight=False, soft_wrap=True)
    why = problem(result)
    if why:
        raise InvalidResult(f"{why}; tables in {result['files']['md']}")
