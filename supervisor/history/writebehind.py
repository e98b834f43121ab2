"""History writes that never block scheduling: a write-behind front for :class:`HistoryStore`.

Policies:

- **Same API, no waiting.** ``start_run``, ``record_instant``, ``finish_run`` and ``prune`` return at once:
  each write becomes an operation in a bounded in-memory queue, drained in order by one writer thread. The
  caller (the loop) never waits for SQLite, whatever another process does to the database.
- **Retry, never relabel.** A write that fails for a reason that can pass (the database locked by another
  connection beyond the writer's short busy timeout, the disk full, an I/O error) stays at the head of the
  queue and is retried with backoff (0.1 s doubling to 5 s) until it succeeds. A finished run is therefore
  recorded as it ended once the database accepts writes again; it is never left open to be marked
  ``interrupted`` at the next start. Order is kept, so a finish is never written before its start.
- **Disk full.** Rows are kept in memory and flushed when space returns; one WARNING when writes start
  failing and one INFO line when they succeed again (not one line per row or per retry).
- **Bounded.** At most ``capacity`` operations wait; beyond that new writes are dropped and counted, with
  one ERROR line per minute at most (a database unwritable for days must not exhaust memory).
- **Permanent failures** (a run id recorded twice, finishing a run the database does not know) are logged
  and dropped: retrying cannot fix them.
- **Reads** go to a separate read-only connection (in WAL mode readers are not blocked by a writer) and are
  merged with the rows still waiting in the queue, so ``status``, schedule anchors and failure streaks see
  every run at once, written or not.
- **Shutdown** (``close``) drains the queue for up to ``close_timeout_s``; rows it could not write are named
  in one ERROR line (they were open rows, so the next start marks them interrupted, which is then true:
  their ending was never recorded).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable, Sequence

from ..errors import HistoryStoreError
from ..model import Outcome, RunRecord
from .store import HistoryStore, OutcomeBin, moves_schedule, run_matches

DEFAULT_CAPACITY = 10_000
WRITER_BUSY_TIMEOUT_S = 0.5
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0
_DROP_REPORT_EVERY_S = 60.0


@dataclass(frozen=True)
class _Op:
    """One queued write: what to do, and which run's overlay row it concerns (None for a prune)."""

    describe: str
    apply: Callable[[HistoryStore], object]
    run_id: str | None = None


