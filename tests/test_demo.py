"""`rn50 demo` end to end on a small slice of the sample (one epoch): every step runs, the summary says what it must."""

import importlib.util
import json

from rn50.demo import DemoConfig, run_demo, summary_markdown
from tests.conftest import run_cli
from tests.data.images import make_tiny_dataset


def test_demo_runs_every_step_and_summarises(sample_dir, tmp_path):
    data = make_tiny_dataset(sample_dir, tmp_path / "sample", 8, 4)
    out = tmp_path / "demo"
    # The library call behind `rn50 demo`, with short timed windows (the command's defaults are 3 s each).
    cfg = DemoConfig(sample=data, out=out, epochs=1, infer_seconds=0.3, data_seconds=0.3, progress=False)
    returned = run_demo(cfg, say=lambda _: None)
    s = json.loads((out / "summary.json").read_text())
    assert s == json.loads(json.dumps(returned))
    assert s["train"]["epochs"] == 1 and 0 <= s["train"]["last_top1"] <= 100
    series = {r["series"]: r for r in s["infer"]["rows"]}
    openvino = {"OpenVINO fp32", "OpenVINO int8"} if importlib.util.find_spec("openvino") else set()
    assert set(series) == {"eager fp32", "ONNX Runtime fp32", "ONNX Runtime int8"} | openvino, series
    assert all(r["status"] == "ok" and r["img_s"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in series.values())
    assert s["infer"]["agreement_images"] == 40  # every val image of the slice
    assert series["ONNX Runtime fp32"]["top1_agreement"] >= 0.975  # fp32 export: same function
    assert series["ONNX Runtime int8"]["top1_agreement"] is not None
    for name in ("ONNX Runtime fp32", "ONNX Runtime int8"):
        artifact = series[name]["artifact"]
        assert artifact.startswith(str(out / "export")) and json.loads(open(artifact + ".json").read())["parity"]
    data_rows = {r["backend"]: r for r in s["data"]["rows"]}
    assert data_rows["pytorch"]["status"] == "ok" and data_rows["pytorch"]["seconds"] > 0
    md = (out / "summary.md").read_text()
    assert md == summary_markdown(s)
    for text in ("val top-1", "ONNX Runtime int8", "Input pipeline", "Where everything went", str(out / "train")):
        assert text in md, text
    # a second demo into the same folder is refused in one line unless --force
    again = run_cli(["demo", "--sample", data, "--out", out, "--epochs", "1", "--no-progress"])
    assert again.exit_code == 2 and "--force" in again.stderr and "Traceback" not in again.output
