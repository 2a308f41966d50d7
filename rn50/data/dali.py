"""The `dali-cpu` and `dali-gpu` backends.

DALI reads each file in its own threads (`fn.io.file.read`), decodes only the crop window (`fn.decoders.image_slice`:
nvJPEG on dali-gpu, with the memory paddings NVIDIA's ImageNet pipeline uses; libjpeg-turbo on dali-cpu), resizes,
flips, normalises and writes NCHW or NHWC (channels_last) float batches. The training thread hands DALI a few small
arrays per batch: paths and bytes to read, labels, and each sample's crop window and flip, drawn for the whole batch
at once from the samples' seeds (`train_windows`, the rule every backend shares) and the image sizes in the dataset
index (`rn50.data.index`: headers are parsed once per dataset, not per image per epoch). So each rank reads its own
shard, in the seeded per-epoch order, and a run resumed mid-epoch sees exactly the crops an uninterrupted run sees
(DALI's own random operators draw from one pipeline-wide stream that a rebuilt pipeline cannot continue).

Files the index or `rn50 data check` found bad are skipped (train: replaced by their stand-in, `refill_candidates`);
one DALI fails on anyway is named and skipped, and its batch re-fed on a rebuilt pipeline. The pipeline is built once
per run and uses DALI's dynamic executor (`exec_dynamic=True`): its outputs are the consumer's, so the batch reaches
torch through DLPack as DALI's own buffer, kept alive by the tensor, with no copy in the training thread.
dali-cpu on a CUDA device moves the uint8 images to the GPU inside DALI and normalises there.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from rn50.data.batches import Batch, LoaderSpec, min_batch, refill_candidates
from rn50.data.transforms import MEAN, STD, sample_windows
from rn50.errors import UserError

DEPTH = 2  # batches in flight ahead of the consumer (schedule_run per batch)
# nvJPEG buffer paddings from NVIDIA's ResNet-50 DALI pipeline (DeepLearningExamples), so that ImageNet's larger
# images do not make it reallocate mid-run.
DEVICE_MEMORY_PADDING, HOST_MEMORY_PADDING = 211025920, 140544512


def import_dali():
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        raise UserError("the DALI backends need NVIDIA DALI: pip install 'rn50[dali]'") from None
    from nvidia.dali import fn, pipeline_def, types

    return fn, pipeline_def, types


def path_matrix(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The paths as one (n, longest) uint8 array of their bytes, zero-padded, and their lengths: a batch's paths are
    one gather."""
    encoded = [os.fsencode(f) for f in files]
    lengths = np.fromiter(map(len, encoded), np.int32, len(encoded))
    longest = int(lengths.max(initial=1))
    padded = b"".join(e.ljust(longest, b"\0") for e in encoded)
    return np.frombuffer(padded, np.uint8).reshape(len(encoded), longest), lengths


