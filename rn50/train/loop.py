"""fit(), train_one_epoch() and evaluate(): the training loop in three plain functions."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn

from rn50.errors import UserError, need
from rn50.io import atomic_link
from rn50.recipes import Recipe
from rn50.train import dist
from rn50.train.checkpoint import (
    prune_epoch_checkpoints,
    resolve_resume,
    save_checkpoint,
    save_mid_epoch,
)
from rn50.train.run import RunDir
from rn50.train.setup import FitSetup, Start, StopFlag, TrainOptions, prepare_fit, resume_point, run_folder
from rn50.train.step import TrainState, train_step

__all__ = ["Diverged", "StopFlag", "TrainOptions", "evaluate", "fit", "train_one_epoch"]

log = logging.getLogger("rn50.train")


class Diverged(UserError):
    """A run of non-finite losses."""


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    precision: str = "fp32",
    prof: int | None = None,
    stop: StopFlag | None = None,
):
    """Mean loss, top-1 and top-5 (%) over every validation image exactly once across ranks, and the count.

    A stop request abandons the pass (the caller discards the partial figures).
    """
    from rn50.train.step import autocast_dtype

    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits, images
    dtype = autocast_dtype(precision)
    for i, (images, labels) in enumerate(loader):
        if (prof is not None and i >= prof) or (stop is not None and stop.requested):
            break
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top.eq(labels.unsqueeze(1))
        sums += torch.stack(
            [
                F.cross_entropy(logits, labels, reduction="sum").double(),
                hits[:, :1].sum().double(),
                hits.sum().double(),
                torch.tensor(float(labels.numel()), dtype=torch.float64, device=device),
            ]
        )
    if dist.is_distributed():
        reduce_device = dist.collective_device()
        sums = sums.to(reduce_device)
        torch_dist.all_reduce(sums)
    loss_sum, top1, top5, n = sums.tolist()
    n = max(n, 1.0)
    return {"val_loss": loss_sum / n, "top1": 100 * top1 / n, "top5": 100 * top5 / n, "images": int(n)}


def train_one_epoch(
    state: TrainState,
    loader,
    epoch: int,
    start_batch: int,
    run: RunDir,
    opts: TrainOptions,
    stop: StopFlag,
    progress=None,
) -> dict[str, Any]:
    """Train from batch `start_batch` of `epoch`; returns {"stopped": bool, "iteration": batches done}.

    The only host syncs are at the logging interval (loss, non-finite check, loss scale).
    """
    state.model.train()
    loader.set_epoch(epoch, start_batch)
    n_batches, world = len(loader), max(1, dist.env_rank()[1])
    accum, print_freq = state.accumulation_steps, max(1, opts.print_freq)
    task = (
        progress.add_task(f"epoch {epoch + 1}/{state.recipe.epochs}", total=n_batches, completed=start_batch, ips=0.0)
        if progress is not None
        else None
    )
    iteration, interval_steps, interval_images, data_time = start_batch, 0, 0, 0.0
    loss_sum = torch.zeros((), device=state.device)
    t_interval = t_data = t_epoch = time.perf_counter()
    epoch_images = 0
    run_task = getattr(progress, "run_task", None)
    since_save = 0
    for images, labels in loader:
        data_time += time.perf_counter() - t_data
        loss_sum += train_step(state, images, labels)
        iteration += 1
        interval_steps += 1
        interval_images += labels.shape[0]
        state.extra["iterations"] = state.extra.get("iterations", 0) + 1
        epoch_images += labels.shape[0]
        if progress is not None:
            # img/s from the first iteration: images this epoch over the time since it began (host clock, no sync)
            ips = epoch_images * world / max(time.perf_counter() - t_epoch, 1e-9)
            progress.update(task, advance=1, ips=ips)
            if run_task is not None:
                progress.update(run_task, advance=1, ips=ips)
        last_of_phase = iteration == n_batches or (opts.prof is not None and iteration - start_batch >= opts.prof)
        at_log = iteration % print_freq == 0 or last_of_phase
        if at_log:
            mean_loss = (loss_sum / interval_steps).item()  # the host sync of this interval
            worst = int(state.worst_bad_run.item())
            state.worst_bad_run.copy_(state.bad_run)
            elapsed = time.perf_counter() - t_interval
            ips = interval_images * world / elapsed
            run.log(
                {
                    "type": "train",
                    "epoch": epoch,
                    "iteration": iteration,
                    "step": state.opt_step,
                    "loss": mean_loss,
                    "lr": state.lr,
                    "img_per_s": ips,
                    "data_time": data_time,
                    "compute_time": elapsed - data_time,
                    "loss_scale": state.scaler.get_scale() if state.scaler.is_enabled() else None,
                }
            )
            if worst >= opts.max_nonfinite:
                raise Diverged(
                    f"{worst} non-finite losses in a row at epoch {epoch + 1}, iteration {iteration}: the run "
                    f"diverged; the last good checkpoint in {run.checkpoints} is intact (try a lower --lr)"
                )
            run.check_skipped({"train": loader}, opts.max_skipped)
            loss_sum.zero_()
            interval_steps, interval_images, data_time = 0, 0, 0.0
            t_interval = time.perf_counter()
        if opts.stop_after is not None and state.extra["iterations"] >= opts.stop_after:
            stop.requested = True
        # Stop only between optimizer steps (no half-accumulated gradient). The ranks agree at every step on gloo
        # (a CPU all-reduce of one number; CPU steps are long), at logging points on NCCL (no extra device sync).
        agree_now = at_log or not dist.is_distributed() or torch_dist.get_backend() == "gloo"
        if state.micro_step % accum == 0 and agree_now and stop.agreed():
            return {"stopped": True, "iteration": iteration}
        since_save += 1
        if opts.checkpoint_every and since_save >= opts.checkpoint_every and state.micro_step % accum == 0:
            if not last_of_phase:  # the epoch's end writes its own checkpoint
                save_mid_epoch(run, state, epoch, iteration)
            since_save = 0
        if last_of_phase:
            break
        t_data = time.perf_counter()
    return {"stopped": False, "iteration": iteration}


def _progress(rank: int, enabled: bool):
    from contextlib import nullcontext

    if rank != 0 or not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[ips]:.1f} img/s"),
        TextColumn("left"),
        TimeRemainingColumn(),
    )


def _gather_bad_files(loaders: list) -> list[tuple[str, str]]:
    bad = sorted({b for loader in loaders if loader is not None for b in loader.bad_files})
    if dist.is_distributed():
        parts: list = [None] * torch_dist.get_world_size()
        torch_dist.all_gather_object(parts, bad)
        bad = sorted({b for part in parts for b in part})
    return bad


def fit(opts: TrainOptions) -> dict[str, Any]:
    """Train (or only evaluate) as `opts` says, in this process; under torchrun every rank calls this."""
    rank, world, _, device = dist.init_distributed(opts.device)
    dist.setup_logging(rank)
    try:
        with StopFlag(rank) as stop:  # from here on (data, model, resume): a signal stops at the first chance
            return _fit(opts, rank, world, device, stop)
    finally:
        dist.cleanup()


def _fit(opts: TrainOptions, rank: int, world: int, device: torch.device, stop: StopFlag) -> dict[str, Any]:
    recipe = opts.recipe
    run = run_folder(opts, recipe, rank, world)
    dist.seed_everything(opts.seed, rank)
    if opts.evaluate is not None:
        return evaluate_checkpoint(opts, recipe, run, rank, world, device, stop)
    setup = prepare_fit(opts, run, rank, world, device)
    start = resume_point(opts, setup)
    extra = {"seed": opts.seed, "world_size": world, "data": str(opts.data), **opts.extra}
    run.prepare(recipe, resuming=opts.resume is not None, extra=extra)
    log.info(
        "training %s on %s x %d: %d images/epoch, %d optimizer steps/epoch, global batch %d, lr %g, precision %s",
        recipe.name,
        device.type,
        world,
        setup.train_loader.num_samples * world,
        setup.steps_per_epoch,
        recipe.global_batch,
        recipe.lr,
        setup.state.precision,
    )
    cursor, t0 = Cursor(setup, rank, start), time.perf_counter()
    with _progress(rank, opts.progress) as progress:
        if progress is not None:  # the whole run's training steps, for an ETA of the run (validation not counted)
            progress.run_task = progress.add_task(
                f"run, {recipe.epochs} epochs (train steps)", total=_run_steps(setup, opts, start), ips=0.0
            )
        batch = start.batch
        for epoch in range(start.epoch, recipe.epochs):
            if stop.agreed():  # e.g. asked while the last epoch's checkpoint was written: no step more
                cursor.stop_here(epoch, batch, "before the epoch's first step")
                break
            setup.state.extra["best_top1"] = cursor.best_top1  # for mid-epoch checkpoints
            result = train_one_epoch(setup.state, setup.train_loader, epoch, batch, run, opts, stop, progress)
            if result["stopped"]:
                cursor.stop_here(epoch, result["iteration"], "mid-epoch")
                break
            if not end_of_epoch(setup, cursor, opts, epoch, result["iteration"], stop):
                break
            batch = 0
            if opts.prof is not None:
                break
    bad = _gather_bad_files(setup.loaders())
    run.write_bad_files(bad)
    for loader in setup.loaders():
        if loader is not None:
            loader.close()
    summary = {
        "status": cursor.status,
        "out": str(run.out),
        "top1": cursor.top1,
        "best_top1": cursor.best_top1,
        "data": str(opts.data),
        "world_size": world,
        "precision": setup.state.precision,
        "train_seconds": time.perf_counter() - t0,
        "bad_files": len(bad),
        "exit_code": stop.exit_code if cursor.status == "stopped" else 0,
        "rank": rank,
    }
    run.write_report(recipe, summary, opts.report_file)
    return summary


def _run_steps(setup: FitSetup, opts: TrainOptions, start: Start) -> int:
    n = len(setup.train_loader)
    steps = n if opts.prof is None else min(n, opts.prof)
    epochs = opts.recipe.epochs
    return (epochs - start.epoch) * steps - (min(start.batch, steps) if start.epoch < epochs else 0)


@dataclass
class Cursor:
    """The run's position and verdict: status, the best and last top-1, and the point last.pth holds."""

    setup: FitSetup
    rank: int
    start: Start
    status: str = "complete"
    top1: float | None = None

    def __post_init__(self) -> None:
        self.best_top1 = self.start.best_top1
        self.saved = (self.start.epoch, self.start.batch) if self.start.path is not None else None

    def stop_here(self, epoch: int, iteration: int, where: str) -> None:
        self.status = "stopped"
        last = self.setup.run.checkpoints / "last.pth"
        if self.rank == 0 and self.saved != (epoch, iteration):
            state = self.setup.state
            save_checkpoint(
                last, state, epoch=epoch, iteration=iteration, epoch_complete=False, best_top1=self.best_top1
            )
        log.info(
            "stopped %s (epoch %d, iteration %d); %s holds it: continue with the same command and --resume auto "
            "--out %s",
            where,
            epoch + 1,
            iteration,
            last,
            self.setup.run.out,
        )


