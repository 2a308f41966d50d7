"""The recipe's augmentation fields (crop area, crop aspect, flip) reach every data backend that runs here."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rn50.data.loaders import make_loader
from rn50.data.transforms import MEAN, STD
from rn50.recipes import get_recipe

W, H, SIZE, N = 64, 48, 32, 8
FULL = dict(crop_area=(1.0, 1.0), crop_ratio=(W / H, W / H))  # the crop is the whole image
RECIPE = get_recipe("sample-cpu").replace(batch_size=4, image_size=SIZE, memory_format="contiguous", workers=0)
BACKENDS = ["pytorch", "dali-cpu"]


@pytest.fixture(scope="module")
def ramps(tmp_path_factory) -> Path:
    """Images whose left and right differ (a horizontal ramp), so a flip or a zoom is plain to see."""
    root = tmp_path_factory.mktemp("ramps")
    x = np.linspace(0, 255, W)[None, :].repeat(H, 0)
    for split in ("train", "val"):
        for i in range(N):
            folder = root / split / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            rgb = np.stack([x, 255 - x, np.full_like(x, 40.0 * (i % 4))], -1).astype(np.uint8)
            Image.fromarray(rgb).save(folder / f"{i}.png")
    return root


def reference(root: Path) -> torch.Tensor:
    """Every train image resized whole to SIZE x SIZE and normalised, in the loader's file order."""
    from torchvision.transforms.v2 import functional as TF

    files = sorted((root / "train").glob("*/*.png"))
    out = []
    for f in files:
        x = torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1)
        x = TF.resize(x, [SIZE, SIZE], antialias=True).float()
        out.append((x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1))
    return torch.stack(out)


def train_images(root: Path, backend: str, epoch: int = 0, **fields) -> torch.Tensor:
    if backend.startswith("dali"):
        pytest.importorskip("nvidia.dali")
    loader = make_loader(root, "train", RECIPE.replace(**fields), backend, "cpu", seed=epoch, workers=1)
    loader.set_epoch(epoch)
    images = torch.cat([x for x, _ in loader])
    loader.close()
    return images


def matches(images: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """[i, j]: image i is image j of the reference (up to resize filters), shown as mean abs difference < 0.1."""
    return (images[:, None] - ref[None]).abs().mean(dim=(2, 3, 4)) < 0.1


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_flip_and_whole_image_crop_give_the_resized_image(ramps, backend):
    ref = reference(ramps)
    images = train_images(ramps, backend, hflip=False, **FULL)
    assert images.shape == (N, 3, SIZE, SIZE)
    hit = matches(images, ref)
    assert hit.any(dim=1).all(), "every image should be a whole, unflipped source image"
    assert not matches(images, ref.flip(-1)).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_flip_on_flips_some_and_only_flips(ramps, backend):
    ref = reference(ramps)
    images = torch.cat([train_images(ramps, backend, epoch, hflip=True, **FULL) for epoch in range(3)])
    plain, flipped = matches(images, ref).any(dim=1), matches(images, ref.flip(-1)).any(dim=1)
    assert (plain | flipped).all()  # each image is a source image, mirrored or not: nothing else changed
    assert 0.2 < flipped.float().mean() < 0.8  # p = 0.5 over 24 draws


@pytest.mark.parametrize("backend", BACKENDS)
def test_crop_area_range_is_honoured(ramps, backend):
    ref = reference(ramps)
    zoomed = train_images(ramps, backend, hflip=False, crop_area=(0.1, 0.1), crop_ratio=(1.0, 1.0))
    assert not matches(zoomed, ref).any(dim=1).any()  # a 10% crop is never the whole image
    # Along the ramp a 10%-area square spans ~sqrt(0.1 * 4/3) of the width: the red channel's range shrinks with it.
    span = lambda x: (x[:, 0, :, -1] - x[:, 0, :, 0]).mean()  # noqa: E731
    assert span(zoomed) < 0.5 * span(ref)


def test_published_recipes_keep_imagenet_augmentation():
    from rn50.recipes import RECIPES

    for name, r in RECIPES.items():
        if name != "sample-cpu":
            assert (r.crop_area, r.crop_ratio, r.hflip) == ((0.08, 1.0), (3 / 4, 4 / 3), True), name
