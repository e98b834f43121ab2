"""The loop's book of runs of main(): due runs started or skipped, run slots, [Retry] attempts, and the facts
published when runs start and end.

``RunBook`` extends ``TaskBook`` (tasks.py); the loop (loop.py) derives from it and provides ``_launch``.

Policies:
* A due run while the previous one is still running (or still waiting for a run slot) is recorded as
  ``skipped``; the next due time is the next slot. A Testing=True confirmation counts as a start.
* Run slots (``[Supervisor] MaxConcurrentRuns``): a due run, a startup run and a retry wait in the FIFO of
  slots.py when every slot is taken (state ``queued``). A manual run-now bypasses the cap.
* [Retry]: when an attempt of a scheduled (or startup, or retry) run fails with a retried outcome, the pure
  ``retry.decide`` picks the time of the next attempt; the attempt is published with ``final=False`` and
  the retry starts as its own run (trigger ``retry``) without touching the anchor or the next slot. The
  next slot wins: a retry not due before it, or still waiting for a run slot when it comes, is dropped.
  Manual runs are not retried.
* Facts: ``RunStarted`` goes to the run-started listeners, ``RunFinished`` (with the failure streak, which an
  attempt that will be retried leaves alone) to the consumers, history first. A listener's or consumer's
  exception is logged; it never stops the loop or the others.
"""

from __future__ import annotations

import logging
from datetime import datetime, tzinfo
from typing import Callable, Sequence

from ..clock import Clock
from ..envs.builder import EnvBuilder
from ..history.recorder import RunHistory, streak_after
from ..logsetup import TaskLogs
from ..model import HomeConfig, Outcome, RunFinished, RunMode, RunRecord, RunStarted, Trigger, new_run_id
from ..paths import Paths
from ..scheduling.retry import PendingRetry, decide, slot_wins
from .lifecycle import TaskState, is_scheduled
from .slots import QueuedRun, RunQueue
from .tasks import TaskBook

Consumer = Callable[[RunFinished], None]
StartListener = Callable[[RunStarted], None]


