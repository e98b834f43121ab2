"""The loop's book of tasks: the lifecycle moves that bring a task from its folder to ``scheduled``.

``TaskBook`` holds every ``TaskState`` and makes the moves of lifecycle.py that follow from a rescan of
Tasks/ and from background results (env built, initialize() returned, a task broken, unloaded, activated), on
the loop thread, with the parts loop.py hands it: lifecycle, launcher, run slots, facts.

Policies:
* Per-task error boundary (``guarded``): any exception while handling one task becomes that task's error in
  status and the logs; the loop goes on with every other task.
* initialize() calls in flight are capped (``max_inits``); the rest wait in arrival order: it bounds the
  processes a start with hundreds of tasks spawns at once (such a start is CPU-bound anyway).
* Problems are logged once per folder content (reporting.py); unused envs are collected (envgc.py); a paused
  task is activated as ``paused`` (loaded, its due runs do not start).
* Transient failures are retried: initialize() that could not start (2 s doubling to 60 s), an env build (1 min
  doubling to 1 h). New folder content is a fresh start, not a retry.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable

from ..discovery.scan import TaskFolder
from ..envs.builder import EnvBuilder
from ..envs.health import HealPolicy
from ..events import EnvBuilt
from ..history.recorder import RunHistory
from ..model import HomeConfig, Outcome, RunMode, RunResult, RunStage, TaskPhase, Trigger
from ..paths import MAIN_FILE, REQUIREMENTS_FILE, Paths
from ..scheduling.triggers import trigger_for
from . import damping
from .envgc import collect_unused_envs
from .facts import RunFacts
from .launch import Launcher, LaunchFailed
from .lifecycle import Backoff, BackoffKind, Lifecycle, TaskState, is_gone, is_idle, is_loaded, is_parked
from .loading import read_folder, scan_changes
from .missing import MissedBook
from .reporting import Reporter
from .slots import RunSlots

P = TaskPhase


class TaskBook:
    def __init__(
        self,
        paths: Paths,
        *,
        home_config: HomeConfig,
        report: Reporter,
        machine: Lifecycle,
        envs: EnvBuilder,
        history: RunHistory,
        launcher: Launcher,
        slots: RunSlots,
        facts: RunFacts,
        paused: Callable[[str], datetime | None],
        stopping: Callable[[], str | None],
        max_inits: int,
    ) -> None:
        self.paths = paths
        self.config = home_config
        self.report = report
        self.machine = machine
        self.envs = envs
        self.history = history
        self.launcher = launcher
        self.slots = slots
        self.facts = facts
        self.paused = paused
        self.stopping = stopping
        self.max_inits = max_inits
        self.clock = launcher.clock
        self.missed = MissedBook(history=history, facts=facts, report=report, clock=self.clock, paused=paused)
        self.tasks: dict[str, TaskState] = {}
        self.folders: dict[str, TaskFolder] = {}
        self.init_queue: dict[str, None] = {}  # tasks waiting for an initialize() slot, in arrival order
        self.scanned_once = False
        self.building: dict[str, set[str]] = {}  # env key -> tasks waiting for its build
        self.gc_wanted = False
        self.heal = HealPolicy()  # env keys already rebuilt once because their interpreter disappeared

    # ------------------------------------------------------------------ error boundary
    def guarded(self, name: str, action: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run ``action(*args, **kwargs)`` for task ``name``; any exception becomes that task's error, never
        the loop's."""
        try:
            action(*args, **kwargs)
        except Exception as exc:  # the per-task error boundary
            self.report.log.exception("task %r: unexpected error", name)
            st = self.tasks.get(name)
            if st is not None and not is_gone(st):
                try:
                    self.set_broken(st, f"task {name!r}: {type(exc).__name__}: {exc}")
                except Exception:  # noqa: BLE001 - even reporting failed (a full disk): the loop goes on
                    st.error = f"task {name!r}: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ phase: rescan
    def rescan(self) -> None:
        """Diff Tasks/ against what is loaded and apply the difference (file events are only hints)."""
        found = scan_changes(self.paths.tasks, self.folders, logger=self.report.log, first=not self.scanned_once)
        if found is None:
            return
        self.scanned_once = True
        scanned, diff = found
        if diff.empty:
            return
        self.folders = scanned
        for name in diff.removed:
            self._on_removed(name)
        for name in diff.added:
            self.guarded(name, self._load, name, scanned[name], code_changed=True)
        changed = set(diff.config_changed) | set(diff.code_changed) | set(diff.requirements_changed)
        for name in sorted(changed - set(diff.added)):
            self.guarded(name, self._load, name, scanned[name], code_changed=name in diff.code_changed)
        self.gc_wanted = True

    # ------------------------------------------------------------------ folder changes
    def _load(self, name: str, folder: TaskFolder, *, code_changed: bool) -> None:
        st = self.tasks.get(name)
        if st is None or is_gone(st):
            st = self.tasks[name] = TaskState(name)
        elif st.folder is not None:  # new content of a task it knew: FailureBackoff counts afresh
            damping.files_changed(st, machine=self.machine, now=self.clock.now())
        st.folder = folder
        st.backoffs.clear()  # new content: a fresh start, not a retry
        reading = read_folder(
            folder,
            defaults=self.config.limits,
            envs=self.envs,
            notify_defaults=self.config.notify,
            retry_defaults=self.config.retry,
            backoff_defaults=self.config.failure_backoff,
            retention_defaults=self.config.retention,
        )
        if reading.problem is not None:
            self.set_broken(st, reading.problem, level=reading.level)
            return
        for warning in reading.warnings:
            self.report.report_once(st, warning, logging.WARNING)
        spec = reading.spec
        assert spec is not None
        if not spec.enabled:
            if st.phase is not P.DISABLED:
                self.report.say(name, logging.INFO, f"task {name!r}: disabled (Enabled=False); not loaded")
            self.unload(st, P.DISABLED)
            st.spec = spec
            return
        recovering = not is_loaded(st)
        previous, st.spec, st.trigger = st.spec, spec, trigger_for(spec, tz=self.report.tz)
        assert reading.wanted_key is not None
        switched = self._choose_env(st, reading.wanted_key)
        if switched is None:
            return
        code_changed = code_changed or switched  # a new env means initialize() again
        if recovering and st.phase is P.INITIALIZING and not code_changed:
            # initialize() of this very code is already running for this load (a file copied in late, such
            # as requirements.txt, changed nothing that matters): it activates the task with the new spec.
            pass
        elif recovering or code_changed or st.error is not None:
            if not recovering and code_changed:
                self.report.say(name, logging.INFO, f"task {name!r}: code changed: initialize() again")
            self.initialize(st)
        elif spec != previous:
            self._reschedule(st)

    def _choose_env(self, st: TaskState, wanted: str) -> bool | None:
        """Point ``st`` at the env its requirements ask for: True when it switched to another (ready) env,
        False when it keeps its env (a new one may be building meanwhile), None when it waits for a build."""
        st.wanted_key = wanted
        if wanted == st.env_key:
            return None if self.broken_env(st, wanted) else False
        if self.envs.is_ready(wanted):
            st.env_key = wanted
            return True
        self.build_env(wanted, st)
        if st.env_key is None:
            st.error = None
            self.machine.move(st, P.ENV_BUILDING)
            return None
        self.report.say(
            st.name,
            logging.INFO,
            f"task {st.name!r}: requirements changed; building a new env "
            "in the background, runs keep using the current one",
        )
        return False

    def _on_removed(self, name: str) -> None:
        st = self.tasks.get(name)
        if st is None:
            return
        self.report.say(
            name,
            logging.INFO,
            f"task {name!r}: folder removed; unscheduled"
            + ("; its run in flight may finish within its timeout" if st.main_run else ""),
        )
        self.unload(st, P.REMOVED)
        self.init_queue.pop(name, None)
        self.forget_if_idle(st)

    def forget_if_idle(self, st: TaskState) -> None:
        if is_gone(st) and is_idle(st) and self.tasks.get(st.name) is st:
            del self.tasks[st.name]
            self.report.task_logs.close(st.name)

    # ------------------------------------------------------------------ moves out of "scheduled"
    def unload(self, st: TaskState, phase: TaskPhase, error: str | None = None) -> None:
        """Move ``st`` to ``phase`` with nothing of its schedule left: no due time, no queued run, no retry."""
        self.machine.move(st, phase)
        st.error = error
        st.next_due = None
        st.startup_pending = False
        if st.retry is not None:  # an unloaded task's pending retry is dropped with its schedule
            st.retry = None
            self.machine.move(st, RunStage.IDLE, "dropped: the task was unloaded")
        damping.release(st, machine=self.machine, now=None, why="reset: the task was unloaded")
        st.backoffs = {kind: Backoff(b.attempts, None) for kind, b in st.backoffs.items()}
        self.slots.drop(st, f"the task was unloaded ({phase.value})")

    def set_broken(
        self, st: TaskState, message: str, *, level: int = logging.ERROR, phase: TaskPhase = P.ERROR
    ) -> None:
        self.unload(st, phase, message)
        self.report.report_once(st, message, level)

    # ------------------------------------------------------------------ retries after transient failures
    def back_off(self, st: TaskState, kind: BackoffKind, message: str) -> None:
        """Try ``kind`` again after a back-off that doubles with every transient failure in a row."""
        first, most = kind.value
        attempts = st.backoffs[kind].attempts if kind in st.backoffs else 0
        delay = min(first * 2**attempts, most)
        st.backoffs[kind] = Backoff(attempts + 1, self.clock.monotonic() + delay)
        self.report.retrying(st.name, message, delay_s=delay)

    def next_backoff(self) -> float | None:
        moments = [b.at for st in self.tasks.values() for b in st.backoffs.values() if b.at is not None]
        return min(moments) if moments else None

    def run_backoffs(self) -> None:
        self.missed.look(self.tasks, scanned=self.scanned_once)  # before due runs start: see missing.py
        mono = self.clock.monotonic()
        for st in list(self.tasks.values()):
            for kind, backoff in list(st.backoffs.items()):
                if backoff.at is None or backoff.at > mono:
                    continue
                st.backoffs[kind] = Backoff(backoff.attempts, None)
                if is_parked(st):
                    continue
                if kind is BackoffKind.INITIALIZE and st.env_key is not None:
                    self.guarded(st.name, self.initialize, st)
                elif kind is BackoffKind.ENV and st.wanted_key is not None and st.wanted_key != st.env_key:
                    if st.env_key is None:
                        self.machine.move(st, P.ENV_BUILDING)
                        st.error = None
                    self.guarded(st.name, self.build_env, st.wanted_key, st)

    # ------------------------------------------------------------------ environments
    def build_env(self, key: str, st: TaskState) -> None:
        waiting = self.building.get(key)
        if waiting is not None:
            waiting.add(st.name)
            return
        self.building[key] = {st.name}
        assert st.folder is not None
        requirements = st.folder.path / REQUIREMENTS_FILE
        self.report.say(st.name, logging.INFO, f"task {st.name!r}: building env {key} from {requirements}")
        self.envs.build(key, task=st.name, requirements=requirements, task_dir=st.folder.path)

    def on_env_built(self, event: EnvBuilt) -> None:
        waiting = self.building.pop(event.key, set())
        if event.error is None and self.envs.broken_reason(event.key) is None:
            self.heal.rebuilt(event.key)  # healthy again: a later breakage (the next upgrade) heals again
        for name in sorted(waiting):
            st = self.tasks.get(name)
            if st is None or is_parked(st) or st.wanted_key != event.key:
                continue  # the task changed again, broke, was disabled or went away during the build
            self.guarded(name, self._apply_env_result, st, event)
        self.gc_wanted = True

    def _apply_env_result(self, st: TaskState, event: EnvBuilt) -> None:
        name = st.name
        if event.error is None:
            switch = f"; switching from env {st.env_key}, initialize() again" if st.env_key else ""
            self.report.say(name, logging.INFO, f"task {name!r}: env {event.key} ready{switch}")
            st.env_key = event.key
            st.backoffs.pop(BackoffKind.ENV, None)
            self.initialize(st)
            return
        if st.env_key is not None:
            st.error = f"{event.error} (still running on the previous env)"
            self.report.say(
                name, logging.ERROR, f"{event.error}\nThe previous env keeps serving; fix requirements.txt to retry."
            )
        else:
            self.set_broken(st, event.error, phase=P.ENV_FAILED)
        if event.output:
            self.report.task_logs.get(name).error("installer output:\n%s", event.output)
        if event.transient:
            self.back_off(st, BackoffKind.ENV, f"task {name!r}: env {event.key}")
        if st.env_key is None:
            self.facts.env_failed(st, event.error, at=self.clock.now(), log_path=self.report.task_logs.path(st.name))

    def broken_env(self, st: TaskState, key: str) -> bool:
        """True when env ``key`` can no longer start its interpreter; the task is then being healed.

        Self-healing: an env whose base interpreter disappeared (a distro upgrade) is rebuilt once; meanwhile
        its tasks (all joining the one rebuild) are ``env-building``. A failed rebuild makes the task
        ``env-failed``, an env still broken after it ``error``; either waits for its files to change.
        """
        reason = self.envs.broken_reason(key)
        if reason is None:
            return False
        # When the requirements already ask for another env, that one is what the task waits for.
        target = st.wanted_key if st.wanted_key not in (None, key) else key
        if target == key and key not in self.building and not self.heal.should_rebuild(key):
            self.set_broken(
                st,
                f"task {st.name!r}: {reason}; it was rebuilt once already: repair the Python "
                "installation, then edit a file of the task to retry",
            )
            return True
        # Nothing serves the task until that env is ready; a failed build makes it env-failed.
        then = "rebuilding it" if target == key else f"waiting for its new env {target}"
        self.unload(st, P.ENV_BUILDING, f"task {st.name!r}: {reason}; {then}")
        st.env_key = None
        st.wanted_key = target
        self.build_env(target, st)
        return True

    def collect_envs(self) -> None:
        """Delete envs that no task folder, build or run refers to any more."""
        self.gc_wanted = False
        collect_unused_envs(
            self.envs,
            tasks=self.tasks,
            folders=self.folders,
            building=set(self.building),
            in_flight=self.launcher.in_flight.values(),
            logger=self.report.log,
        )

    # ------------------------------------------------------------------ initialize() and activation
    def initialize(self, st: TaskState) -> None:
        """Run initialize() for ``st`` now, or as soon as one of the ``max_inits`` slots frees up.

        A loaded task stays loaded (and keeps running on its code) while initialize() runs again after a
        code change or env switch; any other task is ``initializing`` until it returns.
        """
        if st.init_run is not None:
            st.init_again = True  # one initialize() at a time; the newest code gets its own call after
            return
        if not is_loaded(st):
            st.error = None
            self.machine.move(st, P.INITIALIZING)
        if st.name in self.init_queue:
            return
        if self.launcher.count(RunMode.INITIALIZE) >= self.max_inits:
            self.init_queue[st.name] = None
            return
        self._launch_init(st)

    def _launch_init(self, st: TaskState) -> None:
        assert st.env_key is not None
        key = st.env_key
        if self.broken_env(st, key):
            return  # its interpreter is gone: rebuilt first (a few stats, cheaper than a failed spawn)
        started = self.launcher.start(st, mode=RunMode.INITIALIZE, trigger=Trigger.STARTUP, due=None)
        if not isinstance(started, LaunchFailed):
            return
        if started.transient and self.stopping() is None:
            self.back_off(st, BackoffKind.INITIALIZE, started.message)
            return
        self.report.say(st.name, logging.ERROR, started.message)
        self.set_broken(st, started.message)
        if not is_gone(st):
            self.broken_env(st, key)  # the interpreter vanished between check and spawn

    def start_queued_inits(self) -> None:
        while self.init_queue and self.launcher.count(RunMode.INITIALIZE) < self.max_inits:
            name = next(iter(self.init_queue))
            del self.init_queue[name]
            st = self.tasks.get(name)
            # The task may have been removed, disabled or broken while it waited for a slot.
            if st is None or is_parked(st) or st.env_key is None:
                continue
            self.guarded(name, self.initialize, st)

    def on_initialized(self, st: TaskState, result: RunResult) -> None:
        again, st.init_again = st.init_again, False
        if is_gone(st) or self.stopping() is not None:
            return
        if again:
            self.initialize(st)
        elif result.start_failure is not None:  # no process, thread, memory or file: not initialize()'s fault
            self.back_off(st, BackoffKind.INITIALIZE, f"task {st.name!r}: initialize(): {result.start_failure}")
        elif result.outcome is Outcome.OK:
            st.backoffs.pop(BackoffKind.INITIALIZE, None)
            if result.message:
                self.report.say(st.name, logging.INFO, f"task {st.name!r}: initialize(): {result.message}")
            if not is_parked(st):
                self._activate(st)
        else:
            detail = result.message if result.outcome is Outcome.FAILED else result.summary
            main_py = st.folder.path / MAIN_FILE if st.folder else MAIN_FILE
            self.set_broken(st, f"task {st.name!r}: {main_py}: initialize() failed ({result.outcome.value}): {detail}")

    def _activate(self, st: TaskState) -> None:
        """initialize() succeeded: schedule the task (RunOnStartup only on a not-loaded -> loaded move)."""
        assert st.spec is not None and st.trigger is not None
        loading = not is_loaded(st)
        if loading:
            self.machine.move(st, P.PAUSED if self.paused(st.name) is not None else P.SCHEDULED)
        st.error = None
        # Problems are reported once per folder content; a working load ends that episode, so the memory of
        # it does not grow over months of edits (a later breakage is news again).
        st.reported = {key for key in st.reported if st.folder and key.startswith(st.folder.fingerprint + ":")}
        now = self.clock.now()
        if loading:
            st.anchor = self.history.last_anchor(st.name)
            st.failures = self.history.failure_streak(st.name)
            st.startup_pending = st.spec.run_on_startup
        st.next_due = st.trigger.next_due(anchor=st.anchor, now=now)
        if loading:
            damping.hold(st, machine=self.machine, report=self.report, now=now, loud=True)
            when = (
                "now (RunOnStartup)"
                if st.startup_pending
                else self.report.fmt(st.next_due)
                if st.next_due is not None
                else "when an upstream run ends (After)"
                if st.spec.after
                else "none (done: no more runs)"
            )
            flags = " [Testing: main() will not run]" if st.spec.testing else ""
            self.report.say(
                st.name, logging.INFO, f"task {st.name!r}: loaded: {st.trigger.describe()}, next run {when}{flags}"
            )

    def _reschedule(self, st: TaskState) -> None:
        """A config-only change of a loaded task: new schedule from the same anchor, no initialize()."""
        assert st.trigger is not None and st.spec is not None
        st.next_due = st.trigger.next_due(anchor=st.anchor, now=self.clock.now())
        self.report.say(
            st.name, logging.INFO, f"task {st.name!r}: config reloaded; next run {self.report.fmt(st.next_due)}"
        )
        if st.next_due is None and st.retry is None and st.main_run is None and not st.spec.after:
            self.report.say(st.name, logging.INFO, f"task {st.name!r}: no more runs (done)")
