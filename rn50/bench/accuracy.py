"""`rn50 eval`: top-1/top-5 of a checkpoint or any exported artifact on a labelled ImageNet-layout folder, beside the
fp32 model it came from (named by the artifact's sidecar, or given), with the accuracy delta and top-1 agreement.

Images go through the trainer's own validation loader (`pytorch` backend: resize the shorter side, centre crop,
normalise), so the figures are the ones `rn50 train` reports for the same folder. img/s counts the model calls only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rn50.errors import UserError, need


@dataclass(frozen=True)
class EvalConfig:
    model: Path  # checkpoint or exported artifact
    data: Path  # ImageNet-layout folder (its val/ split when present) or one split folder of class folders
    reference: Path | None = None  # fp32 checkpoint to compare with (default: the artifact's source checkpoint)
    batch: int = 32
    image_size: int | None = None  # default: the artifact's input size, or the checkpoint's recipe's, or 224
    workers: int = 2
    limit: int | None = None  # evaluate the first N batches only


def _split(data: Path) -> tuple[Path, str]:
    """(root, split) for the loader: DATA/val when present, or DATA itself when it is a train/ or val/ folder."""
    data = Path(data)
    need(data.is_dir(), f"data folder not found: {data}")
    if (data / "val").is_dir():
        return data, "val"
    if data.name in ("train", "val"):
        return data.parent, data.name
    raise UserError(f"{data} has no val/ folder: give an ImageNet-layout folder (val/<class>/*) or its val/ folder")


class _Model:
    """A callable `x -> logits` with a name, precision, class count and input size, from a checkpoint or artifact."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        need(self.path.exists(), f"model not found: {self.path}")
        self.source: Path | None = None
        from rn50.export.formats import is_artifact

        if is_artifact(self.path):
            from rn50.export import load_artifact
            from rn50.export.sidecar import sidecar_image_size

            runner = load_artifact(self.path, "cpu")
            side = runner.sidecar or {}
            self.fn, self.kind, self.precision = runner, runner.format, runner.precision
            self.num_classes = side.get("num_classes")
            self.image_size = sidecar_image_size(side)
            src = side.get("source_checkpoint")
            self.source = Path(src) if src else None
        else:
            from rn50.weights import load_model, read_checkpoint

            model = load_model(self.path).eval()
            self.fn, self.kind, self.precision = model, "checkpoint", "fp32"
            self.num_classes = model.fc.out_features
            recipe = (read_checkpoint(self.path) or {}).get("recipe") or {}
            self.image_size = recipe.get("image_size") if isinstance(recipe, dict) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.fn(x).float()


def _score(loader, runs: dict[str, Any], names: list[str], limit: int | None, say) -> tuple[dict, dict, int, int]:
    """One pass over the loader: per model, top-1/top-5 hits and seconds; the models' top-1 agreement; images."""
    hits = {n: torch.zeros(2, dtype=torch.long) for n in names}  # top-1, top-5
    seconds = dict.fromkeys(names, 0.0)
    agree, n = 0, 0
    for i, (images, labels) in enumerate(loader):
        if limit is not None and i >= limit:
            break
        top1 = {}
        for name in names:
            t0 = time.perf_counter()
            logits = runs[name](images)
            seconds[name] += time.perf_counter() - t0
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            # top-1 is argmax (the first of tied logits), as parity and bench infer count it: an INT8 model's
            # logits are 8-bit, so exact ties happen, and topk may order tied entries either way.
            top1[name] = logits.argmax(dim=1)
            hit = top.eq(labels.unsqueeze(1))
            hits[name] += torch.stack([top1[name].eq(labels).sum(), hit.any(dim=1).sum()])
        if "reference" in top1:
            agree += int((top1["model"] == top1["reference"]).sum())
        n += labels.numel()
        say(f"{n} images")
    return hits, seconds, agree, n


def evaluate_models(cfg: EvalConfig, say=lambda _: None) -> dict[str, Any]:
    """Accuracy of `cfg.model` (and its fp32 reference, when known) on `cfg.data`; one pass over the images."""
    from rn50.data.loaders import make_loader
    from rn50.export.runner import math_of
    from rn50.recipes import get_recipe

    need(cfg.batch >= 1, f"--batch must be >= 1, got {cfg.batch}")
    root, split = _split(cfg.data)
    model = _Model(cfg.model)
    ref_path = cfg.reference or model.source
    if cfg.reference is not None and not Path(cfg.reference).is_file():
        raise UserError(f"--reference {cfg.reference}: not a file (give the fp32 checkpoint)")
    reference = _Model(ref_path) if ref_path is not None and Path(ref_path).is_file() else None
    size = cfg.image_size or model.image_size or (reference and reference.image_size) or 224
    if model.image_size and size != model.image_size:
        raise UserError(f"{model.path} takes {model.image_size} px images; drop --image-size or pass that size")
    recipe = get_recipe("sample-cpu").replace(
        batch_size=cfg.batch, image_size=size, memory_format="contiguous", num_classes=model.num_classes or 1000
    )
    try:
        loader = make_loader(root, split, recipe, "pytorch", "cpu", workers=cfg.workers)
    except UserError as e:
        raise UserError(f"{e} (DATA: {cfg.data})") from None
    classes = loader.files.classes
    if model.num_classes is not None and len(classes) > model.num_classes:
        raise UserError(f"{cfg.data} has {len(classes)} classes but {model.path} has {model.num_classes} outputs")
    names = ["model"] + (["reference"] if reference is not None else [])
    runs = {"model": model, "reference": reference}
    hits, seconds, agree, n = _score(loader, runs, names, cfg.limit, say)
    loader.close()
    need(n != 0, f"no image of {cfg.data} could be decoded; run `rn50 data check {cfg.data}`")
    rows = []
    for name in names:
        m = runs[name]
        rows.append(
            {
                "role": name,
                "path": str(m.path),
                "format": m.kind,
                "precision": m.precision,
                "math": math_of(m.precision, cuda=False),  # every model is evaluated on the CPU
                "top1": 100 * int(hits[name][0]) / n,
                "top5": 100 * int(hits[name][1]) / n,
                "img_s": n / seconds[name] if seconds[name] > 0 else None,
            }
        )
    result: dict[str, Any] = {
        "data": str(cfg.data),
        "split": split,
        "images": n,
        "skipped": len(loader.bad_files),
        "image_size": size,
        "batch": cfg.batch,
        "rows": rows,
    }
    if reference is not None:
        result["top1_delta"] = rows[0]["top1"] - rows[1]["top1"]
        result["top1_agreement"] = agree / n
    elif model.kind != "checkpoint":
        why = "its sidecar names no source checkpoint" if model.source is None else f"{model.source} is not there"
        result["note"] = f"no fp32 reference: {why}; pass --reference CKPT"
    return result
