"""Trainer overhead: img/s of the real `train_one_epoch` beside a bare loop doing the same work, in interleaved rounds.

    python benchmarks/trainer_overhead.py --device cpu                 # sample-cpu recipe, 64 px, batch 16
    python benchmarks/trainer_overhead.py --device cuda --recipe dgxa100-fp16-90 --batch-size 256 --image-size 224

Both loops are built by `build_state` from the same recipe and seed, so they hold the same model, memory format,
optimizer (param groups, momentum, weight decay), lr schedule, loss (label smoothing) and loss scaler, and both read
the same synthetic batch. Before timing, a check runs both for a few steps from the same initial weights and
requires bitwise-equal weights after: the bare loop does exactly the trainer's arithmetic, so what differs in time is
the trainer's bookkeeping (non-finite tracking, logging, metrics.jsonl, the stop flag), and a negative overhead
beyond the rounds' spread cannot be a property of the code.

Timing: warmup excluded; then `rounds` rounds, each running the bare loop and the trainer for `iters` iterations,
the order swapped every round; the device is synchronised before each clock read. Overhead = median over rounds of
(trainer time / bare time) - 1, with its min and max. Flags as `rn50 bench` prints them (short window, unstable
rounds, busy machine). Writes JSON with `--json PATH`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rn50.bench.timing import LoadWatch, load_flags, ratio_stats, spread_flag, window_flags
from rn50.data.synthetic import SyntheticLoader
from rn50.recipes import Recipe, get_recipe
from rn50.train.loop import StopFlag, TrainOptions, train_one_epoch
from rn50.train.optim import set_lr
from rn50.train.run import RunDir
from rn50.train.step import TrainState, build_state

# What the trainer needs and the bare loop leaves out would make the comparison unfair: refused, not guessed.
UNSUPPORTED = (("mixup", "mixup"), ("ema", "EMA"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_recipe(name: str, device: torch.device, **overrides: Any) -> Recipe:
    recipe = get_recipe(name).replace(gpus=1, data_backend="synthetic", **{k: v for k, v in overrides.items() if v})
    for field, what in UNSUPPORTED:
        if getattr(recipe, field):
            raise SystemExit(
                f"trainer_overhead: recipe {recipe.name} uses {what}; the bare loop has none: pick another"
            )
    if recipe.accumulation_steps != 1:
        raise SystemExit("trainer_overhead: gradient accumulation is not in the bare loop; use one optimizer batch")
    return recipe


def new_state(recipe: Recipe, device: torch.device, steps: int) -> TrainState:
    torch.manual_seed(0)  # the same initial weights for both loops
    return build_state(recipe, device, False, steps_per_epoch=steps)


def bare_steps(state: TrainState, loader: SyntheticLoader) -> None:
    """The minimum around the same arithmetic: lr from the schedule, forward, loss, backward, scaled SGD step."""
    recipe, model, opt, scaler = state.recipe, state.model, state.optimizer, state.scaler
    for images, labels in loader:
        set_lr(opt, state.schedule.lr_at(state.opt_step))
        with state.autocast():
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        state.opt_step += 1


class Trainer:
    """The real `train_one_epoch`, each call one epoch of `len(loader)` batches (progress bar off, metrics written)."""

    def __init__(self, state: TrainState, print_freq: int) -> None:
        self.state, self.epoch = state, 0
        self._tmp = tempfile.TemporaryDirectory(prefix="rn50-overhead-")
        self.run = RunDir(Path(self._tmp.name), writer=True)
        self.opts = TrainOptions(data=None, recipe=state.recipe, print_freq=print_freq, progress=False)

    def __call__(self, loader: SyntheticLoader) -> None:
        with StopFlag() as stop:
            train_one_epoch(self.state, loader, self.epoch, 0, self.run, self.opts, stop)
        self.epoch += 1

    def close(self) -> None:
        self._tmp.cleanup()


def same_work(
    recipe: Recipe, device: torch.device, steps: int = 3, print_freq: int = 10, bare_recipe: Recipe | None = None
) -> bool:
    """Both loops from the same initial weights over the same `steps` batches: bitwise-equal weights after?
    (`bare_recipe` gives the bare loop another recipe: how a test shows the check can fail.)"""
    bare, ours = new_state(bare_recipe or recipe, device, steps), new_state(recipe, device, steps)
    bare_steps(bare, SyntheticLoader(recipe, device, batches=steps))
    trainer = Trainer(ours, print_freq)
    try:
        trainer(SyntheticLoader(recipe, device, batches=steps))
    finally:
        trainer.close()
    a, b = bare.module.state_dict(), ours.module.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def measure(
    recipe: Recipe, device: torch.device, iters: int, warmup: int, rounds: int, print_freq: int
) -> dict[str, Any]:
    total = warmup + rounds * iters
    bare, trainer = new_state(recipe, device, total), Trainer(new_state(recipe, device, total), print_freq)
    loader = SyntheticLoader(recipe, device, batches=iters)
    warm = SyntheticLoader(recipe, device, batches=max(1, warmup))
    runs = {"bare": lambda: bare_steps(bare, loader), "trainer": lambda: trainer(loader)}
    try:
        bare_steps(bare, warm)
        trainer(warm)
        seconds: dict[str, list[float]] = {"bare": [], "trainer": []}
        for r in range(rounds):
            for name in ("bare", "trainer") if r % 2 == 0 else ("trainer", "bare"):
                _sync(device)
                t0 = time.perf_counter()
                runs[name]()
                _sync(device)
                seconds[name].append(time.perf_counter() - t0)
    finally:
        trainer.close()
    stats = ratio_stats([t / b for t, b in zip(seconds["trainer"], seconds["bare"], strict=True)])
    images = iters * recipe.batch_size
    return {
        "overhead": stats["ratio"] - 1,
        "overhead_min": stats["ratio_min"] - 1,
        "overhead_max": stats["ratio_max"] - 1,
        "stats": stats,
        "bare_img_s": [images / s for s in seconds["bare"]],
        "trainer_img_s": [images / s for s in seconds["trainer"]],
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="sample-cpu")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--precision", default=None)
    p.add_argument("--iters", type=int, default=10, help="iterations per loop per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--print-freq", type=int, default=10, help="the trainer's logging interval (its default: 10)")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    a = p.parse_args(argv)
    if min(a.iters, a.rounds, a.batch_size) < 1 or a.warmup < 0:
        p.error("--iters, --rounds and --batch-size must be >= 1, --warmup >= 0")
    device = torch.device(a.device)
    recipe = make_recipe(a.recipe, device, batch_size=a.batch_size, image_size=a.image_size, precision=a.precision)
    from rn50.env import capture_env

    env = capture_env()
    print(
        f"recipe {recipe.name}, batch {recipe.batch_size}, {recipe.image_size} px, {recipe.precision}, "
        f"{recipe.memory_format}, {device}; CPU {env.get('cpu')} ({env.get('cpu_signature', '')}) "
        f"[{' '.join(env.get('cpu_flags', []))}], {env.get('cpu_cores')} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    same = same_work(recipe, device, print_freq=a.print_freq)
    print(f"same work: bare loop and trainer {'reach bitwise-equal weights' if same else 'DIFFER'} after 3 steps")
    if not same:
        print(
            "trainer_overhead: the bare loop no longer does the trainer's work; fix it before timing", file=sys.stderr
        )
        return 1
    watch = LoadWatch()
    res = measure(recipe, device, a.iters, a.warmup, a.rounds, a.print_freq)
    load = watch.summary()
    flags = window_flags("each loop per round", min(min(v) for v in res["seconds"].values()), a.iters)
    flags += spread_flag("trainer/bare time", res["stats"], threshold=0.05) + load_flags(load)
    if res["overhead_max"] < 0:
        flags.append("IMPOSSIBLE: the trainer beat the bare loop in every round: the machine changed; rerun idle")
    for r, (b, t) in enumerate(zip(res["bare_img_s"], res["trainer_img_s"], strict=True)):
        print(f"round {r + 1}: bare {b:8.2f} img/s   trainer {t:8.2f} img/s   overhead {100 * (b / t - 1):+.2f}%")
    print(
        f"trainer overhead {100 * res['overhead']:+.2f}% (median of {a.rounds} rounds; "
        f"min {100 * res['overhead_min']:+.2f}%, max {100 * res['overhead_max']:+.2f}%); "
        f"load average {load['loadavg_before'][0]:.2f} before, "
        f"{load['loadavg_after'][0]:.2f} after; other processes {load.get('other_load_cores', 0):.2f} cores"
    )
    for f in flags:
        print(f"flag: {f}")
    if a.json:
        from rn50.io import atomic_write_json

        atomic_write_json(a.json, {**res, "same_work": same, "flags": flags, "load": load, "env": env, "args": vars(a)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
