"""CPU input-pipeline benchmark: rn50's pytorch and dali-cpu train loaders side by side with two baselines.

Generates ImageNet-sized JPEGs (500x375, ~110 KB like ImageNet's average, quality 90) in ImageNet layout, then times,
in one run, with the same batch, worker/thread count and train augmentation (random resized crop 224, area 8-100%,
flip, normalise):
  - minimal DALI: a bare DALI CPU pipeline (readers.file -> fused decode+random crop -> resize -> crop_mirror_normalize)
  - torchvision PIL: the classic ImageFolder + RandomResizedCrop/ToTensor/Normalize + DataLoader loader
  - rn50 pytorch and rn50 dali-cpu: `rn50.data.loaders.make_loader`, the loaders `rn50 train` uses
Loaders run round-robin `--repeat` times (median reported) so a burst of load hits all of them alike. img/s per core =
img/s / workers. `--profile` adds single-process per-image stage costs (where the time goes) and prototype decode
paths. Load average is printed with the figures: on a busy machine they are low and noisy.

    python benchmarks/cpu_datapipe.py                    # defaults: 640 images, batch 32, 2 workers, 3 repeats
    python benchmarks/cpu_datapipe.py --profile --dir /tmp/rn50-jpegs
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

IMAGE_SIZE = 224
MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


# ---------------------------------------------------------------- data


def _jpeg(seed: int) -> bytes:
    """500x375 RGB with structure at several scales plus sensor-like noise: ~110 KB at quality 90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = 375, 500
    acc = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((6, 70), (24, 40), (200, 30)):
        small = rng.integers(0, 256, (max(2, cells * 3 // 4), cells, 3), dtype=np.uint8)
        acc += (np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32) - 128) * (amp / 128)
    acc += rng.normal(0, 16, (h, w, 1)).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(acc + 128, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_dataset(root: Path, n: int, classes: int = 4) -> Path:
    """root/train/<class>/*.JPEG (reused if it already holds n images)."""
    train = root / "train"
    existing = sorted(train.glob("*/*.JPEG"))
    if len(existing) == n:
        return root
    with Pool(min(4, os.cpu_count() or 1)) as pool:
        blobs = pool.map(_jpeg, range(n), chunksize=16)
    for i, blob in enumerate(blobs):
        d = train / f"n{i % classes:08d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img_{i:05d}.JPEG").write_bytes(blob)
    return root


# ---------------------------------------------------------------- loaders (each yields batches ready for a model)


def minimal_dali(root: Path, batch: int, workers: int, seed: int) -> Iterator:
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch, num_threads=workers, device_id=None, seed=seed, prefetch_queue_depth=2)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=str(root / "train"), random_shuffle=True, name="reader")
        images = fn.decoders.image_random_crop(
            jpegs, device="cpu", output_type=types.RGB, random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3]
        )
        images = fn.resize(images, resize_x=IMAGE_SIZE, resize_y=IMAGE_SIZE, antialias=True)
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW", mean=MEAN, std=STD, mirror=fn.random.coin_flip()
        )
        return images, labels

    p = pipe()
    p.build()
    while True:
        images, labels = p.run()
        yield torch.from_numpy(images.as_array()), torch.from_numpy(labels.as_array().reshape(-1))


def torchvision_pil(root: Path, batch: int, workers: int, seed: int) -> Iterator:
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(IMAGE_SIZE),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    ds = datasets.ImageFolder(str(root / "train"), tf)
    g = torch.Generator().manual_seed(seed)
    dl = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, num_workers=workers, generator=g, drop_last=True
    )
    while True:
        yield from dl


def rn50_loader(backend: str) -> Callable[..., Iterator]:
    def make(root: Path, batch: int, workers: int, seed: int) -> Iterator:
        from rn50.data.loaders import make_loader
        from rn50.recipes import get_recipe

        recipe = get_recipe("dgxa100-tf32-90").replace(gpus=1, batch_size=batch, image_size=IMAGE_SIZE, workers=workers)
        loader = make_loader(root, "train", recipe, backend, "cpu", seed=seed, workers=workers)
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    return make


def prototype_pil_draft(root: Path, batch: int, workers: int, seed: int) -> Iterator:
    """Prototype: PIL decode with DCT-domain downscaling (draft) sized to the random crop, crop before resize,
    uint8 batches normalised in the main process (what rn50's pytorch backend does after decode)."""
    ds = _ProtoDataset(sorted((root / "train").glob("*/*.JPEG")))
    g = torch.Generator().manual_seed(seed)
    dl = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, num_workers=workers, generator=g, drop_last=True
    )
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    while True:
        for x, y in dl:
            yield x.float().sub_(mean).div_(std), y


