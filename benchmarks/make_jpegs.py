"""A synthetic JPEG dataset shaped like ImageNet's, for timing input pipelines where ImageNet is not at hand.

    python benchmarks/make_jpegs.py DIR --train 3000 --val 500 --classes 10 [--workers 16]

ImageNet-like in what decoders and loaders feel: mostly 500x375 landscape with some 375x500 portrait and a few other
sizes, baseline 4:2:0 JPEGs at quality 90, ~110 KB each on average (smooth random colour fields plus sensor-like
noise, which compress like photographs do). The pixels carry no class signal: this is for img/s, not accuracy.
Prints the count, the mean file size and the seconds it took.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SIZES = [(500, 375)] * 7 + [(375, 500)] * 2 + [(500, 333)]  # (width, height): ImageNet's most common shapes


def _write(job: tuple[str, int]) -> int:
    from PIL import Image

    path, seed = job
    rng = np.random.default_rng(seed)
    w, h = SIZES[seed % len(SIZES)]
    coarse = Image.fromarray(rng.integers(0, 256, (h // 24 + 2, w // 24 + 2, 3), dtype=np.uint8))
    field = np.asarray(coarse.resize((w, h), Image.BICUBIC), dtype=np.float32)
    pixels = (field + rng.normal(0, 20, field.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return os.path.getsize(path)


def make_jpegs(root: Path, train: int, val: int, classes: int, workers: int) -> tuple[int, float]:
    """Writes root/{train,val}/class_NNN/*.JPEG; returns (files, mean bytes)."""
    jobs = []
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            (root / split / f"class_{c:03d}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            c = i % classes
            jobs.append((str(root / split / f"class_{c:03d}" / f"{split}_{i:06d}.JPEG"), len(jobs)))
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        sizes = list(pool.map(_write, jobs, chunksize=32))
    return len(sizes), float(np.mean(sizes)) if sizes else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path)
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    if min(args.train, args.val) < 0 or args.classes < 1 or args.train < args.classes:
        print("make_jpegs: need --classes >= 1, --train >= --classes, --val >= 0", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    n, mean = make_jpegs(args.root, args.train, args.val, args.classes, args.workers)
    print(f"wrote {n} JPEGs under {args.root}: mean {mean / 1024:.0f} KiB, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