class WriteBehindStore(HistoryStore):
    """A :class:`HistoryStore` whose writes are queued for a writer thread (see the module policy).

    It *is* a HistoryStore so that it drops in wherever one is expected; every public method is overridden and
    delegates to the two connections it owns.
    """

    def __init__(
        self,
        writer: HistoryStore,
        *,
        reader: HistoryStore,
        logger: logging.Logger,
        capacity: int = DEFAULT_CAPACITY,
        close_timeout_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # Deliberately no super().__init__(): this object opens no connection of its own.
        self.path = writer.path
        self.readonly = False
        self._writer = writer
        self._reader = reader
        self._log = logger
        self._capacity = capacity
        self._close_timeout_s = close_timeout_s
        self._monotonic = monotonic
        self._queue: deque[_Op] = deque()
        self._cond = threading.Condition()
        self._overlay: dict[str, RunRecord] = {}  # run id -> the row as it will be once the queue is written
        self._unwritten: dict[str, int] = {}  # run id -> queued ops still to write for it
        self._open: dict[str, RunRecord] = {}  # started here and not finished yet: the base of a finish
        self._closing = False
        self._failing_since: float | None = None
        self._dropped = 0
        self._next_drop_report = float("-inf")
        self._close_deadline = float("inf")
        self._thread = threading.Thread(target=self._drain, name="history-writer", daemon=True)
        self._thread.start()

    @classmethod
    def wrap(cls, writer: HistoryStore, *, logger: logging.Logger) -> WriteBehindStore:
        """Front an open writer: a short busy timeout for it, and a read-only connection for reads."""
        writer.set_busy_timeout(WRITER_BUSY_TIMEOUT_S)
        return cls(writer, reader=HistoryStore(writer.path, readonly=True), logger=logger)

    # ------------------------------------------------------------------------------------------ writes

    def start_run(self, record: RunRecord) -> None:
        if record.outcome is not None:
            raise ValueError(f"start_run({record.run_id!r}): an open run has no outcome yet")
        with self._cond:
            self._open[record.run_id] = record
        self._enqueue(
            _Op(
                f"record the start of run {record.run_id!r} of task {record.task!r}",
                lambda records: records.start_run(record),
                record.run_id,
            ),
            record,
        )

    def record_instant(self, record: RunRecord) -> None:
        if record.outcome is None:
            raise ValueError(f"record_instant({record.run_id!r}): the outcome must be set")
        self._enqueue(
            _Op(
                f"record run {record.run_id!r} of task {record.task!r}",
                lambda records: records.record_instant(record),
                record.run_id,
            ),
            record,
        )

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
        outcome = Outcome(outcome)
        with self._cond:
            base = self._overlay.get(run_id) or self._open.get(run_id)
            self._open.pop(run_id, None)
        done = (
            None
            if base is None
            else replace(
                base,
                finished=finished,
                outcome=outcome,
                duration_s=duration_s,
                exit_code=exit_code,
                signal=signal,
                message=message,
                peak_rss_mb=peak_rss_mb,
                cpu_s=cpu_s,
            )
        )
        self._enqueue(
            _Op(
                f"finish run {run_id!r} as {outcome.value!r}",
                lambda records: records.finish_run(
                    run_id,
                    finished=finished,
                    outcome=outcome,
                    duration_s=duration_s,
                    exit_code=exit_code,
                    signal=signal,
                    message=message,
                    peak_rss_mb=peak_rss_mb,
                    cpu_s=cpu_s,
                ),
                run_id,
            ),
            done,
        )

    def grow_missed(self, run_id: str, *, slots: int, finished: datetime) -> None:
        with self._cond:
            base = self._overlay.get(run_id)
        grown = None if base is None else replace(base, slots=slots, finished=finished)
        self._enqueue(
            _Op(
                f"grow missed run {run_id!r} to {slots} slots",
                lambda records: records.grow_missed(run_id, slots=slots, finished=finished),
                run_id,
            ),
            grown,
        )

    def prune(self, *, keep: int, task: str | None = None) -> int:
        """Queued like every write; returns 0 because the count is only known once it ran (it is logged
        by nobody: the start-up prune, whose count is shown, runs on the plain HistoryStore before wrapping)."""
        if keep < 0:
            raise ValueError(f"prune(keep={keep}): keep must be >= 0")
        what = f"prune history to {keep} runs" + (f" of task {task!r}" if task is not None else " per task")
        self._enqueue(_Op(what, lambda records: records.prune(keep=keep, task=task)), None)
        return 0

    def mark_interrupted(self, *, now: datetime) -> list[RunRecord]:
        """Synchronous (it runs once, at start, before any run): flush what is queued, then mark."""
        self.flush(timeout=self._close_timeout_s)
        return self._writer.mark_interrupted(now=now)

    def _enqueue(self, op: _Op, row: RunRecord | None) -> None:
        with self._cond:
            self._ensure_open()
            if len(self._queue) >= self._capacity:
                self._dropped += 1
                now = self._monotonic()
                report = now >= self._next_drop_report
                if report:
                    self._next_drop_report = now + _DROP_REPORT_EVERY_S
                dropped = self._dropped
            else:
                self._queue.append(op)
                if op.run_id is not None:
                    self._unwritten[op.run_id] = self._unwritten.get(op.run_id, 0) + 1
                    if row is not None:
                        self._overlay[op.run_id] = row
                self._cond.notify_all()
                return
        if report:
            self._log.error(
                "run history %s: %d write(s) waiting, the limit; %d write(s) dropped so far (%s)",
                self.path,
                self._capacity,
                dropped,
                op.describe,
            )

    # --------------------------------------------------------------------------------- the writer thread

    def _drain(self) -> None:
        delay = _RETRY_FIRST_S
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing and nothing left
                op = self._queue[0]
            try:
                op.apply(self._writer)
            except HistoryStoreError as exc:
                if _may_pass(exc):
                    self._note_failure(exc)
                    with self._cond:
                        if self._closing and self._monotonic() >= self._close_deadline:
                            return
                        self._cond.wait(delay)
                    delay = min(delay * 2, _RETRY_MAX_S)
                    continue
                self._log.error("run history: %s (not retried)", exc)
            except Exception as exc:  # noqa: BLE001 - the writer thread must outlive any one bad write
                self._log.error("run history: %s failed: %s: %s (not retried)", op.describe, type(exc).__name__, exc)
            delay = _RETRY_FIRST_S
            self._note_success()
            with self._cond:
                self._queue.popleft()
                if op.run_id is not None:
                    left = self._unwritten.get(op.run_id, 1) - 1
                    if left:
                        self._unwritten[op.run_id] = left
                    else:
                        self._unwritten.pop(op.run_id, None)
                        self._overlay.pop(op.run_id, None)
                self._cond.notify_all()

    def _note_failure(self, exc: HistoryStoreError) -> None:
        if self._failing_since is None:
            self._failing_since = self._monotonic()
            self._log.warning("%s; keeping %d row write(s) in memory and retrying until it works", exc, self.pending)

    def _note_success(self) -> None:
        if self._failing_since is not None:
            self._log.info(
                "run history: writes work again after %.1f s; writing the %d queued row write(s)",
                self._monotonic() - self._failing_since,
                self.pending,
            )
            self._failing_since = None

    @property
    def pending(self) -> int:
        """Writes not yet in the database."""
        with self._cond:
            return len(self._queue)

    def flush(self, *, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the queue to be written; True when it is empty."""
        deadline = self._monotonic() + timeout
        with self._cond:
            while self._queue:
                left = deadline - self._monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    # ------------------------------------------------------------------------------------------- reads

    def _pending_rows(self, task: str | None = None) -> list[RunRecord]:
        with self._cond:
            return [row for row in self._overlay.values() if task is None or row.task == task]

    def last_anchor(self, task: str) -> datetime | None:
        stored = self._reader.last_anchor(task)
        queued = [row.due or row.started for row in self._pending_rows(task) if moves_schedule(row)]
        candidates = [t for t in (stored, *queued) if t is not None]
        return max(candidates) if candidates else None

    def last_finished(self, task: str) -> RunRecord | None:
        rows = [row for row in self._pending_rows(task) if row.outcome is not None]
        stored = self._reader.last_finished(task)
        if stored is not None and stored.run_id not in {row.run_id for row in self._pending_rows(task)}:
            rows.append(stored)
        return max(rows, key=lambda row: row.started) if rows else None

    def last_finished_each(self, tasks: Sequence[str]) -> dict[str, RunRecord]:
        """:meth:`last_finished` of every task in ``tasks``: one stored read, the queued rows laid over it."""
        stored = self._reader.last_finished_each(tasks)
        pending = self._pending_rows()
        queued_ids = {row.run_id for row in pending}
        wanted = set(tasks)
        best: dict[str, RunRecord] = {task: row for task, row in stored.items() if row.run_id not in queued_ids}
        for row in pending:
            if row.outcome is not None and row.task in wanted:
                current = best.get(row.task)
                if current is None or row.started > current.started:
                    best[row.task] = row
        return best

    def open_runs(self) -> list[RunRecord]:
        queued = {row.run_id: row for row in self._pending_rows()}
        rows = [row for row in self._reader.open_runs() if row.run_id not in queued]
        rows.extend(row for row in queued.values() if row.outcome is None)
        return sorted(rows, key=lambda row: row.started)

    def history(
        self,
        task: str,
        *,
        limit: int = 50,
        outcomes: Sequence[Outcome] = (),
        since: datetime | None = None,
        offset: int = 0,
    ) -> list[RunRecord]:
        queued = {row.run_id: row for row in self._pending_rows(task)}
        skip = max(offset, 0)
        stored = self._reader.history(task, limit=max(limit, 0) + skip + len(queued), outcomes=outcomes, since=since)
        rows = [queued.pop(row.run_id, row) for row in stored]
        rows.extend(queued.values())
        rows = [row for row in rows if run_matches(row, outcomes=outcomes, since=since)]
        rows.sort(key=lambda row: row.started, reverse=True)
        return rows[skip : skip + max(limit, 0)]

    def run(self, run_id: str) -> RunRecord | None:
        with self._cond:
            queued = self._overlay.get(run_id)
        return queued if queued is not None else self._reader.run(run_id)

    def tasks_with_history(self) -> list[str]:
        return sorted(set(self._reader.tasks_with_history()) | {row.task for row in self._pending_rows()})

    def outcome_bins(self, tasks: list[str], since: datetime, *, bin_s: float, now: datetime) -> list[OutcomeBin]:
        return self._reader.outcome_bins(tasks, since, bin_s=bin_s, now=now)  # the dashboard's; stored rows

    def data_version(self) -> int:
        return self._reader.data_version()

    # ------------------------------------------------------------------------------------------ pauses
    # Written at once through the writer connection, not queued: a pause is a person's command, rare, and
    # its answer must say whether it was stored.

    def pause(self, task: str, *, since: datetime, by: str | None = None) -> datetime:
        return self._writer.pause(task, since=since, by=by)

    def resume(self, task: str) -> bool:
        return self._writer.resume(task)

    def paused(self) -> dict[str, datetime]:
        return self._writer.paused()

    # --------------------------------------------------------------------------------------- lifecycle

    def set_busy_timeout(self, seconds: float) -> None:
        self._writer.set_busy_timeout(seconds)

    def _ensure_open(self) -> None:
        if self._closing:
            raise HistoryStoreError(f"run history {self.path}: used after close()")

    def close(self) -> None:
        """Drain the queue (bounded by ``close_timeout_s``), then close both connections. Idempotent."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._close_deadline = self._monotonic() + self._close_timeout_s
            self._cond.notify_all()
        self._thread.join(timeout=self._close_timeout_s + _RETRY_MAX_S)
        with self._cond:
            lost = [op.describe for op in self._queue]
        if lost:
            self._log.error(
                "run history %s: %d write(s) could not be saved before shutdown: %s",
                self.path,
                len(lost),
                "; ".join(lost[:5]) + (" ..." if len(lost) > 5 else ""),
            )
        self._writer.close()
        self._reader.close()


def _may_pass(exc: HistoryStoreError) -> bool:
    """Locked, busy, disk full, I/O error: SQLite's OperationalError family (not corruption or a bug)."""
    return isinstance(exc.__cause__, sqlite3.OperationalError)