class RunBook(TaskBook):
    def __init__(
        self,
        paths: Paths,
        *,
        home_config: HomeConfig,
        clock: Clock,
        tz: tzinfo,
        logger: logging.Logger,
        task_logs: TaskLogs,
        envs: EnvBuilder,
        history: RunHistory,
        max_inits: int,
        consumers: Sequence[Consumer],
        start_listeners: Sequence[StartListener],
    ) -> None:
        super().__init__(
            paths,
            home_config=home_config,
            clock=clock,
            tz=tz,
            logger=logger,
            task_logs=task_logs,
            envs=envs,
            history=history,
            max_inits=max_inits,
        )
        self.consumers = tuple(consumers)
        self.start_listeners = tuple(start_listeners)
        self.queue = RunQueue(self.config.max_concurrent_runs)  # due runs waiting for a run slot

    def _launch(
        self, st: TaskState, *, mode: RunMode, trigger: Trigger, due: datetime | None, queued: QueuedRun | None = None
    ) -> str | None:
        raise NotImplementedError  # the loop's

    # ------------------------------------------------------------------ due runs
    def _start_retry(self, st: TaskState, now: datetime) -> None:
        """Start a pending retry that is due, or drop it when the next slot comes first (never overlap)."""
        pending = st.retry
        assert pending is not None
        # Dropped when the slot is not later than the retry, or when it came while the retry still waited
        # (for a manual run to end): either way the slot runs and the retry never overlaps it.
        slot_came = st.next_due is not None and st.next_due <= now
        if slot_wins(retry_at=pending.at, next_slot=st.next_due) or slot_came:
            st.retry = None
            self._say(
                st.name,
                logging.INFO,
                f"task {st.name!r}: retry (attempt {pending.attempt}) dropped: "
                f"the next slot {self._fmt(st.next_due)} comes first",
            )
            return
        if pending.at > now or st.main_run is not None or st.name in self.queue:
            return  # not yet; or a manual run is in flight: the retry waits for it to end
        st.retry = None
        # A retry takes a run slot like any due run (MaxConcurrentRuns).
        st.queued_since = now
        self.queue.add(
            QueuedRun(
                task=st.name,
                trigger=Trigger.RETRY,
                due=pending.at,
                since=now,
                attempt=pending.attempt,
                retry_of=pending.retry_of,
            )
        )
        self._start_queued()

    def _start(self, st: TaskState, trigger: Trigger, due: datetime | None) -> None:
        assert st.spec is not None
        waiting = self.queue.get(st.name)
        if waiting is not None and waiting.trigger is Trigger.RETRY:
            # The next slot wins over a retry still waiting for a run slot: the retry is dropped.
            self._drop_queued(st, "the next slot came first")
            self._say(
                st.name,
                logging.INFO,
                f"task {st.name!r}: retry (attempt {waiting.attempt}) dropped: the next slot came first",
            )
        if st.main_run is not None or st.name in self.queue:
            why = (
                f"previous run {st.main_run} still running"
                if st.main_run
                else "the previous due run is still waiting for a run slot"
            )
            self._instant(st, trigger, due, Outcome.SKIPPED, why)
            self._say(
                st.name, logging.WARNING, f"task {st.name!r}: due run skipped: {why}; next run {self._fmt(st.next_due)}"
            )
            return
        if st.spec.testing:
            self._instant(st, trigger, due, Outcome.TESTING, "Testing=True: main() not executed")
            self._say(
                st.name,
                logging.INFO,
                f"task {st.name!r}: [Testing] run confirmed ({trigger.value}); "
                f"main() not executed; next run {self._fmt(st.next_due)}",
            )
            return
        st.queued_since = self.clock.now()
        self.queue.add(QueuedRun(task=st.name, trigger=trigger, due=due, since=st.queued_since))
        self._start_queued()

    def _start_queued(self) -> None:
        """Start the queued runs that have a free slot, first come first served."""
        for run in self.queue.take(in_flight=self._mains_in_flight(), now_mono=self.clock.monotonic()):
            st = self.tasks.get(run.task)
            if st is None or not is_scheduled(st) or st.main_run is not None:
                continue  # unloaded meanwhile (its open row, if any, was closed then)
            st.queued_since = None
            self._guarded(st.name, self._launch, st, mode=RunMode.MAIN, trigger=run.trigger, due=run.due, queued=run)

    def _instant(self, st: TaskState, trigger: Trigger, due: datetime | None, outcome: Outcome, message: str) -> str:
        """A run that starts no process (skipped, testing): one complete history row at once."""
        now = self.clock.now()
        record = RunRecord(
            run_id=new_run_id(now),
            task=st.name,
            trigger=trigger,
            started=now,
            due=due or now,
            finished=now,
            outcome=outcome,
            duration_s=0.0,
            message=message,
            log_path=self.task_logs.path(st.name),
        )
        self.history.instant(record)
        return record.run_id

    # ------------------------------------------------------------------ facts
    def _announce(self, fact: RunStarted) -> None:
        """A run of main() has started: tell every run-started listener (they only queue work)."""
        for listener in self.start_listeners:
            try:
                listener(fact)
            except Exception:  # a listener's bug must not stop the loop or the run (logged with its traceback)
                self.log.exception("run %s: a run-started listener failed", fact.run_id)

    def _publish(self, st: TaskState | None, record: RunRecord, *, summary: str, leftovers: int = 0) -> None:
        """A run of main() has ended: hand the fact to every consumer (history first)."""
        assert record.outcome is not None
        final = self._decide_retry(st, record)
        # An attempt that will be retried does not count in the streak.
        failures = streak_after(st.failures if st is not None else 0, record.outcome, final=final)
        if st is not None:
            st.failures = failures
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

    def _decide_retry(self, st: TaskState | None, record: RunRecord) -> bool:
        """Apply [Retry] to an attempt that ended; returns whether it is final (see the module docstring)."""
        assert record.outcome is not None and record.finished is not None
        if (
            st is None
            or st.spec is None
            or not is_scheduled(st)
            or self.stopping is not None
            or record.trigger is Trigger.MANUAL
        ):
            return True
        decision = decide(
            st.spec.retry,
            attempt=record.attempt,
            outcome=record.outcome,
            finished=record.finished,
            next_slot=st.next_due,
        )
        if decision.final:
            if record.attempt > 1 or "next slot" in decision.reason:
                self._say(
                    st.name,
                    logging.INFO,
                    f"task {st.name!r}: attempt {record.attempt} {record.outcome.value}: final ({decision.reason})",
                )
            return True
        assert decision.retry_at is not None and decision.next_attempt is not None
        st.retry = PendingRetry(
            at=decision.retry_at, attempt=decision.next_attempt, retry_of=record.retry_of or record.run_id
        )
        self._say(
            st.name,
            logging.INFO,
            f"task {st.name!r}: attempt {record.attempt} {record.outcome.value}; "
            f"retry (attempt {decision.next_attempt} of {st.spec.retry.attempts + 1}) "
            f"at {self._fmt(decision.retry_at)}",
        )
        return False

    def _drop_queued(self, st: TaskState, why: str) -> None:
        """Forget the task's queued run (closing its history row if it has one)."""
        queued = self.queue.get(st.name)
        if queued is None:
            return
        self.queue.drop(st.name)
        st.queued_since = None
        self._close_unstarted(st, queued, why)

    def _close_unstarted(self, st: TaskState, queued: QueuedRun, why: str) -> None:
        """A start being retried has an open history row: close it, the run will not start."""
        if queued.run_id is not None:
            self._publish(
                st,
                RunRecord(
                    run_id=queued.run_id,
                    task=st.name,
                    trigger=queued.trigger,
                    started=queued.since,
                    due=queued.due,
                    finished=self.clock.now(),
                    outcome=Outcome.KILLED,
                    duration_s=0.0,
                    log_path=self.task_logs.path(st.name),
                    message=f"never started: {why} while its start was retried",
                ),
                summary="",
            )
