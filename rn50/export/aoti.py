"""AOTInductor: `torch.export` with a dynamic batch dimension, compiled ahead of time into a .pt2 package."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from rn50.errors import UserError, first_line, need
from rn50.export.runner import Runner, math_mode, with_precision

if TYPE_CHECKING:
    from rn50.export.formats import ExportOptions


def export(model: nn.Module, path: str | os.PathLike, opts: ExportOptions) -> dict[str, Any]:
    need(os.fspath(path).endswith(".pt2"), f"an AOTInductor package must end in .pt2, got {path}")
    device = str(opts.device)
    wrapped = with_precision(model, opts.precision).to(device)
    # Example batch 2: torch.export specialises size-1 dimensions, the declared range still starts at 1.
    example = torch.randn(2, 3, opts.image_size, opts.image_size, device=device)
    batch = torch.export.Dim("batch", min=1, max=max(2, opts.max_batch))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(wrapped, (example,), dynamic_shapes=({0: batch},))
        torch._inductor.aoti_compile_and_package(program, package_path=os.fspath(path), inductor_configs={})
    return {"torch_export": "dynamic batch", "inductor_configs": {}}


class AotiRunner(Runner):
    format = "aoti"

    def __init__(self, path: str, precision: str, sidecar: dict, device: torch.device):
        try:
            self.model = torch._inductor.aoti_load_package(path)
        except Exception as e:  # a wrong/corrupt package surfaces as RuntimeError or a zipfile error
            raise UserError(f"cannot load AOTInductor package {path}: {first_line(e)}") from None
        super().__init__(path, precision, sidecar, device, f"aotinductor ({device.type})")

    def run(self, x: Tensor) -> Tensor:
        with torch.inference_mode(), math_mode(self.precision, self.device.type == "cuda"):
            return self.model(x)


def load_aoti(path: str | os.PathLike, device: torch.device, sidecar: dict, threads: int | None = None) -> AotiRunner:
    compiled_for = sidecar.get("export_device", "cpu")
    if torch.device(compiled_for).type != device.type:
        raise UserError(f"{path} was compiled for {compiled_for}; re-export with --device {device.type}")
    return AotiRunner(os.fspath(Path(path)), sidecar.get("precision", "fp32"), sidecar, device)
