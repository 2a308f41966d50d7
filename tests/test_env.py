"""rn50.env directly: device tags for file names, package versions, the git commit, the captured environment."""

import json
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

import rn50
from rn50.env import capture_env, device_tag, git_commit, package_versions, short_device_name


@pytest.mark.parametrize(
    ("name", "tag"),
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA L40", "l40"),  # was labelled l4 ("l4" is a prefix of "l40")
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA GB200", "gb200"),  # was labelled b200 ("b200" is inside "gb200")
        ("NVIDIA B200", "b200"),
        ("NVIDIA A10", "a10"),
        ("NVIDIA A10G", "a10g"),  # not an A10 tag: the cleaned name
        ("Tesla T4", "t4"),
        ("Tesla V100-SXM2-16GB", "v100"),
        ("NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada-generation"),
    ],
)
def test_device_tag(name, tag):
    assert device_tag(name) == tag


def test_short_device_name_on_cpu():
    assert short_device_name("cpu") == "cpu"


def test_package_versions_reads_metadata():
    versions = package_versions(("torch", "numpy", "no-such-package-rn50"))
    assert versions["torch"] == metadata.version("torch") and versions["numpy"] == metadata.version("numpy")
    assert "no-such-package-rn50" not in versions


def test_git_commit_names_this_tree():
    root = Path(rn50.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        assert git_commit() is None
        return
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    commit = git_commit()
    assert commit is not None and commit.removesuffix("-dirty") == head


def test_capture_env_is_json_and_names_the_versions():
    env = capture_env()
    json.dumps(env)  # written as env.json: plain JSON values only
    assert env["rn50"] == rn50.__version__
    assert env["cpu_cores"] >= 1 and env["torch_threads"] >= 1
    assert env["packages"]["torch"] == metadata.version("torch")
    assert env["cuda_available"] is False or "gpus" in env
