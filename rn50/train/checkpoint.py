"""Training checkpoints: everything needed to continue at the exact iteration, written atomically.

The model is saved unwrapped (no `module.` / `_orig_mod.` prefixes), so any rn50 tool or torchvision loads it.
Files are read back only through `rn50.weights.read_checkpoint` (weights_only=True).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rn50.errors import UserError, first_line, need
from rn50.io import atomic_torch_save
from rn50.train.step import TrainState
from rn50.weights import CHECKPOINT_FORMAT, check_compatible, normalize_keys, read_checkpoint

log = logging.getLogger("rn50.train")


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in types that weights_only loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "gauss": cached,
            "has_gauss": has_gauss,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def save_checkpoint(
    path: str | os.PathLike,
    state: TrainState,
    *,
    epoch: int,
    iteration: int,
    epoch_complete: bool,
    best_top1: float | None,
    top1: float | None = None,
) -> None:
    """`epoch` is the epoch the run is in; `iteration` the batches of it already trained (rank-local count)."""
    from rn50.version import __version__

    obj = {
        "format": CHECKPOINT_FORMAT,
        "rn50_version": __version__,
        "model": state.module.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict(),
        "schedule": {"opt_step": state.opt_step, "micro_step": state.micro_step, **vars(state.schedule)},
        "epoch": epoch,
        "iteration": iteration,
        "epoch_complete": epoch_complete,
        "best_top1": best_top1,
        "top1": top1,
        "recipe": state.recipe.to_dict(),
        "rng": rng_state(),
    }
    if state.mixup is not None:
        obj["mixup"] = state.mixup.state_dict()
    if state.ema is not None:
        obj["ema"] = {k.removeprefix("module."): v for k, v in state.ema.state_dict().items() if k != "n_averaged"}
        obj["ema_n_averaged"] = state.ema.n_averaged
    atomic_torch_save(obj, path)


def load_checkpoint(path: str | os.PathLike, state: TrainState) -> dict[str, Any]:
    """Restore `state` from an rn50 training checkpoint; returns its bookkeeping (epoch, iteration, ...)."""
    obj = read_checkpoint(path)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT or "optimizer" not in obj:
        raise UserError(
            f"{path} is not an rn50 training checkpoint (no optimizer state); "
            "to start from its weights use --evaluate, or train from scratch"
        )
    weights = normalize_keys(obj["model"])
    fc, ours = weights.get("fc.weight"), state.module.state_dict().get("fc.weight")
    if fc is not None and ours is not None and tuple(fc.shape) != tuple(ours.shape):
        raise UserError(
            f"{path} has {fc.shape[0]} classes (fc.weight {tuple(fc.shape)}) but this run's model has {ours.shape[0]} "
            f"(fc.weight {tuple(ours.shape)}); pass --num-classes {fc.shape[0]} to resume it"
        )
    try:
        check_compatible(weights, state.module)
    except UserError as e:
        raise UserError(f"{path} is not this run's model: {e}") from None
    try:
        state.module.load_state_dict(weights, strict=True)
        state.optimizer.load_state_dict(obj["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(
            f"{path} does not fit this recipe's model/optimizer ({first_line(e)}); check --recipe"
        ) from None
    if obj.get("scaler"):
        state.scaler.load_state_dict(obj["scaler"])
    state.opt_step = int(obj["schedule"]["opt_step"])
    state.micro_step = int(obj["schedule"]["micro_step"])
    if state.mixup is not None and "mixup" in obj:
        state.mixup.load_state_dict(obj["mixup"])
    if state.ema is not None and "ema" in obj:
        ema_sd = {f"module.{k}": v for k, v in obj["ema"].items()}
        ema_sd["n_averaged"] = obj.get("ema_n_averaged", torch.tensor(1))
        state.ema.load_state_dict(ema_sd)
    if "rng" in obj:
        set_rng_state(obj["rng"])
    return {k: obj.get(k) for k in ("epoch", "iteration", "epoch_complete", "best_top1", "recipe")}


def resolve_resume(resume: str | None, out: Path) -> Path | None:
    """`auto`: the run directory's last checkpoint if there is one (else start fresh); a path: that file."""
    if resume is None:
        return None
    if resume == "auto":
        last = Path(out) / "checkpoints" / "last.pth"
        if last.exists():
            return last
        log.info("--resume auto: no %s yet, starting a new run", last)
        return None
    path = Path(resume)
    need(path.is_file(), f"--resume {resume}: no such checkpoint file (use a path or `auto`)")
    return path


def prune_epoch_checkpoints(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` epoch-NNN.pth files (0: keep all); last.pth and best.pth stay intact.

    They are hard links (or copies) of an epoch file, so removing the epoch's name leaves their data in place.
    """
    if keep <= 0:
        return []
    epochs = sorted(p for p in Path(folder).glob("epoch-*.pth") if p.stem.removeprefix("epoch-").isdigit())
    removed = epochs[:-keep]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def save_mid_epoch(run, state: TrainState, epoch: int, iteration: int) -> None:
    """`--checkpoint-every`: last.pth now, mid-epoch, so a kill loses at most that many iterations (rank 0 writes).

    It replaces last.pth (a new file, atomically); the epoch-NNN.pth file last.pth was linked to stays intact.
    """
    if not run.writer:
        return
    save_checkpoint(
        run.checkpoints / "last.pth",
        state,
        epoch=epoch,
        iteration=iteration,
        epoch_complete=False,
        best_top1=state.extra.get("best_top1"),
    )
    log.debug("mid-epoch checkpoint at epoch %d, iteration %d", epoch + 1, iteration)
