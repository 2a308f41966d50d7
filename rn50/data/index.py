"""The dataset index: what each image's header says, read once per dataset and kept until the folder changes.

Per image: its size and mtime (the key: a changed, added or removed file is probed again), whether its bytes can be
an image (magic bytes, a JPEG's end-of-image marker), how many bytes to read (a JPEG ends at its end marker; scraped
files often carry more), and its height and width as decoders show it (EXIF orientation applied). `rn50 data check`
adds its full-decode verdict per image. The DALI loaders draw crop windows and skip bad files from it, so nothing is
parsed per image per epoch; the doctor and the loaders read one verdict.

Kept under $RN50_CACHE_DIR/index (default ~/.cache/rn50/index), one file per split folder, written atomically;
processes that find it stale at the same time (the ranks of one node) update it one after the other under a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rn50.io import atomic_path

log = logging.getLogger("rn50.data")

VERSION = 1
JPEG_SOI = b"\xff\xd8\xff"
KNOWN_MAGIC = (JPEG_SOI, b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF", b"II*\x00", b"MM\x00*", b"GIF8")
EXIF_ORIENTATION = 0x0112
UNKNOWN, GOOD, BAD = -1, 0, 1  # a full-decode verdict


def read_encoded(path: str) -> tuple[np.ndarray | None, str]:
    """The file's bytes, or (None, reason) when they cannot be an image: empty, unknown format, truncated JPEG."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        return None, f"unreadable: {e}"
    if data.size == 0:
        return None, "empty file"
    head = data[:8].tobytes()
    if not any(head.startswith(m) for m in KNOWN_MAGIC):
        return None, "not a known image format (bad magic bytes)"
    if head.startswith(JPEG_SOI):
        end = jpeg_end(data)
        if end is None:
            return None, "truncated JPEG (no end-of-image marker)"
        data = data[:end]  # bytes after the end-of-image marker (common in scraped files) are not the image
    return data, ""


def oriented_size(data: np.ndarray) -> tuple[int, int] | None:
    """(height, width) of the image as decoders show it (EXIF orientation applied), read from its header only;
    None if the header cannot be read."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            width, height = im.size
            try:
                orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block: decoders ignore it too
                orientation = 1
    except Exception:  # noqa: BLE001 - PIL raises many types for data it cannot parse
        return None
    if orientation in (5, 6, 7, 8):  # transposed or rotated by 90/270 degrees
        width, height = height, width
    return height, width


def jpeg_end(data: np.ndarray) -> int | None:
    """Offset just past the end-of-image marker that closes the image, or None if the data stops first.

    Walks the marker segments (so a thumbnail's own markers inside APP1 are skipped) and finds the end of each
    entropy-coded scan with one vectorised search: in scan data 0xFF is followed by 0x00 (a stuffed byte) or a
    restart marker, anything else is the next marker. Bytes after the end marker are allowed, as libjpeg and PIL
    allow them.
    """
    n = int(data.size)
    ff = np.flatnonzero(data[:-1] == 0xFF)
    following = data[ff + 1]
    is_marker = (following != 0x00) & (following != 0xFF) & ~((following >= 0xD0) & (following <= 0xD7))
    markers = ff[is_marker]
    pos = 2
    while pos + 1 < n:
        if data[pos] != 0xFF:  # junk between segments: libjpeg skips to the next marker, so do we
            i = int(np.searchsorted(markers, pos))
            if i == len(markers):
                return None
            pos = int(markers[i])
            continue
        code = int(data[pos + 1])
        if code == 0xFF:  # fill byte
            pos += 1
        elif code == 0xD9:
            return pos + 2
        elif code in (0x01, 0xD8) or 0xD0 <= code <= 0xD7:  # markers without a length
            pos += 2
        else:
            if pos + 3 >= n:
                return None
            pos += 2 + (int(data[pos + 2]) << 8 | int(data[pos + 3]))
            if code == 0xDA:  # a scan: its entropy-coded data runs to the next marker
                i = int(np.searchsorted(markers, pos))
                if i == len(markers):
                    return None
                pos = int(markers[i])
    return None


def probe(path: str) -> tuple[int, int, int, str]:
    """(height, width, bytes to read, "") for an image's header; (0, 0, 0, why) when it cannot be an image."""
    data, why = read_encoded(path)
    size = None if data is None else oriented_size(data)
    if data is None or size is None:
        return 0, 0, 0, why or "unreadable image header"
    return size[0], size[1], int(data.size), ""


@dataclass
class ImageIndex:
    """One split folder's images (in the loaders' order) with their header facts and verdicts."""

    folder: Path
    files: list[str]
    stat: np.ndarray  # (n, 2) int64: size, mtime_ns (the key)
    height: np.ndarray  # int32, EXIF orientation applied; 0 for a bad header
    width: np.ndarray
    end: np.ndarray  # int64: bytes to read
    header_reason: dict[int, str]  # files whose header says they cannot be an image
    decoded: np.ndarray  # int8: UNKNOWN, GOOD or BAD (rn50 data check's full decode)
    decode_reason: dict[int, str]

    def bad(self) -> np.ndarray:
        """Files no loader uses: a bad header, or a full decode that failed."""
        out = self.decoded == BAD
        out[list(self.header_reason)] = True
        return out

    def reason(self, i: int) -> str:
        return self.decode_reason.get(i) or self.header_reason.get(i, "")


def cache_file(folder: Path) -> Path:
    base = os.environ.get("RN50_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rn50"
    real = os.path.realpath(folder)
    digest = hashlib.sha256(real.encode()).hexdigest()[:16]
    return Path(base) / "index" / f"{Path(real).name}-{digest}.npz"


def _stats(files: list[str]) -> np.ndarray:
    out = np.zeros((len(files), 2), np.int64)
    for i, f in enumerate(files):
        try:
            st = os.stat(f)
            out[i] = st.st_size, st.st_mtime_ns
        except OSError:
            out[i] = -1, -1  # gone since the scan: probed (and found unreadable) like a changed file
    return out


def _load(path: Path, folder: Path) -> ImageIndex | None:
    try:
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes())
            if meta.get("version") != VERSION:
                return None
            names = z["names"].tobytes().decode().split("\n") if z["names"].size else []
            return ImageIndex(
                folder,
                [str(folder / n) for n in names],
                z["stat"],
                z["height"],
                z["width"],
                z["end"],
                {int(k): v for k, v in meta["header_reason"].items()},
                z["decoded"],
                {int(k): v for k, v in meta["decode_reason"].items()},
            )
    except (OSError, ValueError, KeyError):  # missing, half-copied or from another version: rebuilt
        return None


def _save(index: ImageIndex, path: Path) -> None:
    names = "\n".join(os.path.relpath(f, index.folder) for f in index.files).encode()
    meta = {"version": VERSION, "header_reason": index.header_reason, "decode_reason": index.decode_reason}
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                names=np.frombuffer(names, np.uint8),
                stat=index.stat,
                height=index.height,
                width=index.width,
                end=index.end,
                decoded=index.decoded,
                meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
            )
    except OSError as e:  # an unwritable cache costs a re-probe next run, nothing else
        log.warning("could not save the dataset index %s (%s); set RN50_CACHE_DIR to a writable folder", path, e)


