"""The published NVIDIA ResNet-50 v1.5 recipes as frozen dataclasses, plus `sample-cpu`.

Derived values are formulas: lr = lr_per_256 * global batch / 256; weight decay 1 / 32768 (1 / 16384 for the
DGX-1 FP32 recipe). Names are `<platform>-<precision>-<epochs>`.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from rn50.errors import UserError, need

PRECISIONS = ("fp16", "bf16", "tf32", "fp32")
MEMORY_FORMATS = ("channels_last", "contiguous")
LR_SCHEDULES = ("cosine", "linear", "step")
DATA_BACKENDS = ("dali-gpu", "dali-cpu", "pytorch-gpu", "pytorch", "synthetic")
FILE_BACKENDS = tuple(b for b in DATA_BACKENDS if b != "synthetic")  # the backends that read image files
CONV_INITS = ("fan_in", "fan_out")


@dataclass(frozen=True)
class Recipe:
    name: str
    platform: str
    precision: str
    epochs: int
    gpus: int
    batch_size: int  # per device
    optimizer_batch_size: int | None = None  # None: gpus * batch_size (no gradient accumulation)
    lr_per_256: float = 0.256
    momentum: float = 0.875
    nesterov: bool = False
    weight_decay: float = 1 / 32768
    warmup_epochs: float = 8
    lr_schedule: str = "cosine"
    label_smoothing: float = 0.1
    mixup: float = 0.0
    memory_format: str = "channels_last"
    loss_scale: float = 128.0  # fp16 only: initial (dynamic) or fixed (static) loss scale
    dynamic_loss_scale: bool = True
    num_classes: int = 1000
    image_size: int = 224
    # Training augmentation: random-resized-crop area fraction and aspect ratio (w/h) ranges, horizontal flip.
    # ImageNet: 8%-100% of the area, 3/4-4/3, flip (REFERENCE.md); every published recipe keeps these.
    crop_area: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    conv_init: str = "fan_in"
    zero_init_last: bool = False
    data_backend: str = "dali-gpu"
    workers: int = 5
    ema: float | None = None  # decay of an exponential moving average of the weights; None: off
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        def check(ok: bool, what: str) -> None:
            if not ok:
                raise UserError(f"recipe {self.name!r}: {what}")

        check(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        check(self.memory_format in MEMORY_FORMATS, f"memory_format must be one of {', '.join(MEMORY_FORMATS)}")
        check(self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}")
        check(self.data_backend in DATA_BACKENDS, f"data_backend must be one of {', '.join(DATA_BACKENDS)}")
        check(self.conv_init in CONV_INITS, f"conv_init must be one of {', '.join(CONV_INITS)}")
        check(self.epochs >= 1, "epochs must be >= 1")
        check(self.gpus >= 1, "gpus must be >= 1")
        check(self.batch_size >= 1, "batch_size must be >= 1")
        check(self.workers >= 0, "workers must be >= 0")
        check(self.num_classes >= 1, "num_classes must be >= 1")
        check(self.image_size >= 32, "image_size must be >= 32")
        check(self.lr_per_256 > 0, "lr must be > 0")
        check(0 <= self.momentum < 1, "momentum must be in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay must be >= 0")
        check(self.warmup_epochs >= 0, "warmup_epochs must be >= 0")
        check(
            self.warmup_epochs <= self.epochs,
            f"{self.warmup_epochs:g} warmup epochs do not fit in {self.epochs} epochs: pass --warmup {self.epochs} "
            "or less (or more --epochs)",
        )
        check(0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)")
        check(self.mixup >= 0, "mixup alpha must be >= 0")
        check(self.loss_scale > 0, "loss_scale must be > 0")
        lo, hi = self.crop_area
        check(0 < lo <= hi <= 1, f"crop_area must be MIN MAX with 0 < MIN <= MAX <= 1, got {lo:g} {hi:g}")
        lo, hi = self.crop_ratio
        check(0 < lo <= hi, f"crop_ratio must be MIN MAX with 0 < MIN <= MAX, got {lo:g} {hi:g}")
        check(self.ema is None or 0 < self.ema < 1, "ema decay must be in (0, 1)")
        if self.optimizer_batch_size is not None:
            check(
                self.optimizer_batch_size % self.world_batch == 0,
                f"optimizer batch {self.optimizer_batch_size} must be a multiple of gpus x batch = {self.world_batch}",
            )

    @property
    def world_batch(self) -> int:
        """Images per step summed over all devices (one micro-step)."""
        return self.gpus * self.batch_size

    @property
    def global_batch(self) -> int:
        """Images per optimizer step."""
        return self.optimizer_batch_size or self.world_batch

    @property
    def accumulation_steps(self) -> int:
        return self.global_batch // self.world_batch

    @property
    def lr(self) -> float:
        return self.lr_per_256 * self.global_batch / 256

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with the given fields changed; None values are ignored (an option the user left out)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        need(not unknown, f"unknown recipe field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **_tuples(overrides))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(global_batch=self.global_batch, lr=self.lr, accumulation_steps=self.accumulation_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**_tuples({k: v for k, v in d.items() if k in names}))


def _tuples(fields: dict[str, Any]) -> dict[str, Any]:
    """Range fields as tuples, whether they came from JSON (lists) or the CLI."""
    return {k: tuple(v) if k in ("crop_area", "crop_ratio") else v for k, v in fields.items()}


# platform -> (gpus, {precision: batch per GPU}); the source table is shared/REFERENCE.md.
PLATFORMS: dict[str, tuple[int, dict[str, int]]] = {
    "dgx1": (8, {"fp16": 256, "fp32": 112}),
    "dgx2": (16, {"fp16": 256, "fp32": 256}),
    "dgxa100": (8, {"fp16": 256, "tf32": 256}),
    "dgxh100": (8, {"fp16": 256, "bf16": 256}),
}
EPOCHS = (50, 90, 250)
PLATFORM_NOTES = {
    "dgx1": "8x V100",
    "dgx2": "16x V100",
    "dgxa100": "8x A100",
    "dgxh100": "8x H100 (not published by NVIDIA; same scaling rules as DGX A100)",
}


def published_recipe(platform: str, precision: str, epochs: int) -> Recipe:
    gpus, batches = PLATFORMS[platform]
    return Recipe(
        name=f"{platform}-{precision}-{epochs}",
        platform=platform,
        precision=precision,
        epochs=epochs,
        gpus=gpus,
        batch_size=batches[precision],
        weight_decay=1 / 16384 if (platform, precision) == ("dgx1", "fp32") else 1 / 32768,
        mixup=0.2 if epochs == 250 else 0.0,
        memory_format="channels_last" if precision in ("fp16", "bf16") else "contiguous",
        notes=PLATFORM_NOTES[platform],
    )


SAMPLE_CPU = Recipe(
    name="sample-cpu",
    platform="cpu",
    precision="fp32",
    epochs=8,
    gpus=1,
    batch_size=32,
    # Tuned by a measured sweep (benchmarks/sample_sweep.py, docs/results/sample-cpu-sweep-*): lr 0.04 at batch 32,
    # two warmup epochs, 8 epochs. ImageNet's crops down to 8% of the area and its flips destroy 8x8 digits upscaled
    # to 32 px (68.6% val top-1 with them); a mild zoom (60-85% of the area, ImageNet's aspect range) and no flip
    # reach 98-99%.
    lr_per_256=0.04 * 256 / 32,
    warmup_epochs=2,
    crop_area=(0.6, 0.85),
    hflip=False,
    memory_format="contiguous",
    num_classes=10,
    image_size=32,
    data_backend="pytorch",
    workers=2,
    zero_init_last=True,
    notes="the built-in digits sample (`rn50 data sample`) on 2 CPU cores at 32 px",
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        *(
            published_recipe(platform, precision, epochs)
            for platform, (_, batches) in PLATFORMS.items()
            for precision in batches
            for epochs in EPOCHS
        ),
        SAMPLE_CPU,
    ]
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        close = difflib.get_close_matches(name, RECIPES, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `rn50 recipes` to list them"
        raise UserError(f"unknown recipe {name!r}: {hint}") from None
