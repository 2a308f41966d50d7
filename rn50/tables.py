"""Markdown and CSV tables from rows of dicts: what every verb prints and every result file holds.

`columns` is a sequence of keys or (key, header) pairs; a missing value prints as "-".
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

Column = str | tuple[str, str]


def _key_header(col: Column) -> tuple[str, str]:
    return (col, col) if isinstance(col, str) else (col[0], col[1])


def column_keys(columns: Sequence[Column]) -> list[str]:
    return [_key_header(c)[0] for c in columns]


def format_cell(value: Any) -> str:
    """Numbers with sensible precision (4 significant digits, thousands grouped from 1,000), None as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        a = abs(value)
        if a >= 1000:
            return f"{value:,.0f}"
        if a >= 100:
            return f"{value:.1f}"
        if a >= 10:
            return f"{value:.2f}"
        if a >= 0.001 or a == 0:
            return f"{value:.3f}"
        return f"{value:.2e}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    cols = [_key_header(c) for c in columns]
    lines = [
        "| " + " | ".join(h for _, h in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """CSV with the column keys as header and raw (unformatted) values, for spreadsheets and pandas."""
    keys = column_keys(columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(keys)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else row.get(k) for k in keys])
    return buf.getvalue()
