"""The run history's writer on the loop's side, and the run-finished consumers that log and record runs.

Policies:
* The row of a run of main() is opened before its process starts (``opened``), so a supervisor crash leaves
  an open row that the next start marks ``interrupted`` instead of losing the run. Runs that start no
  process (skipped, testing) are one complete row at once (``instant``).
* ``RunHistory`` is the consumer that closes rows: a ``RunFinished`` whose row was opened finishes it; any
  other (a run that could not start its env) is inserted complete.
* History writes never stop the loop: a full disk or a locked database is logged and runs go on.
* Retention while running: a task's rows are pruned after every ``max(1, KeepRuns // 10)`` rows *of that
  task* (the start-up prune of the whole table is service.py's). Each prune reads only that task's rows
  through the (task, started) index, about KeepRuns + KeepRuns/10 of them, so it costs about ten rows' worth
  of work per run whatever the size of the history; no task ever holds more than KeepRuns + KeepRuns/10
  finished rows (plus its schedule anchor, which records.prune always keeps). A whole-table prune at that
  cadence cost work in proportion to every task's history at every prune: with 500 tasks the writer fell
  behind, and the queued writes and SQLite's sorts grew the supervisor's memory with the history.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable, Iterable, Sequence, TypeVar

from ..errors import TaskAutomationError
from ..logsetup import TaskLogs
from ..model import FAILURE_OUTCOMES, Outcome, RunFinished, RunRecord
from .store import HistoryStore

T = TypeVar("T")
# A task's streak of consecutive failures is re-read from this many newest rows when it is loaded.
STREAK_LOOKBACK = 1000


def streak_after(previous: int, outcome: Outcome, *, final: bool = True) -> int:
    """A task's count of consecutive failures after an attempt with ``outcome``: ``ok`` resets it, a
    failure (``FAILURE_OUTCOMES``) adds one, anything else, and any attempt that will be retried, keeps it."""
    if not final:
        return previous
    if outcome is Outcome.OK:
        return 0
    return previous + 1 if outcome in FAILURE_OUTCOMES else previous


def streak_settled(newest_first: Sequence[RunRecord]) -> bool:
    """Whether :func:`failure_streak` of these rows stops at a final ``ok`` among them: then any older rows
    cannot change it, so a short newest slice of the history answers for the whole (same rules on retries)."""
    retried: set[tuple[str, int]] = set()
    for record in newest_first:
        if record.retry_of is not None:
            retried.add((record.retry_of, record.attempt - 1))
        if (record.retry_of or record.run_id, record.attempt) in retried:
            continue
        if record.outcome is Outcome.OK:
            return True
    return False


def failure_streak(newest_first: Iterable[RunRecord]) -> int:
    """Final attempts in a row (newest first) whose outcome is a failure; ``ok`` ends the count, other
    outcomes (skipped, testing, killed, interrupted, open rows) are passed over. An attempt that was
    retried (a newer row is its next attempt) is not final and does not count."""
    streak = 0
    retried: set[tuple[str, int]] = set()  # (first attempt's run id, attempt number) that has a retry
    for record in newest_first:
        if record.retry_of is not None:
            retried.add((record.retry_of, record.attempt - 1))
        if (record.retry_of or record.run_id, record.attempt) in retried:
            continue
        if record.outcome is Outcome.OK:
            break
        if record.outcome in FAILURE_OUTCOMES:
            streak += 1
    return streak


class RunHistory:
    """Writes run rows for the loop; as a consumer of ``RunFinished`` it closes them."""

    def __init__(self, records: HistoryStore, *, logger: logging.Logger, keep_runs: int) -> None:
        self.records = records
        self.log = logger
        self.keep_runs = keep_runs
        self.counts: dict[str, int] = {}  # outcomes since start, for the shutdown summary
        self._open: set[str] = set()
        self._rows_since_prune: dict[str, int] = {}  # task -> its rows since its last prune
        self._writes = 0  # bumped by every write of ours: queued (write-behind) rows change no data_version
        self._last_each: tuple[tuple[object, ...], dict[str, RunRecord]] | None = None

    # ------------------------------------------------------------------ writes
    def opened(self, record: RunRecord) -> None:
        self._open.add(record.run_id)
        self._write(lambda: self.records.start_run(record))

    def instant(self, record: RunRecord) -> None:
        self._write(lambda: self.records.record_instant(record))
        self._count(record.task, record.outcome)

    def grow_missed(self, record: RunRecord) -> None:
        """A ``missed`` row's incident goes on: its grown ``slots`` and ``finished`` replace the stored ones."""
        assert record.slots is not None and record.finished is not None
        slots, finished = record.slots, record.finished
        self._write(lambda: self.records.grow_missed(record.run_id, slots=slots, finished=finished))

    def __call__(self, fact: RunFinished) -> None:
        record = fact.record
        if record.run_id in self._open:
            self._open.discard(record.run_id)
            assert record.finished is not None and record.outcome is not None
            finished, outcome = record.finished, record.outcome
            self._write(
                lambda: self.records.finish_run(
                    record.run_id,
                    finished=finished,
                    outcome=outcome,
                    duration_s=record.duration_s,
                    exit_code=record.exit_code,
                    signal=record.signal,
                    message=record.message,
                    peak_rss_mb=record.peak_rss_mb,
                    cpu_s=record.cpu_s,
                )
            )
            self._count(record.task, outcome)
        else:
            self.instant(record)

    # ------------------------------------------------------------------ reads (an unreadable history is logged
    # and read as empty: the loop goes on, as after a fresh start)
    def last_anchor(self, task: str) -> datetime | None:
        return self._read(lambda: self.records.last_anchor(task), None)

    def last_missed(self, task: str) -> RunRecord | None:
        """The task's newest ``missed`` row: slots up to its ``finished`` are accounted for already."""
        return self._read(
            lambda: next(iter(self.records.history(task, limit=1, outcomes=[Outcome.MISSED])), None), None
        )

    def last_finished(self, task: str) -> RunRecord | None:
        return self._read(lambda: self.records.last_finished(task), None)

    def last_finished_each(self, tasks: Sequence[str]) -> dict[str, RunRecord]:
        """:meth:`last_finished` of many tasks in one read (the status document asks for every task).

        The answer is kept until a write of ours or a commit by any connection (SQLite's ``data_version``):
        a dashboard polling the status then costs the loop no history read while nothing ran.
        """
        key = (self._read(self.records.data_version, -1), self._writes, tuple(tasks))
        if self._last_each is not None and self._last_each[0] == key:
            return self._last_each[1]
        empty: dict[str, RunRecord] = {}
        found = self._read(lambda: self.records.last_finished_each(tasks), empty)
        self._last_each = (key, found)
        return found

    def failure_streak(self, task: str, *, excluding: str | None = None) -> int:
        """The task's current streak; ``excluding`` leaves one run out (the streak *before* that run)."""
        return self._read(
            lambda: failure_streak(
                r for r in self.records.history(task, limit=STREAK_LOOKBACK) if r.run_id != excluding
            ),
            0,
        )

    def recover(self, *, now: datetime) -> list[RunRecord]:
        """Close the rows a crashed supervisor left open (they become ``interrupted``)."""
        self._writes += 1
        return self._read(lambda: self.records.mark_interrupted(now=now), [])

    def _read(self, action: Callable[[], T], default: T) -> T:
        try:
            return action()
        except TaskAutomationError as exc:
            self.log.error("run history: %s", exc)
            return default

    # ------------------------------------------------------------------ bookkeeping
    def _count(self, task: str, outcome: Outcome | None) -> None:
        if outcome is not None:
            self.counts[outcome.value] = self.counts.get(outcome.value, 0) + 1
        since = self._rows_since_prune.get(task, 0) + 1
        if since >= max(1, self.keep_runs // 10):
            since = 0
            self._write(lambda: self.records.prune(keep=self.keep_runs, task=task))
        self._rows_since_prune[task] = since

    def _write(self, action: Callable[[], object]) -> None:
        self._writes += 1
        try:
            action()
        except TaskAutomationError as exc:
            self.log.error("run history: %s", exc)


class RunLog:
    """The consumer that logs each finished run's outcome to the supervisor log and the task's log."""

    def __init__(self, *, logger: logging.Logger, task_logs: TaskLogs) -> None:
        self.log = logger
        self.task_logs = task_logs

    def __call__(self, fact: RunFinished) -> None:
        record = fact.record
        if record.duration_s is None or fact.summary == "":
            return  # a run that never started a process has been logged where it failed
        level = logging.INFO if fact.outcome is Outcome.OK and not fact.leftovers else logging.WARNING
        task_log = self.task_logs.get(fact.task)
        if fact.outcome is Outcome.FAILED and record.message and "\n" in record.message:
            # One record per line, each tagged, so `grep '[run ID]'` shows the whole traceback; before the
            # outcome line, which stays the run's last line (`run-now --wait` stops at it).
            for line in record.message.rstrip().splitlines():
                task_log.error("[run %s] %s", fact.run_id, line)
        task_log.log(
            level, "[run %s] %s in %.2f s: %s", fact.run_id, fact.outcome.value, record.duration_s, fact.summary
        )
        self.log.log(
            level,
            "task %r: run %s %s in %.2f s: %s",
            fact.task,
            fact.run_id,
            fact.outcome.value,
            record.duration_s,
            fact.summary,
        )
