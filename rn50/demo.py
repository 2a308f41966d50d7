"""`rn50 demo`: the whole pipeline on the built-in sample, ending in one summary a person reads at a glance.

Train the sample recipe, export ONNX fp32 and the CPU INT8 form (each proving parity on the way, kept beside the run),
time eager fp32 against ONNX Runtime (and OpenVINO, when installed) fp32 and INT8 at one batch size with top-1
agreement on every val image, time the input pipelines, then write `summary.md` / `summary.json`. Every step is the
library call behind one `rn50` command; the summary names the command and where each file went."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rn50.errors import UserError, need
from rn50.io import atomic_write_json, atomic_write_text

# What the demo makes under its output folder; --force replaces exactly these.
PARTS = ("train", "export", "bench-infer", "bench-data", "summary.md", "summary.json")


@dataclass(frozen=True)
class DemoConfig:
    sample: Path
    out: Path
    recipe: str = "sample-cpu"
    epochs: int | None = None  # None: the recipe's
    seed: int = 0
    batch: int = 8  # inference batch size
    infer_seconds: float = 3.0  # timed window per inference series
    data_seconds: float = 3.0  # approximate timed window per input pipeline
    force: bool = False
    progress: bool = True


def prepare(cfg: DemoConfig) -> None:
    out = Path(cfg.out)
    need(not out.exists() or out.is_dir(), f"--out {out} is a file; give a folder")
    existing = [p for p in PARTS if (out / p).exists()]
    if existing and not cfg.force:
        raise UserError(f"{out} already holds a demo ({', '.join(existing)}); pass --force to replace it")
    for p in existing:
        path = out / p
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    sample = Path(cfg.sample)
    if not (sample / "train").is_dir() or not (sample / "val").is_dir():
        from rn50.data.sample import make_sample

        make_sample(sample, force=cfg.force)


def run_demo(cfg: DemoConfig, say=print) -> dict[str, Any]:
    """Run every step; return the summary (also written to out/summary.json and out/summary.md)."""
    import torch

    from rn50.env import cpu_flags, cpu_model
    from rn50.recipes import get_recipe

    t_start = time.perf_counter()
    recipe = get_recipe(cfg.recipe).replace(gpus=1)  # the demo trains in this one process
    if cfg.epochs is not None:  # a quick look: the warmup shrinks to fit a shorter run
        recipe = recipe.replace(epochs=cfg.epochs, warmup_epochs=min(recipe.warmup_epochs, cfg.epochs))
    prepare(cfg)
    out = Path(cfg.out)
    summary: dict[str, Any] = {
        "kind": "rn50-demo",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "cpu_flags": cpu_flags(), "torch": torch.__version__},
        "load_before": list(os.getloadavg()),
    }
    summary["train"] = train_step(cfg, recipe, say)
    best = Path(summary["train"]["checkpoint"])
    summary["infer"] = infer_step(cfg, recipe, best, say)
    summary["data"] = data_step(cfg, recipe, say)
    summary["load_after"] = list(os.getloadavg())
    summary["demo_seconds"] = time.perf_counter() - t_start
    summary["files"] = {
        "run": str(out / "train"),
        "checkpoint": str(best),
        "exports": str(out / "export"),
        "inference results": str(out / "bench-infer"),
        "input-pipeline results": str(out / "bench-data"),
        "summary": str(out / "summary.md"),
    }
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    return summary


def train_step(cfg: DemoConfig, recipe, say) -> dict[str, Any]:
    """`rn50 train SAMPLE --recipe R`: the run's figures and its best checkpoint."""
    from rn50.train.loop import TrainOptions, fit

    sample, out = Path(cfg.sample), Path(cfg.out)
    say(f"[1/3] rn50 train {sample} --recipe {recipe.name} --out {out / 'train'}")
    train = fit(TrainOptions(data=sample, recipe=recipe, out=out / "train", seed=cfg.seed, progress=cfg.progress))
    need(train["status"] == "complete", f"training {train['status']}; the demo stops here ({out / 'train'})")
    return {
        "recipe": recipe.name,
        "status": train["status"],
        "epochs": recipe.epochs,
        "last_top1": train["top1"],
        "best_top1": train["best_top1"],
        "train_seconds": train["train_seconds"],
        "checkpoint": str(Path(train["out"]) / "checkpoints" / "best.pth"),
    }


NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def infer_step(cfg: DemoConfig, recipe, best: Path, say) -> dict[str, Any]:
    """`rn50 bench infer BEST --backend onnxruntime[,openvino] --precision fp32,int8`: exports (kept), timings,
    agreement; OpenVINO when its extra is installed."""
    import importlib.util

    from rn50.bench.infer import InferConfig, run_infer

    sample, out = Path(cfg.sample), Path(cfg.out)
    backends = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    say(f"[2/3] rn50 bench infer {best} --backend {','.join(backends)} --precision fp32,int8 --batch {cfg.batch}")
    infer = run_infer(
        InferConfig(
            source=best,
            batches=[cfg.batch],
            backends=backends,
            precisions=["fp32", "int8"],
            device="cpu",
            image_size=recipe.image_size,
            iters=None,
            min_time=cfg.infer_seconds,
            images=sample,
            agreement_images=10_000,  # every val image
            keep_artifacts=out / "export",
            out=out / "bench-infer",
            progress=cfg.progress,
        )
    )
    series = {(s["backend"], s["precision"]): s for s in infer["series"]}
    rows = []
    for r in infer["rows"]:
        s = series.get((r["backend"], r["precision"]), {})
        agreement = 1.0 if (r["backend"], r["precision"]) == ("eager", "fp32") else s.get("top1_agreement")
        rows.append(
            {
                "series": f"{NAMES.get(r['backend'], r['backend'])} {r['precision']}",
                **{k: r.get(k) for k in ("status", "img_s", "p50_ms", "p99_ms", "speedup")},
                "top1_agreement": agreement,
                **{k: s.get(k) for k in ("artifact", "parity")},
                "reason": r.get("reason") or s.get("reason"),
            }
        )
    return {
        "batch": cfg.batch,
        "image_size": recipe.image_size,
        "agreement_images": (infer.get("agreement_images") or {}).get("n"),
        "rows": rows,
        "files": infer.get("paths", {}),
    }


