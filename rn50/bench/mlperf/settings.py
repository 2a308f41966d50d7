"""What a `bench mlperf` run is asked for, and the LoadGen TestSettings it becomes.

The official values are LoadGen's own: `TestSettings.FromConfig("", "resnet50", scenario, 0)` loads the mlperf.conf
compiled into the mlcommons-loadgen wheel (loadgen/mlperf.conf in mlcommons/inference, LoadGen 6.0.17): 600 s
minimum duration in every scenario, 1,024 performance samples, Offline at least 24,576 samples, Server p99 within
15 ms, MultiStream 8 samples per query judged at p99 over at least 662 queries, SingleStream judged at p90, and the
fixed RNG seeds. Every run starts from them. What a submitter's user.conf says (Offline expected QPS, Server target
QPS, the expected latencies LoadGen sizes its query schedule by) comes from a calibration or the options; the options
that shorten or loosen the official values (`--min-duration`, `--min-query-count`, `--sample-count`,
`--target-latency-ms`) are recorded as deviations, and any deviation marks the result NOT COMPLIANT everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rn50.errors import UserError, need

MODEL = "resnet50"  # the model name mlperf.conf keys its values by
SCENARIOS = {"offline": "Offline", "server": "Server", "singlestream": "SingleStream", "multistream": "MultiStream"}
MODES = ("performance", "accuracy")
# The MLPerf accuracy target: 99% of the fp32 reference top-1 (submission checker: "resnet": ("acc", 76.46 * 0.99)).
ACCURACY_TARGET = 0.99

# The values a run may lower (or, for the latency bound, raise) only through an option, and how each is said.
# (TestSettings attribute, what it is, unit divisor, unit, direction that loosens the rules)
_CHECKED = (
    ("min_duration_ms", "min duration", 1000, " s", -1),
    ("min_query_count", "min query count", 1, "", -1),
    ("performance_sample_count_override", "performance sample count", 1, "", -1),
    ("server_target_latency_ns", "Server latency bound", 1e6, " ms", +1),
)


@dataclass
class MlperfOptions:
    source: Path  # a checkpoint or an exported artifact
    data: Path  # labelled ImageNet-layout folder (its val/ split when there is one)
    scenario: str = "offline"
    mode: str = "performance"
    backend: str | None = None  # for a checkpoint: the runtime to run it with (default eager)
    precision: str | None = None  # for a checkpoint (default: fp16 on CUDA, fp32 on CPU)
    device: str = "cpu"
    image_size: int | None = None  # default: the artifact's, the checkpoint's recipe's, else 224
    batch: int | None = None  # Offline batch, Server's largest batch (default 256 on CUDA, 32 on CPU)
    target_qps: float | None = None  # Server target QPS, Offline expected QPS (user.conf values)
    target_latency_ms: float | None = None  # Server latency bound (default: the official 15 ms)
    batch_timeout_ms: float | None = None  # Server: how long a batch waits to fill (default: from the bound)
    min_duration_s: float | None = None  # the options that shorten a run (NOT COMPLIANT)
    min_query_count: int | None = None
    sample_count: int | None = None
    concurrency: int = 1  # Offline/Server inference threads
    find_peak: bool = False
    peak_tries: int = 8
    fp32_top1: float | None = None  # the fp32 reference top-1 (%) for the 99% accuracy target
    threads: int | None = None  # decode threads for the sample library (default: every core)
    out: Path = Path("runs/bench-mlperf")
    progress: bool = True

    def validate(self) -> None:
        self.scenario, self.mode = self.scenario.lower(), self.mode.lower()
        need(self.scenario in SCENARIOS, f"unknown --scenario {self.scenario!r}; choose from {', '.join(SCENARIOS)}")
        need(self.mode in MODES, f"unknown --mode {self.mode!r}; choose from {', '.join(MODES)}")
        for name, value in (
            ("--batch", self.batch),
            ("--target-qps", self.target_qps),
            ("--target-latency-ms", self.target_latency_ms),
            ("--min-duration", self.min_duration_s),
            ("--min-query-count", self.min_query_count),
            ("--sample-count", self.sample_count),
            ("--peak-tries", self.peak_tries),
            ("--concurrency", self.concurrency),
            ("--fp32-top1", self.fp32_top1),
        ):
            need(value is None or value > 0, f"{name} must be > 0, got {value}")
        timeout, top1 = self.batch_timeout_ms, self.fp32_top1
        need(timeout is None or timeout >= 0, f"--batch-timeout-ms must be >= 0, got {timeout}")
        need(top1 is None or top1 <= 100, f"--fp32-top1 is a percentage (0-100], got {top1}")
        if self.scenario != "server":
            server_only = {
                "--find-peak": self.find_peak,
                "--batch-timeout-ms": self.batch_timeout_ms is not None,
                "--target-latency-ms": self.target_latency_ms is not None,
            }
            bad = [name for name, given in server_only.items() if given]
            need(not bad, f"{', '.join(bad)}: Server scenario only (this is {self.scenario})")
        need(
            self.concurrency <= 1 or self.scenario in ("offline", "server"),
            "--concurrency: Offline and Server only (SingleStream and MultiStream answer in turn)",
        )
        peak = self.find_peak
        need(not peak or self.mode == "performance", "--find-peak searches performance runs: drop --mode accuracy")
        need(not peak or self.target_qps is None, "--find-peak searches the target QPS itself: drop --target-qps")
        need(Path(self.source).exists(), f"not found: {self.source} (give a checkpoint or an exported artifact)")
        need(not Path(self.out).exists() or Path(self.out).is_dir(), f"--out {self.out} is a file; give a folder")


def official_settings(lg: Any, scenario: str) -> Any:
    """LoadGen's TestSettings for `scenario` with nothing but the mlperf.conf compiled into LoadGen."""
    settings = lg.TestSettings()
    if settings.FromConfig("", MODEL, SCENARIOS[scenario], 0) != 0:
        raise UserError(f"LoadGen could not read its built-in mlperf.conf for {MODEL} {SCENARIOS[scenario]}")
    settings.scenario = getattr(lg.TestScenario, SCENARIOS[scenario])
    return settings


