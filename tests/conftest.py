import os
from pathlib import Path

import pytest
import torch

# Two cores here: keep torch from oversubscribing when tests start worker processes.
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


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
