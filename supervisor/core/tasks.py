"""The loop's book of tasks: the lifecycle moves that bring a task from its folder to ``scheduled``.

``TaskBook`` holds every ``TaskState`` and makes the moves of lifecycle.py that follow from background
results: an env built (or not), initialize() returned (or not), a task broken, unloaded or activated.
RunBook (runbook.py) derives from it and adds what happens to runs of main(); the loop (loop.py) derives
from that and adds the event loop; all of it runs on the loop thread.

Policies:
* Per-task error boundary (``_guarded``): any exception while handling one task becomes that task's error in
  status and the logs; the loop goes on with every other task.
* initialize() calls in flight are capped (``max_inits``); the rest wait in arrival order. The cap bounds the
  processes a start with hundreds of tasks spawns at once; it does not slow the start down, which is
  CPU-bound by then anyway.
* Problems are logged once per folder content, so an unchanged broken folder is not re-reported every rescan.
* A broken or disabled task keeps its env (for when it is fixed or re-enabled); envs nothing refers to any
  more are collected.
* Self-healing envs: an env whose base interpreter disappeared (a distro upgrade, a pyenv removal) is found
  at the key check of a load and before every spawn, and rebuilt once, automatically; meanwhile its tasks are
  ``env-building`` with the reason as their error. Tasks sharing the env join the one rebuild. A failed
  rebuild makes the task ``env-failed``; an env still broken after its rebuild makes it ``error``; either
  waits for its files to change.
"""

from __future__ import annotations

import logging
from datetime import datetime, tzinfo
from typing import Any, Callable

from ..clock import Clock
from ..discovery.scan import TaskFolder
from ..envs.builder import EnvBuilder
from ..envs.health import HealPolicy
from ..events import EnvBuilt
from ..history.recorder import RunHistory
from ..logsetup import TaskLogs
from ..model import HomeConfig, Outcome, RunFinished, RunMode, RunRecord, RunResult, TaskPhase, Trigger, new_run_id
from ..paths import MAIN_FILE, REQUIREMENTS_FILE, Paths
from ..scheduling.triggers import trigger_for
from .lifecycle import InFlight, TaskState, is_gone, is_idle, is_parked, is_scheduled, move
from .loading import read_folder

P = TaskPhase
Consumer = Callable[[RunFinished], None]
# kind -> (first delay, longest delay) in seconds for retries after a transient failure.
BACKOFF_S = {"initialize": (2.0, 60.0), "env": (60.0, 3600.0)}


