"""The `rn50` command line: the Typer apps and the one registry of verbs; each verb lives in its own module."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rn50.cli import bench_data, bench_infer, bench_mlperf, bench_train, data, demo, eval, export, recipes, train
from rn50.cli.common import command_argv, make_app, version_callback

__all__ = ["app", "command_argv", "main"]

app = make_app("ResNet-50 v1.5: train with the NVIDIA recipe, export verified artifacts, benchmark honestly.")
data_app = make_app("Datasets: the built-in sample and a dataset doctor.")
bench_app = make_app("Benchmarks: inference sweeps, training scaling, input pipelines, MLPerf scenarios.")


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """ResNet-50 v1.5: train with the NVIDIA recipe, export verified artifacts, benchmark honestly."""


app.command()(recipes.recipes)
app.command()(demo.demo)
app.add_typer(data_app, name="data")
data_app.command("sample")(data.data_sample)
data_app.command("check")(data.data_check)
app.command()(train.train)
app.command("eval")(eval.eval_command)
app.command()(export.export)
app.add_typer(bench_app, name="bench")
bench_app.command("infer")(bench_infer.bench_infer)
bench_app.command("train")(bench_train.bench_train)
bench_app.command("data")(bench_data.bench_data)
bench_app.command("mlperf")(bench_mlperf.bench_mlperf)


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="rn50")
