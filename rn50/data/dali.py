"""The `dali-cpu` and `dali-gpu` backends.

Decode is fused with the crop (`fn.decoders.image_slice`: only the crop window is decoded), then resize, flip and
normalise happen inside DALI, which writes NCHW or NHWC (channels_last) float batches. Each training sample's crop
window and flip are drawn here in Python from its augmentation seed (the same rule as the pytorch backend) and fed
with the bytes, so a run resumed in the middle of an epoch sees exactly the crops an uninterrupted run sees: DALI's
own random operators draw from one pipeline-wide stream that a rebuilt pipeline cannot continue.
dali-cpu runs a CPU-only pipeline (`device_id=None`) for train and val; dali-gpu uses the mixed (nvJPEG/hardware)
decoder. Encoded bytes are fed by us through `external_source` from the same per-rank shard as the pytorch backend,
so each rank reads its own files, the order is resumable, and a file that fails to decode can be named, skipped
and counted: the pipeline is rebuilt and the batch re-fed without it.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from rn50.data.batches import EpochShards, min_batch, refill_candidates
from rn50.data.folders import FileList
from rn50.data.transforms import MEAN, STD, center_crop_box, train_window
from rn50.errors import UserError
from rn50.recipes import Recipe

JPEG_SOI = b"\xff\xd8\xff"
KNOWN_MAGIC = (JPEG_SOI, b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF", b"II*\x00", b"MM\x00*", b"GIF8")


def import_dali():
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        raise UserError("the DALI backends need NVIDIA DALI: pip install 'rn50[dali]'") from None
    from nvidia.dali import fn, pipeline_def, types

    return fn, pipeline_def, types


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


EXIF_ORIENTATION = 0x0112


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


class DaliLoader:
    def __init__(
        self,
        files: FileList,
        recipe: Recipe,
        device: torch.device,
        rank: int,
        world_size: int,
        seed: int,
        workers: int,
        accumulation: int = 1,
        gpu: bool = False,
    ) -> None:
        import_dali()
        self.files = files
        self.train = files.split == "train"
        self.recipe, self.device, self.gpu = recipe, device, gpu
        self.batch_size = recipe.batch_size
        self.rank, self.world_size, self.seed, self.accumulation = rank, world_size, seed, accumulation
        self.threads = max(1, workers)
        self.channels_last = recipe.memory_format == "channels_last"
        self.bad_files: list[tuple[str, str]] = []
        self._bad_set: set[str] = set()
        self._pipe = None
        self.prefetch_batches = 2  # batches in flight ahead of the consumer (schedule_run per batch, see __iter__)
        self.shards = EpochShards(len(files), self.batch_size, rank, world_size, self.train, seed, accumulation)
        self.num_samples = self.shards.num_samples()

    def __len__(self) -> int:
        return len(self.shards)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.shards.set_epoch(epoch, start_batch)

    def close(self) -> None:
        self._pipe = None

    def _build(self):
        fn, pipeline_def, types = import_dali()
        size = self.recipe.image_size
        decoder_device = "mixed" if self.gpu else "cpu"

        @pipeline_def(
            batch_size=self.recipe.batch_size,
            num_threads=self.threads,
            device_id=(self.device.index or 0) if self.gpu else None,
            # Nothing random is drawn inside DALI (crops and flips come from the samples' seeds); fixed anyway.
            seed=(self.seed * 1_000_003 + self.rank * 17) % 2**31,
            prefetch_queue_depth=1,  # we keep two batches in flight ourselves (schedule_run per batch)
        )
        def pipe():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            labels = fn.external_source(name="labels", dtype=types.INT64, ndim=0)
            # The window (train: the sample's seeded crop; val: the centre crop of eval_resize) comes from Python,
            # the same rule as the pytorch backends; the decoder decodes only the window.
            anchor = fn.external_source(name="anchor", dtype=types.FLOAT, ndim=1)  # (x, y) in pixels
            shape = fn.external_source(name="shape", dtype=types.FLOAT, ndim=1)  # (w, h) in pixels
            mirror = fn.external_source(name="mirror", dtype=types.INT32, ndim=0)
            images = fn.decoders.image_slice(
                encoded,
                anchor,
                shape,
                device=decoder_device,
                output_type=types.RGB,
                normalized_anchor=False,
                normalized_shape=False,
            )
            images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
            images = fn.crop_mirror_normalize(
                images,
                dtype=types.FLOAT,
                output_layout="HWC" if self.channels_last else "CHW",
                mean=list(MEAN),
                std=list(STD),
                mirror=mirror,
            )
            if self.gpu:
                labels = labels.gpu()
            return images, labels

        p = pipe()
        p.build()
        return p

    def _encode_batch(self, batch: list[tuple[int, int]]) -> tuple[dict[str, object], list[tuple[int, int]]]:
        """The pipeline's inputs for a batch (bytes, labels; in training each sample's crop window and flip drawn
        from its augmentation seed) and the (file index, seed) pairs fed. In training a bad file's place goes to a
        stand-in (`refill_candidates`) with the same seed, so batches keep their size. A batch too small to train
        on comes back empty."""
        data, labels, items, anchors, shapes, mirrors = [], [], [], [], [], []
        n = len(self.files.files)
        for index, aug_seed in batch:
            for candidate in [index, *refill_candidates(index, n)] if self.train else [index]:
                path = self.files.files[candidate]
                if path in self._bad_set:
                    continue
                encoded, why = read_encoded(path)
                size = None if encoded is None else oriented_size(encoded)
                if encoded is not None and size is None:
                    encoded, why = None, "unreadable image header"
                if encoded is None:
                    self._mark_bad(path, why)
                    continue
                if self.train:
                    r = self.recipe
                    top, left, h, w, flip = train_window(*size, aug_seed, r.crop_area, r.crop_ratio, r.hflip)
                else:
                    (top, left, h, w), flip = center_crop_box(*size, self.recipe.image_size), False
                anchors.append(np.array([left, top], dtype=np.float32))
                shapes.append(np.array([w, h], dtype=np.float32))
                mirrors.append(int(flip))
                data.append(encoded)
                labels.append(self.files.labels[candidate])
                items.append((candidate, aug_seed))
                break
        if len(data) < min_batch(self.train, self.batch_size):
            return {}, []
        inputs = {"encoded": data, "labels": np.asarray(labels, dtype=np.int64), "anchor": anchors, "shape": shapes}
        return inputs | {"mirror": np.asarray(mirrors, dtype=np.int32)}, items

    def _mark_bad(self, path: str, why: str) -> None:
        if path not in self._bad_set:
            self._bad_set.add(path)
            self.bad_files.append((path, why))

    def _to_torch(self, images, labels) -> tuple[Tensor, Tensor]:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        if self.gpu:
            images, labels = images.as_tensor(), labels.as_tensor()
            x = torch.empty(images.shape(), dtype=torch.float32, device=self.device)
            y = torch.empty(labels.shape(), dtype=torch.int64, device=self.device)
            stream = torch.cuda.current_stream(self.device)
            feed_ndarray(images, x, cuda_stream=stream)
            feed_ndarray(labels, y, cuda_stream=stream)
        else:
            x = torch.from_numpy(images.as_array())
            y = torch.from_numpy(labels.as_array().reshape(-1))
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)  # NHWC storage seen as NCHW: exactly torch's channels_last layout
        return x, y

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        todo = deque(self.shards.remaining())
        while todo:
            pipe = self._build()
            in_flight: deque = deque()
            try:
                while todo or in_flight:
                    while todo and len(in_flight) < 2:
                        inputs, items = self._encode_batch(todo.popleft())
                        if not items:
                            continue
                        for name, value in inputs.items():
                            pipe.feed_input(name, value)
                        pipe.schedule_run()
                        in_flight.append(items)
                    if not in_flight:
                        break
                    outputs = pipe.outputs()
                    in_flight.popleft()
                    images, labels = self._to_torch(*outputs)
                    yield images, labels
            except StopIteration:
                return
            except Exception as e:  # DALI raises RuntimeError subclasses; one bad file must not end the run
                if not in_flight:
                    raise
                failed = in_flight.popleft()
                if not self._find_undecodable([self.files.files[i] for i, _ in failed], str(e)):
                    raise
                # Re-feed the failed batch without the bad files (each sample keeps its seed, so its crop), then
                # whatever was in flight behind it.
                for items in reversed([failed, *in_flight]):
                    todo.appendleft(items)
            finally:
                del pipe

    def _find_undecodable(self, paths: list[str], error: str) -> list[str]:
        """Files DALI choked on: the one the error names, else each file that PIL cannot fully decode."""
        from rn50.data.check import decode_error

        named = [p for p in paths if p in error]
        found = []
        for p in named or paths:
            why = decode_error(p)
            if why is not None or p in named:
                self._mark_bad(p, why or "DALI could not decode it")
                found.append(p)
        return found
