"""LoadGen's query sample library over one labelled ImageNet-layout folder.

Sample i is the i-th image of the folder scan every rn50 path uses (classes sorted by name, files sorted), labelled
with its class's index among the train split's classes when DATA has one (rn50.data.folders.list_split's rule), so
a QSL index names the same image and label `rn50 eval` reads. LoadGen's load call
preprocesses the samples it names (once, with `eval_image`: the val loader's resize, centre crop and normalisation)
into the runtime's input dtype on its device, and they stay in memory until its unload call: nothing is decoded
while queries are timed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from rn50.data.folders import SPLITS, list_split, scan_folder
from rn50.data.transforms import eval_image
from rn50.errors import UserError, need


def eval_folder(data: Path) -> Path:
    """The split `rn50 eval` reads: DATA/val when there is one, else DATA itself when it is a split (class folders)."""
    data = Path(data)
    need(data.is_dir(), f"data folder not found: {data}")
    if (data / "val").is_dir():
        return data / "val"
    if (data / "train").is_dir():
        raise UserError(f"{data} has train/ but no val/: give an ImageNet-layout folder (val/<class>/*) or a split")
    return data


class SampleLibrary:
    """`load(indices)` / `unload(indices)` as LoadGen calls them; `batch(indices)` stacks loaded samples."""

    def __init__(
        self,
        folder: Path,
        image_size: int,
        prepare: Callable[[Tensor], Tensor] = lambda x: x,
        threads: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        scan = scan_folder(self.folder)
        self.items = scan.items()
        if not self.items:
            raise UserError(
                f"no images under {self.folder}: give an ImageNet-layout folder (val/<class>/*.JPEG) "
                f"or its val/ folder; `rn50 data check` says what it holds"
            )
        self.classes = scan.classes
        if self.folder.name in SPLITS and (self.folder.parent / "train").is_dir():  # a split beside train/
            self.classes = list_split(self.folder.parent, self.folder.name).classes  # train's: val may lack one
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = [index[c] for _, c in self.items]
        self.image_size = image_size
        self.prepare = prepare
        self.threads = threads or os.cpu_count() or 1
        self.loaded: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.items)

    def read(self, index: int) -> Tensor:
        """One sample, preprocessed and prepared for the runtime (decoding errors name the file)."""
        path = self.items[index][0]
        try:
            image = eval_image(path, self.image_size)
        except Exception as e:
            raise UserError(f"cannot decode {path}: {e}; run `rn50 data check {self.folder}`") from None
        return self.prepare(image)

    def load(self, indices: Sequence[int]) -> None:
        todo = [int(i) for i in indices if int(i) not in self.loaded]
        with ThreadPoolExecutor(min(self.threads, max(1, len(todo)))) as pool:
            for i, sample in zip(todo, pool.map(self.read, todo), strict=True):
                self.loaded[i] = sample

    def unload(self, indices: Sequence[int]) -> None:
        for i in indices:
            self.loaded.pop(int(i), None)

    def batch(self, indices: Sequence[int], channels_last: bool = False) -> Tensor:
        """The loaded samples stacked into one NCHW batch (NHWC in memory with `channels_last`).

        On the CPU through numpy: a plain copy on the calling thread. torch.stack wakes torch's OpenMP team, whose
        spinning threads then compete with a runtime's own pool (ONNX Runtime's) on the same cores: measured 12% of
        an Offline run outside the runtime's calls, against 1% this way."""
        samples = [self.loaded[int(i)] for i in indices]
        if samples[0].device.type != "cpu" or samples[0].dtype not in (torch.float32, torch.float16):
            x = torch.stack(samples)
            return x.contiguous(memory_format=torch.channels_last) if channels_last else x
        import numpy as np

        c, h, w = samples[0].shape
        out = np.empty((len(samples), h, w, c) if channels_last else (len(samples), c, h, w), samples[0].numpy().dtype)
        for k, t in enumerate(samples):  # channels-last: each CHW sample written as HWC into the NHWC buffer
            out[k] = t.numpy().transpose(1, 2, 0) if channels_last else t.numpy()
        x = torch.from_numpy(out)
        return x.permute(0, 3, 1, 2) if channels_last else x  # NCHW, with channels-last strides when asked

    def val_map(self) -> str:
        """'relative/path label' per QSL index: the val_map.txt MLCommons' accuracy-imagenet.py reads, so their
        script can score the same accuracy log."""
        return "".join(
            f"{p.relative_to(self.folder).as_posix()} {label}\n"
            for (p, _), label in zip(self.items, self.labels, strict=True)
        )