class TaskBook:
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
    ) -> None:
        self.paths = paths
        self.config = home_config
        self.clock = clock
        self.tz = tz
        self.log = logger
        self.task_logs = task_logs
        self.envs = envs
        self.history = history
        self.max_inits = max_inits
        self.tasks: dict[str, TaskState] = {}
        self.folders: dict[str, TaskFolder] = {}
        self.in_flight: dict[str, InFlight] = {}
        self.building: dict[str, set[str]] = {}  # env key -> tasks waiting for its build
        self.init_queue: dict[str, None] = {}  # tasks waiting for an initialize() slot, in arrival order
        self.gc_wanted = False
        self.stopping: str | None = None  # the reason, once a shutdown has begun
        self.heal = HealPolicy()  # env keys already rebuilt once because their interpreter disappeared

    # Provided by RunBook (runbook.py) and the loop.
    def _launch(self, st: TaskState, *, mode: RunMode, trigger: Trigger, due: datetime | None) -> str | None:
        raise NotImplementedError

    def _publish(self, st: TaskState | None, record: RunRecord, *, summary: str, leftovers: int = 0) -> None:
        raise NotImplementedError

    def _drop_queued(self, st: TaskState, why: str) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ error boundary and reporting
    def _guarded(self, name: str, action: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run ``action(*args, **kwargs)`` for task ``name``; any exception becomes that task's error, never
        the loop's."""
        try:
            action(*args, **kwargs)
        except Exception as exc:  # the per-task error boundary
            self.log.exception("task %r: unexpected error", name)
            st = self.tasks.get(name)
            if st is not None and not is_gone(st):
                try:
                    self._set_broken(st, f"task {name!r}: {type(exc).__name__}: {exc}")
                except Exception:  # noqa: BLE001 - even reporting failed (a full disk): the loop goes on
                    st.error = f"task {name!r}: {type(exc).__name__}: {exc}"

    def _say(self, task: str, level: int, message: str) -> None:
        """Log to the supervisor log and to the task's own log (a task log that cannot be opened, say for a
        full disk, costs that copy of the line, never the loop)."""
        self.log.log(level, "%s", message)
        try:
            self.task_logs.get(task).log(level, "%s", message)
        except Exception as exc:  # noqa: BLE001 - the supervisor log has the line already
            self.log.warning("task %r: its log file cannot be written: %s", task, exc)

    def _fmt(self, when: datetime | None) -> str:
        return when.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S %Z") if when else "never"

    def _report_once(self, st: TaskState, message: str, level: int) -> None:
        """Log a problem once per folder content, so an unchanged broken folder is not re-reported."""
        key = f"{st.folder.fingerprint if st.folder else ''}:{message}"
        if key not in st.reported:
            st.reported.add(key)
            self._say(st.name, level, message)

    # ------------------------------------------------------------------ folder changes
    def _load(self, name: str, folder: TaskFolder, *, code_changed: bool) -> None:
        st = self.tasks.get(name)
        if st is None or is_gone(st):
            st = self.tasks[name] = TaskState(name)
        st.folder = folder
        st.backoff_at.clear()  # new content: a fresh start, not a retry
        st.backoffs.clear()
        reading = read_folder(
            folder,
            defaults=self.config.limits,
            envs=self.envs,
            notify_defaults=self.config.notify,
            retry_defaults=self.config.retry,
        )
        if reading.problem is not None:
            self._set_broken(st, reading.problem, level=reading.level)
            return
        for warning in reading.warnings:
            self._report_once(st, warning, logging.WARNING)
        spec = reading.spec
        assert spec is not None
        if not spec.enabled:
            if st.phase is not P.DISABLED:
                self._say(name, logging.INFO, f"task {name!r}: disabled (Enabled=False); not loaded")
            self._unload(st, P.DISABLED)
            st.spec = spec
            return
        recovering = not is_scheduled(st)
        previous, st.spec, st.trigger = st.spec, spec, trigger_for(spec, tz=self.tz)
        wanted = reading.wanted_key
        assert wanted is not None
        st.wanted_key = wanted
        if wanted == st.env_key and self._env_broken(st, wanted):
            return
        if wanted != st.env_key:
            if self.envs.is_ready(wanted):
                st.env_key = wanted
                code_changed = True  # a new env means initialize() again
            else:
                self._build_env(wanted, st)
                if st.env_key is None:
                    st.error = None
                    move(st, P.ENV_BUILDING)
                    return
                self._say(
                    name,
                    logging.INFO,
                    f"task {name!r}: requirements changed; building a new env "
                    "in the background, runs keep using the current one",
                )
        if recovering and st.phase is P.INITIALIZING and not code_changed:
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
        self._say(
            name,
            logging.INFO,
            f"task {name!r}: folder removed; unscheduled"
            + ("; its run in flight may finish within its timeout" if st.main_run else ""),
        )
        self._unload(st, P.REMOVED)
        self.init_queue.pop(name, None)
        self._forget_if_idle(st)

    def _forget_if_idle(self, st: TaskState) -> None:
        if is_gone(st) and is_idle(st) and self.tasks.get(st.name) is st:
            del self.tasks[st.name]
            self.task_logs.close(st.name)

    # ------------------------------------------------------------------ moves out of "scheduled"
    def _unload(self, st: TaskState, phase: TaskPhase, error: str | None = None) -> None:
        move(st, phase)
        st.error = error
        st.next_due = None
        st.startup_pending = False
        st.queued_since = None
        st.retry = None  # an unloaded task's pending retry is dropped with its schedule
        st.backoff_at.clear()
        self._drop_queued(st, f"the task was unloaded ({phase.value})")

    # ------------------------------------------------------------------ retries after transient failures
    def _back_off(self, st: TaskState, kind: str, message: str) -> None:
        """Try ``kind`` ("initialize" or "env") again after a backoff: 2 s doubling to 60 s for
        initialize() (a spawn that failed for lack of fds, memory or processes), 1 min doubling to 1 h for an
        env build (an index unreachable, an installer killed)."""
        first, most = BACKOFF_S[kind]
        attempts = st.backoffs.get(kind, 0)
        delay = min(first * 2**attempts, most)
        st.backoffs[kind] = attempts + 1
        st.backoff_at[kind] = self.clock.monotonic() + delay
        self._say(st.name, logging.WARNING, f"{message}; a transient failure: trying again in {delay:g} s")

    def _next_backoff(self) -> float | None:
        moments = [at for st in self.tasks.values() for at in st.backoff_at.values()]
        return min(moments) if moments else None

    def _run_backoffs(self) -> None:
        mono = self.clock.monotonic()
        for st in list(self.tasks.values()):
            for kind, at in list(st.backoff_at.items()):
                if at > mono:
                    continue
                del st.backoff_at[kind]
                if is_parked(st):
                    continue
                if kind == "initialize" and st.env_key is not None:
                    self._guarded(st.name, self._initialize, st)
                elif kind == "env" and st.wanted_key is not None and st.wanted_key != st.env_key:
                    if st.env_key is None:
                        move(st, P.ENV_BUILDING)
                        st.error = None
                    self._guarded(st.name, self._build_env, st.wanted_key, st)

    def _set_broken(
        self, st: TaskState, message: str, *, level: int = logging.ERROR, phase: TaskPhase = P.ERROR
    ) -> None:
        self._unload(st, phase, message)
        self._report_once(st, message, level)

    # ------------------------------------------------------------------ environments
    def _build_env(self, key: str, st: TaskState) -> None:
        waiting = self.building.get(key)
        if waiting is not None:
            waiting.add(st.name)
            return
        self.building[key] = {st.name}
        assert st.folder is not None
        requirements = st.folder.path / REQUIREMENTS_FILE
        self._say(st.name, logging.INFO, f"task {st.name!r}: building env {key} from {requirements}")
        self.envs.build(key, task=st.name, requirements=requirements, task_dir=st.folder.path)

    def _on_env_built(self, event: EnvBuilt) -> None:
        waiting = self.building.pop(event.key, set())
        if event.error is None and self.envs.broken_reason(event.key) is None:
            self.heal.rebuilt(event.key)  # healthy again: a later breakage (the next upgrade) heals again
        for name in sorted(waiting):
            st = self.tasks.get(name)
            if st is None or is_parked(st) or st.wanted_key != event.key:
                continue  # the task changed again, broke, was disabled or went away during the build
            self._guarded(name, self._apply_env_result, st, event)
        self.gc_wanted = True

    def _apply_env_result(self, st: TaskState, event: EnvBuilt) -> None:
        name = st.name
        if event.error is None:
            switch = f"; switching from env {st.env_key}, initialize() again" if st.env_key else ""
            self._say(name, logging.INFO, f"task {name!r}: env {event.key} ready{switch}")
            st.env_key = event.key
            st.backoffs.pop("env", None)
            self._initialize(st)
        elif st.env_key is not None:
            st.error = f"{event.error} (still running on the previous env)"
            self._say(
                name, logging.ERROR, f"{event.error}\nThe previous env keeps serving; fix requirements.txt to retry."
            )
            if event.output:
                self.task_logs.get(name).error("installer output:\n%s", event.output)
            if event.transient:
                self._back_off(st, "env", f"task {name!r}: env {event.key}")
        else:
            self._set_broken(st, event.error, phase=P.ENV_FAILED)
            if event.output:
                self.task_logs.get(name).error("installer output:\n%s", event.output)
            if event.transient:
                self._back_off(st, "env", f"task {name!r}: env {event.key}")
            now = self.clock.now()
            record = RunRecord(
                run_id=new_run_id(now),
                task=name,
                trigger=Trigger.SCHEDULE,
                started=now,
                due=now,
                finished=now,
                outcome=Outcome.ENV_FAILED,
                duration_s=0.0,
                message=event.error,
                log_path=self.task_logs.path(name),
            )
            self._publish(st, record, summary="")

    def _env_broken(self, st: TaskState, key: str) -> bool:
        """True when env ``key`` can no longer start its interpreter; the task is then being healed."""
        reason = self.envs.broken_reason(key)
        if reason is None:
            return False
        # When the requirements already ask for another env, that one is what the task waits for.
        target = st.wanted_key if st.wanted_key not in (None, key) else key
        if target == key and key not in self.building and not self.heal.should_rebuild(key):
            self._set_broken(
                st,
                f"task {st.name!r}: {reason}; it was rebuilt once already: repair the Python "
                "installation, then edit a file of the task to retry",
            )
            return True
        # Nothing serves the task until that env is ready; a failed build makes it env-failed.
        then = "rebuilding it" if target == key else f"waiting for its new env {target}"
        self._unload(st, P.ENV_BUILDING, f"task {st.name!r}: {reason}; {then}")
        st.env_key = None
        st.wanted_key = target
        self._build_env(target, st)
        return True

    def _keys_in_use(self) -> set[str]:
        keys = {flight.env_key for flight in self.in_flight.values()}
        for st in self.tasks.values():
            keys.update(k for k in (st.env_key, st.wanted_key) if k)
        return keys

    def _collect_envs(self) -> None:
        """Delete envs that no task folder, build or run refers to any more."""
        self.gc_wanted = False
        keep = set(self.building) | self._keys_in_use()
        for name, folder in self.folders.items():
            if name not in self.tasks or self.tasks[name].wanted_key is None:
                try:  # a broken or disabled task keeps its env for when it is fixed or re-enabled
                    keep.add(self.envs.key_for(folder.path / REQUIREMENTS_FILE, task_dir=folder.path))
                except Exception:  # noqa: BLE001 - an unreadable folder must not stop the collection
                    pass
        try:
            removed = self.envs.collect(keep)
        except Exception as exc:  # noqa: BLE001 - an env that cannot be deleted now is tried at the next collection
            self.log.error("unused envs could not be removed: %r", exc)
            return
        if removed:
            self.log.info("removed %d unused env(s): %s", len(removed), ", ".join(removed))

    # ------------------------------------------------------------------ initialize() and activation
    def _inits_in_flight(self) -> int:
        return sum(1 for flight in self.in_flight.values() if flight.mode is RunMode.INITIALIZE)

    def _mains_in_flight(self) -> int:
        return len(self.in_flight) - self._inits_in_flight()

    def _initialize(self, st: TaskState) -> None:
        """Run initialize() for ``st`` now, or as soon as one of the ``max_inits`` slots frees up.

        A scheduled task stays ``scheduled`` (and keeps running on its code) while initialize() runs again
        after a code change or env switch; any other task is ``initializing`` until it returns.
        """
        if st.init_run is not None:
            st.init_again = True  # one initialize() at a time; the newest code gets its own call after
            return
        if not is_scheduled(st):
            st.error = None
            move(st, P.INITIALIZING)
        if st.name in self.init_queue:
            return
        if self._inits_in_flight() >= self.max_inits:
            self.init_queue[st.name] = None
            return
        self._launch(st, mode=RunMode.INITIALIZE, trigger=Trigger.STARTUP, due=None)

    def _start_queued_inits(self) -> None:
        while self.init_queue and self._inits_in_flight() < self.max_inits:
            name = next(iter(self.init_queue))
            del self.init_queue[name]
            st = self.tasks.get(name)
            # The task may have been removed, disabled or broken while it waited for a slot.
            if st is None or is_parked(st) or st.env_key is None:
                continue
            self._guarded(name, self._initialize, st)

    def _on_initialized(self, st: TaskState, result: RunResult) -> None:
        again, st.init_again = st.init_again, False
        if is_gone(st) or self.stopping is not None:
            return
        if again:
            self._initialize(st)
        elif result.outcome is Outcome.OK:
            st.backoffs.pop("initialize", None)
            if result.message:
                self._say(st.name, logging.INFO, f"task {st.name!r}: initialize(): {result.message}")
            if not is_parked(st):
                self._activate(st)
        else:
            detail = result.message if result.outcome is Outcome.FAILED else result.summary
            main_py = st.folder.path / MAIN_FILE if st.folder else MAIN_FILE
            self._set_broken(st, f"task {st.name!r}: {main_py}: initialize() failed ({result.outcome.value}): {detail}")

    def _activate(self, st: TaskState) -> None:
        """initialize() succeeded: schedule the task (RunOnStartup only on a not-loaded -> loaded move)."""
        assert st.spec is not None and st.trigger is not None
        loading = not is_scheduled(st)
        move(st, P.SCHEDULED)
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
            when = (
                "now (RunOnStartup)"
                if st.startup_pending
                else self._fmt(st.next_due)
                if st.next_due is not None
                else "none (done: no more runs)"
            )
            flags = " [Testing: main() will not run]" if st.spec.testing else ""
            self._say(
                st.name, logging.INFO, f"task {st.name!r}: loaded: {st.trigger.describe()}, next run {when}{flags}"
            )

    def _reschedule(self, st: TaskState) -> None:
        """A config-only change of a loaded task: new schedule from the same anchor, no initialize()."""
        assert st.trigger is not None
        st.next_due = st.trigger.next_due(anchor=st.anchor, now=self.clock.now())
        self._say(st.name, logging.INFO, f"task {st.name!r}: config reloaded; next run {self._fmt(st.next_due)}")
        if st.next_due is None and st.retry is None and st.main_run is None:
            self._say(st.name, logging.INFO, f"task {st.name!r}: no more runs (done)")
