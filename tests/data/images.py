"""Small image folders for loader tests: unusual-but-valid images (must be used) and corrupt ones (must be skipped)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

UNUSUAL = ("gray", "cmyk", "png_named_jpeg", "progressive", "tiny", "wide", "tall", "rgba_png")
UNUSUAL += ("png16", "trailing_bytes", "exif_rotated")  # valid, and each once broke a backend
CORRUPT = ("truncated", "garbage", "empty", "header_only")


def _rgb(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    # smooth colour gradients plus noise: something a decoder must get right, not flat grey
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), np.full_like(x, 128.0)], -1)
    return Image.fromarray((base + rng.normal(0, 10, base.shape)).clip(0, 255).astype(np.uint8))


def write_unusual(folder: Path, rng: np.random.Generator) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {name: folder / f"{name}.JPEG" for name in UNUSUAL}
    _rgb(rng, 48, 40).convert("L").save(out["gray"], format="JPEG")
    _rgb(rng, 48, 40).convert("CMYK").save(out["cmyk"], format="JPEG")
    _rgb(rng, 48, 40).save(out["png_named_jpeg"], format="PNG")
    _rgb(rng, 48, 40).save(out["progressive"], format="JPEG", progressive=True)
    _rgb(rng, 5, 4).save(out["tiny"], format="JPEG")
    _rgb(rng, 400, 8).save(out["wide"], format="JPEG")
    _rgb(rng, 6, 300).save(out["tall"], format="JPEG")
    _rgb(rng, 48, 40).convert("RGBA").save(out["rgba_png"], format="PNG")
    # 16-bit grayscale PNG: full 0..65535 range (8-bit decoders must scale it by 1/257, not clip or overflow)
    y, x = np.mgrid[0:40, 0:48]
    Image.fromarray((x * 65535 // 47 + y * 7).clip(0, 65535).astype(np.uint16)).save(out["png16"], format="PNG")
    # bytes after the end-of-image marker, as scraped files often have; libjpeg and PIL decode them
    buf = io.BytesIO()
    _rgb(rng, 48, 40).save(buf, format="JPEG")
    out["trailing_bytes"].write_bytes(buf.getvalue() + b"\x00" * 100 + rng.bytes(300))
    # stored 48 x 40, EXIF orientation 6 (rotate 90 degrees clockwise to display): shown 40 wide, 48 high
    exif_image(_rgb(rng, 48, 40), out["exif_rotated"])
    return list(out.values())


def exif_image(image: Image.Image, path: Path, orientation: int = 6) -> Path:
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, format="JPEG", exif=exif, quality=95)
    return path


def write_corrupt(folder: Path, rng: np.random.Generator) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    _rgb(rng, 48, 40).save(buf, format="JPEG")
    data = buf.getvalue()
    out = {name: folder / f"{name}.JPEG" for name in CORRUPT}
    out["truncated"].write_bytes(data[: len(data) // 3])
    out["garbage"].write_bytes(rng.bytes(700))
    out["empty"].write_bytes(b"")
    out["header_only"].write_bytes(data[:200] + b"\xff\xd9")  # claims to end properly, but has no scan data
    return list(out.values())


def write_odd_dataset(root: Path, seed: int, plain) -> Path:
    """train/ and val/ with class a unusual-but-valid images, class b corrupt ones, and class c written by
    `plain(folder, rng)`."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        write_unusual(root / split / "a", rng)
        write_corrupt(root / split / "b", rng)
        plain(root / split / "c", rng)
    return root


def make_tiny_dataset(src: Path, dst: Path, per_class_train: int, per_class_val: int) -> Path:
    """The first few images per class of the built-in sample, in the same layout."""
    for split, n in (("train", per_class_train), ("val", per_class_val)):
        for class_dir in sorted((src / split).iterdir()):
            target = dst / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for f in sorted(class_dir.iterdir())[:n]:
                shutil.copy(f, target / f.name)
    return dst
