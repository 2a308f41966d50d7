"""The `pytorch-gpu` backend: everything but nvJPEG runs on the CPU too, where its batches are bitwise the
`pytorch` backend's (same decoders, same crop rule, same resize); routing, EXIF orientation and the CUDA decode."""

from pathlib import Path

import numpy as np
import pytest
import torch

from rn50.data.gpu_decode import gpu_decodable, jpeg_frame, orient
from rn50.data.loaders import make_loader
from rn50.data.transforms import decode_rgb, torchvision_io
from rn50.recipes import get_recipe
from tests.data.images import _rgb, exif_image, write_odd_dataset

RECIPE = get_recipe("sample-cpu").replace(batch_size=3, image_size=32, crop_area=(0.08, 1.0), hflip=True)


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> Path:
    def plain(folder, rng):
        folder.mkdir(parents=True)
        for i in range(5):
            _rgb(rng, 50 + 7 * i, 37 + 3 * i).save(folder / f"{i}.JPEG")

    return write_odd_dataset(tmp_path_factory.mktemp("odd-gpu"), 1, plain)


def batches(root, split, backend, recipe, device="cpu", epoch=1):
    loader = make_loader(root, split, recipe, backend, device, workers=1, seed=5)
    loader.set_epoch(epoch)
    loader.timing = True  # the decode/augment breakdown, as `rn50 bench data` asks for it
    try:
        return [(x.cpu(), y.cpu()) for x, y in loader], loader
    finally:
        loader.close()


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("memory_format", ["channels_last", "contiguous"])
def test_cpu_batches_are_bitwise_the_pytorch_backends(odd, split, memory_format):
    recipe = RECIPE.replace(memory_format=memory_format)
    ref, ref_loader = batches(odd, split, "pytorch", recipe)
    got, loader = batches(odd, split, "pytorch-gpu", recipe)
    assert len(got) == len(ref) > 2
    for (xa, ya), (xb, yb) in zip(ref, got, strict=True):
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb)
        assert xb.is_contiguous(
            memory_format=torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        )
    assert sorted(p for p, _ in ref_loader.bad_files) == sorted(p for p, _ in loader.bad_files)  # same files named
    t = loader.timings
    assert t["images"] == sum(len(y) for _, y in got) and t["decode_s"] > 0 and t["augment_s"] > 0


def test_only_rgb_8_bit_jpegs_go_to_nvjpeg(odd):
    folder = odd / "val" / "a"
    routed = {p.stem: gpu_decodable(p.read_bytes()) for p in folder.iterdir()}
    assert routed == {
        "gray": False, "cmyk": False, "png_named_jpeg": False, "rgba_png": False, "png16": False,  # CPU decode
        "progressive": True, "tiny": True, "wide": True, "tall": True, "trailing_bytes": True, "exif_rotated": True,
    }  # fmt: skip
    assert jpeg_frame((folder / "progressive.JPEG").read_bytes())[0] == 0xC2
    assert jpeg_frame((folder / "tiny.JPEG").read_bytes())[:3] == (0xC0, 8, 3)
    assert jpeg_frame(b"\xff\xd8\xff\xda") is None and jpeg_frame(b"GIF89a") is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_after_decode_matches_the_decoders(tmp_path, orientation):
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    path = exif_image(_rgb(np.random.default_rng(orientation), 12, 7), tmp_path / "x.jpg", orientation)
    with torchvision_io():  # the decoder the pytorch-gpu backend's nvJPEG batch call uses
        raw = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)  # as nvJPEG returns it: stored orientation
    assert torch.equal(orient(raw, orientation), decode_rgb(str(path)))


def count_device_syncs(monkeypatch) -> list:
    """Every device-wide synchronisation from here on (torch's, rn50.env's and any the loaders imported by name),
    each still done."""
    import rn50.env
    from rn50.data import gpu_decode, torch_loader

    syncs: list = []
    for owner in (torch.cuda, rn50.env, *(m for m in (gpu_decode, torch_loader) if hasattr(m, "synchronize"))):
        real = owner.synchronize
        monkeypatch.setattr(owner, "synchronize", lambda *a, _real=real, **k: syncs.append(a) or _real(*a, **k))
    return syncs


@pytest.mark.parametrize("timing", [False, True])
def test_no_device_wide_sync_per_batch(odd, monkeypatch, timing):
    syncs = count_device_syncs(monkeypatch)
    loader = make_loader(odd, "train", RECIPE, "pytorch-gpu", "cpu", workers=0, seed=5)
    loader.timing = timing
    assert sum(len(y) for _, y in loader) == len(loader) * RECIPE.batch_size > 6
    assert syncs == []
    assert (loader.timings["decode_s"] > 0) == timing  # the breakdown only when asked


@pytest.mark.gpu
def test_nvjpeg_batches_match_the_cpu_decode(odd, monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU (none here)")
    recipe = RECIPE.replace(memory_format="channels_last")
    for split in ("train", "val"):
        ref, _ = batches(odd, split, "pytorch", recipe)
        got, loader = batches(odd, split, "pytorch-gpu", recipe, device="cuda")
        assert [y.tolist() for _, y in got] == [y.tolist() for _, y in ref]
        # nvJPEG's IDCT and upsampling differ from libjpeg-turbo's by a few levels
        assert max((xa - xb).abs().mean().item() for (xa, _), (xb, _) in zip(ref, got, strict=True)) < 0.1
        assert loader.timings["cpu_decoded"] >= 5  # gray, CMYK, the PNGs: decoded on the CPU, not skipped
        assert loader.timings["decode_s"] > 0  # from CUDA events
    syncs = count_device_syncs(monkeypatch)
    loader = make_loader(odd, "train", recipe, "pytorch-gpu", "cuda", workers=1, seed=5)
    assert sum(len(y) for _, y in loader) > 6 and syncs == []  # stream-ordered: the host never waits for the GPU
