"""The supervisor's loop: one thread owns every task's state; other threads only post events to its inbox.

Each turn handles the posted events, then runs the named phases ``rescan -> start_due -> enforce``, then
sleeps until the earliest of: the next due run, the executor's next limit check, or an event. An idle
supervisor wakes at least once a minute however many tasks it holds, to notice wall-clock steps.

The loop receives its collaborators (service.py wires the real ones; tests pass fakes): the clock, an
``Executor`` that runs processes and reports their end, an ``EnvBuilder``, the run history, and the
consumers of ``RunFinished`` facts (history first; notifications and retries plug in the same way), and the
listeners of ``RunStarted`` facts (the healthchecks ``/start`` ping).
A task's phases and the moves between them are the table in lifecycle.py. ``Supervisor`` derives from
``RunBook`` (runbook.py: runs of main()), which derives from ``TaskBook`` (tasks.py: lifecycle moves).

Policies the loop enforces:
* "Not loaded -> loaded" (start, folder added, re-enabled, fixed) is the only move that applies RunOnStartup
  and that re-reads the schedule anchor and the failure streak from history.
* Every due time comes from the task's ``Trigger``. The next due time is advanced and the run recorded as
  started *before* the spawn, so a crash cannot leave a task overdue and hot-looping.
* Due runs, run slots, [Retry] attempts and the run facts follow the policies of runbook.py.
* A removed or disabled task's in-flight run is allowed to finish within its own timeout; then the task is
  forgotten (its history stays).
* A changed requirements.txt builds a new env in the background; the task keeps running on the old env until
  the new one is complete, then switches between runs (a run keeps the interpreter it started with) and runs
  initialize() again. A failed build keeps the old env serving.
* Wall-clock steps (NTP, a board without RTC, suspend): when wall time and monotonic time disagree by more
  than ``CLOCK_STEP_TOLERANCE_S`` between two wakes, every due time is recomputed from its anchor. Timeouts
  run on the monotonic clock and do not move.
* Rescans happen on a watcher hint, on a ``rescan`` request, and every ``safety_rescan_s`` regardless:
  inotify can silently miss sub-folders or overflow, so a lost hint delays a reload by at most that long.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, tzinfo
from typing import Any, Callable, Mapping, Sequence

from ..clock import Clock, StepDetector
from ..discovery.scan import diff_tasks, scan_tasks
from ..envs.builder import EnvBuilder
from ..errors import TaskAutomationError, TaskLoadError
from ..events import ControlRequest, EnvBuilt, Event, Inbox, RescanRequested, RunReported, StopRequested
from ..execution.executor import Executor, LaunchRequest
from ..execution.outcome import StopCause, StopRequest
from ..history.recorder import RunHistory
from ..logsetup import TaskLogs
from ..model import HomeConfig, Outcome, RunMode, RunRecord, RunResult, RunStarted, TaskPhase, Trigger, new_run_id
from ..paths import Paths
from ..query.status import SupervisorView, TaskView, status_json, view_of
from ..system.sdnotify import LoopNotifier, Notifier
from .lifecycle import InFlight, TaskState, is_gone, is_scheduled
from .pausing import PauseBook
from .requests import answer
from .runbook import Consumer, RunBook, StartListener
from .slots import QueuedRun

P = TaskPhase
IDLE_WAKE_S = 60.0  # longest sleep: bounds how late a wall-clock step (NTP, suspend) is noticed
SAFETY_RESCAN_S = 600.0  # full rescan without any hint: bounds the cost of an event inotify lost
CLOCK_STEP_TOLERANCE_S = 2.0  # wall vs monotonic disagreement that counts as a step of the wall clock
# initialize() calls in flight at once: enough to keep every core busy while processes start and exit.
MAX_CONCURRENT_INITS = max(4, 4 * (os.cpu_count() or 1))


class Supervisor(RunBook):
    """Owns the loop. Construct, then call ``run()`` from the thread that should own every child."""

    def __init__(
        self,
        paths: Paths,
        *,
        home_config: HomeConfig,
        clock: Clock,
        tz: tzinfo,
        logger: logging.Logger,
        task_logs: TaskLogs,
        inbox: Inbox,
        executor: Executor,
        envs: EnvBuilder,
        history: RunHistory,
        consumers: Sequence[Consumer],
        watcher_factory: Callable[[Callable[[], None]], Any] | None = None,
        safety_rescan_s: float = SAFETY_RESCAN_S,
        max_inits: int = MAX_CONCURRENT_INITS,
        notifier: LoopNotifier | None = None,
        start_listeners: Sequence[StartListener] = (),
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
            consumers=consumers,
            start_listeners=start_listeners,
        )
        self.inbox = inbox
        self.executor = executor
        self.last_turn_mono = clock.monotonic()  # read by the heartbeat's health check (another thread)
        self.rescan_wanted = True
        self.scanned_once = False
        self.safety_rescan_s = safety_rescan_s
        self.next_safety_rescan = clock.monotonic() + safety_rescan_s
        self.watcher_factory = watcher_factory
        # systemd (sdnotify.py): READY after the first scan, STATUS, WATCHDOG from this thread, STOPPING.
        self.notifier = notifier if notifier is not None else LoopNotifier(Notifier(None))
        self.watcher: Any = None
        self.started_at = clock.now()
        self.clock_steps = StepDetector(clock, tolerance_s=CLOCK_STEP_TOLERANCE_S)
        self.pauses = PauseBook(history.records, now=clock.now)

    # ------------------------------------------------------------------ public, thread-safe
    def post(self, event: Event) -> None:
        self.inbox.post(event)

    def request_stop(self, reason: str) -> None:
        self.post(StopRequested(reason))

    # ------------------------------------------------------------------ for control requests (loop thread)
    def begin_shutdown(self, reason: str) -> None:
        self._begin_shutdown(reason)

    def request_rescan(self) -> None:
        self.rescan_wanted = True

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Run until a stop is requested and every child is gone."""
        self.start()
        try:
            while self.turn():
                self.handle(self.inbox.get(self.sleep_for()))
                self.drain()
        finally:
            self.close()

    def start(self) -> None:
        for record in self.history.recover(now=self.clock.now()):
            self.log.warning("task %r: run %s was interrupted by a supervisor crash", record.task, record.run_id)
        killed = self.executor.recover()
        if killed:
            self.log.warning(
                "killed %d process(es) left behind by a previous supervisor: %s",
                len(killed),
                ", ".join(map(str, killed)),
            )
        if self.watcher_factory is not None:
            self.watcher = self.watcher_factory(lambda: self.post(RescanRequested()))
            self.watcher.start()
        self.log.info(
            "supervisor started: home %s, pid %d, installer %s", self.paths.home, os.getpid(), self.envs.installer
        )

    def turn(self) -> bool:
        """One pass of the phases; False once stopped with nothing left in flight."""
        self.last_turn_mono = self.clock.monotonic()
        self._check_clock()
        if self.stopping is None and self.clock.monotonic() >= self.next_safety_rescan:
            self.rescan_wanted = True
        if self.rescan_wanted and self.stopping is None:
            self.rescan_wanted = False
            # Any rescan, whatever asked for it, resets the safety net's countdown.
            self.next_safety_rescan = self.clock.monotonic() + self.safety_rescan_s
            self._rescan()
        if self.stopping is None:
            self._run_backoffs()
            self._start_due()
            self._start_queued()
        self.executor.enforce()
        if self.gc_wanted and self.stopping is None:
            self._collect_envs()
        self._notify_service()
        return not (self.stopping is not None and not self.in_flight)

    def _notify_service(self) -> None:
        """Tell systemd how the loop is doing; the watchdog ping proves this very thread still turns."""
        if not self.notifier.enabled:
            return
        tasks = [st for st in self.tasks.values() if not is_gone(st)]
        broken = sum(1 for st in tasks if st.phase in (P.ERROR, P.ENV_FAILED))
        running = sum(1 for flight in self.in_flight.values() if flight.mode is RunMode.MAIN)
        self.notifier.turn(
            self.clock.monotonic(), scanned=self.scanned_once, tasks=len(tasks), running=running, broken=broken
        )

    def drain(self) -> None:
        """Handle whatever else arrived, so one turn serves a burst."""
        while (event := self.inbox.get(0)) is not None:
            self.handle(event)

    def sleep_for(self) -> float:
        """Seconds until the next thing the loop must do by itself."""
        wait = IDLE_WAKE_S
        now = self.clock.now()
        if self.stopping is None:
            for st in self.tasks.values():
                if is_scheduled(st) and st.startup_pending:
                    return 0.0
                if is_scheduled(st) and st.next_due is not None:
                    wait = min(wait, (st.next_due - now).total_seconds())
                if is_scheduled(st) and st.retry is not None and st.main_run is None:
                    # (A retry waiting for a manual run is woken by that run's end, not by polling.)
                    wait = min(wait, (st.retry.at - now).total_seconds())
        moments = [self.executor.next_wakeup()]  # monotonic times
        if self.stopping is None:
            # The safety rescan adds no wake-up of its own: it is longer than IDLE_WAKE_S.
            moments += [
                self.next_safety_rescan,
                self._next_backoff(),
                self.queue.next_wakeup(in_flight=self._mains_in_flight()),
            ]
        mono = self.clock.monotonic()
        watchdog = self.notifier.max_sleep()
        if watchdog is not None:
            wait = min(wait, watchdog)  # wake in time to ping systemd's watchdog from this thread
        return max(0.0, min([wait, *(m - mono for m in moments if m is not None)]))

    def handle(self, event: Event | None) -> None:
        if isinstance(event, RescanRequested):
            self.rescan_wanted = True
        elif isinstance(event, RunReported):
            result = event.settle()
            if result is not None:
                self._on_run_ended(result)
        elif isinstance(event, EnvBuilt):
            self._on_env_built(event)
        elif isinstance(event, StopRequested):
            self._begin_shutdown(event.reason)
        elif isinstance(event, ControlRequest):
            answer(event, self)

    # ------------------------------------------------------------------ clock steps
    def _check_clock(self) -> None:
        """Recompute every due time after a step of the wall clock (monotonic time is the reference)."""
        step = self.clock_steps.step()
        if not step:
            return
        now = self.clock.now()
        self.log.warning(
            "the wall clock stepped %s by %s; recomputing every due time",
            "forward" if step > 0 else "back",
            timedelta(seconds=round(abs(step))),
        )
        for st in self.tasks.values():
            if is_scheduled(st) and st.trigger is not None:
                if st.anchor is not None and st.anchor > now:
                    st.anchor = now  # a start "in the future" would hold the next one back
                st.next_due = st.trigger.next_due(anchor=st.anchor, now=now)

    # ------------------------------------------------------------------ phase: rescan
    def _rescan(self) -> None:
        """Diff Tasks/ against what is loaded and apply the difference (file events are only hints)."""
        try:
            scanned = scan_tasks(self.paths.tasks)
        except Exception as exc:  # noqa: BLE001 - whatever the scan hit, the loaded tasks keep running
            # Tasks/ unlistable for a moment (permissions, a remount): keep every task as it is.
            detail = exc if isinstance(exc, TaskLoadError) else f"{self.paths.tasks}: cannot be scanned: {exc!r}"
            self.log.error("%s; keeping the loaded tasks as they are", detail)
            return
        diff = diff_tasks(self.folders, scanned)
        if not scanned and not self.scanned_once:
            self.log.warning(
                "no task folders in %s yet: add one (python3 -m supervisor new NAME); it is picked "
                "up without a restart",
                self.paths.tasks,
            )
        self.scanned_once = True
        if diff.empty:
            return
        self.folders = scanned
        for name in diff.removed:
            self._on_removed(name)
        for name in diff.added:
            self._guarded(name, self._load, name, scanned[name], code_changed=True)
        changed = set(diff.config_changed) | set(diff.code_changed) | set(diff.requirements_changed)
        for name in sorted(changed - set(diff.added)):
            self._guarded(name, self._load, name, scanned[name], code_changed=name in diff.code_changed)
        self.gc_wanted = True

    # ------------------------------------------------------------------ phase: start_due
    def _start_due(self) -> None:
        now = self.clock.now()
        for st in list(self.tasks.values()):
            if not is_scheduled(st) or st.trigger is None:
                continue
            # A paused task's slots pass without a run (nothing is recorded: `why` says it is paused), so
            # after resume it waits for its next slot instead of making up what it missed.
            paused = self.pauses.since(st.name) is not None
            if st.retry is not None and not paused:  # a paused task's retries wait too
                self._guarded(st.name, self._start_retry, st, now)
            if st.startup_pending:
                st.startup_pending = False
                st.anchor = now
                st.next_due = st.trigger.next_due(anchor=now, now=now)
                if not paused:
                    self._guarded(st.name, self._start, st, Trigger.STARTUP, now)
            elif st.next_due is not None and st.next_due <= now:
                due = st.anchor = st.next_due
                # Advance before anything can fail, so a spawn error cannot make the task hot-loop.
                st.next_due = st.trigger.next_due(anchor=due, now=now)
                if not paused:
                    self._guarded(st.name, self._start, st, Trigger.SCHEDULE, due)

    def run_now(self, name: str) -> tuple[bool, str]:
        """Start a manual run (does not move the schedule). Returns (started, reason or run id)."""
        st = self.tasks.get(name)
        if st is None or is_gone(st):
            return False, f"no task named {name!r} in {self.paths.tasks}"
        if self.stopping is not None:
            return False, "the supervisor is shutting down"
        if not is_scheduled(st):
            return False, f"task {name!r} is not loaded ({st.phase.value}{': ' + st.error if st.error else ''})"
        if st.main_run is not None:
            return False, f"task {name!r} is already running (run {st.main_run})"
        if name in self.queue:
            return False, f"task {name!r} has a due run waiting for a run slot (MaxConcurrentRuns)"
        if st.spec is not None and st.spec.testing:
            # Testing means "never execute main()": a manual run is confirmed like a scheduled one.
            run_id = self._instant(st, Trigger.MANUAL, None, Outcome.TESTING, "Testing=True: main() not executed")
            self._say(name, logging.INFO, f"task {name!r}: [Testing] run confirmed (manual); main() not executed")
            return True, run_id
        launched = self._launch(st, mode=RunMode.MAIN, trigger=Trigger.MANUAL, due=None)
        if launched is None:
            return False, f"task {name!r}: the run could not start (see its log)"
        return True, launched

    def _launch(
        self, st: TaskState, *, mode: RunMode, trigger: Trigger, due: datetime | None, queued: QueuedRun | None = None
    ) -> str | None:
        """Start ``main()`` or ``initialize()`` of ``st`` in its current env; None if it could not start.

        A transient failure (``TaskAutomationError.transient``) of a queued run puts it back in the queue,
        and of an initialize() call schedules another try; anything else fails the run (or the task).
        """
        assert st.spec is not None and st.env_key is not None and st.folder is not None
        if self._env_broken(st, st.env_key):
            if queued is not None:
                self._close_unstarted(st, queued, "its env broke")
            return None  # its interpreter is gone: rebuilt first (a few stats, cheaper than a failed spawn)
        now = self.clock.now()
        run_id = queued.run_id if queued and queued.run_id else new_run_id(now)
        attempt, retry_of = (queued.attempt, queued.retry_of) if queued else (1, None)
        record = RunRecord(
            run_id=run_id,
            task=st.name,
            trigger=trigger,
            started=now,
            due=due,
            log_path=self.task_logs.path(st.name),
            attempt=attempt,
            retry_of=retry_of,
        )
        if mode is RunMode.MAIN and not (queued and queued.run_id):
            self.history.opened(record)  # before the spawn: survives a crash
        request = LaunchRequest(
            task=st.name,
            run_id=run_id,
            mode=mode,
            trigger=trigger,
            task_dir=st.folder.path,
            output_dir=self.paths.task_output(st.name),
            env_key=st.env_key,
            python=self.envs.python_for(st.env_key),
            env_dir=self.envs.env_dir(st.env_key),
            limits=st.spec.limits,
            due=due,
            queue=st.spec.queue,
        )
        try:
            self.executor.launch(request)
        except Exception as exc:  # noqa: BLE001 - whatever stopped the start is this task's problem
            message = str(exc) if isinstance(exc, TaskAutomationError) else f"task {st.name!r}: {exc!r}"
            if getattr(exc, "transient", False) and self.stopping is None:
                if queued is not None:
                    again = self.queue.retry(queued, run_id=run_id, now_mono=self.clock.monotonic())
                    st.queued_since = queued.since
                    self._say(
                        st.name,
                        logging.WARNING,
                        f"{message}; retrying in {again.not_before - self.clock.monotonic():g} s",
                    )
                    return None
                if mode is RunMode.INITIALIZE:
                    self._back_off(st, "initialize", message)
                    return None
            self._say(st.name, logging.ERROR, message)
            if mode is RunMode.MAIN:
                failed = RunRecord(
                    run_id=run_id,
                    task=st.name,
                    trigger=trigger,
                    started=now,
                    due=due,
                    finished=self.clock.now(),
                    outcome=Outcome.FAILED,
                    duration_s=0.0,
                    message=message,
                    log_path=record.log_path,
                    attempt=attempt,
                    retry_of=retry_of,
                )
                self._publish(st, failed, summary="")
            else:
                self._set_broken(st, message)
            if not is_gone(st):
                self._env_broken(st, request.env_key)  # the interpreter vanished between check and spawn
            return None
        self.in_flight[run_id] = InFlight(
            task=st.name,
            mode=mode,
            env_key=st.env_key,
            trigger=trigger,
            started=now,
            due=due,
            attempt=attempt,
            retry_of=retry_of,
        )
        if mode is RunMode.MAIN:
            st.main_run = run_id
            self._announce(RunStarted(task=st.name, run_id=run_id, trigger=trigger, spec=st.spec))
        else:
            st.init_run = run_id
        return run_id

    # ------------------------------------------------------------------ run ends
    def _on_run_ended(self, result: RunResult) -> None:
        flight = self.in_flight.pop(result.run_id, None)
        if flight is None:
            return
        st = self.tasks.get(result.task)
        if result.mode is RunMode.MAIN:
            if st is not None and st.main_run == result.run_id:
                st.main_run = None
            record = RunRecord(
                run_id=result.run_id,
                task=result.task,
                trigger=flight.trigger,
                started=flight.started,
                due=flight.due,
                finished=result.finished,
                outcome=result.outcome,
                duration_s=result.duration_s,
                exit_code=result.exit_code,
                signal=result.signal,
                message=result.message,
                peak_rss_mb=result.peak_rss_mb,
                cpu_s=result.cpu_s,
                log_path=self.task_logs.path(result.task),
                attempt=flight.attempt,
                retry_of=flight.retry_of,
            )
            self._publish(st, record, summary=result.summary, leftovers=result.leftovers)
            self._start_queued()
            if flight.env_key not in self._keys_in_use():
                self.gc_wanted = True  # the last run on a replaced env has ended: it can go now
        elif st is not None and st.init_run == result.run_id:
            st.init_run = None
            self._guarded(st.name, self._on_initialized, st, result)
        if result.mode is RunMode.INITIALIZE:
            self._start_queued_inits()
        if st is not None:
            self._forget_if_idle(st)

    def health(self, *, stale_after_s: float = 3 * IDLE_WAKE_S) -> str | None:
        """None while the loop keeps turning (it wakes at least every IDLE_WAKE_S); otherwise why not.
        Safe from any thread: it reads one float."""
        idle = self.clock.monotonic() - self.last_turn_mono
        return None if idle <= stale_after_s else f"the loop has not turned for {idle:.0f} s"

    # ------------------------------------------------------------------ control requests
    def pause_command(self, command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """``pause`` / ``resume`` NAME (pausing.py): stored in the history; logged when it changed anything."""
        reply = self.pauses.handle(command, args, known=lambda n: n in self.tasks and not is_gone(self.tasks[n]))
        if reply.get("changed"):
            name, by = reply["task"], args.get("by") or "control socket"
            self._say(name, logging.INFO, f"task {name!r}: {'paused' if reply['paused'] else 'resumed'} by {by}")
        return reply

    def views(self) -> list[TaskView]:
        """A snapshot of every task for the query layer."""
        return [
            view_of(
                st,
                self.in_flight.get(st.main_run) if st.main_run else None,
                waiting_on=self.executor.waiting_on(st.main_run) if st.main_run else None,
                paused_since=self.pauses.since(st.name),
            )
            for st in self.tasks.values()
            if not is_gone(st)
        ]

    def status(self) -> dict[str, Any]:
        """The ``status --json`` document (docs/cli.md)."""
        views = self.views()
        last = self.history.last_finished_each([view.name for view in views])  # one read, not one per task
        return status_json(
            views,
            last_finished=last.get,
            tz=self.tz,
            supervisor=SupervisorView(os.getpid(), self.started_at, str(self.paths.home)),
        )

    # ------------------------------------------------------------------ shutdown
    def _begin_shutdown(self, reason: str) -> None:
        if self.stopping is not None:
            return
        self.stopping = reason
        self.notifier.stopping(running=len(self.in_flight))
        self.log.info("stopping: %s; %d run(s) in flight", reason, len(self.in_flight))
        if self.watcher is not None:
            self.watcher.stop()
        self.executor.stop_all(StopRequest(StopCause.SHUTDOWN, f"stopped by supervisor shutdown ({reason})"))
        for st in list(self.tasks.values()):
            self._drop_queued(st, "the supervisor stopped")

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.executor.close()  # a no-op after a clean stop; a safety net after an unexpected exception
        self.envs.close()
        uptime = self.clock.now() - self.started_at
        summary = ", ".join(f"{n} {k}" for k, n in sorted(self.history.counts.items())) or "no runs"
        self.log.info("supervisor stopped after %s: %s", str(uptime).split(".")[0], summary)
        self.notifier.close()
        self.task_logs.close()
