"""Is the MLPerf harness the bottleneck? LoadGen's Offline samples/s against `rn50 bench infer`'s img/s for the same
built runtime, precision and batch, in one process, in interleaved rounds; then one SingleStream run.

    python benchmarks/mlperf_vs_infer.py DATA [--source CKPT_OR_ARTIFACT] [--backend eager] [--precision fp32]
        [--batch 8] [--image-size 224] [--rounds 5] [--seconds 15] [--sample-count 64] --out docs/results/X

Each round times, in an order rotated every round: (a) `bench infer`'s method, the runtime's step on a random batch
already in its dtype and layout (Runtime.step_for) timed by rn50.bench.timing.timed_loop for --seconds, once on the
main thread as `bench infer` runs it and once on a worker thread as the SUT runs; (b) a whole LoadGen Offline test
(`rn50 bench mlperf`'s Session, --min-duration --seconds: NOT COMPLIANT) on the same runtime, whose samples/s
include the sample library's batching, the top-1 readback and LoadGen's responses. The ratio LoadGen / bench infer is
taken per round (a load that comes and goes lands in one round's ratio) and its median is the figure. Inside each
LoadGen run the SUT also sums the time of the runtime's own calls: samples over that time is the rate `bench infer`
would see on those batches, and LoadGen's rate over it is the harness's share, untouched by the load between runs.
Without --source, a random-init ResNet-50 with the folder's class count (speed does not depend on the weights). Writes
OUT/mlperf-vs-infer.json and .md with the CPU, its flags, the load average before and after and LoadGen's logs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rn50.bench.mlperf.library import SampleLibrary, eval_folder  # noqa: E402
from rn50.bench.mlperf.loadgen import require_loadgen  # noqa: E402
from rn50.bench.mlperf.run import Session  # noqa: E402
from rn50.bench.mlperf.settings import MlperfOptions  # noqa: E402
from rn50.bench.mlperf.sut import SystemUnderTest  # noqa: E402
from rn50.bench.mlperf.system import build_runtime, calibrate, forward_fn, plan  # noqa: E402
from rn50.bench.progress import ProgressBar  # noqa: E402
from rn50.bench.stop import Background, StopSignals  # noqa: E402
from rn50.bench.timing import ratio_stats, round_order, timed_loop  # noqa: E402
from rn50.io import atomic_write_json, atomic_write_text  # noqa: E402
from rn50.tables import markdown_table  # noqa: E402

MEASURES = ("infer-main", "infer-thread", "loadgen-offline")


def random_checkpoint(folder: Path, image_size: int, work: Path) -> Path:
    from rn50.data.folders import scan_folder
    from rn50.model import resnet50
    from rn50.recipes import get_recipe
    from rn50.weights import save_weights

    torch.manual_seed(0)
    path = work / "random.pth"
    recipe = get_recipe("sample-cpu").replace(image_size=image_size).to_dict()
    save_weights(path, resnet50(num_classes=len(scan_folder(folder).classes)).eval(), recipe=recipe)
    return path


def infer_rate(step, batch: int, seconds: float, thread: bool) -> float:
    """bench infer's timed loop (after one untimed call) on this thread or a worker thread: images per second."""

    def loop():
        with torch.no_grad():
            return timed_loop(step, warmup=1, iters=None, min_time=seconds, min_iters=3)

    if not thread:
        res = loop()
    else:
        out = []
        worker = Background(lambda: out.append(loop()), "infer")
        worker.start().wait()
        if worker.error is not None:
            raise worker.error
        res = out[0]
    return batch * len(res.samples_s) / res.total_s


def run(args: argparse.Namespace) -> dict:
    lg = require_loadgen()
    folder = eval_folder(args.data)
    work = Path(tempfile.mkdtemp(prefix="mlperf-vs-infer-"))
    source = args.source or random_checkpoint(folder, args.image_size, work)
    opts = MlperfOptions(
        source, args.data, "offline", backend=args.backend, precision=args.precision, image_size=args.image_size,
        batch=args.batch, min_duration_s=args.seconds, min_query_count=1, sample_count=args.sample_count,
        out=args.out, progress=False,
    )  # fmt: skip
    opts.validate()
    rt, summary = build_runtime(opts, folder, work)
    to_input = lambda x: x.to(dtype=rt.input_dtype)  # noqa: E731
    library = SampleLibrary(folder, summary["image_size"], to_input)
    sut = SystemUnderTest(lg, forward_fn(rt), library, "offline", summary["batch"], rt.input_channels_last)
    offline = plan(opts, summary["batch"], calibrate(sut, [summary["batch"]]), 0.015)
    step, _ = rt.step_for(summary["batch"])
    rates: dict[str, list[float]] = {m: [] for m in (*MEASURES, "runtime-in-run")}
    records, orders = [], []
    load_before = os.getloadavg()
    with StopSignals("mlperf-vs-infer") as stop, ProgressBar("mlperf-vs-infer", 1, False) as bar:
        session = Session(lg, opts, sut, stop, bar)
        for r in range(args.rounds):
            orders.append(round_order(list(MEASURES), r))
            for name in orders[-1]:
                if name == "loadgen-offline":
                    rec = session.run(offline.conf, Path(args.out) / "loadgen" / f"offline-round{r + 1}")
                    records.append(rec)
                    rates[name].append(float(rec["metric_value"]))
                    rates["runtime-in-run"].append(rec["samples"] / rec["inference_s"])
                else:
                    rates[name].append(infer_rate(step, summary["batch"], args.seconds, name == "infer-thread"))
                print(f"round {r + 1} {name}: {rates[name][-1]:.2f} img/s", flush=True)
        single = single_stream(lg, opts, rt, library, stop, bar)
    load_after = os.getloadavg()
    ratios = {
        base: [lg_ / b for lg_, b in zip(rates["loadgen-offline"], rates[base], strict=True)]
        for base in ("infer-main", "infer-thread", "runtime-in-run")
    }
    return {
        "kind": "rn50-mlperf-vs-infer",
        "argv": sys.argv[1:],
        "source": summary,
        "rates": rates,
        "orders": orders,
        "ratios": {k: {**ratio_stats(v), "per_round": v} for k, v in ratios.items()},
        "medians": {k: statistics.median(v) for k, v in rates.items()},
        "offline_runs": [
            {k: rec.get(k) for k in ("result", "failed", "metric_value", "samples", "inference_s", "runtime_busy")}
            for rec in records
        ],
        "singlestream": single,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "env": env(),
    }


