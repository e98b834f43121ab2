"""One home's Prometheus exposition, read the way every reader reads: the status document from the one status
source (live, else offline) and the run totals from the history, opened read-only. The dashboard's
``GET /metrics`` and ``taskautomation metrics`` both serve what :class:`Scraper` returns.

Policy: each scrape asks for the status again (``taskautomation_supervisor_up`` is whether a supervisor
answered it); the totals are read again only when the database changed (``PRAGMA data_version``), and only
the tasks whose figures changed are formatted again (metrics.py). Gzip, for a scraper that accepts it (a
Prometheus server does): 500 tasks are about 1.2 MB of text and 60 KB compressed; the last compressed body is
kept while the text is the same.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

from ..history.store import HistoryStore
from ..history.totals import HistoryTotals
from ..paths import Paths
from .metrics import Exposition
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
        self._gzipped: tuple[bytes, bytes] | None = None  # the last text and its compressed form

    def exposition(self, *, gzipped: bool = False) -> bytes:
        """The exposition's text (``gzipped``: compressed, for ``Content-Encoding: gzip``)."""
        reading = self.source.read()
        data_version = self.records.data_version()
        if self._totals is None or self._totals[0] != data_version:
            self._totals = (data_version, self.records.totals())
        text = self._exposition.render(reading.document, self._totals[1], live=reading.live, version=self.version)
        if not gzipped:
            return text
        cached = self._gzipped
        if cached is None or cached[0] != text:
            # Level 1: a tenth of level 6's size advantage is not worth twice the time on every changed scrape.
            cached = self._gzipped = (text, gzip.compress(text, compresslevel=1, mtime=0))
        return cached[1]


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip;q=0`` refuses it)."""
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "x-gzip"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


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
