import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rn50.train.losses import Mixup, smooth_targets, soft_cross_entropy


def test_label_smoothing_targets_and_loss():
    labels = torch.tensor([2, 0])
    t = smooth_targets(labels, num_classes=4, smoothing=0.1)
    assert t.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert t[0].tolist() == pytest.approx([0.025, 0.025, 0.925, 0.025])
    logits = torch.randn(2, 4)
    expected = -(
        0.9 * F.log_softmax(logits, 1).gather(1, labels[:, None]).squeeze(1) + 0.1 * F.log_softmax(logits, 1).mean(1)
    ).mean()
    assert soft_cross_entropy(logits, t).item() == pytest.approx(expected.item(), rel=1e-6)
    assert F.cross_entropy(logits, labels, label_smoothing=0.1).item() == pytest.approx(expected.item(), rel=1e-6)


def test_mixup_mixes_images_and_targets_with_the_same_lambda():
    torch.manual_seed(0)
    images, labels = torch.randn(6, 3, 4, 4), torch.tensor([0, 1, 2, 3, 4, 0])
    mix = Mixup(alpha=0.2, num_classes=5, smoothing=0.1, seed=7)
    # the same draws, made by hand from an identically seeded generator
    rng = np.random.Generator(np.random.PCG64(7))
    lam = float(rng.beta(0.2, 0.2))
    perm = torch.from_numpy(rng.permutation(6))
    mixed, targets = mix(images, labels)
    assert torch.allclose(mixed, lam * images + (1 - lam) * images[perm], atol=1e-6)
    t = smooth_targets(labels, 5, 0.1)
    assert torch.allclose(targets, lam * t + (1 - lam) * t[perm], atol=1e-6)
    assert targets.sum(1).tolist() == pytest.approx([1.0] * 6)
    # soft-target CE is linear in the target: the mixup loss is the lambda-weighted pair of losses
    logits = torch.randn(6, 5)
    pair = lam * soft_cross_entropy(logits, t) + (1 - lam) * soft_cross_entropy(logits, t[perm])
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(pair.item(), rel=1e-5)


def test_mixup_state_round_trip():
    a = Mixup(0.2, 5, 0.0, seed=1)
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    a(x, y)
    saved = a.state_dict()
    first = a(x, y)
    b = Mixup(0.2, 5, 0.0, seed=99)
    b.load_state_dict(saved)
    second = b(x, y)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
