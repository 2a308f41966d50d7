"""Interleaved rounds against back-to-back timing on a machine whose speed changes while it is measured."""

from __future__ import annotations

import time

import pytest

from rn50.bench.timing import (
    LoadWatch,
    efficiency_flag,
    interleaved,
    load_flags,
    per_round_rates,
    ratio_stats,
    spread_flag,
    timed_loop,
    window_flags,
)

COST_A, COST_B = 0.01, 0.02  # seconds per iteration on an unloaded machine: B is truly half A's speed; long
# enough that a scheduler time slice (a few ms on a busy machine) is small beside one step
RAMP_S = 1.5  # the slowdown grows from 1x to 4x over this long, then stays


class RampingMachine:
    """Every step costs its base time times a slowdown that grows with wall time (a load that rises)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def slowdown(self) -> float:
        return 1 + 3 * min(1.0, (time.perf_counter() - self.t0) / RAMP_S)

    def step(self, cost: float):
        def run() -> None:
            end = time.perf_counter() + cost * self.slowdown()
            while time.perf_counter() < end:
                pass

        return run


def test_interleaved_ratio_survives_a_rising_load_back_to_back_does_not():
    true_ratio = COST_A / COST_B  # B's img/s over A's
    m = RampingMachine()
    a, b = timed_loop(m.step(COST_A), warmup=0, iters=40), timed_loop(m.step(COST_B), warmup=0, iters=40)
    back_to_back = (40 / b.total_s) / (40 / a.total_s)
    m = RampingMachine()
    res = interleaved([m.step(COST_A), m.step(COST_B)], rounds=9, iters=4)
    rates_a, rates_b = per_round_rates(res, 0, 1), per_round_rates(res, 1, 1)
    stats = ratio_stats([rb / ra for ra, rb in zip(rates_a, rates_b, strict=True)])
    assert abs(back_to_back / true_ratio - 1) > 0.3  # the drift lands in the sequential ratio
    assert abs(stats["ratio"] / true_ratio - 1) < 0.15  # and not in the median of the rounds' ratios
    assert stats["rounds"] == 9 and stats["ratio_min"] <= stats["ratio"] <= stats["ratio_max"]


def test_interleaved_rotates_the_order():
    order: list[str] = []
    interleaved([lambda: order.append("a"), lambda: order.append("b"), lambda: order.append("c")], rounds=3, iters=1)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_one_rotation_and_one_split_for_every_bench():
    """bench infer, train and data take their round order and per-round share from these (no copies of their own),
    so the ramp test above covers the rule they run."""
    import importlib
    import inspect
    import pkgutil

    from rn50.bench import datapipe, infer, scaling
    from rn50.bench.timing import round_order, split_rounds

    assert [round_order("abc", r) for r in range(4)] == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert round_order([], 3) == []
    assert split_rounds(10, 3) == [4, 3, 3] and split_rounds(2, 5) == [1, 1] and sum(split_rounds(150, 5)) == 150
    for package in (infer, scaling, datapipe):
        sources = {
            m.name: inspect.getsource(importlib.import_module(f"{package.__name__}.{m.name}"))
            for m in pkgutil.iter_modules(package.__path__)
            if not m.name.startswith("__")
        }
        assert any("round_order(" in text for text in sources.values()), package.__name__
        assert [name for name, text in sources.items() if "% len(" in text] == [], package.__name__


def test_flags_name_the_problem_and_the_remedy():
    assert efficiency_flag("full weak scaling at 2 workers", 1.0) == []
    (flag,) = efficiency_flag("full weak scaling at 2 workers", 5.66)
    assert "IMPOSSIBLE" in flag and "idle machine" in flag
    assert window_flags("x", 2.0, 50) == []
    assert any("--iters" in f for f in window_flags("x", 0.02, 50))
    assert any("FEW ITERATIONS" in f for f in window_flags("x", 2.0, 3))
    steady = ratio_stats([1.0, 1.02, 0.99])
    assert spread_flag("speedup", steady) == []
    (flag,) = spread_flag("speedup", ratio_stats([1.0, 2.0, 1.5]))
    assert "UNSTABLE" in flag and "--iters" in flag
    assert load_flags({"cores": 2, "loadavg_before": [3.5, 0, 0], "other_load_cores": 0.0})
    assert load_flags({"cores": 2, "loadavg_before": [0.1, 0, 0], "other_load_cores": 0.9})
    assert load_flags({"cores": 2, "loadavg_before": [0.1, 0, 0], "other_load_cores": 0.0}) == []


def test_load_watch_sees_another_process_and_not_its_own_work():
    import subprocess
    import sys

    watch = LoadWatch()
    end = time.perf_counter() + 0.6
    while time.perf_counter() < end:  # our own work: must not count as other load
        pass
    own = watch.summary()
    if "other_load_cores" not in own:
        pytest.skip("no /proc/stat on this system")
    watch = LoadWatch()
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend=time.time()+1.5\nwhile time.time()<end: pass"])
    try:
        time.sleep(1.2)
        other = watch.summary()
    finally:
        spinner.kill()
        spinner.wait()
    assert other["other_load_cores"] > own["other_load_cores"] + 0.4


def test_wait_quiet_waits_while_another_process_keeps_a_core_busy():
    """bench data waits, between two loaders' windows, until the one just timed has refilled its queue; a process
    that stays busy makes it wait its whole limit (and no longer)."""
    import subprocess
    import sys
    import time

    from rn50.bench.timing import wait_quiet

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        waited = wait_quiet(max_wait=1.0)
    finally:
        hog.kill()
        hog.wait()
    assert 0.95 <= waited < 2.0


def test_cuda_settings_make_gpu_n_current_with_cudnn_autotuning_and_restore_both(monkeypatch):
    """The choice rn50 makes for `--device cuda:N` (no GPU here: torch.cuda's device calls are recorded instead of
    made; the gpu-marked sweep test runs them)."""
    import torch

    from rn50.bench.timing import cuda_settings

    current = [0]
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: current.__setitem__(0, i))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    for device, during in (("cuda:3", 3), ("cuda", 0)):
        with cuda_settings(device):
            assert (current[0], torch.backends.cudnn.benchmark) == (during, True)
        assert (current[0], torch.backends.cudnn.benchmark) == (0, False)
    with cuda_settings("cpu"):
        assert torch.backends.cudnn.benchmark is False
