"""Real images for an export: INT8 calibration (a train split) and the parity check (a val split)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from torch import Tensor

from rn50.errors import UserError, need
from rn50.export.formats import ExportOptions

_SAMPLE_DIR: Path | None = None


def builtin_sample() -> Path:
    """The built-in digits sample, written once per process into a temporary folder."""
    global _SAMPLE_DIR
    if _SAMPLE_DIR is None:
        from rn50.data.sample import make_sample

        folder = Path(tempfile.mkdtemp(prefix="rn50-sample-"))
        atexit.register(shutil.rmtree, folder, True)
        make_sample(folder)
        _SAMPLE_DIR = folder
    return _SAMPLE_DIR


def image_folder(root: str | os.PathLike | None, split: str) -> Path:
    """A folder of class subfolders: `root/split` when it exists, else `root` itself (built-in sample if None)."""
    from rn50.data.transforms import list_images

    base = builtin_sample() if root is None else Path(root)
    need(base.is_dir(), f"image folder not found: {base}")
    for candidate in (base / split, base / ("val" if split == "train" else "train"), base):
        if candidate.is_dir() and list_images(candidate):
            return candidate
    raise UserError(f"no images under {base} (expected class folders of images, as in ImageNet's train/ or val/)")


def load_images(root: str | os.PathLike | None, split: str, n: int, image_size: int) -> Tensor:
    from rn50.data.transforms import load_eval_images

    return load_eval_images(image_folder(root, split), n, image_size)


def calibration_images(opts: ExportOptions) -> Tensor:
    """The INT8 calibration images an export asks for: `calib_count` from the train split of `calib_dir`."""
    return load_images(opts.calib_dir, "train", opts.calib_count, opts.image_size)
