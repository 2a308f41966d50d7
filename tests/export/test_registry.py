"""The artifact-format registry: names, suffixes, precisions and options in one place, used by export and bench."""

import json

import pytest

from rn50.bench.runtimes import RUNTIMES
from rn50.errors import UserError
from rn50.export import FORMATS, export_model
from rn50.export.formats import (
    REGISTRY,
    ExportOptions,
    artifact_format,
    artifact_formats,
    get_format,
    is_artifact,
    packaged_format,
)
from rn50.export.sidecar import sidecar_path
from rn50.export.trt import network_flags


def test_one_record_per_format_with_every_name():
    assert FORMATS == ("onnx", "torchscript", "aoti", "trt", "openvino", "triton")
    assert get_format("onnxruntime") is get_format("onnx") is REGISTRY["onnx"]
    assert get_format("tensorrt") is get_format("TRT") is REGISTRY["trt"]
    assert get_format("aotinductor").name == "aoti"
    for fmt in artifact_formats():
        assert fmt.runtime in RUNTIMES  # bench infer runs every artifact format under its runtime name
        assert fmt.exporter and fmt.loader and fmt.suffixes and fmt.precisions
    with pytest.raises(
        UserError, match="unknown format 'tflite'; valid formats: onnx, torchscript, aoti, trt, openvino, triton"
    ):
        get_format("tflite")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("m.onnx", "onnx"),
        ("m.ts", "torchscript"),
        ("m.pt2", "aoti"),
        ("m.plan", "trt"),
        ("m.engine", "trt"),
        ("m.ov", "openvino"),
        ("model.xml", "openvino"),
    ],  # fmt: skip
)
def test_suffixes(tmp_path, name, fmt):
    path = tmp_path / name
    assert is_artifact(path) and artifact_format(path, None).name == fmt


def test_checkpoint_suffix_is_an_artifact_only_with_a_sidecar(tmp_path):
    path = tmp_path / "model.pt"  # torchscript inside a Triton repository, but also the usual checkpoint suffix
    assert not is_artifact(path)
    sidecar_path(path).write_text(json.dumps({"format": "torchscript"}))
    assert is_artifact(path)
    assert artifact_format(path, {"format": "onnx"}).name == "onnx"  # the sidecar's word beats the suffix
    with pytest.raises(UserError, match="cannot tell the format of .*known suffixes: .*\\.onnx"):
        artifact_format(tmp_path / "model.bin", None)


def test_export_options_resolve_defaults_and_refuse_bad_values():
    trt, onnx = get_format("trt"), get_format("onnx")
    assert ExportOptions().resolved(trt).precision == "fp16"
    assert ExportOptions(precision="int8").resolved(trt).int8_target == "tensorrt"
    assert ExportOptions(precision="int8").resolved(onnx).int8_target == "cpu"
    assert ExportOptions(precision="int8", device="cuda").resolved(onnx).int8_target == "tensorrt"
    for opts, message in [
        (ExportOptions(precision="bf16"), "onnx does not support precision 'bf16'"),
        (ExportOptions(calib_method="magic"), "unknown calibration method 'magic'"),
        (ExportOptions(max_batch=0), "--max-batch must be >= 1"),
        (ExportOptions(image_size=100), "--image-size must be a multiple of 32"),
        (ExportOptions(int8_target="arm"), "unknown --int8-target 'arm'"),
    ]:
        with pytest.raises(UserError, match=message):
            opts.resolved(onnx)
    with pytest.raises(UserError, match="use --int8-target tensorrt"):
        ExportOptions(int8_target="cpu").resolved(trt)


def test_triton_packages_an_artifact_format():
    triton = get_format("triton")
    inner, opts = packaged_format(triton, ExportOptions(triton_backend="torchscript"))
    assert inner.name == "torchscript" and opts.precision == "fp32"
    with pytest.raises(UserError, match="unknown Triton backend 'aoti'"):
        packaged_format(triton, ExportOptions(triton_backend="aoti"))
    with pytest.raises(UserError, match="triton does not support precision 'bf16'"):
        packaged_format(triton, ExportOptions(precision="bf16"))


def test_export_takes_options_or_overrides(tmp_path):
    from rn50.model import resnet50

    with pytest.raises(UserError, match="torchscript does not support precision 'int8'"):
        export_model(resnet50(num_classes=4), "torchscript", tmp_path / "m.ts", ExportOptions(precision="int8"))
    with pytest.raises(TypeError):
        export_model(resnet50(num_classes=4), "torchscript", tmp_path / "m.ts", no_such_option=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("version", "flag", "expected"),
    [("10.3.0", 5, (1 << 5, True)), ("10.0.1", None, (0, False)), ("11.0.0", 5, (0, True)), ("11.1", None, (0, True))],
)
def test_tensorrt_network_flags(version, flag, expected):
    # The sidecar's strongly_typed comes from here: it was hard-coded True even for weakly typed networks.
    assert network_flags(version, flag) == expected


def test_help_names_every_registered_format_and_runtime():
    """The help texts are written out (the CLI does not import the registry to show --help); they must not drift."""
    import re

    from tests.conftest import run_cli

    text = run_cli(["export", "--help"]).stdout
    segment = text[text.index("--format") : text.index("[required]", text.index("--format"))]
    words = set(re.findall(r"(?<![-<])\b[a-z]+\b(?!>)", segment.replace("│", " "))) - {"f", "str"}
    assert words == set(FORMATS), segment
    text = " ".join(run_cli(["bench", "infer", "--help"]).stdout.split())
    for runtime in RUNTIMES:
        assert re.search(rf"\b{runtime}\b", text), runtime
