"""Faults the way the world delivers them: a full disk and a read-only folder, made real by the kernel.

As root (CI containers, this machine) a small tmpfs, or a read-only one, is mounted: root ignores permission bits,
so chmod would prove nothing. Without root the same tests use what a user meets: a folder without write permission,
and a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored, so a write past it fails with EFBIG as a full disk's does
with ENOSPC). Where neither works the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def _tmpfs_or(folder: Path, options: str, why_root_cannot: str) -> Iterator[bool]:
    """Mount a tmpfs with `options` on `folder` for the block (True), or, not as root, let the caller build the
    unprivileged stand-in (False); as root without a mount, skip: root ignores what the stand-in relies on."""
    if os.geteuid() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"running as root but cannot mount a tmpfs here ({why_root_cannot})")
        try:
            yield True
        finally:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
        return
    folder.mkdir(parents=True, exist_ok=True)
    yield False


@contextlib.contextmanager
def full_disk(folder: Path, size: str = "1m") -> Iterator[Path]:
    """`folder` holds at most `size` bytes (tmpfs), or, without root, no file in this process may pass it."""
    with _tmpfs_or(folder, f"size={size}", "no CAP_SYS_ADMIN") as mounted:
        if mounted:
            yield folder
            return
        limit = int(size[:-1]) * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[size[-1].lower()]
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            yield folder
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, old_handler)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """An empty folder nothing can be written into: a read-only tmpfs as root, mode 0555 otherwise."""
    with _tmpfs_or(folder, "ro,size=64k", "root ignores permission bits") as mounted:
        if mounted:
            yield folder
            return
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)


def under_a_file(tmp_path: Path) -> Path:
    """A path whose parent is a regular file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return blocker / "out"


def one_line_error(result, *needles: str) -> str:
    """The CLI failed with exit code 2 and exactly one line on stderr, no traceback, naming each needle."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1 and lines[0].startswith("rn50: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def last_line_error(result, *needles: str) -> str:
    """For commands that show progress on stderr (train's log, bench's progress bar): exit code 2, no traceback,
    and exactly one `rn50: error:` line, the last, naming each needle."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in lines if line.startswith("rn50: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]