def data_step(cfg: DemoConfig, recipe, say) -> dict[str, Any]:
    """`rn50 bench data SAMPLE --backend pytorch,dali-cpu` at the recipe's size."""
    from rn50.bench.datapipe import DataBenchConfig, run_data_bench, write_outputs

    sample = Path(cfg.sample)
    say(f"[3/3] rn50 bench data {sample} --backend pytorch,dali-cpu --image-size {recipe.image_size}")
    data_cfg = DataBenchConfig(
        data=sample,
        backends=("pytorch", "dali-cpu"),
        batch=recipe.batch_size,
        workers=recipe.workers,
        warmup=10,
        iters=_data_iters(cfg, recipe),
        image_size=recipe.image_size,
        device="cpu",
        ceiling=False,  # synthetic batches at 32 px time nothing: no figure a person should read
        recipe=recipe.name,
        progress=cfg.progress,  # --no-progress: no bar here either, as in the train and infer steps
    )
    data = run_data_bench(data_cfg)
    return {
        "rows": [
            {"backend": r.backend, "status": r.status, "img_s": r.img_per_s, "seconds": r.seconds, "reason": r.reason}
            for r in data.results
        ],
        "files": write_outputs(data, Path(cfg.out) / "bench-data"),
    }


def _data_iters(cfg: DemoConfig, recipe) -> int:
    """Batches for a timed window of at least cfg.data_seconds up to 10,000 img/s (the sample's 80 px JPEGs decode
    at 3,800-8,200 img/s on 2 cores), and never fewer than 50."""
    return max(50, round(cfg.data_seconds * 10_000 / recipe.batch_size))


def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def summary_markdown(s: dict[str, Any]) -> str:
    from rn50.tables import markdown_table

    t, inf = s["train"], s["infer"]
    m = s["machine"]
    lines = [
        "# rn50 demo: the built-in sample, end to end",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({' '.join(m['cpu_flags']) or 'no AVX flags read'}), "
        f"torch {m['torch']}; load average {s['load_before'][0]:.2f} before, {s['load_after'][0]:.2f} after. "
        f"Whole demo {s['demo_seconds'] / 60:.1f} min.",
        "",
        "## Training",
        f"`{t['recipe']}`, {t['epochs']} epochs: **val top-1 {t['last_top1']:.2f}%** at the last epoch "
        f"(best {t['best_top1']:.2f}%), training time **{t['train_seconds']:.0f} s**.",
        "",
        f"## Inference and export parity (batch {inf['batch']}, {inf['image_size']} px, CPU)",
        f"Top-1 agreement with eager fp32 on all {inf['agreement_images']} val images of the sample.",
        "",
    ]
    rows = []
    for r in inf["rows"]:
        if r["status"] != "ok":
            rows.append({"series": r["series"], "img_s": f"{r['status']}: {r['reason']}"})
            continue
        agreement = r["top1_agreement"] and 100 * r["top1_agreement"]
        rows.append(
            {
                "series": r["series"],
                "img_s": f"{r['img_s']:.0f}",
                "p50": f"{r['p50_ms']:.2f}",
                "p99": f"{r['p99_ms']:.2f}",
                "speedup": f"{_fmt(r['speedup'], '.2f')}x",
                "agreement": f"{_fmt(agreement, '.1f')}%",
            }
        )
    cols = [("series", "series"), ("img_s", "img/s"), ("p50", "p50 ms"), ("p99", "p99 ms")]
    cols += [("speedup", "speedup vs eager fp32"), ("agreement", "top-1 agreement")]
    lines.append(markdown_table(rows, cols).rstrip())
    lines += ["", "## Input pipeline (train augmentation, the sample recipe's batch and workers)", ""]
    rows = [
        {"backend": r["backend"], "img_s": f"{r['img_s']:.0f}", "window": f"{r['seconds']:.1f} s"}
        if r["status"] == "ok"
        else {"backend": r["backend"], "img_s": f"skipped: {r['reason']}"}
        for r in s["data"]["rows"]
    ]
    lines.append(
        markdown_table(rows, [("backend", "backend"), ("img_s", "img/s"), ("window", "timed window")]).rstrip()
    )
    lines += ["", "## Where everything went", ""]
    lines += [f"- {k}: `{v}`" for k, v in s["files"].items()]
    for r in inf["rows"]:
        if r.get("artifact"):
            lines.append(f"- {r['series']} model: `{r['artifact']}` (+ `.json` sidecar with its parity check)")
    return "\n".join(lines) + "\n"
