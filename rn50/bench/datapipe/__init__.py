"""`rn50 bench data`: input-pipeline img/s per data backend (sweep.py), timed by streams.py, written by report.py."""

from rn50.bench.datapipe.config import DEFAULT_BACKENDS, DataBenchConfig, DataBenchReport
from rn50.bench.datapipe.report import COLUMNS, table_rows, write_outputs
from rn50.bench.datapipe.sweep import run_data_bench

__all__ = [
    "COLUMNS",
    "DEFAULT_BACKENDS",
    "DataBenchConfig",
    "DataBenchReport",
    "run_data_bench",
    "table_rows",
    "write_outputs",
]
