"""Loader contract for every backend; corrupt images skipped and counted, unusual valid ones decoded and used.

`odd_data` is the one dataset every backend runs through: the unusual-but-valid images of tests/data/images.py
(grayscale, CMYK, PNG named .JPEG, progressive, tiny, extreme aspect, RGBA, 16-bit PNG, bytes after the JPEG end
marker, EXIF-rotated) beside corrupt ones."""

from pathlib import Path

import numpy as np
import pytest
import torch

from rn50.data.loaders import make_loader, shard_batches
from rn50.data.transforms import decode_rgb
from rn50.errors import UserError
from rn50.recipes import get_recipe
from tests.data.images import CORRUPT, UNUSUAL, write_corrupt, write_odd_dataset, write_unusual

RECIPE = get_recipe("sample-cpu").replace(batch_size=4, image_size=32, memory_format="channels_last")
BACKENDS = ["pytorch", "dali-cpu", "pytorch-gpu"]  # pytorch-gpu decodes on the CPU here


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    def plain(folder, rng):
        for i in range(4):
            write_unusual(folder / str(i), rng)  # nested folders are not part of the layout
        (folder / "x.JPEG").write_bytes((folder.parent / "a" / "progressive.JPEG").read_bytes())  # one good image

    return write_odd_dataset(tmp_path_factory.mktemp("odd"), 0, plain)


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
    sizes = [labels.numel() for _, labels in train]
    # a corrupt file's place goes to a stand-in: every batch full, never one image BatchNorm cannot train on
    assert sizes == [2] * len(train)
    assert train.bad_files and {Path(p).stem for p, _ in train.bad_files} <= set(CORRUPT)


def test_pytorch_and_dali_cpu_agree_on_validation(odd_data):
    _backend("dali-cpu")
    recipe = RECIPE.replace(memory_format="contiguous")
    a = torch.cat([x for x, _ in make_loader(odd_data, "val", recipe, "pytorch", "cpu", workers=0)])
    b = torch.cat([x for x, _ in make_loader(odd_data, "val", recipe, "dali-cpu", "cpu", workers=1)])
    assert a.shape == b.shape and b.is_contiguous()
    # same images, same centre crop; resize filters differ slightly between the libraries
    assert (a - b).abs().mean() < 0.15


