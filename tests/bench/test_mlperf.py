"""`rn50 bench mlperf`: MLCommons' LoadGen (the real package) over rn50 runtimes, on the 32-64 px sample with the
reduced-duration options; the official values themselves are read from LoadGen."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rn50.bench.mlperf import settings as mlperf_settings
from rn50.bench.mlperf.loadgen import require_loadgen
from rn50.data.transforms import eval_image
from rn50.weights import load_model
from tests.conftest import run_cli, signal_when_written
from tests.data.images import make_tiny_dataset
from tests.helpers import ENV, ROOT

SHORT = ["--sample-count", "64", "--min-duration", "1"]  # a reduced run: NOT COMPLIANT by construction


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory) -> Path:
    """A random-init ResNet-50 (10 classes) saved with the sample-cpu recipe (32 px): for plumbing, not accuracy."""
    import torch

    from rn50.model import resnet50
    from rn50.recipes import get_recipe
    from rn50.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mlperf") / "random.pth"
    save_weights(path, resnet50(num_classes=10).eval(), recipe=get_recipe("sample-cpu").to_dict())
    return path


def mlperf(*args) -> tuple[int, dict | None, str]:
    """`rn50 bench mlperf ARGS --json` in this process: (exit code, the JSON result or None, stderr)."""
    res = run_cli(["bench", "mlperf", *args, "--json"])
    try:
        return res.exit_code, json.loads(res.stdout), res.stderr
    except ValueError:
        return res.exit_code, None, res.stdout + res.stderr


def test_the_defaults_are_the_official_mlperf_values():
    """What LoadGen's built-in mlperf.conf says for resnet50, as MLPerf's rules and this README quote it."""
    lg = require_loadgen()
    s = {name: mlperf_settings.official_settings(lg, name) for name in mlperf_settings.SCENARIOS}
    assert {n: x.min_duration_ms for n, x in s.items()} == dict.fromkeys(s, 600_000)
    assert {n: x.performance_sample_count_override for n, x in s.items()} == dict.fromkeys(s, 1024)
    assert s["offline"].min_query_count == 24_576
    assert (s["server"].server_target_latency_ns, s["server"].server_target_latency_percentile) == (15_000_000, 0.99)
    assert s["multistream"].multi_stream_samples_per_query == 8 and s["multistream"].min_query_count == 662
    assert s["multistream"].multi_stream_target_latency_percentile == pytest.approx(0.99)
    assert s["singlestream"].single_stream_target_latency_percentile == pytest.approx(0.90)
    assert s["offline"].qsl_rng_seed == 2085463073848966840  # mlperf.conf's fixed seeds
    opts = mlperf_settings.MlperfOptions(Path("x"), Path("y"), scenario="server")
    official = mlperf_settings.loadgen_settings(lg, opts, mlperf_settings.UserConf(server_target_qps=100))
    assert mlperf_settings.deviations(official, s["server"], "server") == []
    shorter = mlperf_settings.MlperfOptions(
        Path("x"), Path("y"), scenario="server", min_duration_s=700, sample_count=64, target_latency_ms=20
    )
    loose = mlperf_settings.loadgen_settings(lg, shorter, mlperf_settings.UserConf(server_target_qps=100))
    # a longer run stays compliant; fewer samples or a looser bound do not
    assert mlperf_settings.deviations(loose, s["server"], "server") == [
        "performance sample count 64 (official 1024)",
        "Server latency bound 20 ms (official 15 ms)",
    ]
    # the stop bound (max_async_queries): more than 1% of a 600 s run's queries plus a bound's worth of arrivals
    assert official.server_max_async_queries == 600 + 1 + 6 + 16


def test_offline_and_singlestream_are_valid_with_reduced_runs_and_say_not_compliant(random_ckpt, sample_dir, tmp_path):
    # Offline as a script runs it: --json, in a process of its own; LoadGen's C++ output must not reach stdout
    argv = ["bench", "mlperf", random_ckpt, sample_dir, *SHORT, "--min-query-count", "300", "--json", "--out", tmp_path]
    proc = subprocess.run([sys.executable, "-m", "rn50", *map(str, argv)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    r = json.loads(proc.stdout)  # the whole of stdout is the JSON document
    assert proc.returncode == 0, proc.stderr
    assert (r["result"], r["compliant"], r["source"]["image_size"]) == ("VALID", False, 32)
    assert "min duration 1 s (official 600 s)" in r["deviations"] and r["env"]["packages"]["mlcommons-loadgen"]
    run = r["runs"][0]
    summary = (Path(run["folder"]) / "mlperf_log_summary.txt").read_text()  # LoadGen's own verdict, untouched
    assert "Result is : VALID" in summary and f"Samples per second: {run['metric_value']:g}" in summary
    assert run["samples"] >= 300 and r["metric"]["unit"] == "samples/s"
    md = Path(r["files"]["md"]).read_text()
    assert "NOT COMPLIANT: min duration 1 s (official 600 s)" in md and "| offline | performance | 1 |" in md
    # SingleStream: one line on stdout naming the verdict, the figure and the non-compliance
    res = run_cli(["bench", "mlperf", random_ckpt, sample_dir, "--scenario", "singlestream", *SHORT, "--out", tmp_path])
    assert res.exit_code == 0, res.output
    line = res.stdout.splitlines()[0]
    assert line.startswith("MLPerf singlestream performance: VALID") and "ms (p90 latency" in line
    assert "NOT COMPLIANT: min duration 1 s (official 600 s); performance sample count 64" in line
    single = json.loads((tmp_path / "mlperf-singlestream-performance.json").read_text())
    assert single["plan"]["batch"] == 1 and single["runs"][0]["p90_ms"] > 0


def test_offline_with_two_inference_threads(random_ckpt, sample_dir, tmp_path):
    code, r, err = mlperf(random_ckpt, sample_dir, *SHORT, "--min-query-count", "200", "--concurrency", "2",
                          "--out", tmp_path)  # fmt: skip
    run = r["runs"][0]
    assert code in (0, 1) and run["samples"] >= 200, err
    # the runtime's calls overlap: their summed time can pass the run's duration, and the harness's share stays small
    assert run["inference_s"] > 0 and run["runtime_busy"] > 0.9


def test_multistream_sends_8_sample_queries_and_a_short_run_fails_early_stopping(random_ckpt, sample_dir, tmp_path):
    # --batch 4: a query of 8 samples is two calls, calibrated at the batch the SUT runs (it was calibrated at 8 only)
    code, r, err = mlperf(random_ckpt, sample_dir, "--scenario", "multistream", *SHORT, "--min-query-count", "30",
                          "--batch", "4", "--out", tmp_path)  # fmt: skip
    assert r is not None, err
    assert r["plan"]["batch"] == 4, r["plan"]
    run = r["runs"][0]
    # at least the 30 queries asked for, more when they end before the minimum duration: 8 samples each
    samples_per_query = run["settings"]["multi_stream_samples_per_query"]
    assert samples_per_query == 8 and run["samples"] % 8 == 0 and run["samples"] >= 8 * 30, run
    # LoadGen's early stopping needs 662 queries for a p99 estimate: INVALID, exit 1, and the table says why
    assert (code, r["result"], r["failed"]) == (1, "INVALID", ["early stopping"]), err
    assert "662" in run["early_stopping"]


@pytest.fixture(scope="module")
def tiny_torchscript(tiny_checkpoint, sample_dir, tmp_path_factory) -> Path:
    from rn50.export import export_model

    out = tmp_path_factory.mktemp("mlperf-ts") / "tiny.ts"
    export_model(tiny_checkpoint, "torchscript", out, image_size=64, max_batch=32, images_dir=sample_dir / "val")
    return out


def test_accuracy_is_rn50_evals_top1_and_checks_the_mlperf_target(tiny_checkpoint, tiny_torchscript, sample_dir,
                                                                  tmp_path):  # fmt: skip
    data = make_tiny_dataset(sample_dir, tmp_path / "data", 0, 12)  # 120 val images: 12 per class
    res = run_cli(["eval", tiny_torchscript, data, "--json"])
    assert res.exit_code == 0, res.output
    model, reference = json.loads(res.stdout)["rows"]
    code, r, err = mlperf(tiny_torchscript, data, "--mode", "accuracy", "--out", tmp_path / "ts")
    assert code == 0, err
    acc = r["accuracy"]
    # every val image once, scored from LoadGen's accuracy log: rn50 eval's figure exactly
    assert (acc["images"], r["source"]["backend"], r["compliant"]) == (120, "torchscript", True)
    assert acc["top1"] == pytest.approx(model["top1"], abs=1e-9) and 20 < acc["top1"] < 100
    # the 99% target from the sidecar's source checkpoint, evaluated on the same images
    ref = acc["fp32_reference"]
    assert ref["top1"] == pytest.approx(reference["top1"], abs=1e-9) and ref["from"].startswith(
        f"checkpoint {tiny_checkpoint} "
    )
    assert ref["target_top1"] == pytest.approx(0.99 * ref["top1"]) and ref["met"] is (acc["top1"] >= 0.99 * ref["top1"])
    # a given fp32 figure the model cannot reach: the target is missed, exit 1 after the tables are written
    code, r, _ = mlperf(tiny_checkpoint, data, "--mode", "accuracy", "--fp32-top1", "100", "--out", tmp_path)
    assert code == 1 and r["result"] == "target MISSED" and r["accuracy"]["top1"] == pytest.approx(reference["top1"])
    # sample by sample: LoadGen's log holds, per QSL index, the class eager PyTorch gives that image
    folder = Path(r["runs"][0]["folder"])
    val_map = [line.rsplit(" ", 1) for line in (folder / "val_map.txt").read_text().splitlines()]
    logged = {e["qsl_idx"]: e["data"] for e in json.loads((folder / "mlperf_log_accuracy.json").read_text())}
    assert len(val_map) == len(logged) == 120
    net = load_model(tiny_checkpoint).eval()
    for idx in (0, 1, 60, 119):
        path, label = val_map[idx]
        assert int(label) == sorted(p.name for p in (data / "val").iterdir()).index(path.split("/")[0])
        with torch.no_grad():
            expected = int(net(eval_image(data / "val" / path, 64)[None]).argmax())
        assert int(np.frombuffer(bytes.fromhex(logged[idx]), np.float32)[0]) == expected


def test_server_find_peak_is_a_bounded_search_over_valid_runs(random_ckpt, sample_dir, tmp_path):
    code, r, err = mlperf(
        random_ckpt, sample_dir, "--scenario", "server", *SHORT, "--target-latency-ms", "400", "--batch", "2",
        "--find-peak", "--peak-tries", "2", "--out", tmp_path,
    )  # fmt: skip
    assert code in (0, 1), err
    runs = r["runs"]
    assert 1 <= len(runs) <= 2 and len({run["folder"] for run in runs}) == len(runs)
    assert all(Path(run["folder"], "mlperf_log_summary.txt").is_file() for run in runs)
    valid = [run["target_qps"] for run in runs if run["result"] == "VALID"]
    assert r["peak_qps"] == (max(valid) if valid else None)
    assert "Server latency bound 400 ms (official 15 ms)" in r["deviations"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--scenario", "server", "--sample-count", "64", "--batch", "1", "--target-latency-ms", "0.01"],
            "bound cannot be met",
        ),
        ([], "fewer than the MLPerf performance sample count 1024"),
        (["--find-peak"], "Server scenario only"),
        (["--scenario", "singlestream", "--concurrency", "2"], "Offline and Server only"),
    ],
)
def test_bad_input_is_one_line(random_ckpt, sample_dir, tmp_path, args, needle):
    res = run_cli(["bench", "mlperf", random_ckpt, sample_dir, *args, "--out", tmp_path])
    assert res.exit_code == 2 and needle in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_bad_files_and_a_missing_extra_are_one_line(random_ckpt, sample_dir, tmp_path, monkeypatch):
    (tmp_path / "empty" / "val" / "cat").mkdir(parents=True)
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx model")
    cases = [
        ([random_ckpt, tmp_path / "empty"], "no images under"),
        ([tmp_path / "broken.onnx", sample_dir], "cannot load"),
    ]
    for argv, needle in cases:
        res = run_cli(["bench", "mlperf", *argv, "--out", tmp_path / "o"])
        assert res.exit_code == 2 and needle in res.stderr, res.output
        assert "Traceback" not in res.output and needle in res.stderr.strip().splitlines()[-1]
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)  # as if the extra were not installed
    res = run_cli(["bench", "mlperf", random_ckpt, sample_dir, "--out", tmp_path / "o"])
    assert res.exit_code == 2 and "pip install 'rn50[mlperf]'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("scenario", "signum"), [("offline", signal.SIGINT), ("server", signal.SIGTERM)])
def test_a_signal_stops_loadgen_cleanly_and_keeps_its_logs(random_ckpt, sample_dir, tmp_path, scenario, signum):
    argv = ["bench", "mlperf", random_ckpt, sample_dir, "--scenario", scenario, "--sample-count", "64"]
    argv += ["--min-duration", "120", "--out", tmp_path] + (
        ["--target-latency-ms", "500"] if scenario == "server" else []
    )
    code, out, _ = signal_when_written(list(map(str, argv)), tmp_path, "*/mlperf_log_detail.txt", signum, timeout_s=90)
    assert code == 128 + signum, out
    assert f"stopped by {signal.Signals(signum).name}" in out and "Traceback" not in out
    run = tmp_path / f"{scenario}-performance"
    assert "Result is : INVALID" in (run / "mlperf_log_summary.txt").read_text()  # LoadGen ended and wrote it
    table = (tmp_path / f"mlperf-{scenario}-performance.md").read_text()
    assert f"stopped by {signal.Signals(signum).name} (INVALID)" in table


def test_labels_follow_the_train_classes_when_val_lacks_one(sample_dir, tmp_path):
    """The QSL labels every image as `rn50 eval` does (rn50.data.folders.list_split): by train/'s classes, so a val/
    without one class does not shift every later label."""
    import shutil

    from rn50.bench.mlperf.library import SampleLibrary, eval_folder
    from rn50.data.folders import list_split

    data = make_tiny_dataset(sample_dir, tmp_path / "data", 1, 2)
    shutil.rmtree(data / "val" / sorted(p.name for p in (data / "val").iterdir())[0])
    library, split = SampleLibrary(eval_folder(data), 32), list_split(data, "val")
    assert [str(path) for path, _ in library.items] == split.files
    assert library.labels == split.labels and min(library.labels) == 1