def end_of_epoch(
    setup: FitSetup, cursor: Cursor, opts: TrainOptions, epoch: int, iteration: int, stop: StopFlag
) -> bool:
    """Validation (and EMA), best top-1, the epoch checkpoint and pruning; False when a stop abandoned validation."""
    state, run, val_loader = setup.state, setup.run, setup.val_loader
    if val_loader is not None:
        # The unwrapped model: ranks may hold one batch more or less, and DDP forward is a collective.
        record: dict[str, Any] = {"type": "val", "epoch": epoch + 1}
        record.update(evaluate(state.module, val_loader, state.device, state.precision, opts.prof, stop))
        if state.ema is not None and not stop.requested:
            ema = evaluate(state.ema.module, val_loader, state.device, state.precision, opts.prof, stop)
            record.update(ema_top1=ema["top1"], ema_top5=ema["top5"])
        if stop.agreed():  # validation abandoned: resuming runs it again, then the next epoch
            cursor.stop_here(epoch, iteration, "during validation")
            return False
        cursor.top1 = record["top1"]
        log.info(
            "epoch %d: val loss %.4f, top-1 %.2f%%, top-5 %.2f%% (%d images)",
            epoch + 1,
            record["val_loss"],
            cursor.top1,
            record["top5"],
            record["images"],
        )
        run.log(record)
    top1 = cursor.top1
    improved = top1 is not None and (cursor.best_top1 is None or top1 > cursor.best_top1)
    cursor.best_top1 = top1 if improved else cursor.best_top1
    if cursor.rank == 0:
        ckpt = dict(epoch=epoch, iteration=iteration, epoch_complete=True, best_top1=cursor.best_top1, top1=top1)
        epoch_file = run.checkpoints / f"epoch-{epoch + 1:03d}.pth"
        save_checkpoint(epoch_file, state, **ckpt)
        cursor.saved = (epoch + 1, 0)
        atomic_link(epoch_file, run.checkpoints / "last.pth")
        if improved:
            atomic_link(epoch_file, run.checkpoints / "best.pth")
        prune_epoch_checkpoints(run.checkpoints, opts.keep_epochs)
    run.write_bad_files(_gather_bad_files(setup.loaders()))
    run.check_skipped({"train": setup.train_loader, "val": val_loader}, opts.max_skipped)
    return True


