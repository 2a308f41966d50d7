"""One series of bench infer (a backend at a precision): its build (compile/export/engine timed apart), the eager fp32
reference on real images, and its top-1 agreement with that reference."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rn50.bench.infer.config import InferConfig
from rn50.bench.runtimes import Options, Runtime, Skip, is_oom, make_runtime
from rn50.bench.stop import Interrupted
from rn50.errors import UserError, first_line
from rn50.export.formats import get_format
from rn50.export.runner import math_mode, math_of

log = logging.getLogger("rn50.bench.infer")


def reference_top1(model: torch.nn.Module, eval_dir: Path, cfg: InferConfig, opts: Options) -> tuple[Any, Any]:
    """Real images and the eager fp32 top-1 on them: what every series' top-1 agreement is measured against."""
    from rn50.data.transforms import load_eval_images

    try:
        images = load_eval_images(eval_dir, cfg.agreement_images, cfg.image_size)
    except FileNotFoundError as e:
        raise UserError(f"--images: {e}") from None
    ref = make_runtime("eager", model, "fp32", Options(**{**asdict(opts), "cuda_graphs": False}))
    ref.build()
    with math_mode("fp32", opts.cuda):
        top1 = _infer_all(ref, images, cfg.batches).argmax(1)
    del ref
    return images, top1


def _infer_all(rt: Runtime, images: torch.Tensor, batches: list[int]) -> torch.Tensor:
    # A batch size the sweep already ran, so compiled backends need no new shape.
    chunk = max([b for b in batches if b <= 64] or [min(batches)])
    return torch.cat([rt.infer(images[i : i + chunk]) for i in range(0, len(images), chunk)])


def build_series(
    backend: str, precision: str, model: torch.nn.Module, opts: Options, cfg: InferConfig, artifact: Path | None
) -> tuple[dict[str, Any], Runtime | None]:
    """Build one series' runtime (compile/export/engine build timed apart): (series record, runtime or None)."""
    label = f"{backend} {precision}"
    use_artifact = artifact if precision == "artifact" else None
    rt = make_runtime(backend, model, "fp32" if use_artifact else precision, opts, artifact=use_artifact)
    if use_artifact is not None:
        rt.precision = "artifact"
    series: dict[str, Any] = {"backend": backend, "precision": precision, "math": math_of(precision)}
    series["layout"] = rt.layout
    try:
        rt.check()
        with math_mode(precision, opts.cuda):
            rt.build()
    except Skip as e:
        series.update(status="skipped", reason=str(e))
        log.warning("%s skipped: %s", label, e)
        return series, None
    except Interrupted:
        raise
    except Exception as e:
        if opts.cuda and is_oom(e):
            series.update(status="oom", reason=first_line(e, 300))
        elif isinstance(e, UserError):  # already one line saying what is wrong
            series.update(status="error", reason=first_line(e, 300))
        else:
            series.update(status="error", reason=f"{type(e).__name__}: {first_line(e, 300)}")
        log.debug("%s failed to build: %s", label, series["reason"])  # printed with the table, and exits non-zero
        return series, None
    if use_artifact is not None:
        series["precision"] = rt.precision = str(rt.info.get("precision", "artifact"))
        series["math"] = math_of(rt.precision)
        rt.name = get_format(str(rt.info["format"])).runtime if rt.info.get("format") else backend
        series["backend"] = rt.name
    series.update(status="ok", build_s=round(rt.build_s, 3), **rt.info)
    if cfg.cuda_graphs and not rt.graphs_supported:
        series["cuda_graphs"] = "not supported by this backend: timed without"
    return series, rt


def agreement(
    series: dict[str, Any], rt: Runtime, reference: tuple[Any, Any], cfg: InferConfig, opts: Options, rows: list
) -> None:
    """Top-1 agreement with eager fp32 on the real images, after the timed sweep (compiled backends reuse shapes)."""
    try:
        with math_mode(series["precision"], opts.cuda):
            top1 = _infer_all(rt, reference[0], cfg.batches).argmax(1)
        series["top1_agreement"] = float((top1 == reference[1]).float().mean())
        series["agreement_n"] = len(top1)
        for row in rows:
            if (row.get("backend"), row.get("precision")) == (series["backend"], series["precision"]):
                row["top1_agreement"] = series["top1_agreement"]
    except Interrupted:
        raise
    except Exception as e:  # agreement is reported beside the speed; its failure must not hide the speed
        series["agreement_error"] = f"{type(e).__name__}: {first_line(e, 300)}"