class DaliLoader:
    def __init__(self, spec: LoaderSpec, gpu: bool = False) -> None:
        import_dali()
        files, recipe = spec.files, spec.recipe
        self.files = files
        self.train = spec.train
        self.recipe, self.device, self.gpu = recipe, spec.device, gpu
        self.batch_size = recipe.batch_size
        self.threads = max(1, spec.workers)
        self.channels_last = recipe.memory_format == "channels_last"
        self.bad_files: list[tuple[str, str]] = []
        self._named: set[str] = set()
        self.index = spec.index
        self._bad = self.index.bad()
        self._paths, self._path_len = path_matrix(files.files)
        self._labels = np.asarray(files.labels, np.int32)
        self._pipe = None
        self._in_flight: deque = deque()  # the batches scheduled on the pipeline and not yet taken
        self.prefetch_batches = DEPTH
        self.shards = spec.shards()
        self.num_samples = self.shards.num_samples()

    def __len__(self) -> int:
        return len(self.shards)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.shards.set_epoch(epoch, start_batch)

    def close(self) -> None:
        self._pipe = None
        self._in_flight.clear()

    def _build(self):
        fn, pipeline_def, types = import_dali()
        size, cuda = self.recipe.image_size, self.device.type == "cuda"
        nvjpeg = dict(device_memory_padding=DEVICE_MEMORY_PADDING, host_memory_padding=HOST_MEMORY_PADDING)

        @pipeline_def(
            batch_size=self.batch_size,
            num_threads=self.threads,
            device_id=(self.device.index or 0) if cuda else None,
            exec_dynamic=True,  # outputs handed over (DLPack, no copy); batch k+1 runs while k is consumed
            prefetch_queue_depth=1,  # the DEPTH batches in flight are scheduled by us (schedule_run per batch)
            seed=0,  # nothing random is drawn inside DALI: crops and flips come from the samples' seeds
        )
        def pipe():
            path = fn.external_source(name="path", dtype=types.UINT8, ndim=1)  # zero-padded UTF-8
            window = fn.external_source(name="window", dtype=types.FLOAT, ndim=1)  # x, y, w, h in pixels
            ints = fn.external_source(name="ints", dtype=types.INT32, ndim=1)  # flip, label, path and file bytes
            encoded = fn.io.file.read(path[0 : ints[2]])
            # A JPEG ends at its end-of-image marker: scraped files often carry bytes after it that decoders reject.
            encoded = encoded[0 : ints[3]]
            images = fn.decoders.image_slice(
                encoded,
                window[0:2],
                window[2:4],
                device="mixed" if self.gpu else "cpu",
                output_type=types.RGB,
                normalized_anchor=False,
                normalized_shape=False,
                **(nvjpeg if self.gpu else {}),
            )
            images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
            if cuda and not self.gpu:
                images = images.gpu()  # dali-cpu feeding a GPU: uint8 over PCIe, copied by DALI, not by us
            images = fn.crop_mirror_normalize(
                images,
                dtype=types.FLOAT,
                output_layout="HWC" if self.channels_last else "CHW",
                mean=list(MEAN),
                std=list(STD),
                mirror=ints[0],
            )
            labels = fn.cast(ints[1], dtype=types.INT64)
            return images, labels.gpu() if cuda else labels

        p = pipe()
        p.build()
        return p

    def _mark_bad(self, i: int, why: str = "") -> None:
        path = self.files.files[i]
        if path not in self._named:
            self._named.add(path)
            self.bad_files.append((path, why or self.index.reason(i)))
        self._bad[i] = True

    def _usable(self, batch: Batch) -> Batch:
        """The batch without bad files: in training each one's place goes to its first good stand-in (same seed),
        so batches keep their size; a file marked bad is named in `bad_files` the first time a batch meets it."""
        idx, seeds = batch
        bad = self._bad[idx]
        if not bad.any():
            return batch
        keep_idx, keep_seeds = [], []
        for i, s in zip(idx.tolist(), seeds.tolist(), strict=True):
            for c in [i, *refill_candidates(i, len(self._bad))] if self.train else [i]:
                if not self._bad[c]:
                    keep_idx.append(c)
                    keep_seeds.append(s)
                    break
                self._mark_bad(c)
        return np.asarray(keep_idx, np.int64), np.asarray(keep_seeds, np.int64)

    def _inputs(self, idx: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
        """The pipeline's inputs for a batch of good files: all per-batch array operations, no per-image Python."""
        h, w = self.index.height[idx], self.index.width[idx]
        r = self.recipe
        top, left, ch, cw, flip = sample_windows(
            h, w, seeds, self.train, r.image_size, r.crop_area, r.crop_ratio, r.hflip
        )
        ints = np.stack([flip, self._labels[idx], self._path_len[idx], self.index.end[idx]], 1)
        return {
            "path": self._paths[idx],
            "window": np.stack([left, top, cw, ch], 1).astype(np.float32),
            "ints": ints.astype(np.int32),
        }

    def _schedule(self, batch: Batch) -> bool:
        """Feed and schedule one batch; False if too few of its files are good to train on (see min_batch)."""
        idx, seeds = self._usable(batch)
        if len(idx) < min_batch(self.train, self.batch_size):
            return False
        for name, value in self._inputs(idx, seeds).items():
            self._pipe.feed_input(name, value)
        self._pipe.schedule_run()
        self._in_flight.append((batch, idx))
        return True

    def _to_torch(self, images, labels) -> tuple[Tensor, Tensor]:
        # DLPack shares DALI's buffer; the tensor holds it until the batch is dropped (the dynamic executor does not
        # reuse an output the consumer still holds).
        x, y = torch.from_dlpack(images.as_tensor()), torch.from_dlpack(labels.as_tensor()).reshape(-1)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)  # NHWC storage seen as NCHW: exactly torch's channels_last layout
        return x, y

    def _outputs(self):
        if self.device.type == "cuda":  # bound to the consumer's stream: no host wait, freed in stream order
            return self._pipe.outputs(cuda_stream=torch.cuda.current_stream(self.device))
        return self._pipe.outputs()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        todo = deque(self.shards.remaining())
        if self._pipe is None:
            self._pipe = self._build()
        while self._in_flight:  # left by an iteration that stopped early: made for batches nobody asked for now
            self._pipe.outputs()
            self._in_flight.popleft()
        while todo or self._in_flight:
            try:
                while todo and len(self._in_flight) < DEPTH:
                    self._schedule(todo.popleft())
                if not self._in_flight:
                    break
                outputs = self._outputs()
            except Exception as e:  # DALI raises RuntimeError subclasses; one bad file must not end the run
                if not self._in_flight:
                    raise
                batch, idx = self._in_flight.popleft()
                if not self._find_undecodable(idx, str(e)):
                    raise
                # Re-feed the failed batch without the bad files (each sample keeps its seed, so its crop), then
                # whatever was in flight behind it, on a new pipeline (DALI's is unusable after an error).
                todo.extendleft(reversed([batch, *(b for b, _ in self._in_flight)]))
                self._in_flight.clear()
                self._pipe = self._build()
                continue
            self._in_flight.popleft()
            yield self._to_torch(*outputs)

    def _find_undecodable(self, idx: np.ndarray, error: str) -> list[int]:
        """Files DALI choked on: the one the error names, else each file that PIL cannot fully decode."""
        from rn50.data.check import decode_error

        named = [i for i in idx.tolist() if self.files.files[i] in error]
        found = []
        for i in named or idx.tolist():
            why = decode_error(self.files.files[i])
            if why is not None or i in named:
                self._mark_bad(i, why or "DALI could not decode it")
                found.append(i)
        return found
