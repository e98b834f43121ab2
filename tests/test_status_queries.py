"""The batched status reads equal the per-task ones they replace; the offline document follows its inputs."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from supervisor.config.schema import read_task_config
from supervisor.history.recorder import STREAK_LOOKBACK, failure_streak, streak_settled
from supervisor.history.store import HistoryStore
from supervisor.history.writebehind import WriteBehindStore
from supervisor.model import Outcome, RunRecord, Trigger
from supervisor.paths import Paths
from supervisor.query.offline import STREAK_SLICE, OfflineStatus
from supervisor.query.status import offline_row, offline_status_json
from supervisor.scheduling.triggers import trigger_for

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
OUTCOMES = (Outcome.OK, Outcome.FAILED, Outcome.TIMEOUT, Outcome.SKIPPED, Outcome.KILLED, None)


def _row(
    run_id: str, *, task: str, minute: float, outcome: Outcome | None, attempt: int = 1, retry_of: str | None = None
) -> RunRecord:
    started = T0 + timedelta(minutes=minute)
    return RunRecord(
        run_id=run_id,
        task=task,
        trigger=Trigger.SCHEDULE,
        started=started,
        due=started,
        outcome=outcome,
        finished=started + timedelta(seconds=1) if outcome is not None else None,
        attempt=attempt,
        retry_of=retry_of,
    )


def _write(records: HistoryStore, row: RunRecord) -> None:
    if row.outcome is None:
        records.start_run(row)
    else:
        records.record_instant(row)


def _varied_history(records: HistoryStore) -> list[str]:
    """Tasks with mixed outcomes, open rows (also the newest), equal start times, retries, a long failure
    run, a task with only open rows and a task with none; returns every name, including the empty one."""
    names = [f"t{i:02d}" for i in range(7)]
    n = 0
    for i, name in enumerate(names[:4]):
        for k in range(25):
            n += 1
            _write(records, _row(f"r{n:04d}", task=name, minute=k // 2, outcome=OUTCOMES[(k * (i + 1)) % 6]))
    for k in range(STREAK_SLICE * 3):  # a failure run longer than the first slice, then an old ok
        _write(records, _row(f"long{k:03d}", task="t04", minute=k, outcome=Outcome.OK if k == 0 else Outcome.FAILED))
    _write(records, _row("retry-a", task="t05", minute=1, outcome=Outcome.OK))
    _write(records, _row("retry-b", task="t05", minute=2, outcome=Outcome.FAILED))
    _write(records, _row("retry-c", task="t05", minute=3, outcome=Outcome.OK, attempt=2, retry_of="retry-b"))
    _write(records, _row("open-only", task="t06", minute=5, outcome=None))
    return [*names, "never-ran"]


def test_last_finished_each_and_newest_each_equal_the_per_task_queries(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "history.sqlite3") as records:
        names = _varied_history(records)
        last = records.last_finished_each(names)
        assert {n: last.get(n) for n in names} == {n: records.last_finished(n) for n in names}
        assert "t06" not in last and "never-ran" not in last and len(last) == 6
        for limit in (1, 3, STREAK_SLICE, 100):
            newest = records.newest_each(names, limit=limit)
            assert newest == {n: records.history(n, limit=limit) for n in names}


def test_batched_reads_split_many_names_into_chunks(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "history.sqlite3") as records:
        names = [f"task-{i:04d}" for i in range(1200)]  # more than one statement's worth of names
        for i in range(0, 1200, 7):
            _write(records, _row(f"x{i}", task=names[i], minute=i, outcome=Outcome.FAILED))
        last = records.last_finished_each(names)
        assert sorted(last) == names[::7] and last["task-1197"].run_id == "x1197"
        assert sum(len(rows) for rows in records.newest_each(names, limit=5).values()) == len(names[::7])


def test_the_write_behind_overlay_is_laid_over_the_batched_read(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    logger = logging.Logger(f"test.status-queries.{uuid.uuid4().hex}")
    history = WriteBehindStore.wrap(HistoryStore(path), logger=logger)
    try:
        holder = sqlite3.connect(path, isolation_level=None)
        _write(history, _row("stored", task="a", minute=1, outcome=Outcome.OK))
        assert history.flush(timeout=30)
        holder.execute("BEGIN IMMEDIATE")  # the next rows stay queued
        try:
            _write(history, _row("queued-b", task="b", minute=2, outcome=Outcome.FAILED))
            _write(history, _row("queued-a", task="a", minute=3, outcome=Outcome.TIMEOUT))
            _write(history, _row("queued-open", task="a", minute=4, outcome=None))
            names = ["a", "b", "c"]
            assert history.last_finished_each(names) == {
                n: r for n in names if (r := history.last_finished(n)) is not None
            }
            assert history.last_finished_each(names)["a"].run_id == "queued-a"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    finally:
        history.close()


def test_streak_settled_only_when_a_final_ok_is_in_the_slice(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "history.sqlite3") as records:
        names = _varied_history(records)
        for name in names:
            full = records.history(name, limit=STREAK_LOOKBACK)
            for size in range(1, len(full) + 1):
                if streak_settled(full[:size]):
                    assert failure_streak(full[:size]) == failure_streak(full), (name, size)
        long_run = records.history("t04", limit=STREAK_SLICE)
        assert not streak_settled(long_run) and failure_streak(records.history("t04", limit=1000)) == 23
        # t05's newest row is a retry that succeeded: the failed attempt it retried is not final.
        assert streak_settled(records.history("t05", limit=1)) and failure_streak(records.history("t05")) == 0


def _per_task_document(paths: Paths, records: HistoryStore) -> dict[str, object]:
    """The offline document as it was built before the batched reads: everything read per task."""
    from supervisor.discovery.scan import scan_tasks
    from supervisor.errors import TaskAutomationError

    rows = []
    for name in scan_tasks(paths.tasks):
        enabled, error, schedule = True, None, None
        try:
            spec = read_task_config(paths.task_config(name), task=name).spec
            enabled, schedule = spec.enabled, trigger_for(spec, tz=timezone.utc).describe()
        except TaskAutomationError as exc:
            error = str(exc)
        rows.append(
            offline_row(
                name,
                enabled=enabled,
                error=error,
                last=records.last_finished(name),
                failures=failure_streak(records.history(name, limit=STREAK_LOOKBACK)),
                schedule=schedule,
                paused_since=records.paused().get(name),
            )
        )
    return offline_status_json(rows)


def test_offline_document_equals_the_per_task_build_and_follows_configs_and_history(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    configs = {
        "t00": "[Frequency]\nEveryXMinutes = 5\n",
        "t01": "[Frequency]\nEveryXMinutes = 7\nEnabled = false\n",
        "t04": "[Frequency]\nEveryXMinutes = nope\n",
        "t05": "[Frequency]\nEveryXMinutes = 60\n",
    }
    for name in ("t00", "t01", "t04", "t05", "fresh"):
        (paths.task_dir(name)).mkdir(parents=True)
        (paths.task_dir(name) / "main.py").write_text("def main():\n    return None\n")
        if name in configs:
            paths.task_config(name).write_text(configs[name])
    paths.database.parent.mkdir(parents=True, exist_ok=True)
    with HistoryStore(paths.database) as writer:
        _varied_history(writer)
        writer.pause("t05", since=T0)
    offline = OfflineStatus(paths, zone=lambda: timezone.utc)
    with HistoryStore(paths.database, readonly=True) as records:
        first = offline.document(records, reuse=True)
        assert first == _per_task_document(paths, records)
        assert [t["consecutive_failures"] for t in first["tasks"] if t["name"] == "t04"] == [23]
        assert offline.document(records, reuse=True) is first  # nothing changed: the same document

        paths.task_config("t00").write_text("[Frequency]\nEveryXMinutes = 50\n")  # another size: a new signature
        second = offline.document(records, reuse=True)
        assert second is not first and second == _per_task_document(paths, records)
        assert "50" in str(next(t for t in second["tasks"] if t["name"] == "t00")["schedule"])

        with HistoryStore(paths.database) as writer:  # a commit by another connection
            _write(writer, _row("newest", task="fresh", minute=90, outcome=Outcome.FAILED))
        third = offline.document(records, reuse=True)
        assert third == _per_task_document(paths, records)
        assert next(t for t in third["tasks"] if t["name"] == "fresh")["last_run"]["run_id"] == "newest"
