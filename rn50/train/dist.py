"""Process groups, per-rank seeds and rank-0 logging (the torchrun launcher is `rn50.launch`)."""

from __future__ import annotations

import logging
import os
import random
from datetime import timedelta

import torch
import torch.distributed as torch_dist

from rn50.errors import UserError, need


def env_rank() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) when launched standalone."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def pick_device_kind(requested: str | None = None) -> str:
    """'cuda' when present (or asked for), else 'cpu' (rn50.env.resolve_device: every command's rule); each rank
    takes its own GPU, so a device index is refused here."""
    from rn50.env import resolve_device

    need(requested in (None, "auto", "cuda", "cpu"), f"--device must be cuda, cpu or auto, not {requested!r}")
    return resolve_device(requested)


def init_distributed(device_kind: str = "auto") -> tuple[int, int, int, torch.device]:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU); a no-op for a single process.

    Returns (rank, world_size, local_rank, device).
    """
    kind = pick_device_kind(device_kind)
    rank, world_size, local_rank = env_rank()
    if kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"local rank {local_rank} but only {torch.cuda.device_count()} GPU(s) visible; lower --gpus"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not torch_dist.is_initialized():
        backend = "nccl" if kind == "cuda" else "gloo"
        kwargs: dict = {"device_id": device} if kind == "cuda" else {}
        store = _attempt_store()
        if store is not None:
            kwargs.update(store=store, rank=rank, world_size=world_size)
        torch_dist.init_process_group(backend=backend, timeout=timedelta(minutes=30), **kwargs)
    return rank, world_size, local_rank, device


def _attempt_store():
    """torchrun's own store, with a prefix per restart; None when torchrun does not share its store.

    torchrun serves the ranks' store from its rendezvous store, the same one on every restart of the worker group,
    and env:// adds no prefix: a restarted rank can read the address a dead rank published there and wait forever to
    connect to it (gloo connectFullMesh). A prefix per attempt gives every restart clean keys.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = torch_dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        int(os.environ["WORLD_SIZE"]),
        is_master=False,
        timeout=timedelta(minutes=30),
    )
    return torch_dist.PrefixStore(f"rn50/attempt_{attempt}", store)


def is_distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1


def collective_device() -> torch.device:
    """Where a collective's tensors live: the current GPU under NCCL, the CPU under gloo."""
    if torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cleanup() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch with `seed + rank` so ranks draw different random numbers."""
    import numpy as np

    rank_seed = seed + rank
    random.seed(rank_seed)
    np.random.seed(rank_seed % 2**32)
    torch.manual_seed(rank_seed)


class RankFilter(logging.Filter):
    """Let records through on global rank 0 only (warnings and errors from every rank)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.WARNING


def setup_logging(rank: int, level: int = logging.INFO) -> None:
    """Rich console logging for rn50.*, filtered to rank 0."""
    from rich.logging import RichHandler

    logger = logging.getLogger("rn50")
    for h in list(logger.handlers):
        if getattr(h, "_rn50", False):
            logger.removeHandler(h)
    handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
    handler._rn50 = True  # type: ignore[attr-defined]
    handler.addFilter(RankFilter(rank))
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(message)s" if rank else "%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
