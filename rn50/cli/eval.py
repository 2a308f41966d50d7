"""`rn50 eval`: top-1/top-5 of a checkpoint or artifact beside its fp32 source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rn50.cli.common import console, err_console


def eval_command(
    model: Annotated[Path, typer.Argument(help="Checkpoint or exported artifact (.onnx, .ts, .pt2, .plan, .ov).")],
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
    from rn50.tables import markdown_table

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
