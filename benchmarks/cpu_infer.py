"""CPU inference: the best backend at batch 8 and 224 px against eager fp32 measured in the same run, with top-1
agreement against fp32 on real images (the sample's val split) from a model trained on the sample.

    python benchmarks/cpu_infer.py                       # trains a sample model once (cached under --work)
    python benchmarks/cpu_infer.py --checkpoint CKPT     # or any rn50 checkpoint, e.g. from `rn50 train`

Prints img/s per series, the ratio to eager fp32, the top-1 agreement and the load average before and after; the full
sweep (Markdown, CSV, JSON, PNG) goes to --out. Goal: >= 5x eager fp32 at >= 99% top-1 agreement.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rn50.bench.infer import InferConfig, run_infer  # noqa: E402
from rn50.io import atomic_write_json  # noqa: E402


def train_on_sample(sample: Path, out: Path, size: int, epochs: int) -> Path:
    """A 10-class ResNet-50 trained on the sample by the trainer itself (`rn50.train.fit`, the sample-cpu recipe)
    at `size` px; returns its best checkpoint."""
    from rn50.recipes import get_recipe
    from rn50.train.loop import TrainOptions, fit

    recipe = get_recipe("sample-cpu").replace(image_size=size, epochs=epochs)
    summary = fit(TrainOptions(data=sample, recipe=recipe, out=out, keep_epochs=1))
    return Path(summary["out"]) / "checkpoints" / "best.pth"


def sample_and_model(work: Path, checkpoint: Path | None, size: int, epochs: int) -> tuple[Path, Path]:
    """The built-in sample under `work` (written once) and the checkpoint to measure: the one given, else a sample
    model trained at `size` px for `epochs` epochs, cached under `work` (an unfinished earlier run is started over)."""
    from rn50.data.sample import make_sample

    sample = work / "sample"
    if not (sample / "val").is_dir():
        make_sample(sample)
    if checkpoint is not None:
        return sample, checkpoint
    run = work / f"sample-resnet50-{size}px-{epochs}ep"
    if not (run / "checkpoints" / "best.pth").is_file():
        print(f"training a sample model at {size} px for {epochs} epochs -> {run}", flush=True)
        shutil.rmtree(run, ignore_errors=True)
        train_on_sample(sample, run, size, epochs)
    return sample, run / "checkpoints" / "best.pth"


def macs_per_image(ckpt: Path, size: int) -> float:
    """Multiply-accumulates of one forward pass (convolutions and the classifier), counted with hooks."""
    from rn50.weights import load_model

    model, total = load_model(ckpt), [0]

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total[0] += out.numel() * m.in_features

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return float(total[0])


def gemm_rates(
    threads: int, m: int = 2048, k: int = 1024, n: int = 1024, reps: int = 10, int8_only: bool = False
) -> dict[str, float]:
    """GMAC/s of one large matrix multiply in fp32 (torch) and in uint8 x int8 (ONNX Runtime's MatMulInteger,
    the kernel family QLinearConv uses): what this CPU's cores can do at best in each precision."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def best_rate(fn) -> float:  # the fastest of 5 rounds: a ceiling, so disturbances must not lower it
        for _ in range(3):
            fn()
        seconds = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            seconds.append(time.perf_counter() - t)
        return reps * m * k * n / min(seconds) / 1e9

    a, b = torch.randn(m, k), torch.randn(k, n)
    fp32 = None if int8_only else best_rate(lambda: a @ b)
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "W"], ["Y"])],
        "gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])],
        [w],
    )
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
        so,
        providers=["CPUExecutionProvider"],
    )
    x = {"A": rng.integers(0, 256, (m, k)).astype(np.uint8)}
    u8s8 = best_rate(lambda: session.run(None, x))
    return {"u8s8_gemm_gmac_s": u8s8} if fp32 is None else {"fp32_gemm_gmac_s": fp32, "u8s8_gemm_gmac_s": u8s8}


