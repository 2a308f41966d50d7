"""benchmarks/trainer_overhead.py: its bare loop does the trainer's arithmetic, checked bitwise, and can tell apart."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "trainer_overhead.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("trainer_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    # On 2 shared cores, 2 OpenMP threads wait on each other's preempted turns: one thread keeps the test in seconds.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_bare_loop_reaches_the_trainers_weights_bitwise(bench):
    recipe = bench.make_recipe("sample-cpu", CPU, batch_size=2, image_size=32)
    assert bench.same_work(recipe, CPU, steps=2)
    # The check can fail: a bare loop without label smoothing ends elsewhere.
    assert not bench.same_work(recipe, CPU, steps=2, bare_recipe=recipe.replace(label_smoothing=0.0))


def test_overhead_is_a_median_of_interleaved_rounds_with_its_spread(bench):
    recipe = bench.make_recipe("sample-cpu", CPU, batch_size=2, image_size=32)
    res = bench.measure(recipe, CPU, iters=1, warmup=1, rounds=3, print_freq=10)
    ratios = sorted(t / b for t, b in zip(res["seconds"]["trainer"], res["seconds"]["bare"], strict=True))
    assert res["overhead"] == pytest.approx(ratios[1] - 1)
    assert res["overhead_min"] == pytest.approx(ratios[0] - 1) and res["overhead_max"] == pytest.approx(ratios[2] - 1)
    assert len(res["bare_img_s"]) == len(res["trainer_img_s"]) == 3


def test_a_recipe_the_bare_loop_cannot_match_is_refused(bench):
    with pytest.raises(SystemExit, match="mixup"):
        bench.make_recipe("dgx1-fp16-250", CPU)
