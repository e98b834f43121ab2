"""Run slots: how many runs of main() may be in flight, and the first-in, first-out queue of due runs that
wait for one (``[Supervisor] MaxConcurrentRuns``). Pure bookkeeping; the loop owns it.

Policies:
* A due run that finds every slot taken waits in the queue; it keeps its place and its due time, and the
  task shows as ``queued``. A task has at most one queued run: a further due run while one waits is recorded
  as skipped by the loop, like a due run while the task is running.
* A run whose start failed for a transient reason (too many open files, no memory or processes for a
  moment) goes back to the head of the queue with a not-before time: ``SPAWN_RETRY_FIRST_S`` doubling up to
  ``SPAWN_RETRY_MAX_S``. Its history row stays open meanwhile and the retry reuses its run id.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from ..model import Trigger

SPAWN_RETRY_FIRST_S = 2.0
SPAWN_RETRY_MAX_S = 60.0


@dataclass(frozen=True)
class QueuedRun:
    task: str
    trigger: Trigger
    due: datetime | None
    since: datetime  # when it became due (status shows it)
    attempt: int = 1  # [Retry]: which attempt of the run this is
    retry_of: str | None = None  # [Retry]: the first attempt's run id
    run_id: str | None = None  # set once a start failed transiently: its history row is already open
    spawn_failures: int = 0  # transient spawn failures so far
    not_before: float = 0.0  # monotonic time before which it must not start


class RunQueue:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._queue: dict[str, QueuedRun] = {}  # insertion order is the order of service

    def __contains__(self, task: object) -> bool:
        return task in self._queue

    def __len__(self) -> int:
        return len(self._queue)

    def get(self, task: str) -> QueuedRun | None:
        return self._queue.get(task)

    def add(self, run: QueuedRun) -> None:
        self._queue[run.task] = run

    def drop(self, task: str) -> None:
        self._queue.pop(task, None)

    def retry(self, run: QueuedRun, *, run_id: str, now_mono: float) -> QueuedRun:
        """Put ``run`` back at the head of the queue after a transient spawn failure; return the entry."""
        delay = min(SPAWN_RETRY_FIRST_S * 2**run.spawn_failures, SPAWN_RETRY_MAX_S)
        again = replace(run, run_id=run_id, spawn_failures=run.spawn_failures + 1, not_before=now_mono + delay)
        self._queue = {run.task: again, **{k: v for k, v in self._queue.items() if k != run.task}}
        return again

    def take(self, *, in_flight: int, now_mono: float) -> list[QueuedRun]:
        """Remove and return the runs that may start now, in order, while slots last."""
        taken: list[QueuedRun] = []
        for run in list(self._queue.values()):
            if in_flight + len(taken) >= self.capacity:
                break
            if run.not_before <= now_mono:
                taken.append(run)
                del self._queue[run.task]
        return taken

    def next_wakeup(self, *, in_flight: int) -> float | None:
        """The monotonic time at which a queued run may start; None when none can (or none waits)."""
        if in_flight >= self.capacity or not self._queue:
            return None
        return min(run.not_before for run in self._queue.values())
