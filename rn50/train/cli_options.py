"""Turn `rn50 train` options into a Recipe and TrainOptions (or a torchrun relaunch)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rn50.errors import UserError
from rn50.recipes import get_recipe
from rn50.train.loop import TrainOptions, relaunch, under_torchrun
from rn50.train.run import default_out

MEMORY_FORMATS = {
    "nhwc": "channels_last",
    "channels_last": "channels_last",
    "nchw": "contiguous",
    "contiguous": "contiguous",
}
# option name -> recipe field, for options that override a field one to one
FIELDS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "optimizer_batch_size": "optimizer_batch_size",
    "warmup": "warmup_epochs",
    "lr_schedule": "lr_schedule",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "label_smoothing": "label_smoothing",
    "mixup": "mixup",
    "precision": "precision",
    "data_backend": "data_backend",
    "workers": "workers",
    "image_size": "image_size",
    "crop_area": "crop_area",
    "crop_ratio": "crop_ratio",
    "hflip": "hflip",
    "num_classes": "num_classes",
    "ema": "ema",
    "zero_init_last": "zero_init_last",
}


def build_options(p: dict[str, Any]) -> tuple[TrainOptions, Callable[[], int] | None]:
    for name in ("prof", "print_freq", "max_nonfinite", "gpus", "nnodes"):
        if p.get(name) is not None and p[name] < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {p[name]}")
    if p["keep_epochs"] < 0:
        raise UserError(f"--keep-epochs must be >= 0 (0 keeps every epoch's checkpoint), got {p['keep_epochs']}")
    recipe = get_recipe(p["recipe"])
    overrides = {field: p[opt] for opt, field in FIELDS.items() if p.get(opt) is not None}
    if p.get("memory_format") is not None:
        key = p["memory_format"].lower()
        if key not in MEMORY_FORMATS:
            raise UserError(f"--memory-format must be nhwc or nchw, not {p['memory_format']!r}")
        overrides["memory_format"] = MEMORY_FORMATS[key]
    if p.get("static_loss_scale") is not None:
        overrides.update(loss_scale=p["static_loss_scale"], dynamic_loss_scale=False)
    if p.get("ema") == 0:
        overrides.pop("ema")
        recipe = recipe.replace(ema=None) if recipe.ema else recipe
    world = int(os.environ["WORLD_SIZE"]) if under_torchrun() else p["gpus"] * p["nnodes"]
    recipe = recipe.replace(gpus=world, **overrides)
    if p.get("lr") is not None:
        if p["lr"] <= 0:
            raise UserError(f"--lr must be > 0, got {p['lr']}")
        recipe = recipe.replace(lr_per_256=p["lr"] * 256 / recipe.global_batch)
    if recipe.data_backend != "synthetic" and p.get("data") is None:
        raise UserError(f"DATA is required with --data-backend {recipe.data_backend} (or use --data-backend synthetic)")
    if p.get("data") is not None and not Path(p["data"]).exists():
        raise UserError(f"data folder not found: {p['data']}")
    out = p.get("out")
    if (p["gpus"] > 1 or p["nnodes"] > 1) and not under_torchrun():
        argv = sys.argv[1:]
        if out is None:  # every rank (and node) must write to the same folder
            argv += ["--out", str(default_out(recipe))]
        return TrainOptions(data=p.get("data"), recipe=recipe), lambda: relaunch(
            argv, p["gpus"], p["nnodes"], p["node_rank"], p.get("rdzv_endpoint")
        )
    opts = TrainOptions(
        data=p.get("data"),
        recipe=recipe,
        out=out,
        resume=p.get("resume"),
        evaluate=p.get("evaluate"),
        prof=p.get("prof"),
        training_only=p["training_only"],
        print_freq=p["print_freq"],
        seed=p["seed"],
        compile=p["compile"],
        device=p["device"],
        report_file=p.get("report_file"),
        max_nonfinite=p["max_nonfinite"],
        progress=p["progress"],
        keep_epochs=p["keep_epochs"],
    )
    return opts, None
