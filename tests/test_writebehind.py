"""History writes never block the caller: a real write lock held by another connection, a real full disk."""

from __future__ import annotations

import errno
import io
import logging
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from tests.support.helpers import wait_for

from supervisor.history.store import HistoryStore
from supervisor.history.writebehind import WriteBehindStore
from supervisor.logsetup import LogErrorReporter, TaskLogs, setup_supervisor_logging
from supervisor.model import Outcome, RunRecord, Trigger

pytestmark = pytest.mark.timeout(120)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, ListHandler]]:
    logger = logging.Logger(f"test.writebehind.{uuid.uuid4().hex}")
    handler = ListHandler()
    logger.addHandler(handler)
    yield logger, handler


def _record(n: int, *, task: str = "demo", message: str | None = None) -> RunRecord:
    return RunRecord(
        run_id=f"run-{n:03d}",
        task=task,
        trigger=Trigger.SCHEDULE,
        started=T0 + timedelta(minutes=n),
        due=T0 + timedelta(minutes=n),
        message=message,
    )


def _stored(path: Path) -> dict[str, str | None]:
    """run id -> outcome, read with a connection of our own."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        return dict(conn.execute("SELECT run_id, outcome FROM runs").fetchall())
    finally:
        conn.close()


def test_a_held_write_lock_does_not_stall_the_caller_nor_mislabel_a_finished_run(tmp_path: Path, log) -> None:
    logger, lines = log
    path = tmp_path / "history.sqlite3"
    history = WriteBehindStore.wrap(HistoryStore(path), logger=logger)
    try:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        try:
            for n in range(5):
                history.start_run(_record(n))
                history.finish_run(
                    f"run-{n:03d}", finished=T0 + timedelta(minutes=n, seconds=3), outcome=Outcome.OK, duration_s=3.0
                )
            # Every call above returned while the lock is still held; reads already see the runs.
            assert _stored(path) == {}
            last = history.last_finished("demo")
            assert last is not None and last.run_id == "run-004" and last.outcome is Outcome.OK
            assert [r.run_id for r in history.history("demo", limit=3)] == ["run-004", "run-003", "run-002"]
            assert history.last_anchor("demo") == T0 + timedelta(minutes=4)
            assert history.open_runs() == []
            wait_for(
                lambda: any("locked" in line and "retrying" in line for line in lines.lines),
                timeout=30,
                what="the writer reporting the lock and retrying",
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert history.flush(timeout=30)
        assert _stored(path) == {f"run-{n:03d}": "ok" for n in range(5)}  # finished, not interrupted
        assert any("writes work again" in line for line in lines.lines)
    finally:
        history.close()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of our own, unmounted afterwards (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount_point)], check=True, timeout=30
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, timeout=30)


def _fill(folder: Path) -> Path:
    """Write until the file system says ENOSPC; return the filler file."""
    filler = folder / "filler"
    # Unbuffered: every write's ENOSPC is raised in the loop, never later by the close of a buffered file.
    with open(filler, "wb", buffering=0) as handle:
        chunk = b"\0" * 65536
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_rows_written_on_a_full_disk_are_kept_and_flushed_when_space_returns(small_tmpfs: Path, log) -> None:
    logger, lines = log
    path = small_tmpfs / "history.sqlite3"
    history = WriteBehindStore.wrap(HistoryStore(path), logger=logger)
    try:
        filler = _fill(small_tmpfs)
        big = "x" * 60_000  # rows that need new pages, so SQLite must grow its files
        for n in range(10):
            history.start_run(_record(n, message=None))
            history.finish_run(
                f"run-{n:03d}",
                finished=T0 + timedelta(minutes=n, seconds=1),
                outcome=Outcome.FAILED,
                duration_s=1.0,
                message=big,
            )
        wait_for(
            lambda: any("full" in line and "retrying" in line for line in lines.lines),
            timeout=30,
            what="the writer reporting the full disk",
        )
        assert history.pending > 0
        assert len(history.history("demo", limit=100)) == 10  # accounted for while the disk is full
        filler.unlink()
        assert history.flush(timeout=60)
        assert _stored(path) == {f"run-{n:03d}": "failed" for n in range(10)}
    finally:
        history.close()


def test_logging_to_a_full_disk_is_one_rate_limited_line(small_tmpfs: Path) -> None:
    stderr = io.StringIO()
    clock = [0.0]
    reporter = LogErrorReporter(stream=lambda: stderr, monotonic=lambda: clock[0], quiet_s=60)
    logger = setup_supervisor_logging(
        small_tmpfs / "supervisor.log", max_bytes=10 << 20, backups=1, console=False, reporter=reporter
    )
    task_logs = TaskLogs(small_tmpfs / "tasks", max_bytes=10 << 20, backups=1, reporter=reporter)
    try:
        filler = _fill(small_tmpfs)
        for n in range(200):
            logger.info("line %d %s", n, "y" * 200)
            task_logs.get("demo").info("task line %d %s", n, "y" * 200)
        report = stderr.getvalue().splitlines()
        assert len(report) == 1, report
        assert "No space left on device" in report[0] and "Traceback" not in stderr.getvalue()
        clock[0] = 61.0
        logger.info("after a minute")
        assert len(stderr.getvalue().splitlines()) == 2
        assert "more failure(s) since the last report" in stderr.getvalue().splitlines()[1]
        filler.unlink()
        task_logs.get("demo").info("space is back")
        assert "space is back" in (small_tmpfs / "tasks" / "demo.log").read_text()
    finally:
        task_logs.close()
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()


def test_a_supervisor_keeps_its_cadence_while_another_process_holds_the_write_lock(home: Path) -> None:
    """End to end: a 3 s canary completes three runs while another connection holds the write lock, and
    every one of them is recorded as it ended (never `interrupted`) once the lock is released."""
    from tests.support.harness import SupervisorProcess
    from tests.support.helpers import write_task

    write_task(home / "Tasks", "canary", config="[Frequency]\nEveryXMinutes = 0.05\n")
    with SupervisorProcess(home) as sup:
        wait_for(lambda: len(sup.history("canary")) >= 1, timeout=60, what="the first canary run")
        before = {run["run_id"] for run in sup.history("canary")}
        during: list[str] = []

        def three_finished_while_locked() -> bool:
            # status is the supervisor's view, merged with the rows still queued for the database.
            last = sup.task_status("canary").get("last_run") or {}
            run_id = last.get("run_id")
            if run_id and run_id not in before and run_id not in during and last.get("outcome") == "ok":
                during.append(run_id)
            return len(during) >= 3

        holder = sqlite3.connect(sup.paths.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        try:
            wait_for(three_finished_while_locked, timeout=60, what="three canary runs finishing while locked")
            assert not set(during) & set(_stored(sup.paths.database))  # none of them could be written yet
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # Each run's start row and its finish are queued separately: wait for the finishes, not just the rows.
        wait_for(
            lambda: all(_stored(sup.paths.database).get(run_id) is not None for run_id in during),
            timeout=60,
            what="queued rows written and finished",
        )
        stored = _stored(sup.paths.database)
        assert {stored[run_id] for run_id in during} == {"ok"}
        assert "interrupted" not in stored.values()
        assert "locked" in sup.log()


def test_a_supervisor_on_a_full_disk_accounts_for_every_run_and_prints_no_traceback(tmp_path: Path) -> None:
    """End to end on a 48 MiB tmpfs home: the disk fills while a 3 s canary runs; its runs are still counted
    (status), written once space returns, and the console gets at most a few rate-limited lines."""
    from tests.support.harness import SupervisorProcess
    from tests.support.helpers import write_task

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(home)], check=True, timeout=30)
    try:
        write_task(home / "Tasks", "canary", config="[Frequency]\nEveryXMinutes = 0.05\n")
        sup = SupervisorProcess(home)
        sup.console = tmp_path / "console.txt"  # not on the full disk: the test reads it
        with sup:
            wait_for(lambda: len(sup.history("canary")) >= 1, timeout=60, what="the first canary run")
            before = {run["run_id"] for run in sup.history("canary")}
            filler = _fill(home)
            during: list[str] = []

            def three_finished_on_a_full_disk() -> bool:
                last = sup.task_status("canary").get("last_run") or {}
                run_id = last.get("run_id")
                if run_id and run_id not in before and run_id not in during and last.get("outcome") == "ok":
                    during.append(run_id)
                return len(during) >= 3

            wait_for(three_finished_on_a_full_disk, timeout=60, what="three canary runs on a full disk")
            filler.unlink()
            wait_for(
                lambda: set(during) <= set(_stored(sup.paths.database)),
                timeout=60,
                what="rows kept in memory written once space returned",
            )
            assert {_stored(sup.paths.database)[run_id] for run_id in during} == {"ok"}
        console = sup.console_text()
        assert "Traceback" not in console, console[-3000:]
        assert console.count("cannot write the log") <= 4, console[-3000:]  # rate-limited (tmpfs may fit them)
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False, timeout=30)


def test_filtered_history_and_run_lookup_see_queued_rows(tmp_path: Path, log) -> None:
    """`history --outcome/--since` and `run-now --wait` read through the queue like every other read."""
    logger, _ = log
    path = tmp_path / "history.sqlite3"
    history = WriteBehindStore.wrap(HistoryStore(path), logger=logger)
    try:
        history.start_run(_record(0))
        history.finish_run("run-000", finished=T0 + timedelta(seconds=3), outcome=Outcome.FAILED, duration_s=3.0)
        assert history.flush(timeout=30)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the next rows stay queued
        try:
            history.start_run(_record(1))
            history.finish_run(
                "run-001", finished=T0 + timedelta(minutes=1, seconds=3), outcome=Outcome.FAILED, duration_s=3.0
            )
            history.start_run(_record(2))
            assert _stored(path) == {"run-000": "failed"}
            failed = history.history("demo", outcomes=[Outcome.FAILED])
            assert [r.run_id for r in failed] == ["run-001", "run-000"]
            assert [
                r.run_id for r in history.history("demo", outcomes=[Outcome.FAILED], since=T0 + timedelta(seconds=30))
            ] == ["run-001"]
            assert [r.run_id for r in history.history("demo", outcomes=[Outcome.OK])] == []
            queued = history.run("run-001")
            assert queued is not None and queued.outcome is Outcome.FAILED
            still_open = history.run("run-002")
            assert still_open is not None and still_open.outcome is None
            stored = history.run("run-000")
            assert stored is not None and stored.outcome is Outcome.FAILED
            assert history.run("nope") is None
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    finally:
        history.close()
