"""Load ResNet-50 weights from rn50 checkpoints, torchvision state_dicts and NVIDIA NGC/DLE checkpoints.

Every load is `torch.load(..., weights_only=True)`: a checkpoint that needs arbitrary code to unpickle is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rn50.errors import UserError, need
from rn50.io import atomic_torch_save
from rn50.model import ResNet, resnet50

CHECKPOINT_FORMAT = "rn50-checkpoint"
# Where other tools keep the weights inside a checkpoint dict, most specific first.
MODEL_KEYS = ("model", "state_dict", "model_state_dict", "net")
EMA_KEYS = ("ema", "model_ema", "state_dict_ema", "ema_state_dict")
PREFIXES = ("module.", "_orig_mod.", "model.")


def read_checkpoint(path: str | os.PathLike) -> Any:
    """torch.load with weights_only=True, turning every failure into one clear UserError."""
    return _read(Path(path), hash_bytes=False)[0]


def read_checkpoint_hashed(path: str | os.PathLike) -> tuple[Any, str]:
    """(read_checkpoint(path), the file's sha256) from one read of the file."""
    obj, digest = _read(Path(path), hash_bytes=True)
    assert digest is not None
    return obj, digest


def _read(path: Path, hash_bytes: bool) -> tuple[Any, str | None]:
    need(path.exists(), f"checkpoint not found: {path}")
    need(not path.is_dir(), f"checkpoint is a directory, not a file: {path}")
    need(path.stat().st_size != 0, f"checkpoint is empty (0 bytes): {path}")
    kind = _container(path)
    if kind == "cut-zip":
        raise UserError(
            f"cannot read checkpoint {path}: truncated (a zip archive without its end: the save or copy was cut "
            "short); copy it again or use another checkpoint"
        )
    if kind is None:
        raise UserError(
            f"cannot read checkpoint {path}: not a PyTorch file (neither a zip archive nor a pickle); "
            "it is corrupt or another format: copy it again or point to the right file"
        )
    digest = None
    try:
        if hash_bytes:
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), digest
        return torch.load(path, map_location="cpu", weights_only=True), digest
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise UserError(
                f"refusing {path}: it needs arbitrary code to load (not a plain weights file); "
                "re-save its state_dict with torch.save(model.state_dict(), ...) from a trusted environment"
            ) from None
        raise UserError(f"cannot read checkpoint {path}: {_DAMAGED}") from None
    except Exception:  # torch.load raises many types on damaged files (IndexError, EOFError, RuntimeError, ...)
        raise UserError(f"cannot read checkpoint {path}: {_DAMAGED}") from None


_DAMAGED = "truncated or corrupt PyTorch file (its data does not unpickle); copy it again or use another checkpoint"


def _container(path: Path) -> str | None:
    """'zip' (torch.save's format), 'cut-zip' (its start without its end), 'pickle' (the legacy format), or None."""
    import zipfile

    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        return "cut-zip"
    # A pickle starts with PROTO (0x80) and a protocol number; torch's legacy format pickles a magic number first.
    return "pickle" if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5 else None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def extract_state_dict(obj: Any, ema: bool = False) -> dict[str, Tensor]:
    """Find the model weights inside a loaded checkpoint (ours, torchvision's, NVIDIA's, EMA)."""
    if _is_state_dict(obj):
        need(not ema, "--ema asked for, but this checkpoint is a plain state_dict without EMA weights")
        return dict(obj)
    need(isinstance(obj, Mapping), f"checkpoint holds a {type(obj).__name__}, not a state_dict or a dict of them")
    keys = EMA_KEYS if ema else MODEL_KEYS
    for key in keys:
        if _is_state_dict(obj.get(key)):
            return dict(obj[key])
    what = "EMA weights" if ema else "model weights"
    raise UserError(
        f"no {what} found in checkpoint (looked for keys {', '.join(keys)}; it has {', '.join(map(str, obj))})"
    )


def normalize_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip DDP/compile prefixes and map NVIDIA's `layers.N.` onto torchvision's `layerN+1.`."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        key = re.sub(r"^layers\.(\d+)\.", lambda m: f"layer{int(m.group(1)) + 1}.", key)
        out[key] = value
    return out


def check_compatible(state_dict: Mapping[str, Tensor], model: torch.nn.Module) -> None:
    """Raise a UserError naming the keys and shapes that differ from `model`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
    if unexpected:
        problems.append(
            f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:4])}{', ...' if len(unexpected) > 4 else ''})"
        )
    if mismatched:
        problems.append(f"shape mismatch: {'; '.join(mismatched[:4])}{'; ...' if len(mismatched) > 4 else ''}")
    need(not problems, "weights do not fit ResNet-50 v1.5: " + "; ".join(problems))


def load_weights(path: str | os.PathLike, num_classes: int | None = None, ema: bool = False) -> dict[str, Tensor]:
    """A strict-loadable ResNet-50 v1.5 state_dict from any supported checkpoint."""
    return weights_from(read_checkpoint(path), path, num_classes, ema)


def weights_from(obj: Any, path: str | os.PathLike, num_classes: int | None = None, ema: bool = False) -> dict:
    """`load_weights` on a checkpoint already read (`path` only names it in messages)."""
    state_dict = normalize_keys(extract_state_dict(obj, ema=ema))
    fc = state_dict.get("fc.weight")
    need(fc is not None, f"{path}: no fc.weight, so this is not a ResNet-50 classifier checkpoint")
    found_classes = fc.shape[0]
    if num_classes is not None and found_classes != num_classes:
        raise UserError(
            f"{path} has {found_classes} classes (fc.weight {tuple(fc.shape)}) but {num_classes} were asked for"
        )
    reference = resnet50(num_classes=found_classes)
    check_compatible(state_dict, reference)
    for key, value in reference.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state_dict.setdefault(key, torch.zeros_like(value))
    return state_dict


def load_model(path: str | os.PathLike, num_classes: int | None = None, ema: bool = False) -> ResNet:
    """ResNet-50 v1.5 with weights from `path`, in eval mode."""
    return model_from(read_checkpoint(path), path, num_classes, ema)


def model_from(obj: Any, path: str | os.PathLike, num_classes: int | None = None, ema: bool = False) -> ResNet:
    """`load_model` on a checkpoint already read."""
    state_dict = weights_from(obj, path, num_classes=num_classes, ema=ema)
    model = resnet50(num_classes=state_dict["fc.weight"].shape[0])
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def meta_from(obj: Any) -> dict[str, Any]:
    """The recipe and bookkeeping stored beside the weights in a checkpoint already read ({} for other formats)."""
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        return {k: v for k, v in obj.items() if k in ("recipe", "epoch", "iteration", "best_top1", "rn50_version")}
    return {}


def save_weights(path: str | os.PathLike, model: torch.nn.Module, **extra: Any) -> None:
    """Write a minimal rn50 checkpoint (weights + metadata such as `recipe`) atomically."""
    from rn50.version import __version__

    module = getattr(model, "module", model)
    module = getattr(module, "_orig_mod", module)
    obj = {"format": CHECKPOINT_FORMAT, "rn50_version": __version__, "model": module.state_dict(), **extra}
    atomic_torch_save(obj, path)
