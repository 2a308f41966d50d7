"""Every command that writes, against an output it cannot write: a read-only folder, a path under a file, a full
disk. Each gets one line on stderr and exit 2, and leaves nothing behind: no partial file, no temporary, the
previous checkpoint intact."""

import json

import pytest
import torch

from rn50.model import resnet50
from rn50.weights import load_model, read_checkpoint, save_weights
from tests.conftest import run_cli
from tests.data.images import make_tiny_dataset
from tests.faults import full_disk, last_line_error, one_line_error, read_only, temporaries, under_a_file

TRAIN = ["train", "--image-size", "32", "-b", "8", "--workers", "0", "--no-progress", "--training-only"]
INFER = ["bench", "infer", "--device", "cpu", "--batch", "1", "--iters", "1", "--warmup", "0", "--image-size", "32"]


@pytest.fixture(scope="module")
def data(sample_dir, tmp_path_factory):
    return make_tiny_dataset(sample_dir, tmp_path_factory.mktemp("faults_data"), 2, 1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults_weights") / "rn50.pth"
    torch.manual_seed(0)
    save_weights(path, resnet50(num_classes=10))
    return path


@pytest.mark.parametrize("fault", ["read-only", "under-a-file"])
def test_every_command_refuses_an_unwritable_output(fault, data, weights, tmp_path):
    if fault == "read-only":
        ctx = read_only(tmp_path / "ro")
    else:
        ctx = _nullcontext(under_a_file(tmp_path))
    why = "read-only" if fault == "read-only" else "not a folder"
    with ctx as where:
        last_line_error(run_cli([*TRAIN, data, "--out", where / "run"]), "--out", why)
        one_line_error(run_cli(["export", weights, "-f", "torchscript", "--out", where / "m.ts"]), "m.ts", why)
        one_line_error(run_cli([*INFER, "--no-baseline", "--out", where / "results"]), "--out", why)
        one_line_error(run_cli(["data", "sample", where / "sample"]), "sample", why)
        # no explicit check on this path: the CLI's safety net still gives one line naming it
        net = run_cli([*INFER, "--no-baseline", "--keep-artifacts", where / "kept", "--out", tmp_path / "results"])
        one_line_error(net, "kept", "Read-only file system" if fault == "read-only" else "Not a directory")
        assert not (where.exists() and where.is_dir() and list(where.iterdir()))


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(data, tmp_path):
    """Epoch 1's checkpoint (~190 MB) fits in 300 MB, epoch 2's does not: the run stops with one line, last.pth is
    still epoch 1's and loads, no temporary is left, metrics.jsonl still parses."""
    with full_disk(tmp_path / "disk", "300m") as disk:
        out = disk / "run"
        result = run_cli([*TRAIN, data, "--epochs", "2", "--keep-epochs", "0", "--out", out])
        last_line_error(result, "epoch-002.pth", "full")
        last = read_checkpoint(out / "checkpoints" / "last.pth")
        assert (last["epoch"], last["epoch_complete"]) == (0, True)
        assert load_model(out / "checkpoints" / "last.pth").fc.out_features == 10
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-001.pth", "last.pth"]
        assert temporaries(out) == []
        for line in (out / "metrics.jsonl").read_text().splitlines():
            json.loads(line)


def test_full_disk_export_bench_and_sample_leave_nothing(weights, tmp_path):
    with full_disk(tmp_path / "disk", "8m") as disk:  # the ONNX model is ~95 MB
        one_line_error(run_cli(["export", weights, "-f", "onnx", "--no-verify", "--image-size", "32",
                                "--max-batch", "2", "--out", disk / "m.onnx"]), "m.onnx", "full")  # fmt: skip
        assert list(disk.iterdir()) == []
    with full_disk(tmp_path / "disk2", "16k") as disk:  # a few result tables' worth
        last_line_error(run_cli([*INFER, "--no-baseline", "--out", disk / "results"]), "full")  # after a progress bar
        assert temporaries(disk) == []
        one_line_error(run_cli(["data", "sample", disk / "sample"]), "sample", "full")
        assert not (disk / "sample").exists() or list((disk / "sample").iterdir()) == []


class _nullcontext:
    def __init__(self, value):
        self.value = value

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        return False
