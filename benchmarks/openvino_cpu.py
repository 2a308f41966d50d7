"""OpenVINO INT8 against ONNX Runtime INT8 and the integer-GEMM ceiling on this CPU, in one interleaved run.

    python benchmarks/openvino_cpu.py --out docs/results/openvino-cpu-<cpu>      # trains the sample model (cached)
    python benchmarks/openvino_cpu.py --checkpoint CKPT --out DIR

Every series runs an artifact `rn50 export` wrote and verified (parity with eager fp32 on the sample's val images),
on the same checkpoint: ONNX Runtime's INT8 (the onnx format's CPU Q/DQ model, stem float and int8), OpenVINO on
that very Q/DQ file, and OpenVINO's own format with NNCF INT8 (stem float and int8; latency and throughput modes;
CPU pinning off as a lever). Each round times every series (order rotated) and then the integer-GEMM ceiling of
benchmarks/cpu_infer.py (ONNX Runtime's MatMulInteger u8 x s8 on a 2048x1024x1024 GEMM, the fastest of 5 repeats) in a
fresh process, so the ceiling meets the same load as the series of its round; every ratio below is the median of the
per-round ratios, with min and max. Top-1 agreement with eager fp32 is measured on every val image of the sample.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_infer import cpu_facts, macs_per_image, sample_and_model  # noqa: E402

from rn50.bench.timing import ratio_stats, round_order, timed_loop  # noqa: E402
from rn50.env import git_commit, package_versions  # noqa: E402
from rn50.export import export_model, load_artifact  # noqa: E402
from rn50.export.sidecar import sidecar_path  # noqa: E402
from rn50.io import atomic_write_json, atomic_write_text  # noqa: E402
from rn50.tables import markdown_table  # noqa: E402

BASE = "onnxruntime int8 (Q/DQ, stem float)"  # rn50's ONNX INT8 default: what OpenVINO is compared with


def ceiling_gmac_s(threads: int) -> float:
    """cpu_infer.py's u8 x s8 GEMM rate, in a fresh process (the sweep's thread pools would lower it here)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "cpu_infer.py"), "--gemm-only", "--int8-only"]
    done = subprocess.run([*cmd, "--threads", str(threads)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["u8s8_gemm_gmac_s"]


def openvino_compiled(path: Path, threads: int, pinning: bool = True, nhwc: bool = False):
    """OpenVINO compiling a model file (an ONNX Q/DQ file as it is, or an IR) with the settings of rn50's runner;
    `nhwc`: the input tensor in NHWC (channels-last) with OpenVINO's preprocessing moving it to the model's NCHW."""
    from rn50.export.openvino import core, kernel_counts, openvino

    model = core().read_model(str(path))
    if nhwc:
        ppp = openvino().preprocess.PrePostProcessor(model)
        ppp.input().tensor().set_layout(openvino().Layout("NHWC"))
        ppp.input().model().set_layout(openvino().Layout("NCHW"))
        model = ppp.build()
    compiled = core().compile_model(
        model,
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
         "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": pinning},
    )  # fmt: skip
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        request.infer({0: x.permute(0, 2, 3, 1).contiguous().numpy() if nhwc else x.numpy()}, share_inputs=True)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return run, kernel_counts(compiled)


def build(ckpt: Path, sample: Path, work: Path, size: int, threads: int) -> dict[str, dict]:
    """{series: {"run": f(x) -> logits, ...}}: every artifact exported (and verified) once, then loaded."""
    common = dict(image_size=size, max_batch=64, images_dir=sample / "val", calib_dir=sample / "train", force=True)
    paths = {}
    for name, fmt, opts in [
        ("onnx-int8-stem-float", "onnx", {}),
        ("onnx-int8-stem-int8", "onnx", {"int8_stem": "int8"}),
        ("ov-nncf-stem-float", "openvino", {}),
        ("ov-nncf-stem-int8", "openvino", {"int8_stem": "int8"}),
    ]:
        out = work / f"{name}-{size}px{'.onnx' if fmt == 'onnx' else '.ov'}"
        if not sidecar_path(out).is_file():  # exported and verified by an earlier run of this script: reused
            t0 = time.perf_counter()
            export_model(ckpt, fmt, out, precision="int8", **common, **opts)
            print(f"exported {name} in {time.perf_counter() - t0:.0f} s", flush=True)
        paths[name] = out
    from rn50.weights import load_model

    eager = load_model(ckpt).eval().to(memory_format=torch.channels_last)
    series: dict[str, dict] = {"eager fp32": {"run": lambda x: eager(x.contiguous(memory_format=torch.channels_last))}}
    for stem in ("float", "int8"):
        runner = load_artifact(paths[f"onnx-int8-stem-{stem}"], threads=threads)
        series[f"onnxruntime int8 (Q/DQ, stem {stem})"] = {"run": runner.run, "kernels": runner.node_providers}
        run, kernels = openvino_compiled(paths[f"onnx-int8-stem-{stem}"], threads)
        series[f"openvino int8 (the same Q/DQ file, stem {stem})"] = {"run": run, "kernels": kernels}
    for stem in ("float", "int8"):
        runner = load_artifact(paths[f"ov-nncf-stem-{stem}"], threads=threads)
        series[f"openvino int8 (NNCF, stem {stem})"] = {"run": runner.run, "kernels": runner.kernels}
    series["openvino-throughput int8 (NNCF, stem int8)"] = {
        "run": load_artifact(paths["ov-nncf-stem-int8"], mode="throughput").run
    }
    series["openvino int8 (NNCF, stem int8, pinning off)"] = {
        "run": openvino_compiled(paths["ov-nncf-stem-int8"] / "model.xml", threads, pinning=False)[0]
    }
    series["openvino int8 (NNCF, stem int8, NHWC input)"] = {
        "run": openvino_compiled(paths["ov-nncf-stem-int8"] / "model.xml", threads, nhwc=True)[0]
    }
    return series


def agreement(series: dict[str, dict], sample: Path, size: int) -> None:
    from rn50.data.transforms import load_eval_images

    images = load_eval_images(sample / "val", 10_000, size)
    with torch.inference_mode():
        top1 = {n: torch.cat([s["run"](c.contiguous()) for c in images.split(8)]).argmax(1) for n, s in series.items()}
    for name, s in series.items():
        s["top1_agreement"] = float((top1[name] == top1["eager fp32"]).float().mean())
        s["agreement_n"] = len(images)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="rn50 checkpoint (default: train one on the sample, cached)")
    p.add_argument("--work", type=Path, default=Path("runs/cpu-infer"), help="sample, cached model, artifacts")
    p.add_argument("--out", type=Path, default=Path("results/openvino-cpu"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=3, help="timed iterations per series per round")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sample, ckpt = sample_and_model(args.work, args.checkpoint, 64, 4)  # cpu_infer's model, shared through --work
    load_before = os.getloadavg()
    series = build(ckpt, sample, args.work / "openvino-artifacts", args.image_size, args.threads)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))
    names = list(series)
    with torch.inference_mode():
        for name in names:
            for _ in range(2):  # first call and warmup, untimed
                series[name]["run"](x)
        rates: dict[str, list[float]] = {name: [] for name in names + ["ceiling"]}
        macs = macs_per_image(ckpt, args.image_size)
        for r in range(args.rounds):
            for name in round_order(names, r):
                loop = timed_loop(lambda n=name: series[n]["run"](x), warmup=0, iters=args.iters, min_iters=1)
                rates[name].append(args.batch * len(loop.samples_s) / loop.total_s)
            rates["ceiling"].append(ceiling_gmac_s(args.threads) * 1e9 / macs)
            print(f"round {r + 1}/{args.rounds}: load {os.getloadavg()[0]:.2f}", flush=True)
    load_after = os.getloadavg()
    agreement(series, sample, args.image_size)
    rows = []
    for name in names:
        row = {"series": name, "img_s": float(np.median(rates[name]))}
        for key, other in (("x_eager", "eager fp32"), ("x_ort_int8", BASE), ("of_ceiling", "ceiling")):
            stats = ratio_stats([a / b for a, b in zip(rates[name], rates[other], strict=True)])
            row[key] = f"{stats['ratio']:.2f} ({stats['ratio_min']:.2f}-{stats['ratio_max']:.2f})"
            row[key + "_median"] = stats["ratio"]
        row["top1_agreement"] = series[name]["top1_agreement"]
        row["kernels"] = series[name].get("kernels")
        rows.append(row)
    facts = cpu_facts()
    summary = {
        "cpu": facts, "batch": args.batch, "image_size": args.image_size, "threads": args.threads,
        "rounds": args.rounds, "iters_per_round": args.iters, "checkpoint": str(ckpt),
        "gmac_per_image": macs / 1e9, "ceiling_img_s_per_round": rates["ceiling"],
        "load_before": load_before, "load_after": load_after, "rows": rows, "round_img_s": rates,
        "versions": package_versions(), "commit": git_commit(),
    }  # fmt: skip
    cols = [("series", "series"), ("img_s", "img/s (median round)"), ("x_eager", "x eager fp32")]
    cols += [("x_ort_int8", f"x {BASE}"), ("of_ceiling", "of the integer-GEMM ceiling")]
    cols += [("top1_agreement", f"top-1 agreement ({rows[0].get('agreement_n', 360)} val images)")]
    for row in rows:
        row["agreement_n"] = series[row["series"]]["agreement_n"]
    head = [
        f"# OpenVINO vs ONNX Runtime INT8, batch {args.batch}, {args.image_size} px",
        "",
        f"- CPU: {facts['cpu_label']} [{' '.join(facts['cpu_flags'])}], {facts['cores']} cores, {args.threads} threads",
        f"- Load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} ({facts['cores']} cores)",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in summary['versions'].items())}",
        f"- Checkpoint: {ckpt} (the sample model benchmarks/cpu_infer.py trains); commit {summary['commit']}",
        f"- {args.rounds} interleaved rounds x {args.iters} iterations per series; ratios: median (min-max) of "
        "per-round ratios; the integer-GEMM ceiling (benchmarks/cpu_infer.py: ONNX Runtime MatMulInteger u8 x s8, "
        "best of 5) is "
        f"measured in a fresh process in every round: median {np.median(rates['ceiling']):.1f} img/s "
        f"({macs / 1e9:.2f} GMAC per image)",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "openvino-cpu.json", summary)
    atomic_write_text(args.out / "openvino-cpu.md", "\n".join([*head, "", markdown_table(rows, cols), ""]))
    print("\n".join([*head, "", markdown_table(rows, cols)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
