"""Run history: round trips, open/finish, crash recovery, schedule anchors, retention, read-only, errors."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from supervisor.errors import HistoryStoreError
from supervisor.history.store import INTERRUPTED_MESSAGE, MESSAGE_CAP, SCHEMA_VERSION, HistoryStore, record_to_json
from supervisor.model import Outcome, RunRecord, Trigger

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(
    run_id: str,
    *,
    task: str = "alpha",
    trigger: Trigger = Trigger.SCHEDULE,
    started: datetime = T0,
    due: datetime | None = None,
    outcome: Outcome | None = None,
    **extra: object,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        task=task,
        trigger=trigger,
        started=started,
        due=due,
        outcome=outcome,
        finished=started + timedelta(seconds=1) if outcome is not None else None,
        **extra,
    )  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path):
    records = HistoryStore(tmp_path / "state" / "history.sqlite3")
    yield records
    records.close()


def test_every_field_round_trips_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state" / "history.sqlite3"
    local = timezone(timedelta(hours=2))
    full = RunRecord(
        run_id="r-1",
        task="alpha",
        trigger=Trigger.STARTUP,
        due=datetime(2024, 3, 1, 14, 0, tzinfo=local),
        started=datetime(2024, 3, 1, 14, 0, 0, 250, tzinfo=local),
        finished=datetime(2024, 3, 1, 14, 0, 3, tzinfo=local),
        outcome=Outcome.CRASHED,
        duration_s=2.75,
        exit_code=-11,
        signal="SIGSEGV",
        message="Traceback\n  ünïcode ✓\nBoom",
        peak_rss_mb=12.5,
        cpu_s=0.125,
        log_path=tmp_path / "logs" / "tasks" / "alpha.log",
    )
    with HistoryStore(path) as records:
        records.record_instant(full)
    assert path.exists()  # parent folders were created
    with HistoryStore(path) as records:
        [back] = records.history("alpha")
    assert back == full  # aware datetimes compare by instant
    for stamp in (back.due, back.started, back.finished):
        assert stamp is not None and stamp.utcoffset() == timedelta(0)
    assert back.started == datetime(2024, 3, 1, 12, 0, 0, 250, tzinfo=timezone.utc)
    assert isinstance(back.trigger, Trigger) and isinstance(back.outcome, Outcome)
    assert isinstance(back.log_path, Path)


def test_sparse_record_keeps_nulls(db: HistoryStore) -> None:
    db.record_instant(run("r-1", outcome=Outcome.SKIPPED))
    [back] = db.history("alpha")
    assert back.due is None and back.exit_code is None and back.message is None and back.log_path is None


def test_open_row_then_finish(db: HistoryStore) -> None:
    db.start_run(run("r-1", due=at(0), log_path=Path("/tmp/x.log")))
    [opened] = db.open_runs()
    assert opened.outcome is None and opened.finished is None
    assert db.last_finished("alpha") is None

    db.finish_run(
        "r-1",
        finished=at(1),
        outcome=Outcome.FAILED,
        duration_s=60.0,
        exit_code=1,
        message="ValueError: x",
        peak_rss_mb=3.0,
        cpu_s=0.5,
    )
    assert db.open_runs() == []
    done = db.last_finished("alpha")
    assert done is not None
    assert (
        done.outcome,
        done.finished,
        done.duration_s,
        done.exit_code,
        done.message,
        done.peak_rss_mb,
        done.cpu_s,
    ) == (Outcome.FAILED, at(1), 60.0, 1, "ValueError: x", 3.0, 0.5)
    assert done.log_path == Path("/tmp/x.log") and done.due == at(0)  # start-time fields kept


def test_a_run_ends_exactly_once(db: HistoryStore) -> None:
    db.start_run(run("r-1"))
    db.finish_run("r-1", finished=at(1), outcome=Outcome.OK, duration_s=1.0)
    with pytest.raises(HistoryStoreError, match=r"r-1.*already ended as 'ok'"):
        db.finish_run("r-1", finished=at(2), outcome=Outcome.FAILED, duration_s=2.0)
    with pytest.raises(HistoryStoreError, match=r"'nope'.*no such run"):
        db.finish_run("nope", finished=at(2), outcome=Outcome.OK, duration_s=1.0)
    assert db.last_finished("alpha").outcome is Outcome.OK  # type: ignore[union-attr]
    with pytest.raises(HistoryStoreError, match=r"'r-1'.*'alpha'.*already recorded"):
        db.start_run(run("r-1"))


def test_contract_violations_are_rejected(db: HistoryStore) -> None:
    with pytest.raises(ValueError, match="outcome"):
        db.record_instant(run("r-1"))
    with pytest.raises(ValueError, match="no outcome"):
        db.start_run(run("r-2", outcome=Outcome.OK))
    with pytest.raises(ValueError, match="naive"):
        db.start_run(run("r-3", started=datetime(2024, 1, 1, 12, 0)))
    assert db.history("alpha") == []


def test_long_messages_keep_head_and_tail(db: HistoryStore) -> None:
    message = "HEAD\n" + "x" * (3 * MESSAGE_CAP) + "\nValueError: the real cause"
    db.record_instant(run("r-1", outcome=Outcome.FAILED, message=message))
    [back] = db.history("alpha")
    assert back.message is not None
    assert back.message.startswith("HEAD\n") and back.message.endswith("ValueError: the real cause")
    assert "characters truncated" in back.message
    assert MESSAGE_CAP <= len(back.message) < MESSAGE_CAP + 100
    exact = "y" * MESSAGE_CAP
    db.start_run(run("r-2", started=at(1)))
    db.finish_run("r-2", finished=at(2), outcome=Outcome.FAILED, duration_s=1.0, message=exact)
    assert db.history("alpha", limit=1)[0].message == exact


def test_mark_interrupted_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    crashed = HistoryStore(path)
    crashed.start_run(run("open-a", started=at(0)))
    crashed.start_run(run("open-b", task="beta", started=at(1), trigger=Trigger.MANUAL))
    crashed.start_run(run("done", started=at(2)))
    crashed.finish_run("done", finished=at(3), outcome=Outcome.OK, duration_s=60.0, message="fine")
    del crashed  # dropped without close(), as a dying supervisor would

    with HistoryStore(path) as records:
        changed = records.mark_interrupted(now=at(30))
        assert [r.run_id for r in changed] == ["open-a", "open-b"]
        for record in changed:
            assert (record.outcome, record.finished, record.message) == (
                Outcome.INTERRUPTED,
                at(30),
                INTERRUPTED_MESSAGE,
            )
            assert record.duration_s is None  # when the run really ended is unknown
        assert records.open_runs() == []
        assert records.history("beta")[0] == changed[1]
        assert records.history("alpha")[0].outcome is Outcome.OK  # finished rows untouched
        assert records.history("alpha")[0].message == "fine"
        assert records.mark_interrupted(now=at(40)) == []


def test_last_anchor_ignores_manual_and_counts_skipped_and_testing(db: HistoryStore) -> None:
    assert db.last_anchor("alpha") is None
    db.record_instant(run("s1", started=at(0), due=at(0), outcome=Outcome.OK))
    db.record_instant(run("m1", started=at(5), trigger=Trigger.MANUAL, outcome=Outcome.OK))
    assert db.last_anchor("alpha") == at(0)

    db.record_instant(run("s2", started=at(60.5), due=at(60), outcome=Outcome.SKIPPED))
    assert db.last_anchor("alpha") == at(60)  # the due time, not the start
    db.record_instant(run("s3", started=at(120), due=at(120), outcome=Outcome.TESTING))
    assert db.last_anchor("alpha") == at(120)
    db.start_run(run("st", started=at(130), trigger=Trigger.STARTUP))  # open; due NULL -> started
    assert db.last_anchor("alpha") == at(130)
    db.start_run(run("m2", started=at(140), trigger=Trigger.MANUAL))
    assert db.last_anchor("alpha") == at(130)
    assert db.last_anchor("beta") is None
    only_manual = "gamma"
    db.record_instant(run("g", task=only_manual, trigger=Trigger.MANUAL, outcome=Outcome.OK))
    assert db.last_anchor(only_manual) is None


def test_history_is_newest_first_and_limited(db: HistoryStore) -> None:
    # Inserted out of order; two share a start time and then insertion order decides.
    for run_id, minute in (("c", 2), ("a", 0), ("d", 3), ("b", 1), ("d2", 3)):
        db.record_instant(run(run_id, started=at(minute), outcome=Outcome.OK))
    db.record_instant(run("other", task="beta", started=at(10), outcome=Outcome.OK))
    assert [r.run_id for r in db.history("alpha")] == ["d2", "d", "c", "b", "a"]
    assert [r.run_id for r in db.history("alpha", limit=2)] == ["d2", "d"]
    assert db.history("alpha", limit=0) == []
    assert db.history("nobody") == []
    assert db.tasks_with_history() == ["alpha", "beta"]


def test_last_finished_skips_open_rows(db: HistoryStore) -> None:
    db.record_instant(run("old", started=at(0), outcome=Outcome.TIMEOUT))
    db.start_run(run("new", started=at(10)))
    assert db.last_finished("alpha").run_id == "old"  # type: ignore[union-attr]


def test_prune_keeps_newest_per_task(db: HistoryStore) -> None:
    for i in range(6):
        db.record_instant(run(f"a{i}", started=at(i), outcome=Outcome.OK))
    for i in range(2):
        db.record_instant(run(f"b{i}", task="beta", started=at(i), outcome=Outcome.OK))
    assert db.prune(keep=3) == 3
    assert [r.run_id for r in db.history("alpha")] == ["a5", "a4", "a3"]
    assert [r.run_id for r in db.history("beta")] == ["b1", "b0"]
    assert db.prune(keep=3) == 0
    with pytest.raises(ValueError):
        db.prune(keep=-1)


def test_prune_never_drops_open_rows_or_the_schedule_anchor(db: HistoryStore) -> None:
    db.start_run(run("open", started=at(0), trigger=Trigger.MANUAL))
    db.record_instant(run("anchor", started=at(1), due=at(1), outcome=Outcome.OK))
    for i in range(5):
        db.record_instant(run(f"m{i}", started=at(10 + i), trigger=Trigger.MANUAL, outcome=Outcome.OK))
    assert db.prune(keep=2) == 3  # m0..m2 go; open and anchor stay though older than the newest 2
    assert {r.run_id for r in db.history("alpha")} == {"m4", "m3", "anchor", "open"}
    assert db.last_anchor("alpha") == at(1)


def test_prune_of_one_task_leaves_the_others_and_keeps_its_anchor(db: HistoryStore) -> None:
    """The prune the running supervisor does after a task's rows: that task's rows only, same survivors."""
    db.start_run(run("open", started=at(0), trigger=Trigger.MANUAL))
    db.record_instant(run("anchor", started=at(1), due=at(1), outcome=Outcome.OK))
    for i in range(5):
        db.record_instant(run(f"m{i}", started=at(10 + i), trigger=Trigger.MANUAL, outcome=Outcome.OK))
        db.record_instant(run(f"b{i}", task="beta", started=at(10 + i), outcome=Outcome.OK))
    assert db.prune(keep=2, task="alpha") == 3
    assert {r.run_id for r in db.history("alpha")} == {"m4", "m3", "anchor", "open"}
    assert len(db.history("beta")) == 5
    assert db.prune(keep=2, task="beta") == 3 and db.prune(keep=2, task="gamma") == 0


def test_readonly_on_a_missing_file_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "history.sqlite3"
    with HistoryStore(path, readonly=True) as records:
        assert records.history("alpha") == []
        assert records.tasks_with_history() == []
        assert records.open_runs() == []
        assert records.last_anchor("alpha") is None
        assert records.last_finished("alpha") is None
        with pytest.raises(HistoryStoreError, match="read-only"):
            records.start_run(run("r-1"))
        assert list(tmp_path.iterdir()) == []

        # The supervisor creates the history later: the same reader now sees it.
        with HistoryStore(path) as writer:
            writer.record_instant(run("r-1", outcome=Outcome.OK))
            assert [r.run_id for r in records.history("alpha")] == ["r-1"]


def test_readonly_reads_existing_history_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    with HistoryStore(path) as writer:
        writer.start_run(run("r-1"))
    with HistoryStore(path, readonly=True) as reader:
        assert [r.run_id for r in reader.open_runs()] == ["r-1"]
        with pytest.raises(HistoryStoreError, match="read-only"):
            reader.mark_interrupted(now=at(1))
    with HistoryStore(path) as writer:
        assert len(writer.open_runs()) == 1


@pytest.mark.parametrize("readonly", [False, True])
def test_garbage_file_is_a_records_error_naming_the_file(tmp_path: Path, readonly: bool) -> None:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(HistoryStoreError) as caught:
        # A reader opens the file at its first read, so a long-lived one starts whatever the file's state.
        HistoryStore(path, readonly=readonly).history("a")
    assert str(path) in str(caught.value) and "not a database" in str(caught.value)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    with HistoryStore(path):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryStoreError, match=rf"{path}.*schema version {SCHEMA_VERSION + 1}"):
        HistoryStore(path)


def test_database_pragmas(db: HistoryStore) -> None:
    with sqlite3.connect(db.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        plan = " ".join(
            row[3]
            for row in other.execute("EXPLAIN QUERY PLAN SELECT * FROM runs WHERE task = 'a' ORDER BY started DESC")
        )
    assert "runs_task_started" in plan
    # synchronous is per connection, so it can only be seen on the object's own (2 = FULL).
    assert db._db.conn is not None and db._db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2


@pytest.mark.timeout(30)
def test_locked_database_raises_within_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    with HistoryStore(path, busy_timeout=0.2) as records:
        records.record_instant(run("before", outcome=Outcome.OK))
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            holder.execute("DELETE FROM runs")
            with pytest.raises(HistoryStoreError) as caught:
                records.start_run(run("r-1", started=at(1)))
            message = str(caught.value)
            assert str(path) in message and "locked" in message and "0.2 s" in message
            # Readers are not blocked by a writer in WAL mode, and see the last committed state.
            assert [r.run_id for r in records.history("alpha")] == ["before"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        records.start_run(run("r-1", started=at(1)))  # the failed write left no transaction behind
        assert [r.run_id for r in records.history("alpha")] == ["r-1", "before"]


@pytest.mark.timeout(60)
def test_row_survives_a_sigkilled_writer(tmp_path: Path) -> None:
    path = tmp_path / "state" / "history.sqlite3"
    child = textwrap.dedent(f"""
        import os
        from datetime import datetime, timezone
        from supervisor.history.store import HistoryStore
        from supervisor.model import RunRecord, Trigger
        records = HistoryStore(__import__("pathlib").Path({str(path)!r}))
        started = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
        records.start_run(RunRecord(run_id="doomed", task="alpha", trigger=Trigger.SCHEDULE, started=started,
                                    due=started))
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with HistoryStore(path) as records:
        assert [r.run_id for r in records.open_runs()] == ["doomed"]
        assert records.last_anchor("alpha") == T0
        [changed] = records.mark_interrupted(now=at(5))
        assert changed.run_id == "doomed" and changed.outcome is Outcome.INTERRUPTED


