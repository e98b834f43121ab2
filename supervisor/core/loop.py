"""The supervisor's loop: one thread owns every task's state; other threads only post events to its inbox.

Each turn runs the named phases ``rescan -> back-offs -> start_due -> start queued -> enforce -> collect``,
publishes a status snapshot, then sleeps until the earliest of: the next due run, the executor's next limit
check, a back-off, or an event; the events that arrived are handled before the next turn. An idle supervisor
wakes at least once a minute however many tasks it holds, to notice wall-clock steps.

``Supervisor`` owns its parts and hands each what it needs (service.py wires the real ones; tests pass fakes):
lifecycle.py (every move), tasks.py (folders to ``scheduled``), runbook.py (runs of main()), slots.py,
launch.py (processes in flight), facts.py (run starts/ends to listeners), pausing.py, gating.py, snapshot.py.

Policies the loop enforces:
* "Not loaded -> loaded" (start, folder added, re-enabled, fixed) is the only move that applies RunOnStartup
  and that re-reads the schedule anchor and the failure streak from history.
* A removed or disabled task's in-flight run is allowed to finish within its own timeout; then the task is
  forgotten (its history stays).
* A changed requirements.txt builds a new env in the background; the task keeps running on the old env until
  the new one is complete, then switches between runs (a run keeps the interpreter it started with) and runs
  initialize() again. A failed build keeps the old env serving.
* Wall-clock steps (NTP, a board without RTC, suspend): when wall time and monotonic time disagree by more
  than ``CLOCK_STEP_TOLERANCE_S`` between two wakes, every due time is recomputed (clocksteps.py). The sleep
  is measured from the clock as the turn's step check read it, so a step during a turn or a sleep never
  makes the loop wake later than a due time; that wake notices it. Timeouts run on the monotonic clock.
* Rescans happen on a watcher hint, a ``rescan`` request, and every ``safety_rescan_s``: inotify can miss.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta, tzinfo
from typing import Any, Callable, Mapping, Sequence

from ..clock import Clock, StepDetector
from ..envs.builder import EnvBuilder
from ..events import ControlRequest, EnvBuilt, Event, Inbox, RescanRequested, RunReported, StopRequested
from ..execution.executor import Executor
from ..execution.outcome import StopCause, StopRequest
from ..history.recorder import RunHistory
from ..logsetup import TaskLogs
from ..model import HomeConfig, RunMode, RunResult, TaskPhase
from ..paths import Paths
from ..query.status import SupervisorView
from ..scheduling.gates import HostProbe, Probe
from ..system.sdnotify import LoopNotifier, SdNotifier
from .envgc import keys_in_use
from .facts import Consumer, RunFacts, StartListener
from .gating import GateKeeper
from .launch import Launcher
from .lifecycle import Lifecycle, MoveListener, is_gone
from .manual import RunNowAnswer
from .pausing import PauseBook
from .reporting import Reporter
from .requests import answer
from .runbook import RunBook
from .slots import RunSlots
from .snapshot import SnapshotMaker, StatusBoard, StatusSnapshot, status_document
from .tasks import TaskBook

P = TaskPhase
IDLE_WAKE_S = 60.0  # longest sleep: bounds how late a wall-clock step (NTP, suspend) is noticed
SAFETY_RESCAN_S = 600.0  # full rescan without any hint: bounds the cost of an event inotify lost
CLOCK_STEP_TOLERANCE_S = 2.0  # wall vs monotonic disagreement that counts as a step of the wall clock
# initialize() calls in flight at once: enough to keep every core busy while processes start and exit.
MAX_CONCURRENT_INITS = max(4, 4 * (os.cpu_count() or 1))


class Supervisor:
    """Owns the loop and its parts. Construct, then call ``run()`` from the thread that owns every child."""

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
        move_listeners: Sequence[MoveListener] = (),
        board: StatusBoard | None = None,
        gate_probe: Probe | None = None,  # what the start gates read (scheduling/gates.py); the machine by default
    ) -> None:
        self.paths, self.clock, self.tz, self.log = paths, clock, tz, logger
        self.inbox, self.executor, self.envs, self.history = inbox, executor, envs, history
        self.stopping: str | None = None  # the reason, once a shutdown has begun
        self.last_turn_mono = clock.monotonic()  # read by the heartbeat's health check (another thread)
        self.rescan_wanted = True
        self.safety_rescan_s = safety_rescan_s
        self.next_safety_rescan = clock.monotonic() + safety_rescan_s
        self.watcher_factory = watcher_factory
        # systemd (sdnotify.py): READY after the first scan, STATUS, WATCHDOG from this thread, STOPPING.
        self.notifier = notifier if notifier is not None else LoopNotifier(SdNotifier(None))
        self.watcher: Any = None
        self.started_at = clock.now()
        self.clock_steps = StepDetector(clock, tolerance_s=CLOCK_STEP_TOLERANCE_S)
        self.board = board if board is not None else StatusBoard()
        self.machine = Lifecycle(now=clock.now, logger=logger, listeners=[*move_listeners, self.board.moved])
        self.report = Reporter(logger=logger, task_logs=task_logs, tz=tz)
        self.facts = RunFacts(history=history, consumers=consumers, start_listeners=start_listeners, logger=logger)
        self.slots = RunSlots(
            home_config.max_concurrent_runs, machine=self.machine, facts=self.facts, clock=clock, task_logs=task_logs
        )
        self.launcher = Launcher(
            paths, executor=executor, envs=envs, history=history, facts=self.facts, task_logs=task_logs, clock=clock
        )
        self.pauses = PauseBook(history.records, now=clock.now)
        self._assemble_books(home_config, max_inits=max_inits, gate_probe=gate_probe or HostProbe())

    def _assemble_books(self, home_config: HomeConfig, *, max_inits: int, gate_probe: Probe) -> None:
        """The books and the snapshots, each handed the parts it uses (see the module docstring)."""
        paths, clock, history = self.paths, self.clock, self.history
        self.book = TaskBook(
            paths,
            home_config=home_config,
            report=self.report,
            machine=self.machine,
            envs=self.envs,
            history=history,
            launcher=self.launcher,
            slots=self.slots,
            facts=self.facts,
            paused=self.pauses.since,
            stopping=lambda: self.stopping,
            max_inits=max_inits,
        )
        self.runs = RunBook(
            self.book,
            slots=self.slots,
            launcher=self.launcher,
            facts=self.facts,
            machine=self.machine,
            report=self.report,
            clock=clock,
            pauses=self.pauses,
            gates=GateKeeper(self.book, probe=gate_probe, slots=self.slots, report=self.report),
            stopping=lambda: self.stopping,
        )
        self.snapshots = SnapshotMaker(
            self.board,
            tasks=self.book.tasks,
            launcher=self.launcher,
            executor=self.executor,
            slots=self.slots,
            pauses=self.pauses,
            facts=self.facts,
            supervisor=SupervisorView(os.getpid(), self.started_at, str(paths.home)),
        )

    # ------------------------------------------------------------------ public, thread-safe
    def post(self, event: Event) -> None:
        self.inbox.post(event)

    def request_stop(self, reason: str) -> None:
        self.post(StopRequested(reason))

    def health(self, *, stale_after_s: float = 3 * IDLE_WAKE_S) -> str | None:
        """None while the loop keeps turning (it wakes at least every IDLE_WAKE_S); otherwise why not.
        Safe from any thread: it reads one float."""
        idle = self.clock.monotonic() - self.last_turn_mono
        return None if idle <= stale_after_s else f"the loop has not turned for {idle:.0f} s"

    def status(self) -> dict[str, Any]:
        """The ``status --json`` document (docs/cli.md) of the latest snapshot, for in-process callers on any
        thread (the control socket answers from the same snapshots, with its own history connection)."""
        snapshot = self.board.latest() or StatusSnapshot((), self.snapshots.supervisor, {})  # before a turn
        names = [view.name for view in snapshot.tasks]
        return status_document(snapshot, stored=self.history.last_finished_each(names), tz=self.tz)

    # ------------------------------------------------------------------ for control requests (loop thread)
    def begin_shutdown(self, reason: str) -> None:
        if self.stopping is not None:
            return
        self.stopping = reason
        in_flight = len(self.launcher.in_flight)
        self.notifier.stopping(running=in_flight)
        self.log.info("stopping: %s; %d run(s) in flight", reason, in_flight)
        if self.watcher is not None:
            self.watcher.stop()
        self.executor.stop_all(StopRequest(StopCause.SHUTDOWN, f"stopped by supervisor shutdown ({reason})"))
        for st in list(self.book.tasks.values()):
            self.slots.drop(st, "the supervisor stopped")
        self.runs.drop_promised("the supervisor stopped")

    def request_rescan(self) -> None:
        self.rescan_wanted = True

    def run_now(self, name: str, **options: Any) -> RunNowAnswer:  # respect_gates, params: RunBook.run_now
        return self.runs.run_now(name, **options)

    def pause_command(self, command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        return self.runs.pause_command(command, args)

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
        running = self.stopping is None
        if running and self.clock.monotonic() >= self.next_safety_rescan:
            self.rescan_wanted = True
        if self.rescan_wanted and running:
            self.rescan_wanted = False
            # Any rescan, whatever asked for it, resets the safety net's countdown.
            self.next_safety_rescan = self.clock.monotonic() + self.safety_rescan_s
            self.book.rescan()
        if running:
            self.book.run_backoffs()
            self.runs.start_due()
            self.runs.start_queued()
        self.executor.enforce()
        if self.book.gc_wanted and running:
            self.book.collect_envs()
        self._notify_service()
        self.snapshots.publish()
        return not (self.stopping is not None and not self.launcher.in_flight)

    def _notify_service(self) -> None:
        """Tell systemd how the loop is doing; the watchdog ping proves this very thread still turns."""
        if not self.notifier.enabled:
            return
        tasks = [st for st in self.book.tasks.values() if not is_gone(st)]
        broken = sum(1 for st in tasks if st.phase in (P.ERROR, P.ENV_FAILED))
        self.notifier.turn(
            self.clock.monotonic(),
            scanned=self.book.scanned_once,
            tasks=len(tasks),
            running=self.launcher.count(RunMode.MAIN),
            broken=broken,
        )

    def drain(self) -> None:
        """Handle whatever else arrived, so one turn serves a burst."""
        while (event := self.inbox.get(0)) is not None:
            self.handle(event)

    def sleep_for(self) -> float:
        """Seconds until the next thing the loop must do by itself."""
        wait = IDLE_WAKE_S
        moments = [self.executor.next_wakeup()]  # monotonic times
        mono = self.clock.monotonic()
        if self.stopping is None:
            # Due times are measured against the wall clock as this turn's step check read it: a step since
            # then cannot stretch the sleep (the next turn's check notices it and recomputes).
            looked = self.clock_steps
            wait = self.runs.next_due_in(looked.wall, IDLE_WAKE_S) - (mono - looked.mono)
            # The safety rescan adds no wake-up of its own: it is longer than IDLE_WAKE_S.
            moments += [
                self.next_safety_rescan,
                self.book.next_backoff(),
                self.slots.next_wakeup(in_flight=self.launcher.count(RunMode.MAIN)),
            ]
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
            self.book.on_env_built(event)
        elif isinstance(event, StopRequested):
            self.begin_shutdown(event.reason)
        elif isinstance(event, ControlRequest):
            reply = answer(event.command, event.args, self)
            self.snapshots.publish()  # the reply's effect is in the status an asker reads next
            event.reply(reply)

    def _check_clock(self) -> None:
        """Recompute every due time after a step of the wall clock (monotonic time is the reference)."""
        step = self.clock_steps.step()
        if not step:
            return
        self.log.warning(
            "the wall clock stepped %s by %s; recomputing every due time",
            "forward" if step > 0 else "back",
            timedelta(seconds=round(abs(step))),
        )
        self.runs.recompute_due(step)

    def _on_run_ended(self, result: RunResult) -> None:
        flight = self.launcher.in_flight.pop(result.run_id, None)
        if flight is None:
            return
        st = self.book.tasks.get(result.task)
        if result.mode is RunMode.MAIN:
            self.runs.on_main_ended(st, flight, result)
            if flight.env_key not in keys_in_use(self.book.tasks.values(), self.launcher.in_flight.values()):
                self.book.gc_wanted = True  # the last run on a replaced env has ended: it can go now
        elif st is not None and st.init_run == result.run_id:
            st.init_run = None
            self.book.guarded(st.name, self.book.on_initialized, st, result)
        if result.mode is RunMode.INITIALIZE:
            self.book.start_queued_inits()
        if st is not None:
            self.book.forget_if_idle(st)

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.executor.close()  # a no-op after a clean stop; a safety net after an unexpected exception
        self.envs.close()
        uptime = self.clock.now() - self.started_at
        summary = ", ".join(f"{n} {k}" for k, n in sorted(self.history.counts.items())) or "no runs"
        self.log.info("supervisor stopped after %s: %s", str(uptime).split(".")[0], summary)
        self.notifier.close()
        self.report.task_logs.close()
