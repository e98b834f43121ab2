"""The loop's book of runs of main(): due runs started or skipped, run slots, [Retry] attempts, manual runs,
and how a run's end is settled.

``RunBook`` works on the task book's states (tasks.py) through the parts the supervisor (loop.py) hands it:
the run slots, the launcher, the facts, the lifecycle and chains.py ([Frequency] After); all on the loop thread.

Policies:
* Every due time comes from the task's ``Trigger``. The next due time is advanced and the run recorded as
  started *before* the spawn, so a crash cannot leave a task overdue and hot-looping.
* A due run while the previous one runs is ``skipped``; one still waiting for a run slot or a gate gives way
  as a ``missed`` row (gating.py). A Testing=True confirmation counts as a start.
* pause NAME moves a loaded task to ``paused`` (resume NAME: ``scheduled``); its slots pass without a run or
  a row, and after resume it waits for its next slot (its retries wait too).
* Run slots (``[Supervisor] MaxConcurrentRuns``): a due run, a startup run and a retry wait in the FIFO of
  slots.py when every slot is taken (state ``queued``), or while a start gate is closed (gating.py). A
  manual run-now bypasses the cap and the gates (unless it asks to respect the gates).
* A start that fails transiently (``TaskAutomationError.transient``, or a lack of processes, threads, memory
  or files, at the spawn or reported by the shim once it ran) puts the run back at the head of the queue
  after a back-off (2 s doubling to 60 s; state ``queued``, stage ``backing-off``), with its run id and open
  history row; a manual run too. It is no outcome (not recorded, counted or notified); only when it cannot
  be retried (stopping, unloaded, another attempt waits) is its row closed as ``killed`` ("never started").
  Any other failure to start is a failed run.
* [Retry]: a failed attempt (not manual) with a retried outcome is published ``final=False``; ``decide_retry``
  times the retry, its own run (trigger ``retry``, an After run's upstream kept), which never moves the anchor
  or the next slot; that slot wins over a retry not started before it. FailureBackoff: damping.py.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Mapping

from ..clock import Clock
from ..execution.params import RunParams
from ..model import Outcome, RunMode, RunRecord, RunResult, RunStage, TaskPhase, Trigger, Upstream, new_run_id
from ..scheduling.retry import PendingRetry, decide_retry, slot_wins
from . import damping
from .chains import Chains
from .clocksteps import recompute_after_step
from .facts import RunFacts
from .gating import GateKeeper
from .launch import Launcher, LaunchFailed
from .lifecycle import InFlight, Lifecycle, TaskState, is_gone, is_loaded, is_loading, is_scheduled
from .manual import GATED, NOT_LOADED, NOT_STARTED, QUEUED, RUNNING, STOPPING, UNKNOWN_TASK, PromisedRuns, RunNowAnswer
from .pausing import PauseBook
from .reporting import Reporter
from .slots import QueuedRun, RunSlots
from .tasks import TaskBook


class RunBook:
    def __init__(
        self,
        book: TaskBook,
        *,
        slots: RunSlots,
        launcher: Launcher,
        facts: RunFacts,
        machine: Lifecycle,
        report: Reporter,
        clock: Clock,
        pauses: PauseBook,
        gates: GateKeeper,
        stopping: Callable[[], str | None],
    ) -> None:
        self.book, self.gates = book, gates
        self.pauses = pauses
        self.slots = slots
        self.launcher = launcher
        self.facts = facts
        self.machine = machine
        self.report = report
        self.clock = clock
        self.stopping = stopping
        self.promised = PromisedRuns()  # manual runs accepted while their task loaded (manual.py)
        self.chains = Chains(book, facts)  # [Frequency] After: hears every finished run (after the history)

    # ------------------------------------------------------------------ phase: start_due
    def start_due(self) -> None:
        if self.promised:  # first: the user asked for these; a due run that finds one in flight is skipped
            self.start_promised()
        now = self.clock.now()
        self.chains.start_due(now, self._start)
        for st in list(self.book.tasks.values()):
            if not is_loaded(st) or st.trigger is None:
                continue
            paused = not is_scheduled(st)
            if st.retry is not None and not paused:
                self.book.guarded(st.name, self._start_retry, st, now)
            if st.startup_pending:
                st.startup_pending = False
                st.anchor = now
                st.next_due = st.trigger.next_due(anchor=now, now=now)
                if not paused:
                    self.book.guarded(st.name, self._start, st, Trigger.STARTUP, now)
            elif st.next_due is not None and st.next_due <= now:
                damping.release(st, machine=self.machine, now=None, why="its next try is due")
                due = st.anchor = st.next_due
                # Advance before anything can fail, so a spawn error cannot make the task hot-loop.
                st.next_due = st.trigger.next_due(anchor=due, now=now)
                if not paused:
                    self.book.guarded(st.name, self._start, st, Trigger.SCHEDULE, due)

    def recompute_due(self, step_s: float) -> None:
        """After a step of the wall clock by ``step_s`` seconds: every due time again (clocksteps.py)."""
        recompute_after_step(self.book.tasks.values(), now=self.clock.now(), step_s=step_s)

    def next_due_in(self, now: datetime, longest: float) -> float:
        """Seconds until the earliest due run or retry, at most ``longest`` (0 for a startup run)."""
        wait = self.chains.next_due_in(now, longest)
        for st in self.book.tasks.values():
            if not is_loaded(st):
                continue
            if st.startup_pending:
                return 0.0
            if st.next_due is not None:
                wait = min(wait, (st.next_due - now).total_seconds())
            if st.retry is not None and st.main_run is None:
                # (A retry waiting for a manual run is woken by that run's end, not by polling.)
                wait = min(wait, (st.retry.at - now).total_seconds())
        return wait

    def _start_retry(self, st: TaskState, now: datetime) -> None:
        """Start a pending retry that is due, or drop it when the next slot comes first (never overlap)."""
        pending = st.retry
        assert pending is not None
        # Dropped when the slot is not later than the retry, or when it came while the retry still waited
        # (for a manual run to end): either way the slot runs and the retry never overlaps it.
        slot_came = st.next_due is not None and st.next_due <= now
        if slot_wins(retry_at=pending.at, next_slot=st.next_due) or slot_came:
            st.retry = None
            self.machine.move(st, RunStage.IDLE, "dropped: the next slot comes first")
            self.report.say(
                st.name,
                logging.INFO,
                f"task {st.name!r}: retry (attempt {pending.attempt}) dropped: "
                f"the next slot {self.report.fmt(st.next_due)} comes first",
            )
            return
        if pending.at > now or st.main_run is not None or st.name in self.slots:
            return  # not yet; or a manual run is in flight: the retry waits for it to end
        st.retry = None
        # A retry takes a run slot like any due run (MaxConcurrentRuns).
        queued = QueuedRun(
            task=st.name,
            trigger=Trigger.RETRY,
            due=pending.at,
            since=now,
            attempt=pending.attempt,
            retry_of=pending.retry_of,
            upstream=pending.upstream,
        )
        self.slots.add(st, queued)
        self.start_queued()

    def _start(self, st: TaskState, trigger: Trigger, due: datetime | None, upstream: Upstream | None = None) -> None:
        assert st.spec is not None
        waiting = self.slots.get(st.name)
        if waiting is not None and waiting.trigger is Trigger.RETRY:
            # The next slot wins over a retry still waiting for a run slot: the retry is dropped.
            self.slots.drop(st, "the next slot came first")
            self.report.say(
                st.name,
                logging.INFO,
                f"task {st.name!r}: retry (attempt {waiting.attempt}) dropped: the next slot came first",
            )
        self.gates.slot_came(st)  # a run still held by a start gate gives way to this one (gating.py)
        if st.main_run is not None or st.name in self.slots:
            why = (
                f"previous run {st.main_run} still running"
                if st.main_run
                else "the previous due run is still waiting for a run slot"
            )
            self._instant(st, trigger, due, Outcome.SKIPPED, why, upstream=upstream)
            self.report.say(
                st.name,
                logging.WARNING,
                f"task {st.name!r}: due run skipped: {why}; next run {self.report.fmt(st.next_due)}",
            )
            return
        if st.spec.testing:
            self._instant(st, trigger, due, Outcome.TESTING, "Testing=True: main() not executed", upstream=upstream)
            self.report.say(
                st.name,
                logging.INFO,
                f"task {st.name!r}: [Testing] run confirmed ({trigger.value}); "
                f"main() not executed; next run {self.report.fmt(st.next_due)}",
            )
            return
        self.slots.add(st, QueuedRun(st.name, trigger, due, since=self.clock.now(), upstream=upstream))
        self.start_queued()

    def start_queued(self) -> None:
        """Start the queued runs that have a free slot, first come first served."""
        for run in self.slots.take(in_flight=self.launcher.count(RunMode.MAIN), held=self.gates.held):
            st = self.book.tasks.get(run.task)
            if st is None or not is_loaded(st):
                continue  # unloaded meanwhile (its open row, if any, was closed then)
            if st.main_run is None:
                self.book.guarded(st.name, self._launch, st, trigger=run.trigger, due=run.due, queued=run)
            self.slots.left(st)

    def _instant(
        self,
        st: TaskState,
        trigger: Trigger,
        due: datetime | None,
        outcome: Outcome,
        message: str,
        *,
        run_id: str | None = None,
        upstream: Upstream | None = None,
    ) -> str:
        """A run that starts no process (skipped, testing): one complete history row at once."""
        record = RunRecord.instant(
            task=st.name,
            trigger=trigger,
            at=self.clock.now(),
            due=due,
            outcome=outcome,
            message=message,
            log_path=self.report.task_logs.path(st.name),
        )
        record = replace(record, run_id=run_id or record.run_id, upstream=upstream.run_id if upstream else None)
        self.facts.instant(record)
        return record.run_id

    # ------------------------------------------------------------------ manual runs
    def run_now(self, name: str, *, respect_gates: bool = False, params: RunParams = ()) -> RunNowAnswer:
        """Start a manual run (does not move the schedule), or promise one to a loading task (manual.py);
        with ``respect_gates`` a closed start gate refuses it (gating.py); ``params``: --env, this run only."""
        st = self.book.tasks.get(name)
        if st is None or is_gone(st):
            return RunNowAnswer.refused(UNKNOWN_TASK, f"no task named {name!r} in {self.book.paths.tasks}")
        if self.stopping() is not None:
            return RunNowAnswer.refused(STOPPING, "the supervisor is shutting down")
        if is_loading(st):
            promised = self.promised.promise(name, run_id=new_run_id(now := self.clock.now()), now=now, params=params)
            return RunNowAnswer(True, promised.run_id, waiting_for=st.phase.value)
        if not is_loaded(st):
            why = f"{st.phase.value}{': ' + st.error if st.error else ''}"
            return RunNowAnswer.refused(NOT_LOADED, f"task {name!r} is not loaded ({why})")
        if st.main_run is not None:
            return RunNowAnswer.refused(RUNNING, f"task {name!r} is already running (run {st.main_run})")
        if name in self.slots:
            why = "has a due run waiting for a run slot (MaxConcurrentRuns)"
            return RunNowAnswer.refused(QUEUED, f"task {name!r} {why}")
        if respect_gates and (gate := self.gates.closed(st)) is not None:
            return RunNowAnswer.refused(GATED, f"task {name!r}: {gate} (without --respect-gates it starts anyway)")
        return self._manual(st, params=params)

    def _manual(self, st: TaskState, run_id: str | None = None, params: RunParams = ()) -> RunNowAnswer:
        if st.spec is not None and st.spec.testing:
            # Testing means "never execute main()": a manual run is confirmed like a scheduled one.
            run_id = self._instant(
                st, Trigger.MANUAL, None, Outcome.TESTING, "Testing=True: main() not executed", run_id=run_id
            )
            self.report.say(
                st.name, logging.INFO, f"task {st.name!r}: [Testing] run confirmed (manual); main() not executed"
            )
            return RunNowAnswer(True, run_id)
        launched = self._launch(st, trigger=Trigger.MANUAL, due=None, run_id=run_id, params=params)
        if launched is None:
            return RunNowAnswer.refused(NOT_STARTED, f"task {st.name!r}: the run could not start (see its log)")
        return RunNowAnswer(True, launched)

    def start_promised(self) -> None:
        """Start the promised manual runs whose task is loaded; record those that can never start."""
        for promised, st, why in self.promised.settle(self.book.tasks, busy=self._busy):
            if why is None and st is not None and st.env_key is not None and self.book.broken_env(st, st.env_key):
                if is_loading(st):  # its env is being rebuilt: the promise waits for it
                    self.promised.promise(st.name, run_id=promised.run_id, now=promised.since, params=promised.params)
                    continue
                why = f"its env broke ({st.error})"
            if why is None and st is not None:
                self.book.guarded(st.name, self._manual, st, promised.run_id, promised.params)
            else:
                self._never_started(promised.task, promised.run_id, why or "")

    def _busy(self, st: TaskState) -> bool:
        """A run of the task is in flight or waits for a run slot: a promised run waits behind it."""
        return st.main_run is not None or st.name in self.slots

    def drop_promised(self, why: str) -> None:
        """Record every promised run as never started (the supervisor stops)."""
        for promised in self.promised.drop_all():
            self._never_started(promised.task, promised.run_id, why)

    def _never_started(self, task: str, run_id: str, why: str) -> None:
        """A promised run that can never start: one closed history row (outcome killed) says why."""
        log_path = self.report.task_logs.path(task)
        self.facts.instant(PromisedRuns.never_started(task, run_id, at=self.clock.now(), why=why, log_path=log_path))
        self.report.say(task, logging.WARNING, f"task {task!r}: manual run {run_id} never started: {why}")

    def pause_command(self, command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """``pause`` / ``resume`` NAME (pausing.py): stored in the history; a loaded task moves between
        ``scheduled`` and ``paused``; logged when it changed anything."""
        tasks = self.book.tasks
        reply = self.pauses.handle(command, args, known=lambda n: n in tasks and not is_gone(tasks[n]))
        if reply.get("changed"):
            name, by = reply["task"], args.get("by") or "control socket"
            st = tasks[name]
            if is_loaded(st):
                self.machine.move(
                    st, TaskPhase.PAUSED if reply["paused"] else TaskPhase.SCHEDULED, f"{command} by {by}"
                )
            self.report.say(name, logging.INFO, f"task {name!r}: {'paused' if reply['paused'] else 'resumed'} by {by}")
        return reply

    # ------------------------------------------------------------------ starts and ends
    def _launch(
        self,
        st: TaskState,
        *,
        trigger: Trigger,
        due: datetime | None,
        queued: QueuedRun | None = None,
        run_id: str | None = None,
        params: RunParams = (),
    ) -> str | None:
        """Start ``main()`` of ``st``; its run id (started, or retried after a back-off), or None if it could not
        start (see the module policies)."""
        assert st.env_key is not None
        key = st.env_key
        if self.book.broken_env(st, key):
            if queued is not None:
                self.slots.close_unstarted(st, queued, "its env broke")
            return None  # its interpreter is gone: rebuilt first (a few stats, cheaper than a failed spawn)
        started = self.launcher.start(
            st, mode=RunMode.MAIN, trigger=trigger, due=due, queued=queued, run_id=run_id, params=params
        )
        if not isinstance(started, LaunchFailed):
            return started
        if started.transient:
            if self._back_off_start(st, started.record, started.message, queued=queued, params=params):
                return started.record.run_id
            self._close_unretried(st, started.record, started.message)
            return None
        self.report.say(st.name, logging.ERROR, started.message)
        failed = started.record.closed_unstarted(Outcome.FAILED, at=self.clock.now(), message=started.message)
        self.settle(st, failed, summary="")
        if not is_gone(st):
            self.book.broken_env(st, key)  # the interpreter vanished between check and spawn
        return None

    def _back_off_start(
        self,
        st: TaskState,
        record: RunRecord,
        message: str,
        *,
        queued: QueuedRun | None,
        spawn_failures: int = 0,
        params: RunParams = (),
    ) -> bool:
        """Put a run whose start failed transiently back at the head of the queue after a back-off; False
        when it cannot be retried (stopping, unloaded, another attempt of the task waits already)."""
        if self.stopping() is not None or not is_loaded(st):
            return False
        if queued is None:  # a manual run, or a run whose process could not start: it queues again
            if st.stage is not RunStage.IDLE or st.name in self.slots:
                return False
            queued = QueuedRun(
                task=st.name,
                trigger=record.trigger,
                due=record.due,
                since=record.started,
                attempt=record.attempt,
                retry_of=record.retry_of,
                spawn_failures=spawn_failures,
                params=params,  # a manual run's --env stays with it
                upstream=st.upstream if record.upstream is not None else None,  # an After run keeps its upstream
            )
            self.slots.add(st, queued)
        again = self.slots.back_off(st, queued, run_id=record.run_id)
        self.report.retrying(st.name, message, delay_s=again.not_before - self.clock.monotonic())
        return True

    def on_main_ended(self, st: TaskState | None, flight: InFlight, result: RunResult) -> None:
        record = flight.record
        if st is not None and st.main_run == result.run_id:
            st.main_run = None
        if result.start_failure is None:
            self.settle(st, record.finished_with(result), summary=result.summary, leftovers=result.leftovers)
        else:
            why = f"task {record.task!r}: run {record.run_id} could not start: {result.start_failure}"
            retried = st is not None and self._back_off_start(
                st, record, why, queued=None, spawn_failures=flight.spawn_failures, params=flight.params
            )
            if not retried:
                self._close_unretried(st, record, why)
        self.start_queued()

    def _close_unretried(self, st: TaskState | None, record: RunRecord, why: str) -> None:
        """A transient start failure that is not retried: the row is closed as ``killed`` ("never started"),
        which is no failure (no streak, no notice)."""
        self.report.say(record.task, logging.WARNING, f"{why}; not retried")
        self.facts.publish(
            st, record.closed_unstarted(Outcome.KILLED, at=self.clock.now(), message=f"never started: {why}")
        )

    def settle(self, st: TaskState | None, record: RunRecord, *, summary: str, leftovers: int = 0) -> None:
        """A run of main() has ended: apply [Retry], then publish the fact."""
        final = self._decide_retry(st, record)
        self.facts.publish(st, record, final=final, summary=summary, leftovers=leftovers)
        if final and st is not None:
            damping.hold(st, machine=self.machine, report=self.report, now=self.clock.now())

    def _decide_retry(self, st: TaskState | None, record: RunRecord) -> bool:
        """Apply [Retry] to an attempt that ended; returns whether it is final (see the module docstring)."""
        assert record.outcome is not None and record.finished is not None
        if (
            st is None
            or st.spec is None
            or not is_loaded(st)
            or self.stopping() is not None
            or record.trigger is Trigger.MANUAL
        ):
            return True
        decision = decide_retry(
            st.spec.retry,
            attempt=record.attempt,
            outcome=record.outcome,
            finished=record.finished,
            next_slot=st.next_due,
        )
        if decision.final:
            if record.attempt > 1 or "next slot" in decision.reason:
                self.report.say(
                    st.name,
                    logging.INFO,
                    f"task {st.name!r}: attempt {record.attempt} {record.outcome.value}: final ({decision.reason})",
                )
            return True
        assert decision.retry_at is not None and decision.next_attempt is not None
        upstream = st.upstream if record.upstream is not None else None  # an After run's retries keep it
        st.retry = PendingRetry(
            decision.retry_at, decision.next_attempt, retry_of=record.retry_of or record.run_id, upstream=upstream
        )
        self.machine.move(st, RunStage.RETRY_PENDING)
        self.report.say(
            st.name,
            logging.INFO,
            f"task {st.name!r}: attempt {record.attempt} {record.outcome.value}; "
            f"retry (attempt {decision.next_attempt} of {st.spec.retry.attempts + 1}) "
            f"at {self.report.fmt(decision.retry_at)}",
        )
        return False
