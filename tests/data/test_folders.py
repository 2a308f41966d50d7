"""One folder scanner: the dataset doctor, the loaders and the eval-image reader agree on what a dataset is."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rn50.data.check import check_dataset
from rn50.data.folders import list_split, scan_folder
from rn50.data.loaders import make_loader
from rn50.data.transforms import list_images
from rn50.recipes import get_recipe


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG")


@pytest.fixture
def tricky(tmp_path) -> Path:
    """Two classes with direct images, plus what the loaders must not read: nested images, a dot-folder class,
    a dot-folder inside a class, a non-image file."""
    k = 0
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            for i in range(3):
                _jpeg(tmp_path / split / cls / f"{i}.JPEG", k := k + 1)
            _jpeg(tmp_path / split / cls / "nested" / "deep.JPEG", k := k + 1)
            _jpeg(tmp_path / split / cls / ".cache" / "thumb.JPEG", k := k + 1)
            (tmp_path / split / cls / "notes.txt").write_text("not an image")
        _jpeg(tmp_path / split / ".hidden" / "x.JPEG", k := k + 1)
    return tmp_path


def test_doctor_counts_exactly_what_the_loaders_read(tricky):
    report = check_dataset(tricky, workers=1)
    assert report.counts == {"train": {"cat": 3, "dog": 3}, "val": {"cat": 3, "dog": 3}}
    assert report.ok, report.problems
    ignored = {Path(p).relative_to(tricky).as_posix() for p in report.other_files}
    assert "train/.hidden" in ignored and "val/cat/nested" in ignored and "train/dog/notes.txt" in ignored
    recipe = get_recipe("sample-cpu").replace(batch_size=2, image_size=32, num_classes=2)
    for split in ("train", "val"):
        files = list_split(tricky, split)
        assert files.classes == ["cat", "dog"]
        assert sorted(files.files) == sorted(str(p) for p, _ in scan_folder(tricky / split).items())
        assert len(files) == sum(report.counts[split].values())
        assert [str(p) for p, _ in list_images(tricky / split)] == files.files  # export calibration, bench
    val = make_loader(tricky, "val", recipe, "pytorch", "cpu", workers=0)
    assert sum(labels.numel() for _, labels in val) == sum(report.counts["val"].values())
    assert not val.bad_files
