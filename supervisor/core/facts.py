"""The facts the loop publishes about runs of main(): ``RunStarted`` to the run-started listeners and
``RunFinished`` to the consumers (history first; the outcome log lines, notifications and pings plug in the
same way).

Policies:
* Every run ends in exactly one ``RunFinished``, including a run that could not start and a row that was
  complete at once (skipped, testing, env-failed; those are written to the history directly).
* ``consecutive_failures`` counts the task's final attempts in a row that failed; an attempt that will be
  retried (``final=False``) leaves the streak alone.
* A listener's or consumer's exception is logged with its traceback; it never stops the loop, the run or
  the others.
* The last finished run of each task is kept here, so the status snapshot shows it without a history read.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from ..history.recorder import RunHistory, streak_after
from ..model import Outcome, RunFinished, RunRecord, RunStarted, Trigger
from .lifecycle import TaskState

Consumer = Callable[[RunFinished], None]
StartListener = Callable[[RunStarted], None]


class RunFacts:
    def __init__(
        self,
        *,
        history: RunHistory,
        consumers: Sequence[Consumer],
        start_listeners: Sequence[StartListener],
        logger: logging.Logger,
    ) -> None:
        self.history = history
        self.consumers = tuple(consumers)
        self.start_listeners = tuple(start_listeners)
        self.log = logger
        self.last_finished: dict[str, RunRecord] = {}  # task -> the newest finished row this supervisor wrote
        self.finished_count = 0  # rows written so far: a snapshot copies ``last_finished`` only when it grew

    def announce(self, fact: RunStarted) -> None:
        """A run of main() has started: tell every run-started listener (they only queue work)."""
        for listener in self.start_listeners:
            try:
                listener(fact)
            except Exception:  # a listener's bug must not stop the loop or the run (logged with its traceback)
                self.log.exception("run %s: a run-started listener failed", fact.run_id)

    def instant(self, record: RunRecord) -> None:
        """A run that started no process (skipped, testing): one complete history row at once."""
        self.history.instant(record)
        self._remember(record)

    def grown(self, record: RunRecord) -> None:
        """A ``missed`` row's incident grew (more slots): the history and the status follow; consumers hear
        nothing new (one notice per incident, core/missing.py)."""
        self.history.grow_missed(record)
        self._remember(record)

    def env_failed(self, st: TaskState, error: str, *, at: datetime, log_path: Path | None) -> None:
        """A task whose env could not be built records one ``env-failed`` run (so its history says why)."""
        record = RunRecord.instant(
            task=st.name, trigger=Trigger.SCHEDULE, at=at, outcome=Outcome.ENV_FAILED, message=error, log_path=log_path
        )
        self.publish(st, record)

    def publish(
        self, st: TaskState | None, record: RunRecord, *, final: bool = True, summary: str = "", leftovers: int = 0
    ) -> None:
        """A run of main() has ended: hand the fact to every consumer (history first)."""
        assert record.outcome is not None
        failures = streak_after(st.failures if st is not None else 0, record.outcome, final=final)
        if st is not None:
            st.failures = failures
        self._remember(record)
        fact = RunFinished(
            task=record.task,
            run_id=record.run_id,
            trigger=record.trigger,
            outcome=record.outcome,
            record=record,
            consecutive_failures=failures,
            summary=summary,
            leftovers=leftovers,
            spec=st.spec if st is not None else None,
            attempt=record.attempt,
            final=final,
        )
        for consumer in self.consumers:
            try:
                consumer(fact)
            except Exception:  # a consumer's bug must not stop the loop or the other consumers
                self.log.exception("run %s: a run-finished consumer failed", record.run_id)

    def _remember(self, record: RunRecord) -> None:
        # The history's rule for "last finished": the finished row that started last.
        self.finished_count += 1
        known = self.last_finished.get(record.task)
        if known is None or record.started >= known.started:
            self.last_finished[record.task] = record
