"""The run history's SQLite schema: its columns, the migrations (one step per ``PRAGMA user_version``), and
opening a connection (WAL, ``synchronous=FULL`` and migrating for the writer; ``mode=ro`` for a reader,
which may not migrate).

The HistoryStore class (store.py) runs every statement; this module knows the shape of the tables and how a
file is brought to SCHEMA_VERSION. Errors are HistoryStoreError naming the file and SQLite's cause.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import HistoryStoreError
from ..paths import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE
from .totals import MIGRATION as TOTALS_MIGRATION
from .totals import MISSED_MIGRATION as MISSED_TOTALS_MIGRATION

COLUMNS = (
    "run_id",
    "task",
    "trigger",
    "due",
    "started",
    "finished",
    "outcome",
    "duration_s",
    "exit_code",
    "signal",
    "message",
    "peak_rss_mb",
    "cpu_s",
    "log_path",
    "attempt",
    "retry_of",
    "reason",
    "slots",
    "upstream",
    "params",
)
# What a column reads as in a file older than the step that added it (a reader may not migrate).
_DEFAULTS = {"attempt": "1"}
SELECT = f"SELECT {', '.join(COLUMNS)} FROM runs"
# Same-second starts are ordered by insertion, so "newest" is total even when the clock repeats a value.
NEWEST_FIRST = "ORDER BY started DESC, rowid DESC"

# MIGRATIONS[i] takes a database from user_version i to i + 1. Append, never edit a shipped step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE runs (
            run_id      TEXT PRIMARY KEY,
            task        TEXT NOT NULL,
            trigger     TEXT NOT NULL,
            due         TEXT,
            started     TEXT NOT NULL,
            finished    TEXT,
            outcome     TEXT,           -- NULL while the run is open
            duration_s  REAL,
            exit_code   INTEGER,
            signal      TEXT,
            message     TEXT,
            peak_rss_mb REAL,
            cpu_s       REAL,
            log_path    TEXT
        )
        """,
        "CREATE INDEX runs_task_started ON runs (task, started)",
        # Open rows are few and read at every start (mark_interrupted, open_runs): a partial index keeps
        # that lookup from scanning the whole history.
        "CREATE INDEX runs_open ON runs (started) WHERE outcome IS NULL",
    ),
    (
        # [Retry]: each attempt is its own row; rows written before it are first attempts.
        "ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE runs ADD COLUMN retry_of TEXT",
    ),
    (
        # Paused tasks (pause/resume): a runtime state that must survive restarts, so it lives here.
        """
        CREATE TABLE paused (
            task  TEXT PRIMARY KEY,
            since TEXT NOT NULL,
            by    TEXT
        )
        """,
    ),
    (
        # The dashboard's timeline adds each task's open rows older than its window; through
        # runs_task_started that walked every old row of the task, this partial index holds only open ones.
        "CREATE INDEX runs_open_task ON runs (task, started) WHERE outcome IS NULL",
    ),
    # Run totals that pruning never lowers (the Prometheus counters), kept by triggers and backfilled from the
    # rows present: totals.py.
    TOTALS_MIGRATION,
    # Missed rows (reason, slots), runs started by After (upstream), run-now --env (params, JSON), and the totals
    # triggers rebuilt to count a missed row's slots under its reason: totals.py.
    (
        "ALTER TABLE runs ADD COLUMN reason TEXT",
        "ALTER TABLE runs ADD COLUMN slots INTEGER",
        "ALTER TABLE runs ADD COLUMN upstream TEXT",
        "ALTER TABLE runs ADD COLUMN params TEXT",
        *MISSED_TOTALS_MIGRATION,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def open_writer(path: Path, *, busy_timeout: float) -> sqlite3.Connection:
    """The writer's connection: the folder and file created, WAL on, ``synchronous=FULL``, migrated.

    A new database is created 0600 in a 0700 folder before SQLite opens it: SQLite gives its -wal and -shm
    files the database file's mode, so all three stay private whatever the umask (they hold every run's
    messages). An existing file keeps its mode.
    """
    try:
        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise HistoryStoreError(f"run history {path}: cannot create its folder: {exc}") from exc
    try:
        # An empty file is a valid empty database. An existing one is left to SQLite (and its errors).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE))
    except FileExistsError:
        pass
    except OSError as exc:
        raise HistoryStoreError(f"run history {path}: cannot create it: {exc}") from exc
    conn = _connect(path, str(path), uri=False, busy_timeout=busy_timeout)
    try:
        with translate(path, "open", busy_timeout=busy_timeout):
            # journal_mode reads the header first, so a non-SQLite file fails here, not on a later call.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise HistoryStoreError(f"run history {path}: cannot switch to WAL journal (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            _migrate(path, conn)
    except BaseException:
        conn.close()
        raise
    return conn


def open_reader(path: Path, *, busy_timeout: float) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``) to an existing file; an older schema is shown as the current one."""
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    conn = _connect(path, uri, uri=True, busy_timeout=busy_timeout)
    try:
        with translate(path, "open", busy_timeout=busy_timeout):
            version = _user_version(conn)
            _check_version(path, version)
            present = {str(row[1]) for row in conn.execute("PRAGMA main.table_info(runs)")}
            if present and not present.issuperset(COLUMNS):
                # A reader may not migrate (the CLI before the upgraded supervisor first ran): a
                # temporary view, which shadows the table for this connection only, shows the columns a
                # later step added with what they mean for older rows (first attempts, no reason, ...).
                shown = (c if c in present else f"{_DEFAULTS.get(c, 'NULL')} AS {c}" for c in COLUMNS)
                conn.execute(f"CREATE TEMP VIEW runs AS SELECT {', '.join(shown)} FROM main.runs")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def translate(path: Path, action: str, *, busy_timeout: float) -> Iterator[None]:
    """Turn sqlite3 errors into HistoryStoreError naming the file, the action and SQLite's cause."""
    try:
        yield
    except sqlite3.Error as exc:
        cause = str(exc)
        locked = "locked" in cause or "busy" in cause
        if locked:
            cause += f" (another process held it for more than {busy_timeout:g} s)"
        # A lock is another process's doing and passes (the dashboard answers 503 with Retry-After, not 500).
        raise HistoryStoreError(f"run history {path}: {action} failed: {cause}", transient=locked) from exc


def _connect(path: Path, target: str, *, uri: bool, busy_timeout: float) -> sqlite3.Connection:
    try:
        # isolation_level=None: no implicit transactions; writes open their own BEGIN IMMEDIATE.
        conn = sqlite3.connect(target, uri=uri, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    except sqlite3.Error as exc:
        raise HistoryStoreError(f"run history {path}: cannot open: {exc}") from exc
    return conn


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check_version(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise HistoryStoreError(
            f"run history {path}: schema version {version} is newer than this "
            f"supervisor understands ({SCHEMA_VERSION}); upgrade taskautomation"
        )


def _migrate(path: Path, conn: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION; each step commits with its new user_version."""
    version = _user_version(conn)
    _check_version(path, version)
    while version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = _user_version(conn)
            if version < SCHEMA_VERSION:
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version={version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
