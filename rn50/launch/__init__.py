"""The one launcher: `rn50 train --gpus/--nnodes` and `rn50 bench train` run their ranks under torchrun.

    rn50 (parent) --> python -m rn50.launch (torch.distributed.run's own `run()`) --> ranks: python -m <module> ...

The parent starts the launcher in its own session with a parent-death signal (SIGTERM), and forwards one SIGTERM or
SIGINT to it: torchrun then stops its ranks' process groups (DataLoader workers included) with that signal, waits
`--shutdown-timeout` seconds, and SIGKILLs what is left. Each rank asks for SIGKILL when torchrun dies under it, so no
launcher or rank outlives a parent killed by any signal, SIGKILL included. Rank failures come from torchelastic's
records: ranks run under `errors.record` (each writes its exception to TORCHELASTIC_ERROR_FILE), torchrun collects
them (rank, exit code, message) into a ChildFailedError, and the launcher writes those to a JSON file the parent reads.
Torchrun does the rest: `--max-restarts` elastic restarts, c10d rendezvous across nodes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rn50.errors import RankFailed, UserError, first_line, need

log = logging.getLogger("rn50.launch")

PR_SET_PDEATHSIG = 1
SHUTDOWN_TIMEOUT_S = 30  # torchrun's SIGTERM -> SIGKILL grace for its ranks (its default), and ours for it
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
LAUNCHED_ENV = "RN50_LAUNCHED"  # set for ranks started by `launch()`: the parent prints their errors
USER_LOG_LEVELS = "RN50_USER_LOG_LEVELS"  # the user's LOGLEVEL/TORCH_CPP_LOG_LEVEL, quieted in the launcher only
QUIET_LAUNCHER = {"LOGLEVEL": "ERROR", "TORCH_CPP_LOG_LEVEL": "FATAL"}
# What a healthy rank raises when a peer died under it (gloo, NCCL): a consequence, never the cause.
_PEER_LOST = re.compile(r"closed by peer|connection reset|remote worker|remote process|peer.*(died|crash)", re.I)
# torchelastic records a rank that torchrun stopped (after another rank failed) as this exception: a consequence.
_STOPPED = re.compile(r"Signal \d+ \(SIG(TERM|INT|HUP)\) received by PID")


def interrupted_exit_code(signum: int) -> int:
    """The exit code of a run stopped by a signal that saved its checkpoint: 128 + signal (143 SIGTERM, 130 SIGINT).

    What a shell, SLURM and Kubeflow's ExitCode restart policy read as "terminated by that signal, retryable",
    distinct from 1 (a failure) and 2 (bad input).
    """
    return 128 + int(signum)


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def set_parent_death_signal(sig: int) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (prctl PR_SET_PDEATHSIG); no-op elsewhere."""
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ


def _restore_user_log_levels() -> None:
    """The user's LOGLEVEL/TORCH_CPP_LOG_LEVEL back in os.environ, which torchrun copies into each rank's."""
    for key, value in json.loads(os.environ.pop(USER_LOG_LEVELS, "{}")).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def as_rank(main: Callable[[], Any]) -> Callable[[], Any]:
    """`main` as a torchrun rank: killed with torchrun, its uncaught exception recorded for the launcher."""
    if not under_torchrun():
        return main
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() == 1:  # torchrun died before the line above: follow it
        os._exit(1)
    from torch.distributed.elastic.multiprocessing.errors import record

    recorded = record(main)  # writes the exception to this rank's error file, then re-raises it

    def run() -> Any:
        try:
            return recorded()
        except Exception as e:
            if not _PEER_LOST.search(str(e)):
                raise  # a real error keeps its traceback (the launcher also names it in one line)
            # A consequence of another rank's death, not a cause: one line, not a traceback per surviving rank.
            first = first_line(e, 300)
            sys.stderr.write(f"rn50: rank {os.environ.get('RANK', '?')}: a peer rank is gone ({first}); stopping\n")
            raise SystemExit(1) from None

    return run


