"""A real supervisor whose control socket answers late, for load tests:

    python -m tests.support.slowed --home HOME --delay status=0.02,0.02,4 --delay run-now=6

Each ``--delay COMMAND=S[,S...]`` gives the seconds the socket waits before it computes the reply to that
command, used in turn and cycling (answers run concurrently, one thread per connection). The delay goes in
through the service's ``before_answer`` seam; the product itself never waits.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from supervisor.paths import Paths
from supervisor.service import serve


def parse_delays(items: list[str]) -> dict[str, Iterator[float]]:
    delays: dict[str, Iterator[float]] = {}
    for item in items:
        command, _, values = item.partition("=")
        delays[command] = itertools.cycle([float(v) for v in values.split(",")])
    return delays


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slowed")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--delay", action="append", default=[], metavar="COMMAND=S[,S...]")
    args = parser.parse_args(argv)
    delays = parse_delays(args.delay)
    lock = threading.Lock()

    def before_answer(command: str) -> None:
        cycle = delays.get(command)
        if cycle is None:
            return
        with lock:  # the cycle is shared by the socket's answering threads
            seconds = next(cycle)
        time.sleep(seconds)  # the injected slowness itself: what this helper exists for

    return serve(Paths(args.home.resolve()), before_answer=before_answer)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
