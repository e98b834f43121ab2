"""Server-sent events for a run page: the run's log lines as they are written, then its outcome.

Policy: the stream first sends every line the run has so far (from the rotated logs and the current one),
then follows the current log, polling every :data:`POLL_S` (a log line reaches the page well within 200 ms),
and asks the history every :data:`STATE_EVERY_S` whether the run has ended. When it has, the lines written
up to then are sent, then one ``end`` event with the outcome, and the stream closes. A comment line every
:data:`KEEPALIVE_S` keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Callable

from ..model import RunRecord
from .runlog import LogFollower, log_files, read_run_lines

POLL_S = 0.05
STATE_EVERY_S = 0.5
KEEPALIVE_S = 15.0


def sse(event: str, data: str) -> str:
    # A data field ends at a newline: each line of the payload becomes its own data line.
    body = "".join(f"data: {part}\n" for part in data.split("\n"))
    return f"event: {event}\n{body}\n"


async def run_events(log: Path, run_id: str, *, lookup: Callable[[], RunRecord | None]) -> AsyncIterator[str]:
    """The event stream of one run (see the module's policy)."""
    rotated = log_files(log)[:-1]
    earlier = []
    for path in rotated:
        earlier.extend(read_run_lines(path, run_id))
    follower = LogFollower(log, run_id, from_start=True)
    try:
        for line in earlier:
            yield sse("line", line)
        loop = asyncio.get_running_loop()
        next_state = next_alive = loop.time()
        while True:
            for line in follower.poll():
                yield sse("line", line)
            now = loop.time()
            if now >= next_state:
                next_state = now + STATE_EVERY_S
                record = await asyncio.to_thread(lookup)
                if record is None or record.outcome is not None:
                    for line in follower.poll():  # what was written before the row was closed
                        yield sse("line", line)
                    outcome = record.outcome.value if record is not None and record.outcome else "unknown"
                    yield sse(
                        "end", json.dumps({"outcome": outcome, "duration_s": record.duration_s if record else None})
                    )
                    return
            if now >= next_alive:
                next_alive = now + KEEPALIVE_S
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_S)
    finally:
        follower.close()