def _reference_rgb(path: Path) -> np.ndarray:
    """What the image shows: EXIF orientation applied, 16-bit samples scaled by 1/257 (PIL's convert clips them)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I"):
            gray = np.round(np.asarray(im).astype(float) / 257)
            return np.repeat(gray[..., None], 3, axis=2).astype(int)
        return np.asarray(im.convert("RGB")).astype(int)


def test_torchcodec_and_torchvision_decoders_give_the_same_pixels(tmp_path, monkeypatch):
    """TorchCodec decodes where it is installed (CI installs it); torchvision.io where it is not (torchvision 0.26
    machines): both, on every odd file, bitwise, with no deprecation warning from either path."""
    import warnings

    from rn50.data import transforms

    pytest.importorskip("torchcodec")
    assert transforms.torchcodec_decode_image() is not None
    paths = write_unusual(tmp_path, np.random.default_rng(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        codec = [decode_rgb(p) for p in paths]
        monkeypatch.setattr(transforms, "torchcodec_decode_image", lambda: None)
        vision = [decode_rgb(p) for p in paths]
    for path, a, b in zip(paths, codec, vision, strict=True):
        assert torch.equal(a, b), path.name


def test_unusual_images_decode_to_the_right_pixels(tmp_path):
    from rn50.data.transforms import open_rgb

    for path in write_unusual(tmp_path, np.random.default_rng(1)):
        ref = _reference_rgb(path)
        for ours in (decode_rgb(str(path)).permute(1, 2, 0).numpy(), np.asarray(open_rgb(path))):  # train, eval
            assert ours.shape == ref.shape, path.name
            assert np.abs(ours.astype(int) - ref).mean() < 3, path.name
    assert decode_rgb(str(tmp_path / "exif_rotated.JPEG")).shape == (3, 48, 40)  # shown 40 wide, 48 high


def test_every_backend_and_the_eval_path_see_the_same_pixels(tmp_path):
    """One image per batch through pytorch, dali-cpu and the eval images of export and bench: the EXIF-rotated and
    16-bit images must match, not only on average (a rotation swaps this image's x and y gradients). The eval
    images are the pytorch val loader's preprocessing, bitwise; dali-cpu takes the same centre-crop window."""
    _backend("dali-cpu")
    from rn50.data.transforms import load_eval_images

    root = tmp_path / "ds"
    write_unusual(root / "val" / "a", np.random.default_rng(2))
    recipe = RECIPE.replace(batch_size=1, memory_format="contiguous")
    a = torch.cat([x for x, _ in make_loader(root, "val", recipe, "pytorch", "cpu", workers=0)])
    b = torch.cat([x for x, _ in make_loader(root, "val", recipe, "dali-cpu", "cpu", workers=1)])
    c = load_eval_images(root / "val", len(UNUSUAL), 32)
    assert a.shape == b.shape == c.shape == (len(UNUSUAL), 3, 32, 32)
    assert torch.equal(a, c)  # one eval preprocessing: export parity, calibration and bench see what eval sees
    for name, i in zip(sorted(UNUSUAL), range(len(UNUSUAL)), strict=True):
        # Resize filters differ slightly between the libraries, more when a few pixels are blown up to 32 (tiny,
        # 6 px tall/wide centre crops); a wrong orientation or 16-bit scaling differs by ~0.8.
        tolerance = 0.45 if name in ("tiny", "tall", "wide") else 0.15
        assert (a[i] - b[i]).abs().mean() < tolerance, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_split_with_no_decodable_image_is_refused(tmp_path, backend):
    for split in ("train", "val"):
        write_corrupt(tmp_path / split / "a", np.random.default_rng(3))
    with pytest.raises(UserError, match=r"none of the 4 images under .*train can be decoded.*rn50 data check"):
        make_loader(tmp_path, "train", RECIPE, _backend(backend), "cpu", workers=0)


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


def test_a_loader_nobody_closed_does_not_keep_the_process_alive(odd_data):
    """The workers ignore SIGTERM (a group signal must not kill them mid-step), so multiprocessing's exit handler,
    which SIGTERMs and then joins them, would hang on a loader left open; rn50 closes open loaders at exit first."""
    import subprocess
    import sys

    code = (
        "from rn50.data.loaders import make_loader; from rn50.recipes import get_recipe;"
        "r = get_recipe('sample-cpu').replace(batch_size=2, image_size=32);"
        f"loader = make_loader({str(odd_data)!r}, 'train', r, 'pytorch', 'cpu', workers=2);"
        "next(iter(loader)); print('batch', flush=True)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "batch" in done.stdout, done.stderr


def _train_batches(root, backend, recipe, start_batch=0):
    loader = make_loader(root, "train", recipe, backend, "cpu", workers=1, seed=3)
    loader.set_epoch(1, start_batch)
    try:
        return [(x.clone(), y.clone()) for x, y in loader]
    finally:
        loader.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_mid_epoch_resume_sees_the_same_crops_and_flips(odd_data, backend):
    """The batches after batch k of an epoch are bitwise the same whether the epoch started at 0 or at k (how a
    preempted run resumes), with ImageNet crops and flips on; DALI's crops come from the samples' seeds too."""
    recipe = RECIPE.replace(batch_size=2, crop_area=(0.08, 1.0), hflip=True)
    full = _train_batches(odd_data, _backend(backend), recipe)
    resumed = _train_batches(odd_data, backend, recipe, start_batch=3)
    assert len(full) > 4 and len(resumed) == len(full) - 3
    for (xa, ya), (xb, yb) in zip(full[3:], resumed, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    other_epoch = make_loader(odd_data, "train", recipe, backend, "cpu", workers=1, seed=3)
    other_epoch.set_epoch(2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(full, other_epoch, strict=False))  # crops do change
    other_epoch.close()


def test_pytorch_and_dali_cpu_take_the_same_training_crops(odd_data):
    """Both backends draw each sample's crop window and flip from its seed with one rule, so their training batches
    show the same pixels up to the libraries' resize filters (the EXIF-rotated and extreme-aspect images included)."""
    _backend("dali-cpu")
    recipe = RECIPE.replace(batch_size=2, crop_area=(0.08, 1.0), hflip=True, memory_format="contiguous")
    a = _train_batches(odd_data, "pytorch", recipe)
    b = _train_batches(odd_data, "dali-cpu", recipe)
    assert [y.tolist() for _, y in a] == [y.tolist() for _, y in b]
    diffs = [(xa - xb).abs().mean().item() for (xa, _), (xb, _) in zip(a, b, strict=True)]
    assert max(diffs) < 0.15, diffs
    flipped = torch.cat([xa for xa, _ in a]).flip(-1)
    assert (flipped - torch.cat([xb for xb, _ in b])).abs().mean() > 0.15  # the test can tell a flip apart


def test_dali_builds_one_pipeline_per_run_and_hands_over_its_own_buffer(odd_data, monkeypatch):
    """Epoch after epoch, and after an epoch left half way (its batches in flight are drained, not served later),
    one pipeline; the batch torch gets is the buffer DALI wrote (DLPack), not a copy."""
    _backend("dali-cpu")
    from rn50.data.dali import DaliLoader

    builds, real = [], DaliLoader._build
    monkeypatch.setattr(DaliLoader, "_build", lambda self: builds.append(real(self)) or builds[-1])
    recipe = RECIPE.replace(batch_size=2, crop_area=(0.08, 1.0), hflip=True)
    loader = make_loader(odd_data, "train", recipe, "dali-cpu", "cpu", workers=1, seed=3)
    for epoch in range(2):
        loader.set_epoch(epoch)
        assert len([y for _, y in loader]) == len(loader)
    loader.set_epoch(2)
    next(iter(loader))  # a run stopped after one batch, DEPTH batches in flight
    loader.set_epoch(1, start_batch=3)
    resumed = [(x.clone(), y.clone()) for x, y in loader]
    assert len(builds) == 1
    for (xa, ya), (xb, yb) in zip(_train_batches(odd_data, "dali-cpu", recipe, start_batch=3), resumed, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    loader._schedule(loader.shards.batches()[0])
    images, labels = loader._pipe.outputs()
    x, _ = loader._to_torch(images, labels)
    assert x.data_ptr() == images.as_tensor().data_ptr()
    loader.close()


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["dali-gpu", "dali-cpu"])
def test_dali_on_cuda_matches_dali_cpu_on_cpu(odd_data, backend):
    """nvJPEG (dali-gpu) or DALI's CPU decode feeding the GPU (dali-cpu on CUDA): the same samples, crops and flips
    as dali-cpu on the CPU, batches on the GPU in the recipe's layout, one pipeline for two epochs."""
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU (none here)")
    _backend(backend)
    recipe = RECIPE.replace(batch_size=2, crop_area=(0.08, 1.0), hflip=True)
    ref = _train_batches(odd_data, "dali-cpu", recipe)
    loader = make_loader(odd_data, "train", recipe, backend, "cuda", workers=1, seed=3)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        got = [(x, y) for x, y in loader]
    assert loader._pipe is not None and len(got) == len(ref)
    for (xa, ya), (xb, yb) in zip(ref, got, strict=True):
        assert xb.is_cuda and yb.is_cuda and xb.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(ya, yb.cpu())
        assert (xa - xb.cpu()).abs().mean() < 0.1  # nvJPEG's IDCT and upsampling differ from libjpeg-turbo's slightly
    loader.close()
