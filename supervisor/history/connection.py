"""The one SQLite connection of a run-history object: opened lazily for a reader, shared behind a lock.

Policies (the store's, see store.py, as far as the connection goes):

- **One writer, many threads.** One connection opened with ``check_same_thread=False`` is shared behind an
  internal lock; every read and every write transaction holds it.
- **Write transactions** are short ``BEGIN IMMEDIATE`` ones (the write lock taken up front, so the busy
  timeout applies to it instead of failing at once on a read-to-write upgrade), committed on success and
  rolled back on any error.
- **Read-only** opens nothing until the file exists, and looks for it again on each read, so a reader that
  outlives the supervisor's first write sees the rows; before that a read gets no connection (an empty
  history).
- Every sqlite3 error becomes a :class:`HistoryStoreError` naming the file, the action and SQLite's cause;
  any use after :meth:`HistoryConnection.close` raises one.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ..errors import HistoryStoreError
from .schema import open_reader, open_writer, translate


class HistoryConnection:
    """The connection to the history database at ``path`` (created unless ``readonly``)."""

    def __init__(self, path: Path, *, readonly: bool, busy_timeout: float) -> None:
        self.path = path
        self.readonly = readonly
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._closed = False
        self.conn: sqlite3.Connection | None = None
        if not readonly:
            self.conn = open_writer(self.path, busy_timeout=busy_timeout)
        # A reader opens the file at its first read (reading()): a history that is locked or missing when a
        # long-lived reader (the dashboard) starts is that read's answer, never a failure to start.

    def translate(self, action: str) -> AbstractContextManager[None]:
        """Turn sqlite3 errors into HistoryStoreError naming the file, the action and SQLite's cause."""
        return translate(self.path, action, busy_timeout=self._busy_timeout)

    @contextmanager
    def reading(self, action: str) -> Iterator[sqlite3.Connection | None]:
        """The connection for a read, or None when a read-only history does not exist (yet)."""
        with self._lock:
            self._ensure_open()
            if self.conn is None and self.readonly and self.path.exists():
                self.conn = open_reader(self.path, busy_timeout=self._busy_timeout)
            with self.translate(action):
                yield self.conn

    @contextmanager
    def writing(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed on success and rolled back on any error."""
        with self._lock:
            self._ensure_open()
            if self.readonly or self.conn is None:
                raise HistoryStoreError(f"run history {self.path}: cannot {action}: opened read-only")
            conn = self.conn
            with self.translate(action):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

    def set_busy_timeout(self, seconds: float) -> None:
        """Change how long a call waits for another connection's lock."""
        with self._lock:
            self._ensure_open()
            self._busy_timeout = seconds
            if self.conn is not None:
                with self.translate("set the busy timeout"):
                    self.conn.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    def _ensure_open(self) -> None:
        if self._closed:
            raise HistoryStoreError(f"run history {self.path}: used after close()")

    def close(self) -> None:
        """Close the connection. Idempotent; any later use raises HistoryStoreError."""
        with self._lock:
            self._closed = True
            if self.conn is not None:
                conn, self.conn = self.conn, None
                with self.translate("close"):
                    conn.close()
