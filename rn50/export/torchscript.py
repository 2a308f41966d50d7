"""TorchScript export: traced, frozen (BN folded into the convolutions, weights inlined as constants).

`torch.jit.optimize_for_inference` rewrites convolutions into MKL-DNN ops on CPU whose serialised form does not
reload ("required keyword attribute 'value' is undefined"), so the saved file is the frozen graph and the loader
applies optimize_for_inference in memory, on the device it will run on.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from rn50.errors import UserError, first_line
from rn50.export.runner import Runner, math_mode, with_precision

if TYPE_CHECKING:
    from rn50.export.formats import ExportOptions


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # torch >= 2.10 flags every torch.jit call as deprecated; the format still works and users ask for it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def export(model: nn.Module, path: str | os.PathLike, opts: ExportOptions) -> dict[str, Any]:
    device = str(opts.device)
    wrapped = with_precision(model, opts.precision).to(device)
    example = torch.randn(2, 3, opts.image_size, opts.image_size, device=device)
    with _quiet(), torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(wrapped, example))
        torch.jit.save(frozen, os.fspath(path))
    return {"traced": True, "frozen": True, "optimize_for_inference": "applied at load time"}


class TorchScriptRunner(Runner):
    format = "torchscript"

    def __init__(self, path: str, precision: str, sidecar: dict, device: torch.device, optimize: bool = True):
        with _quiet():
            try:
                module = torch.jit.load(path, map_location=device)
            except RuntimeError as e:
                first = first_line(e)
                if "PytorchStreamReader" in first:  # not a zip archive: the file is damaged or not TorchScript
                    first = "corrupt, truncated or not a TorchScript file (" + first.split(". ")[0] + ")"
                raise UserError(f"cannot load TorchScript {path} on {device}: {first}") from None
            module.eval()
            if optimize:
                module = torch.jit.optimize_for_inference(module)
        self.module = module
        super().__init__(path, precision, sidecar, device, f"torch.jit ({device.type})")

    def run(self, x: Tensor) -> Tensor:
        with torch.inference_mode(), math_mode(self.precision, self.device.type == "cuda"):
            return self.module(x)


def load_torchscript(
    path: str | os.PathLike, device: torch.device, sidecar: dict, threads: int | None = None
) -> TorchScriptRunner:
    exported_on = sidecar.get("export_device", "cpu")
    if torch.device(exported_on).type != device.type:
        raise UserError(
            f"{path} was traced on {exported_on} (device-specific constants); re-export with --device {device.type}"
        )
    return TorchScriptRunner(os.fspath(Path(path)), sidecar.get("precision", "fp32"), sidecar, device)
