"""The `pytorch-gpu` backend: JPEG decoding on the GPU with nothing beyond torch and torchvision.

DataLoader workers only read files (bytes, trimmed and checked like the DALI backends do, plus the EXIF orientation
from the header). The main process decodes each batch with one batched `torchvision.io.decode_jpeg(..., device=)`
call (nvJPEG on CUDA, using the hardware JPEG decoder of A100/H100 where present), then crops, resizes, flips,
normalises and lays out the batch on the device: train takes each sample's random-resized-crop window and flip from
its augmentation seed (the rule every backend shares, drawn for the batch at once), val resizes the shorter side and
centre-crops. On CUDA the resize is `roi_align` over each group of same-size images (a few calls per batch, not one
per image; within 0.014 mean absolute difference, normalised, of the antialiased resize on ImageNet-like JPEGs).

Files nvJPEG cannot take (a PNG named .JPEG, CMYK, grayscale or 12-bit JPEGs) are decoded on the CPU instead, so
no valid image is skipped; a file nobody can decode is listed in `bad_files` and, in training, replaced by its
stand-in (`refill_candidates`) as in the other backends. Everything but the decode call runs on any device: with
`device="cpu"` the decode is libjpeg-turbo's, the resize the pytorch backend's (crops of one size resized in one
call), and the batches are bitwise those of the `pytorch` backend.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rn50.data.batches import LoaderSpec, normalize_on_device, refill_candidates
from rn50.data.index import EXIF_ORIENTATION, ImageIndex, read_encoded
from rn50.data.torch_loader import TorchLoader
from rn50.data.transforms import decode_rgb, sample_windows, torchvision_io
from rn50.errors import first_line

# Start-of-frame markers nvJPEG decodes: baseline, extended sequential and progressive Huffman-coded JPEGs.
GPU_SOF = (0xC0, 0xC1, 0xC2)
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # standalone markers (TEM, RSTn) carry no segment length


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(SOF marker, sample precision, components) of a JPEG's frame header, or None if there is none before the
    scan starts (not a JPEG, or a broken one)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            pos += 1  # junk between segments: decoders skip to the next marker
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 10 > n:
                return None
            return marker, data[pos + 4], data[pos + 9]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def gpu_decodable(data: bytes) -> bool:
    """True for the JPEGs nvJPEG decodes to RGB: 8-bit, three components (YCbCr), baseline or progressive."""
    frame = jpeg_frame(data)
    return frame is not None and frame[0] in GPU_SOF and frame[1] == 8 and frame[2] == 3


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) in the image's header; 1 where there is none or it cannot be read."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - PIL raises many types; decoders ignore an unreadable EXIF block too
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(image: Tensor, orientation: int) -> Tensor:
    """A CHW image as EXIF `orientation` says it is to be shown (PIL's `ImageOps.exif_transpose` on a tensor)."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1).flip(-2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return image.rot90(-1, (-2, -1))  # 90 degrees clockwise
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return image.rot90(1, (-2, -1))  # 90 degrees counter-clockwise
    return image


class EncodedDataset(torch.utils.data.Dataset):
    """Items are (index, augmentation seed) -> (encoded sample or None, label, [(bad path, reason), ...]).

    An encoded sample is a dict: the bytes (uint8 tensor), whether nvJPEG takes them, the EXIF orientation, path,
    label, file index and seed. Files the dataset index found bad are not read; in training a file that cannot be an
    image is replaced by its first good stand-in."""

    def __init__(self, files, train: bool, index: ImageIndex) -> None:
        self.files, self.labels, self.train = files.files, files.labels, train
        self.known_bad = {int(i): index.reason(int(i)) for i in np.flatnonzero(index.bad())}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]):
        index, aug_seed = item
        bad: list[tuple[str, str]] = []
        candidates = [index, *refill_candidates(index, len(self.files))] if self.train else [index]
        for candidate in candidates:
            path = self.files[candidate]
            data, why = (None, self.known_bad[candidate]) if candidate in self.known_bad else read_encoded(path)
            if data is None:
                bad.append((path, why))
                continue
            return encoded_sample(data, path, self.labels[candidate], candidate, aug_seed), self.labels[candidate], bad
        return None, None, bad


