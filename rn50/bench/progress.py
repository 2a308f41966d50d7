"""The benchmarks' one progress bar: rich on stderr, with the estimated time left for the whole command.

A benchmark counts its whole plan in `total` units before it starts (builds or setups, timed rounds or launches,
checks after) and advances them as each piece finishes, so the estimate is for the whole command, not for the piece
that runs now: the units left at the pace since the mark (after the setup, whose cost is no guide to the rest).
"""

from __future__ import annotations

from typing import Any

from rich.progress import ProgressColumn, Task
from rich.text import Text


class EtaColumn(ProgressColumn):
    """'about 1:05 left': the units left at the pace since the bar's mark (its start, or where `ProgressBar.mark()`
    set it: after a setup whose cost says nothing of what follows); 'estimating' until a unit is done after it."""

    def render(self, task: Task) -> Text:
        done, total, elapsed = task.completed, task.total, task.elapsed
        mark = task.fields.get("mark", (0.0, 0.0))
        if mark is None:  # the setup still runs
            return Text("time left: estimating", style="progress.remaining")
        mark_s, mark_done = mark
        pace_done, pace_s = done - mark_done, (elapsed or 0.0) - mark_s
        if not total or pace_s <= 0 or pace_done <= 0:
            return Text("time left: estimating", style="progress.remaining")
        left = max(0.0, pace_s * (total - done) / pace_done)
        m, s = divmod(int(round(left)), 60)
        h, m = divmod(m, 60)
        text = f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
        return Text(f"about {text} left", style="progress.remaining")


class ProgressBar:
    """`with ProgressBar("bench data", total) as bar: bar.update("pytorch: round 1/5", advance=1)`.

    `count`: show "done/total" (whole units such as launches) rather than a percentage. `setup`: no estimate until
    `mark()` (called when the setup is done). Disabled, or with stderr not a terminal, it does nothing.
    """

    def __init__(self, what: str, total: float, enabled: bool = True, count: bool = False, setup: bool = False) -> None:
        self.what, self.total, self.enabled, self.count, self.setup = what, total, enabled, count, setup
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        from rich.console import Console

        console = Console(stderr=True)
        if self.enabled and console.is_terminal:  # to a file or pipe a live bar only leaves blank lines
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn() if self.count else TaskProgressColumn(),
                TimeElapsedColumn(),
                EtaColumn(),
                console=console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total, mark=None if self.setup else (0.0, 0.0))
        return self

    def update(self, text: str | None = None, advance: float = 0.0, done: float | None = None) -> None:
        """Say what runs now (`text`), and count `advance` more units done (or set `done`)."""
        if self._bar is None:
            return
        kwargs: dict[str, Any] = {"advance": advance} if done is None else {"completed": done}
        if text:
            kwargs["description"] = f"{self.what}: {text}"
        self._bar.update(self._task, **kwargs)

    def mark(self) -> None:
        """Estimate the time left from here on: what ran before (starting workers, compiling) is not the pace of
        what follows."""
        if self._bar is not None:
            task = self._bar.tasks[0]
            self._bar.update(self._task, mark=(task.elapsed or 0.0, task.completed))

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
