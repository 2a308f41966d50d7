import math

import pytest
import torch

from rn50.model import resnet50
from rn50.recipes import get_recipe
from rn50.train.optim import LRSchedule, build_optimizer, make_schedule, param_groups


def test_weight_decay_groups_by_rank():
    model = resnet50()
    decay, no_decay = param_groups(model, 1 / 32768)
    assert len(decay["params"]) == 54  # 53 convs + fc.weight
    assert len(no_decay["params"]) == 107  # 53 BN x (gamma, beta) + fc.bias
    assert decay["weight_decay"] == 1 / 32768 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    # the tensors a name match on "bn" misses
    assert {"layer1.0.downsample.1.weight", "layer1.0.downsample.1.bias", "fc.bias"} <= no_decay_names
    opt = build_optimizer(model, get_recipe("dgx1-fp16-90"))
    assert opt.defaults["momentum"] == 0.875 and not opt.defaults["nesterov"]
    assert [g["weight_decay"] for g in opt.param_groups] == [1 / 32768, 0.0]


def test_lr_at_exact_steps_cosine():
    s = LRSchedule(base_lr=2.048, warmup_steps=8, total_steps=108, kind="cosine")
    assert s.lr_at(0) == pytest.approx(2.048 / 8)
    assert s.lr_at(3) == pytest.approx(2.048 * 4 / 8)
    assert s.lr_at(7) == pytest.approx(2.048)  # the last warmup step reaches the peak
    assert s.lr_at(8) == pytest.approx(2.048)  # cosine starts at the peak
    assert s.lr_at(58) == pytest.approx(1.024)  # half way through the decay
    assert s.lr_at(33) == pytest.approx(0.5 * (1 + math.cos(math.pi * 25 / 100)) * 2.048)
    assert s.lr_at(108) == pytest.approx(0.0, abs=1e-12)
    lrs = [s.lr_at(i) for i in range(8, 109)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # monotone after warmup


def test_lr_at_linear_and_step():
    lin = LRSchedule(base_lr=1.0, warmup_steps=0, total_steps=10, kind="linear")
    assert [lin.lr_at(i) for i in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    step = LRSchedule(base_lr=1.0, warmup_steps=0, total_steps=90, kind="step")
    assert [step.lr_at(i) for i in (0, 29, 30, 59, 60, 79, 80, 89)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )


def test_schedule_from_recipe_is_per_iteration():
    recipe = get_recipe("dgx1-fp16-90").replace(gpus=1, batch_size=256)  # lr 0.256, 8 warmup epochs
    s = make_schedule(recipe, steps_per_epoch=100)
    assert (s.warmup_steps, s.total_steps) == (800, 9000)
    assert s.lr_at(0) != s.lr_at(1)  # changes within the first epoch, not once per epoch
    assert s.lr_at(399) == pytest.approx(0.256 * 400 / 800)
    frac = make_schedule(recipe.replace(warmup_epochs=0.5), steps_per_epoch=10)
    assert frac.warmup_steps == 5


def test_lr_is_applied_each_step():
    from rn50.train.step import build_state, train_step

    recipe = get_recipe("sample-cpu").replace(batch_size=2, image_size=32, warmup_epochs=1)
    state = build_state(recipe, "cpu", False, steps_per_epoch=4)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    seen = []
    for _ in range(3):
        train_step(state, x, y)
        seen.append(state.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([state.schedule.lr_at(i) for i in range(3)])
    assert seen == pytest.approx([recipe.lr * k / 4 for k in (1, 2, 3)])
