"""examples/: the SLURM batch script's launch logic on one machine (SLURM's variables set for 2 nodes; srun and
scontrol replaced by the small stand-ins in tests/slurm_bin, since SLURM itself is not installed here), preempted
and requeued; and every rn50 flag that the SLURM script and the Kubernetes manifest use exists."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rn50.weights import read_checkpoint
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "examples" / "slurm" / "train.sbatch"
TRAINJOB = ROOT / "examples" / "kubernetes" / "trainjob.yaml"


def train_help() -> str:
    res = subprocess.run([sys.executable, "-m", "rn50", "train", "--help"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "400"})  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout


def sbatch_rn50_flags() -> set[str]:
    text = SBATCH.read_text()
    step = text[text.index("srun ") : text.index("&\n", text.index("srun "))]
    rn50_part = step[step.index("exec rn50 train") :]  # srun's own options come before it
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", rn50_part))


def manifest_rn50_flags() -> set[str]:
    command = yaml.safe_load(TRAINJOB.read_text())["spec"]["trainer"]["command"]
    assert command[:2] == ["rn50", "train"]
    return {a for a in command if a.startswith("--")}


def test_every_rn50_flag_in_the_examples_exists():
    help_text = train_help()
    known = set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))
    flags = sbatch_rn50_flags() | manifest_rn50_flags()
    assert {"--nnodes", "--node-rank", "--rdzv-endpoint", "--resume", "--max-restarts"} <= flags
    assert flags <= known, sorted(flags - known)
    assert "--no-such-flag" not in known
    assert subprocess.run(["bash", "-n", str(SBATCH)]).returncode == 0


@pytest.fixture(scope="module")
def tiny_data(sample_dir, tmp_path_factory):
    from tests.data.images import make_tiny_dataset

    return make_tiny_dataset(sample_dir, tmp_path_factory.mktemp("tiny_data"), 2, 1)


def slurm_tasks(out: Path) -> list[int]:
    """The `rn50 train` processes srun started (one per node), not their launchers or ranks."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        is_task = any(e.startswith(b"SLURM_NODEID=") for e in environ) and b"rn50.launch" not in cmdline
        if is_task and str(out).encode() in cmdline and b"\0train\0" in cmdline and b"\0-u\0" not in cmdline:
            pids.append(int(proc.name))
    return pids


def test_sbatch_on_two_simulated_nodes_is_preempted_requeued_and_resumes(tiny_data, tmp_path):
    out, requeues = tmp_path / "run", tmp_path / "scontrol.log"
    env = {
        **os.environ,
        "PATH": f"{ROOT / 'tests' / 'slurm_bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "400",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "127.0.0.1",
        "SCONTROL_LOG": str(requeues),
        "RN50_DATA": str(tiny_data),
        "RN50_RECIPE": "sample-cpu",
        "RN50_OUT": str(out),
        "RN50_GPUS_PER_NODE": "1",
    }
    extra = ["--image-size", "32", "--batch-size", "2", "--epochs", "1", "--workers", "0", "--warmup", "0",
             "--device", "cpu", "--lr", "0.05", "--print-freq", "1", "--rdzv-timeout", "60"]  # fmt: skip
    # First start: SLURM's --signal / preemption SIGTERM reaches the tasks once training runs.
    first = {**env, "RN50_RDZV_PORT": str(free_port())}
    job = subprocess.Popen(["bash", str(SBATCH), *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=first)  # fmt: skip
    deadline = time.monotonic() + 180
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline and not (metrics.exists() and '"train"' in metrics.read_text()):
        time.sleep(0.05)
    tasks = slurm_tasks(out)
    assert len(tasks) == 2, tasks
    for pid in tasks:
        os.kill(pid, signal.SIGTERM)
    output, _ = job.communicate(timeout=180)
    assert job.returncode == 143, output[-3000:]
    assert requeues.read_text() == "requeue 4242\n", output[-3000:]
    assert "Traceback" not in output
    ckpt = read_checkpoint(out / "checkpoints" / "last.pth")
    assert not ckpt["epoch_complete"] and ckpt["recipe"]["gpus"] == 2
    # The requeued job (same id, same folder) continues from the checkpoint and finishes.
    job = subprocess.run(["bash", str(SBATCH), *extra], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**env, "SLURM_RESTART_COUNT": "1", "RN50_RDZV_PORT": str(free_port())})  # fmt: skip
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-2000:]
    assert f"rn50: finished: {out}" in job.stdout
    assert requeues.read_text() == "requeue 4242\n"  # not requeued again
    final = read_checkpoint(out / "checkpoints" / "last.pth")
    assert final["epoch_complete"] and final["epoch"] == 0 and final["schedule"]["opt_step"] == 5
