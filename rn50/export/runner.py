"""The one calling convention every loaded artifact follows (bench builds its runtimes on it)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class Runner:
    """`runner(x)` takes float32 NCHW images on any device and returns float32 logits on `runner.device`.

    `runner.run(x)` is the zero-extra-copy path: `x` must already be float32, contiguous and on `runner.device`.
    Attributes: `format`, `precision`, `sidecar` (dict, {} when the artifact has none), `provider` (the backend
    that actually runs it, e.g. ONNX Runtime's execution provider), `device`, `path`.
    """

    format: str = ""

    def __init__(self, path: str, precision: str, sidecar: dict[str, Any], device: torch.device, provider: str):
        self.path = path
        self.precision = precision
        self.sidecar = sidecar
        self.device = device
        self.provider = provider

    def __call__(self, x: Tensor) -> Tensor:
        return self.run(x.to(self.device, torch.float32).contiguous())

    def run(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {self.precision} on {self.provider} ({self.path})>"


class CastWrapper(nn.Module):
    """fp32 in, fp32 out; the network itself runs in `dtype` (so every artifact keeps one float32 interface)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model.to(dtype)
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.to(self.dtype)).float()


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def with_precision(model: nn.Module, precision: str) -> nn.Module:
    """A copy of `model` in `precision` with a float32 interface (the caller's module is left untouched)."""
    import copy

    model = copy.deepcopy(model).eval()
    if precision == "fp32":
        return model.float()
    return CastWrapper(model, DTYPES[precision]).eval()


def require(module: str, extra: str, what: str | None = None):
    """Import an optional dependency or raise one line naming the extra that provides it."""
    import importlib

    from rn50.errors import UserError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what or module} is not installed: pip install 'rn50[{extra}]'") from None