@dataclass
class UserConf:
    """What a user.conf says for this system: sized from the calibration, or given."""

    offline_expected_qps: float | None = None
    server_target_qps: float | None = None
    expected_latency_s: float | None = None  # SingleStream per sample, MultiStream per query

    def apply(self, settings: Any, scenario: str) -> None:
        if scenario == "offline" and self.offline_expected_qps:
            settings.offline_expected_qps = float(self.offline_expected_qps)
        if scenario == "server" and self.server_target_qps:
            settings.server_target_qps = float(self.server_target_qps)
        if scenario == "singlestream" and self.expected_latency_s:
            settings.single_stream_expected_latency_ns = max(1, int(self.expected_latency_s * 1e9))
        if scenario == "multistream" and self.expected_latency_s:
            settings.multi_stream_expected_latency_ns = max(1, int(self.expected_latency_s * 1e9))


def loadgen_settings(lg: Any, opts: MlperfOptions, conf: UserConf) -> Any:
    """The official settings, the user.conf values, then the explicit options (each a deviation if it loosens)."""
    settings = official_settings(lg, opts.scenario)
    settings.mode = lg.TestMode.AccuracyOnly if opts.mode == "accuracy" else lg.TestMode.PerformanceOnly
    conf.apply(settings, opts.scenario)
    if opts.min_duration_s is not None:
        settings.min_duration_ms = max(1, round(opts.min_duration_s * 1000))
    if opts.min_query_count is not None:
        settings.min_query_count = int(opts.min_query_count)
    if opts.sample_count is not None:
        settings.performance_sample_count_override = int(opts.sample_count)
    if opts.target_latency_ms is not None:
        settings.server_target_latency_ns = round(opts.target_latency_ms * 1e6)
    if opts.scenario == "server":
        settings.server_max_async_queries = stop_bound(settings)
    return settings


def stop_bound(settings: Any) -> int:
    """Server: the outstanding-query count at which LoadGen ends a run early (its max_async_queries, a user.conf key
    the submission checker does not judge), so a signal can stop a Server run: Python has no LoadGen AbortTest.

    The bound cannot change a result: with one FIFO batcher, more than this many queries outstanding at once means
    more than 1% of the run's queries arrived over one latency bound ago and are still unanswered, so p99 exceeds the
    bound and the run is INVALID anyway (4x the queries a bound's time brings, plus 16, covers Poisson bursts)."""
    qps = float(settings.server_target_qps)
    queries = max(int(settings.min_query_count), math.ceil(qps * settings.min_duration_ms / 1000))
    bound_s = settings.server_target_latency_ns / 1e9
    return math.floor(0.01 * queries) + 1 + math.ceil(4 * qps * bound_s) + 16


def deviations(settings: Any, official: Any, scenario: str) -> list[str]:
    """How `settings` loosens the official values, one phrase each ('min duration 10 s (official 600 s)')."""
    out = []
    for attr, what, div, unit, looser in _CHECKED:
        mine, theirs = getattr(settings, attr), getattr(official, attr)
        if attr == "server_target_latency_ns" and scenario != "server":
            continue
        if (mine - theirs) * looser > 0:
            out.append(f"{what} {mine / div:g}{unit} (official {theirs / div:g}{unit})")
    return out


def settings_record(settings: Any) -> dict[str, Any]:
    """The settings a run asked LoadGen for, as plain values (the detail log holds what LoadGen made of them)."""
    keys = (
        "min_duration_ms",
        "min_query_count",
        "performance_sample_count_override",
        "offline_expected_qps",
        "server_target_qps",
        "server_target_latency_ns",
        "server_target_latency_percentile",
        "server_max_async_queries",
        "single_stream_expected_latency_ns",
        "single_stream_target_latency_percentile",
        "multi_stream_expected_latency_ns",
        "multi_stream_samples_per_query",
        "multi_stream_target_latency_percentile",
        "qsl_rng_seed",
        "sample_index_rng_seed",
        "schedule_rng_seed",
    )
    record: dict[str, Any] = {k: getattr(settings, k) for k in keys}
    record["scenario"] = str(settings.scenario).split(".")[-1]
    record["mode"] = str(settings.mode).split(".")[-1]
    return record
