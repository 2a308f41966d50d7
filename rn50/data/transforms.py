"""Preprocessing defined once for training, export and benchmarks: constants, decoding, the train crop window and
flip, the eval centre crop, normalisation."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from rn50.data.folders import IMAGE_EXTENSIONS, scan_folder  # noqa: F401 - IMAGE_EXTENSIONS re-exported

# ImageNet statistics on the 0-255 scale (the recipe normalises uint8 pixels directly).
MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Train: random resized crop with this area and aspect range, then a horizontal flip.
CROP_AREA = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def open_rgb(path: str | os.PathLike):
    """A PIL RGB image of `path` as every rn50 path sees it: EXIF orientation applied (as DALI's decoders and
    torchvision's `apply_exif_orientation` do), 16-bit samples scaled to 8 bits (round(v / 257), as DALI does;
    PIL's own convert clips them at 255)."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            values = np.asarray(im).astype(np.int64)
            im = Image.fromarray(((values.clip(0, 65535) + 128) // 257).astype(np.uint8))
        return im.convert("RGB")


def eight_bit(image: Tensor) -> Tensor:
    """uint8 from a decoder's uint16 output (16-bit PNG): round(v / 257), exactly what DALI's decoder gives."""
    if image.dtype == torch.uint8:
        return image
    return ((image.to(torch.int32) + 128) // 257).to(torch.uint8)


def eval_resize(image_size: int) -> int:
    """Shorter side before the centre crop: 256 for 224, scaled the same for other sizes."""
    return round(image_size * 256 / 224)


CROP_TRIES = 10  # area/aspect draws before the centre-crop fallback (torchvision's RandomResizedCrop)


def seeded_uniforms(seeds, k: int):
    """(n, k) float64 in [0, 1), a pure function of each sample's seed (SplitMix64 of seed + j * golden ratio):
    vectorised over a batch, and the same numbers whichever backend, worker or rank draws them."""
    import numpy as np

    x = np.asarray(seeds, dtype=np.int64).astype(np.uint64)[:, None]
    x = x + np.arange(1, k + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def train_windows(
    heights,
    widths,
    seeds,
    crop_area: tuple[float, float] = CROP_AREA,
    crop_ratio: tuple[float, float] = CROP_RATIO,
    hflip: bool = True,
):
    """(top, left, h, w, flip) int64/bool arrays: each training sample's crop window and flip, drawn from its
    augmentation seed only (torchvision's RandomResizedCrop rule: area in `crop_area` of the image, aspect w/h
    log-uniform in `crop_ratio`, up to CROP_TRIES draws, else the largest centre crop within `crop_ratio`).

    The one rule every file backend uses, for a whole batch at once: they take the same crops, and a resumed run
    sees the crops an uninterrupted one does."""
    import numpy as np

    # (A size of 0 is a file the index found bad: its window is never used, only kept finite.)
    H, W = np.maximum(np.asarray(heights, np.float64), 1), np.maximum(np.asarray(widths, np.float64), 1)
    u = seeded_uniforms(seeds, 2 * CROP_TRIES + 3)
    t = CROP_TRIES
    target = (H * W)[:, None] * (crop_area[0] + (crop_area[1] - crop_area[0]) * u[:, :t])
    lo, hi = math.log(crop_ratio[0]), math.log(crop_ratio[1])
    ratio = np.exp(lo + (hi - lo) * u[:, t : 2 * t])
    w, h = np.rint(np.sqrt(target * ratio)), np.rint(np.sqrt(target / ratio))
    fits = (w >= 1) & (w <= W[:, None]) & (h >= 1) & (h <= H[:, None])
    found, first, rows = fits.any(1), fits.argmax(1), np.arange(len(H))
    # The fallback: the whole image, cut to the nearest aspect in crop_ratio, centred.
    aspect = W / H
    fh = np.where(aspect < crop_ratio[0], np.rint(W / crop_ratio[0]), H).clip(1, H)
    fw = np.where(aspect > crop_ratio[1], np.rint(H * crop_ratio[1]), W).clip(1, W)
    h, w = np.where(found, h[rows, first], fh), np.where(found, w[rows, first], fw)
    top = np.where(found, np.floor(u[:, 2 * t] * (H - h + 1)), (H - h) // 2)
    left = np.where(found, np.floor(u[:, 2 * t + 1] * (W - w + 1)), (W - w) // 2)
    flip = (u[:, 2 * t + 2] < 0.5) & hflip
    return top.astype(np.int64), left.astype(np.int64), h.astype(np.int64), w.astype(np.int64), flip


def center_crop_boxes(heights, widths, image_size: int):
    """(top, left, side, side) int64 arrays: the region that `resize shorter side to eval_resize(size), centre crop
    size` keeps, in source pixels, for a whole batch."""
    import numpy as np

    H, W = np.asarray(heights, np.int64), np.asarray(widths, np.int64)
    short = np.minimum(H, W)
    side = np.maximum(1, np.minimum(short, np.rint(short * image_size / eval_resize(image_size)).astype(np.int64)))
    return (H - side) // 2, (W - side) // 2, side, side


def sample_windows(
    heights,
    widths,
    seeds,
    train: bool,
    image_size: int,
    crop_area: tuple[float, float] = CROP_AREA,
    crop_ratio: tuple[float, float] = CROP_RATIO,
    hflip: bool = True,
):
    """(top, left, h, w, flip) arrays for a batch: train draws each sample's window and flip from its seed
    (`train_windows`), eval takes the centre crop of `eval_resize` (`center_crop_boxes`), unflipped. The one
    geometry of every file backend's train and val batches and of the export/benchmark eval images."""
    import numpy as np

    if train:
        return train_windows(heights, widths, seeds, crop_area, crop_ratio, hflip)
    top, left, h, w = center_crop_boxes(heights, widths, image_size)
    return top, left, h, w, np.zeros(len(top), bool)


def preprocess_info(image_size: int = 224) -> dict:
    return {
        "resize_shorter_side": eval_resize(image_size),
        "center_crop": image_size,
        "mean": list(MEAN),
        "std": list(STD),
        "scale": "0-255",
        "layout": "NCHW float32 (RGB)",
    }


def normalize(images: Tensor) -> Tensor:
    """uint8 (N)CHW on any device -> float32 normalised with MEAN/STD, on the same device and in the same layout."""
    shape = (1, 3, 1, 1) if images.dim() == 4 else (3, 1, 1)
    mean = torch.tensor(MEAN, device=images.device).view(shape)
    std = torch.tensor(STD, device=images.device).view(shape)
    return images.float().sub_(mean).div_(std)


# torchvision 0.29 deprecates its image decoders in favour of TorchCodec's and warns at every call.
TORCHVISION_IO_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


@contextlib.contextmanager
def torchvision_io():
    """Where torchvision.io's decoders are still used on purpose (no TorchCodec installed: torchvision 0.26-0.28
    machines; the batched nvJPEG call of the pytorch-gpu backend), its per-call deprecation warning is dropped here
    and nowhere else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCHVISION_IO_DEPRECATION, category=DeprecationWarning)
        yield


@functools.cache
def torchcodec_decode_image():
    """TorchCodec's `decode_image` (libjpeg-turbo/libpng; the non-deprecated API since torchvision 0.29), or None
    where TorchCodec is not installed."""
    try:
        from torchcodec.decoders import decode_image
    except (ImportError, OSError, RuntimeError):  # absent, or its native library cannot load with this torch
        return None
    return decode_image


def decode_rgb(path: str | os.PathLike) -> Tensor:
    """uint8 RGB CHW from any image file, whatever its name says: JPEG (grayscale, CMYK, progressive), PNG, ...

    TorchCodec's decoders (torchvision.io's where TorchCodec is absent) first: fast, straight into a uint8 tensor;
    PIL for the rest. EXIF orientation is applied and 16-bit PNGs are scaled to 8 bits (round(v / 257)), as in the
    DALI backends: the three decoders give the same pixels (tested). Raises on data nobody can decode.
    """
    import numpy as np

    decode = torchcodec_decode_image()
    try:
        if decode is not None:
            return eight_bit(decode(str(path), mode="RGB"))
        from torchvision.io import ImageReadMode, decode_image, read_file

        with torchvision_io():
            return eight_bit(decode_image(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True))
    except (RuntimeError, ValueError):
        pass
    im = open_rgb(path)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()


def crop_resize_flip(image: Tensor, window, image_size: int) -> Tensor:
    """uint8 CHW image (any device) -> image_size x image_size: the window's pixels (top, left, h, w, flip; one
    row of `sample_windows`), and only those, resized, then flipped if asked."""
    from torchvision.transforms.v2 import functional as TF

    top, left, h, w, flip = (int(v) for v in window)
    image = TF.resize(image[:, top : top + h, left : left + w], [image_size, image_size], antialias=True)
    return image.flip(-1) if flip else image


def eval_image(path: str | os.PathLike, image_size: int = 224) -> Tensor:
    """One file as the val loader gives it: float32 CHW, centre crop, normalised (bitwise the pytorch backend's)."""
    image = decode_rgb(path)
    window = [v[0] for v in sample_windows([image.shape[1]], [image.shape[2]], [0], False, image_size)]
    return normalize(crop_resize_flip(image, window, image_size))


def list_images(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """(path, class name) for every image under an ImageNet-layout folder, sorted (the loaders' scan)."""
    return scan_folder(root).items()


def load_labeled_images(root: str | os.PathLike, n: int, image_size: int = 224) -> tuple[Tensor, Tensor]:
    """Up to `n` real images from `root` (a split folder) as the val loader preprocesses them (`eval_image`),
    spread evenly over the sorted files (so over classes), with their class indices in sorted class-name order."""
    files = list_images(root)
    if not files:
        raise FileNotFoundError(f"no images under {root}")
    classes = sorted({c for _, c in files})
    step = max(1, len(files) // n)
    images, labels = [], []
    for path, cls in files[::step][:n]:
        images.append(eval_image(path, image_size))
        labels.append(classes.index(cls))
    return torch.stack(images), torch.tensor(labels)


def load_eval_images(root: str | os.PathLike, n: int, image_size: int = 224) -> Tensor:
    return load_labeled_images(root, n, image_size)[0]
