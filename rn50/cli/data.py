"""`rn50 data sample` and `rn50 data check`: the built-in sample and the dataset doctor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rn50.cli.common import console, err_console


def data_sample(
    out: Annotated[Path, typer.Argument(help="Folder to write train/ and val/ into.")],
    force: Annotated[bool, typer.Option("--force", help="Replace train/ and val/ in a non-empty folder.")] = False,
) -> None:
    """Write the built-in sample (1,797 real handwritten digits, 10 classes) in ImageNet layout."""
    from rn50.data.sample import make_sample

    counts = make_sample(out, force=force)
    console.print(f"wrote {counts['train']} train and {counts['val']} val images (10 classes) to {out}")


def data_check(
    root: Annotated[Path, typer.Argument(help="Dataset folder with train/ and/or val/.")],
    workers: Annotated[int | None, typer.Option(help="Decode processes (default: up to 8).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Count images per class and split, find undecodable files and classes missing from a split."""
    from rn50.data.check import check_dataset

    with err_console.status(f"decoding every image under {root} ..."):
        report = check_dataset(root, workers=workers)
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        splits = list(report.counts)
        table = Table(title=f"dataset {root}")
        table.add_column("class")
        for s in splits:
            table.add_column(s, justify="right")
        classes = sorted({c for counts in report.counts.values() for c in counts})
        for c in classes:
            table.add_row(c, *(str(report.counts[s].get(c, "-")) for s in splits))
        table.add_row("[bold]total", *(f"[bold]{sum(report.counts[s].values())}" for s in splits))
        console.print(table)
        if report.other_files:
            console.print(
                f"{len(report.other_files)} entries not read by the loaders (non-image files, nested or hidden "
                f"folders; e.g. {report.other_files[0]})"
            )
        for problem in report.problems:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
        console.print("[green]ok[/]" if report.ok else f"[red]{len(report.problems)} problem(s)[/]")
    if not report.ok:
        raise typer.Exit(1)
