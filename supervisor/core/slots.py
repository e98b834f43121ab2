"""Run slots: how many runs of main() may be in flight, and the first-in, first-out queue of due runs that
wait for one (``[Supervisor] MaxConcurrentRuns``). ``RunQueue`` is pure bookkeeping; ``RunSlots`` is the queue
as the loop uses it: every change also moves the task's run stage (lifecycle.py), and a dropped run whose
history row is open gets that row closed.

Policies:
* A due run that finds every slot taken waits in the queue; it keeps its place and its due time, and the
  task shows as ``queued``. A task has at most one queued run: when its next slot comes while one waits, the
  waiting one is dropped as a ``missed`` row (reason ``queue``, core/missing.py) and the new one queues.
* A run whose start failed for a transient reason (too many open files, no memory or processes for a
  moment) goes back to the head of the queue with a not-before time: ``SPAWN_RETRY_FIRST_S`` doubling up to
  ``SPAWN_RETRY_MAX_S``. Its history row stays open meanwhile and the retry reuses its run id.
* A run whose start gate is closed (``[Limits] StartIfFreeMemoryMB`` / ``StartIfLoadBelow``, judged by the
  caller of ``take``) stays where it is and takes no slot, so the runs behind it are not held up; the gate
  is looked at again every ``GATE_POLL_S`` seconds and the run starts on the first turn that finds it open.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable

from ..clock import Clock
from ..execution.params import RunParams
from ..logsetup import TaskLogs
from ..model import Outcome, RunRecord, RunStage, Trigger, Upstream
from .facts import RunFacts
from .lifecycle import Lifecycle, TaskState

SPAWN_RETRY_FIRST_S = 2.0
SPAWN_RETRY_MAX_S = 60.0
GATE_POLL_S = 5.0  # how often a run held by a start gate looks at the gate again (a few reads of /proc)


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
    gate: str | None = None  # the start gate that held it back at the last look (status's ``why``)
    upstream: Upstream | None = None  # a run of [Frequency] After: the upstream run that started it
    params: RunParams = ()  # a manual run's --env, kept while its start is retried


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

    def take(
        self, *, in_flight: int, now_mono: float, held: Callable[[QueuedRun], str | None] | None = None
    ) -> list[QueuedRun]:
        """Remove and return the runs that may start now, in order, while slots last. ``held`` says why a
        run's start gate keeps it back (None: open); such a run keeps its place and takes no slot."""
        taken: list[QueuedRun] = []
        for run in list(self._queue.values()):
            if in_flight + len(taken) >= self.capacity:
                break
            if run.not_before > now_mono:
                continue
            gate = held(run) if held is not None else None
            if gate is not None:
                self._queue[run.task] = replace(run, gate=gate, not_before=now_mono + GATE_POLL_S)
                continue
            taken.append(run)
            del self._queue[run.task]
        return taken

    def next_wakeup(self, *, in_flight: int) -> float | None:
        """The monotonic time at which a queued run may start (or its gate be looked at again); None when
        none can (or none waits)."""
        if in_flight >= self.capacity or not self._queue:
            return None
        return min(run.not_before for run in self._queue.values())


class RunSlots:
    """The run queue of one loop, kept in step with every task's run stage."""

    def __init__(
        self, capacity: int, *, machine: Lifecycle, facts: RunFacts, clock: Clock, task_logs: TaskLogs
    ) -> None:
        self.queue = RunQueue(capacity)
        self._machine = machine
        self._facts = facts
        self._clock = clock
        self._task_logs = task_logs

    def __contains__(self, task: object) -> bool:
        return task in self.queue

    def get(self, task: str) -> QueuedRun | None:
        return self.queue.get(task)

    def since(self, task: str) -> datetime | None:
        """When the task's queued run became due, or None when none waits."""
        queued = self.queue.get(task)
        return queued.since if queued is not None else None

    def add(self, st: TaskState, run: QueuedRun) -> None:
        self.queue.add(run)
        self._machine.move(st, RunStage.QUEUED)

    def take(self, *, in_flight: int, held: Callable[[QueuedRun], str | None] | None = None) -> list[QueuedRun]:
        """The queued runs that may start now (their tasks stay ``queued`` until ``left`` or ``back_off``);
        ``held`` is the start gates' verdict on a run (RunQueue.take)."""
        return self.queue.take(in_flight=in_flight, now_mono=self._clock.monotonic(), held=held)

    def gate(self, task: str) -> str | None:
        """The start gate that holds the task's queued run back, or None."""
        queued = self.queue.get(task)
        return queued.gate if queued is not None else None

    def left(self, st: TaskState) -> None:
        """A taken run started, or will not start: the task no longer waits for a slot."""
        if st.name not in self.queue and st.stage in (RunStage.QUEUED, RunStage.BACKING_OFF):
            self._machine.move(st, RunStage.IDLE)

    def back_off(self, st: TaskState, run: QueuedRun, *, run_id: str) -> QueuedRun:
        """A taken run's start failed transiently: back at the head of the queue after a back-off."""
        again = self.queue.retry(run, run_id=run_id, now_mono=self._clock.monotonic())
        self._machine.move(st, RunStage.BACKING_OFF)
        return again

    def next_wakeup(self, *, in_flight: int) -> float | None:
        return self.queue.next_wakeup(in_flight=in_flight)

    def drop(self, st: TaskState, why: str) -> QueuedRun | None:
        """Forget the task's queued run (closing its history row if it has one); returns it."""
        queued = self.queue.get(st.name)
        if queued is None:
            return None
        self.queue.drop(st.name)
        self._machine.move(st, RunStage.IDLE, f"dropped: {why}")
        self.close_unstarted(st, queued, why)
        return queued

    def close_unstarted(self, st: TaskState, queued: QueuedRun, why: str) -> None:
        """A start being retried has an open history row: close it, the run will not start (a run that
        never started is final: it is not an attempt [Retry] could repeat)."""
        if queued.run_id is None:
            return
        opened = RunRecord(
            run_id=queued.run_id,
            task=st.name,
            trigger=queued.trigger,
            started=queued.since,
            due=queued.due,
            log_path=self._task_logs.path(st.name),
            attempt=queued.attempt,
            retry_of=queued.retry_of,
        )
        message = f"never started: {why} while its start was retried"
        self._facts.publish(st, opened.closed_unstarted(Outcome.KILLED, at=self._clock.now(), message=message))
