"""Export time per format, side by side, plus (optionally) INT8 vs fp32 speed and agreement on ONNX Runtime CPU.

    python benchmarks/export_time.py --checkpoint CKPT [--image-size 224] [--formats onnx,onnx-fp16,...]
    python benchmarks/export_time.py --checkpoint CKPT --int8-speed --batch 8

Every export also runs its parity check; "export s" is the build alone, "parity s" the check. Figures come with
the load average at start and end: on a shared machine they are disturbed, rerun on a quiet one to quote them.
Without --checkpoint a random-init 1000-class model is exported and INT8 is skipped (its top-1 check on real
images needs trained weights).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = {
    "onnx": ("onnx", "fp32"),
    "onnx-fp16": ("onnx", "fp16"),
    "onnx-int8": ("onnx", "int8"),
    "torchscript": ("torchscript", "fp32"),
    "aoti": ("aoti", "fp32"),
    "trt": ("trt", "fp16"),
    "trt-int8": ("trt", "int8"),
}


def load_avg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def time_exports(source, names, out_dir: Path, args) -> list[dict]:
    from rn50.errors import UserError
    from rn50.export import export_model, get_format

    rows = []
    for name in names:
        fmt, precision = VARIANTS[name]
        out = out_dir / f"{name}{get_format(fmt).suffix}"
        start = time.perf_counter()
        try:
            result = export_model(
                source,
                fmt,
                out,
                precision=precision,
                image_size=args.image_size,
                max_batch=args.max_batch,
                calib_dir=args.calib,
                images_dir=args.images,
                force=True,
            )
        except UserError as e:
            rows.append({"variant": name, "error": str(e)})
            continue
        wall = time.perf_counter() - start
        parity = result.sidecar["parity"]
        rows.append(
            {
                "variant": name,
                "export_s": result.export_seconds,
                "parity_s": parity["seconds"],
                "wall_s": wall,
                "mb": out.stat().st_size / 2**20,
                "max_rel": max(parity[k]["max_rel"] for k in ("random", "real") if k in parity),
                "top1": parity.get("real", {}).get("top1_agreement"),
                "path": out,
            }
        )
    return rows


def throughput(fn, x, seconds: float) -> float:
    fn(x)  # warmup, excluded
    fn(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(x)
        n += 1
    return n * x.shape[0] / (time.perf_counter() - start)


def int8_speed(model, fp32_path: Path, int8_path: Path, args) -> None:
    from rn50.data.transforms import load_labeled_images
    from rn50.export import image_folder, load_artifact

    fp32, int8 = load_artifact(fp32_path), load_artifact(int8_path)
    images, labels = load_labeled_images(image_folder(args.images, "val"), args.agreement_images, args.image_size)
    with torch.inference_mode():
        ref = torch.cat([model(c) for c in images.split(32)])
    got = torch.cat([int8(c) for c in images.split(32)])
    agree = float((ref.argmax(1) == got.argmax(1)).float().mean())
    acc_fp32 = float((ref.argmax(1) == labels).float().mean())
    acc_int8 = float((got.argmax(1) == labels).float().mean())
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)

    def eager(t):
        with torch.inference_mode():
            return model(t)

    rates: dict[str, list[float]] = {"eager fp32": [], "ORT fp32": [], "ORT int8 QDQ": []}
    la0 = load_avg()
    for _ in range(args.rounds):  # interleaved rounds, so load changes hit every backend alike
        for label, fn in (("eager fp32", eager), ("ORT fp32", fp32.run), ("ORT int8 QDQ", int8.run)):
            rates[label].append(throughput(fn, x, args.seconds))
    print(
        f"\nINT8 on ONNX Runtime CPU, batch {args.batch}, {args.image_size} px, torch threads "
        f"{torch.get_num_threads()}, best of {args.rounds} x {args.seconds:g} s; load avg {la0} -> {load_avg()}"
    )
    base = max(rates["eager fp32"])
    print(f"{'backend':<14} {'img/s':>8} {'vs eager':>9}")
    for label, values in rates.items():
        print(f"{label:<14} {max(values):>8.1f} {max(values) / base:>8.2f}x")
    print(
        f"top-1 agreement int8 vs eager fp32 on {len(labels)} real images: {agree:.1%} "
        f"(accuracy fp32 {acc_fp32:.1%}, int8 {acc_int8:.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="rn50/torchvision checkpoint (default: random-init model)")
    parser.add_argument("--formats", default="onnx,onnx-fp16,onnx-int8,torchscript,aoti", help=",".join(VARIANTS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--calib", type=Path, help="calibration images (default: the built-in sample)")
    parser.add_argument("--images", type=Path, help="parity/agreement images (default: the built-in sample)")
    parser.add_argument("--out", type=Path, help="keep the artifacts here (default: a temporary folder)")
    parser.add_argument("--int8-speed", action="store_true", help="also time eager vs ORT fp32 vs ORT int8")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agreement-images", type=int, default=360)
    args = parser.parse_args()

    from rn50.model import resnet50
    from rn50.weights import load_model

    names = [n.strip() for n in args.formats.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.checkpoint is None:
        torch.manual_seed(0)
        model = resnet50(num_classes=1000).eval()
        source = model
        names = [n for n in names if not n.endswith("int8")]
        print("no --checkpoint: random-init 1000-class model; int8 variants skipped (need trained weights)")
    else:
        model, source = load_model(args.checkpoint), args.checkpoint
    with tempfile.TemporaryDirectory(prefix="rn50-export-bench-") as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        la0 = load_avg()
        rows = time_exports(source, names, out_dir, args)
        print(
            f"\nexport time per format: {args.image_size} px, dynamic batch 1..{args.max_batch}, "
            f"torch {torch.__version__}, {os.cpu_count()} CPUs; load avg {la0} -> {load_avg()}"
        )
        print(f"{'variant':<12} {'export s':>9} {'parity s':>9} {'total s':>8} {'MiB':>7} {'max rel':>9} {'top-1':>7}")
        for r in rows:
            if "error" in r:
                print(f"{r['variant']:<12} skipped: {r['error']}")
                continue
            top1 = "-" if r["top1"] is None else f"{r['top1']:.0%}"
            print(
                f"{r['variant']:<12} {r['export_s']:>9.1f} {r['parity_s']:>9.1f} {r['wall_s']:>8.1f} "
                f"{r['mb']:>7.1f} {r['max_rel']:>9.2e} {top1:>7}"
            )
        if args.int8_speed:
            paths = {r["variant"]: r.get("path") for r in rows}
            if not (paths.get("onnx") and paths.get("onnx-int8")):
                parser.error("--int8-speed needs the onnx and onnx-int8 variants in --formats and a --checkpoint")
            int8_speed(model, paths["onnx"], paths["onnx-int8"], args)


if __name__ == "__main__":
    main()
