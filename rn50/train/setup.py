"""What a run needs before its first step: the options, the stop flag, the run folder, loaders and state, and where
to resume. `prepare_fit` and `resume_point` are the first two of the loop's three phases (rn50.train.loop)."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist

from rn50.errors import UserError
from rn50.recipes import Recipe
from rn50.train import dist
from rn50.train.checkpoint import load_checkpoint, resolve_resume
from rn50.train.run import RunDir, default_out
from rn50.train.step import TrainState, build_state

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
        flag = torch.tensor([int(self.requested)], device=dist.collective_device())
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        return bool(flag.item())


@dataclass
class FitSetup:
    run: RunDir
    train_loader: Any
    val_loader: Any | None
    state: TrainState
    steps_per_epoch: int

    def loaders(self) -> list:
        return [self.train_loader, self.val_loader]


def run_folder(opts: TrainOptions, recipe: Recipe, rank: int, world: int) -> RunDir:
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
    return RunDir(out, writer=rank == 0)


def prepare_fit(opts: TrainOptions, run: RunDir, rank: int, world: int, device: torch.device) -> FitSetup:
    """Loaders and the training state, after checking that the batch fits and the data is there."""
    from rn50.data.loaders import make_loader
    from rn50.memory import check_fits

    recipe = opts.recipe
    if opts.data is None and recipe.data_backend != "synthetic":
        raise UserError("DATA is required (an ImageNet-layout folder with train/ and val/)")
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
    return FitSetup(run, train_loader, val_loader, state, steps_per_epoch)


@dataclass
class Start:
    """Where the run starts: epoch and iteration (0, 0 unless resumed), the best top-1 so far, the checkpoint."""

    epoch: int = 0
    batch: int = 0
    best_top1: float | None = None
    path: Path | None = None


def resume_point(opts: TrainOptions, setup: FitSetup) -> Start:
    """Load --resume (a path or `auto`) into the state and say where the run continues."""
    path = resolve_resume(opts.resume, setup.run.out)
    if path is None:
        return Start()
    meta = load_checkpoint(path, setup.state)
    start = Start(meta["epoch"], meta["iteration"], meta["best_top1"], path)
    if meta["epoch_complete"]:
        start.epoch, start.batch = start.epoch + 1, 0
    saved = meta.get("recipe") or {}
    global_batch = opts.recipe.global_batch
    if saved.get("global_batch") not in (None, global_batch):
        log.warning("resuming with optimizer batch %s, the checkpoint used %s", global_batch, saved.get("global_batch"))
    log.info("resumed from %s at epoch %d, iteration %d", path, start.epoch + 1, start.batch)
    return start