class _ProtoDataset(torch.utils.data.Dataset):
    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.classes = sorted({f.parent.name for f in files})

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        from rn50.data.transforms import train_windows

        torch.set_num_threads(1)
        f = self.files[i]
        with Image.open(f) as im:
            w0, h0 = im.size
            top, left, h, w, _ = (int(v[0]) for v in train_windows([h0], [w0], [i * 7919 + time.perf_counter_ns()]))
            # DCT scaling by 1/2, 1/4, 1/8 only while the crop stays >= the output size (no quality loss).
            scale = 1
            while scale < 8 and min(h, w) / (scale * 2) >= IMAGE_SIZE:
                scale *= 2
            if scale > 1:
                im.draft("RGB", (w0 // scale, h0 // scale))
            sx, sy = im.size[0] / w0, im.size[1] / h0
            box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
            im = im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR, box=box)
            if i % 2:  # a flip for half the images
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        return x, self.classes.index(f.parent.name)


LOADERS: dict[str, Callable[..., Iterator]] = {
    "minimal DALI (baseline)": minimal_dali,
    "torchvision PIL (baseline)": torchvision_pil,
    "rn50 dali-cpu": rn50_loader("dali-cpu"),
    "rn50 pytorch": rn50_loader("pytorch"),
}


def prototype_dali_fed(root: Path, batch: int, workers: int, seed: int, depth: int = 2) -> Iterator:
    """Prototype: the minimal DALI pipeline, but fed encoded bytes from Python through external_source with
    `depth` batches in flight, as rn50's dali-cpu backend does; isolates the cost of feeding from Python."""
    from nvidia.dali import fn, pipeline_def, types

    files = sorted((root / "train").glob("*/*.JPEG"))
    classes = sorted({f.parent.name for f in files})
    labels_all = np.array([classes.index(f.parent.name) for f in files], np.int64)

    @pipeline_def(batch_size=batch, num_threads=workers, device_id=None, seed=seed, prefetch_queue_depth=depth)
    def pipe():
        jpegs = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        labels = fn.external_source(name="labels", dtype=types.INT64, ndim=0)
        images = fn.decoders.image_random_crop(
            jpegs, device="cpu", output_type=types.RGB, random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3]
        )
        images = fn.resize(images, resize_x=IMAGE_SIZE, resize_y=IMAGE_SIZE, antialias=True)
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW", mean=MEAN, std=STD, mirror=fn.random.coin_flip()
        )
        return images, labels

    p = pipe()
    p.build()
    rng = np.random.default_rng(seed)
    order: list[int] = []

    def feed() -> None:
        nonlocal order
        if len(order) < batch:
            order += rng.permutation(len(files)).tolist()
        idx, order = order[:batch], order[batch:]
        p.feed_input("encoded", [np.fromfile(files[i], dtype=np.uint8) for i in idx])
        p.feed_input("labels", labels_all[idx])

    for _ in range(depth):  # the first schedule_run prefetches `depth` iterations
        feed()
    p.schedule_run()
    while True:
        images, labels = p.outputs()
        out = torch.from_numpy(images.as_array()), torch.from_numpy(labels.as_array().reshape(-1))
        feed()
        p.schedule_run()
        yield out


PROTOTYPES: dict[str, Callable[..., Iterator]] = {
    "prototype: PIL draft + crop-first resize": prototype_pil_draft,
    "prototype: minimal DALI fed from Python": prototype_dali_fed,
}


