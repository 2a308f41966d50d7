"""What a dataset is: the one folder scanner behind the loaders, `rn50 data check`, export calibration and the
benchmarks, so the doctor vouches for exactly the images that training reads.

ImageNet layout: `split/<class>/<image>`. A class is a folder not starting with "."; its images are the files
directly inside it with an image extension. Everything else (nested folders, dot-folders, other files) is ignored,
and the scan says what it ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rn50.errors import need

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val")


def is_class_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


@dataclass
class Scan:
    """One split folder: its class folders (sorted), their images (sorted paths) and what was not read."""

    folder: Path
    images: dict[str, list[Path]] = field(default_factory=dict)  # class -> images, in sorted class order
    ignored: list[Path] = field(default_factory=list)  # non-image files, nested entries, dot-folders

    @property
    def classes(self) -> list[str]:
        return list(self.images)

    def items(self) -> list[tuple[Path, str]]:
        """(path, class) for every image, sorted by class then path."""
        return [(p, c) for c, paths in self.images.items() for p in paths]


def scan_folder(folder: str | os.PathLike) -> Scan:
    """Scan one split folder (`folder/<class>/<image>`)."""
    folder = Path(folder)
    scan = Scan(folder=folder)
    for entry in sorted(folder.iterdir()):
        if not is_class_dir(entry):
            scan.ignored.append(entry)
            continue
        images = []
        for f in sorted(entry.iterdir()):
            (images if is_image(f) else scan.ignored).append(f)
        scan.images[entry.name] = images
    return scan


@dataclass
class FileList:
    """The images of one split with labels indexed by the sorted class names of the train split."""

    root: Path
    split: str
    classes: list[str]
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)


def list_split(root: str | os.PathLike, split: str) -> FileList:
    """Scan `root/split/<class>/*` (ImageNet layout); every problem is one UserError saying what to do."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    root = Path(root)
    need(root.exists(), f"data folder not found: {root}")
    need(root.is_dir(), f"DATA must be a folder in ImageNet layout (train/<class>/*.JPEG), not a file: {root}")
    folder = root / split
    need(folder.is_dir(), f"{root} has no {split}/ folder (expected ImageNet layout: {split}/<class>/*.JPEG)")
    # Labels follow the train split's classes so train and val agree even if val lacks a class.
    class_root = root / "train" if (root / "train").is_dir() else folder
    classes = sorted(d.name for d in class_root.iterdir() if is_class_dir(d))
    need(bool(classes), f"{class_root} has no class folders (expected {class_root}/<class>/<image>)")
    index = {c: i for i, c in enumerate(classes)}
    out = FileList(root=root, split=split, classes=classes)
    for cls, paths in scan_folder(folder).images.items():
        need(cls in index, f"class {cls!r} is in {split}/ but not in train/; run `rn50 data check {root}`")
        out.files += map(str, paths)
        out.labels += [index[cls]] * len(paths)
    need(bool(out.files), f"no images under {folder} (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return out
