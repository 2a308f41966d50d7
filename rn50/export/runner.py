"""The one calling convention every loaded artifact follows (bench builds its runtimes on it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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


DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# The one precision vocabulary of export, eval and bench: what the arithmetic of each name is (recorded as the
# sidecar's and every result row's `math`). fp32 is IEEE fp32 everywhere: TF32 (fp32 storage, tensor-core
# products with a 10-bit mantissa) is on by default in cuDNN, in ONNX Runtime's CUDA provider and in TensorRT, and is
# turned off unless the precision is tf32.
MATH = {
    "fp32": "IEEE fp32 (TF32 off)",
    "tf32": "TF32 tensor cores for fp32 convolutions and matrix products",
    "fp16": "fp16 weights and activations",
    "bf16": "bf16 weights and activations",
    "int8": "int8 Q/DQ (float where not quantised, TF32 off)",
}


def math_of(precision: str, cuda: bool = True) -> str:
    """The arithmetic `precision` runs with; on a CPU, which has no TF32, a tf32 artifact runs IEEE fp32."""
    if precision == "tf32" and not cuda:
        return MATH["fp32"] + ", tf32 being CUDA-only"
    return MATH.get(precision, precision)


@contextlib.contextmanager
def math_mode(precision: str, cuda: bool) -> Iterator[None]:
    """PyTorch's CUDA math for `precision`: TF32 on for tf32 only (PyTorch's cuDNN default is TF32 on).

    Through the allow_tf32 flags, which every torch from 2.11 on honours: once the newer per-backend
    fp32_precision setters are used, torch 2.14 refuses later reads of these flags (Inductor reads them).
    """
    if not cuda:
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


def with_precision(model: nn.Module, precision: str) -> nn.Module:
    """A copy of `model` in `precision` with a float32 interface (the caller's module is left untouched); tf32 is
    fp32 weights run with TF32 math (`math_mode`)."""
    import copy

    model = copy.deepcopy(model).eval()
    if precision in ("fp32", "tf32"):
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