def record_rank_error(exc: BaseException) -> bool:
    """Under torchrun, write `exc` (e.g. a UserError the CLI turns into one line) to this rank's error file.

    True when an rn50 parent will print it (so the rank need not print it once more per rank).
    """
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return False
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(exc)
    return os.environ.get(LAUNCHED_ENV) == "1"


# ---------------------------------------------------------------- the parent's side


@dataclass(frozen=True)
class Launch:
    """One torchrun launch of `python -m <module> <args...>`, `nproc` ranks on this node."""

    module: list[str]  # ["rn50", "train", DATA, ...] or ["rn50.bench.scaling", "--worker", SPEC]
    nproc: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None  # HOST:PORT of the rendezvous (node 0 hosts it); None: standalone on one node
    rdzv_id: str = "rn50"
    rdzv_timeout: int = 300  # seconds a node waits for the others (and for a store answer)
    max_restarts: int = 0
    shutdown_timeout: int = SHUTDOWN_TIMEOUT_S
    env: dict[str, str] | None = None

    def validate(self) -> None:
        need(self.nproc >= 1, f"--gpus must be >= 1, got {self.nproc}")
        need(self.nnodes >= 1, f"--nnodes must be >= 1, got {self.nnodes}")
        need(
            0 <= self.node_rank < self.nnodes,
            f"--node-rank must be in [0, {self.nnodes - 1}] for --nnodes {self.nnodes}, got {self.node_rank}",
        )
        need(self.max_restarts >= 0, f"--max-restarts must be >= 0, got {self.max_restarts}")
        need(self.rdzv_timeout >= 1, f"--rdzv-timeout must be >= 1 second, got {self.rdzv_timeout}")
        need(
            self.nnodes == 1 or self.rdzv_endpoint is not None,
            "multi-node runs need --rdzv-endpoint HOST:PORT (node 0's address, the same on every node)",
        )
        if self.rdzv_endpoint is not None:
            m = re.fullmatch(r"([^\s:]+):(\d{1,5})", self.rdzv_endpoint)
            need(
                m is not None and 0 < int(m.group(2)) < 65536,
                f"--rdzv-endpoint must look like HOST:PORT, got {self.rdzv_endpoint!r}",
            )

    def torchrun_args(self) -> list[str]:
        """torchrun's argv (after `python -m torch.distributed.run`)."""
        self.validate()
        args = [
            f"--nproc-per-node={self.nproc}",
            f"--nnodes={self.nnodes}",
            f"--max-restarts={self.max_restarts}",
            f"--shutdown-timeout={self.shutdown_timeout}",
        ]
        if self.rdzv_endpoint is None:
            args.append("--standalone")  # a free port on this host: two runs on one machine do not collide
        else:
            # Node 0 hosts the rendezvous store, the others only connect: a port in use fails at once on node 0
            # instead of node 0 joining a stranger's server. torchrun's c10d rendezvous orders global ranks itself.
            conf = (
                f"is_host={int(self.node_rank == 0)},join_timeout={self.rdzv_timeout},read_timeout={self.rdzv_timeout}"
            )
            args += [  # (no --node-rank: torchrun uses it only with its static rendezvous)
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={self.rdzv_endpoint}",
                # The node count is part of the id: nodes started with different --nnodes never join one
                # rendezvous (c10d would otherwise complete it with whichever count its host asked for).
                f"--rdzv-id={self.rdzv_id}-{self.nnodes}nodes",
                f"--rdzv-conf={conf}",
            ]
        return [*args, "-m", *self.module]


