"""Screen output a person reads: `rn50 recipes` at 80 columns, with --wide for every column."""

import subprocess
import sys

from rn50.recipes import RECIPES


def recipes(*args: str, columns: int) -> str:
    env = {"COLUMNS": str(columns), "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, "-m", "rn50", "recipes", *args], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_recipes_fit_80_columns_without_cutting_a_value():
    out = recipes(columns=80)
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80
    assert "…" not in out  # rich cuts a column's values with an ellipsis when the table does not fit
    for r in RECIPES.values():
        assert r.name in out and f"{r.gpus}x{r.batch_size}" in out
    assert "1/32768" in out and "--wide" in out


def test_recipes_wide_shows_every_column():
    out = recipes("--wide", columns=250)
    for header in ("precision", "schedule", "smoothing", "size", "crop area", "backend", "notes"):
        assert header in out
    assert "…" not in out
