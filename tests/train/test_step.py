import logging

import torch
import torch.nn.functional as F

from rn50.recipes import get_recipe
from rn50.train.step import build_state, train_step


def small_recipe(**kw):
    base = dict(batch_size=8, image_size=32, label_smoothing=0.0, zero_init_last=False, warmup_epochs=0)
    return get_recipe("sample-cpu").replace(**{**base, **kw})


def test_one_step_lowers_the_loss_and_changes_every_tensor():
    torch.manual_seed(0)
    recipe = small_recipe(lr_per_256=0.003 * 256 / 8)
    state = build_state(recipe, "cpu", False)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    before = {n: p.detach().clone() for n, p in state.module.named_parameters()}
    loss0 = train_step(state, x, y).item()  # the loss before the update
    with torch.no_grad():
        loss1 = F.cross_entropy(state.module(x), y).item()  # same batch, train-mode BN, after the update
    assert loss1 < loss0
    unchanged = [n for n, p in state.module.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
    assert state.opt_step == 1 and state.micro_step == 1


def test_accumulation_steps_the_optimizer_every_k_micro_steps():
    recipe = small_recipe(batch_size=4, optimizer_batch_size=8)
    assert recipe.accumulation_steps == 2
    state = build_state(recipe, "cpu", False)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    w0 = state.module.fc.weight.detach().clone()
    train_step(state, x, y)
    assert torch.equal(state.module.fc.weight, w0) and state.opt_step == 0
    assert state.module.fc.weight.grad is not None  # gradient kept for the next micro-step
    train_step(state, x, y)
    assert not torch.equal(state.module.fc.weight, w0) and state.opt_step == 1
    assert state.module.fc.weight.grad is None


def test_nonfinite_losses_are_counted_on_device():
    state = build_state(small_recipe(), "cpu", False)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    for _ in range(3):
        train_step(state, torch.full_like(x, float("nan")), y)
    assert int(state.bad_run) == 3 and int(state.worst_bad_run) == 3


def test_fp16_on_cpu_falls_back_once(caplog):
    import rn50.train.step as step

    step._warned.discard("fp16-cpu")
    with caplog.at_level(logging.WARNING, logger="rn50.train"):
        a = build_state(small_recipe(precision="fp16"), "cpu", False)
        b = build_state(small_recipe(precision="fp16"), "cpu", False)
    assert a.precision == b.precision == "fp32"
    assert not a.scaler.is_enabled()
    assert sum("fp16" in r.message for r in caplog.records) == 1
    bf = build_state(small_recipe(precision="bf16"), "cpu", False)
    assert bf.precision == "bf16"
    loss = train_step(bf, torch.randn(8, 3, 32, 32), torch.arange(8) % 10)
    assert torch.isfinite(loss)
