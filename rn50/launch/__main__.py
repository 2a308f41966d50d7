"""The launcher process, `python -m rn50.launch REPORT.json -- TORCHRUN_ARGS...`: torchrun's own run(), with rank
failures and rendezvous errors written to REPORT for the parent (rn50.launch.launch) to print as one line."""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from rn50.errors import first_line
from rn50.launch import _restore_user_log_levels, interrupted_exit_code


def _failure_record(rank: int, failure: Any) -> dict[str, Any]:
    data = failure.error_file_data or {}
    message = data.get("message")
    recorded = bool(message)
    text = failure.message if recorded else ""
    if isinstance(message, dict):
        text = message.get("message", text)
    text = first_line(str(text))
    return {
        "rank": rank,
        "local_rank": failure.local_rank,
        "pid": failure.pid,
        "exitcode": failure.exitcode,
        "host": socket.gethostname(),
        "timestamp": failure.timestamp,
        "recorded": recorded,
        "type": text.split(":", 1)[0] if recorded else None,
        "message": text,
        "error_file": failure.error_file,
    }


def _rendezvous_error(e: BaseException, endpoint: str, conf: str) -> str:
    """One line for a failed rendezvous: what happened and what to check."""
    timeout = dict(kv.split("=", 1) for kv in conf.split(",") if "=" in kv).get("join_timeout", "?")
    name = type(e).__name__
    if name == "RendezvousTimeoutError":
        return (
            f"rendezvous at {endpoint}: the nodes did not all join within {timeout} s (--rdzv-timeout); start every "
            "node with the same --nnodes and --rdzv-endpoint, each with its own --node-rank"
        )
    cause = f" ({first_line(e.__cause__)})" if e.__cause__ is not None else ""
    if name == "RendezvousConnectionError":
        return (
            f"rendezvous at {endpoint}: cannot host or reach the store{cause}; node 0 hosts it on that port, so "
            "check the port is free on node 0 and that node 0 is up and reachable from this node"
        )
    return f"rendezvous at {endpoint} failed: {name}: {first_line(e)}{cause}"


def _launcher_main(argv: list[str]) -> int:
    """`python -m rn50.launch REPORT.json -- TORCHRUN_ARGS...`: torchrun's run(), failures written to REPORT."""
    report, targs = Path(argv[0]), argv[2:]
    # Load torch while this process's env still says quiet (see launch()): torch reads TORCH_CPP_LOG_LEVEL once, at
    # import. `import rn50` no longer loads torch, so this import must come before the ranks get the user's levels.
    import torch  # noqa: F401

    _restore_user_log_levels()
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import parse_args, run

    for name in ("torch.distributed.elastic", "torch.distributed.run"):  # failures: reported by the parent
        logging.getLogger(name).setLevel(logging.CRITICAL)
    args = parse_args(targs)
    out: dict[str, Any] = {}
    code = 0
    try:
        run(args)
    except ChildFailedError as e:
        out["failures"] = [_failure_record(rank, f) for rank, f in sorted(e.failures.items())]
        code = 1
    except SignalException as e:  # torchrun has stopped the ranks with this signal (they saved a checkpoint)
        code = interrupted_exit_code(e.sigval)
    except RendezvousError as e:
        out["error"] = _rendezvous_error(e, args.rdzv_endpoint, args.rdzv_conf)
        code = 1
    except Exception as e:  # noqa: BLE001 - any other launcher error becomes one line for the parent
        out["error"] = f"torchrun failed: {type(e).__name__}: {first_line(e)}"
        code = 1
    if out:
        report.write_text(json.dumps(out))
    return code


if __name__ == "__main__":
    sys.exit(_launcher_main(sys.argv[1:]))
