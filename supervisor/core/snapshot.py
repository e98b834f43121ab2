"""Status from a snapshot: after every turn the loop publishes an immutable picture of every task, and the
control socket answers ``status`` from the latest one on its own thread.

Threads and policies:
* The loop thread makes the snapshot (``SnapshotMaker``) at the end of each turn and before it answers a
  control request, so a reply is never followed by an older picture. It is cheap: a task's frozen view is
  rebuilt only when its state changed (``TaskState.revision``), and a turn that changed nothing publishes
  nothing.
* Any thread reads the latest snapshot from the ``StatusBoard`` (one reference, swapped whole).
* ``StatusReader`` builds the ``status --json`` document on the asking thread: the last finished runs come
  from the snapshot (every run this supervisor saw end) laid over one read of the history through the
  reader's own read-only connection; the encoded reply is kept until the snapshot or the database changes,
  so a dashboard polling an idle supervisor costs one ``data_version`` query per poll.
* The snapshot keeps each task's last few moves (``PhaseChanged``), oldest first, for the dashboard.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, tzinfo
from types import MappingProxyType
from typing import Any, Callable, Mapping

from ..errors import TaskAutomationError
from ..execution.executor import Executor
from ..history.store import HistoryStore
from ..model import PhaseChanged, RunRecord, RunStage
from ..query.status import RunningView, SupervisorView, TaskView, status_json
from .facts import RunFacts
from .launch import Launcher
from .lifecycle import TaskState, is_gone
from .pausing import PauseBook
from .slots import RunSlots

KEEP_MOVES = 8  # moves kept per task


@dataclass(frozen=True)
class StatusSnapshot:
    """Every task the loop knows (not removed ones) at the end of one turn, and the runs it saw finish."""

    tasks: tuple[TaskView, ...]
    supervisor: SupervisorView
    last_finished: Mapping[str, RunRecord]


class StatusBoard:
    """Where the loop publishes snapshots and any thread reads the latest; also the move listener that
    keeps each task's last moves (called on the loop thread only)."""

    def __init__(self, *, keep_moves: int = KEEP_MOVES) -> None:
        self._latest: StatusSnapshot | None = None
        self._first = threading.Event()
        self._keep = keep_moves
        self.moves: dict[str, deque[PhaseChanged]] = {}

    def moved(self, fact: PhaseChanged) -> None:
        recent = self.moves.get(fact.task)
        if recent is None:
            recent = self.moves[fact.task] = deque(maxlen=self._keep)
        recent.append(fact)

    def publish(self, snapshot: StatusSnapshot) -> None:
        self._latest = snapshot
        self._first.set()

    def latest(self, *, wait_s: float = 0.0) -> StatusSnapshot | None:
        """The newest snapshot; waits up to ``wait_s`` for the first one (the first turn's scan)."""
        if self._latest is None:
            self._first.wait(wait_s)
        return self._latest


