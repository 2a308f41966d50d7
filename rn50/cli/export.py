"""`rn50 export`: a checkpoint to a verified artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rn50.cli.common import DEVICE_HELP, bind, console, err_console, switch
from rn50.env import resolve_device


def export(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Argument(help="rn50, torchvision or NVIDIA checkpoint.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx | torchscript | aoti | trt | openvino | triton")],
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
    quantizer: Annotated[
        str | None,
        typer.Option(
            help="openvino INT8: nncf (NNCF, the default; the openvino-quant extra) | ort (the onnx CPU Q/DQ model)."
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
    triton_backend: Annotated[
        str, typer.Option(help="Model inside a triton repository: onnx | torchscript | trt | openvino")
    ] = "onnx",
    simplify: Annotated[bool, switch("simplify", help="Simplify the ONNX graph (onnxsim).")] = (False),
    verify: Annotated[bool, switch("verify", help="Prove parity with eager PyTorch.")] = True,
    force: Annotated[bool, switch("force", help="Replace an existing output.")] = False,
    workspace_gib: Annotated[float, typer.Option(help="TensorRT builder workspace limit (GiB).")] = 4.0,
    timing_cache: Annotated[
        Path | None, typer.Option(help="TensorRT timing cache file (reused across builds).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sidecar as JSON.")] = False,
) -> None:
    """Export a checkpoint to ONNX (fp32/fp16/int8 Q/DQ), TorchScript, AOTInductor, TensorRT, OpenVINO or a Triton
    repository, proving parity with eager PyTorch."""
    from rn50.errors import UserError
    from rn50.export import ExportOptions, export_model
    from rn50.export.formats import get_format

    name = get_format(fmt).name
    inner = get_format(triton_backend).name if name == "triton" else name  # the model a Triton repository wraps
    if quantizer is not None and inner != "openvino":
        raise UserError("--quantizer applies to --format openvino (ONNX INT8 is always ONNX Runtime's quantiser)")

    options = bind(
        ExportOptions,
        ctx.params,
        calib_dir=calib,
        images_dir=images,
        device=resolve_device(device),
        extra={"quantizer": quantizer} if quantizer else {},
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