def gemm_rates_fresh(threads: int) -> dict[str, float]:
    """gemm_rates in a fresh process: the sweep's ONNX Runtime and torch thread pools keep spinning for a while
    after their last run and would lower a ceiling measured in this process."""
    import json
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--gemm-only", "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def x_eager(row: dict, base: dict) -> float:
    """The row's speedup over eager fp32: the median of interleaved same-round ratios (bench infer's `speedup`)."""
    return row.get("speedup") or row["img_s"] / base["img_s"]


def cpu_facts() -> dict[str, object]:
    from rn50.env import cpu_flags, cpu_has_vnni, cpu_label, cpu_model, cpu_signature

    return {
        "cpu_model": cpu_model(),
        "cpu_signature": cpu_signature(),
        "cpu_label": cpu_label(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "vnni": cpu_has_vnni(),
    }


def accuracy(ckpt: Path, val: Path, size: int) -> float:
    from rn50.data.transforms import load_labeled_images
    from rn50.weights import load_model

    model = load_model(ckpt)
    images, labels = load_labeled_images(val, 10_000, size)
    with torch.no_grad():
        pred = torch.cat([model(images[i : i + 64]).argmax(1) for i in range(0, len(images), 64)])
    return float((pred == labels).float().mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="rn50 checkpoint (default: train one on the sample, cached)")
    p.add_argument("--work", type=Path, default=Path("runs/cpu-infer"), help="sample and cached model go here")
    p.add_argument("--out", type=Path, default=Path("results/cpu-infer"), help="sweep results (md/csv/json/png)")
    p.add_argument("--backend", default="eager,onnxruntime", help="backends to try (eager fp32 always runs)")
    p.add_argument(
        "--precision",
        default="fp32,int8",
        help="precisions to try (add bf16 on CPUs with AVX512-BF16/AMX: elsewhere it is emulated, ~7x slower)",
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--train-size", type=int, default=64, help="px the sample model trains at")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: all cores)")
    p.add_argument("--gemm-only", action="store_true", help="only print this CPU's GEMM rates as JSON")
    p.add_argument("--int8-only", action="store_true", help="with --gemm-only: the u8 x s8 rate alone")
    args = p.parse_args(argv)
    if args.gemm_only:
        import json

        threads = args.threads or torch.get_num_threads()
        torch.set_num_threads(threads)
        print(json.dumps(gemm_rates(threads, int8_only=args.int8_only)))
        return 0

    if args.threads:
        torch.set_num_threads(args.threads)
    sample, ckpt = sample_and_model(args.work, args.checkpoint, args.train_size, args.epochs)
    acc = accuracy(ckpt, sample / "val", args.image_size)
    print(f"model {ckpt}: fp32 top-1 accuracy on the sample's val split at {args.image_size} px: {100 * acc:.1f}%")

    load_before = os.getloadavg()
    cfg = InferConfig(
        source=ckpt,
        batches=[args.batch],
        backends=[b.strip() for b in args.backend.split(",")],
        precisions=[q.strip() for q in args.precision.split(",")],
        device="cpu",
        image_size=args.image_size,
        warmup=args.warmup,
        iters=args.iters,
        images=sample,
        agreement_images=10_000,  # the whole val split
        out=args.out,
        threads=args.threads,
    )
    result = run_infer(cfg)
    load_after = os.getloadavg()
    facts = cpu_facts()
    rates = gemm_rates_fresh(args.threads or torch.get_num_threads())
    macs = macs_per_image(ckpt, args.image_size)

    ok = [r for r in result["rows"] if r.get("status") == "ok"]
    base = next(r for r in ok if r["backend"] == "eager" and r["precision"] == "fp32")
    print(
        f"\nbatch {args.batch}, {args.image_size} px, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores"
    )
    print(f"{'series':<20} {'img/s':>8} {'x eager fp32':>13} {'top-1 agreement':>16} {'p50 ms':>8} {'p99 ms':>8}")
    for r in ok:
        agree = r.get("top1_agreement")
        print(
            f"{r['backend'] + ' ' + r['precision']:<20} {r['img_s']:>8.1f} {x_eager(r, base):>12.2f}x "
            f"{'-' if agree is None else f'{100 * agree:.1f}%':>16} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
        )
    for s in result["series"]:
        if s.get("status") != "ok":
            print(f"{s['backend']} {s['precision']}: {s['status']}: {s.get('reason')}")
    # The compute ceiling: every MAC of the model at the speed of one large GEMM. No backend can beat it.
    ceiling = {
        **facts,
        **rates,
        "gmac_per_image": macs / 1e9,
        "fp32_ceiling_img_s": rates["fp32_gemm_gmac_s"] * 1e9 / macs,
        "int8_ceiling_img_s": rates["u8s8_gemm_gmac_s"] * 1e9 / macs,
    }
    ceiling["int8_ceiling_x_eager"] = ceiling["int8_ceiling_img_s"] / base["img_s"]
    print(
        f"compute ceiling on this CPU ({facts['cpu_model']}, {facts['cpu_signature']}, "
        f"{' '.join(facts['cpu_flags'])}, {facts['cores']} cores, VNNI: "
        f"{'yes' if facts['vnni'] else 'no'}): {macs / 1e9:.2f} GMAC per image; large GEMM fp32 "
        f"{rates['fp32_gemm_gmac_s']:.0f} GMAC/s -> {ceiling['fp32_ceiling_img_s']:.1f} img/s, u8 x s8 "
        f"{rates['u8s8_gemm_gmac_s']:.0f} GMAC/s -> {ceiling['int8_ceiling_img_s']:.1f} img/s = "
        f"{ceiling['int8_ceiling_x_eager']:.2f}x eager fp32 at most"
    )
    int8 = next((r for r in ok if r["precision"] == "int8"), None)
    if int8 is not None:
        ceiling["int8_x_eager"] = x_eager(int8, base)
        ceiling["int8_fraction_of_ceiling"] = int8["img_s"] / ceiling["int8_ceiling_img_s"]
        goals = {"int8 >= 85% of its integer-GEMM ceiling": ceiling["int8_fraction_of_ceiling"] >= 0.85}
        if facts["vnni"]:
            goals["int8 >= 5x eager fp32 (a CPU with VNNI)"] = ceiling["int8_x_eager"] >= 5
        ceiling["goals"] = goals
        print(
            f"int8 ({int8['backend']}): {int8['img_s']:.1f} img/s = {ceiling['int8_x_eager']:.2f}x eager fp32, "
            f"{100 * ceiling['int8_fraction_of_ceiling']:.0f}% of the integer-GEMM ceiling; "
            + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items())
        )
    good = [r for r in ok if r is not base and (r.get("top1_agreement") or 0) >= 0.99]
    best = max(good, key=lambda r: r["img_s"], default=None)
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores: > 2 means shared)")
    summary = {
        "batch": args.batch,
        "image_size": args.image_size,
        "checkpoint": str(ckpt),
        "fp32_val_accuracy": acc,
        "eager_fp32_img_s": base["img_s"],
        "best": None,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "ceiling": ceiling,
        "series": [
            {k: r.get(k) for k in ("backend", "precision", "img_s", "top1_agreement", "p50_ms", "p99_ms", "provider")}
            | {"x_eager_fp32": x_eager(r, base), "speedup_spread": r.get("speedup_spread")}
            for r in ok
        ],
        "results": result["paths"],
    }
    if best is None:
        print("no backend reached 99% top-1 agreement with fp32")
    else:
        ratio = x_eager(best, base)
        summary["best"] = {k: best.get(k) for k in ("backend", "precision", "img_s", "top1_agreement", "provider")}
        summary["best"]["ratio"] = ratio
        print(
            f"best: {best['backend']} {best['precision']} {best['img_s']:.1f} img/s = {ratio:.2f}x eager fp32 "
            f"({base['img_s']:.1f} img/s) at {100 * best['top1_agreement']:.1f}% top-1 agreement "
            f"(goal >= 5x at >= 99%: {'met' if ratio >= 5 else 'not met'})"
        )
    atomic_write_json(args.out / "cpu-infer-summary.json", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
