"""Loader contract for every backend; corrupt images skipped and counted, unusual valid ones decoded and used."""

from pathlib import Path

import numpy as np
import pytest
import torch

from rn50.data.loaders import make_loader, shard_batches
from rn50.data.torch_loader import decode_rgb
from rn50.errors import UserError
from rn50.recipes import get_recipe
from tests.data.images import CORRUPT, UNUSUAL, write_corrupt, write_unusual

RECIPE = get_recipe("sample-cpu").replace(batch_size=4, image_size=32, memory_format="channels_last")
BACKENDS = ["pytorch", "dali-cpu"]


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        write_unusual(root / split / "a", rng)
        write_corrupt(root / split / "b", rng)
        for i in range(4):  # plain JPEGs so the class has good images too
            write_unusual(root / split / "c" / str(i), rng)  # nested folders are not part of the layout
        (root / split / "c" / "x.JPEG").write_bytes((root / split / "a" / "progressive.JPEG").read_bytes())
    return root


def _backend(name):
    if name.startswith("dali"):
        pytest.importorskip("nvidia.dali")
    return name


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_skipped_and_unusual_used(odd_data, backend):
    n_good = len(UNUSUAL) + 1
    loader = make_loader(odd_data, "val", RECIPE, _backend(backend), "cpu", workers=1)
    seen = 0
    for images, labels in loader:
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32)
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert torch.isfinite(images).all() and images.abs().max() < 3
        seen += labels.numel()
    assert seen == n_good  # every valid image once, unusual ones included
    assert sorted(Path(p).stem for p, _ in loader.bad_files) == sorted(CORRUPT)
    train = make_loader(odd_data, "train", RECIPE.replace(batch_size=2), _backend(backend), "cpu", workers=0)
    used = sum(labels.numel() for _, labels in train)
    assert used + len(train.bad_files) == 2 * len(train)  # corrupt ones dropped from their batch, never a crash
    assert {Path(p).stem for p, _ in train.bad_files} <= set(CORRUPT)


def test_pytorch_and_dali_cpu_agree_on_validation(odd_data):
    _backend("dali-cpu")
    recipe = RECIPE.replace(memory_format="contiguous")
    a = torch.cat([x for x, _ in make_loader(odd_data, "val", recipe, "pytorch", "cpu", workers=0)])
    b = torch.cat([x for x, _ in make_loader(odd_data, "val", recipe, "dali-cpu", "cpu", workers=1)])
    assert a.shape == b.shape and b.is_contiguous()
    # same images, same centre crop; resize filters differ slightly between the libraries
    assert (a - b).abs().mean() < 0.15


def test_unusual_images_decode_to_the_right_pixels(tmp_path):
    from PIL import Image

    for path in write_unusual(tmp_path, np.random.default_rng(1)):
        ours = decode_rgb(str(path)).permute(1, 2, 0).numpy().astype(int)
        with Image.open(path) as im:
            ref = np.asarray(im.convert("RGB")).astype(int)
        assert ours.shape == ref.shape, path.name
        assert np.abs(ours - ref).mean() < 3, path.name


def test_shards_cover_validation_once_and_match_accumulation():
    for world in (1, 2, 3):
        seen = [i for r in range(world) for b in shard_batches(11, 4, r, world, False, 0, 0) for i, _ in b]
        assert sorted(seen) == list(range(11))  # no padding duplicates, nothing dropped
    two = [shard_batches(20, 2, r, 2, True, 5, 3) for r in range(2)]
    one = shard_batches(20, 2, 0, 1, True, 5, 3, accumulation=2)
    assert [x for b in range(5) for x in two[0][b] + two[1][b]] == [x for b in one for x in b]
    assert shard_batches(20, 2, 0, 1, True, 5, 3) != shard_batches(20, 2, 0, 1, True, 5, 4)  # new order per epoch


def test_synthetic_contract():
    loader = make_loader(None, "train", RECIPE, "synthetic", "cpu")
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and images.is_contiguous(memory_format=torch.channels_last)
    assert labels.dtype == torch.int64 and len(loader) > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(backend="tfrecord"), "unknown data backend"),
        (dict(workers=-1), "workers"),
        (dict(root="/no/such/dir"), "not found"),
        (dict(backend="dali-gpu"), "CUDA"),
    ],
)
def test_bad_loader_input(odd_data, kwargs, message):
    args = dict(root=odd_data, split="val", recipe=RECIPE, backend="pytorch", device="cpu") | kwargs
    with pytest.raises(UserError, match=message):
        make_loader(**args)
