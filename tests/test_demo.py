"""`rn50 demo` end to end on the built-in sample, as `make demo` runs it (the session's `sample_demo`, whose training
is also `sample_model`): every step runs, the summary says what it must, and the exports agree with eager fp32 on a
model with real margins (its val top-1 asserted first), so no verdict depends on a training draw or on the CPU."""

import importlib.util
import json

from rn50.demo import summary_markdown
from rn50.export.sidecar import sidecar_path
from tests.conftest import run_cli


def test_demo_runs_every_step_and_summarises(sample_demo):
    out, returned = sample_demo["out"], sample_demo["summary"]
    s = json.loads((out / "summary.json").read_text())
    assert s == json.loads(json.dumps(returned))
    assert s["train"]["status"] == "complete" and s["train"]["recipe"] == "sample-cpu" and s["train"]["epochs"] == 8
    assert s["train"]["last_top1"] >= 90, s["train"]  # the precondition of the agreement floors below
    series = {r["series"]: r for r in s["infer"]["rows"]}
    openvino = {"OpenVINO fp32", "OpenVINO int8"} if importlib.util.find_spec("openvino") else set()
    assert set(series) == {"eager fp32", "ONNX Runtime fp32", "ONNX Runtime int8"} | openvino, series
    assert all(r["status"] == "ok" and r["img_s"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in series.values())
    val = sum(1 for p in (sample_demo["config"].sample / "val").rglob("*") if p.is_file())
    assert s["infer"]["agreement_images"] == val > 300  # every val image of the sample
    for name, r in series.items():
        assert r["top1_agreement"] >= 0.99, (name, r["top1_agreement"])  # the INT8 floor of tests/export
        if name != "eager fp32":
            artifact = r["artifact"]
            assert artifact.startswith(str(out / "export")) and json.loads(sidecar_path(artifact).read_text())["parity"]
    data_rows = {r["backend"]: r for r in s["data"]["rows"]}
    assert data_rows["pytorch"]["status"] == "ok" and data_rows["pytorch"]["seconds"] > 0
    md = (out / "summary.md").read_text()
    assert md == summary_markdown(s)
    for text in ("val top-1", "ONNX Runtime int8", "Input pipeline", "Where everything went", str(out / "train")):
        assert text in md, text


def test_a_second_demo_into_the_same_folder_is_refused_unless_force(sample_demo):
    out = sample_demo["out"]
    before = (out / "summary.json").read_bytes()
    again = run_cli(["demo", "--sample", sample_demo["config"].sample, "--out", out, "--epochs", "1", "--no-progress"])
    assert again.exit_code == 2 and "--force" in again.stderr and "Traceback" not in again.output
    assert (out / "summary.json").read_bytes() == before  # nothing the first demo wrote was touched