def evaluate_checkpoint(
    opts: TrainOptions, recipe: Recipe, run: RunDir, rank: int, world: int, device: torch.device, stop: StopFlag
) -> dict[str, Any]:
    """--evaluate: top-1/top-5 of any checkpoint the weights loader accepts (rn50, torchvision, NVIDIA)."""
    from rn50.data.loaders import make_loader
    from rn50.train.step import memory_format
    from rn50.weights import load_model

    path = opts.evaluate
    if path == "auto":
        path = str(resolve_resume("auto", run.out) or run.checkpoints / "best.pth")
    need(opts.data is not None or recipe.data_backend == "synthetic", "--evaluate needs DATA (a folder with val/)")
    model = load_model(path)
    recipe = recipe.replace(num_classes=model.num_classes)
    model = model.to(device=device, memory_format=memory_format(recipe))
    loader = make_loader(opts.data, "val", recipe, recipe.data_backend, device, rank, world, opts.seed)
    from rn50.train.step import effective_precision

    metrics = evaluate(model, loader, device, effective_precision(recipe.precision, device), opts.prof, stop)
    loader.close()
    if stop.agreed():
        log.info("stopped: the evaluation of %s was abandoned", path)
        return {"status": "stopped", "out": str(run.out), "exit_code": stop.exit_code}
    log.info("%s: top-1 %.2f%%, top-5 %.2f%% on %d images", path, metrics["top1"], metrics["top5"], metrics["images"])
    if opts.out is not None and rank == 0:
        run.out.mkdir(parents=True, exist_ok=True)
        run.log({"type": "evaluate", "checkpoint": str(path), **metrics})
    return {"status": "evaluated", "checkpoint": str(path), **metrics}
