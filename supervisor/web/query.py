"""What the dashboard reads: the status document, history pages, one run with its log, recent runs.

The status document comes from the query layer's one status source, the CLI's too (live from the supervisor
over its control socket, else built offline from the folders and the history), so the JSON API has the CLI's
schemas. Everything else is read from the history database, opened read-only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..history.store import HistoryStore, OutcomeBin, record_to_json
from ..model import Outcome, RunRecord
from ..paths import Paths
from ..query.source import StatusSource
from . import svg
from .runlog import read_run_lines

HISTORY_PAGE = 50
# How long a page waits for the supervisor's live status before it shows the offline one (with a banner).
STATUS_TIMEOUT_S = 3.0
REDRAW_S = 0.5


@dataclass(frozen=True)
class _Drawn:
    key: tuple[object, ...]
    markup: Markup
    drawn: float
    cost: float


MAX_HISTORY_LIMIT = 1000


def parse_outcomes(text: str | None) -> tuple[Outcome, ...]:
    """``ok,failed`` -> outcomes; raises ValueError naming an unknown one."""
    if not text:
        return ()
    found = []
    for word in text.split(","):
        word = word.strip()
        if not word:
            continue
        try:
            found.append(Outcome(word))
        except ValueError:
            known = ", ".join(o.value for o in Outcome)
            raise ValueError(f"unknown outcome {word!r} (one of: {known})") from None
    return tuple(found)


class Reader:
    """Read-only access to one home for the web process (one connection, reused)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.records = HistoryStore(paths.database, readonly=True)
        self.source = StatusSource(paths, records=self.records, timeout=STATUS_TIMEOUT_S)
        self._sparks: dict[str, tuple[str | None, Markup]] = {}
        self._timeline: _Drawn | None = None

    def close(self) -> None:
        self.records.close()

    def status(self) -> dict[str, Any]:
        """The status document (the CLI's, live or offline; its ``offline`` field says which and why)."""
        return self.source.read().document

    def task_names(self) -> set[str]:
        return {entry.name for entry in _dirs(self.paths.tasks)} | set(self.records.tasks_with_history())

    def history(
        self, name: str, *, limit: int = HISTORY_PAGE, page: int = 1, outcomes: tuple[Outcome, ...] = ()
    ) -> dict[str, Any]:
        """``{"runs": [...]}`` newest first (the CLI's schema) plus the page it is and whether more follow."""
        limit = min(max(limit, 1), MAX_HISTORY_LIMIT)
        page = max(page, 1)
        rows = self.records.history(name, limit=limit + 1, offset=(page - 1) * limit, outcomes=outcomes)
        return {
            "runs": [record_to_json(r) for r in rows[:limit]],
            "page": page,
            "limit": limit,
            "has_more": len(rows) > limit,
        }

    def run(self, run_id: str) -> dict[str, Any] | None:
        """``{"run": {...}, "log": [lines]}`` or None for an unknown run id."""
        record = self.records.run(run_id)
        if record is None:
            return None
        return {"run": record_to_json(record), "log": read_run_lines(self.log_of(record), run_id)}

    def run_record(self, run_id: str) -> RunRecord | None:
        return self.records.run(run_id)

    def log_of(self, record: RunRecord) -> Path:
        return record.log_path or self.paths.task_log(record.task)

    def timeline(self, names: list[str], *, now: datetime, mono: float) -> Markup:
        """The 24-hour timeline, drawn again when the history or the task list changed, or a minute passed.

        On a busy home (hundreds of tasks, a run a second) drawing it costs more than the rest of the page:
        then it is drawn at most once per five times its own drawing time (at least every :data:`REDRAW_S`).
        """
        version = self.records.data_version()
        key = (version, tuple(names), int(mono // 60))
        cached = self._timeline
        if cached is not None and (
            cached.key == key or (cached.key[1:] == key[1:] and mono - cached.drawn < max(REDRAW_S, 5 * cached.cost))
        ):
            return cached.markup
        start = mono
        markup = svg.timeline(names, self.recent(names, now=now), now=now)
        self._timeline = _Drawn(key=key, markup=markup, drawn=mono, cost=time.monotonic() - start)
        return markup

    def recent(self, names: list[str], *, now: datetime, hours: float = 24, bins: int = 96) -> list[OutcomeBin]:
        """Runs of ``names`` in the last ``hours``, counted per task, outcome and one of ``bins`` time bins."""
        return self.records.outcome_bins(names, now - timedelta(hours=hours), bin_s=hours * 3600 / bins, now=now)

    def last_runs(self, name: str, *, count: int = 20) -> list[RunRecord]:
        """The newest ``count`` finished runs, oldest first (what a sparkline draws)."""
        rows = self.records.history(name, limit=count, outcomes=tuple(Outcome))
        return list(reversed(rows))

    def sparkline(self, name: str, last_run_id: str | None) -> Markup:
        """The task's sparkline, drawn again only when its last finished run changed."""
        cached = self._sparks.get(name)
        if cached is not None and cached[0] == last_run_id:
            return cached[1]
        markup = svg.sparkline(self.last_runs(name))
        self._sparks[name] = (last_run_id, markup)
        return markup

    def task_files(self, name: str) -> dict[str, str | None]:
        """config.ini and requirements.txt of a task as text (None when missing); never its .env."""
        folder = self.paths.task_dir(name)
        out: dict[str, str | None] = {}
        for file in ("config.ini", "requirements.txt"):
            try:
                with open(folder / file, "rb") as f:
                    out[file] = f.read(256 * 1024).decode("utf-8", "replace")
            except OSError:
                out[file] = None
        return out


def _dirs(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    except FileNotFoundError:
        return []
