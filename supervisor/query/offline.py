"""The offline ``status --json`` document (no supervisor runs): built from the task folders and the history.

Policy: the document is exactly what reading every config.ini and querying every task's history gives, but
the work follows what changed. A task's parsed config is kept under the file's signature (inode, size,
mtime_ns) together with the home config's signature and the time zone, and read again when any differs. The
history is read with one statement per few hundred tasks (last finished run, newest rows for the failure
streak) instead of two per task. A long-lived reader (the dashboard) keeps one :class:`OfflineStatus` and
also reuses the whole document while the signatures and the database's ``data_version`` are unchanged.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, Callable

from ..config.schema import read_home_config, read_task_config
from ..discovery.scan import task_names
from ..errors import TaskAutomationError
from ..history.recorder import STREAK_LOOKBACK, failure_streak, streak_settled
from ..history.store import HistoryStore
from ..model import Retention
from ..paths import Paths
from ..scheduling.triggers import trigger_for
from ..scheduling.windows import local_zone
from .status import downstream_of, offline_row, offline_status_json

# Rows per task read at first for the failure streak; a task whose streak is not settled by a final ``ok``
# among them is read again with the full look-back (rare: a long run of failures).
STREAK_SLICE = 8

Signature = tuple[int, int, int] | None


def file_signature(path: Path) -> Signature:
    """(inode, size, mtime_ns) of ``path``; None when it cannot be read (missing counts as a state too)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class TaskConfigView:
    """What the offline status shows of one task's config.ini."""

    enabled: bool
    error: str | None
    schedule: str | None
    after: tuple[str, ...] = ()  # [Frequency] After
    retention: Retention | None = None  # [Output] in force (home defaults applied)


class OfflineStatus:
    """Builds the offline status document of one home, keeping parsed configs (and, on request, the
    document) between calls. Calls are serialised (the dashboard answers requests on a thread pool)."""

    def __init__(self, paths: Paths, *, zone: Callable[[], tzinfo] = local_zone) -> None:
        self.paths = paths
        self._zone = zone
        self._configs: dict[str, tuple[tuple[object, ...], TaskConfigView]] = {}
        self._document: tuple[tuple[object, ...], dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def document(self, records: HistoryStore, *, reuse: bool = False) -> dict[str, Any]:
        """The offline ``status --json`` document. ``reuse``: the previous document when nothing it was built
        from changed (the same task folders and config signatures, no commit to the history since)."""
        names = task_names(self.paths.tasks)
        home_sig = file_signature(self.paths.home_config)
        zone = self._zone()
        task_sigs = tuple(file_signature(self.paths.task_config(name)) for name in names)
        key = (records.data_version(), tuple(names), task_sigs, home_sig, str(zone))
        if reuse and self._document is not None and self._document[0] == key:
            return self._document[1]
        views = self._views(names, task_sigs, home_sig=home_sig, zone=zone)
        paused = records.paused()
        last = records.last_finished_each(names)
        newest = records.newest_each(names, limit=STREAK_SLICE)
        rows = []
        below = downstream_of({name: view.after for name, view in views.items()})
        for name in names:
            recent = newest[name]
            if len(recent) >= STREAK_SLICE and not streak_settled(recent):
                recent = records.history(name, limit=STREAK_LOOKBACK)
            view = views[name]
            rows.append(
                offline_row(
                    name,
                    enabled=view.enabled,
                    error=view.error,
                    last=last.get(name),
                    failures=failure_streak(recent),
                    schedule=view.schedule,
                    paused_since=paused.get(name),
                    after=view.after,
                    downstream=below.get(name, []),
                    retention=view.retention,
                )
            )
        document = offline_status_json(rows)
        self._document = (key, document) if reuse else None
        return document

    def _views(
        self, names: list[str], sigs: tuple[Signature, ...], *, home_sig: Signature, zone: tzinfo
    ) -> dict[str, TaskConfigView]:
        home_config = None
        views: dict[str, TaskConfigView] = {}
        for name, sig in zip(names, sigs):
            key = (sig, home_sig, str(zone))
            cached = self._configs.get(name)
            if cached is not None and cached[0] == key and sig is not None:
                views[name] = cached[1]
                continue
            if home_config is None:
                home_config, _ = read_home_config(self.paths.home_config)
            try:
                spec = read_task_config(
                    self.paths.task_config(name),
                    task=name,
                    defaults=home_config.limits,
                    retention_defaults=home_config.retention,
                ).spec
                schedule = trigger_for(spec, tz=zone).describe()
                view = TaskConfigView(
                    enabled=spec.enabled, error=None, schedule=schedule, after=spec.after, retention=spec.retention
                )
            except TaskAutomationError as exc:
                view = TaskConfigView(enabled=True, error=str(exc), schedule=None)
            self._configs[name] = (key, view)
            views[name] = view
        for gone in set(self._configs) - set(names):
            del self._configs[gone]
        return views
