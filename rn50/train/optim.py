"""SGD with weight decay grouped by tensor rank, and the learning rate as a pure function of the step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from rn50.recipes import LR_SCHEDULES, Recipe

# The `step` schedule: x0.1 at 30, 60 and 80 of 90 epochs, as fractions so it scales with any epoch count.
STEP_MILESTONES = (30 / 90, 60 / 90, 80 / 90)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay tensors with ndim >= 2 (conv and fc weights); not BN gamma/beta or biases.

    By rank, not by name: matching "bn" in the name misses `downsample.1` and `fc.bias`.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    return torch.optim.SGD(
        param_groups(model, recipe.weight_decay),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
    )


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate per optimizer step: linear warmup, then cosine / linear / step decay to the end."""

    base_lr: float
    warmup_steps: int
    total_steps: int
    kind: str = "cosine"

    def __post_init__(self) -> None:
        if self.kind not in LR_SCHEDULES:
            raise ValueError(f"schedule must be one of {LR_SCHEDULES}, not {self.kind!r}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"need 0 <= warmup_steps ({self.warmup_steps}) <= total_steps ({self.total_steps})")

    def lr_at(self, step: int) -> float:
        """The lr used by optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            # (step + 1) so the first step already moves and the last warmup step reaches base_lr.
            return self.base_lr * (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress)) * self.base_lr
        if self.kind == "linear":
            return (1 - progress) * self.base_lr
        passed = sum(progress >= m for m in STEP_MILESTONES)
        return self.base_lr * 0.1**passed


def make_schedule(recipe: Recipe, steps_per_epoch: int) -> LRSchedule:
    """The recipe's schedule in optimizer steps (warmup may be a fraction of an epoch)."""
    total = recipe.epochs * steps_per_epoch
    warmup = min(total, round(recipe.warmup_epochs * steps_per_epoch))
    return LRSchedule(base_lr=recipe.lr, warmup_steps=warmup, total_steps=total, kind=recipe.lr_schedule)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
