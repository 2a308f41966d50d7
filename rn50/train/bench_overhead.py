"""Trainer overhead: img/s of `train_one_epoch` beside a bare training loop, same model and synthetic data.

    python -m rn50.train.bench_overhead --device cuda --batch-size 256 --precision fp16 --iters 100

Both run in this process, interleaved (bare, trainer, bare, trainer, ...) so drift hits both; warmup excluded,
the device synchronised before each clock read. Prints one line per trial and the median overhead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rn50.data.synthetic import SyntheticLoader
from rn50.recipes import get_recipe
from rn50.train.loop import StopFlag, TrainOptions, train_one_epoch
from rn50.train.run import RunDir
from rn50.train.step import autocast_dtype, build_state, effective_precision, memory_format


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(recipe, device: torch.device, iters: int, warmup: int) -> float:
    """The minimum: forward, loss, backward, SGD step; no logging, no schedule, no scaler bookkeeping."""
    torch.manual_seed(0)
    from rn50.model import resnet50

    model = resnet50(num_classes=recipe.num_classes, zero_init_last=recipe.zero_init_last)
    model = model.to(device=device, memory_format=memory_format(recipe)).train()
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    precision = effective_precision(recipe.precision, device)
    dtype = autocast_dtype(precision)
    scaler = torch.amp.GradScaler(device.type, init_scale=recipe.loss_scale, enabled=precision == "fp16")
    loader = SyntheticLoader(recipe, device, batches=iters + warmup)
    t0 = 0.0
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=recipe.label_smoothing)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return iters * recipe.batch_size / (time.perf_counter() - t0)


def trainer(recipe, device: torch.device, iters: int, warmup: int, print_freq: int) -> float:
    """The real `train_one_epoch` (schedule, scaler, non-finite check, metrics.jsonl, progress off)."""
    torch.manual_seed(0)
    state = build_state(recipe, device, False, steps_per_epoch=iters + warmup)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp), writer=True)
        opts = TrainOptions(data=None, recipe=recipe, print_freq=print_freq, progress=False)
        with StopFlag() as stop:
            train_one_epoch(state, SyntheticLoader(recipe, device, batches=warmup), 0, 0, run, opts, stop)
            _sync(device)
            t0 = time.perf_counter()
            train_one_epoch(state, SyntheticLoader(recipe, device, batches=iters), 1, 0, run, opts, stop)
            _sync(device)
    return iters * recipe.batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="sample-cpu")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--precision", default=None)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--print-freq", type=int, default=10)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    recipe = get_recipe(a.recipe).replace(
        gpus=1, batch_size=a.batch_size, image_size=a.image_size, precision=a.precision, data_backend="synthetic"
    )
    print(
        f"recipe {recipe.name}, batch {recipe.batch_size}, {recipe.image_size} px, "
        f"precision {effective_precision(recipe.precision, device)}, {recipe.memory_format}, device {device}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, loadavg {os.getloadavg()}"
    )
    overheads = []
    for r in range(a.repeats):
        bare = bare_loop(recipe, device, a.iters, a.warmup)
        ours = trainer(recipe, device, a.iters, a.warmup, a.print_freq)
        overheads.append(100 * (bare - ours) / bare)
        print(
            f"trial {r + 1}: bare loop {bare:9.1f} img/s   trainer {ours:9.1f} img/s   overhead {overheads[-1]:+.2f}%"
        )
    print(f"median overhead {statistics.median(overheads):+.2f}% (loadavg after {os.getloadavg()})")


if __name__ == "__main__":
    main()
