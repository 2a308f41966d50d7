"""Atomic file writes: a reader never sees a half-written file, and a crash leaves the old one intact."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rn50.errors import UserError

# What the world does to a write: full disk or quota, a file-size limit, read-only or forbidden folder, a file
# where a folder should be (or the reverse).
WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full; free some space or choose another folder",
    errno.EDQUOT: "the disk quota is used up; free some space or choose another folder",
    errno.EFBIG: "the file is larger than this system allows; choose another folder",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
    errno.ENOTDIR: "part of the path is a file, not a folder; choose another path",
    errno.EEXIST: "part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder; give a file path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
}


def write_error(path: str | os.PathLike, e: OSError) -> UserError | None:
    """One line for an OSError met while writing `path` (None if it is not a write failure we can explain)."""
    hint = WRITE_ERRNOS.get(e.errno)  # type: ignore[arg-type]
    if hint is None:
        return None
    if e.errno in (errno.ENOTDIR, errno.EEXIST):  # "File exists" would only confuse: say what is in the way
        return UserError(f"cannot write {path}: {hint}; nothing was replaced")
    return UserError(f"cannot write {path}: {e.strerror or e} ({hint}); nothing was replaced")


def make_folder(path: str | os.PathLike, label: str) -> Path:
    """`mkdir -p path`; a write failure is one line naming `label` (e.g. "--out runs/x")."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise (write_error(label, e) or e) from None
    return Path(path)


@functools.cache
def _new_file_mode() -> int:
    """0666 less the process umask (what open() would give a new file).

    Read once: os.umask can only be read by setting it, and a thread creating a file in between would get 0666.
    """
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise (write_error(path, e) or e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, _new_file_mode())  # mkstemp makes 0600; the result should read like any file we write
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        # Only failures on this file are ours to explain; anything else (a file the body reads) passes through.
        if e.filename is not None and os.fspath(e.filename) not in (tmp, os.fspath(path)):
            raise
        raise (write_error(path, e) or e) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries `atomic_path` leaves when its process is killed mid-write (`.NAME.XXXXXXXX.tmp`);
    call only where no other process may be writing into `folder` (a run we now own)."""
    folder = Path(folder)
    removed = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_link(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make `dst` the same file as `src` (a hard link; a copy where the filesystem has none), replacing it atomically.

    Safe because every rn50 write replaces a file (new inode) rather than rewriting it in place.
    """
    import shutil

    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            writer = _WriteRecorder(f)
            try:
                torch.save(obj, writer)
            except RuntimeError:
                # torch reports a failed write as "unexpected pos"; the OSError under it (ENOSPC, EFBIG) says why.
                if writer.error is not None:
                    raise writer.error from None
                raise
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint


class _WriteRecorder:
    """A file for torch.save that keeps the OSError of a failed write."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()
