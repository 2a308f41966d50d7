"""Result writers shared by the benchmarks: Markdown/CSV/JSON tables and PNG plots, all written atomically.

Stable API (the `bench train` / `bench data` commands use it too):
    write_table(rows, columns, out_stem, title, env, notes=(), extra=None) -> {"md": Path, "csv": Path, "json": Path}
    env_lines(env) -> list[str]
    line_figure(series, xlabel, ylabel, title, logx=False, logy=False, labels=None, references=None) -> Figure
    save_png(figure, out_png) -> Path
    file_tag(text) -> str
    config_dict(cfg) -> dict
    write_files(out_stem, md_lines, csv, obj) -> {"md": Path, "csv": Path, "json": Path}
`columns` is a sequence of keys or (key, header) pairs; a missing value prints as "-".
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rn50.io import atomic_path, atomic_write_json, atomic_write_text
from rn50.tables import Column, column_keys, csv_text, markdown_table


def env_lines(env: Mapping[str, Any]) -> list[str]:
    """A few human lines naming the machine and software a result came from."""
    pk = env.get("packages", {})
    lines = []
    gpus = env.get("gpus") or []
    if gpus:
        smi = (env.get("nvidia_smi") or [{}])[0]
        clocks = ""
        if smi:
            clocks = (
                f"; clocks at start SM {smi.get('clocks.sm', '?')} / max {smi.get('clocks.max.sm', '?')}, "
                f"mem {smi.get('clocks.mem', '?')}, power limit {smi.get('power.limit', '?')}, "
                f"{smi.get('temperature.gpu', '?')} C"
            )
        lines.append(
            f"GPU: {len(gpus)} x {gpus[0]['name']} ({gpus[0].get('memory_gib', '?')} GiB), driver "
            f"{env.get('driver', '?')}, CUDA {env.get('torch_cuda', '?')}, cuDNN {env.get('cudnn', '?')}{clocks}"
        )
    lines.append(
        f"CPU: {env.get('cpu', '?')}"
        + (f" ({env['cpu_signature']})" if env.get("cpu_signature") else "")
        + (f" [{' '.join(env['cpu_flags'])}]" if env.get("cpu_flags") else "")
        + f", {env.get('cpu_cores', '?')} cores, torch threads {env.get('torch_threads', '?')}"
        + (f", load average {env['loadavg'][0]:.2f}" if env.get("loadavg") else "")
    )
    versions = ", ".join(f"{k} {v}" for k, v in pk.items())
    lines.append(f"Software: Python {env.get('python', '?')}, {versions}; rn50 {env.get('rn50', '?')}")
    if env.get("git_commit"):
        lines.append(f"Commit: {env['git_commit']}")
    return lines


def write_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    out_stem: str | os.PathLike,
    title: str,
    env: Mapping[str, Any],
    notes: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write `<out_stem>.md`, `.csv` and `.json` (the JSON holds title, env, columns, rows and `extra`)."""
    md = [f"# {title}", "", *(f"- {line}" for line in env_lines(env)), *(f"- {n}" for n in notes), ""]
    md.append(markdown_table(rows, columns))
    obj = {"title": title, "env": dict(env), "columns": column_keys(columns), "rows": list(rows)}
    obj.update(extra or {})
    return write_files(out_stem, md, csv_text(rows, columns), obj)


def write_files(out_stem: str | os.PathLike, md_lines: Sequence[str], csv: str, obj: Any) -> dict[str, Path]:
    """`<out_stem>.md` (the lines), `.csv` and `.json` (`obj`), each written atomically; their paths."""
    stem = Path(out_stem)
    paths = {ext: stem.with_name(f"{stem.name}.{ext}") for ext in ("md", "csv", "json")}
    atomic_write_text(paths["md"], "\n".join(md_lines))
    atomic_write_text(paths["csv"], csv)
    atomic_write_json(paths["json"], obj)
    return paths


def config_dict(cfg: Any) -> dict[str, Any]:
    """A benchmark's config dataclass as the result files hold it: paths as strings, tuples as lists."""
    fields = asdict(cfg).items()
    return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v for k, v in fields}


def file_tag(text: str) -> str:
    """A file-name-safe piece: lower case, [a-z0-9.+_-] only."""
    return re.sub(r"[^a-z0-9.+_-]+", "-", str(text).lower()).strip("-") or "x"


def save_png(fig, out_png: str | os.PathLike) -> Path:
    """A figure (e.g. `line_figure`'s) written to `out_png` atomically, then closed."""
    import matplotlib.pyplot as plt

    try:
        out = Path(out_png)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out


def line_figure(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
    labels: Mapping[str, Sequence[str]] | None = None,
    references: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
):
    """One line per series (label -> (xs, ys)); optional per-point text labels (e.g. the batch size); `references`
    (e.g. linear scaling) are drawn dashed and grey and labelled '(reference)', apart from the data. On a log-2 x axis
    of whole numbers (batch sizes, worker counts) the ticks are the measured values, written plainly (8, not 2^3); a
    log y axis too. The caller closes the figure."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never try to open a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    try:
        for name, (xs, ys) in series.items():
            if not xs:
                continue
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.5, label=name)
            for x, y, text in zip(xs, ys, (labels or {}).get(name, ()), strict=False):
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        for i, (name, (xs, ys)) in enumerate((references or {}).items()):
            if xs:
                label = name if "reference" in name else f"{name} (reference)"
                ax.plot(xs, ys, linestyle="--", color=("0.35", "0.6")[i % 2], linewidth=1.0, label=label)
        if logx:
            ax.set_xscale("log", base=2)
            xs_all = sorted({x for xs, _ in series.values() for x in xs})
            if xs_all and all(float(x).is_integer() for x in xs_all):
                from matplotlib.ticker import FixedLocator, NullLocator

                ax.xaxis.set_major_locator(FixedLocator(xs_all))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.set_xticklabels([str(int(x)) for x in xs_all])
        if logy:
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            # Plain numbers (20, 600, 1000), not 2x10^1 or 6x10^2; the minor ticks labelled when under two decades.
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            low, high = ax.get_ylim()
            if high / low < 100:
                ax.yaxis.set_minor_formatter(plain)
                ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if any(xs for xs, _ in series.values()):
            ax.legend(fontsize=8)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return fig
