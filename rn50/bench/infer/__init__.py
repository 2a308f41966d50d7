"""`rn50 bench infer`: an img/s and latency sweep over batch sizes, backends and precisions (sweep.py; the series'
builds and agreement in series.py, the options in config.py, the tables and plots in report.py)."""

from rn50.bench.infer.config import InferConfig
from rn50.bench.infer.sweep import failures, run_infer

__all__ = ["InferConfig", "failures", "run_infer"]
