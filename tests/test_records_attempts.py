"""History rows of retry attempts: the columns, their JSON, and the migration of an older database."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

from supervisor.history.store import SCHEMA_VERSION, HistoryStore, record_to_json
from supervisor.model import Outcome, RunRecord, Trigger

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)

# The first shipped schema (records_schema.MIGRATIONS[0]), as a database written before retries existed has it.
V1_SCHEMA = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, task TEXT NOT NULL, trigger TEXT NOT NULL, due TEXT,
                   started TEXT NOT NULL, finished TEXT, outcome TEXT, duration_s REAL, exit_code INTEGER,
                   signal TEXT, message TEXT, peak_rss_mb REAL, cpu_s REAL, log_path TEXT);
CREATE INDEX runs_task_started ON runs (task, started);
CREATE INDEX runs_open ON runs (started) WHERE outcome IS NULL;
PRAGMA user_version = 1;
"""


def test_attempt_rows_round_trip(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite3") as db:
        first = RunRecord(
            run_id="r-1",
            task="flaky",
            trigger=Trigger.SCHEDULE,
            started=T0,
            due=T0,
            finished=T0 + timedelta(seconds=1),
            outcome=Outcome.FAILED,
            duration_s=1.0,
        )
        retry = RunRecord(
            run_id="r-2",
            task="flaky",
            trigger=Trigger.RETRY,
            started=T0 + timedelta(seconds=31),
            due=T0 + timedelta(seconds=31),
            attempt=2,
            retry_of="r-1",
        )
        db.record_instant(first)
        db.start_run(retry)
        db.finish_run("r-2", finished=T0 + timedelta(seconds=32), outcome=Outcome.OK, duration_s=1.0)
        newest, oldest = db.history("flaky")
        # A retry never moves the schedule: the anchor stays the first attempt's due time.
        assert db.last_anchor("flaky") == T0
    assert (newest.trigger, newest.attempt, newest.retry_of) == (Trigger.RETRY, 2, "r-1")
    assert (oldest.attempt, oldest.retry_of) == (1, None)
    data = record_to_json(newest)
    assert (data["trigger"], data["attempt"], data["retry_of"]) == ("retry", 2, "r-1")


def test_a_database_from_before_retries_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute(
            "INSERT INTO runs (run_id, task, trigger, due, started, finished, outcome) VALUES "
            "('old-1', 'legacy', 'schedule', ?, ?, ?, 'ok')",
            (T0.isoformat(), T0.isoformat(), (T0 + timedelta(seconds=2)).isoformat()),
        )
        conn.commit()
    with HistoryStore(path, readonly=True) as reader:  # the CLI may not migrate: it reads old rows as they are
        [seen] = reader.history("legacy")
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert (seen.run_id, seen.attempt, seen.retry_of, seen.outcome) == ("old-1", 1, None, Outcome.OK)
    with HistoryStore(path) as db:  # the supervisor (the one writer) migrates, once
        [row] = db.history("legacy")
    assert row == seen
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
