"""`rn50 bench train`: training img/s over 1, 2, 4 ... N workers, mixed vs full precision (weak scaling).

Each worker count is one launch of `python -m rn50.bench.scaling --worker SPEC` (worker.py) through rn50's one
launcher (`rn50.launch`, torchrun), the same that runs `rn50 train --gpus/--nnodes`; every rank runs the trainer's own
step (`rn50.train.step`) for `warmup` then `iters` iterations per precision. Img/s is the global images of the timed
iterations over their wall time, taken between two synchronise+barrier points; global rank 0 writes it. A crash (named
from torchelastic's error files), a hang (timeout) or a Ctrl-C ends with one message and no process left behind.

The worker counts run in `rounds` interleaved rounds (1, 2, 1, 2, ... with the order rotated each round: sweep.py), and
every ratio (weak scaling, efficiency, mixed speedup) is the median of the rounds' own ratios with their spread
(derive.py): a load that changes between two launches lands in one round's ratio, not in the table. The tables
(report.py) are rewritten after every launch, so an interrupted sweep keeps what it measured.
"""

from rn50.bench.scaling.config import FAIL_ENV, TrainBenchConfig, TrainBenchReport, resolve_precisions, worker_counts
from rn50.bench.scaling.report import COLUMNS, caption
from rn50.bench.scaling.sweep import run_train_bench

__all__ = [
    "COLUMNS",
    "FAIL_ENV",
    "TrainBenchConfig",
    "TrainBenchReport",
    "caption",
    "resolve_precisions",
    "run_train_bench",
    "worker_counts",
]
