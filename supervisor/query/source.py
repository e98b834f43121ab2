"""The one status source of every reader (``status``, the dashboard): live from the running supervisor, else
the offline document built from the task folders and the history.

Policy:

* Live first: the supervisor's own ``status`` reply over the control socket, the only answer that knows what
  runs now. Its document says ``"offline": null``.
* Offline when no supervisor answers: none holds the home's lock, none listens on its socket yet (one is
  starting or stopping), the one running is busy past the control timeout, or it says it is busy (its loop
  has not published a first status yet). The offline document's ``offline`` field says which
  (docs/cli.md): ``supervisor_running`` is true whenever a supervisor holds the home's lock, and then the
  tasks that would read ``stopped`` read ``unknown`` instead (their live state is not known; the figures are
  the history's). A reading taken while a supervisor runs also carries a ``note``, for the reader to show.
* A supervisor that answers but refuses (``"ok": false``, other than busy) is an error, never hidden behind
  an offline answer.
* A long-lived reader (the dashboard) hands in its own read-only history and gets the offline document reused
  while nothing it was built from changed; a one-shot reader (the CLI) opens the history per reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ControlError, NotRunningError, TaskAutomationError
from ..history.store import HistoryStore
from ..model import ShownState
from ..paths import Paths
from ..system.control import ask_supervisor, holder_info, lock_is_held
from .offline import OfflineStatus

# One request to the running supervisor (``ask_supervisor`` bound to a home; tests pass a fake).
Ask = Callable[[str, Mapping[str, Any]], dict[str, Any]]
CONTROL_TIMEOUT_S = 10.0  # the CLI's wait for a live answer; the dashboard passes its own, shorter one
BUSY = "busy"  # the code of a reply that says "ask again later" (no status published yet)
UNKNOWN_WHY = "the supervisor is running but did not answer: its live state is unknown (figures from the history)"


@dataclass(frozen=True)
class StatusReading:
    """One ``status --json`` document and where it came from."""

    document: dict[str, Any]
    live: bool
    note: str | None = None  # why a running supervisor's answer is missing from an offline reading


class StatusSource:
    """Reads the status of one home, live or offline (see the module's policy)."""

    def __init__(
        self,
        paths: Paths,
        *,
        records: HistoryStore | None = None,
        ask: Ask | None = None,
        timeout: float = CONTROL_TIMEOUT_S,
        running: Callable[[], bool] | None = None,
    ) -> None:
        self.paths = paths
        self._records = records  # owned by the caller; None: opened read-only for each offline reading
        self._offline = OfflineStatus(paths)
        self._ask: Ask = ask or (lambda command, args: ask_supervisor(paths, command, args, timeout=timeout))
        self._running = running or (lambda: lock_is_held(paths.lock_file))
        self._annotated: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None = None

    def read(self) -> StatusReading:
        try:
            reply = self._ask("status", {})
        except NotRunningError as exc:
            if not self._running():
                return self._offline_reading(str(exc), running=False)
            return self._offline_reading(f"{exc} (it is starting or stopping)", running=True)
        except ControlError as exc:
            return self._offline_reading(str(exc), running=True)
        if not reply.get("ok"):
            if reply.get("code") == BUSY:
                return self._offline_reading(str(reply.get("error")), running=True)
            raise TaskAutomationError(str(reply.get("error")))
        status: dict[str, Any] = reply["status"]
        return StatusReading(status, live=True)

    def _offline_reading(self, reason: str, *, running: bool) -> StatusReading:
        pid = holder_info(self.paths.lock_file).get("pid") if running else None
        offline = {"supervisor_running": running, "pid": pid if isinstance(pid, int) else None, "reason": reason}
        document = self._annotate(self._offline_document(), offline)
        note = f"{reason}; showing the offline status (task folders and history)" if running else None
        return StatusReading(document, live=False, note=note)

    def _annotate(self, base: dict[str, Any], offline: dict[str, Any]) -> dict[str, Any]:
        """``base`` with its ``offline`` field, reused while both are the same (so is the document)."""
        kept = self._annotated
        if kept is not None and kept[0] is base and kept[1] == offline:
            return kept[2]
        tasks = base["tasks"]
        if offline["supervisor_running"]:
            stopped = ShownState.STOPPED.value
            tasks = [
                {**task, "state": ShownState.UNKNOWN.value, "why": UNKNOWN_WHY} if task["state"] == stopped else task
                for task in tasks
            ]
        document = {**base, "tasks": tasks, "offline": offline}
        self._annotated = (base, offline, document)
        return document

    def _offline_document(self) -> dict[str, Any]:
        if self._records is not None:
            return self._offline.document(self._records, reuse=True)
        records = HistoryStore(self.paths.database, readonly=True)
        try:
            return self._offline.document(records)
        finally:
            records.close()
