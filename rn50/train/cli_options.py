"""Turn `rn50 train` options into a Recipe and TrainOptions (or a torchrun relaunch)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rn50.errors import UserError
from rn50.launch import Launch, interrupted_exit_code, launch, under_torchrun
from rn50.recipes import get_recipe
from rn50.train.loop import TrainOptions
from rn50.train.run import default_out

log = logging.getLogger("rn50.train")

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


def relaunch(argv: list[str], spec: Launch) -> int:
    """Run `rn50 train <argv>` under torchrun; 0, or 128 + signal if it was stopped (checkpoint saved by rank 0)."""
    log.info("relaunching under torchrun: %d process(es) x %d node(s)", spec.nproc, spec.nnodes)
    result = launch(spec)
    if result.signal is not None and not result.ok:
        return interrupted_exit_code(result.signal)
    result.raise_for_failure(f"rn50 train ({spec.nproc * spec.nnodes} processes)")
    return 0


def build_options(p: dict[str, Any], argv: list[str] | None = None) -> tuple[TrainOptions, Callable[[], int] | None]:
    """`argv`: this command's options as given (no launcher options), for the relaunch under torchrun."""
    for name in ("prof", "print_freq", "max_nonfinite", "gpus", "nnodes"):
        if p.get(name) is not None and p[name] < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {p[name]}")
    if p["keep_epochs"] < 0:
        raise UserError(f"--keep-epochs must be >= 0 (0 keeps every epoch's checkpoint), got {p['keep_epochs']}")
    if p.get("checkpoint_every") is not None and p["checkpoint_every"] < 1:
        raise UserError(f"--checkpoint-every must be >= 1 (iterations), got {p['checkpoint_every']}")
    if not 0 <= p.get("max_skipped", 0.01) <= 1:
        raise UserError(f"--max-skipped is a share of the images, 0 to 1 (0.01 = 1%), got {p['max_skipped']}")
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
    max_restarts = p.get("max_restarts") or 0
    if (p["gpus"] > 1 or p["nnodes"] > 1 or max_restarts > 0) and not under_torchrun():
        argv = list(argv or [])
        holds_run = out is not None and any((Path(out) / n).exists() for n in ("metrics.jsonl", "checkpoints"))
        if holds_run and p.get("resume") is None:
            # Here, not in the ranks: a rank's refusal would be "restarted" into resuming that other run.
            raise UserError(f"{out} already holds a run; pass --resume auto to continue it, or choose another --out")
        if out is None:  # every rank (and every restart) must write to the same folder; rank 0's name wins
            argv += ["--out", str(default_out(recipe))]
        spec = Launch(
            ["rn50", "train", *argv],
            nproc=p["gpus"],
            nnodes=p["nnodes"],
            node_rank=p["node_rank"],
            rdzv_endpoint=p.get("rdzv_endpoint"),
            rdzv_id="rn50-train",
            rdzv_timeout=p.get("rdzv_timeout") or 300,
            max_restarts=max_restarts,
        )
        spec.validate()
        return TrainOptions(data=p.get("data"), recipe=recipe), lambda: relaunch(argv, spec)
    resume = p.get("resume")
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) if under_torchrun() else 0
    if restart > 0 and resume is None and p.get("evaluate") is None:
        resume = "auto"  # torchrun restarted the group after a failure: continue from the last checkpoint
        from rn50.train.dist import env_rank, setup_logging

        setup_logging(env_rank()[0])
        log.info("torchrun restart %d: resuming from the run's last checkpoint (--resume auto)", restart)
    opts = TrainOptions(
        data=p.get("data"),
        recipe=recipe,
        out=out,
        resume=resume,
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
        checkpoint_every=p.get("checkpoint_every"),
        max_skipped=p.get("max_skipped", 0.01),
    )
    return opts, None
