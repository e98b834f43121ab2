"""How the loop tells people about one task: lines in the supervisor log and the task's own log, once per
folder content for problems, with times in the supervisor's zone.

Policy: a task log that cannot be written (a full disk) costs that copy of the line, never the loop; the
supervisor log has the line already. A problem of an unchanged folder is logged once, not at every rescan.
"""

from __future__ import annotations

import logging
from datetime import datetime, tzinfo

from ..logsetup import TaskLogs
from ..query.timefmt import span
from .lifecycle import TaskState


class Reporter:
    """The loop's voice; every part that logs about a task goes through it."""

    def __init__(self, *, logger: logging.Logger, task_logs: TaskLogs, tz: tzinfo) -> None:
        self.log = logger
        self.task_logs = task_logs
        self.tz = tz

    def say(self, task: str, level: int, message: str, *, everywhere: bool = True) -> None:
        """Log to the supervisor log and to the task's own log (only the latter when not ``everywhere``:
        detail that would repeat on the console with every run of a task)."""
        if everywhere:
            self.log.log(level, "%s", message)
        try:
            self.task_logs.get(task).log(level, "%s", message)
        except Exception as exc:  # noqa: BLE001 - the supervisor log has the line already
            self.log.warning("task %r: its log file cannot be written: %s", task, exc)

    def retrying(self, task: str, message: str, *, delay_s: float) -> None:
        """One warning for a transient failure that will be tried again: the same words for a run, an
        ``initialize()`` and an env build, the delay in whole seconds (a back-off read off the monotonic
        clock is 1.99987 s, which says nothing more than "2 s")."""
        self.say(
            task, logging.WARNING, f"{message}; a transient failure: trying again in {span(max(1, round(delay_s)))}"
        )

    def fmt(self, when: datetime | None) -> str:
        return when.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S %Z") if when else "never"

    def report_once(self, st: TaskState, message: str, level: int) -> None:
        """Log a problem once per folder content, so an unchanged broken folder is not re-reported."""
        key = f"{st.folder.fingerprint if st.folder else ''}:{message}"
        if key not in st.reported:
            st.reported.add(key)
            self.say(st.name, level, message)
