"""rn50: ResNet-50 v1.5 training with the NVIDIA recipe, verified exports and benchmarks.

Python API (the CLI calls the same functions)::

    from rn50 import resnet50, load_weights, get_recipe
    recipe = get_recipe("dgx1-fp16-90")
    model = resnet50(num_classes=recipe.num_classes)
    model.load_state_dict(load_weights("checkpoint.pth", num_classes=recipe.num_classes))

The names below are imported on first use, so `rn50 --help` and `rn50 recipes` never import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from rn50.errors import UserError
from rn50.version import __version__

_LAZY = {
    "ResNet": "rn50.model",
    "resnet50": "rn50.model",
    "RECIPES": "rn50.recipes",
    "Recipe": "rn50.recipes",
    "get_recipe": "rn50.recipes",
    "load_model": "rn50.weights",
    "load_weights": "rn50.weights",
}

__all__ = [
    "RECIPES",
    "Recipe",
    "ResNet",
    "UserError",
    "__version__",
    "get_recipe",
    "load_model",
    "load_weights",
    "resnet50",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rn50' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
