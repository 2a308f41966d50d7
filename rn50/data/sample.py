"""The built-in sample: scikit-learn's 1,797 handwritten digits as an ImageNet-layout JPEG dataset."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from rn50.errors import UserError, need

SAMPLE_SIZE = 80  # px; the sample-cpu recipe crops 64 from it
VAL_FRACTION = 0.2
SPLIT_SEED = 0


def make_sample(out: str | os.PathLike, force: bool = False, size: int = SAMPLE_SIZE) -> dict[str, int]:
    """Write train/<class>/*.jpg and val/<class>/*.jpg under `out`; returns image counts per split."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise UserError("the sample needs scikit-learn: pip install 'rn50[sample]'") from None

    out = Path(out)
    need(not out.exists() or out.is_dir(), f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"{out} is not empty; pass --force to replace its train/ and val/ folders")
    from rn50.io import write_error

    # Written into a hidden folder beside the result and moved into place only when complete: a full disk or a
    # kill leaves no half sample, and --force replaces the old train/ and val/ only once the new ones exist.
    stage = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".rn50-sample-", dir=out))
        counts = _write_digits(stage, size)
        for split in ("train", "val"):
            shutil.rmtree(out / split, ignore_errors=True)
            os.replace(stage / split, out / split)
    except OSError as e:
        raise (write_error(out, e) or e) from None
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    return counts


def _write_digits(out: Path, size: int) -> dict[str, int]:
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images, labels = digits.images, digits.target
    indices = np.arange(len(labels))
    train_idx, val_idx = train_test_split(indices, test_size=VAL_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    counts = {}
    for split, idx in (("train", train_idx), ("val", val_idx)):
        for i in sorted(idx):
            # 0..16 ink intensity -> dark ink on white paper, upscaled smoothly to `size`.
            pixels = (255 - images[i] * (255 / 16)).clip(0, 255).astype(np.uint8)
            im = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC).convert("RGB")
            folder = out / split / f"digit{int(labels[i])}"
            folder.mkdir(parents=True, exist_ok=True)
            im.save(folder / f"{i:05d}.jpg", quality=92)
        counts[split] = len(idx)
    return counts
