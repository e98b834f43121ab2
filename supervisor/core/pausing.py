"""pause / resume: a runtime state of a task, kept in the run history so it survives restarts.

Policy: a paused task stays loaded and keeps its schedule, but none of its due runs start (the loop asks
:meth:`PauseBook.since` before starting one, and ``why`` names the pause and its time). A manual ``run-now``
still runs: pausing stops the schedule, not the person at the keyboard. Resuming lets the next due time
apply as usual; slots missed while paused are not made up.

One writer: the supervisor's loop handles the ``pause``/``resume`` control commands through
:meth:`PauseBook.handle`. When no supervisor runs, the CLI writes the same table itself (the database
handles the lock); the next supervisor reads it at start.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping

from ..history.store import HistoryStore

PAUSE_COMMANDS = ("pause", "resume")


class PauseBook:
    """The paused tasks of one home: a cache of the ``paused`` table, written through."""

    def __init__(self, records: HistoryStore, *, now: Callable[[], datetime]) -> None:
        self._records = records
        self._now = now
        self._paused: dict[str, datetime] = records.paused()

    def since(self, task: str) -> datetime | None:
        """When ``task`` was paused, or None when it is not paused."""
        return self._paused.get(task)

    def all(self) -> dict[str, datetime]:
        return dict(self._paused)

    def pause(self, task: str, *, by: str | None = None) -> datetime:
        since = self._records.pause(task, since=self._now(), by=by)
        self._paused[task] = since
        return since

    def resume(self, task: str) -> bool:
        was = self._records.resume(task)
        self._paused.pop(task, None)
        return was

    def handle(self, command: str, args: Mapping[str, Any], *, known: Callable[[str], bool]) -> dict[str, Any]:
        """Answer a ``pause``/``resume`` control request; ``known(name)`` tells whether the task exists.

        Reply: ``{"ok": true, "task", "paused": bool, "since": ISO time | null, "changed": bool}`` or
        ``{"ok": false, "error", "code": "unknown-task"}``. Pausing a paused task keeps its first time.
        """
        name = str(args.get("name", ""))
        if not known(name):
            return {"ok": False, "error": f"no task named {name!r}", "code": "unknown-task"}
        if command == "pause":
            before = self.since(name)
            since = self.pause(name, by=str(args.get("by")) if args.get("by") else None)
            return {"ok": True, "task": name, "paused": True, "since": since.isoformat(), "changed": before is None}
        changed = self.resume(name)
        return {"ok": True, "task": name, "paused": False, "since": None, "changed": changed}
