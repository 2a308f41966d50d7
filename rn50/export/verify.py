"""Parity: does the artifact compute the same function as eager fp32 PyTorch?

Figures per input set: max absolute difference of the logits, the same relative to the largest reference logit
(`max_rel`, scale-free so one tolerance fits every checkpoint), mean absolute difference, top-1 agreement, and the
median and 95th percentile over images of each image's relative difference (`p50_rel`, `p95_rel`).
Input sets: seeded random images at batch 1 and an odd batch 7 (proves the dynamic batch axis) and real images.

The gate: fp32 (IEEE, TF32 off) must be the same function, so its worst logit is judged (`max_rel`). Reduced
precisions (tf32, fp16, bf16, int8) are judged by what users care about, top-1 agreement and the 95th-percentile
image: a worst-single-logit gate grows with the number of images checked (one outlier among 360 refused a model
that passed on 16), a percentile does not. Each precision's tolerance is written in the sidecar with the figures.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rn50.errors import UserError


@dataclass(frozen=True)
class Tolerance:
    max_rel: float | None = None  # the worst logit of every input set (fp32)
    p95_rel: float | None = None  # the 95th-percentile image's relative difference (reduced precisions)
    top1: float = 1.0  # on real images; top-1 of random noise is noise, so it is reported, not enforced
    enforce_random: bool = True  # int8 ranges are calibrated on real images: random inputs fall outside them


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel=1e-3, top1=1.0),
    # TF32 products keep a 10-bit mantissa (fp16's) but fp32 range and accumulation: between fp32 and fp16.
    "tf32": Tolerance(p95_rel=1e-2, top1=0.95),
    "fp16": Tolerance(p95_rel=2e-2, top1=0.95),
    "bf16": Tolerance(p95_rel=8e-2, top1=0.9),
    "int8": Tolerance(p95_rel=0.3, top1=0.9, enforce_random=False),
}


class ParityError(UserError):
    """The artifact's logits differ from eager PyTorch by more than the tolerance."""


def compare(reference: Tensor, candidate: Tensor) -> dict[str, float]:
    reference, candidate = reference.detach().float().cpu(), candidate.detach().float().cpu()
    if reference.shape != candidate.shape:
        raise ParityError(
            f"artifact returned logits of shape {tuple(candidate.shape)}, expected {tuple(reference.shape)}"
        )
    import numpy as np

    diff = (reference - candidate).abs()
    max_abs = float(diff.max())
    scale = float(reference.abs().max().clamp_min(1e-12))
    per_image = (diff.amax(dim=1) / reference.abs().amax(dim=1).clamp_min(1e-12)).numpy()
    return {
        "n": int(reference.shape[0]),
        "max_abs": max_abs,
        "max_rel": max_abs / scale,
        "p50_rel": float(np.percentile(per_image, 50)),
        "p95_rel": float(np.percentile(per_image, 95)),
        "mean_abs": float(diff.mean()),
        "top1_agreement": float((reference.argmax(1) == candidate.argmax(1)).float().mean()),
        "finite": bool(torch.isfinite(candidate).all()),
    }


def random_inputs(image_size: int, batches: tuple[int, ...] = (1, 7), seed: int = 0) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, image_size, image_size, generator=gen) for b in batches]


def check_parity(
    model: nn.Module,
    run: Callable[[Tensor], Tensor],
    precision: str,
    image_size: int,
    real_images: Tensor | None,
    max_batch: int = 256,
    label: str = "artifact",
) -> dict[str, Any]:
    """Run `run` and the eager fp32 `model` (on CPU, so TF32 never creeps into the reference) on the same inputs;
    raise ParityError over tolerance, else return the figures for the sidecar."""
    tol = TOLERANCES[precision]
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        model = copy.deepcopy(model).float().cpu()
    model.eval()
    batches = tuple(b for b in (1, 7) if b <= max_batch)
    sets: dict[str, list[Tensor]] = {"random": random_inputs(image_size, batches)}
    if real_images is not None:
        sets["real"] = [chunk for chunk in real_images.split(max(1, min(max_batch, 16)))]
    figures: dict[str, Any] = {
        "reference": "eager PyTorch fp32 on CPU",
        "tolerance": {
            "max_rel": tol.max_rel,
            "p95_rel": tol.p95_rel,
            "top1_agreement": tol.top1,
            "random_enforced": tol.enforce_random,
        },
    }
    failures = []
    for name, inputs in sets.items():
        with torch.inference_mode():
            ref = torch.cat([model(x) for x in inputs])
        got = torch.cat([run(x).float().cpu() for x in inputs])
        stats = compare(ref, got)
        stats["batches"] = [int(x.shape[0]) for x in inputs]
        figures[name] = stats
        enforced = name == "real" or tol.enforce_random
        if not stats["finite"]:
            failures.append(f"non-finite logits on {name} inputs")
        elif enforced and tol.max_rel is not None and stats["max_rel"] > tol.max_rel:
            failures.append(
                f"max relative logit difference {stats['max_rel']:.3g} > {tol.max_rel:g} on {name} inputs "
                f"(max abs {stats['max_abs']:.3g}, over by {stats['max_rel'] / tol.max_rel:.1f}x)"
            )
        elif enforced and tol.p95_rel is not None and stats["p95_rel"] > tol.p95_rel:
            failures.append(
                f"95th-percentile relative logit difference {stats['p95_rel']:.3g} > {tol.p95_rel:g} on {stats['n']} "
                f"{name} inputs (over by {stats['p95_rel'] / tol.p95_rel:.1f}x)"
            )
        if name == "real" and stats["top1_agreement"] < tol.top1:
            failures.append(
                f"top-1 agreement {stats['top1_agreement']:.1%} < {tol.top1:.0%} on {stats['n']} real images"
            )
    figures["passed"] = not failures
    if failures:
        raise ParityError(f"{label} ({precision}) fails parity with eager PyTorch: " + "; ".join(failures))
    return figures