def process_map(fn, items: list, workers: int) -> list:
    """fn over items, in worker processes when there are enough to be worth starting them."""
    if workers <= 1 or len(items) < 64:
        return [fn(x) for x in items]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(fn, items, chunksize=max(1, len(items) // (workers * 16))))


def _refresh(old: ImageIndex | None, folder: Path, files: list[str], stat: np.ndarray, workers: int) -> ImageIndex:
    """The index of `files`: rows of `old` whose file is unchanged are kept, the others probed."""
    n = len(files)
    index = ImageIndex(folder, files, stat, np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int64), {},
                       np.full(n, UNKNOWN, np.int8), {})  # fmt: skip
    where = {f: i for i, f in enumerate(old.files)} if old is not None else {}
    todo = []
    for i, f in enumerate(files):
        j = where.get(f)
        if j is None or not np.array_equal(old.stat[j], stat[i]):
            todo.append(i)
            continue
        index.height[i], index.width[i], index.end[i], index.decoded[i] = (
            old.height[j], old.width[j], old.end[j], old.decoded[j]
        )  # fmt: skip
        for mine, theirs in ((index.header_reason, old.header_reason), (index.decode_reason, old.decode_reason)):
            if j in theirs:
                mine[i] = theirs[j]
    for i, (h, w, end, why) in zip(todo, process_map(probe, [files[i] for i in todo], workers), strict=True):
        index.height[i], index.width[i], index.end[i] = h, w, end
        if why:
            index.header_reason[i] = why
    return index


def _fresh(index: ImageIndex | None, files: list[str], stat: np.ndarray) -> bool:
    return index is not None and index.files == files and np.array_equal(index.stat, stat)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[bool]:
    """Hold the cache file's lock (processes updating it take turns); False, and no lock, where the cache folder
    cannot be written: the index is then built in memory for this run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 - held across the yield
    except OSError as e:
        log.warning("no dataset index cache at %s (%s); set RN50_CACHE_DIR to a writable folder", path.parent, e)
        yield False
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield True


def dataset_index(folder: str | os.PathLike, files: list[str], workers: int = 1) -> ImageIndex:
    """The index of `files` (the images of split folder `folder`, in the loaders' order): loaded from the cache
    when no file changed, else the changed files probed (in `workers` processes) and the cache updated."""
    folder = Path(folder)
    path = cache_file(folder)
    stat = _stats(files)
    index = _load(path, folder)
    if _fresh(index, files, stat):
        return index
    with _locked(path) as cached:
        index = _load(path, folder) if cached else None  # another process may have just built it
        if not _fresh(index, files, stat):
            index = _refresh(index, folder, files, stat, workers)
            if cached:
                _save(index, path)
    return index


def record_decodes(index: ImageIndex, verdicts: dict[int, str | None]) -> None:
    """Store full-decode verdicts (file number -> None if it decodes, else why) and save the index."""
    for i, why in verdicts.items():
        index.decoded[i] = GOOD if why is None else BAD
        if why is None:
            index.decode_reason.pop(i, None)
        else:
            index.decode_reason[i] = why
    path = cache_file(index.folder)
    with _locked(path) as cached:
        if cached:
            _save(index, path)
