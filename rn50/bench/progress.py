"""A progress bar column with the estimated time left for the whole command (elapsed x remaining / done)."""

from __future__ import annotations

from rich.progress import ProgressColumn, Task
from rich.text import Text


class EtaColumn(ProgressColumn):
    """'about 1:05 left' from the fraction done so far ('estimating' before the first step finishes)."""

    def render(self, task: Task) -> Text:
        done, total, elapsed = task.completed, task.total, task.elapsed
        if not total or not elapsed or done <= 0:
            return Text("time left: estimating", style="progress.remaining")
        left = max(0.0, elapsed * (total - done) / done)
        m, s = divmod(int(round(left)), 60)
        h, m = divmod(m, 60)
        text = f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
        return Text(f"about {text} left", style="progress.remaining")
