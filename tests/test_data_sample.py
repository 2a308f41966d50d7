import json

from rn50.data.check import check_dataset
from tests.conftest import run_cli


def test_sample_layout(sample_dir):
    for split, n in (("train", 1437), ("val", 360)):
        classes = sorted(p.name for p in (sample_dir / split).iterdir())
        assert classes == [f"digit{i}" for i in range(10)]
        assert sum(len(list((sample_dir / split / c).glob("*.jpg"))) for c in classes) == n


def test_sample_refuses_non_empty_without_force(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    res = run_cli(["data", "sample", tmp_path])
    assert res.exit_code == 2 and "--force" in res.stderr
    res = run_cli(["data", "sample", tmp_path, "--force"])
    assert res.exit_code == 0
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert len(list((tmp_path / "val").glob("*/*.jpg"))) == 360


def test_check_clean_sample(sample_dir):
    report = check_dataset(sample_dir, workers=2)
    assert report.ok, report.problems
    assert report.to_dict()["images"] == {"train": 1437, "val": 360}


def test_check_finds_problems(tmp_path, sample_dir):
    import shutil

    root = tmp_path / "ds"
    for split in ("train", "val"):
        for c in ("digit0", "digit1"):
            shutil.copytree(sample_dir / split / c, root / split / c)
    (root / "train" / "extra").mkdir()
    good = next((root / "train" / "digit0").glob("*.jpg"))
    data = good.read_bytes()
    (root / "train" / "digit0" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "val" / "digit1" / "notes.jpg").write_text("not an image")
    (root / "train" / "extra" / "x.jpg").write_bytes(data)

    res = run_cli(["data", "check", root, "--json"])
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    bad = {r["path"].split("/")[-1] for r in report["bad_files"]}
    assert bad == {"truncated.jpg", "notes.jpg"}
    assert report["one_split_classes"] == {"train": ["extra"]}


def test_check_missing_dir(tmp_path):
    res = run_cli(["data", "check", tmp_path / "nope"])
    assert res.exit_code == 2 and "not found" in res.stderr
