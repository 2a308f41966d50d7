"""OpenVINO IR exports of the model the sample recipe trains: parity, the precision OpenVINO really runs, its kernels,
Triton and eval, telemetry and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from rn50.export import export_model, load_artifact
from rn50.export.sidecar import sha256_file, sidecar_path
from tests.conftest import export_openvino, run_cli
from tests.export.test_bad_input import one_line_error

# find_spec, not importorskip: a plain `import openvino` here would send its telemetry (rn50.export.openvino does not).
pytestmark = pytest.mark.skipif(find_spec("openvino") is None, reason="openvino is not installed (rn50[openvino])")
ROOT = Path(__file__).resolve().parents[2]
NO_CI = ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI")  # each turns telemetry off by itself: the opt-out must not need it


def sidecar(path: Path) -> dict:
    return json.loads(sidecar_path(path).read_text())


def int8_kernels(info: dict) -> tuple[int, int]:
    convs = info["kernels"]["Convolution"]
    return sum(n for k, n in convs.items() if k.endswith("_I8")), sum(n for k, n in convs.items() if k.endswith("_f32"))


def test_fp32_keeps_fp32_weights_and_runs_f32(openvino_fp32):
    meta = sidecar(openvino_fp32)
    info = meta["export"]["openvino"]
    # OpenVINO's default on this CPU (avx512_bf16) is bf16: the hint and what the compiled model reports.
    assert (info["inference_precision_hint"], info["inference_precision"]) == ("f32", "float32")
    convs = info["kernels"]["Convolution"]
    assert sum(convs.values()) == 53 and all(k.endswith("_f32") for k in convs), convs
    xml = (openvino_fp32 / "model.xml").read_text()
    assert 'element_type="f32"' in xml and 'element_type="f16"' not in xml  # no fp16-compressed weights
    assert info["files"] == {f: sha256_file(openvino_fp32 / f) for f in ("model.xml", "model.bin")}
    parity = meta["parity"]
    assert parity["passed"] and max(parity["random"]["max_rel"], parity["real"]["max_rel"]) <= 1e-3
    assert meta["format"] == "openvino" and meta["versions"]["openvino"]


def test_bf16_runs_bf16_kernels(sample_model, sample_dir, tmp_path):
    from rn50.export.openvino import cpu_capabilities

    if "BF16" not in cpu_capabilities():
        pytest.skip("this CPU has no native bf16")
    info = export_openvino(sample_model, sample_dir, tmp_path / "bf16.ov", "--precision", "bf16")["export"]
    assert info["openvino"]["inference_precision"] == "bfloat16"
    assert all(k.endswith("_bf16") for k in info["openvino"]["kernels"]["Convolution"])


def test_bf16_is_refused_where_the_cpu_would_run_f32(sample_model, tmp_path, monkeypatch):
    import rn50.export.openvino as ov

    monkeypatch.setattr(ov, "cpu_capabilities", lambda: ["FP32", "INT8"])
    args = ["export", sample_model["checkpoint"], "--format", "ov", "--precision", "bf16", "--out", tmp_path / "b"]
    res = run_cli(args)
    one_line_error(res, "no native bf16")
    assert list(tmp_path.iterdir()) == []


def test_int8_nncf_default_agrees_keeps_json_clean_and_sends_no_telemetry(sample_model, sample_dir, tmp_path):
    """The default INT8 quantiser on every val image of the sample, through `--json` in a fresh process whose HOME
    is empty and which has none of the CI variables that would turn telemetry off by themselves."""
    home, out = tmp_path / "home", tmp_path / "int8.ov"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in NO_CI} | {"HOME": str(home)}
    cmd = [sys.executable, "-m", "rn50", "export", str(sample_model["checkpoint"]), "--format", "openvino",
           "--precision", "int8", "--image-size", "32", "--max-batch", "64", "--calib", str(sample_dir / "train"),
           "--images", str(sample_dir / "val"), "--parity-images", "360", "--out", str(out), "--json"]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)  # the whole of stdout: NNCF's progress bars and INFO lines went to the debug log
    assert list(home.iterdir()) == []  # no ~/intel/openvino_ga_cid, no stats, no consent file needed
    info, quant = doc["export"]["openvino"], doc["export"]["quantization"]
    assert info["quantizer"] == "nncf" and quant["fake_quantize"] > 0 and len(quant["float_nodes"]) == 1
    assert int8_kernels(info) == (52, 1), info["kernels"]  # 52 INT8 convolutions, the stem kept float
    real = doc["parity"]["real"]
    assert real["n"] == 360 and real["top1_agreement"] >= 0.99, real


def test_int8_from_the_ort_cpu_qdq_model(sample_model, sample_dir, tmp_path):
    out = tmp_path / "int8-ort.ov"
    meta = export_openvino(sample_model, sample_dir, out, "--precision", "int8", "--quantizer", "ort")
    assert meta["export"]["onnx"]["quantization"]["target"] == "cpu"  # the onnx format's verified CPU form
    assert int8_kernels(meta["export"]["openvino"]) == (52, 1)
    assert meta["parity"]["real"]["top1_agreement"] >= 0.99


def test_telemetry_is_off_without_a_consent_file(tmp_path):
    code = (
        "from rn50.export.openvino import openvino\nopenvino()\nimport nncf\n"
        "from openvino.tools.ovc import telemetry_utils\nfrom nncf.telemetry import wrapper\n"
        "print(telemetry_utils.tm.__name__, isinstance(wrapper.telemetry, wrapper.NNCFTelemetryStub))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in NO_CI} | {"HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    # Both libraries took their no-op stubs (the path they take when openvino_telemetry is not installed).
    assert res.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "True"]
    assert list(tmp_path.iterdir()) == []


def test_eval_takes_the_ir(openvino_fp32, sample_dir):
    res = run_cli(["eval", openvino_fp32, sample_dir, "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert (result["rows"][0]["format"], result["images"]) == ("openvino", 360)
    assert result["top1_agreement"] >= 0.995  # fp32: the same function as its checkpoint


def test_triton_repository_for_the_openvino_backend(sample_model, sample_dir, openvino_fp32, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    repo = tmp_path / "repo"
    export_model(
        sample_model["checkpoint"], "triton", repo, triton_backend="openvino", image_size=32, max_batch=16,
        images_dir=sample_dir / "val", calib_dir=sample_dir / "train",
    )  # fmt: skip
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    assert files == ["rn50/1/model.bin", "rn50/1/model.xml", "rn50/1/model.xml.json", "rn50/config.pbtxt"]
    config = text_format.Parse((repo / "rn50" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert (config.backend, config.platform) == ("openvino", "")  # Triton's OpenVINO backend is named by backend
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [3, 32, 32])]
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(load_artifact(repo)(x), load_artifact(openvino_fp32)(x), rtol=1e-5, atol=1e-5)


def test_corrupt_or_missing_ir_files_are_one_line(openvino_fp32, sample_dir, tmp_path):
    def broken(name: str, damage) -> Path:
        copy = tmp_path / name
        shutil.copytree(openvino_fp32, copy)
        shutil.copy(sidecar_path(openvino_fp32), sidecar_path(copy))
        damage(copy)
        return copy

    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:1000])

    cases = [
        (broken("xml.ov", lambda p: (p / "model.xml").write_text("<net><layers>")), "not a readable OpenVINO IR"),
        (broken("bin.ov", lambda p: truncate(p / "model.bin")), "does not match the sha256 its sidecar records"),
        (broken("gone.ov", lambda p: (p / "model.bin").unlink()), "OpenVINO IR file missing"),
    ]
    nosidecar = broken("bare.ov", lambda p: truncate(p / "model.bin"))
    sidecar_path(nosidecar).unlink()
    cases.append((nosidecar, "Incorrect weights in bin file"))  # no hashes to check: OpenVINO's own reason
    for path, message in cases:
        one_line_error(run_cli(["eval", path, sample_dir, "--image-size", "32"]), message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "fp16"], "openvino does not support precision 'fp16'"),
        (["--precision", "int8", "--int8-target", "tensorrt"], "use --int8-target cpu"),
        (["--precision", "int8", "--calib-method", "entropy"], "use --quantizer ort"),
        (["--precision", "int8", "--quantizer", "magic"], "unknown --quantizer 'magic'"),
        (["--quantizer", "ort"], "--quantizer applies to --precision int8 only"),
    ],
)
def test_bad_options_are_one_line(sample_model, tmp_path, args, message):
    res = run_cli(["export", sample_model["checkpoint"], "--format", "openvino", "--out", tmp_path / "m.ov", *args])
    one_line_error(res, message)
    assert list(tmp_path.iterdir()) == []


def test_quantizer_with_another_format_is_one_line(sample_model, tmp_path):
    res = run_cli(["export", sample_model["checkpoint"], "--format", "onnx", "--quantizer", "nncf"])
    one_line_error(res, "--quantizer applies to --format openvino")
    # --triton-backend names the model inside a Triton repository only: it does not make an ONNX export take one
    args = ["--format", "onnx", "--triton-backend", "openvino", "--quantizer", "nncf", "--out", tmp_path / "m.onnx"]
    one_line_error(run_cli(["export", sample_model["checkpoint"], *args]), "--quantizer applies to --format openvino")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("module", "extra"), [("openvino", "openvino"), ("nncf", "openvino-quant")])
def test_missing_extra_is_one_line(sample_model, tmp_path, module, extra):
    code = (
        f"import sys\nsys.modules[{module!r}] = None\nfrom rn50.cli import main\n"
        f"main(['export', {str(sample_model['checkpoint'])!r}, '--format', 'openvino', '--precision', 'int8', "
        f"'--image-size', '32', '--out', {str(tmp_path / 'm.ov')!r}])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert f"pip install 'rn50[{extra}]'" in lines[0] and res.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_openvino_exports_and_runs_on_the_cpu_whatever_the_device():
    # `--device auto` is cuda on a GPU machine: the IR is still built and checked where OpenVINO runs it.
    from rn50.export import _resolve_device
    from rn50.export.formats import get_format

    assert _resolve_device(get_format("openvino"), "cuda").type == "cpu"
    assert _resolve_device(get_format("onnx"), "cpu").type == "cpu"
