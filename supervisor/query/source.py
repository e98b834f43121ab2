"""The one status source of every reader (``status``, the dashboard): live from the running supervisor, else
the offline document built from the task folders and the history.

Policy:

* Live first: the supervisor's own ``status`` reply over the control socket, the only answer that knows what
  runs now.
* Offline when no supervisor answers: none holds the home's lock, none listens on its socket yet (one is
  starting or stopping), or the one running is busy past the control timeout. The offline document is what
  ``status`` prints with no supervisor; a reading taken because the supervisor was busy carries a ``note``
  saying so, for the reader to show.
* A supervisor that answers but refuses (``"ok": false``) is an error, never hidden behind an offline answer.
* A long-lived reader (the dashboard) hands in its own read-only history and gets the offline document reused
  while nothing it was built from changed; a one-shot reader (the CLI) opens the history per reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ControlError, NotRunningError, TaskAutomationError
from ..history.store import HistoryStore
from ..paths import Paths
from ..system.control import ask_supervisor
from .offline import OfflineStatus

# One request to the running supervisor (``ask_supervisor`` bound to a home; tests pass a fake).
Ask = Callable[[str, Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class StatusReading:
    """One ``status --json`` document and where it came from."""

    document: dict[str, Any]
    live: bool
    note: str | None = None  # why a running supervisor's answer is missing from an offline reading


class StatusSource:
    """Reads the status of one home, live or offline (see the module's policy)."""

    def __init__(self, paths: Paths, *, records: HistoryStore | None = None, ask: Ask | None = None) -> None:
        self.paths = paths
        self._records = records  # owned by the caller; None: opened read-only for each offline reading
        self._offline = OfflineStatus(paths)
        self._ask: Ask = ask or (lambda command, args: ask_supervisor(paths, command, args))

    def read(self) -> StatusReading:
        try:
            reply = self._ask("status", {})
        except NotRunningError:
            return StatusReading(self._offline_document(), live=False)
        except ControlError as exc:
            note = f"{exc}; showing the offline status (task folders and history)"
            return StatusReading(self._offline_document(), live=False, note=note)
        if not reply.get("ok"):
            raise TaskAutomationError(str(reply.get("error")))
        status: dict[str, Any] = reply["status"]
        return StatusReading(status, live=True)

    def _offline_document(self) -> dict[str, Any]:
        if self._records is not None:
            return self._offline.document(self._records, reuse=True)
        records = HistoryStore(self.paths.database, readonly=True)
        try:
            return self._offline.document(records)
        finally:
            records.close()
