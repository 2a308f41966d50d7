"""How a benchmark stops on SIGINT (Ctrl-C) or SIGTERM (a scheduler): one exception, one guard.

The guard turns the first signal into `Interrupted` at once, except while `held()` (a table being written): then at
the end of the held block, so no file is left half written. The benchmark catches it, writes the partial tables
from what finished and re-raises with where they are; the CLI prints that one line and exits 128 + signal. Signals
after the first are ignored: the partial tables are being written. `check()` raises again after the first signal, for
the safe points after a library call that may have caught the first raise as one of its own errors. `Background`
runs work that blocks in C (LoadGen) on a thread the main thread waits for, so the signal still reaches it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from rn50.errors import UserError
from rn50.launch import STOP_SIGNALS, interrupted_exit_code


class Interrupted(UserError):
    """The benchmark was stopped by SIGTERM/SIGINT: exit 128 + signal, like an interrupted `rn50 train`."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = interrupted_exit_code(signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def adding(self, where: str) -> Interrupted:
        """The same interruption, its message followed by `where` (what was kept and where it is)."""
        return Interrupted(f"{self}; {where}", self.signum)


class StopSignals:
    """`with StopSignals("bench data") as stop:` SIGINT/SIGTERM raise Interrupted("bench data: stopped by SIGINT")
    at once, or at the end of a `with stop.held():` block that was running when it came."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.signum: int | None = None  # the first signal received
        self._holding = False
        self._pending = False  # a signal came during a held block and is raised at its end
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: the default handlers stay
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            return  # the first one is being handled: the partial tables are being written
        self.signum = signum
        if self._holding:
            self._pending = True
        else:
            raise self.interruption()

    def interruption(self, signum: int | None = None) -> Interrupted:
        signum = signum or self.signum or signal.SIGINT
        return Interrupted(f"{self.what}: stopped by {signal.Signals(signum).name}", signum)

    def check(self) -> None:
        """A safe point: raise Interrupted if a signal came (also when a library caught the first raise)."""
        if self.signum is not None:
            raise self.interruption()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A signal during the block waits for its end (then raises)."""
        before, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = before
        if not before and self._pending:
            self._pending = False
            raise self.interruption()


class Background:
    """`fn()` on a daemon thread, waited for from the main thread in short waits so that signal handlers, which Python
    runs only there, still raise: `Background(fn, "name").start().wait(tick=...)`; `error` holds what `fn` raised.

    It waits on an Event, never Thread.join: a join that a handler's exception interrupts marks the thread stopped
    while it still runs (CPython 3.11 threading._wait_for_tstate_lock, its bpo-45274 branch), and whoever trusts
    is_alive() then frees what the thread still uses."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                fn()
            except BaseException as e:
                self.error = e
            finally:
                self.done.set()

        self._thread = threading.Thread(target=run, name=name, daemon=True)

    def start(self) -> Background:
        self._thread.start()
        return self

    def wait(self, period: float = 0.25, tick: Callable[[], None] = lambda: None) -> None:
        while not self.done.wait(period):
            tick()
