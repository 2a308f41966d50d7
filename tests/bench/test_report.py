"""rn50.bench.report directly: cell formatting, Markdown and CSV tables, the written files, file tags."""

import csv
import io
import json

import pytest

from rn50.bench.report import env_lines, file_tag, write_table
from rn50.tables import csv_text, format_cell, markdown_table

ROWS = [
    {"backend": "eager", "batch": 8, "img_s": 1234.5678, "p50_ms": 6.4801, "note": "a|b"},
    {"backend": "onnxruntime", "batch": 16, "img_s": 15.0, "p50_ms": None, "note": "line\nbreak"},
]
COLUMNS = ["backend", ("batch", "batch size"), ("img_s", "img/s"), ("p50_ms", "p50 ms"), "note"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (float("nan"), "-"),
        (True, "yes"),
        (False, "no"),
        (9999, "9999"),
        (12345, "12,345"),
        (1234.5678, "1,235"),
        (123.45, "123.5"),
        (12.345, "12.35"),
        (1.23456, "1.235"),
        (0.0, "0.000"),
        (0.0001234, "1.23e-04"),
        ("a|b", "a\\|b"),
    ],
)
def test_format_cell(value, text):
    assert format_cell(value) == text


def test_markdown_table():
    lines = markdown_table(ROWS, COLUMNS).splitlines()
    assert lines[0] == "| backend | batch size | img/s | p50 ms | note |"
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2] == "| eager | 8 | 1,235 | 6.480 | a\\|b |"
    assert lines[3] == "| onnxruntime | 16 | 15.00 | - | line break |"
    assert len(lines) == 4


def test_csv_keeps_raw_values():
    rows = list(csv.reader(io.StringIO(csv_text(ROWS, COLUMNS))))
    assert rows[0] == ["backend", "batch", "img_s", "p50_ms", "note"]
    assert rows[1] == ["eager", "8", "1234.5678", "6.4801", "a|b"]
    assert rows[2][3] == "" and rows[2][4] == "line\nbreak"


def test_write_table(tmp_path):
    env = {"rn50": "0.1.0", "cpu": "Test CPU", "cpu_cores": 2, "torch_threads": 2, "packages": {"torch": "2.14.1"}}
    paths = write_table(ROWS, COLUMNS, tmp_path / "infer-fp32", "title here", env, notes=["a note"], extra={"k": 1})
    assert {p.name for p in paths.values()} == {"infer-fp32.md", "infer-fp32.csv", "infer-fp32.json"}
    md = paths["md"].read_text()
    assert md.startswith("# title here\n") and "- a note" in md and markdown_table(ROWS, COLUMNS) in md
    assert all(f"- {line}" in md for line in env_lines(env))
    obj = json.loads(paths["json"].read_text())
    assert obj["rows"] == ROWS and obj["columns"] == ["backend", "batch", "img_s", "p50_ms", "note"]
    assert obj["title"] == "title here" and obj["env"] == env and obj["k"] == 1
    assert paths["csv"].read_text() == csv_text(ROWS, COLUMNS)
    assert not [p for p in tmp_path.iterdir() if p not in paths.values()]  # no temporary files left


def test_env_lines_name_cpu_and_versions():
    text = "\n".join(env_lines({"cpu": "Test CPU", "cpu_cores": 2, "torch_threads": 1, "packages": {"torch": "2.14"}}))
    assert "Test CPU" in text and "2 cores" in text and "torch threads 1" in text and "torch 2.14" in text


@pytest.mark.parametrize(
    ("text", "tag"), [("Infer FP16 / NHWC", "infer-fp16-nhwc"), ("torch2.14+cu130", "torch2.14+cu130"), ("///", "x")]
)
def test_file_tag(text, tag):
    assert file_tag(text) == tag


def test_plot_ticks_are_the_batch_sizes_and_references_are_dashed_and_named():
    import matplotlib.pyplot as plt

    from rn50.bench.report import line_figure

    series = {"eager fp32": ([1, 2, 4, 8], [10.0, 18.0, 30.0, 41.0]), "ort int8": ([1, 2, 4, 8], [30.0, 52.0, 80, 95])}
    refs = {"linear scaling of eager fp32": ([1, 2, 4, 8], [10.0, 20.0, 40.0, 80.0])}
    fig = line_figure(series, "batch size", "p50 ms", "on CPU (Test), 224 px", logx=True, logy=True, references=refs)
    try:
        fig.canvas.draw()
        (ax,) = fig.axes
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]  # not 2^0 .. 2^3
        y_labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
        assert "100" in y_labels and not [t for t in y_labels if "^" in t or "times" in t]  # not 10^2
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert lines["linear scaling of eager fp32 (reference)"].get_linestyle() == "--"
        assert lines["eager fp32"].get_linestyle() == "-" and lines["ort int8"].get_linestyle() == "-"
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "linear scaling of eager fp32 (reference)" in legend and ax.get_title() == "on CPU (Test), 224 px"
    finally:
        plt.close(fig)
