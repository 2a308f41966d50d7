"""The run directory: recipe.json, env.json, metrics.jsonl, checkpoints/, bad_files.txt and report.md.

Only global rank 0 writes; other ranks get a RunDir whose writes do nothing.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from rn50.env import capture_env
from rn50.errors import UserError, need
from rn50.io import atomic_write_json, atomic_write_text, make_folder, remove_stale_temporaries, write_error
from rn50.recipes import Recipe

log = logging.getLogger("rn50.train")


def default_out(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    def __init__(self, out: Path, writer: bool) -> None:
        self.out = Path(out)
        self.writer = writer
        self.checkpoints = self.out / "checkpoints"
        self.metrics_path = self.out / "metrics.jsonl"

    def prepare(self, recipe: Recipe, resuming: bool, extra: dict[str, Any]) -> None:
        """Create the folder; refuse to mix a new run into a folder that already holds one."""
        if not self.writer:
            return
        need(not self.out.exists() or self.out.is_dir(), f"--out {self.out} exists and is not a folder")
        if not resuming and (self.metrics_path.exists() or self.checkpoints.exists()):
            raise UserError(
                f"{self.out} already holds a run; pass --resume auto to continue it, or choose another --out"
            )
        make_folder(self.checkpoints, f"--out {self.out}")
        # A run killed mid-write (kill -9, power loss) leaves its temporaries; this process owns the run now.
        for folder in (self.out, self.checkpoints):
            for stale in remove_stale_temporaries(folder):
                log.info("removed %s, left by an interrupted write", stale)
        atomic_write_json(self.out / "recipe.json", {**recipe.to_dict(), **extra})
        atomic_write_json(self.out / "env.json", capture_env())

    def log(self, record: dict[str, Any]) -> None:
        if not self.writer:
            return
        line = json.dumps({"time": round(time.time(), 3), **record}) + "\n"
        try:
            with open(self.metrics_path, "a") as f:
                size = f.tell()
                try:
                    f.write(line)
                    f.flush()
                except OSError:
                    f.truncate(size)  # no half line: metrics.jsonl stays parseable
                    raise
        except OSError as e:
            raise (write_error(self.metrics_path, e) or e) from None

    def write_bad_files(self, bad: list[tuple[str, str]]) -> None:
        if self.writer and bad:
            atomic_write_text(self.out / "bad_files.txt", "".join(f"{p}\t{why}\n" for p, why in bad))

    def check_skipped(self, loaders: dict[str, Any], max_share: float) -> None:
        """Stop the run (bad_files.txt written first) once a split's undecodable files pass `max_share` of it."""
        from rn50.data.loaders import skipped_error

        for split, loader in loaders.items():
            message = skipped_error(loader, max_share, split) if loader is not None else None
            if message:
                bad = sorted({b for other in loaders.values() if other is not None for b in other.bad_files})
                self.write_bad_files(bad)
                raise UserError(f"{message}; the list is in {self.out / 'bad_files.txt'}")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def write_report(self, recipe: Recipe, summary: dict[str, Any], path: Path | None = None) -> None:
        """report.md: what ran, on what, how fast, how accurate; also written to --report-file if given."""
        if not self.writer:
            return
        records = self.read_metrics()
        vals = [r for r in records if r.get("type") == "val"]
        trains = [r for r in records if r.get("type") == "train"]
        env = json.loads((self.out / "env.json").read_text()) if (self.out / "env.json").exists() else {}
        device = ", ".join(g["name"] for g in env.get("gpus", [])) or f"CPU: {env.get('cpu', '?')}"
        lines = [
            f"# rn50 train: {recipe.name}",
            "",
            f"- data: `{summary.get('data')}`; backend {recipe.data_backend}; "
            f"{summary.get('world_size', 1)} process(es)",
            f"- device: {device}; torch {env.get('packages', {}).get('torch', '?')}; "
            f"precision {summary.get('precision')}",
            f"- epochs {recipe.epochs}, batch {recipe.batch_size}/device, optimizer batch {recipe.global_batch}, "
            f"lr {recipe.lr:g}, {recipe.lr_schedule} after {recipe.warmup_epochs:g} warmup epochs",
            f"- status: {summary.get('status')}; training time {summary.get('train_seconds', 0):.1f} s",
        ]
        if trains:
            ips = [r["img_per_s"] for r in trains[1:] or trains]
            lines.append(
                f"- train img/s (all ranks, logging intervals after the first): mean {sum(ips) / len(ips):.1f}"
            )
        if summary.get("bad_files"):
            lines.append(f"- {summary['bad_files']} undecodable image(s) skipped: see bad_files.txt")
        if vals:
            from rn50.tables import markdown_table

            shown = [
                {**r, "val_loss": f"{r['val_loss']:.4f}", "top1": f"{r['top1']:.2f}", "top5": f"{r['top5']:.2f}"}
                for r in vals
            ]
            lines += [
                "",
                markdown_table(
                    shown, [("epoch", "epoch"), ("val_loss", "val loss"), ("top1", "top-1"), ("top5", "top-5")]
                ).rstrip(),
            ]
            best = max(vals, key=lambda r: r["top1"])
            lines += ["", f"Best top-1 {best['top1']:.2f}% at epoch {best['epoch']} (n = {best['images']} images)."]
        text = "\n".join(lines) + "\n"
        atomic_write_text(self.out / "report.md", text)
        if path is not None:
            atomic_write_text(path, text)
