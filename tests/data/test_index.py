"""The dataset index: headers parsed once per dataset, changed files only probed again, one verdict for the doctor and
every loader; the batch-wide crop rule every backend shares."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from rn50.data import index as index_mod
from rn50.data.check import check_dataset
from rn50.data.folders import list_split
from rn50.data.index import dataset_index
from rn50.data.loaders import make_loader
from rn50.data.transforms import train_windows
from rn50.recipes import get_recipe
from tests.data.images import CORRUPT, UNUSUAL, write_corrupt, write_unusual

RECIPE = get_recipe("sample-cpu").replace(batch_size=4, image_size=32)


@pytest.fixture
def odd(tmp_path) -> Path:
    rng = np.random.default_rng(7)
    for split in ("train", "val"):
        write_unusual(tmp_path / split / "a", rng)
        write_corrupt(tmp_path / split / "b", rng)
        # A header every reader accepts, a Huffman table no decoder does: only a full decode finds it.
        data = bytearray((tmp_path / split / "a" / "progressive.JPEG").read_bytes())
        at = data.index(b"\xff\xc4")
        data[at + 5 : at + 21] = b"\xff" * 16
        (tmp_path / split / "b" / "bad_huffman.JPEG").write_bytes(bytes(data))
    return tmp_path


def test_headers_are_probed_once_and_again_only_for_changed_files(odd, monkeypatch):
    probed = []
    real = index_mod.probe
    monkeypatch.setattr(index_mod, "probe", lambda path: probed.append(Path(path).name) or real(path))
    files = list_split(odd, "val").files
    first = dataset_index(odd / "val", files)
    assert len(probed) == len(files) == len(UNUSUAL) + len(CORRUPT) + 1
    assert {Path(files[i]).stem for i in np.flatnonzero(first.bad())} == set(CORRUPT)  # bad_huffman's header is fine
    i = files.index(str(odd / "val" / "a" / "exif_rotated.JPEG"))
    assert (first.height[i], first.width[i]) == (48, 40)  # stored 48 wide, 40 high, EXIF-rotated by 90 degrees
    probed.clear()
    again = dataset_index(odd / "val", files)  # a new run: read from the cache, nothing parsed
    assert probed == [] and np.array_equal(again.end, first.end) and again.header_reason == first.header_reason
    tiny = odd / "val" / "a" / "tiny.JPEG"
    shutil.copy(odd / "val" / "a" / "wide.JPEG", tiny)  # replaced: another size and mtime
    os.utime(tiny, ns=(1, 1))
    changed = dataset_index(odd / "val", files)
    assert probed == ["tiny.JPEG"]
    j = files.index(str(tiny))
    assert (changed.height[j], changed.width[j]) == (8, 400) and (first.height[j], first.width[j]) == (4, 5)


@pytest.mark.parametrize("backend", ["pytorch", "pytorch-gpu", "dali-cpu"])
@pytest.mark.parametrize("doctor_first", [True, False])
def test_every_loader_skips_exactly_the_files_the_doctor_lists(odd, backend, doctor_first, monkeypatch):
    if backend.startswith("dali"):
        pytest.importorskip("nvidia.dali")
        from rn50.data.dali import DaliLoader

        builds, real = [], DaliLoader._build
        monkeypatch.setattr(DaliLoader, "_build", lambda self: builds.append(1) or real(self))
    if doctor_first:
        report = check_dataset(odd, workers=1)
        doctor = {p for p, _ in report.bad_files if "/val/" in p}
        assert {Path(p).stem for p in doctor} == {*CORRUPT, "bad_huffman"}
    loader = make_loader(odd, "val", RECIPE, backend, "cpu", workers=1)
    assert sum(len(y) for _, y in loader) == len(UNUSUAL)
    if not doctor_first:  # found while loading (a decode failure), the same files
        doctor = {p for p, _ in check_dataset(odd, workers=1).bad_files if "/val/" in p}
    assert {p for p, _ in loader.bad_files} == doctor
    if backend == "dali-cpu":  # with the doctor's verdict no decode fails: the pipeline is built once
        assert len(builds) == (1 if doctor_first else 2)
    loader.close()


def test_crop_windows_are_a_pure_function_of_each_seed_and_fit_the_image():
    rng = np.random.default_rng(0)
    h, w = rng.integers(1, 600, 500), rng.integers(1, 600, 500)
    h[:3], w[:3] = (1, 4, 300), (1, 400, 6)  # a pixel, a strip, a pole: the fallback crops
    seeds = rng.integers(0, 2**62, 500)
    top, left, ch, cw, flip = train_windows(h, w, seeds)
    order = rng.permutation(500)[:123]  # another batch holding some of the same samples, in another order
    again = train_windows(h[order], w[order], seeds[order])
    for mine, theirs in zip((top, left, ch, cw, flip), again, strict=True):
        assert np.array_equal(mine[order], theirs)
    assert (top >= 0).all() and (left >= 0).all() and (top + ch <= h).all() and (left + cw <= w).all()
    assert (ch >= 1).all() and (cw >= 1).all()
    area, ratio = ch * cw / (h * w), cw / ch
    roomy = (h > 100) & (w > 100) & (np.abs(np.log(w / h)) < 0.2)  # room for a crop in range on the first draws
    assert (area[roomy] > 0.07).all() and (area[roomy] <= 1).all()
    assert (ratio[roomy] > 0.7).all() and (ratio[roomy] < 1.4).all()
    assert 0.4 < flip.mean() < 0.6 and not train_windows(h, w, seeds, hflip=False)[4].any()


def test_an_unwritable_cache_costs_a_warning_not_the_run(odd, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("RN50_CACHE_DIR", str(blocker))
    loader = make_loader(odd, "val", RECIPE, "pytorch", "cpu", workers=0)
    assert sum(len(y) for _, y in loader) == len(UNUSUAL)
    assert "set RN50_CACHE_DIR to a writable folder" in caplog.text


def test_a_second_check_decodes_only_what_changed(odd, monkeypatch):
    import rn50.data.check as check

    first = check_dataset(odd, workers=1)
    decoded, real = [], check.process_map
    monkeypatch.setattr(check, "process_map", lambda fn, items, w: decoded.append(items) or real(fn, items, w))
    assert check_dataset(odd, workers=1).bad_files == first.bad_files and decoded == []  # nothing decoded again
    (odd / "val" / "a" / "new.JPEG").write_bytes((odd / "val" / "a" / "wide.JPEG").read_bytes())
    again = check_dataset(odd, workers=1)
    assert decoded == [[str(odd / "val" / "a" / "new.JPEG")]]  # the new file only
    assert again.counts["val"]["a"] == first.counts["val"]["a"] + 1
    assert again.bad_files == first.bad_files
