import os
import stat

import pytest

from rn50.io import _new_file_mode, atomic_path, atomic_write_text


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    old = os.umask(0o022)
    _new_file_mode.cache_clear()  # the umask is read once per process
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
        _new_file_mode.cache_clear()
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