@dataclass
class LaunchResult:
    returncode: int
    signal: int | None = None  # the stop signal forwarded to the launcher, if any
    failures: list[dict[str, Any]] = field(default_factory=list)  # one per failed rank (torchelastic's records)
    error: str | None = None  # the launcher's own error (rendezvous), one line
    restarts: int = 0

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def root_cause(self) -> dict[str, Any] | None:
        """The failure that explains the others: a real exception, else a rank killed by a signal, else the first."""
        if not self.failures:
            return None

        def order(f: dict[str, Any]) -> tuple[int, float]:
            message = f.get("message") or ""
            if f.get("recorded") and not _PEER_LOST.search(message) and not _STOPPED.search(message):
                rank = 0 if f["exitcode"] > 0 else 1  # raised on its own before torchrun stopped it
            elif f["exitcode"] < 0 and f["exitcode"] != -signal.SIGTERM:
                rank = 2  # killed from outside (SIGKILL, OOM killer, segfault); SIGTERM is torchrun stopping peers
            else:
                rank = 3
            return rank, f.get("timestamp") or 0

        return min(self.failures, key=order)

    def describe(self, what: str) -> str:
        """One line: which rank failed on which host, and how."""
        if self.error:
            return f"{what}: {self.error}"
        f = self.root_cause()
        if f is None:
            return f"{what}: torchrun {_exit_reason(self.returncode)}"
        where = f"rank {f['rank']} (host {f['host']}, pid {f['pid']})"
        how = _exit_reason(f["exitcode"])
        if f.get("recorded"):
            how += f": {f['message']}"
        return f"{what}: {where} {how}"

    def raise_for_failure(self, what: str) -> None:
        """A rank's UserError becomes the same one line here; any other failure becomes RankFailed (exit 1)."""
        if self.ok or self.signal is not None:
            return
        f = self.root_cause()
        if f is not None and f.get("recorded") and f.get("type") == "UserError":
            raise UserError(f["message"].removeprefix("UserError: "))
        if self.error and self.error.startswith("rendezvous"):
            raise UserError(f"{what}: {self.error}")
        raise RankFailed(self.describe(what))


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "died without an exit code"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _preexec(parent: int) -> Callable[[], None]:
    _prctl()  # resolved here: no dynamic-loader lookup in the forked child, where another thread may hold its lock

    def run() -> None:
        set_parent_death_signal(signal.SIGTERM)  # graceful: torchrun stops its ranks, which save a checkpoint
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return run


def launch(spec: Launch, stdout=None, timeout: float | None = None) -> LaunchResult:
    """Run `spec` under torchrun and wait; returns how it ended. A SIGTERM/SIGINT to this process is forwarded once.

    `timeout`: seconds before the run counts as hung and is stopped (result.returncode is then None-like: -1).
    """
    cmd = spec.torchrun_args()
    env = {**(os.environ if spec.env is None else spec.env), LAUNCHED_ENV: "1"}
    # torchrun's own log lines (signal received, closing pids; C++ socket errors with their stack when a rendezvous
    # fails) would bury the one line we print. Quiet in the launcher only: it restores the user's levels for ranks.
    env[USER_LOG_LEVELS] = json.dumps({k: env.get(k) for k in QUIET_LAUNCHER})
    env.update(QUIET_LAUNCHER)
    with tempfile.TemporaryDirectory(prefix="rn50-launch-") as tmp:
        report = Path(tmp) / "failures.json"
        argv = [sys.executable, "-m", "rn50.launch", str(report), "--", *cmd]
        log.debug("launching: %s", " ".join(argv))
        proc = subprocess.Popen(
            argv, env=env, stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
            start_new_session=True, preexec_fn=_preexec(os.getpid()),
        )  # fmt: skip
        got: list[int] = []

        def forward(signum: int, frame: Any) -> None:
            if not got:
                got.append(signum)
                _signal_group(proc.pid, signum)

        old = {}
        for sig in STOP_SIGNALS:
            try:
                old[sig] = signal.signal(sig, forward)
            except ValueError:  # not the main thread: no forwarding (the parent-death signal still holds)
                pass
        hung = False
        try:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                hung = True
                _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=spec.shutdown_timeout + 15)
            except subprocess.TimeoutExpired:  # torchrun itself is stuck: its ranks follow it (PDEATHSIG SIGKILL)
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        data = json.loads(report.read_text()) if report.exists() else {}
    result = LaunchResult(
        returncode=-1 if hung else proc.returncode,
        signal=got[0] if got else None,
        failures=data.get("failures", []),
        error=data.get("error"),
        restarts=data.get("restarts", 0),
    )
    return result


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
