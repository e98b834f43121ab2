"""``run-now NAME --wait``: follow one run to its end from outside the supervisor.

The CLI has two views of a run, both read-only: the task log (its lines carry ``[run ID]``) and the
history database (the run's row gets its outcome when the run ends). Policy:

* The log is opened *before* the run is requested, so no line of the run is missed; only lines tagged with
  the run's id are passed on.
* The history row is the source of truth for the outcome. The supervisor writes the row before it logs the
  run's last line (``[run ID] OUTCOME in …``), so once the row has its outcome the follower keeps reading the
  log until that line shows up, for at most ``LOG_GRACE_S``; runs that start no process (``testing``,
  ``skipped``, ``env-failed``) have no such line.
* ``timeout`` bounds the whole wait; the run itself is not touched when the wait gives up (its own
  TimeoutSeconds applies), and neither is it on Ctrl-C.
* A supervisor that dies without closing the row (``kill -9``) would leave the wait hanging: when no
  supervisor holds the home any more and the row is still open, the wait ends with an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import TaskAutomationError
from ..history.store import HistoryStore, record_to_json
from .follow import LogFollower

POLL_S = 0.1
LOG_GRACE_S = 3.0
NO_PROCESS_OUTCOMES = frozenset({"testing", "skipped", "env-failed"})


class WaitTimeout(TaskAutomationError):
    """The run did not finish within ``--timeout``."""


@dataclass(frozen=True)
class Waiting:
    """What to wait for and the seams: the clock, the pause between looks, where lines go."""

    run_id: str
    task: str
    database: Path
    monotonic: Callable[[], float]
    pause: Callable[[float], None]
    emit: Callable[[str], None]
    supervisor_alive: Callable[[], bool]


def wait_for_run(waiting: Waiting, follower: LogFollower, *, timeout: float | None) -> dict[str, Any]:
    """Pass on the run's log lines until it has ended; return its history entry (``history --json`` shape)."""
    tag = f"[run {waiting.run_id}]"
    start = waiting.monotonic()
    finished: dict[str, Any] | None = None
    finished_at = 0.0
    emitted: list[str] = []
    records = HistoryStore(waiting.database, readonly=True)
    try:
        while True:
            for line in follower.read_lines():
                if tag in line:
                    waiting.emit(line)
                    emitted.append(line)
            now = waiting.monotonic()
            if finished is None:
                record = records.run(waiting.run_id)
                if record is not None and record.outcome is not None:
                    finished, finished_at = record_to_json(record), now
                    continue  # read the log once more: the last line may already be there
                if not waiting.supervisor_alive():
                    record = records.run(waiting.run_id)  # it may have closed the row just before it exited
                    if record is None or record.outcome is None:
                        raise TaskAutomationError(
                            f"the supervisor stopped before run {waiting.run_id} of "
                            f"{waiting.task!r} finished; it will be marked interrupted"
                        )
                    continue
            else:
                last_line = f"{tag} {finished['outcome']} in "
                if (
                    finished["outcome"] in NO_PROCESS_OUTCOMES
                    or any(last_line in line for line in emitted)
                    or now - finished_at >= LOG_GRACE_S
                ):
                    return finished
            if timeout is not None and now - start >= timeout:
                raise WaitTimeout(
                    f"run {waiting.run_id} of {waiting.task!r} has not finished after "
                    f"{timeout:g} s; it goes on (see `history {waiting.task}`)"
                )
            waiting.pause(POLL_S)
    finally:
        records.close()
