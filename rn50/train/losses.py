"""Cross-entropy on soft targets: label smoothing and mixup share one loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def smooth_targets(labels: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """One-hot targets with `smoothing` mass spread uniformly over all classes (the true one included)."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device, dtype=torch.float32)
    return targets.scatter_(1, labels.long().unsqueeze(1), 1.0 - smoothing + off)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over the batch of -sum(target * log_softmax(logits)), computed in fp32."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


class Mixup:
    """Mix pairs of images and their (smoothed) targets with lambda ~ Beta(alpha, alpha).

    lambda and the pairing come from a host-side generator seeded per rank: no device sync, and resumable.
    """

    def __init__(self, alpha: float, num_classes: int, smoothing: float, seed: int = 0) -> None:
        import numpy as np

        self.alpha = alpha
        self.num_classes = num_classes
        self.smoothing = smoothing
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        targets = smooth_targets(labels, self.num_classes, self.smoothing)
        lam = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.from_numpy(self.rng.permutation(images.shape[0])).to(images.device, non_blocking=True)
        mixed = images.mul(lam).add_(images[perm], alpha=1 - lam)
        return mixed, targets.mul(lam).add_(targets[perm], alpha=1 - lam)

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
