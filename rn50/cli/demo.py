"""`rn50 demo`: the main job on the built-in sample."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rn50.cli.common import console, err_console, switch


def demo(
    sample: Annotated[Path, typer.Option(help="The built-in sample's folder (written here if absent).")] = Path(
        "sample"
    ),
    out: Annotated[Path, typer.Option(help="Folder for the run, exports, benchmark results and summary.")] = Path(
        "runs/demo"
    ),
    recipe: Annotated[str, typer.Option(help="Recipe to train.")] = "sample-cpu",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs (default: the recipe's; the warmup shrinks to fit).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier demo in --out.")] = False,
    progress: Annotated[bool, switch("progress", help="Progress bars.")] = True,
) -> None:
    """The main job on the built-in sample: train, export ONNX fp32 + INT8 with parity, benchmark, one summary."""
    from rn50.demo import DemoConfig, run_demo, summary_markdown

    summary = run_demo(
        DemoConfig(sample=sample, out=out, recipe=recipe, epochs=epochs, seed=seed, force=force, progress=progress),
        say=lambda text: err_console.print(text, highlight=False, soft_wrap=True),
    )
    console.print(summary_markdown(summary), highlight=False, soft_wrap=True, markup=False)
