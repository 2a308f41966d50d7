"""The training state and one micro-step: AMP, loss scaling, gradient accumulation, EMA. All AMP logic lives here."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rn50.model import resnet50
from rn50.recipes import Recipe
from rn50.train.losses import Mixup, soft_cross_entropy
from rn50.train.optim import LRSchedule, build_optimizer, make_schedule, set_lr

log = logging.getLogger("rn50.train")
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def effective_precision(precision: str, device: torch.device) -> str:
    """The precision that will really run: fp16 AMP needs CUDA; on CPU it falls back to fp32 (said once)."""
    if device.type != "cuda" and precision == "fp16":
        warn_once("fp16-cpu", "fp16 AMP needs a CUDA GPU; training in fp32 on CPU instead")
        return "fp32"
    if device.type != "cuda" and precision == "tf32":
        return "fp32"  # TF32 is a GPU tensor-core mode; on CPU it is plain fp32
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)


def memory_format(recipe: Recipe) -> torch.memory_format:
    from rn50.data.batches import torch_memory_format

    return torch_memory_format(recipe.memory_format)


@dataclass
class TrainState:
    """Everything one training process owns; `opt_step` and `micro_step` are host integers (no device sync)."""

    recipe: Recipe
    device: torch.device
    model: nn.Module  # what forward runs: possibly DDP- and/or compile-wrapped
    module: nn.Module  # the plain ResNet (checkpoints save this: no `module.` prefix)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    precision: str
    distributed: bool = False
    mixup: Mixup | None = None
    ema: nn.Module | None = None
    micro_step: int = 0  # micro-steps taken since the start of the run
    opt_step: int = 0  # optimizer steps taken since the start of the run
    lr: float = 0.0
    bad_run: Tensor | None = None  # consecutive non-finite losses (device scalar)
    worst_bad_run: Tensor | None = None  # the longest such run since the last check (device scalar)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accumulation_steps(self) -> int:
        return self.recipe.accumulation_steps

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = autocast_dtype(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)


def build_model(recipe: Recipe) -> nn.Module:
    return resnet50(num_classes=recipe.num_classes, conv_init=recipe.conv_init, zero_init_last=recipe.zero_init_last)


def build_state(
    recipe: Recipe,
    device: torch.device | str,
    distributed: bool,
    *,
    steps_per_epoch: int | None = None,
    compile: bool = False,
    seed: int = 0,
    rank: int = 0,
) -> TrainState:
    """Model (DDP-wrapped when `distributed`), optimizer, scaler and schedule for `recipe` on `device`.

    `steps_per_epoch` (optimizer steps) sets the lr schedule; without it the lr stays at the recipe's peak
    (benchmarks). `recipe.gpus` must already be the real world size (the trainer sets it).
    """
    device = torch.device(device)
    precision = effective_precision(recipe.precision, device)
    if device.type == "cuda":
        allow_tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
        torch.backends.cudnn.benchmark = True
    module = build_model(recipe).to(device=device, memory_format=memory_format(recipe))
    model: nn.Module = module
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        model = DDP(module, device_ids=ids, gradient_as_bucket_view=True)
    if compile:
        model = torch.compile(model)
    optimizer = build_optimizer(module, recipe)
    fp16 = precision == "fp16"
    scaler = torch.amp.GradScaler(device.type, init_scale=recipe.loss_scale, enabled=fp16)
    if steps_per_epoch is None:
        schedule = LRSchedule(base_lr=recipe.lr, warmup_steps=0, total_steps=2**62, kind="cosine")
    else:
        schedule = make_schedule(recipe, steps_per_epoch)
    mixup = Mixup(recipe.mixup, recipe.num_classes, recipe.label_smoothing, seed=seed + rank) if recipe.mixup else None
    ema = None
    if recipe.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=True)
    zero = torch.zeros((), dtype=torch.int32, device=device)
    return TrainState(
        recipe=recipe,
        device=device,
        model=model,
        module=module,
        optimizer=optimizer,
        scaler=scaler,
        schedule=schedule,
        precision=precision,
        distributed=distributed,
        mixup=mixup,
        ema=ema,
        bad_run=zero.clone(),
        worst_bad_run=zero.clone(),
    )


def compute_loss(state: TrainState, images: Tensor, labels: Tensor) -> Tensor:
    if state.mixup is not None:
        images, targets = state.mixup(images, labels)
    with state.autocast():
        logits = state.model(images)
    if state.mixup is not None:
        return soft_cross_entropy(logits, targets)
    return F.cross_entropy(logits.float(), labels, label_smoothing=state.recipe.label_smoothing)


def train_step(state: TrainState, images: Tensor, labels: Tensor) -> Tensor:
    """One micro-step; every `accumulation_steps`-th one also steps the optimizer. Returns the detached loss."""
    accum = state.accumulation_steps
    first = state.micro_step % accum == 0
    last = state.micro_step % accum == accum - 1
    if first:
        state.lr = state.schedule.lr_at(state.opt_step)
        set_lr(state.optimizer, state.lr)
    # Accumulation micro-steps skip DDP's all-reduce; the last one reduces the summed gradient.
    sync = contextlib.nullcontext() if last or not state.distributed else _no_sync(state.model)
    with sync:
        loss = compute_loss(state, images, labels)
        state.scaler.scale(loss / accum if accum > 1 else loss).backward()
    if last:
        state.scaler.step(state.optimizer)
        if state.scaler.is_enabled() and not state.recipe.dynamic_loss_scale:
            state.scaler.update(state.recipe.loss_scale)  # static scale: still skips overflow steps
        else:
            state.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)
        if state.ema is not None:
            state.ema.update_parameters(state.module)
        state.opt_step += 1
    state.micro_step += 1
    loss = loss.detach()
    finite = torch.isfinite(loss)
    state.bad_run = torch.where(finite, torch.zeros_like(state.bad_run), state.bad_run + 1)
    state.worst_bad_run = torch.maximum(state.worst_bad_run, state.bad_run)
    return loss


def _no_sync(model: nn.Module) -> contextlib.AbstractContextManager:
    inner = getattr(model, "_orig_mod", model)  # torch.compile wraps the DDP module
    return inner.no_sync() if hasattr(inner, "no_sync") else contextlib.nullcontext()
