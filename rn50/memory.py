"""A rough memory estimate for ResNet-50 training and inference, to refuse a run that cannot fit before it starts.

The estimate is linear in the images' pixels: a fixed part (weights, gradients, optimizer state, the framework) and
a part per image per pixel (the activations kept for backward). The constants are upper bounds measured with this
package's own step on CPU (peak RSS at 64-224 px, batch 8-32, fp32): about 1.5 KB per pixel per image in training
(batch 256 at 224 px: ~19 GB, where a CPU run was seen taking 15 GB for one worker) and a tenth of that in inference.
"""

from __future__ import annotations

import os

from rn50.errors import UserError

FIXED_BYTES = {"train": 1.2e9, "infer": 0.6e9}
BYTES_PER_PIXEL = {"train": 1500.0, "infer": 150.0}
HEADROOM = 0.9  # of what is available: the rest is for the OS and the data pipeline


def estimate_bytes(batch: int, image_size: int, kind: str = "train") -> float:
    """Estimated peak bytes of one process running ResNet-50 `kind` ("train" or "infer") at this batch and size."""
    return FIXED_BYTES[kind] + batch * image_size * image_size * BYTES_PER_PIXEL[kind]


def largest_batch(available: float, image_size: int, kind: str = "train", processes: int = 1) -> int:
    """The largest batch (per process) whose estimate fits `available` bytes with headroom (0 if none)."""
    room = HEADROOM * available / processes - FIXED_BYTES[kind]
    return max(0, int(room // (image_size * image_size * BYTES_PER_PIXEL[kind])))


def available_bytes(device: str) -> tuple[float, str] | None:
    """(bytes available, what) on `device` ("cpu": MemAvailable; "cuda": device 0's total memory); None if unknown."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return float(torch.cuda.get_device_properties(0).total_memory), "GPU memory"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024, "available RAM"
    except OSError:
        pass
    if hasattr(os, "sysconf"):
        try:
            return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "available RAM"
        except (ValueError, OSError):
            return None
    return None


def check_fits(
    batch: int, image_size: int, device: str, kind: str = "train", processes: int = 1, option: str = "--batch"
) -> None:
    """One UserError line before a run whose estimate exceeds what the device has, naming the batch that fits.

    `processes` share the memory on CPU (each GPU has its own: pass 1 for CUDA)."""
    avail = available_bytes(device)
    if avail is None:
        return
    have, what = avail
    need = processes * estimate_bytes(batch, image_size, kind)
    if need <= HEADROOM * have:
        return
    fits = largest_batch(have, image_size, kind, processes)
    who = f"{processes} processes x " if processes > 1 else ""
    hint = f"use {option} {fits} or less" if fits else "no batch fits at this image size; use a smaller --image-size"
    raise UserError(
        f"{kind} at batch {batch}, {image_size} px needs about {need / 2**30:.1f} GiB ({who}estimate) but "
        f"{have / 2**30:.1f} GiB of {what} is there: {hint}"
    )
