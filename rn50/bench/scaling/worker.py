"""One rank of a bench train launch (under torchrun): the trainer's own step for `warmup` then `iters` iterations
per precision, timed between two synchronise+barrier points; rank 0's figures are what the sweep reads."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rn50.bench.scaling.config import FAIL_ENV, bench_recipe
from rn50.bench.timing import endless_batches
from rn50.io import atomic_write_json

log = logging.getLogger("rn50.bench")


def _fail_hook(rank: int) -> tuple[int, str] | None:
    spec = os.environ.get(FAIL_ENV)
    if not spec:
        return None
    parts = spec.split(":")
    if int(parts[0]) != rank:
        return None
    return int(parts[1]), parts[2] if len(parts) > 2 else "kill"


def _sync_ranks(device) -> None:
    """This rank's device, then every rank: the timed window starts and ends at the same moment everywhere."""
    import torch.distributed as dist

    from rn50.env import synchronize

    synchronize(device)
    if dist.is_available() and dist.is_initialized():
        if device.type == "cuda":
            dist.barrier(device_ids=[device.index])
        else:
            dist.barrier()


def _sum_over_ranks(value: int, device) -> int:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item())


def run_worker(spec_path: Path) -> None:
    """Body of one rank: time the trainer step for each precision in the spec; rank 0 writes the global figures."""
    spec = json.loads(Path(spec_path).read_text())
    run_dir = Path(spec["run_dir"])
    rank = int(os.environ.get("RANK", "0"))
    # Everything this rank prints, from here on, goes to its own log file (named in any failure message).
    log_file = open(run_dir / f"rank{rank}.log", "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(message)s", stream=sys.stderr)
    result = _run_timed(spec)  # an exception reaches torchelastic's error file through `as_rank`
    if "all_ranks" not in result:  # one node: each rank writes its own figures
        atomic_write_json(run_dir / f"rank{rank}.result.json", result)
    elif int(os.environ.get("LOCAL_RANK", "0")) == 0:  # several: one writer per node, with every rank's figures
        for r in result.pop("all_ranks"):
            atomic_write_json(run_dir / f"rank{r['rank']}.result.json", r)


def _run_timed(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from rn50.data.loaders import make_loader
    from rn50.train.dist import cleanup, init_distributed, seed_everything
    from rn50.train.step import build_state, train_step

    rank, world_size, local_rank, device = init_distributed(spec["device"])
    seed_everything(0, rank)  # the same weights and batches on every run: a loss to compare, not only a speed
    fail = _fail_hook(rank)
    log.info("rank %d/%d on %s, pid %d", rank, world_size, device, os.getpid())
    results: dict[str, Any] = {"rank": rank, "world_size": world_size, "local_rank": local_rank, "precisions": {}}
    step_index = 0
    for prec in spec["precisions"]:
        recipe = bench_recipe(spec["recipe"], prec["name"], world_size, spec)
        state = build_state(recipe, device, distributed=world_size > 1, compile=spec["compile"], rank=rank)
        data = spec["data"]
        loader = make_loader(
            Path(data) if data else None,
            "train",
            recipe,
            spec["backend"],
            device,
            rank=rank,
            world_size=world_size,
            seed=0,
            workers=spec["workers"],
        )
        batches = endless_batches(
            loader, "the data loader yielded no batch; is the dataset smaller than one global batch?"
        )
        loss = None
        local_images = 0  # counted from the batches (a loader may skip an unreadable file), no host sync
        for phase, n in (("warmup", spec["warmup"]), ("timed", spec["iters"])):
            if phase == "timed":
                _sync_ranks(device)
                start = time.perf_counter()
            for _ in range(n):
                if fail is not None and step_index == fail[0]:
                    log.error("%s: dying at iteration %d on purpose (%s)", FAIL_ENV, step_index, fail[1])
                    if fail[1] == "raise":
                        raise RuntimeError(f"{FAIL_ENV} asked rank {rank} to fail")
                    if fail[1] == "hang":
                        while True:
                            time.sleep(1)
                    os.kill(os.getpid(), signal.SIGKILL)
                _, (images, labels) = next(batches)
                loss = train_step(state, images, labels)
                step_index += 1
                if phase == "timed":
                    local_images += images.shape[0]
        _sync_ranks(device)
        elapsed = time.perf_counter() - start
        final_loss = float(loss.detach().float().item()) if loss is not None else math.nan
        images_timed = _sum_over_ranks(local_images, device)
        entry = {
            "precision": state.precision,  # what the trainer really ran
            "kind": prec["kind"],
            "seconds": elapsed,
            "local_images": local_images,
            "global_images": images_timed,
            "img_per_s": images_timed / elapsed,
            "final_loss": final_loss,
        }
        if device.type == "cuda":
            entry["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            torch.cuda.reset_peak_memory_stats(device)
        results["precisions"][prec["name"]] = entry
        log.info("%s: %.1f img/s (%d images in %.3f s), loss %.4f", prec["name"], entry["img_per_s"],
                 images_timed, elapsed, final_loss)  # fmt: skip
        del state, loader, batches
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if world_size > int(os.environ.get("LOCAL_WORLD_SIZE", world_size)):  # several nodes
        results["all_ranks"] = _gather(results)
    cleanup()
    return results


def _gather(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's result, on every rank (each node then holds the global figures, whichever node torchrun's
    rendezvous gave global rank 0 in this launch)."""
    import torch.distributed as dist

    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, result)
    dist.barrier()  # every rank has received everything before any tears the group down
    return everyone