def cpu_seconds_of_tree(root_pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by this process and all its descendants (loader workers): a cost
    that, unlike wall time, barely moves when other jobs share the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    root_pid = root_pid or os.getpid()
    stats: dict[int, tuple[int, float]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        stats[int(d)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += [p for p, (ppid, _) in stats.items() if ppid == pid]
    return total


def time_one(make: Callable[..., Iterator], root: Path, batch: int, workers: int, warmup: int, batches: int, seed: int):
    """(img/s wall, images per CPU-second of the whole loader process tree) over `batches` after `warmup`."""
    it = make(root, batch, workers, seed)
    for _ in range(warmup):  # start-up (worker processes, pipeline build) excluded
        x, _ = next(it)
    n = 0
    cpu0 = cpu_seconds_of_tree()
    start = time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
        n += x.shape[0]
    seconds = time.perf_counter() - start
    cpu = cpu_seconds_of_tree() - cpu0
    assert tuple(x.shape[1:]) == (3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == torch.float32, (x.shape, x.dtype)
    # Close the generator here, so a DataLoader's worker processes are shut down by this process and not by a
    # garbage collection that happens to run inside the next loader's forked workers.
    it.close()
    del it, x
    gc.collect()
    return n / seconds, n / cpu if cpu > 0 else float("nan")


# ---------------------------------------------------------------- where the time goes (one process, one thread)


def profile(root: Path, n: int = 64) -> dict[str, float]:
    """Mean CPU ms per image of each stage, one thread."""
    from PIL import Image
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    from rn50.data.transforms import train_windows

    torch.set_num_threads(1)
    files = sorted((root / "train").glob("*/*.JPEG"))[:n]
    blobs = [read_file(str(f)) for f in files]
    top, left, h, w, _ = (v.tolist() for v in train_windows([375] * len(files), [500] * len(files), range(len(files))))
    boxes = list(zip(top, left, h, w, strict=True))
    out: dict[str, float] = {}

    def timed(name: str, fn: Callable[[int], object]) -> None:
        for i in range(min(4, n)):
            fn(i)
        t = time.process_time()  # CPU time: robust to other jobs sharing the cores
        for i in range(n):
            fn(i)
        out[name] = (time.process_time() - t) / n * 1e3

    decoded = [decode_jpeg(b) for b in blobs]
    timed("read file (torchvision.io.read_file)", lambda i: read_file(str(files[i])))
    timed("decode full (torchvision.io.decode_jpeg)", lambda i: decode_jpeg(blobs[i]))
    timed("decode full (PIL)", lambda i: Image.open(io.BytesIO(blobs[i].numpy().tobytes())).convert("RGB"))

    def crop_resize(i: int):
        top, left, h, w = boxes[i]
        return TF.resize(decoded[i][:, top : top + h, left : left + w], [IMAGE_SIZE, IMAGE_SIZE], antialias=True)

    timed("crop + resize 224 (uint8 tensor, antialias)", crop_resize)
    pil = [Image.open(io.BytesIO(b.numpy().tobytes())).convert("RGB") for b in blobs]

    def pil_resize(i: int):
        top, left, h, w = boxes[i]
        return pil[i].resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR, box=(left, top, left + w, top + h))

    timed("crop + resize 224 (PIL box resize)", pil_resize)

    def to_tensor_normalize(i: int):
        x = TF.to_dtype(TF.pil_to_tensor(pil_crops[i]), torch.float32, scale=True)
        return TF.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

    pil_crops = [pil_resize(i) for i in range(n)]
    timed("ToTensor + Normalize (float, torchvision PIL path)", to_tensor_normalize)
    crops = [crop_resize(i) for i in range(n)]
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    timed("normalise uint8 -> float (rn50 pytorch, main process)", lambda i: crops[i].float().sub_(mean).div_(std))
    try:
        out.update(_profile_dali_decode(root, n))
    except ImportError:
        pass
    return out


def _profile_dali_decode(root: Path, n: int) -> dict[str, float]:
    """DALI CPU decode, full image vs fused random crop, one thread: what ROI decoding saves."""
    from nvidia.dali import fn, pipeline_def, types

    out = {}
    for name, fused in (("decode full (DALI CPU)", False), ("decode fused random crop (DALI CPU)", True)):

        @pipeline_def(batch_size=n, num_threads=1, device_id=None, seed=0)
        def pipe(fused=fused):
            jpegs, _ = fn.readers.file(file_root=str(root / "train"))
            if fused:
                return fn.decoders.image_random_crop(
                    jpegs, device="cpu", output_type=types.RGB, random_area=[0.08, 1.0],
                    random_aspect_ratio=[3 / 4, 4 / 3],
                )  # fmt: skip
            return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)

        p = pipe()
        p.build()
        p.run()
        t = time.process_time()
        reps = 3
        for _ in range(reps):
            p.run()
        out[name] = (time.process_time() - t) / (reps * n) * 1e3
    return out


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=640, help="JPEGs to generate (one epoch must cover a run)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers / DALI threads (= cores counted)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches per run")
    ap.add_argument("--batches", type=int, default=16, help="timed batches per run")
    ap.add_argument("--repeat", type=int, default=3, help="round-robin repeats; the median is reported")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (or reuse) the JPEGs; default a temp dir")
    ap.add_argument("--profile", action="store_true", help="also print per-image stage costs and prototypes")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    per_epoch = args.images // args.batch
    if args.warmup + args.batches > per_epoch:
        ap.error(f"--warmup + --batches must fit one epoch ({per_epoch} batches of {args.images} images)")

    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="rn50-jpegs-")
        args.dir = Path(tmp.name)
    t = time.perf_counter()
    root = make_dataset(args.dir, args.images)
    files = list((root / "train").glob("*/*.JPEG"))
    avg_kb = sum(f.stat().st_size for f in files) / len(files) / 1e3
    print(f"{len(files)} JPEGs 500x375 (avg {avg_kb:.0f} KB) in {root} ({time.perf_counter() - t:.1f} s)")

    loaders = dict(LOADERS)
    if args.profile:
        loaders.update(PROTOTYPES)
    load_before = os.getloadavg()
    torch.set_num_threads(1)  # the consuming process normalises with one thread, like one rank would
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    per_cpu: dict[str, list[float]] = {name: [] for name in loaders}
    for rep in range(args.repeat):
        for name, make in loaders.items():
            r, c = time_one(make, root, args.batch, args.workers, args.warmup, args.batches, seed=rep)
            rates[name].append(r)
            per_cpu[name].append(c)
    load_after = os.getloadavg()

    ref = statistics.median(rates["minimal DALI (baseline)"])
    dali = statistics.median(rates["rn50 dali-cpu"])
    ref_cpu = statistics.median(per_cpu["minimal DALI (baseline)"])
    dali_cpu = statistics.median(per_cpu["rn50 dali-cpu"])
    print(
        f"\nbatch {args.batch}, {args.workers} workers/threads, train augmentation at {IMAGE_SIZE} px, "
        f"{args.batches} timed batches after {args.warmup}, median of {args.repeat} round-robin runs; "
        f"torch {torch.__version__}, {_dali_version()}, {os.cpu_count()} CPUs"
    )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)\n")
    print(
        f"| {'loader':42} | img/s | img/s per core | vs minimal DALI | vs rn50 dali-cpu | img per CPU-s "
        "| CPU-s vs minimal DALI | CPU-s vs rn50 dali-cpu | runs (img/s) |"
    )
    print(f"|{'-' * 44}|------:|---------------:|----------------:|-----------------:|--------------:|---:|---:|---|")
    result = {}
    for name, rs in rates.items():
        med, cpu = statistics.median(rs), statistics.median(per_cpu[name])
        result[name] = {"img_per_s": med, "img_per_s_per_core": med / args.workers, "runs": rs, "img_per_cpu_s": cpu}
        runs = ", ".join(f"{r:.0f}" for r in rs)
        print(
            f"| {name:42} | {med:5.0f} | {med / args.workers:14.0f} | {med / ref:14.2f}x | {med / dali:15.2f}x "
            f"| {cpu:13.0f} | {cpu / ref_cpu:.2f}x | {cpu / dali_cpu:.2f}x | {runs} |"
        )
    pytorch = statistics.median(rates["rn50 pytorch"])
    pytorch_cpu = statistics.median(per_cpu["rn50 pytorch"])
    goals = {
        "rn50 dali-cpu >= minimal DALI (img/s)": dali >= ref,
        "rn50 pytorch >= 0.85 x rn50 dali-cpu (img/s)": pytorch >= 0.85 * dali,
        "rn50 dali-cpu >= minimal DALI (img per CPU-s)": dali_cpu >= ref_cpu,
        "rn50 pytorch >= 0.85 x rn50 dali-cpu (img per CPU-s)": pytorch_cpu >= 0.85 * dali_cpu,
    }
    print("\n" + "\n".join(f"goal {k}: {'met' if v else 'NOT met'}" for k, v in goals.items()))
    stages = {}
    if args.profile:
        stages = profile(root)
        print("\nper-image CPU cost, one thread (ms):")
        for k, v in stages.items():
            print(f"  {k:58} {v:6.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": {k: str(v) for k, v in vars(args).items()},
                    "avg_jpeg_kb": avg_kb,
                    "loadavg_before": load_before,
                    "loadavg_after": load_after,
                    "loaders": result,
                    "goals": goals,
                    "stages_ms": stages,
                },
                indent=2,
            )
        )
    if tmp is not None:
        tmp.cleanup()
    return 0


def _dali_version() -> str:
    try:
        import nvidia.dali

        return f"DALI {nvidia.dali.__version__}"
    except ImportError:
        return "DALI not installed"


if __name__ == "__main__":
    sys.exit(main())
