"""Helpers the tests share: commands, ports, live processes, trained weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from rn50.weights import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# One thread per process: tests start several on two shared cores; a wide terminal keeps error lines whole.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}


def rn50(*args) -> list[str]:
    """argv for `python -m rn50 ARGS` in this interpreter."""
    return [sys.executable, "-m", "rn50", *map(str, args)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (a test's temp folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def final_weights(out: Path) -> dict:
    """The model weights of a run folder's checkpoints/last.pth."""
    return read_checkpoint(out / "checkpoints" / "last.pth")["model"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert not different, different[:5]


def run_nodes(argvs: list[list[str]], timeout: float = 300) -> list[str]:
    """Start one process per argv (e.g. one per node) at once; wait for all; assert each exited 0; their outputs."""
    procs = [
        subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for argv in argvs
    ]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), "\n".join(o[-2000:] for o in outputs)
    return outputs


def infer_config(out: Path, **fields):
    """A small `bench infer` config: untrained eager model, 32 px, 10 classes, a few iterations, no progress bar;
    `fields` override any of these or set the others."""
    from rn50.bench.infer import InferConfig

    small = dict(backends=["eager"], device="cpu", image_size=32, warmup=1, iters=3, num_classes=10, progress=False)
    return InferConfig(out=out, **{**small, **fields})
