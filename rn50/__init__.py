"""rn50: ResNet-50 v1.5 training with the NVIDIA recipe, verified exports and benchmarks.

Python API (the CLI calls the same functions)::

    from rn50 import resnet50, load_weights, get_recipe
    recipe = get_recipe("dgx1-fp16-90")
    model = resnet50(num_classes=recipe.num_classes)
    model.load_state_dict(load_weights("checkpoint.pth", num_classes=recipe.num_classes))
"""

__version__ = "0.1.0"

from rn50.errors import UserError  # noqa: E402
from rn50.model import ResNet, resnet50  # noqa: E402
from rn50.recipes import RECIPES, Recipe, get_recipe  # noqa: E402
from rn50.weights import load_model, load_weights  # noqa: E402

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