@pytest.mark.timeout(60)
def test_concurrent_threads_share_one_object(db: HistoryStore) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(40):
                run_id = f"t{n}-{i}"
                db.start_run(run(run_id, task=f"task{n}", started=at(i)))
                db.history(f"task{(n + 1) % 4}", limit=5)
                db.finish_run(run_id, finished=at(i + 1), outcome=Outcome.OK, duration_s=1.0)
        except BaseException as exc:  # surfaced below; a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
    assert errors == []
    assert db.tasks_with_history() == ["task0", "task1", "task2", "task3"]
    assert all(len(db.history(f"task{n}", limit=100)) == 40 for n in range(4))
    assert db.open_runs() == []


def test_closed_records_refuse_use(tmp_path: Path) -> None:
    records = HistoryStore(tmp_path / "history.sqlite3")
    records.close()
    records.close()  # idempotent
    with pytest.raises(HistoryStoreError, match="after close"):
        records.history("alpha")


def test_record_to_json_is_stable(db: HistoryStore) -> None:
    db.record_instant(
        run(
            "r-1",
            due=at(0),
            outcome=Outcome.ENV_FAILED,
            duration_s=None,
            exit_code=None,
            message="pip failed",
            log_path=Path("/h/logs/tasks/alpha.log"),
        )
    )
    [back] = db.history("alpha")
    data = record_to_json(back)
    assert list(data) == [
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
    ]
    assert data["trigger"] == "schedule" and data["outcome"] == "env-failed"
    assert data["due"] == "2024-03-01T12:00:00+00:00" and data["finished"] == "2024-03-01T12:00:01+00:00"
    assert data["log_path"] == "/h/logs/tasks/alpha.log" and data["exit_code"] is None
    assert datetime.fromisoformat(str(data["started"])) == T0
    assert json.loads(json.dumps(data)) == data  # plain JSON types only
    open_json = record_to_json(run("r-2"))
    assert open_json["outcome"] is None and open_json["finished"] is None
