"""`rn50 data check`: a dataset doctor for ImageNet-layout folders."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rn50.data.folders import SPLITS, scan_folder
from rn50.data.index import UNKNOWN, dataset_index, process_map, record_decodes
from rn50.errors import first_line, need


@dataclass
class CheckReport:
    root: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> images
    bad_files: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    one_split_classes: dict[str, list[str]] = field(default_factory=dict)  # split -> classes only there
    empty_classes: list[str] = field(default_factory=list)
    # What the loaders do not read: non-image files, anything nested below a class folder, dot-folders.
    other_files: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        out = [f"undecodable: {p} ({why})" for p, why in self.bad_files]
        out += [f"class only in {s}: {c}" for s, cs in self.one_split_classes.items() for c in cs]
        out += [f"empty class folder: {c}" for c in self.empty_classes]
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "root": self.root,
            "counts": self.counts,
            "images": {s: sum(c.values()) for s, c in self.counts.items()},
            "bad_files": [{"path": p, "reason": r} for p, r in self.bad_files],
            "one_split_classes": self.one_split_classes,
            "empty_classes": self.empty_classes,
            "other_files": self.other_files,
            "ok": self.ok,
        }


def decode_error(path: str) -> str | None:
    """None if the file decodes fully as an image, else why not."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # a full decode: catches truncated JPEGs that verify() lets through
            if im.width < 1 or im.height < 1:
                return "zero-sized image"
    except Exception as e:  # PIL raises many types for bad data; all mean "not usable"
        return first_line(e, 200, typed=True)
    return None


def find_splits(root: Path) -> dict[str, Path]:
    need(root.exists(), f"dataset folder not found: {root}")
    need(root.is_dir(), f"not a directory: {root}")
    splits = {s: root / s for s in SPLITS if (root / s).is_dir()}
    need(bool(splits), f"{root} has no train/ or val/ folder (expected ImageNet layout: train/<class>/*.JPEG)")
    return splits


def check_dataset(root: str | os.PathLike, workers: int | None = None) -> CheckReport:
    """Scan and fully decode every image (once: the verdicts are kept in the dataset index the loaders read, and
    only new or changed files are decoded again). A file is bad when its header already says it cannot be an image
    (what the loaders check) or when a full decode fails: the files every loader skips."""
    root = Path(root)
    splits = find_splits(root)
    report = CheckReport(root=str(root))
    classes_by_split: dict[str, set[str]] = {}
    workers = workers or min(8, os.cpu_count() or 1)
    for split, folder in splits.items():
        scan = scan_folder(folder)  # the loaders' own scan: the doctor checks what training reads
        report.other_files += [str(p) for p in scan.ignored if p.is_file() or p.is_dir()]
        report.counts[split] = {c: len(paths) for c, paths in scan.images.items()}
        report.empty_classes += [f"{split}/{c}" for c, paths in scan.images.items() if not paths]
        classes_by_split[split] = set(scan.images)
        files = [str(p) for p, _ in scan.items()]
        index = dataset_index(folder, files, workers)
        todo = np.flatnonzero(index.decoded == UNKNOWN).tolist()
        if todo:  # new or changed files only: the others keep the verdict of an earlier check
            verdicts = process_map(decode_error, [files[i] for i in todo], workers)
            record_decodes(index, dict(zip(todo, verdicts, strict=True)))
        report.bad_files += [(files[i], index.reason(i)) for i in np.flatnonzero(index.bad()).tolist()]
    if len(classes_by_split) == 2:
        train, val = classes_by_split["train"], classes_by_split["val"]
        report.one_split_classes = {
            s: sorted(only) for s, only in (("train", train - val), ("val", val - train)) if only
        }
    return report
