import dataclasses
import json
import re
from pathlib import Path

import pytest

from rn50.errors import UserError
from rn50.recipes import RECIPES, get_recipe
from tests.conftest import SHARED, run_cli

REFERENCE = Path(__file__).with_name("reference_recipes.md")  # shared/REFERENCE.md's table, always here
LAYOUT = {"NHWC": "channels_last", "NCHW": "contiguous"}


def reference_table(path: Path) -> dict:
    """platform, precision -> gpus, batch, global, lr, wd, layout: the recipe table rows of a REFERENCE.md."""
    rows = {}
    for line in path.read_text().splitlines():
        m = re.match(
            r"\| (dgx\w+)(?: \([^)]*\))? \| (\w+)(?: \(AMP\))? \| (\d+) x (\d+) \| (\d+) \| ([\d.]+) "
            r"\| 1/(\d+) \| (\w+) \|",
            line,
        )
        if m:
            p, prec, g, b, glob, lr, wd, fmt = m.groups()
            rows[(p, prec)] = (int(g), int(b), int(glob), float(lr), 1 / int(wd), fmt)
    return rows


# NVIDIA's six published recipes, plus the DGX H100 ones rn50 adds with the same scaling rules (not NVIDIA's).
PUBLISHED = {
    **reference_table(REFERENCE),
    ("dgxh100", "fp16"): (8, 256, 2048, 2.048, 1 / 32768, "NHWC"),
    ("dgxh100", "bf16"): (8, 256, 2048, 2.048, 1 / 32768, "NHWC"),
}


def test_reference_copy_holds_the_published_table():
    rows = reference_table(REFERENCE)
    assert len(rows) == 6 and len(PUBLISHED) == 8
    assert rows[("dgx1", "fp32")] == (8, 112, 896, pytest.approx(0.896), 1 / 16384, "NCHW")
    shared = SHARED / "REFERENCE.md"
    if shared.exists():  # the copy must not drift from the source it was taken from
        assert reference_table(shared) == rows


@pytest.mark.parametrize("platform,precision", list(PUBLISHED))
@pytest.mark.parametrize("epochs", [50, 90, 250])
def test_published_recipes(platform, precision, epochs):
    gpus, batch, global_batch, lr, wd, layout = PUBLISHED[(platform, precision)]
    r = get_recipe(f"{platform}-{precision}-{epochs}")
    assert (r.gpus, r.batch_size, r.global_batch) == (gpus, batch, global_batch)
    assert r.lr == pytest.approx(lr)
    assert r.weight_decay == wd
    assert r.memory_format == LAYOUT[layout]
    assert r.warmup_epochs == 8 and r.epochs == epochs
    assert r.mixup == (0.2 if epochs == 250 else 0.0)
    assert (r.momentum, r.nesterov, r.label_smoothing, r.lr_schedule) == (0.875, False, 0.1, "cosine")
    assert (r.num_classes, r.image_size, r.conv_init) == (1000, 224, "fan_in")
    if precision == "fp16":
        assert r.loss_scale == 128 and r.dynamic_loss_scale


def test_registry_size_and_sample():
    assert len(RECIPES) == 8 * 3 + 1
    s = get_recipe("sample-cpu")
    assert s.num_classes == 10 and s.gpus == 1


def test_lr_is_derived_and_overrides_validate():
    r = get_recipe("dgx1-fp16-90").replace(batch_size=128, gpus=1)
    assert r.lr == pytest.approx(0.256 * 128 / 256)
    r = r.replace(optimizer_batch_size=512)
    assert r.accumulation_steps == 4 and r.lr == pytest.approx(0.512)
    with pytest.raises(UserError, match="multiple"):
        r.replace(optimizer_batch_size=500)
    with pytest.raises(UserError, match="precision"):
        r.replace(precision="fp8")
    with pytest.raises(UserError, match="unknown recipe field"):
        r.replace(colour="blue")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.epochs = 3  # type: ignore[misc]


def test_unknown_recipe_suggests_close_names():
    with pytest.raises(UserError, match="dgx1-fp16-90"):
        get_recipe("dgx1-fp16-9")


def test_cli_recipes():
    res = run_cli(["recipes"])
    assert res.exit_code == 0 and "dgxh100-bf16-250" in res.stdout
    res = run_cli(["recipes", "dgx1-fp32-90", "--json"])
    assert res.exit_code == 0 and '"weight_decay": 6.103515625e-05' in res.stdout
    res = run_cli(["recipes", "nope-fp16-90"])
    assert res.exit_code == 2 and "unknown recipe" in res.stderr and "Traceback" not in res.stderr


def test_augmentation_fields_show_validate_and_override(tmp_path):
    res = run_cli(["recipes", "dgx1-fp16-90"])
    assert res.exit_code == 0
    assert "crop_area" in res.stdout and "0.08 - 1" in res.stdout and "0.75 - 1.333" in res.stdout
    assert "hflip" in res.stdout
    with pytest.raises(UserError, match="crop_area"):
        get_recipe("sample-cpu").replace(crop_area=(0.9, 0.5))
    with pytest.raises(UserError, match="crop_ratio"):
        get_recipe("sample-cpu").replace(crop_ratio=(0, 1))
    # JSON (recipe.json, checkpoints) gives lists back: they become the same tuples
    r = get_recipe("dgx1-fp16-90")
    assert type(r).from_dict(json.loads(json.dumps(r.to_dict()))) == r
    out = tmp_path / "run"
    args = ["train", "--data-backend", "synthetic", "--prof", "1", "--training-only", "--epochs", "1", "--warmup", "0"]
    args += ["--batch-size", "2", "--image-size", "32", "--out", out, "--device", "cpu", "--no-progress"]
    res = run_cli([*args, "--crop-area", "0.5", "1", "--crop-ratio", "0.9", "1.1", "--no-hflip"])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "recipe.json").read_text())
    assert (saved["crop_area"], saved["crop_ratio"], saved["hflip"]) == ([0.5, 1.0], [0.9, 1.1], False)
    bad = [a if a != out else tmp_path / "bad" for a in args]  # (was args[:-2]: "--device" took "--out" as its value)
    res = run_cli([*bad, "--crop-area", "0", "1"])
    assert res.exit_code == 2 and "crop_area must be MIN MAX" in res.stderr and "Traceback" not in res.output
