"""The history's columns of the third wave (schema step 6): a missed row's reason and slots, an After run's
upstream, run-now's params; migrated in place, shown to an old file's reader, counted by the totals."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from supervisor.errors import HistoryStoreError
from supervisor.history.rows import record_to_json
from supervisor.history.schema import MIGRATIONS, SCHEMA_VERSION
from supervisor.history.store import HistoryStore
from supervisor.model import MissedReason, Outcome, RunRecord, Trigger

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def _missed(run_id: str, *, reason: MissedReason, slots: int) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        task="a",
        trigger=Trigger.SCHEDULE,
        started=T0,
        due=T0,
        finished=T0,
        outcome=Outcome.MISSED,
        duration_s=0.0,
        message="m",
        reason=reason,
        slots=slots,
    )


def test_the_new_columns_round_trip_and_show_in_json(tmp_path: Path) -> None:
    after = RunRecord(
        run_id="r-after",
        task="b",
        trigger=Trigger.AFTER,
        started=T0,
        upstream="r-up",
        params=(("DAY", "monday"), ("TOKEN", "****")),
    )
    with HistoryStore(tmp_path / "h.sqlite3") as db:
        db.start_run(after)
        db.record_instant(_missed("r-m", reason=MissedReason.DOWN, slots=4))
        seen, missed = db.run("r-after"), db.run("r-m")
    assert seen is not None and missed is not None
    assert (seen.trigger, seen.upstream, seen.params) == (Trigger.AFTER, "r-up", after.params)
    assert (missed.reason, missed.slots) == (MissedReason.DOWN, 4)
    data = record_to_json(missed)
    assert (data["outcome"], data["reason"], data["slots"], data["params"]) == ("missed", "down", 4, {})
    assert record_to_json(seen)["params"] == {"DAY": "monday", "TOKEN": "****"}


def test_missed_slots_count_by_reason_and_a_growing_incident_adds_the_difference(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite3") as db:
        db.record_instant(_missed("r-1", reason=MissedReason.DOWN, slots=3))
        db.record_instant(_missed("r-2", reason=MissedReason.ENV, slots=1))
        db.grow_missed("r-2", slots=5, finished=T0 + timedelta(minutes=4))
        assert db.run("r-2").slots == 5  # type: ignore[union-attr]
        with pytest.raises(HistoryStoreError, match=r"r-2.*2 missed slots"):
            db.grow_missed("r-2", slots=2, finished=T0)  # never downwards
        db.prune(keep=0)  # pruning the rows never lowers the counters
        totals = db.totals()
    assert totals.missed == {"a": {"down": 3, "env": 5}}
    assert totals.runs["a"]["missed"] == 8


def test_a_file_of_schema_5_is_migrated_by_the_writer_and_shown_complete_to_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as conn:
        for step in MIGRATIONS[:5]:
            for statement in step:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 5")
        conn.execute(
            "INSERT INTO runs (run_id, task, trigger, started, finished, outcome, duration_s) "
            "VALUES ('o1', 'old', 'schedule', ?, ?, 'ok', 1.0)",
            (T0.isoformat(), T0.isoformat()),
        )
        conn.commit()
    with HistoryStore(path, readonly=True) as reader:  # may not migrate: the view shows the new columns empty
        old = reader.run("o1")
    assert old is not None
    assert (old.reason, old.slots, old.upstream, old.params, old.attempt) == (None, None, None, (), 1)
    with HistoryStore(path) as db:
        db.record_instant(_missed("r-m", reason=MissedReason.QUEUE, slots=2))
        assert db.totals().runs["old"] == {"ok": 1}
        assert db.totals().missed == {"a": {"queue": 2}}
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6


def test_a_missed_row_never_moves_the_schedule_anchor_nor_is_the_anchor_pruned_for_it(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite3") as db:
        ran = RunRecord.instant(
            task="a",
            trigger=Trigger.SCHEDULE,
            at=T0 - timedelta(hours=1),
            outcome=Outcome.OK,
            message="",
            log_path=None,
        )
        db.record_instant(ran)
        db.record_instant(_missed("r-m", reason=MissedReason.DOWN, slots=3))  # newer, trigger schedule
        assert db.last_anchor("a") == T0 - timedelta(hours=1)
        db.prune(keep=1)
        assert db.last_anchor("a") == T0 - timedelta(hours=1), "the anchor row survives a prune to one row"


def test_the_write_behind_store_grows_a_missed_row_in_order_and_shows_it_before_it_is_written(tmp_path: Path) -> None:
    import logging

    from supervisor.history.writebehind import WriteBehindStore

    db = WriteBehindStore.wrap(HistoryStore(tmp_path / "h.sqlite3"), logger=logging.getLogger("test.wb"))
    try:
        db.record_instant(_missed("r-g", reason=MissedReason.ERROR, slots=1))
        db.grow_missed("r-g", slots=4, finished=T0 + timedelta(minutes=3))
        queued = db.run("r-g")
        assert queued is not None and (queued.slots, queued.finished) == (4, T0 + timedelta(minutes=3))
        assert db.last_anchor("a") is None, "a queued missed row is no anchor either"
        assert db.flush(timeout=10)
        stored = db.history("a", outcomes=[Outcome.MISSED])
        assert [(r.slots, r.finished) for r in stored] == [(4, T0 + timedelta(minutes=3))]
    finally:
        db.close()
    with HistoryStore(tmp_path / "h.sqlite3", readonly=True) as reader:
        assert reader.totals().missed == {"a": {"error": 4}}, "the metric's counter grew with the row"
