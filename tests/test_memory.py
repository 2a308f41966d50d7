"""The memory estimate that refuses a run before it starts, and the one line it prints."""

import subprocess
import sys

import pytest

from rn50.errors import UserError
from rn50.memory import HEADROOM, available_bytes, check_fits, estimate_bytes, largest_batch


@pytest.mark.parametrize("kind", ["train", "infer"])
def test_largest_batch_is_the_largest_that_fits(kind):
    avail = 24 * 2**30
    b = largest_batch(avail, 224, kind)
    assert estimate_bytes(b, 224, kind) <= HEADROOM * avail < estimate_bytes(b + 1, 224, kind)
    assert largest_batch(avail, 224, kind, processes=2) < b


def test_a_batch_that_cannot_fit_is_refused_naming_one_that_does():
    have, _ = available_bytes("cpu")
    fits = largest_batch(have, 224)
    check_fits(max(1, fits), 224, "cpu")  # fits: no error
    with pytest.raises(UserError, match=rf"use --batch {fits} or less"):
        check_fits(fits * 4 + 64, 224, "cpu")


def test_rn50_train_refuses_before_taking_the_memory(sample_dir, tmp_path):
    # In a subprocess: the trainer sets up logging for its process, which an in-process run would leave behind.
    args = ["train", str(sample_dir), "--recipe", "sample-cpu", "--batch-size", "100000", "--out", str(tmp_path / "r")]
    res = subprocess.run([sys.executable, "-m", "rn50", *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "use --batch-size" in res.stderr and "GiB" in res.stderr and "Traceback" not in res.stderr
