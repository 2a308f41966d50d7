"""`python -m rn50.bench.scaling --worker SPEC.json`: what torchrun runs in every rank of a bench train launch."""

from __future__ import annotations

import sys
from pathlib import Path

from rn50.bench.scaling.worker import run_worker


def main(argv: list[str] | None = None) -> None:
    from rn50.launch import as_rank

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--worker":
        as_rank(lambda: run_worker(Path(argv[1])))()
        return
    raise SystemExit("usage: python -m rn50.bench.scaling --worker SPEC.json (started by `rn50 bench train`)")


if __name__ == "__main__":
    main()
