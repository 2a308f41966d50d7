"""fit(), train_one_epoch() and evaluate(): the training loop in three plain functions."""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn

from rn50.errors import UserError
from rn50.io import atomic_link
from rn50.recipes import Recipe
from rn50.train import dist
from rn50.train.checkpoint import (
    load_checkpoint,
    prune_epoch_checkpoints,
    resolve_resume,
    save_checkpoint,
    save_mid_epoch,
)
from rn50.train.run import RunDir, default_out
from rn50.train.step import TrainState, build_state, train_step

log = logging.getLogger("rn50.train")


@dataclass
class TrainOptions:
    data: Path | None
    recipe: Recipe
    out: Path | None = None
    resume: str | None = None  # a checkpoint path or "auto"
    evaluate: str | None = None  # a checkpoint to evaluate (any format the weights loader reads), or "auto"
    prof: int | None = None  # stop each phase (train, val) after this many iterations
    training_only: bool = False
    print_freq: int = 10
    seed: int = 0
    compile: bool = False
    device: str = "auto"
    report_file: Path | None = None
    max_nonfinite: int = 10  # consecutive non-finite losses that stop the run
    stop_after: int | None = None  # stop like SIGTERM after this many iterations of this process (tests)
    progress: bool = True
    keep_epochs: int = 3  # newest epoch-NNN.pth files kept; 0 keeps every one
    checkpoint_every: int | None = None  # also save last.pth every N iterations within an epoch
    max_skipped: float = 0.01  # stop once undecodable files pass this share of a split
    extra: dict[str, Any] = field(default_factory=dict)


class Diverged(UserError):
    """A run of non-finite losses."""


class StopFlag:
    """Set by SIGTERM/SIGINT: finish the current step (or abandon validation), save a checkpoint, exit 128 + signal.

    The handler only sets the flag and says so at once on stderr (rank 0), so a checkpoint being written is finished,
    never torn; more signals (torchrun forwarding the one the group got) change nothing.
    """

    def __init__(self, rank: int = 0) -> None:
        self.requested = False
        self.signum: int | None = None
        self.rank = rank
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread): no handler
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        self.requested = True
        self.signum = self.signum or signum
        if first and self.rank == 0:  # os.write: no lock a signal handler could deadlock on
            name = signal.Signals(signum).name
            os.write(2, f"rn50: {name}: stopping after the current step; saving a checkpoint\n".encode())

    @property
    def exit_code(self) -> int:
        from rn50.launch import interrupted_exit_code

        return interrupted_exit_code(self.signum or signal.SIGTERM)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def agreed(self) -> bool:
        """True if any rank was asked to stop (all ranks must stop at the same step)."""
        if not dist.is_distributed():
            return self.requested
        flag = torch.tensor([int(self.requested)], device=_collective_device())
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        return bool(flag.item())


