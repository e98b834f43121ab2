"""The supervisor's loop: one thread owns every task's state; other threads only post events.

Each turn handles the posted events, then runs the named phases ``rescan -> start_due -> enforce``, then
sleeps until the earliest of: the next due run, the next limit check of a live run, or an event. With no run
in flight and nothing due, an idle supervisor wakes at most once a minute (to notice wall-clock jumps), however
many tasks it holds.

Rescans happen when the watcher posts a hint, on a ``rescan`` control request, and every ``SAFETY_RESCAN_S``
regardless: inotify can silently miss sub-folders past ``max_user_watches`` and drops events when its queue
overflows, so a lost hint delays a reload by at most that long instead of forever.

A task goes through these states (``TaskState.state``; ``status`` shows them):

    env-building  its first env is being built (nothing to run yet)
    initializing  initialize() is running in its env after a load, a code change or an env switch
    scheduled     loaded: runs when due (``running`` while a run of main() is in flight)
    disabled      Enabled=False: not loaded
    error         config, source, initialize() or env error: not loaded until its files change
    env-failed    its env could not be built and it has no previous env to fall back on

Policies the loop enforces:
* "Not loaded -> loaded" (start, folder added, re-enabled, fixed) is the only transition that applies
  RunOnStartup and that re-reads the schedule anchor from history.
* The next due time is advanced and the run recorded as started *before* the spawn, so a crash cannot leave
  a task overdue and hot-looping.
* A due run while the previous one is still running is recorded as ``skipped``; the next due time is the next
  slot. A Testing=True confirmation counts as a start.
* A removed or disabled task's in-flight run is allowed to finish within its own timeout; then the task is
  forgotten (its history stays).
* A changed requirements.txt builds a new env in the background; the task keeps running on the old env until
  the new one is complete, then switches between runs (a run keeps the interpreter it started with) and runs
  initialize() again. A failed build keeps the old env serving.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import signal
import threading
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Callable, Mapping

import psutil

from .clock import Clock
from .config import read_task_config
from .discovery import TaskFolder, check_task_source, diff_tasks, scan_tasks
from .envs import EnvManager
from .errors import ConfigError, EnvBuildError, TaskAutomationError, TaskLoadError
from .events import ControlRequest, EnvBuilt, Event, RescanRequested, RunExited, StopRequested
from .logsetup import TaskLogs
from .outcome import StopCause, StopRequest
from .paths import Paths
from .records import Records, record_to_json
from .cgroups import Containment
from .runner import LaunchSpec, ProcessReport, sweep_cookie
from .runs import LIMIT_SAMPLE_S, Runs
from .schedule import in_window, initial_due
from .spec import CatchUp, HomeConfig, Outcome, RunRecord, TaskSpec, Trigger

IDLE_WAKE_S = 60.0  # longest sleep: bounds how late a wall-clock jump (NTP, suspend) is noticed
SAFETY_RESCAN_S = 600.0  # full rescan without any hint: bounds the cost of an event inotify lost
# initialize() calls in flight at once: enough to keep every core busy while processes start and exit.
MAX_CONCURRENT_INITS = max(4, 4 * (os.cpu_count() or 1))


@dataclass
class TaskState:
    """Everything the loop knows about one task folder."""

    name: str
    folder: TaskFolder | None = None
    spec: TaskSpec | None = None
    state: str = "loading"
    error: str | None = None
    loaded: bool = False  # scheduled: config valid, enabled, env ready, initialize() succeeded
    env_key: str | None = None  # env serving new runs
    wanted_key: str | None = None  # env the current requirements.txt asks for
    anchor: datetime | None = None  # due time of the last schedule/startup start
    next_due: datetime | None = None
    startup_pending: bool = False
    main_run: str | None = None
    init_run: str | None = None
    init_again: bool = False  # the folder changed while initialize() ran: run it once more after
    removed: bool = False
    reported: set[str] = field(default_factory=set)  # "fingerprint:message" already logged


class Supervisor:
    """Owns the loop. Construct, then call ``run()`` from the thread that should own every child."""

    def __init__(self, paths: Paths, *, home_config: HomeConfig, records: Records, envs: EnvManager,
                 clock: Clock, tz: tzinfo, logger: logging.Logger, task_logs: TaskLogs,
                 watcher_factory: Callable[[Callable[[], None]], Any] | None = None,
                 build_workers: int = 2, safety_rescan_s: float = SAFETY_RESCAN_S,
                 max_inits: int = MAX_CONCURRENT_INITS, containment: Containment | None = None) -> None:
        self.paths = paths
        self.config = home_config
        self.records = records
        self.envs = envs
        self.clock = clock
        self.tz = tz
        self.log = logger
        self.task_logs = task_logs
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()  # put() is safe from signal handlers
        self.cookie_prefix = hashlib.sha256(str(paths.home).encode()).hexdigest()[:12] + "/"
        self.runs = Runs(home=paths.home, records=records, task_logs=task_logs, logger=logger, clock=clock,
                         cookie_prefix=self.cookie_prefix, output_cap_bytes=home_config.output_cap_bytes,
                         keep_runs=home_config.keep_runs,
                         on_exit=lambda spec, report: self.post(RunExited(spec, report)),
                         containment=containment if containment is not None else Containment(paths.home))
        self.tasks: dict[str, TaskState] = {}
        self.folders: dict[str, TaskFolder] = {}
        self.building: dict[str, set[str]] = {}
        self.init_queue: dict[str, None] = {}  # tasks waiting for an initialize() slot, in arrival order
        self.max_inits = max_inits
        self.build_slots = threading.BoundedSemaphore(build_workers)
        self.stopping: str | None = None
        self.rescan_wanted = True
        self.scanned_once = False
        self.safety_rescan_s = safety_rescan_s
        self.next_safety_rescan = clock.monotonic() + safety_rescan_s
        self.gc_wanted = False
        self.watcher_factory = watcher_factory
        self.watcher: Any = None
        self.started_at = clock.now()

    # ------------------------------------------------------------------ public, thread-safe
    def post(self, event: Event) -> None:
        self.events.put(event)

    def request_stop(self, reason: str) -> None:
        self.post(StopRequested(reason))

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Run until a stop is requested and every child is gone."""
        self._recover_after_crash()
        if self.watcher_factory is not None:
            self.watcher = self.watcher_factory(lambda: self.post(RescanRequested()))
            self.watcher.start()
        for line in self.runs.start_containment():  # which mechanism enforces pids, memory and the kill
            if line.startswith("WARNING: "):
                self.log.warning("containment: %s", line[len("WARNING: "):])
            else:
                self.log.info("containment: %s (tree samples every %.2f s)", line, LIMIT_SAMPLE_S)
        self.log.info("supervisor started: home %s, pid %d, installer %s", self.paths.home, os.getpid(),
                      self.envs.installer)
        try:
            while True:
                if self.stopping is None and self.clock.monotonic() >= self.next_safety_rescan:
                    self.rescan_wanted = True
                if self.rescan_wanted and self.stopping is None:
                    self.rescan_wanted = False
                    # Any rescan, whatever asked for it, resets the safety net's countdown.
                    self.next_safety_rescan = self.clock.monotonic() + self.safety_rescan_s
                    self._rescan()
                if self.stopping is None:
                    self._start_due()
                self.runs.enforce()
                if self.gc_wanted and self.stopping is None:
                    self._collect_envs()
                if self.stopping is not None and not self.runs.active:
                    break
                self._handle(self._next_event(self._sleep_for()))
                while True:  # drain whatever else arrived, so one turn serves a burst
                    try:
                        self._handle(self.events.get_nowait())
                    except queue.Empty:
                        break
        finally:
            self._close()

    def _next_event(self, timeout: float) -> Event | None:
        try:
            return self.events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def _sleep_for(self) -> float:
        """Seconds until the next thing the loop must do by itself."""
        wait = IDLE_WAKE_S
        now = self.clock.now()
        if self.stopping is None:
            for st in self.tasks.values():
                if st.loaded and st.startup_pending:
                    return 0.0
                if st.loaded and st.next_due is not None:
                    wait = min(wait, (st.next_due - now).total_seconds())
        mono = self.clock.monotonic()
        if self.stopping is None:
            wait = min(wait, self.next_safety_rescan - mono)  # no extra wake-up: it is longer than IDLE_WAKE_S
        limit_check = self.runs.next_wakeup()
        if limit_check is not None:
            wait = min(wait, limit_check - mono)
        return max(0.0, wait)

    def _handle(self, event: Event | None) -> None:
        if event is None:
            return
        if isinstance(event, RescanRequested):
            self.rescan_wanted = True
        elif isinstance(event, RunExited):
            self._on_run_exited(event.spec, event.report)
        elif isinstance(event, EnvBuilt):
            self._on_env_built(event)
        elif isinstance(event, StopRequested):
            self._begin_shutdown(event.reason)
        elif isinstance(event, ControlRequest):
            self._on_control(event)

    # ------------------------------------------------------------------ phase: rescan
    def _rescan(self) -> None:
        """Diff Tasks/ against what is loaded and apply the difference (file events are only hints)."""
        try:
            scanned = scan_tasks(self.paths.tasks)
        except TaskLoadError as exc:
            # Tasks/ unlistable for a moment (permissions, a remount): keep every task as it is.
            self.log.error("%s; keeping the loaded tasks as they are", exc)
            return
        diff = diff_tasks(self.folders, scanned)
        if not scanned and not self.scanned_once:
            self.log.warning("no task folders in %s yet: add one (python3 -m supervisor new NAME); it is picked "
                             "up without a restart", self.paths.tasks)
        self.scanned_once = True
        if diff.empty:
            return
        self.folders = scanned
        for name in diff.removed:
            self._on_removed(name)
        for name in diff.added:
            self._load(name, scanned[name], code_changed=True)
        changed = set(diff.config_changed) | set(diff.code_changed) | set(diff.requirements_changed)
        for name in sorted(changed - set(diff.added)):
            self._load(name, scanned[name], code_changed=name in diff.code_changed)
        self.gc_wanted = True

    def _load(self, name: str, folder: TaskFolder, *, code_changed: bool) -> None:
        st = self.tasks.get(name)
        if st is None or st.removed:
            st = self.tasks[name] = TaskState(name)
        st.folder = folder
        if folder.missing:
            self._set_broken(st, f"task {name!r}: {folder.path}: incomplete, {' and '.join(folder.missing)} missing;"
                                 " waiting for the folder to be complete", level=logging.WARNING)
            return
        try:
            result = read_task_config(folder.path / "config.ini", task=name, defaults=self.config.limits)
        except ConfigError as exc:
            self._set_broken(st, str(exc))
            return
        for warning in result.warnings:
            self._report_once(st, warning, logging.WARNING)
        spec = result.spec
        if not spec.enabled:
            if st.state != "disabled":
                self._say(name, logging.INFO, f"task {name!r}: disabled (Enabled=False); not loaded")
            self._unload(st, "disabled")
            st.spec = spec
            return
        try:
            check_task_source(folder.path / "main.py", task=name)
        except TaskLoadError as exc:
            self._set_broken(st, str(exc))
            return
        recovering = not st.loaded
        previous, st.spec = st.spec, spec
        wanted = self.envs.key_for(folder.path / "requirements.txt", task_dir=folder.path)
        st.wanted_key = wanted
        if wanted != st.env_key:
            if self.envs.is_ready(wanted):
                st.env_key = wanted
                code_changed = True  # a new env means initialize() again
            else:
                self._build_env(wanted, st)
                if st.env_key is None:
                    st.state = "env-building"
                    return
                self._say(name, logging.INFO, f"task {name!r}: requirements changed; building a new env "
                                              "in the background, runs keep using the current one")
        if recovering and st.state == "initializing" and not code_changed:
            # initialize() of this very code is already running for this load (a file copied in late, such
            # as requirements.txt, changed nothing that matters): it activates the task with the new spec.
            pass
        elif recovering or code_changed or st.error is not None:
            if not recovering and code_changed:
                self._say(name, logging.INFO, f"task {name!r}: code changed: initialize() again")
            self._initialize(st)
        elif spec != previous:
            self._reschedule(st)

    def _on_removed(self, name: str) -> None:
        st = self.tasks.get(name)
        if st is None:
            return
        self._say(name, logging.INFO, f"task {name!r}: folder removed; unscheduled" +
                  ("; its run in flight may finish within its timeout" if st.main_run else ""))
        self._unload(st, "removed")
        st.removed = True
        self._forget_if_idle(st)

    def _forget_if_idle(self, st: TaskState) -> None:
        if st.removed and st.main_run is None and st.init_run is None and self.tasks.get(st.name) is st:
            del self.tasks[st.name]
            self.task_logs.close(st.name)

    def _unload(self, st: TaskState, state: str, error: str | None = None) -> None:
        st.loaded = False
        st.state = state
        st.error = error
        st.next_due = None
        st.startup_pending = False

    def _set_broken(self, st: TaskState, message: str, *, level: int = logging.ERROR,
                    state: str = "error") -> None:
        self._unload(st, state, message)
        self._report_once(st, message, level)

    def _report_once(self, st: TaskState, message: str, level: int) -> None:
        """Log a problem once per folder content, so an unchanged broken folder is not re-reported."""
        key = f"{st.folder.fingerprint if st.folder else ''}:{message}"
        if key not in st.reported:
            st.reported.add(key)
            self._say(st.name, level, message)

    # ------------------------------------------------------------------ environments
    def _build_env(self, key: str, st: TaskState) -> None:
        waiting = self.building.get(key)
        if waiting is not None:
            waiting.add(st.name)
            return
        self.building[key] = {st.name}
        assert st.folder is not None
        folder = st.folder
        self._say(st.name, logging.INFO, f"task {st.name!r}: building env {key} from {folder.path / 'requirements.txt'}")

        def build() -> None:
            with self.build_slots:
                try:
                    self.envs.ensure(task=st.name, requirements=folder.path / "requirements.txt",
                                     task_dir=folder.path)
                except EnvBuildError as exc:
                    self.post(EnvBuilt(key, error=str(exc), output=exc.output or None))
                except Exception as exc:  # noqa: BLE001 - any failure must reach the loop, not kill the thread
                    self.post(EnvBuilt(key, error=f"task {st.name!r}: env build crashed: {exc!r}"))
                else:
                    self.post(EnvBuilt(key))

        # Builds run in worker threads; they never spawn runs (PDEATHSIG is tied to the spawning thread).
        threading.Thread(target=build, name=f"env-{key}", daemon=True).start()

    def _on_env_built(self, event: EnvBuilt) -> None:
        waiting = self.building.pop(event.key, set())
        for name in sorted(waiting):
            st = self.tasks.get(name)
            if st is None or st.removed or st.wanted_key != event.key or st.state in ("disabled", "error"):
                continue  # the task changed again, broke, was disabled or went away during the build
            if event.error is None:
                switch = f"; switching from env {st.env_key}, initialize() again" if st.env_key else ""
                self._say(name, logging.INFO, f"task {name!r}: env {event.key} ready{switch}")
                st.env_key = event.key
                self._initialize(st)
            elif st.env_key is not None:
                st.error = f"{event.error} (still running on the previous env)"
                self._say(name, logging.ERROR, f"{event.error}\nThe previous env keeps serving; fix "
                                               "requirements.txt to retry.")
                if event.output:
                    self.task_logs.get(name).error("installer output:\n%s", event.output)
            else:
                self._set_broken(st, event.error, state="env-failed")
                if event.output:
                    self.task_logs.get(name).error("installer output:\n%s", event.output)
                self.runs.record_instant(task=name, trigger=Trigger.SCHEDULE, due=self.clock.now(),
                                         outcome=Outcome.ENV_FAILED, message=event.error)
        self.gc_wanted = True

    def _collect_envs(self) -> None:
        """Delete envs that no task folder, build or run refers to any more."""
        self.gc_wanted = False
        keep = set(self.building)
        for st in self.tasks.values():
            keep.update(k for k in (st.env_key, st.wanted_key) if k)
        keep.update(self.runs.env_keys())
        for name, folder in self.folders.items():
            if name not in self.tasks or self.tasks[name].wanted_key is None:
                try:  # a broken or disabled task keeps its env for when it is fixed or re-enabled
                    keep.add(self.envs.key_for(folder.path / "requirements.txt", task_dir=folder.path))
                except OSError:
                    pass
        removed = self.envs.gc(keep)
        if removed:
            self.log.info("removed %d unused env(s): %s", len(removed), ", ".join(removed))

    # ------------------------------------------------------------------ initialize() and activation
    def _initialize(self, st: TaskState) -> None:
        """Run initialize() for ``st`` now, or as soon as one of the ``max_inits`` slots frees up.

        The cap bounds the processes a start with hundreds of tasks spawns at once (memory, pids); it does
        not slow the start down, which is CPU-bound by then anyway.
        """
        if st.init_run is not None:
            st.init_again = True  # one initialize() at a time; the newest code gets its own call after
            return
        if not st.loaded:
            st.state = "initializing"
        if st.name in self.init_queue:
            return
        if sum(1 for a in self.runs.active.values() if a.mode == "initialize") >= self.max_inits:
            self.init_queue[st.name] = None
            return
        self._launch(st, mode="initialize", trigger=Trigger.STARTUP, due=None)

    def _start_queued_inits(self) -> None:
        while self.init_queue and self.stopping is None:
            if sum(1 for a in self.runs.active.values() if a.mode == "initialize") >= self.max_inits:
                return
            name = next(iter(self.init_queue))
            del self.init_queue[name]
            st = self.tasks.get(name)
            # The task may have been removed, disabled or broken while it waited for a slot.
            if st is None or st.removed or st.env_key is None or st.state in ("disabled", "error", "env-failed"):
                continue
            self._initialize(st)

    def _activate(self, st: TaskState) -> None:
        """initialize() succeeded: schedule the task (RunOnStartup only on a not-loaded -> loaded step)."""
        assert st.spec is not None
        transition = not st.loaded
        st.loaded = True
        st.state = "scheduled"
        st.error = None
        # Problems are reported once per folder content; a working load ends that episode, so the memory of
        # it does not grow over months of edits (a later breakage is news again).
        st.reported = {key for key in st.reported if st.folder and key.startswith(st.folder.fingerprint + ":")}
        now = self.clock.now()
        if transition:
            st.anchor = self.records.last_anchor(st.name)
            st.startup_pending = st.spec.run_on_startup
        st.next_due = initial_due(st.spec, last_anchor=st.anchor, now=now, tz=self.tz)
        if transition:
            spec = st.spec
            when = "now (RunOnStartup)" if st.startup_pending else self._fmt(st.next_due)
            flags = " [Testing: main() will not run]" if spec.testing else ""
            self._say(st.name, logging.INFO,
                      f"task {st.name!r}: loaded: every {spec.every.total_seconds() / 60:g} min, window "
                      f"{spec.window}, next run {when}{flags}")

    def _reschedule(self, st: TaskState) -> None:
        """A config-only change of a loaded task: new schedule from the same anchor, no initialize()."""
        assert st.spec is not None
        st.next_due = initial_due(st.spec, last_anchor=st.anchor, now=self.clock.now(), tz=self.tz)
        self._say(st.name, logging.INFO, f"task {st.name!r}: config reloaded; next run {self._fmt(st.next_due)}")

    # ------------------------------------------------------------------ phase: start_due
    def _start_due(self) -> None:
        now = self.clock.now()
        for st in list(self.tasks.values()):
            if not st.loaded or st.spec is None:
                continue
            if st.startup_pending:
                st.startup_pending = False
                st.anchor = now
                st.next_due = initial_due(st.spec, last_anchor=now, now=now, tz=self.tz)
                self._start(st, Trigger.STARTUP, now)
            elif st.next_due is not None and st.next_due <= now:
                due = st.next_due
                st.anchor = due
                # Advance before anything can fail, so a spawn error cannot make the task hot-loop.
                st.next_due = initial_due(st.spec, last_anchor=due, now=now, tz=self.tz)
                self._start(st, Trigger.SCHEDULE, due)

    def _start(self, st: TaskState, trigger: Trigger, due: datetime | None) -> None:
        assert st.spec is not None
        now = self.clock.now()
        if st.main_run is not None:
            self.runs.record_instant(task=st.name, trigger=trigger, due=due or now, outcome=Outcome.SKIPPED,
                                     message=f"previous run {st.main_run} still running")
            self._say(st.name, logging.WARNING, f"task {st.name!r}: due run skipped: previous run "
                                                f"{st.main_run} is still running; next run {self._fmt(st.next_due)}")
            return
        if st.spec.testing:
            self.runs.record_instant(task=st.name, trigger=trigger, due=due or now, outcome=Outcome.TESTING,
                                     message="Testing=True: main() not executed")
            self._say(st.name, logging.INFO, f"task {st.name!r}: [Testing] run confirmed ({trigger.value}); "
                                             f"main() not executed; next run {self._fmt(st.next_due)}")
            return
        self._launch(st, mode="main", trigger=trigger, due=due)

    def run_now(self, name: str) -> tuple[bool, str]:
        """Start a manual run (does not move the schedule). Returns (started, reason or run id)."""
        st = self.tasks.get(name)
        if st is None or st.removed:
            return False, f"no task named {name!r} in {self.paths.tasks}"
        if self.stopping is not None:
            return False, "the supervisor is shutting down"
        if not st.loaded:
            return False, f"task {name!r} is not loaded ({st.state}{': ' + st.error if st.error else ''})"
        if st.main_run is not None:
            return False, f"task {name!r} is already running (run {st.main_run})"
        if st.spec is not None and st.spec.testing:
            # Testing means "never execute main()": a manual run is confirmed like a scheduled one.
            run_id = self.runs.record_instant(task=name, trigger=Trigger.MANUAL, due=self.clock.now(),
                                              outcome=Outcome.TESTING, message="Testing=True: main() not executed")
            self._say(name, logging.INFO, f"task {name!r}: [Testing] run confirmed (manual); main() not executed")
            return True, run_id
        launched = self._launch(st, mode="main", trigger=Trigger.MANUAL, due=None)
        if launched is None:
            return False, f"task {name!r}: the run could not start (see its log)"
        return True, launched

    def _launch(self, st: TaskState, *, mode: str, trigger: Trigger, due: datetime | None) -> str | None:
        """Start ``main()`` or ``initialize()`` of ``st`` in its current env; None if it could not start."""
        assert st.spec is not None and st.env_key is not None and st.folder is not None
        try:
            run_id = self.runs.launch(task=st.name, task_dir=st.folder.path,
                                      output_dir=self.paths.task_output(st.name),
                                      python=self.envs.python_for(st.env_key), mode=mode, trigger=trigger,
                                      due=due, limits=st.spec.limits)
        except TaskAutomationError as exc:
            self._say(st.name, logging.ERROR, str(exc))
            if mode != "main":
                self._set_broken(st, str(exc))
            return None
        if mode == "main":
            st.main_run = run_id
        else:
            st.init_run = run_id
        return run_id

    # ------------------------------------------------------------------ run ends
    def _on_run_exited(self, spec: LaunchSpec, report: ProcessReport) -> None:
        finished = self.runs.finish(spec, report)
        if finished is None:
            return
        active, decision = finished
        st = self.tasks.get(spec.task)
        if active.mode == "main":
            if st is not None and st.main_run == spec.run_id:
                st.main_run = None
        elif st is not None and st.init_run == spec.run_id:
            st.init_run = None
            again, st.init_again = st.init_again, False
            if again and not st.removed and self.stopping is None:
                self._initialize(st)
            elif decision.outcome is Outcome.OK:
                if decision.message:
                    self._say(st.name, logging.INFO, f"task {st.name!r}: initialize(): {decision.message}")
                if not st.removed and self.stopping is None and st.state not in ("disabled", "error"):
                    self._activate(st)
            elif self.stopping is None and not st.removed:
                detail = decision.message if decision.outcome is Outcome.FAILED else decision.summary
                self._set_broken(st, f"task {st.name!r}: {st.folder.path / 'main.py' if st.folder else 'main.py'}"
                                     f": initialize() failed ({decision.outcome.value}): {detail}")
        if active.mode == "initialize":
            self._start_queued_inits()
        if active.mode == "main" and active.env_key not in self._keys_in_use():
            self.gc_wanted = True  # the last run on a replaced env has ended: it can go now
        if st is not None:
            self._forget_if_idle(st)

    def _keys_in_use(self) -> set[str]:
        keys = self.runs.env_keys()
        for st in self.tasks.values():
            keys.update(k for k in (st.env_key, st.wanted_key) if k)
        return keys

    # ------------------------------------------------------------------ control requests
    def _on_control(self, request: ControlRequest) -> None:
        try:
            if request.command == "status":
                request.reply({"ok": True, "status": self.status()})
            elif request.command == "run-now":
                started, detail = self.run_now(str(request.args.get("name", "")))
                request.reply({"ok": started, "run_id" if started else "error": detail})
            elif request.command == "stop":
                self._begin_shutdown(f"stop requested ({request.args.get('by', 'control socket')})")
                request.reply({"ok": True, "pid": os.getpid()})
            elif request.command == "rescan":
                self.rescan_wanted = True
                request.reply({"ok": True})
            else:
                request.reply({"ok": False, "error": f"unknown command {request.command!r}"})
        except Exception as exc:  # noqa: BLE001 - a bad request must not take the loop down
            self.log.exception("control request %r failed", request.command)
            request.reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})

    def status(self) -> dict[str, Any]:
        """The `status --json` document (DESIGN.md 1.4)."""
        rows = []
        for name in sorted(self.tasks, key=str.casefold):
            st = self.tasks[name]
            if st.removed:
                continue
            last = self.records.last_finished(name)
            running = self.runs.active.get(st.main_run) if st.main_run else None
            rows.append({
                "name": name,
                "enabled": bool(st.spec.enabled) if st.spec else True,
                "state": "running" if running else st.state,
                "next_run": st.next_due.isoformat() if st.loaded and st.next_due else None,
                "last_run": _last_run_json(last),
                "error": st.error,
                "running": {"run_id": running.record.run_id, "started": running.record.started.isoformat(),
                            "trigger": running.record.trigger.value} if running else None,
                "why": self._explain(st, running is not None),
            })
        return {"tasks": rows, "supervisor": {"pid": os.getpid(), "started": self.started_at.isoformat(),
                                              "home": str(self.paths.home)}}

    def _explain(self, st: TaskState, running: bool) -> str:
        """One line on why the task is in its state and when it runs next (answers "why did X not run?")."""
        spec = st.spec
        if running:
            return "running now"
        if st.state == "disabled":
            return "not loaded: Enabled=False in config.ini"
        if st.state in ("error", "env-failed"):
            return "not scheduled until its files change (see error)"
        if st.state == "env-building":
            return "waiting for its environment to be built"
        if st.state == "initializing":
            return "waiting for initialize() to finish"
        if not st.loaded or spec is None or st.next_due is None:
            return st.state
        parts = []
        if spec.testing:
            parts.append("Testing=True: due runs are confirmed, main() is not executed")
        if st.startup_pending:
            parts.append("RunOnStartup: runs now")
        elif st.anchor is None:
            parts.append("never ran: first run as soon as it is inside its window")
        else:
            slot = st.anchor + spec.every
            if st.next_due == slot:
                parts.append(f"every {spec.every.total_seconds() / 60:g} min since its last due time "
                             f"{self._fmt(st.anchor)}")
            elif in_window(spec.window, slot, tz=self.tz) != slot:
                parts.append(f"interval elapsed at {self._fmt(slot)}, but it may only start within "
                             f"its window {spec.window}")
            elif spec.catch_up is CatchUp.SKIP:
                parts.append("runs missed while the supervisor was down are skipped (CatchUp=skip)")
            else:
                parts.append("catching up one run missed while the supervisor was down (CatchUp=once)")
        return "; ".join(parts)

    # ------------------------------------------------------------------ shutdown and recovery
    def _begin_shutdown(self, reason: str) -> None:
        if self.stopping is not None:
            return
        self.stopping = reason
        self.log.info("stopping: %s; %d run(s) in flight", reason, len(self.runs.active))
        if self.watcher is not None:
            self.watcher.stop()
        self.runs.stop_all(StopRequest(StopCause.SHUTDOWN, f"stopped by supervisor shutdown ({reason})"))

    def _close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.runs.kill_everything()  # a no-op after a clean stop; a safety net after an unexpected exception
        self.runs.close_containment()
        self._kill_remaining_children()
        uptime = self.clock.now() - self.started_at
        summary = ", ".join(f"{n} {k}" for k, n in sorted(self.runs.counts.items())) or "no runs"
        self.log.info("supervisor stopped after %s: %s", str(uptime).split(".")[0], summary)
        self.task_logs.close()

    def _kill_remaining_children(self) -> None:
        """No child outlives the supervisor: what can be left now is an installer still building an env.

        Each installer runs in its own session, so killing the session takes its helpers too. A half-built
        env has no completion marker and is rebuilt from scratch at the next start.
        """
        envs_dir = str(self.paths.envs)
        for child in psutil.Process().children():
            try:
                # Only installers: their command line names an env under this home (uv's --python ENV/bin/
                # python, or ENV/bin/python -m pip). Other children of an embedding process are not ours.
                if not any(envs_dir in arg for arg in child.cmdline()):
                    continue
            except psutil.Error:
                continue  # gone already, or not ours to inspect
            try:
                os.killpg(child.pid, signal.SIGKILL)  # installers run in a session of their own
            except OSError:
                try:
                    child.kill()
                except psutil.Error:
                    pass
        for thread in threading.enumerate():
            if thread.name.startswith("env-"):
                thread.join(timeout=5.0)  # the builder reaps its installer and posts its (unread) result

    def _recover_after_crash(self) -> None:
        """Close the history rows a crashed supervisor left open and kill whatever it left running."""
        interrupted = []
        try:
            interrupted = self.records.mark_interrupted(now=self.clock.now())
        except TaskAutomationError as exc:
            self.log.error("run history: %s", exc)
        for record in interrupted:
            self.log.warning("task %r: run %s was interrupted by a supervisor crash", record.task, record.run_id)
        killed = sweep_cookie(self.cookie_prefix)
        if killed:
            self.log.warning("killed %d process(es) left behind by a previous supervisor: %s", len(killed),
                             ", ".join(map(str, killed)))

    # ------------------------------------------------------------------ helpers
    def _say(self, task: str, level: int, message: str) -> None:
        """Log to the supervisor log and to the task's own log."""
        self.log.log(level, "%s", message)
        self.task_logs.get(task).log(level, "%s", message)

    def _fmt(self, when: datetime | None) -> str:
        return when.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S %Z") if when else "never"


def _last_run_json(record: RunRecord | None) -> Mapping[str, Any] | None:
    if record is None:
        return None
    full = record_to_json(record)
    return {key: full[key] for key in ("run_id", "started", "finished", "outcome", "duration_s",
                                       "exit_code", "message")}