class SnapshotMaker:
    """Builds and publishes snapshots from the loop's parts (loop thread only)."""

    def __init__(
        self,
        board: StatusBoard,
        *,
        tasks: Mapping[str, TaskState],
        launcher: Launcher,
        executor: Executor,
        slots: RunSlots,
        pauses: PauseBook,
        facts: RunFacts,
        supervisor: SupervisorView,
    ) -> None:
        self.board = board
        self._tasks = tasks
        self._launcher = launcher
        self._executor = executor
        self._slots = slots
        self._pauses = pauses
        self._facts = facts
        self.supervisor = supervisor
        self._views: dict[str, tuple[tuple[object, ...], TaskView]] = {}
        self._last: StatusSnapshot | None = None
        self._finished_seen = -1

    def publish(self) -> StatusSnapshot:
        """Publish the current picture (the previous snapshot again when nothing changed)."""
        views: list[TaskView] = []
        changed = self._last is None or self._finished_seen != self._facts.finished_count
        for st in self._tasks.values():
            if is_gone(st):
                continue
            waiting = self._executor.waiting_on(st.main_run) if st.main_run else None
            paused = self._pauses.since(st.name)
            key = (st.revision, waiting, paused, self._slots.gate(st.name))  # a gate's reading is no move
            cached = self._views.get(st.name)
            if cached is None or cached[0] != key:
                cached = self._views[st.name] = (key, self._view(st, waiting, paused))
                changed = True
            views.append(cached[1])
        if self._last is None or changed or len(views) != len(self._last.tasks):
            if len(self._views) > len(views):
                self._forget({view.name for view in views})
            self._finished_seen = self._facts.finished_count
            self._last = StatusSnapshot(
                tasks=tuple(views),
                supervisor=self.supervisor,
                last_finished=MappingProxyType(dict(self._facts.last_finished)),
            )
            self.board.publish(self._last)
        return self._last

    def _forget(self, names: set[str]) -> None:
        for name in [n for n in self._views if n not in names]:
            del self._views[name]
        for name in [n for n in self.board.moves if n not in self._tasks]:
            del self.board.moves[name]

    def _view(self, st: TaskState, waiting_on: str | None, paused_since: datetime | None) -> TaskView:
        flight = self._launcher.in_flight.get(st.main_run) if st.main_run else None
        running = (
            RunningView(flight.record.run_id, flight.record.started, flight.record.trigger.value, waiting_on)
            if flight is not None
            else None
        )
        return TaskView(
            name=st.name,
            phase=st.phase,
            spec=st.spec,
            error=st.error,
            next_due=st.next_due,
            anchor=st.anchor,
            startup_pending=st.startup_pending,
            running=running,
            queued_since=self._slots.since(st.name),
            queued_gate=self._slots.gate(st.name),
            retry=st.retry,
            failures=st.failures,
            schedule=st.trigger.describe() if st.trigger is not None else None,
            paused_since=paused_since,
            moves=tuple(self.board.moves.get(st.name, ())),
            backing_off=st.stage is RunStage.DAMPED,
        )


def status_document(snapshot: StatusSnapshot, *, stored: Mapping[str, RunRecord], tz: tzinfo) -> dict[str, Any]:
    """The ``status --json`` document (docs/cli.md) of ``snapshot``; ``stored`` is the history's last
    finished run per task, under the runs the snapshot saw finish (the newer start wins, as in the history)."""

    def last_finished(name: str) -> RunRecord | None:
        seen, kept = snapshot.last_finished.get(name), stored.get(name)
        if seen is None or kept is None:
            return seen or kept
        return seen if seen.started >= kept.started else kept

    return status_json(snapshot.tasks, last_finished=last_finished, tz=tz, supervisor=snapshot.supervisor)


class StatusReader:
    """Answers ``status`` on the asking thread from the board's latest snapshot (see the module policy)."""

    def __init__(
        self,
        board: StatusBoard,
        *,
        open_records: Callable[[], HistoryStore],
        tz: tzinfo,
        logger: logging.Logger,
        wait_s: float,
    ) -> None:
        self._board = board
        self._open_records = open_records
        self._tz = tz
        self._log = logger
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._records: HistoryStore | None = None
        self._cached: tuple[StatusSnapshot, int, bytes] | None = None

    def reply(self) -> bytes:
        """The encoded reply line ``{"ok": true, "status": ...}`` (or the error when no snapshot came)."""
        snapshot = self._board.latest(wait_s=self._wait_s)
        if snapshot is None:
            error = f"the supervisor's loop did not answer within {self._wait_s:g} s"
            return _line({"ok": False, "error": error, "code": "busy"})
        with self._lock:
            version: int = self._read(lambda records: records.data_version(), -1)
            cached = self._cached
            if cached is not None and cached[0] is snapshot and cached[1] == version:
                return cached[2]
            names = [view.name for view in snapshot.tasks]
            stored: dict[str, RunRecord] = self._read(lambda records: records.last_finished_each(names), {})
            line = _line({"ok": True, "status": status_document(snapshot, stored=stored, tz=self._tz)})
            self._cached = (snapshot, version, line)
            return line

    def _read(self, action: Callable[[HistoryStore], Any], default: Any) -> Any:
        try:
            if self._records is None:
                self._records = self._open_records()
            return action(self._records)
        except TaskAutomationError as exc:  # an unreadable history: no last runs, as after a fresh start
            self._log.error("run history: %s", exc)
            return default

    def close(self) -> None:
        with self._lock:
            if self._records is not None:
                self._records.close()
                self._records = None


def _line(reply: Mapping[str, Any]) -> bytes:
    return (json.dumps(reply) + "\n").encode()