def encoded_sample(data: np.ndarray, path: str, label: int, index: int, seed: int) -> dict[str, Any]:
    raw = data.tobytes()
    return {
        "bytes": torch.from_numpy(data.copy()),
        "gpu": gpu_decodable(raw),
        "orientation": exif_orientation(raw),
        "path": path,
        "label": label,
        "index": index,
        "seed": seed,
    }


def collate_encoded(samples: list) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    return [s[0] for s in samples if s[0] is not None], [b for s in samples for b in s[2]]


class GpuDecodeLoader(TorchLoader):
    """The `pytorch-gpu` backend (see the module docstring).

    Everything on the device is stream-ordered (the batch is made on TorchLoader's side stream, which the consumer's
    stream waits on): nothing here waits for the device. With `timing` on (`rn50 bench data` asks), `timings` also
    accumulates the seconds spent decoding and augmenting, from CUDA events read when `timings` is."""

    def __init__(self, spec: LoaderSpec) -> None:
        recipe = spec.recipe
        self.augment = (recipe.image_size, recipe.crop_area, recipe.crop_ratio, recipe.hflip)
        self.timing = False
        self._timings = {"decode_s": 0.0, "augment_s": 0.0, "images": 0, "cpu_decoded": 0}
        self._events: list = []  # (start, decoded, done) CUDA events not read yet
        super().__init__(spec)

    @property
    def timings(self) -> dict[str, float]:
        """Seconds decoding and augmenting (with `timing` on), images made, images decoded on the CPU instead."""
        for start, decoded, done in self._events:
            done.synchronize()  # this event only, not the device
            self._timings["decode_s"] += start.elapsed_time(decoded) / 1000
            self._timings["augment_s"] += decoded.elapsed_time(done) / 1000
        self._events.clear()
        return dict(self._timings)

    def _dataset(self, files, recipe, index):
        return EncodedDataset(files, files.split == "train", index)

    def _collate(self):
        return collate_encoded

    def _host(self, t: Tensor) -> Tensor:
        """A CPU tensor on the device without the host waiting: from pinned memory on CUDA (a copy from pageable
        memory would wait for the side stream's work)."""
        return t.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else t

    def _decode(self, samples: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Tensor]]:
        """(sample, uint8 RGB CHW image on the device, as it is to be shown) for every sample that decodes; in
        training one that does not is replaced by its first decodable stand-in, as the workers would have."""
        from torchvision.io import ImageReadMode, decode_jpeg

        out: list[tuple[dict[str, Any], Tensor] | None] = [None] * len(samples)
        gpu = [i for i, s in enumerate(samples) if s["gpu"]]
        if gpu:
            try:  # the one batched call (nvJPEG on CUDA)
                with torchvision_io():
                    images = decode_jpeg([samples[i]["bytes"] for i in gpu], mode=ImageReadMode.RGB, device=self.device)
                for i, image in zip(gpu, images, strict=True):
                    out[i] = samples[i], orient(image, samples[i]["orientation"])
            except RuntimeError:  # one broken file fails the whole call: each on its own, the CPU as fallback
                for i in gpu:
                    out[i] = self._decode_one(samples[i])
        for i, s in enumerate(samples):
            if not s["gpu"]:
                out[i] = self._cpu_decode(s)
            if out[i] is None and self.train:
                out[i] = self._stand_in(s)
        return [o for o in out if o is not None]

    def _decode_one(self, sample: dict[str, Any]) -> tuple[dict[str, Any], Tensor] | None:
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            with torchvision_io():
                image = decode_jpeg(sample["bytes"], mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            return self._cpu_decode(sample)  # libjpeg-turbo and PIL take some files nvJPEG refuses
        return sample, orient(image, sample["orientation"])

    def _cpu_decode(self, sample: dict[str, Any]) -> tuple[dict[str, Any], Tensor] | None:
        """The pytorch backend's decode (torchvision's CPU decoders, then PIL; EXIF applied, 16-bit scaled)."""
        try:
            image = decode_rgb(sample["path"])
        except Exception as e:  # noqa: BLE001 - any decoder failure means this one file is unusable
            self._note_bad([(sample["path"], first_line(e, 200, typed=True))])
            return None
        if sample["gpu"] or self.device.type == "cuda":
            self._timings["cpu_decoded"] += 1
        return sample, self._host(image)

    def _stand_in(self, sample: dict[str, Any]) -> tuple[dict[str, Any], Tensor] | None:
        """The first of `sample`'s stand-ins that decodes (on the CPU: this is the rare path), with its seed."""
        for candidate in refill_candidates(sample["index"], len(self.files.files)):
            path = self.files.files[candidate]
            if path in self._bad_set:
                continue
            data, why = read_encoded(path)
            if data is None:
                self._note_bad([(path, why)])
                continue
            stand_in = encoded_sample(data, path, self.files.labels[candidate], candidate, sample["seed"])
            decoded = self._cpu_decode(stand_in)
            if decoded is not None:
                return decoded
        return None

    def _usable(self, batch) -> bool:
        self._note_bad(batch[1])
        return len(batch[0]) > 0

    def _to_device(self, batch) -> tuple[Tensor, Tensor] | None:
        cuda = self.device.type == "cuda"
        events = [torch.cuda.Event(enable_timing=True) for _ in range(3)] if self.timing and cuda else []
        if events:
            events[0].record()
        t0 = time.perf_counter()
        decoded = self._decode(batch[0])
        t1 = time.perf_counter()
        if events:
            events[1].record()
        if len(decoded) < self._min_batch:
            return None  # too small to train on (see min_batch)
        images = [image for _, image in decoded]
        windows = sample_windows(
            [x.shape[1] for x in images], [x.shape[2] for x in images], [s["seed"] for s, _ in decoded], self.train,
            *self.augment,
        )  # fmt: skip
        size = self.augment[0]
        resized = roi_resize(images, windows, size, self._host) if cuda else exact_resize(images, windows, size)
        x = normalize_on_device(resized, self.device, self.memory_format)
        labels = self._host(torch.tensor([s["label"] for s, _ in decoded], dtype=torch.int64))
        self._timings["images"] += len(decoded)
        if events:
            events[2].record()
            self._events.append(events)
        elif self.timing:  # on the CPU the work above is done when the calls return
            self._timings["decode_s"] += t1 - t0
            self._timings["augment_s"] += time.perf_counter() - t1
        return x, labels


def exact_resize(images: list[Tensor], windows, size: int) -> Tensor:
    """uint8 (N, 3, size, size): each window resized as the pytorch backend resizes it (bitwise), crops of the
    same size in one call."""
    from torchvision.transforms.v2 import functional as TF

    top, left, h, w, flip = (v.tolist() for v in windows)
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=images[0].device)
    groups: dict[tuple[int, int], list[int]] = {}
    for k in range(len(images)):
        groups.setdefault((h[k], w[k]), []).append(k)
    for (gh, gw), ks in groups.items():
        crops = torch.stack([images[k][:, top[k] : top[k] + gh, left[k] : left[k] + gw] for k in ks])
        out[ks] = TF.resize(crops, [size, size], antialias=True)
    flipped = [k for k in range(len(images)) if flip[k]]
    if flipped:
        out[flipped] = out[flipped].flip(-1)
    return out


def roi_resize(images: list[Tensor], windows, size: int, to_device) -> Tensor:
    """float (N, 3, size, size) on the images' device, 0-255: each window resized by `roi_align` (bilinear samples
    averaged over each output pixel's area, an antialiased downscale), one call per group of same-size images."""
    from torchvision.ops import roi_align

    top, left, h, w, flip = windows
    boxes = torch.from_numpy(np.stack([left, top, left + w, top + h], 1).astype(np.float32))
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=images[0].device)
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, x in enumerate(images):
        groups.setdefault(tuple(x.shape), []).append(k)
    for ks in groups.values():
        rois = torch.cat([torch.arange(len(ks), dtype=torch.float32)[:, None], boxes[ks]], 1)
        out[ks] = roi_align(torch.stack([images[k] for k in ks]).float(), to_device(rois), size, 1.0, -1, aligned=True)
    mask = to_device(torch.from_numpy(np.asarray(flip)).view(-1, 1, 1, 1))
    return torch.where(mask, out.flip(-1), out)