def single_stream(lg, opts: MlperfOptions, rt, library: SampleLibrary, stop, bar) -> dict:
    """One SingleStream test on the same runtime (batch 1 in LoadGen's issue call), reduced like the Offline ones."""
    ss = replace(opts, scenario="singlestream", min_query_count=None)
    sut = SystemUnderTest(lg, forward_fn(rt), library, "singlestream", 1, rt.input_channels_last)
    p = plan(ss, 1, calibrate(sut, [1]), 0.015)
    rec = Session(lg, ss, sut, stop, bar).run(p.conf, Path(ss.out) / "loadgen" / "singlestream")
    keep = ("result", "failed", "metric", "metric_value", "p50_ms", "p90_ms", "p99_ms", "samples", "seconds", "folder")
    return {k: rec.get(k) for k in keep} | {"deviations": rec["deviations"]}


def env() -> dict:
    from rn50.env import capture_env, package_versions

    e = capture_env()
    e["packages"].update(package_versions(("mlcommons-loadgen",)))
    return e


def markdown(res: dict) -> str:
    src, e = res["source"], res["env"]
    rows = [
        {"round": r + 1, "order": " > ".join(res["orders"][r]), **{m: res["rates"][m][r] for m in MEASURES},
         "vs_main": res["ratios"]["infer-main"]["per_round"][r],
         "vs_thread": res["ratios"]["infer-thread"]["per_round"][r],
         "runtime": res["rates"]["runtime-in-run"][r], "busy": res["offline_runs"][r]["runtime_busy"],
         "result": res["offline_runs"][r]["result"]}
        for r in range(len(res["orders"]))
    ]  # fmt: skip
    cols = [("round", "round"), ("order", "order"), ("infer-main", "bench infer img/s (main thread)")]
    cols += [("infer-thread", "bench infer img/s (worker thread)"), ("loadgen-offline", "LoadGen Offline samples/s")]
    cols += [("result", "LoadGen result"), ("vs_main", "LoadGen / main"), ("vs_thread", "LoadGen / worker")]
    cols += [("runtime", "runtime calls inside the run, img/s"), ("busy", "LoadGen / runtime calls (busy share)")]
    ss = res["singlestream"]
    lines = [
        f"# MLPerf Offline under LoadGen vs `rn50 bench infer`: {src['backend']} {src['precision']}, batch "
        f"{src['batch']}, {src['image_size']} px",
        "",
        f"- CPU: {e['cpu']} ({e.get('cpu_signature')}) [{' '.join(e.get('cpu_flags', []))}], {e['cpu_cores']} cores, "
        f"torch threads {e['torch_threads']}",
        f"- load average (1, 5, 15 min) before {res['loadavg_before']}, after {res['loadavg_after']}: a machine shared "
        "with other jobs; the per-round ratios, not the absolute figures, are what this measures",
        f"- software: {', '.join(f'{k} {v}' for k, v in e['packages'].items())}; commit {e.get('git_commit')}",
        f"- command: python benchmarks/mlperf_vs_infer.py {' '.join(res['argv'])}",
        f"- source: {', '.join(f'{k} {v}' for k, v in src.items())}",
        "- NOT COMPLIANT: reduced runs (--min-duration, --sample-count, --min-query-count), not the 600 s / 1,024 "
        "samples / 24,576-sample Offline query of the rules",
        "",
        markdown_table(rows, cols),
        f"Median LoadGen / bench infer: {res['ratios']['infer-main']['ratio']:.3f} (main thread, spread "
        f"{res['ratios']['infer-main']['ratio_spread']:.1%}), {res['ratios']['infer-thread']['ratio']:.3f} (worker "
        f"thread, spread {res['ratios']['infer-thread']['ratio_spread']:.1%}); LoadGen / the runtime's own calls in "
        f"the same run: {res['ratios']['runtime-in-run']['ratio']:.3f} (spread "
        f"{res['ratios']['runtime-in-run']['ratio_spread']:.1%}): the harness's cost, free of the load between runs.",
        "",
        f"SingleStream (same runtime, batch 1): {ss['result']}, {ss['metric']} {ss['metric_value']:.2f} ms; p50 "
        f"{ss['p50_ms']:.2f} / p90 {ss['p90_ms']:.2f} / p99 {ss['p99_ms']:.2f} ms over {ss['samples']} queries; "
        f"NOT COMPLIANT: {'; '.join(ss['deviations'])}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--source", type=Path, default=None)
    ap.add_argument("--backend", default=None, help="for a checkpoint (default eager); an artifact runs on its own")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--sample-count", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's, all cores)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.out) / "mlperf-vs-infer.json", res)
    text = markdown(res)
    atomic_write_text(Path(args.out) / "mlperf-vs-infer.md", text)
    print(text)


if __name__ == "__main__":
    main()
