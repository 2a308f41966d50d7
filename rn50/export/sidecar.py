"""The metadata sidecar written beside every artifact: what it is, where it came from, how to feed it, proof."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

from rn50.errors import UserError

SIDECAR_SCHEMA = "rn50-export/1"


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """`model.onnx` -> `model.onnx.json` (a Triton repository keeps it beside its inner model file)."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_sidecar(
    *,
    fmt: str,
    precision: str,
    source: str | None,
    source_sha256: str | None,
    recipe: dict | None,
    num_classes: int,
    image_size: int,
    max_batch: int,
    device: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from rn50.data.transforms import preprocess_info
    from rn50.env import PACKAGES, git_commit, package_versions
    from rn50.version import __version__

    return {
        "schema": SIDECAR_SCHEMA,
        "format": fmt,
        "precision": precision,
        "source_checkpoint": source,
        "source_sha256": source_sha256,
        "recipe": recipe,
        "num_classes": num_classes,
        "input": {
            "name": "input",
            "shape": ["batch", 3, image_size, image_size],
            "dtype": "float32",
            "dynamic_axes": {"input": {"0": "batch"}, "logits": {"0": "batch"}},
            "batch_range": [1, max_batch],
        },
        "output": {"name": "logits", "shape": ["batch", num_classes], "dtype": "float32"},
        "preprocessing": preprocess_info(image_size),
        "export_device": device,
        "versions": {
            **package_versions(PACKAGES + ("onnxscript", "onnxsim", "tritonclient")),
            "python": platform.python_version(),
        },
        "rn50_version": __version__,
        "git_commit": git_commit(),
        **(extra or {}),
    }


def sidecar_max_batch(sidecar: dict[str, Any]) -> int | None:
    """The largest batch an rn50.export artifact was built for (its sidecar's input batch range)."""
    batch_range = (sidecar.get("input") or {}).get("batch_range") or [None]
    return int(batch_range[-1]) if batch_range[-1] else None


def sidecar_image_size(sidecar: dict[str, Any]) -> int | None:
    shape = (sidecar.get("input") or {}).get("shape") or [None]
    return int(shape[-1]) if isinstance(shape[-1], int) else None


def read_sidecar(artifact: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of `artifact`, or None when there is none."""
    path = sidecar_path(artifact)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the sidecar {path}: {e}; re-export the artifact") from None
