"""The CPU-form INT8 artifact with 8-bit weights (before issue #22) against 7-bit weights (`reduce_range`, now the
default), on three questions: agreement with eager fp32, speed, and int16 saturation on CPUs without VNNI.

    python benchmarks/int8_reduce_range.py --checkpoint runs/demo/train/checkpoints/best.pth \\
        --speed-checkpoint runs/cpu-infer/sample-resnet50-64px-4ep/checkpoints/best.pth --sample sample \\
        --out docs/results/int8-reduce-range-<cpu>

- agreement: top-1 of each form against eager fp32 on every val image of the sample, at the checkpoint's size
  (32 px, the sample recipe's) and at 224 px for --speed-checkpoint (the model benchmarks/cpu_infer.py
  trains), with the fp32 margins (top-1 minus top-2 logit) of the images that flip;
- speed: eager fp32 (channels-last), 8-bit and 7-bit at batch 8, 224 px, in interleaved rounds in this process;
  the ratios to eager fp32 are medians of same-round ratios;
- saturation: x86 CPUs without VNNI (AVX2, AVX-512 core) add pairs of uint8 x int8 products in a saturating int16
  (vpmaddubsw; MLAS ConvSymKernelAvx2 pairs input channels 2j and 2j+1 at one tap). Emulated on the real uint8
  inputs of every quantised convolution and the classifier (K-adjacent pairs there) for --sat-images val images;
- kernel paths: rn50.export.kernel_paths on this CPU (bit-identical logits expected for both).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rn50.bench.timing import interleaved, per_round_rates  # noqa: E402
from rn50.data.transforms import load_labeled_images  # noqa: E402
from rn50.env import cpu_flags, cpu_model, cpu_signature  # noqa: E402
from rn50.export import load_artifact  # noqa: E402
from rn50.export.images import load_images  # noqa: E402
from rn50.export.kernel_paths import INT8_FLAGS, check_kernel_paths, kernel_family  # noqa: E402
from rn50.export.quant import export_onnx_int8  # noqa: E402
from rn50.io import atomic_write_json  # noqa: E402
from rn50.weights import load_model  # noqa: E402

FORMS = {"8-bit weights (before)": False, "7-bit weights (reduce_range, now)": True}
INT16 = (-32768, 32767)


def logits_of(fn, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([fn(c) for c in images.split(batch)]).float()


def agreement(ref: torch.Tensor, got: torch.Tensor) -> dict:
    top2 = ref.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    flips = (ref.argmax(1) != got.argmax(1)).nonzero().flatten()
    rel = ((ref - got).abs().amax(1) / ref.abs().amax(1)).numpy()
    return {
        "n": int(ref.shape[0]),
        "top1_agreement": 1 - len(flips) / ref.shape[0],
        "flip_margins": sorted(round(float(margin[i]), 3) for i in flips),
        "p95_rel": float(np.percentile(rel, 95)),
        "margin_p1": float(margin.quantile(0.01)),
    }


def quantised_inputs(path: Path, images: torch.Tensor) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Every quantised Conv/Gemm (its uint8 input, weights, zero point, geometry) and the input tensors' values,
    read from ORT's unfused float emulation of the Q/DQ graph."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    proto = onnx.load(os.fspath(path))
    g = proto.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    layers = []
    for node in g.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if x_dq is None or w_dq is None or "DequantizeLinear" not in (x_dq.op_type, w_dq.op_type):
            continue  # the float stem
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        zp = init[x_dq.input[2]] if len(x_dq.input) > 2 else np.zeros((), np.uint8)
        layers.append(
            {
                "op": node.op_type,
                "x": x_dq.input[0],
                "zp": int(zp) + (128 if zp.dtype == np.int8 else 0),  # x86 runs int8 activations as uint8 + 128
                "shift": 128 if zp.dtype == np.int8 else 0,
                "w": init[w_dq.input[0]].astype(np.int32),
                "strides": attrs.get("strides", [1, 1]),
                "pads": attrs.get("pads", [0, 0, 0, 0]),
                "transB": attrs.get("transB", 0),
            }
        )
    names = sorted({layer["x"] for layer in layers})
    g.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    values = dict(zip(names, session.run(names, {"input": images.numpy()}), strict=True))
    return layers, values


def saturation(path: Path, images: torch.Tensor) -> dict:
    layers, values = quantised_inputs(path, images)
    pairs = sat = acc_changed = 0
    for layer in layers:
        x = torch.from_numpy(values[layer["x"]].astype(np.int32) + layer["shift"])
        w = torch.from_numpy(layer["w"])
        if layer["op"] == "Gemm":  # K-adjacent pairs of the classifier's GEMM
            w = w if layer["transB"] else w.T
            cols, w = x.reshape(x.shape[0], -1, 2, 1, 1), w.reshape(w.shape[0], -1, 2, 1)
        else:
            t, left, b, r = layer["pads"]
            x = F.pad(x.float(), (left, r, t, b), value=float(layer["zp"]))
            kh, kw = w.shape[2:]
            cols = F.unfold(x, (kh, kw), stride=layer["strides"]).to(torch.int32)
            cols = cols.view(x.shape[0], x.shape[1] // 2, 2, kh * kw, -1)
            w = w.reshape(w.shape[0], w.shape[1] // 2, 2, kh * kw)
        delta = 0
        for tap in range(w.shape[3]):
            xa, xb = cols[:, :, 0, tap], cols[:, :, 1, tap]  # (N, pairs, L)
            wa, wb = w[:, :, 0, tap], w[:, :, 1, tap]  # (O, pairs)
            s = xa[:, None] * wa[None, :, :, None] + xb[:, None] * wb[None, :, :, None]  # (N, O, pairs, L)
            clipped = s.clamp(*INT16)
            sat += int((clipped != s).sum())
            pairs += s.numel()
            delta = delta + (s - clipped).sum(dim=2)
        acc_changed += int((torch.as_tensor(delta) != 0).sum())
    return {"images": int(images.shape[0]), "pair_sums": pairs, "saturating": sat, "accumulators_changed": acc_changed}


def timing(ckpt: Path, artifacts: dict[str, Path], args: argparse.Namespace, size: int = 224) -> dict:
    model = load_model(ckpt).eval().to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, size, size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    runners = {name: load_artifact(path, threads=args.threads) for name, path in artifacts.items()}

    def eager():
        with torch.inference_mode():
            model(x_cl)

    names = ["eager fp32", *runners]
    steps = [eager] + [lambda r=r: r.run(x) for r in runners.values()]
    for step in steps:  # warmup
        for _ in range(3):
            step()
    results = interleaved(steps, rounds=args.rounds, iters=args.iters)
    rates = {name: per_round_rates(results, i, args.batch) for i, name in enumerate(names)}
    out = {}
    for name in names:
        ratios = [a / b for a, b in zip(rates[name], rates["eager fp32"], strict=True)]
        out[name] = {
            "img_s": statistics.median(rates[name]),
            "x_eager": statistics.median(ratios),
            "x_eager_min": min(ratios),
            "x_eager_max": max(ratios),
        }
    seven, eight = (n for n in names[1:] if "7-bit" in n), (n for n in names[1:] if "8-bit" in n)
    a, b = next(seven), next(eight)
    ratios = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
    out["7-bit / 8-bit"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    out.update(batch=args.batch, image_size=size, rounds=args.rounds, iters_per_round=args.iters)
    out["threads"] = {"torch": torch.get_num_threads(), "onnxruntime": args.threads or "its default (all cores)"}
    return out


def markdown(result: dict) -> str:
    m, sp = result["machine"], result["speed"]
    lines = [
        "# INT8 CPU form: 8-bit against 7-bit weights (`reduce_range`)",
        "",
        f"Machine: {m['cpu']} ({m['signature']}; {' '.join(m['flags'])}), {m['cores']} cores, MLAS integer kernels: "
        f"{m['kernel_family']}; torch {result['versions']['torch']}, onnxruntime {result['versions']['onnxruntime']}; "
        f"load average {result['loadavg_before'][0]:.2f} before, {result['loadavg_after'][0]:.2f} after.",
        "",
        f"Speed: batch {sp['batch']}, {sp['image_size']} px, {sp['rounds']} interleaved rounds of "
        f"{sp['iters_per_round']} batches per series; threads: torch {sp['threads']['torch']}, ONNX Runtime "
        f"{sp['threads']['onnxruntime']}; x eager = median of same-round ratios (min-max).",
        "",
        "| form | agreement 32 px (flip margins) | agreement 224 px | p95 rel 32 px | saturating int16 pair sums "
        "(accumulators changed) | kernel paths bit-identical | img/s | x eager fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for form, row in result["forms"].items():
        a32, a224, sat, t = row["agreement_32px"], row["agreement_224px"], row["saturation"], sp[form]
        lines.append(
            f"| {form} | {100 * a32['top1_agreement']:.2f}% of {a32['n']} {a32['flip_margins']} | "
            f"{100 * a224['top1_agreement']:.2f}% {a224['flip_margins']} | {a32['p95_rel']:.3f} | "
            f"{sat['saturating']:,} of {sat['pair_sums']:.3g} ({sat['accumulators_changed']:,}) | "
            f"{'yes' if row['kernel_paths_bit_identical'] else 'NO'} | {t['img_s']:.1f} | "
            f"{t['x_eager']:.2f}x ({t['x_eager_min']:.2f}-{t['x_eager_max']:.2f}) |"
        )
    r = sp["7-bit / 8-bit"]
    lines += [
        "",
        f"eager fp32: {sp['eager fp32']['img_s']:.1f} img/s. 7-bit / 8-bit speed: {r['median']:.3f} "
        f"(min {r['min']:.3f}, max {r['max']:.3f}).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="the sample recipe's model (32 px)")
    ap.add_argument("--speed-checkpoint", type=Path, required=True, help="a model for 224 px (cpu_infer.py's)")
    ap.add_argument("--sample", type=Path, required=True, help="folder with train/ (calibration) and val/")
    ap.add_argument("--sat-images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=8, help="timed batches per series per round")
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: all cores)")
    ap.add_argument("--speed-only", action="store_true", help="only the timing, into speed-<threads>.json")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    result: dict = {
        "machine": {
            "cpu": cpu_model(),
            "signature": cpu_signature(),
            "flags": cpu_flags(INT8_FLAGS + ("fma", "avx512_bf16")),
            "kernel_family": kernel_family(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__},
        "forms": {},
    }
    with tempfile.TemporaryDirectory(prefix="rn50-rr-") as tmp:
        speed_artifacts = {}
        todo = [((args.checkpoint, 32), "small"), ((args.speed_checkpoint, 224), "224")]
        for (ckpt, size), key in todo[1:] if args.speed_only else todo:
            model = load_model(ckpt).eval()
            calib = load_images(args.sample, "train", 64, size)
            val, _ = load_labeled_images(args.sample / "val", 10_000, size)
            ref = None if args.speed_only else logits_of(model, val)
            for form, rr in FORMS.items():
                path = Path(tmp) / f"{key}-{'7' if rr else '8'}bit.onnx"
                export_onnx_int8(model, path, calib, image_size=size, max_batch=64, reduce_range=rr)
                row = result["forms"].setdefault(form, {})
                if ref is not None:
                    row[f"agreement_{size}px"] = agreement(ref, logits_of(load_artifact(path), val))
                if key == "small":
                    row["saturation"] = saturation(path, val[:: max(1, len(val) // args.sat_images)][: args.sat_images])
                    paths = check_kernel_paths(path, val[:64], enforce=False)
                    row["kernel_paths_bit_identical"] = paths["bit_identical"]
                    row["float_emulation_top1"] = paths["float_emulation"]["top1_agreement"]
                else:
                    speed_artifacts[form] = path
                print(form, json.dumps(row), flush=True)
        result["speed"] = timing(args.speed_checkpoint, speed_artifacts, args)
    result["loadavg_before"], result["loadavg_after"] = load_before, os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.speed_only:
        atomic_write_json(args.out / f"speed-{args.threads or 'all'}-threads.json", result)
        print(json.dumps({k: result[k] for k in ("speed", "loadavg_before", "loadavg_after")}, indent=1))
        return 0
    atomic_write_json(args.out / "int8_reduce_range.json", result)
    (args.out / "int8_reduce_range.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
