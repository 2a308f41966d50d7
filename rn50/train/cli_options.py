"""Bind `rn50 train`'s parsed options to a Recipe and TrainOptions, or to a torchrun relaunch: the one place the
command line meets the recipe.

An option named like a Recipe field overrides that field and one named like a TrainOptions field sets it; the few
that differ are spelled out in `recipe_overrides`. Ranges and choices are checked by the command line itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from rn50.errors import UserError, need
from rn50.launch import Launch, interrupted_exit_code, launch, under_torchrun
from rn50.recipes import Recipe, get_recipe
from rn50.train.loop import TrainOptions
from rn50.train.run import default_out

log = logging.getLogger("rn50.train")

LAUNCHER_OPTIONS = ("gpus", "nnodes", "node_rank", "rdzv_endpoint", "rdzv_timeout", "max_restarts")
MEMORY_FORMATS = {"nhwc": "channels_last", "channels_last": "channels_last", "nchw": "contiguous"}
MEMORY_FORMATS["contiguous"] = "contiguous"
# Options for a recipe field of another name or meaning (handled in recipe_overrides).
SPECIAL = {"recipe", "warmup", "memory_format", "static_loss_scale", "ema", "lr"}
_RECIPE_FIELDS = {f.name for f in dataclasses.fields(Recipe)} - {"name", "platform", "gpus", "notes"}
_RUN_FIELDS = {f.name for f in dataclasses.fields(TrainOptions)} - {"recipe", "extra", "stop_after"}


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def recipe_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe fields the given options set (None: not given)."""
    out = {k: _plain(v) for k, v in params.items() if k in _RECIPE_FIELDS and k not in SPECIAL and v is not None}
    if params.get("warmup") is not None:
        out["warmup_epochs"] = params["warmup"]
    if params.get("memory_format") is not None:
        out["memory_format"] = MEMORY_FORMATS[str(_plain(params["memory_format"])).lower()]
    if params.get("static_loss_scale") is not None:
        out.update(loss_scale=params["static_loss_scale"], dynamic_loss_scale=False)
    if params.get("ema") is not None:
        out["ema"] = params["ema"] or None  # --ema 0 turns a recipe's EMA off
    return out


def bind_recipe(params: Mapping[str, Any], world: int) -> Recipe:
    recipe = get_recipe(params["recipe"]).replace(gpus=world, **recipe_overrides(params))
    if params.get("lr") is not None:  # the peak lr of the optimizer batch, whose size the recipe now knows
        need(params["lr"] > 0, f"--lr must be > 0, got {params['lr']}")
        recipe = recipe.replace(lr_per_256=params["lr"] * 256 / recipe.global_batch)
    return recipe


@dataclass
class TrainPlan:
    """What `rn50 train` does: run `options` in this process, or relaunch it under torchrun as `launch` says."""

    options: TrainOptions
    launch: Launch | None = None

    def relaunch(self) -> int:
        """Run the relaunch; 0, or 128 + signal if it was stopped (checkpoint saved by rank 0)."""
        assert self.launch is not None
        spec = self.launch
        log.info("relaunching under torchrun: %d process(es) x %d node(s)", spec.nproc, spec.nnodes)
        result = launch(spec)
        if result.signal is not None and not result.ok:
            return interrupted_exit_code(result.signal)
        result.raise_for_failure(f"rn50 train ({spec.nproc * spec.nnodes} processes)")
        return 0


def plan_train(params: Mapping[str, Any], argv: list[str]) -> TrainPlan:
    """`params`: the parsed options; `argv`: the options as given on this command line without the launcher's
    (what a relaunch under torchrun repeats; never re-read from sys.argv)."""
    world = int(os.environ["WORLD_SIZE"]) if under_torchrun() else params["gpus"] * params["nnodes"]
    recipe = bind_recipe(params, world)
    data = params.get("data")
    if recipe.data_backend != "synthetic" and data is None:
        raise UserError(f"DATA is required with --data-backend {recipe.data_backend} (or use --data-backend synthetic)")
    need(data is None or Path(data).exists(), f"data folder not found: {data}")
    run = {k: _plain(v) for k, v in params.items() if k in _RUN_FIELDS}
    out = run.get("out")
    max_restarts = params.get("max_restarts") or 0
    if (params["gpus"] > 1 or params["nnodes"] > 1 or max_restarts > 0) and not under_torchrun():
        argv = list(argv)
        holds_run = out is not None and any((Path(out) / n).exists() for n in ("metrics.jsonl", "checkpoints"))
        if holds_run and params.get("resume") is None:
            # Here, not in the ranks: a rank's refusal would be "restarted" into resuming that other run.
            raise UserError(f"{out} already holds a run; pass --resume auto to continue it, or choose another --out")
        if out is None:  # every rank (and every restart) must write to the same folder; rank 0's name wins
            argv += ["--out", str(default_out(recipe))]
        spec = Launch(
            ["rn50", "train", *argv],
            nproc=params["gpus"],
            nnodes=params["nnodes"],
            node_rank=params["node_rank"],
            rdzv_endpoint=params.get("rdzv_endpoint"),
            rdzv_id="rn50-train",
            rdzv_timeout=params.get("rdzv_timeout") or 300,
            max_restarts=max_restarts,
        )
        spec.validate()
        return TrainPlan(TrainOptions(data=data, recipe=recipe), launch=spec)
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) if under_torchrun() else 0
    if restart > 0 and run.get("resume") is None and run.get("evaluate") is None:
        run["resume"] = "auto"  # torchrun restarted the group after a failure: continue from the last checkpoint
        from rn50.train.dist import env_rank, setup_logging

        setup_logging(env_rank()[0])
        log.info("torchrun restart %d: resuming from the run's last checkpoint (--resume auto)", restart)
    return TrainPlan(TrainOptions(recipe=recipe, **run))
