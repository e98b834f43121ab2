"""One home's Prometheus exposition, read the way every reader reads: the status document from the one status
source (live, else offline) and the run totals from the history, opened read-only. The dashboard's
``GET /metrics`` and ``taskautomation metrics`` both serve what :class:`Scraper` returns.

Policy: each scrape asks for the status again (``taskautomation_supervisor_up`` is whether a supervisor
answered it); the totals are read again only when the database changed (``PRAGMA data_version``), and only
the tasks whose figures changed are formatted again (metrics.py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..history.store import HistoryStore
from ..history.totals import HistoryTotals
from ..paths import Paths
from .metrics import Exposition, figures
from .source import StatusSource

# The media type of the text exposition format that the exposition is written in.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Scraper:
    """The exposition of one home. ``records`` (read-only) and ``source`` are the caller's, reused."""

    def __init__(self, paths: Paths, *, records: HistoryStore, source: StatusSource, version: str) -> None:
        self.paths = paths
        self.records = records
        self.source = source
        self.version = version
        self._exposition = Exposition()
        self._totals: tuple[int, HistoryTotals] | None = None

    def exposition(self) -> bytes:
        reading = self.source.read()
        data_version = self.records.data_version()
        if self._totals is None or self._totals[0] != data_version:
            self._totals = (data_version, self.records.totals())
        home, tasks = figures(reading.document, self._totals[1], live=reading.live, version=self.version)
        return self._exposition.render(home, tasks)


def write_textfile(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as node_exporter's textfile collector wants it: a temporary file in the same
    folder renamed over ``path``, so the collector never reads half a file. Mode 0644 (the collector usually
    runs as another user; the figures hold no secret)."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
