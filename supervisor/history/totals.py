"""Run totals that outlive the rows: how many runs of each task ended with each outcome, when its last ``ok``
run finished, and histogram buckets of run durations and schedule lateness.

Policies:

- **Kept by the database itself.** SQLite triggers on the ``runs`` table add a row's figures in the same
  transaction that gives it its outcome (an instant row, a finished run, a run marked interrupted) or, for
  lateness, that inserts a scheduled row that starts something. Every writer path counts, none can forget to,
  and a crash can never record a row without counting it (or count it twice).
- **Pruning never lowers them.** ``KeepRuns`` deletes old rows; nothing deletes from these tables, so the
  counters Prometheus reads are monotonic across restarts and pruning (they reset only with the database).
- **Backfilled** from the rows present when the migration that adds the tables runs; figures of rows pruned
  before that are lost (they were never counted).
- **Buckets are fixed** by the migration step that created the triggers (:data:`DURATION_BOUNDS`,
  :data:`LATENESS_BOUNDS`): changing them needs a new migration step that rebuilds the triggers, never an
  edit of these tuples.
- **Durations** count runs of ``main()`` that ended with a duration (:data:`RAN`); rows that started no
  process (skipped, testing, env-failed, missed) have none worth counting. **Lateness** is ``started - due``
  of scheduled rows that started a run (:data:`STARTED`), clamped at 0 (a start a moment early is on time).
- **Missed runs** are counted by slot, not by row (one row stands for an outage's or an incident's slots), under
  the row's reason; a row whose ``slots`` grows (an incident that goes on) adds the difference. Rows written
  before the step that added ``reason`` and ``slots`` are counted as one slot under ``""``.
- A reader that meets a database older than these tables (it may not migrate) gets the same figures computed
  from the rows present, with the same SQL the migration backfills with.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..errors import HistoryStoreError
from .rows import decode_time

# Upper bounds (seconds, inclusive) of the histogram buckets; one more bucket holds everything above the last.
DURATION_BOUNDS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LATENESS_BOUNDS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Outcomes of a run whose main() process ran to an end it measured.
RAN = ("ok", "failed", "timeout", "memory", "killed", "crashed")
# Outcomes of a row that started something at its due time (interrupted: started, end unknown).
STARTED = (*RAN, "interrupted", "testing")


@dataclass(frozen=True)
class Observations:
    """One histogram: ``counts[i]`` observations in bucket ``i`` (not cumulative; the last one is above every
    bound), and the sum of all observed values."""

    counts: tuple[int, ...]
    total: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)


def empty(bounds: Sequence[float]) -> Observations:
    return Observations(counts=(0,) * (len(bounds) + 1))


@dataclass(frozen=True)
class HistoryTotals:
    """Every total of one history. ``runs[task][outcome]`` and ``missed[task][reason]`` are counts;
    ``last_ok[task]`` is when its newest ``ok`` run finished; ``lateness`` is summed over every task the
    history has ever held (a removed task's share stays, so the home-wide counter never goes down)."""

    runs: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    missed: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    last_ok: Mapping[str, datetime] = field(default_factory=dict)
    durations: Mapping[str, Observations] = field(default_factory=dict)
    lateness: Observations = field(default_factory=lambda: empty(LATENESS_BOUNDS))


def _bucket(value: str, bounds: Sequence[float]) -> str:
    """SQL: the index of the bucket ``value`` falls in."""
    arms = " ".join(f"WHEN {value} <= {bound!r} THEN {i}" for i, bound in enumerate(bounds))
    return f"CASE {arms} ELSE {len(bounds)} END"


def _listed(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _lateness(row: str) -> str:
    return f"MAX((julianday({row}started) - julianday({row}due)) * 86400.0, 0.0)"


_DURATION_ROWS = f"outcome IN ({_listed(RAN)}) AND duration_s IS NOT NULL"
_LATENESS_ROWS = f"trigger = 'schedule' AND due IS NOT NULL AND (outcome IS NULL OR outcome IN ({_listed(STARTED)}))"

# The figures of the rows present: what the migration backfills and what a reader of an older file reads.
TOTALS_FROM_ROWS = (
    "SELECT task, outcome, '' AS reason, COUNT(*) AS runs, MAX(finished) AS last_finished FROM runs "
    "WHERE outcome IS NOT NULL GROUP BY task, outcome"
)
OBSERVATIONS_FROM_ROWS = (
    f"SELECT task, 'duration' AS metric, {_bucket('duration_s', DURATION_BOUNDS)} AS bucket, COUNT(*) AS count, "
    f"TOTAL(duration_s) AS total FROM runs WHERE {_DURATION_ROWS} GROUP BY 1, 2, 3 "
    "UNION ALL "
    f"SELECT task, 'lateness', {_bucket('late', LATENESS_BOUNDS)}, COUNT(*), TOTAL(late) "
    f"FROM (SELECT task, {_lateness('')} AS late FROM runs WHERE {_LATENESS_ROWS}) GROUP BY 1, 2, 3"
)


def _observe(metric: str, value: str, bounds: Sequence[float], *, when: str = "1") -> str:
    """Trigger statements adding one observation of ``value`` to NEW.task's ``metric`` histogram when ``when``
    holds (a trigger's body cannot branch: the statements are no-ops otherwise)."""
    bucket = _bucket(value, bounds)
    return (
        "INSERT OR IGNORE INTO run_observations (task, metric, bucket, count, total) "
        f"SELECT NEW.task, '{metric}', {bucket}, 0, 0.0 WHERE {when}; "
        f"UPDATE run_observations SET count = count + 1, total = total + {value} "
        f"WHERE {when} AND task = NEW.task AND metric = '{metric}' AND bucket = {bucket};"
    )


_COUNT_NEW_OUTCOME = (
    "INSERT OR IGNORE INTO run_totals (task, outcome, reason, runs) VALUES (NEW.task, NEW.outcome, '', 0); "
    "UPDATE run_totals SET runs = runs + 1, "
    "last_finished = NULLIF(MAX(COALESCE(last_finished, ''), COALESCE(NEW.finished, '')), '') "
    "WHERE task = NEW.task AND outcome = NEW.outcome AND reason = ''; "
    + _observe(
        "duration",
        "NEW.duration_s",
        DURATION_BOUNDS,
        when=f"NEW.outcome IN ({_listed(RAN)}) AND NEW.duration_s IS NOT NULL",
    )
)


# A missed row counts its slots under its reason (schema step 6); every other row counts one under ''.
_REASON = "CASE WHEN NEW.outcome = 'missed' THEN COALESCE(NEW.reason, '') ELSE '' END"
_WEIGHT = "CASE WHEN NEW.outcome = 'missed' THEN MAX(COALESCE(NEW.slots, 1), 1) ELSE 1 END"
_COUNT_NEW_OUTCOME_BY_REASON = (
    f"INSERT OR IGNORE INTO run_totals (task, outcome, reason, runs) VALUES (NEW.task, NEW.outcome, {_REASON}, 0); "
    f"UPDATE run_totals SET runs = runs + {_WEIGHT}, "
    "last_finished = NULLIF(MAX(COALESCE(last_finished, ''), COALESCE(NEW.finished, '')), '') "
    f"WHERE task = NEW.task AND outcome = NEW.outcome AND reason = {_REASON}; "
    + _observe(
        "duration",
        "NEW.duration_s",
        DURATION_BOUNDS,
        when=f"NEW.outcome IN ({_listed(RAN)}) AND NEW.duration_s IS NOT NULL",
    )
)

# The schema step that adds the totals (schema.MIGRATIONS appends it; never edit it once shipped).
MIGRATION: tuple[str, ...] = (
    """
    CREATE TABLE run_totals (
        task          TEXT NOT NULL,
        outcome       TEXT NOT NULL,
        reason        TEXT NOT NULL DEFAULT '',   -- a missed run's reason; '' for every other outcome
        runs          INTEGER NOT NULL,
        last_finished TEXT,
        PRIMARY KEY (task, outcome, reason)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE run_observations (
        task    TEXT NOT NULL,
        metric  TEXT NOT NULL,                    -- 'duration' | 'lateness'
        bucket  INTEGER NOT NULL,                 -- index into the metric's bounds; len(bounds) = above all
        count   INTEGER NOT NULL,
        total   REAL NOT NULL,
        PRIMARY KEY (task, metric, bucket)
    ) WITHOUT ROWID
    """,
    f"INSERT INTO run_totals (task, outcome, reason, runs, last_finished) {TOTALS_FROM_ROWS}",
    f"INSERT INTO run_observations (task, metric, bucket, count, total) {OBSERVATIONS_FROM_ROWS}",
    f"CREATE TRIGGER runs_count_instant AFTER INSERT ON runs WHEN NEW.outcome IS NOT NULL "
    f"BEGIN {_COUNT_NEW_OUTCOME} END",
    f"CREATE TRIGGER runs_count_finished AFTER UPDATE OF outcome ON runs "
    f"WHEN OLD.outcome IS NULL AND NEW.outcome IS NOT NULL BEGIN {_COUNT_NEW_OUTCOME} END",
    f"CREATE TRIGGER runs_count_lateness AFTER INSERT ON runs WHEN NEW.trigger = 'schedule' AND NEW.due IS NOT NULL "
    f"AND (NEW.outcome IS NULL OR NEW.outcome IN ({_listed(STARTED)})) "
    f"BEGIN {_observe('lateness', _lateness('NEW.'), LATENESS_BOUNDS)} END",
)


# Schema step 6 (after the runs table got reason and slots): the outcome triggers rebuilt to count a missed row's
# slots under its reason, and one more for a missed row whose slot count grows.
MISSED_MIGRATION: tuple[str, ...] = (
    "DROP TRIGGER runs_count_instant",
    "DROP TRIGGER runs_count_finished",
    f"CREATE TRIGGER runs_count_instant AFTER INSERT ON runs WHEN NEW.outcome IS NOT NULL "
    f"BEGIN {_COUNT_NEW_OUTCOME_BY_REASON} END",
    f"CREATE TRIGGER runs_count_finished AFTER UPDATE OF outcome ON runs "
    f"WHEN OLD.outcome IS NULL AND NEW.outcome IS NOT NULL BEGIN {_COUNT_NEW_OUTCOME_BY_REASON} END",
    "CREATE TRIGGER runs_count_more_slots AFTER UPDATE OF slots ON runs "
    "WHEN OLD.outcome = 'missed' AND NEW.outcome = 'missed' AND COALESCE(NEW.slots, 1) > COALESCE(OLD.slots, 1) "
    "BEGIN UPDATE run_totals SET runs = runs + COALESCE(NEW.slots, 1) - COALESCE(OLD.slots, 1) "
    "WHERE task = NEW.task AND outcome = 'missed' AND reason = COALESCE(NEW.reason, ''); END",
)


def read_totals(conn: sqlite3.Connection, *, path: Path) -> HistoryTotals:
    """Every total, from the tables when the file has them, else computed from the rows present.
    A value that cannot be decoded raises HistoryStoreError naming the file."""
    try:
        return _read(conn)
    except (ValueError, TypeError) as exc:
        raise HistoryStoreError(f"run history {path}: the run totals cannot be read: {exc}") from exc


def _read(conn: sqlite3.Connection) -> HistoryTotals:
    has_tables = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'run_totals'").fetchone() is not None
    totals_sql = "SELECT task, outcome, reason, runs, last_finished FROM run_totals" if has_tables else TOTALS_FROM_ROWS
    observed_sql = (
        "SELECT task, metric, bucket, count, total FROM run_observations" if has_tables else OBSERVATIONS_FROM_ROWS
    )
    runs: dict[str, dict[str, int]] = {}
    missed: dict[str, dict[str, int]] = {}
    last_ok: dict[str, datetime] = {}
    for task, outcome, reason, count, last in conn.execute(totals_sql):
        runs.setdefault(task, {})
        runs[task][outcome] = runs[task].get(outcome, 0) + int(count)
        if outcome == "missed":
            missed.setdefault(task, {})[reason] = int(count)
        if outcome == "ok" and last:
            last_ok[task] = decode_time(last)
    durations: dict[str, list[float]] = {}
    lateness = [0.0] * (len(LATENESS_BOUNDS) + 2)  # the buckets, then the sum
    for task, metric, bucket, count, total in conn.execute(observed_sql):
        if metric == "duration":
            figures = durations.setdefault(task, [0.0] * (len(DURATION_BOUNDS) + 2))
        elif metric == "lateness":
            figures = lateness
        else:
            continue
        figures[int(bucket)] += int(count)
        figures[-1] += float(total)
    return HistoryTotals(
        runs=runs,
        missed=missed,
        last_ok=last_ok,
        durations={task: _observations(figures) for task, figures in durations.items()},
        lateness=_observations(lateness),
    )


def _observations(figures: list[float]) -> Observations:
    return Observations(counts=tuple(int(n) for n in figures[:-1]), total=figures[-1])
