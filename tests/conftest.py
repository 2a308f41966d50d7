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
    """A ResNet-50 (10 classes) briefly trained on the sample at 64 px, saved as an rn50 checkpoint.

    Owner: the trainer issue, which may switch this to the real trainer's Python API.
    """
    from rn50.data.transforms import load_labeled_images
    from rn50.model import resnet50
    from rn50.recipes import get_recipe
    from rn50.weights import save_weights

    torch.manual_seed(0)
    recipe = get_recipe("sample-cpu").replace(image_size=64)  # 64 px, whatever the sample recipe trains at
    images, labels = load_labeled_images(sample_dir / "train", 160, recipe.image_size)
    model = resnet50(num_classes=10, zero_init_last=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.875)
    model.train()
    for _ in range(4):
        for i in range(0, len(images), 32):
            loss = torch.nn.functional.cross_entropy(model(images[i : i + 32]), labels[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    # Re-estimate BN statistics over the data with the final weights (a few steps leave them stale).
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(images)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_weights(path, model.eval(), recipe=recipe.to_dict())
    return path
