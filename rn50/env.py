"""Capture the environment a result was produced in: versions, devices, clocks, git commit."""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


class _DropMessages:
    """A logging filter that drops records whose message starts with one of `prefixes`."""

    def __init__(self, *prefixes: str) -> None:
        self.prefixes = prefixes

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.prefixes)


# Known noise a user cannot act on: torch.utils.cpp_extension, imported when Inductor (torch.compile, AOTInductor)
# first builds C++, logs "No CUDA runtime is found, using CUDA_HOME=..." on any machine without a GPU that has a CUDA
# toolkit (or nvcc) installed; on the CPU it needs none. A filter on its logger (it need not be imported yet).
logging.getLogger("torch.utils.cpp_extension").addFilter(_DropMessages("No CUDA runtime is found"))

PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "nvidia-dali-cuda130",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "openvino",
    "nncf",
    "typer",
    "rich",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    """The commit of the rn50 source tree, with '-dirty' if it has local changes; None outside git."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def _cpuinfo(field: str) -> str | None:
    """The first `field` line's value in /proc/cpuinfo (None where there is no such file or field)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


# The instruction sets that decide CPU training and inference speed (fp32 FMA width, bf16, 8-bit dot products).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def cpu_signature() -> str:
    """x86 family/model/stepping, which tell CPUs apart where the model name does not ('AMD EPYC' is Zen 3 on one
    cloud machine and Zen 4 on the next); '' where /proc/cpuinfo does not say."""
    parts = [(k, _cpuinfo(f)) for k, f in (("family", "cpu family"), ("model", "model\t"), ("stepping", "stepping"))]
    return " ".join(f"{k} {v}" for k, v in parts if v)


def cpu_label() -> str:
    """A folder-name label for this CPU: model name, family/model and whether it has VNNI, e.g.
    'amd-epyc-f25m17-vnni'."""

    name = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")
    fam, mod = _cpuinfo("cpu family"), _cpuinfo("model\t")
    sig = f"-f{fam}m{mod}" if fam and mod else ""
    return f"{name}{sig}-{'vnni' if cpu_has_vnni() else 'novnni'}"


def cpu_flags(names: tuple[str, ...] = SPEED_FLAGS) -> list[str]:
    """Which of `names` this CPU has, in that order ([] where /proc/cpuinfo is absent)."""
    have = set((_cpuinfo("flags") or "").split())
    return [n for n in names if n in have]


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has 8-bit dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX); False if unknown."""
    return bool(cpu_flags(("avx512_vnni", "avx_vnni", "amx_int8")))


def nvidia_smi() -> list[dict[str, str]]:
    """Driver, clocks and power per GPU from nvidia-smi ([] where there is none)."""
    fields = "name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,power.limit,temperature.gpu"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    keys = fields.split(",")
    return [dict(zip(keys, (v.strip() for v in line.split(",")), strict=False)) for line in out.strip().splitlines()]


def capture_env() -> dict[str, Any]:
    import torch

    from rn50.version import __version__

    env: dict[str, Any] = {
        "rn50": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_signature": cpu_signature(),
        "cpu_flags": cpu_flags(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "packages": package_versions(),
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpus"] = [
            {
                "name": torch.cuda.get_device_name(i),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
                "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
            }
            for i in range(torch.cuda.device_count())
        ]
        smi = nvidia_smi()
        if smi:
            env["nvidia_smi"] = smi
            env["driver"] = smi[0].get("driver_version")
    return env


# GPU model tags, matched as whole words of the device name ("l4" must not match an L40, "b200" a GB200).
GPU_TAGS = ("gb200", "b200", "gh200", "h200", "h100", "a100", "l40s", "l40", "l4", "v100", "a10", "t4")


def device_tag(gpu_name: str) -> str:
    """A file-name-friendly label for a CUDA device name: 'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA L40' -> 'l40'."""
    name = gpu_name.lower()
    for tag in GPU_TAGS:
        if re.search(rf"(?<![a-z0-9]){tag}(?![a-z0-9])", name):
            return tag
    return re.sub(r"[^a-z0-9]+", "-", name.replace("nvidia", "")).strip("-") or "gpu"


def short_device_name(device: str = "cpu") -> str:
    """A file-name-friendly device label such as 'h100' or 'cpu'."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return device_tag(torch.cuda.get_device_name(0))
    return "cpu"


_SAID: set[str] = set()


def resolve_device(requested: str | None = "auto") -> str:
    """The one device rule of every command: `auto` (or None) is CUDA when PyTorch sees a GPU, else CPU (said once
    per process, in the log); `cpu`, `cuda` and `cuda:N` are checked and kept."""

    import torch

    from rn50.errors import UserError

    if requested in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in _SAID:
            _SAID.add(device)
            why = "a CUDA GPU is visible" if device == "cuda" else "no CUDA GPU is visible"
            logging.getLogger("rn50").info("--device auto: %s (%s)", device, why)
        return device
    if requested != "cpu" and not re.fullmatch(r"cuda(:\d+)?", str(requested)):
        raise UserError(f"--device must be cuda or cpu (or auto, cuda:N), not {requested!r}")
    if requested != "cpu" and not torch.cuda.is_available():
        raise UserError(f"--device {requested} asked for, but no CUDA GPU is visible; use --device cpu")
    return str(requested)


def synchronize(device: Any) -> None:
    """Wait until the work queued on `device` ("cuda", "cuda:1", a torch.device; None or "cpu": nothing to wait
    for) has finished: what every timer and barrier does before it reads a clock."""
    if device is None:
        return
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
