"""Manual runs (``run-now``): the answer to a request, and the runs promised to a task that is still loading.

Policy for ``run-now NAME`` (the CLI, the dashboard and its API all send the same control request):

* A loaded task (scheduled or paused) starts its run at once, unless a run of it is in flight or waits for a
  run slot, or the task runs in Testing mode (then the run is confirmed, as a scheduled one is).
* A task still loading (``loading``, ``env-building``, ``initializing``) is *promised* a run: the request is
  accepted at once with the run id the run will have, and the run starts in the first loop turn after the
  task is loaded, like any manual run (it does not move the schedule; MaxConcurrentRuns does not hold it
  back). It starts before the turn's due runs: a due run that finds it in flight is skipped, as it would be
  behind any manual run. A second request while one is promised answers the same run id.
* A promise the task cannot keep is recorded at once as a run that never started, outcome ``killed``, with a
  message that says why (its env failed, it went to ``error``, it was disabled or removed, the supervisor
  stopped), so ``run-now --wait`` always ends. Promises live in memory: a crash of the supervisor forgets
  them, like a run that never started.
* Every other task (``error``, ``env-failed``, ``disabled``) is refused with the reason; so is any task while
  the supervisor shuts down.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator, Mapping

from ..execution.params import RunParams
from ..model import Outcome, RunRecord, Trigger
from .lifecycle import TaskState, is_gone, is_loaded, is_loading

# Why a run-now was refused, for the callers that map it (the dashboard: 404 for an unknown task, else 409).
UNKNOWN_TASK = "unknown-task"
NOT_LOADED = "not-loaded"
RUNNING = "running"
QUEUED = "queued"
STOPPING = "stopping"
NOT_STARTED = "not-started"
GATED = "gated"  # run-now --respect-gates while a start gate is closed
BAD_REQUEST = "bad-request"  # a run parameter (--env) that cannot be used (execution/params.py)


@dataclass(frozen=True)
class RunNowAnswer:
    """The loop's answer to one run-now: accepted with its run id, or refused with the reason and a code."""

    accepted: bool
    detail: str  # the run id when accepted, else the reason
    code: str | None = None  # the refusal's code (see the constants above)
    waiting_for: str | None = None  # accepted for a loading task: the phase it is in

    @classmethod
    def refused(cls, code: str, reason: str) -> RunNowAnswer:
        return cls(False, reason, code=code)

    def reply(self) -> dict[str, object]:
        """The control socket's reply line (docs/cli.md, run-now)."""
        if not self.accepted:
            return {"ok": False, "error": self.detail, "code": self.code}
        reply: dict[str, object] = {"ok": True, "run_id": self.detail}
        if self.waiting_for is not None:
            reply["waiting_for"] = self.waiting_for
        return reply


@dataclass(frozen=True)
class Promised:
    """A manual run accepted for a task that was loading."""

    task: str
    run_id: str
    since: datetime
    params: RunParams = ()  # run-now --env: for this run only


class PromisedRuns:
    """The manual runs promised to loading tasks, by task name (loop thread only)."""

    def __init__(self) -> None:
        self._runs: dict[str, Promised] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, task: str) -> Promised | None:
        return self._runs.get(task)

    def promise(self, task: str, *, run_id: str, now: datetime, params: RunParams = ()) -> Promised:
        """The task's promised run: the one already made (its parameters stay), else a new one with ``run_id``."""
        return self._runs.setdefault(task, Promised(task=task, run_id=run_id, since=now, params=params))

    def settle(
        self, tasks: Mapping[str, TaskState], *, busy: Callable[[TaskState], bool]
    ) -> Iterator[tuple[Promised, TaskState | None, str | None]]:
        """Each promise that can be settled now, removed from the book: ``(promise, task, None)`` when its task
        is loaded and not ``busy`` (start it), ``(promise, task or None, why)`` when it can never start."""
        for name, promised in list(self._runs.items()):
            st = tasks.get(name)
            if st is not None and is_loaded(st):
                if busy(st):
                    continue  # a run already in flight (or waiting for a slot): the promised one follows it
                del self._runs[name]
                yield promised, st, None
            elif st is None or is_gone(st):
                del self._runs[name]
                yield promised, st, "its folder disappeared"
            elif not is_loading(st):
                del self._runs[name]
                yield promised, st, f"the task did not load ({st.phase.value}{': ' + st.error if st.error else ''})"

    @staticmethod
    def never_started(task: str, run_id: str, *, at: datetime, why: str, log_path: Path) -> RunRecord:
        """The closed row of a promised run that can never start: outcome killed, ``never started: WHY``."""
        message = f"never started: {why}"
        record = RunRecord.instant(
            task=task, trigger=Trigger.MANUAL, at=at, outcome=Outcome.KILLED, message=message, log_path=log_path
        )
        return replace(record, run_id=run_id)

    def drop_all(self) -> list[Promised]:
        """Every promise, removed (the supervisor stops)."""
        dropped = list(self._runs.values())
        self._runs.clear()
        return dropped
