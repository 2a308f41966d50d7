"""The built-in sample: scikit-learn's 1,797 handwritten digits as an ImageNet-layout JPEG dataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from rn50.errors import UserError

SAMPLE_SIZE = 80  # px; the sample-cpu recipe crops 64 from it
VAL_FRACTION = 0.2
SPLIT_SEED = 0


def class_name(label: int) -> str:
    return f"digit{label}"


def make_sample(out: str | os.PathLike, force: bool = False, size: int = SAMPLE_SIZE) -> dict[str, int]:
    """Write train/<class>/*.jpg and val/<class>/*.jpg under `out`; returns image counts per split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise UserError("the sample needs scikit-learn: pip install 'rn50[sample]'") from None
    from PIL import Image

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UserError(f"{out} is not empty; pass --force to replace its train/ and val/ folders")
        for split in ("train", "val"):
            shutil.rmtree(out / split, ignore_errors=True)

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
            folder = out / split / class_name(int(labels[i]))
            folder.mkdir(parents=True, exist_ok=True)
            im.save(folder / f"{i:05d}.jpg", quality=92)
        counts[split] = len(idx)
    return counts
