"""`rn50 bench data`: input-pipeline img/s per data backend, total and per CPU core, with synthetic as the ceiling.

Each backend is the trainer's own loader (`rn50.data.loaders.make_loader`) with the train augmentation, timed over
`iters` batches after `warmup` batches (pipeline start-up and the first batches excluded), until the batch is on
the device. Compare a backend's img/s with `rn50 bench train`'s: below it, data loading limits training.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from rn50.bench.datapipe.config import BackendResult, DataBenchConfig, DataBenchReport, skip_reason
from rn50.bench.datapipe.report import write_outputs
from rn50.bench.datapipe.streams import Stream, time_train_step
from rn50.bench.progress import ProgressBar
from rn50.bench.report import config_dict
from rn50.bench.stop import Interrupted, StopSignals
from rn50.errors import UserError

log = logging.getLogger("rn50.bench")


def run_data_bench(cfg: DataBenchConfig) -> DataBenchReport:
    """Time each backend's train loader (and the synthetic ceiling) on `cfg.data`, in interleaved rounds.

    Every loader is built and warmed first; then each round times every backend for its share of `iters` batches,
    the order rotated round by round. A round starts with a few untimed batches per backend: the queue a
    prefetching loader filled while the others ran was made in their time, not its own. Img/s is a backend's images
    over its timed seconds; the ratios (of synthetic, vs the first backend) are medians of per-round ratios.

    With `cfg.out`, the tables are rewritten after every round; SIGINT/SIGTERM stop at once and keep the finished
    rounds (Interrupted says where)."""
    cfg.validate()
    sweep = DataSweep(cfg)
    with StopSignals("bench data") as stop, ProgressBar("bench data", sweep.units, cfg.progress, setup=True) as bar:
        try:
            sweep.set_up(bar)
            bar.mark()  # the rounds are alike: their pace says how long the rest takes, the setups' does not
            sweep.run_rounds(bar, stop)
            sweep.time_step(bar)
        except (Exception, KeyboardInterrupt) as e:
            if isinstance(e, Interrupted):
                stopped = e
            elif isinstance(e, KeyboardInterrupt) or stop.signum is not None:
                # Ctrl-C before the guard, or a loader that turned the signal's Interrupted into an error of its own
                stopped = stop.interruption(stop.signum or signal.SIGINT)
            else:
                raise
            raise stopped.adding(_stopped(sweep, stop, stopped)) from None
        finally:
            for stream in sweep.streams.values():
                stream.loader.close()
    for name in sweep.streams:
        log.info("%s: %.1f img/s", name, sweep.results[name].img_per_s)
    sweep.summarize()
    _write(sweep.report, cfg)
    return sweep.report


class DataSweep:
    """One bench data run: every backend's loader built and warmed, then timed in interleaved rounds, then the
    training step; `report` holds the finished rounds' figures."""

    def __init__(self, cfg: DataBenchConfig) -> None:
        import torch

        from rn50.bench.timing import LoadWatch, split_rounds
        from rn50.env import capture_env, resolve_device
        from rn50.recipes import get_recipe

        self.cfg = cfg
        device = resolve_device(cfg.device)
        self.device = torch.device("cuda", 0) if device == "cuda" else torch.device(device)
        base = get_recipe(cfg.recipe).replace(batch_size=cfg.batch, gpus=1, image_size=cfg.image_size)
        self.base = base.replace(workers=cfg.workers)
        self.split = split_rounds(cfg.iters, cfg.rounds)
        self.report = DataBenchReport(config=config_dict(cfg), device=str(self.device), rounds_planned=len(self.split))
        self.report.env = capture_env()  # before any work
        self.watch = LoadWatch()
        self.order = (["synthetic"] if cfg.ceiling else []) + list(dict.fromkeys(cfg.backends))
        self.streams: dict[str, Stream] = {}
        self.results: dict[str, BackendResult] = {}
        self.rounds: dict[str, list[_Round]] = {}  # every timed (backend, round), in the order run
        self.step = cfg.step if cfg.step is not None else self.device.type == "cuda"
        settle = max(2, 4 * cfg.workers)  # for the time estimate: a DataLoader's prefetch (4 per worker) or DALI's 2
        # The whole command in batches, for the time-left estimate: each backend's setup (its warmup batches,
        # start-up included) and every backend's share of every round, then the training step when it is timed.
        self.per_round = [(settle if len(self.order) > 1 else 0) + n for n in self.split]
        warm = max(1, cfg.warmup)
        self.units = len(self.order) * (warm + sum(self.per_round)) + (warm + cfg.iters if self.step else 0)

    def set_up(self, bar: ProgressBar) -> None:
        """Every backend's loader built and warmed (or skipped, with the reason)."""
        from rn50.data.loaders import make_loader

        cfg = self.cfg
        for backend in self.order:
            bar.update(f"{backend}: setting up")
            reason = None if backend == "synthetic" else skip_reason(backend, self.device.type)
            if reason:
                self.results[backend] = BackendResult(backend, "skipped", reason)
                log.info("%s: skipped (%s)", backend, reason)
            else:
                try:
                    # The classifier size does not change the loader; the dataset's classes must fit the recipe.
                    root = None if backend == "synthetic" else cfg.data
                    recipe = self.base.replace(data_backend=backend)
                    loader = make_loader(root, cfg.split, recipe, backend, self.device, workers=cfg.workers)
                except Interrupted:
                    raise
                except UserError as e:
                    if backend == "synthetic":
                        raise
                    self.results[backend] = BackendResult(backend, "skipped", str(e))
                else:
                    if hasattr(loader, "timing"):
                        loader.timing = True  # its own breakdown (pytorch-gpu: CUDA events, no device sync)
                    self.streams[backend] = Stream(loader, self.device)
                    cores = None if backend == "synthetic" else max(1, cfg.workers)
                    self.results[backend] = BackendResult(backend, "ok", cores=cores, round_img_per_s=[])
                    self.rounds[backend] = []
                    self.results[backend].setup_seconds = self.streams[backend].take(max(1, cfg.warmup))
            bar.update(advance=max(1, cfg.warmup) + sum(self.per_round) * (backend not in self.streams))
        self.report.results = [self.results[b] for b in self.order]
        if not [n for n in self.streams if n != "synthetic"]:
            why = "; ".join(f"{r.backend}: {r.reason}" for r in self.report.results if r.status == "skipped")
            raise UserError(f"no data backend could run here ({why})")

    def run_rounds(self, bar: ProgressBar, stop: StopSignals) -> None:
        from rn50.bench.timing import round_order, wait_quiet

        names = list(self.streams)
        for r, n_iters in enumerate(self.split):
            for name in round_order(names, r):
                bar.update(f"round {r + 1}/{len(self.split)}: {name}")
                stream = self.streams[name]
                # The batches its queue made while the others ran are not its own time: drained untimed.
                stream.take(getattr(stream.loader, "prefetch_batches", 0) if len(names) > 1 else 0)
                images, seconds, restarts, last, own = stream.timed(n_iters)
                if len(names) > 1:  # its workers refill their queue now, not in the next backend's window
                    wait_quiet()
                stop.check()  # should the loader have caught the signal's Interrupted
                self.rounds[name].append(_Round(images, seconds, restarts, own))
                res = self.results[name]
                res.batch_shape, res.batch_dtype = list(last.shape), str(last.dtype).replace("torch.", "")
                del last
                bar.update(advance=self.per_round[r])
            with stop.held():  # the tables of the finished rounds, never half written
                self.report.rounds_done = r + 1
                self.summarize()
                _write(self.report, self.cfg)

    def time_step(self, bar: ProgressBar) -> None:
        if self.step:
            bar.update("the training step on synthetic data")
            self.report.step = time_train_step(self.base, self.device, self.cfg.warmup, self.cfg.iters)
            bar.update(advance=max(1, self.cfg.warmup) + self.cfg.iters)

    def summarize(self) -> None:
        """Every figure and flag from the first `report.rounds_done` rounds (a backend timed in a round that did not
        finish is left out of it)."""
        from rn50.bench.timing import load_flags, ratio_stats, spread_flag, window_flags

        report, results, rounds = self.report, self.results, self.rounds
        k = report.rounds_done
        names = [n for n in rounds if n in results]
        for name in names:
            res, done = results[name], rounds[name][:k]
            res.images = sum(d.images for d in done)
            res.seconds = sum(d.seconds for d in done)
            res.epochs = sum(d.restarts for d in done)
            res.round_img_per_s = [d.images / d.seconds for d in done]
            res.img_per_s = res.images / res.seconds if res.seconds else None
            res.img_per_s_per_core = res.img_per_s / res.cores if res.cores and res.img_per_s else None
            own: dict[str, float] = {}
            for d in done:
                for key, v in d.own.items():
                    own[key] = own.get(key, 0.0) + v
            if res.images:
                res.host_us_per_image = 1e6 * own.get("host_s", 0.0) / res.images
            if own.get("images"):
                for key in ("decode_s", "augment_s"):
                    if key in own:
                        setattr(res, f"{key.removesuffix('_s')}_ms_per_image", 1000 * own[key] / own["images"])
        flags: list[str] = []
        real = [n for n in names if n != "synthetic"]
        for name in real if k else []:
            res = results[name]
            if "synthetic" in names:
                ceil = results["synthetic"].round_img_per_s
                res.vs_ceiling = ratio_stats([a / b for a, b in zip(res.round_img_per_s, ceil, strict=True)])["ratio"]
            flags += window_flags(name, res.seconds, sum(self.split[:k]))
            if name != real[0]:
                first = results[real[0]].round_img_per_s
                stats = ratio_stats([a / b for a, b in zip(res.round_img_per_s, first, strict=True)])
                res.vs_first, res.vs_first_spread = stats["ratio"], stats["ratio_spread"]
                flags += spread_flag(f"{name} vs {real[0]}", stats)
        load = self.watch.summary()
        report.env.update(loadavg_before=load["loadavg_before"], loadavg=load["loadavg_after"], load=load)
        report.flags = flags + load_flags(load)


@dataclass
class _Round:
    """One backend's share of one round: images, seconds, epoch restarts, the loader's own `timings` deltas."""

    images: int
    seconds: float
    restarts: int
    own: dict[str, float]


def _stopped(sweep: DataSweep, stop: StopSignals, e: Interrupted) -> str:
    """Keep what finished after a signal: the partial tables (when a round had finished) and where they are."""
    report = sweep.report
    n, k = report.rounds_planned, report.rounds_done
    report.interrupted = e.signal_name
    if not k:
        return "no round had finished: nothing to write"
    with stop.held():
        sweep.summarize()
        files = _write(report, sweep.cfg)
    if not files:
        return f"round {k} of {n} had finished; give --out to keep partial results"
    return f"partial results (round {k} of {n}) in {files['md']}"


def _write(report: DataBenchReport, cfg: DataBenchConfig) -> dict[str, str]:
    """The tables under cfg.out (none without one); kept in report.files."""
    if cfg.out is not None:
        report.files = write_outputs(report, Path(cfg.out))
    return report.files