def _collective_device() -> torch.device:
    if torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


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
        reduce_device = _collective_device()
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
    from rn50.data.loaders import make_loader

    recipe = opts.recipe
    if recipe.gpus != world:  # the world size is bound once, with the options (rn50.train.cli_options.bind_recipe)
        raise UserError(
            f"the recipe is for {recipe.gpus} process(es) but this run has {world}: build it with "
            f"recipe.replace(gpus={world}) (rn50 train sets it from --gpus x --nnodes)"
        )
    out = opts.out or default_out(recipe)
    if dist.is_distributed():  # every rank must use rank 0's folder name
        holder = [str(out)]
        torch_dist.broadcast_object_list(holder, src=0)
        out = Path(holder[0])
    run = RunDir(out, writer=rank == 0)
    dist.seed_everything(opts.seed, rank)
    if opts.evaluate is not None:
        return evaluate_checkpoint(opts, recipe, run, rank, world, device, stop)
    if opts.data is None and recipe.data_backend != "synthetic":
        raise UserError("DATA is required (an ImageNet-layout folder with train/ and val/)")
    from rn50.memory import check_fits

    # Before any memory is taken: one line naming the batch that fits (a dgx1 recipe on CPU took 23.4 of 24 GB).
    on_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    check_fits(recipe.batch_size, recipe.image_size, device.type, "train", on_node, option="--batch-size")
    loader_args = dict(rank=rank, world_size=world, seed=opts.seed)
    train_loader = make_loader(opts.data, "train", recipe, recipe.data_backend, device, **loader_args)
    val_loader = None
    if not opts.training_only:
        if opts.data is not None and not (Path(opts.data) / "val").is_dir():
            raise UserError(f"{opts.data} has no val/ folder; add one or pass --training-only")
        val_loader = make_loader(opts.data, "val", recipe, recipe.data_backend, device, **loader_args)
    steps_per_epoch = len(train_loader) // recipe.accumulation_steps
    if steps_per_epoch == 0:
        raise UserError(
            f"{train_loader.num_samples} training images per rank is less than one optimizer batch "
            f"({recipe.global_batch}); lower --batch-size or --optimizer-batch-size"
        )
    state = build_state(
        recipe, device, world > 1, steps_per_epoch=steps_per_epoch, compile=opts.compile, seed=opts.seed, rank=rank
    )
    resume_path = resolve_resume(opts.resume, out)
    start_epoch, start_batch, best_top1 = 0, 0, None
    if resume_path is not None:
        meta = load_checkpoint(resume_path, state)
        start_epoch, start_batch, best_top1 = meta["epoch"], meta["iteration"], meta["best_top1"]
        if meta["epoch_complete"]:
            start_epoch, start_batch = start_epoch + 1, 0
        saved = meta.get("recipe") or {}
        if saved.get("global_batch") not in (None, recipe.global_batch):
            log.warning(
                "resuming with optimizer batch %s, the checkpoint used %s",
                recipe.global_batch,
                saved.get("global_batch"),
            )
        log.info("resumed from %s at epoch %d, iteration %d", resume_path, start_epoch + 1, start_batch)
    run.prepare(
        recipe,
        resuming=opts.resume is not None,
        extra={"seed": opts.seed, "world_size": world, "data": str(opts.data), **opts.extra},
    )
    log.info(
        "training %s on %s x %d: %d images/epoch, %d optimizer steps/epoch, global batch %d, lr %g, precision %s",
        recipe.name,
        device.type,
        world,
        train_loader.num_samples * world,
        steps_per_epoch,
        recipe.global_batch,
        recipe.lr,
        state.precision,
    )
    status, top1, t0 = "complete", None, time.perf_counter()
    saved = (start_epoch, start_batch) if resume_path is not None else None  # the point last.pth holds

    def stop_here(epoch: int, iteration: int, where: str) -> None:
        nonlocal status
        status = "stopped"
        if rank == 0 and saved != (epoch, iteration):
            save_checkpoint(
                run.checkpoints / "last.pth",
                state,
                epoch=epoch,
                iteration=iteration,
                epoch_complete=False,
                best_top1=best_top1,
            )
        log.info(
            "stopped %s (epoch %d, iteration %d); %s holds it: continue with the same command and --resume auto "
            "--out %s",
            where,
            epoch + 1,
            iteration,
            run.checkpoints / "last.pth",
            out,
        )

    with _progress(rank, opts.progress) as progress:
        if progress is not None:  # the whole run's training steps, for an ETA of the run (validation not counted)
            n = len(train_loader)
            steps = n if opts.prof is None else min(n, opts.prof)
            total = (recipe.epochs - start_epoch) * steps - (
                min(start_batch, steps) if start_epoch < recipe.epochs else 0
            )
            progress.run_task = progress.add_task(f"run, {recipe.epochs} epochs (train steps)", total=total, ips=0.0)
        for epoch in range(start_epoch, recipe.epochs):
            if stop.agreed():  # e.g. asked while the last epoch's checkpoint was written: no step more
                stop_here(epoch, start_batch, "before the epoch's first step")
                break
            state.extra["best_top1"] = best_top1  # for mid-epoch checkpoints
            result = train_one_epoch(state, train_loader, epoch, start_batch, run, opts, stop, progress)
            if result["stopped"]:
                stop_here(epoch, result["iteration"], "mid-epoch")
                break
            record: dict[str, Any] = {"type": "val", "epoch": epoch + 1}
            if val_loader is not None:
                # The unwrapped model: ranks may hold one batch more or less, and DDP forward is a collective.
                record.update(evaluate(state.module, val_loader, device, state.precision, opts.prof, stop))
                if state.ema is not None and not stop.requested:
                    ema = evaluate(state.ema.module, val_loader, device, state.precision, opts.prof, stop)
                    record.update(ema_top1=ema["top1"], ema_top5=ema["top5"])
                if stop.agreed():  # validation abandoned: resuming runs it again, then the next epoch
                    stop_here(epoch, result["iteration"], "during validation")
                    break
                top1 = record["top1"]
                log.info(
                    "epoch %d: val loss %.4f, top-1 %.2f%%, top-5 %.2f%% (%d images)",
                    epoch + 1,
                    record["val_loss"],
                    top1,
                    record["top5"],
                    record["images"],
                )
                run.log(record)
            improved = top1 is not None and (best_top1 is None or top1 > best_top1)
            best_top1 = top1 if improved else best_top1
            if rank == 0:
                ckpt = dict(
                    epoch=epoch, iteration=result["iteration"], epoch_complete=True, best_top1=best_top1, top1=top1
                )
                epoch_file = run.checkpoints / f"epoch-{epoch + 1:03d}.pth"
                save_checkpoint(epoch_file, state, **ckpt)
                saved = (epoch + 1, 0)
                atomic_link(epoch_file, run.checkpoints / "last.pth")
                if improved:
                    atomic_link(epoch_file, run.checkpoints / "best.pth")
                prune_epoch_checkpoints(run.checkpoints, opts.keep_epochs)
            run.write_bad_files(_gather_bad_files([train_loader, val_loader]))
            run.check_skipped({"train": train_loader, "val": val_loader}, opts.max_skipped)
            start_batch = 0
            if opts.prof is not None:
                break
    bad = _gather_bad_files([train_loader, val_loader])
    run.write_bad_files(bad)
    for loader in (train_loader, val_loader):
        if loader is not None:
            loader.close()
    summary = {
        "status": status,
        "out": str(out),
        "top1": top1,
        "best_top1": best_top1,
        "data": str(opts.data),
        "world_size": world,
        "precision": state.precision,
        "train_seconds": time.perf_counter() - t0,
        "bad_files": len(bad),
        "exit_code": stop.exit_code if status == "stopped" else 0,
        "rank": rank,
    }
    run.write_report(recipe, summary, opts.report_file)
    return summary


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
    if opts.data is None and recipe.data_backend != "synthetic":
        raise UserError("--evaluate needs DATA (a folder with val/)")
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
