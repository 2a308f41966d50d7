"""Two torch.compile series in one `bench infer` run: every graph is compiled before the timed rounds, none inside
them (dynamo's own counters), with --compile-static's one graph per series and batch size."""

import pytest
import torch
from torch._dynamo.utils import counters

import rn50.bench.infer as infer
from rn50.bench.infer import run_infer
from tests.helpers import infer_config


def graphs() -> int:
    return sum(counters["stats"].values()) + sum(counters["frames"].values())


@pytest.mark.slow
def test_two_static_compile_series_compile_outside_their_timed_rounds(tmp_path, monkeypatch):
    timed = infer.sweep.timed_loop
    inside: list[int] = []  # dynamo's compile events during each timed window

    def watched(step, **kwargs):
        before = graphs()
        result = timed(step, **kwargs)
        inside.append(graphs() - before)
        return result

    monkeypatch.setattr(infer.sweep, "timed_loop", watched)  # where the sweep looks it up
    counters.clear()
    cfg = infer_config(
        tmp_path,
        batches=[1, 2],
        backends=["compile"],
        precisions=["fp32", "bf16"],
        iters=2,
        rounds=2,
        compile_dynamic=False,
        baseline=False,
    )
    result = run_infer(cfg)
    rows = result["rows"]
    assert [(r["precision"], r["batch"], r["status"]) for r in rows] == [
        ("fp32", 1, "ok"), ("bf16", 1, "ok"), ("fp32", 2, "ok"), ("bf16", 2, "ok")
    ], rows  # fmt: skip
    assert counters["stats"]["unique_graphs"] >= 4  # one static graph per series and batch size, all kept
    assert len(inside) == 2 * 2 * 2 and not any(inside), inside  # 2 series x 2 batches x 2 rounds, no compile
    assert {r["math"] for r in rows} == {"IEEE fp32 (TF32 off)", "bf16 weights and activations"}
    torch._dynamo.reset()
