import os
import shutil
import tempfile
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

# Two cores here: keep torch from oversubscribing when tests start worker processes.
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def pytest_configure(config):
    # TorchInductor (AOTInductor tests) caches GBs under /tmp/torchinductor_<user> by default, kept forever:
    # give this session its own cache and remove it at the end, unless the caller chose one.
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        config._rn50_inductor_cache = tempfile.mkdtemp(prefix="rn50-tests-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = config._rn50_inductor_cache
    # The dataset index (rn50.data.index) of every test folder goes here, not into the user's ~/.cache.
    if "RN50_CACHE_DIR" not in os.environ:
        config._rn50_cache = tempfile.mkdtemp(prefix="rn50-tests-cache-")
        os.environ["RN50_CACHE_DIR"] = config._rn50_cache


def pytest_unconfigure(config):
    folder = getattr(config, "_rn50_inductor_cache", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    folder = getattr(config, "_rn50_cache", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("RN50_CACHE_DIR", None)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The built-in digits sample, written once per test session."""
    from rn50.data.sample import make_sample

    out = tmp_path_factory.mktemp("sample")
    make_sample(out)
    return out


def signal_when_written(
    argv: list[str],
    folder: Path,
    pattern: str,
    signum: int,
    *,
    wait_s: float = 120,
    timeout_s: float = 60,
    poll_s: float = 0.1,
    merge_stderr: bool = True,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str | None]:
    """Run `python -m rn50 *argv` in its own session and, once a file matching `pattern` is in `folder`, send
    `signum` to its whole process group, as Ctrl-C (SIGINT) or a scheduler (SIGTERM) does. (exit code, stdout,
    stderr; None when merged into stdout). Nothing is left running, whatever fails."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "rn50", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + wait_s
        while not list(folder.glob(pattern)) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(poll_s)
        assert list(folder.glob(pattern)), f"nothing matching {pattern} was written before the signal"
        os.killpg(proc.pid, signum)
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


def run_cli(args: list[str]):
    """Invoke the CLI in-process; returns typer's Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from rn50.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, sample_dir) -> Path:
    """A ResNet-50 (10 classes) trained by the real trainer (`fit`, the sample-cpu recipe) on 16 images per class
    of the sample at 64 px for 4 epochs: the checkpoint `rn50 train` writes, as the export and bench tests see it."""
    from rn50.recipes import get_recipe
    from rn50.train.loop import TrainOptions, fit
    from tests.data.images import make_tiny_dataset

    data = make_tiny_dataset(sample_dir, tmp_path_factory.mktemp("tiny_ckpt_data"), 16, 4)
    # 64 px, whatever the sample recipe trains at: the export tests run at 64 px.
    recipe = get_recipe("sample-cpu").replace(image_size=64, epochs=4, warmup_epochs=1, workers=0)
    out = tmp_path_factory.mktemp("tiny_ckpt_run") / "run"
    summary = fit(TrainOptions(data=data, recipe=recipe, out=out, progress=False, keep_epochs=1))
    assert summary["status"] == "complete", summary
    return out / "checkpoints" / "last.pth"


@pytest.fixture(scope="session")
def sample_demo(tmp_path_factory, sample_dir) -> dict:
    """`rn50 demo` on the built-in sample, the main job as `make demo` runs it (timed windows of 0.3 s instead of
    3 s): its training, `rn50 train sample --recipe sample-cpu` unchanged (about 2 minutes on 2 cores), is the model
    every test that judges learning, INT8 or parity uses (`sample_model`)."""
    from rn50.demo import DemoConfig, run_demo

    out = tmp_path_factory.mktemp("demo") / "demo"
    cfg = DemoConfig(sample=sample_dir, out=out, infer_seconds=0.3, data_seconds=0.3, progress=False)
    return {"summary": run_demo(cfg, say=lambda _: None), "out": out, "config": cfg}


@pytest.fixture(scope="session")
def sample_model(sample_demo) -> dict:
    """The demo's training run: its status and last-epoch val top-1, and its last checkpoint."""
    train = sample_demo["summary"]["train"]
    last = sample_demo["out"] / "train" / "checkpoints" / "last.pth"
    return {**train, "top1": train["last_top1"], "checkpoint": last}


def export_openvino(sample_model: dict, sample_dir: Path, out: Path, *extra: str) -> dict:
    """`rn50 export` of the sample model to an OpenVINO IR at the sample recipe's 32 px; returns the sidecar."""
    import json

    args = ["export", sample_model["checkpoint"], "--format", "openvino", "--image-size", "32", "--max-batch", "16"]
    args += ["--calib", sample_dir / "train", "--images", sample_dir / "val", "--out", out, *extra]
    res = run_cli(args)
    assert res.exit_code == 0, res.output
    return json.loads(out.with_name(out.name + ".json").read_text())


@pytest.fixture(scope="session")
def openvino_fp32(tmp_path_factory, sample_model, sample_dir) -> Path:
    """The sample model as an fp32 OpenVINO IR folder (one export per session, shared by export and bench tests)."""
    if find_spec("openvino") is None:  # not importorskip: a plain `import openvino` sends its telemetry
        pytest.skip("openvino is not installed (rn50[openvino])")
    out = tmp_path_factory.mktemp("openvino") / "sample-fp32.ov"
    export_openvino(sample_model, sample_dir, out)
    return out
