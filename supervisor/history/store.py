"""Run history in SQLite: one row per run, surviving restarts and ``kill -9`` of the supervisor.

Policies:

- **Durability.** WAL journal, ``synchronous=FULL``: a committed row is on disk before the call returns, so a
  run recorded as started before its spawn is still there after the supervisor is SIGKILLed. Every write is
  one short ``BEGIN IMMEDIATE`` transaction (taking the write lock up front, so the busy timeout applies to
  it instead of failing at once on a read-to-write upgrade).
- **One writer, many threads.** The supervisor's loop thread writes; other threads (the control socket) may
  read. One connection opened with ``check_same_thread=False`` is shared behind an internal lock
  (connection.py).
- **Read-only mode** (the CLI with no supervisor running) opens the file with a ``mode=ro`` URI and creates
  nothing of its own (SQLite may add its ``-wal``/``-shm`` side files next to an existing WAL database to
  read it). A missing database is an empty history, not an error; the file is looked for again on each call,
  so a reader that outlives the supervisor's first write sees the rows.
- **Errors.** A corrupt or non-SQLite file, a lock held beyond the busy timeout, a newer schema, or a row that
  cannot be decoded raises :class:`HistoryStoreError` naming the file and the cause; a call that breaks this
  module's contract (naive datetimes, a finish without an outcome) raises ``ValueError`` (a caller's bug).
- **Storage** encodings (UTC text times, enum values, messages capped at :data:`MESSAGE_CAP` keeping head and
  tail) are rows.py; the schema, its ``PRAGMA user_version`` steps and opening connections are schema.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from ..errors import HistoryStoreError
from ..model import Outcome, RunRecord, Trigger
from .connection import HistoryConnection
from .rows import MESSAGE_CAP, record_to_json, run_matches
from .rows import cap_message as _cap_message
from .rows import decode_time as _decode_time
from .rows import encode_time as _encode_time
from .rows import record_to_row as _record_to_row
from .rows import row_to_record as _row_to_record
from .schema import COLUMNS as _COLUMNS
from .schema import NEWEST_FIRST as _NEWEST_FIRST
from .schema import SCHEMA_VERSION
from .schema import SELECT as _SELECT
from .timeline import OutcomeBin, read_outcome_bins
from .totals import HistoryTotals, read_totals

# Names other modules import from here (the history's public face), besides HistoryStore itself.
__all__ = [
    "ANCHOR_TRIGGERS",
    "INTERRUPTED_MESSAGE",
    "MESSAGE_CAP",
    "SCHEMA_VERSION",
    "HistoryStore",
    "OutcomeBin",
    "moves_schedule",
    "record_to_json",
    "run_matches",
]

INTERRUPTED_MESSAGE = "supervisor stopped before the run finished"

# Triggers whose runs move the schedule. Manual runs (run-now) never do.
ANCHOR_TRIGGERS = (Trigger.SCHEDULE.value, Trigger.STARTUP.value)
_ANCHOR_TRIGGERS = ANCHOR_TRIGGERS
# A ``missed`` row (trigger schedule) stands for slots that did not run: it never moves the schedule.
_MOVES_SCHEDULE = "(trigger IN (?, ?) AND outcome IS NOT 'missed')"


def moves_schedule(record: RunRecord) -> bool:
    """Whether ``record`` is a schedule anchor (the rule of ``_MOVES_SCHEDULE``, for rows not yet written)."""
    return record.trigger.value in ANCHOR_TRIGGERS and record.outcome is not Outcome.MISSED


class HistoryStore:
    """The run-history database of one home (``Paths.database``)."""

    def __init__(self, path: Path, *, readonly: bool = False, busy_timeout: float = 5.0) -> None:
        """Open (and unless ``readonly``, create) the database at ``path``.

        ``busy_timeout`` is how long, in seconds, a call waits for another connection's lock before
        raising :class:`HistoryStoreError`.
        """
        self.path = Path(path)
        self.readonly = readonly
        self._db = HistoryConnection(self.path, readonly=readonly, busy_timeout=busy_timeout)

    def set_busy_timeout(self, seconds: float) -> None:
        """Change how long a call waits for another connection's lock (the write-behind writer retries
        itself, so it wants a short one)."""
        self._db.set_busy_timeout(seconds)

    def _rows(self, action: str, sql: str, params: tuple[object, ...] = ()) -> list[RunRecord]:
        with self._db.reading(action) as conn:
            if conn is None:
                return []
            rows = conn.execute(sql, params).fetchall()
        return [self._decode(row) for row in rows]

    def _decode(self, row: tuple[object, ...]) -> RunRecord:
        try:
            return _row_to_record(row)
        except (ValueError, TypeError) as exc:
            raise HistoryStoreError(f"run history {self.path}: run {row[0]!r} cannot be read: {exc}") from exc

    # ------------------------------------------------------------------------------------------ writes

    def start_run(self, record: RunRecord) -> None:
        """Write the row of a run that is starting (outcome NULL). Called before the spawn."""
        if record.outcome is not None:
            raise ValueError(f"start_run({record.run_id!r}): an open run has no outcome yet")
        self._insert("record the start of run", record)

    def record_instant(self, record: RunRecord) -> None:
        """Write a complete row at once (skipped, testing, env-failed): the outcome must be set."""
        if record.outcome is None:
            raise ValueError(f"record_instant({record.run_id!r}): the outcome must be set")
        self._insert("record run", record)

    def _insert(self, action: str, record: RunRecord) -> None:
        values = _record_to_row(record)
        try:
            with self._db.writing(f"{action} {record.run_id!r} of task {record.task!r}") as conn:
                conn.execute(
                    f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", values
                )
        except HistoryStoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise HistoryStoreError(
                    f"run history {self.path}: run id {record.run_id!r} of task {record.task!r} is already recorded"
                ) from exc.__cause__
            raise

    def finish_run(
        self,
        run_id: str,
        *,
        finished: datetime,
        outcome: Outcome,
        duration_s: float | None,
        exit_code: int | None = None,
        signal: str | None = None,
        message: str | None = None,
        peak_rss_mb: float | None = None,
        cpu_s: float | None = None,
    ) -> None:
        """Close an open row with its one outcome.

        A run ends exactly once: finishing a row that is unknown or already has an outcome (for instance
        one marked interrupted) raises HistoryStoreError instead of overwriting history.
        """
        outcome = Outcome(outcome)
        with self._db.writing(f"finish run {run_id!r}") as conn:
            cursor = conn.execute(
                "UPDATE runs SET finished = ?, outcome = ?, duration_s = ?, exit_code = ?, signal = ?,"
                " message = ?, peak_rss_mb = ?, cpu_s = ? WHERE run_id = ? AND outcome IS NULL",
                (
                    _encode_time(finished),
                    outcome.value,
                    duration_s,
                    exit_code,
                    signal,
                    _cap_message(message),
                    peak_rss_mb,
                    cpu_s,
                    run_id,
                ),
            )
            if cursor.rowcount == 0:
                known = conn.execute("SELECT outcome FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                cause = "no such run" if known is None else f"it already ended as {known[0]!r}"
                raise HistoryStoreError(
                    f"run history {self.path}: cannot finish run {run_id!r} as {outcome.value!r}: {cause}"
                )

    def grow_missed(self, run_id: str, *, slots: int, finished: datetime) -> None:
        """A ``missed`` row's incident goes on: it now stands for ``slots`` slots, the last one due at ``finished``.

        Only a missed row can grow, and only upwards (the totals add the difference); anything else raises
        HistoryStoreError naming the run.
        """
        with self._db.writing(f"grow missed run {run_id!r}") as conn:
            cursor = conn.execute(
                "UPDATE runs SET slots = ?, finished = ? WHERE run_id = ? AND outcome = 'missed' "
                "AND COALESCE(slots, 1) <= ?",
                (slots, _encode_time(finished), run_id, slots),
            )
            if cursor.rowcount == 0:
                raise HistoryStoreError(
                    f"run history {self.path}: cannot grow run {run_id!r} to {slots} missed slots: "
                    "no missed row with fewer slots"
                )

    def mark_interrupted(self, *, now: datetime) -> list[RunRecord]:
        """Close every open row as interrupted; returns the rows as changed.

        Called at supervisor start: an open row then means the previous supervisor died while the run was
        open. ``finished`` is ``now`` (when the loss was noticed); ``duration_s`` stays NULL because when the
        run really ended is unknown.
        """
        stamp = _encode_time(now)
        with self._db.writing("mark open runs interrupted") as conn:
            rows = conn.execute(f"{_SELECT} WHERE outcome IS NULL ORDER BY started, rowid").fetchall()
            # Decoded before the update so an unreadable row rolls the whole change back.
            opened = [self._decode(row) for row in rows]
            conn.execute(
                "UPDATE runs SET finished = ?, outcome = ?, message = ? WHERE outcome IS NULL",
                (stamp, Outcome.INTERRUPTED.value, INTERRUPTED_MESSAGE),
            )
        finished = _decode_time(stamp)
        return [
            replace(record, finished=finished, outcome=Outcome.INTERRUPTED, message=INTERRUPTED_MESSAGE)
            for record in opened
        ]

    def prune(self, *, keep: int, task: str | None = None) -> int:
        """Keep the newest ``keep`` rows of each task (of ``task`` only, read through its index, when
        given); return how many rows were deleted.

        Two kinds of row survive regardless of ``keep``: open rows (their run will still be finished) and
        each task's schedule anchor (the row :meth:`last_anchor` reads), so retention never makes a task
        look as if it had never run and re-run it off-schedule.
        """
        if keep < 0:
            raise ValueError(f"prune(keep={keep}): keep must be >= 0")
        where, only = ("WHERE task = ?", (task,)) if task is not None else ("", ())
        with self._db.writing(f"prune history to {keep} runs per task") as conn:
            cursor = conn.execute(
                f"""
                DELETE FROM runs WHERE rowid IN (
                    SELECT rowid FROM (
                        SELECT rowid, outcome,
                               ROW_NUMBER() OVER (PARTITION BY task {_NEWEST_FIRST}) AS newest_rank,
                               ROW_NUMBER() OVER (PARTITION BY task, {_MOVES_SCHEDULE} {_NEWEST_FIRST})
                                   AS anchor_rank,
                               {_MOVES_SCHEDULE} AS moves_schedule
                        FROM runs {where})
                    WHERE newest_rank > ? AND outcome IS NOT NULL
                          AND NOT (moves_schedule AND anchor_rank = 1))
                """,
                (*_ANCHOR_TRIGGERS, *_ANCHOR_TRIGGERS, *only, keep),
            )
            return cursor.rowcount

    # ------------------------------------------------------------------------------------------- reads

    def last_anchor(self, task: str) -> datetime | None:
        """When ``task``'s schedule last advanced: ``due`` (else ``started``) of its newest scheduled or
        startup row, whatever its outcome (skipped and testing count) but ``missed``. Manual runs never move
        the schedule. None when the task has never had such a row."""
        with self._db.reading(f"read the last scheduled run of task {task!r}") as conn:
            if conn is None:
                return None
            row = conn.execute(
                f"SELECT COALESCE(due, started) FROM runs WHERE task = ? AND {_MOVES_SCHEDULE} {_NEWEST_FIRST} LIMIT 1",
                (task, *_ANCHOR_TRIGGERS),
            ).fetchone()
        if row is None:
            return None
        try:
            return _decode_time(row[0])
        except (ValueError, TypeError) as exc:
            raise HistoryStoreError(
                f"run history {self.path}: task {task!r} has an unreadable time {row[0]!r}: {exc}"
            ) from exc

    def last_finished(self, task: str) -> RunRecord | None:
        """The newest (by start) row of ``task`` that has an outcome; what ``status`` shows as last_run."""
        rows = self._rows(
            f"read the last finished run of task {task!r}",
            f"{_SELECT} WHERE task = ? AND outcome IS NOT NULL {_NEWEST_FIRST} LIMIT 1",
            (task,),
        )
        return rows[0] if rows else None

    def last_finished_each(self, tasks: Sequence[str]) -> dict[str, RunRecord]:
        """:meth:`last_finished` of every task in ``tasks`` (those without a finished row are left out).

        One statement per chunk of names instead of one per task: each name seeks its newest finished row
        through the ``(task, started)`` index, so the cost follows the number of tasks, not of rows.
        """
        found: dict[str, RunRecord] = {}
        for chunk in _chunks(tasks):
            for record in self._rows(
                "read the last finished run of every task",
                f"WITH names(name) AS (VALUES {_value_marks(len(chunk))}) {_SELECT} "
                "WHERE rowid IN (SELECT (SELECT rowid FROM runs WHERE task = names.name AND "
                f"outcome IS NOT NULL {_NEWEST_FIRST} LIMIT 1) FROM names)",
                tuple(chunk),
            ):
                found[record.task] = record
        return found

    def newest_each(self, tasks: Sequence[str], *, limit: int) -> dict[str, list[RunRecord]]:
        """:meth:`history` (no filters) of every task in ``tasks``: its newest ``limit`` rows, newest first.
        A task without rows maps to an empty list. One statement per chunk of names, each seeking through
        the ``(task, started)`` index."""
        found: dict[str, list[RunRecord]] = {name: [] for name in tasks}
        for chunk in _chunks(tasks):
            for record in self._rows(
                "read the newest runs of every task",
                f"WITH names(name) AS (VALUES {_value_marks(len(chunk))}) {_SELECT} "
                "WHERE rowid IN (SELECT picked.rowid FROM names, runs AS picked WHERE "
                "picked.rowid IN (SELECT rowid FROM runs WHERE task = names.name "
                f"{_NEWEST_FIRST} LIMIT ?)) "
                f"ORDER BY task, started DESC, rowid DESC",
                (*chunk, max(limit, 0)),
            ):
                found[record.task].append(record)
        return found

    def open_runs(self) -> list[RunRecord]:
        """Rows without an outcome, oldest first."""
        return self._rows("read open runs", f"{_SELECT} WHERE outcome IS NULL ORDER BY started, rowid")

    def history(
        self,
        task: str,
        *,
        limit: int = 50,
        outcomes: Sequence[Outcome] = (),
        since: datetime | None = None,
        offset: int = 0,
    ) -> list[RunRecord]:
        """The newest ``limit`` rows of ``task``, newest first; only ``outcomes`` (when given) that started
        at or after ``since`` (when given), after skipping the newest ``offset`` of those (pages). The
        filters apply before the limit."""
        where, params = "task = ?", [task]
        if outcomes:
            where += f" AND outcome IN ({', '.join('?' * len(outcomes))})"
            params.extend(Outcome(o).value for o in outcomes)
        if since is not None:
            where += " AND started >= ?"
            params.append(_encode_time(since))
        return self._rows(
            f"read the history of task {task!r}",
            f"{_SELECT} WHERE {where} {_NEWEST_FIRST} LIMIT ? OFFSET ?",
            (*params, max(limit, 0), max(offset, 0)),
        )

    def run(self, run_id: str) -> RunRecord | None:
        """The row of one run, or None when there is none (yet)."""
        rows = self._rows(f"read run {run_id!r}", f"{_SELECT} WHERE run_id = ?", (run_id,))
        return rows[0] if rows else None

    def outcome_bins(self, tasks: list[str], since: datetime, *, bin_s: float, now: datetime) -> list[OutcomeBin]:
        """Runs of ``tasks`` started at or after ``since`` (or open), counted per task, time bin and outcome."""
        with self._db.reading("count recent runs") as conn:
            return [] if conn is None else read_outcome_bins(conn, tasks, since, bin_s=bin_s, now=now, path=self.path)

    def totals(self) -> HistoryTotals:
        """Run totals per task that pruning never lowers (totals.py): the Prometheus counters' source."""
        with self._db.reading("read the run totals") as conn:
            return HistoryTotals() if conn is None else read_totals(conn, path=self.path)

    def data_version(self) -> int:
        """Changes whenever another connection commits to the database (SQLite's ``data_version``)."""
        with self._db.reading("read the data version") as conn:
            return -1 if conn is None else int(conn.execute("PRAGMA data_version").fetchone()[0])

    # ------------------------------------------------------------------------------------------ pauses

    def pause(self, task: str, *, since: datetime, by: str | None = None) -> datetime:
        """Mark ``task`` paused; returns since when it is paused (the earlier time if it already was)."""
        with self._db.writing(f"pause task {task!r}") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO paused (task, since, by) VALUES (?, ?, ?)", (task, _encode_time(since), by)
            )
            row = conn.execute("SELECT since FROM paused WHERE task = ?", (task,)).fetchone()
        return _decode_time(row[0])

    def resume(self, task: str) -> bool:
        """Clear ``task``'s pause; False when it was not paused."""
        with self._db.writing(f"resume task {task!r}") as conn:
            return conn.execute("DELETE FROM paused WHERE task = ?", (task,)).rowcount > 0

    def paused(self) -> dict[str, datetime]:
        """Every paused task and since when (empty for a history older than the pause table)."""
        with self._db.reading("read paused tasks") as conn:
            # A reader may meet a file written by an older supervisor, before the step that adds the table.
            if (
                conn is None
                or conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'paused'").fetchone()
                is None
            ):
                return {}
            rows = conn.execute("SELECT task, since FROM paused").fetchall()
        try:
            return {str(task): _decode_time(since) for task, since in rows}
        except (ValueError, TypeError) as exc:
            raise HistoryStoreError(f"run history {self.path}: the paused table cannot be read: {exc}") from exc

    def tasks_with_history(self) -> list[str]:
        """Names of every task with at least one row, sorted."""
        with self._db.reading("list tasks with history") as conn:
            if conn is None:
                return []
            return [row[0] for row in conn.execute("SELECT DISTINCT task FROM runs ORDER BY task")]

    # --------------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the connection. Idempotent; any later call raises HistoryStoreError."""
        self._db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _chunks(names: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """``names`` in slices that stay well below SQLite's limit on bound parameters."""
    unique = list(dict.fromkeys(names))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


def _value_marks(count: int) -> str:
    return ", ".join("(?)" for _ in range(count))
