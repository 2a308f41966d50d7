"""The Dockerfile cannot be built here (no Docker engine): its pin check runs here instead, against this
environment, and the Dockerfile is held to what the GPU paths need."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = [sys.executable, str(ROOT / "docker" / "check_pins.py")]


def test_pin_check_passes_for_the_extras_installed_here():
    pytest.importorskip("tomllib", reason="Python 3.11+ (the image has 3.12)")
    res = subprocess.run([*CHECK, "dali", "onnx", "sample", "triton"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert re.search(r"torch 2\.\d+", res.stdout) and "grpcio" in res.stdout  # tritonclient[grpc]'s own packages


def test_pin_check_names_every_requirement_not_met(tmp_path):
    pytest.importorskip("tomllib", reason="Python 3.11+ (the image has 3.12)")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "rn50"\ndependencies = ["torch>=99", "numpy>=1"]\n'
        '[project.optional-dependencies]\nx = ["no-such-package-rn50>=1", "rn50[x]"]\n'
    )
    res = subprocess.run([*CHECK, "x", "--pyproject", str(tmp_path / "pyproject.toml")], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and "torch" in lines[0] and "torch>=99" in lines[0]
    assert "no-such-package-rn50: not installed" in lines[1]


def test_the_image_installs_what_the_gpu_paths_need_and_checks_it():
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM nvcr\.io/nvidia/pytorch:(\d+)\.(\d+)-py3$", text, re.M)
    assert base and (int(base[1]), int(base[2])) >= (26, 4)  # the first tags whose torch (2.12.0a0) is >= 2.11
    for package in ("onnxruntime-gpu", "scikit-learn", "tritonclient[grpc]"):
        assert package in text, package
    run = text[text.index("RUN ") :]
    assert run.index("pip check") > max(m.start() for m in re.finditer("--no-deps", run))  # checked after
    assert "check_pins.py dali trt onnx sample triton" in run
