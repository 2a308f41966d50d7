import os
import shutil
import tempfile
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


def pytest_unconfigure(config):
    folder = getattr(config, "_rn50_inductor_cache", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)


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
def sample_model(tmp_path_factory, sample_dir) -> dict:
    """`rn50 train sample --recipe sample-cpu`, unchanged, through the trainer's Python API (about 2 minutes on 2
    cores): the model the main job trains, for the tests that judge learning and INT8 on it."""
    from rn50.recipes import get_recipe
    from rn50.train.loop import TrainOptions, fit

    out = tmp_path_factory.mktemp("sample_model") / "run"
    summary = fit(
        TrainOptions(data=sample_dir, recipe=get_recipe("sample-cpu"), out=out, progress=False, keep_epochs=1)
    )
    return {**summary, "checkpoint": out / "checkpoints" / "last.pth"}
