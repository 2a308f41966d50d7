"""`rn50 recipes`: list the training recipes, or every field of one."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from rn50.cli.common import console


def recipes(
    name: Annotated[str | None, typer.Argument(help="A recipe name; omit to list them all.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column (precision, schedule, smoothing, size, backend...).")
    ] = False,
) -> None:
    """List the training recipes (fits 80 columns; --wide for all), or print every field of one."""
    from rn50.recipes import RECIPES, get_recipe

    if name is not None:
        recipe = get_recipe(name)
        if as_json:
            console.print_json(json.dumps(recipe.to_dict()))
            return
        table = Table(title=f"recipe {recipe.name}", show_header=False)
        for key, value in recipe.to_dict().items():
            table.add_row(key, " - ".join(f"{v:.4g}" for v in value) if isinstance(value, tuple) else str(value))
        console.print(table)
        return
    if as_json:
        console.print_json(json.dumps({n: r.to_dict() for n, r in RECIPES.items()}))
        return
    # The narrow table fits 80 columns with every value whole (rich cut each column's values before).
    table = Table(title="rn50 recipes", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    cols = ["name", "GPU×bs", "global", "lr", "wd", "warmup", "epochs", "mixup", "layout"]
    if wide:
        cols += ["precision", "schedule", "smoothing", "size", "crop area", "backend", "notes"]
    for col in cols:
        table.add_column(col, no_wrap=True)
    for r in RECIPES.values():
        row = [
            r.name,
            f"{r.gpus}x{r.batch_size}",
            str(r.global_batch),
            f"{r.lr:g}",
            f"1/{round(1 / r.weight_decay)}" if r.weight_decay else "0",
            f"{r.warmup_epochs:g}",
            str(r.epochs),
            f"{r.mixup:g}",
            "NHWC" if r.memory_format == "channels_last" else "NCHW",
        ]
        if wide:
            area = " - ".join(f"{v:g}" for v in r.crop_area)
            row += [r.precision, r.lr_schedule, f"{r.label_smoothing:g}", str(r.image_size), area, r.data_backend]
            row.append(r.notes or "")
        table.add_row(*row)
    console.print(table, soft_wrap=wide)  # --wide: whole lines, for a wide terminal or a pipe
    if not wide:
        console.print("all columns: rn50 recipes --wide; every field of one: rn50 recipes NAME", highlight=False)
