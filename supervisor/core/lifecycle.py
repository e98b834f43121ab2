"""A task's lifecycle as a state machine: ``TaskState``, the tables of allowed moves, and named predicates.

A task has two regions: its *phase* (``TRANSITIONS``: from its folder to ``scheduled`` and back) and, while it
is loaded, the *stage* of its next run of main() (``STAGE_MOVES``: waiting for a run slot, backing off after
a transient spawn failure, a retry pending, held back after failures in a row). The tables are the
documentation: every move the loop makes goes through ``Lifecycle.move``, which refuses one that is not
listed (a bug, reported as that task's error, never a crash of the loop) and emits exactly one
``PhaseChanged`` per move. docs/cli.md lists the same phases (a test checks it against ``TRANSITIONS``).

initialize() and env builds that failed for a transient reason are tried again after a back-off; those
timers (``Backoff``, per ``BackoffKind``) are kept with the task, they do not change its phase.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Sequence

from ..discovery.scan import TaskFolder
from ..errors import TaskAutomationError
from ..execution.params import RunParams
from ..model import PhaseChanged, RunMode, RunRecord, RunStage, TaskPhase, TaskSpec, Upstream
from ..scheduling.retry import PendingRetry
from ..scheduling.triggers import Trigger

P = TaskPhase
S = RunStage
_LOADED_WHY = {
    P.ENV_BUILDING: "its env's base interpreter disappeared: the env is rebuilt (once)",
    P.ERROR: "its files broke, or initialize() failed after a code change or env switch",
    P.DISABLED: "Enabled=False",
    P.REMOVED: "its folder disappeared",
}

# phase -> the phases it may move to, with why. Staying in a phase is always allowed (not a move).
TRANSITIONS: dict[TaskPhase, dict[TaskPhase, str]] = {
    P.LOADING: {
        P.ENV_BUILDING: "config and main.py are valid; its env must be built first",
        P.INITIALIZING: "config and main.py are valid and its env is ready",
        P.DISABLED: "Enabled=False",
        P.ERROR: "incomplete folder, invalid config.ini or main.py, or a failure while loading",
        P.REMOVED: "its folder disappeared",
    },
    P.ENV_BUILDING: {
        P.INITIALIZING: "its env is ready",
        P.ENV_FAILED: "the build failed and there is no previous env",
        P.DISABLED: "Enabled=False while building (the build finishes unused)",
        P.ERROR: "its files broke while building",
        P.REMOVED: "its folder disappeared",
    },
    P.INITIALIZING: {
        P.SCHEDULED: "initialize() returned",
        P.PAUSED: "initialize() returned; the task is paused",
        P.ERROR: "initialize() failed or could not start",
        P.DISABLED: "Enabled=False while initialize() ran",
        P.ENV_BUILDING: "requirements changed to an env that is not built yet",
        P.REMOVED: "its folder disappeared",
    },
    P.SCHEDULED: {P.PAUSED: "pause NAME", **_LOADED_WHY},
    P.PAUSED: {P.SCHEDULED: "resume NAME", **_LOADED_WHY},
    P.DISABLED: {
        P.ENV_BUILDING: "re-enabled; its env must be built first",
        P.INITIALIZING: "re-enabled",
        P.ERROR: "re-enabled but broken",
        P.REMOVED: "its folder disappeared",
    },
    P.ERROR: {
        P.ENV_BUILDING: "fixed; its env must be built first",
        P.INITIALIZING: "fixed",
        P.DISABLED: "Enabled=False",
        P.REMOVED: "its folder disappeared",
    },
    P.ENV_FAILED: {
        P.ENV_BUILDING: "requirements changed, or a transient failure is retried",
        P.INITIALIZING: "its env is ready after all",
        P.ERROR: "its files broke",
        P.DISABLED: "Enabled=False",
        P.REMOVED: "its folder disappeared",
    },
    P.REMOVED: {},  # final: a folder that reappears is a new task
}

_DAMPED = "a final attempt failed, the Nth in a row (FailureBackoff): its next run waits a growing delay"
# stage -> the stages it may move to, with why. Only a loaded task leaves ``idle``; unloading returns it there.
STAGE_MOVES: dict[RunStage, dict[RunStage, str]] = {
    S.IDLE: {
        S.QUEUED: "a due run (schedule, startup or retry) waits for a free run slot",
        S.RETRY_PENDING: "an attempt failed with a retried outcome: its next attempt waits for its time",
        S.DAMPED: _DAMPED,
    },
    S.QUEUED: {
        S.IDLE: "it started, or was dropped (unloaded, stopping, its env broke, the next slot came first)",
        S.BACKING_OFF: "its start failed transiently: it waits at the head of the queue, then starts again",
        S.RETRY_PENDING: "its start failed: a failed attempt, whose retry waits for its time",
        S.DAMPED: f"its start failed: {_DAMPED}",
    },
    S.BACKING_OFF: {
        S.IDLE: "it started after its back-off, or was dropped (unloaded, stopping, the next slot came first)",
        S.RETRY_PENDING: "its start failed for good: a failed attempt, whose retry waits for its time",
        S.DAMPED: f"its start failed for good: {_DAMPED}",
    },
    S.DAMPED: {
        S.IDLE: "its next try is due (or passed while paused); or reset: an ok run, a change of its files, "
        "the task was unloaded",
    },
    S.RETRY_PENDING: {
        S.QUEUED: "the retry is due: it waits for a free run slot",
        S.IDLE: "dropped: the next slot comes first, or the task was unloaded",
    },
}

LOADED = frozenset({P.SCHEDULED, P.PAUSED})  # due times advance; in scheduled, due runs start
LOADING = frozenset({P.LOADING, P.ENV_BUILDING, P.INITIALIZING})  # on the way to loaded, nothing failed yet
# Phases in which nothing the background reports (a finished build or initialize()) may move the task on:
# it waits for its files to change.
PARKED = frozenset({P.DISABLED, P.ERROR, P.REMOVED})


class BackoffKind(enum.Enum):
    """A step of loading that is tried again after a transient failure, with (first, longest) delay in s."""

    INITIALIZE = (2.0, 60.0)  # a spawn of initialize() that failed for lack of fds, memory or processes
    ENV = (60.0, 3600.0)  # an env build whose installer was killed or whose index was unreachable


@dataclass(frozen=True)
class Backoff:
    """Transient failures of one step in a row; ``at`` is the monotonic time of the next try (None while
    that try is under way)."""

    attempts: int
    at: float | None


@dataclass(frozen=True)
class InFlight:
    """A process of a task the executor is running; for a run of main(), ``record`` is its open history row."""

    task: str
    mode: RunMode
    env_key: str
    record: RunRecord
    spawn_failures: int = 0  # transient start failures of this run so far (its back-off grows with them)
    params: RunParams = ()  # a manual run's --env (the real values; ``record.params`` shows them masked)


class IllegalTransition(TaskAutomationError):
    """The loop tried a move the table does not allow: a bug, reported as the task's error."""


@dataclass
class TaskState:
    """Everything the loop knows about one task folder. Only the loop thread touches it.

    ``revision`` counts assignments to its fields, so a snapshot can reuse the view of a task that did not
    change (core/snapshot.py).
    """

    name: str
    folder: TaskFolder | None = None
    spec: TaskSpec | None = None
    trigger: Trigger | None = None  # the schedule of ``spec``
    phase: TaskPhase = P.LOADING
    stage: RunStage = S.IDLE
    error: str | None = None
    env_key: str | None = None  # env serving new runs
    wanted_key: str | None = None  # env the current requirements.txt asks for
    anchor: datetime | None = None  # due time of the last schedule/startup start
    next_due: datetime | None = None
    startup_pending: bool = False
    main_run: str | None = None
    upstream: Upstream | None = None  # [Frequency] After: the upstream of its newest main() run (its retries keep it)
    init_run: str | None = None
    init_again: bool = False  # the folder changed while initialize() ran: run it once more after
    failures: int = 0  # consecutive failures (see model.RunFinished)
    damp_from: int = 0  # ``failures`` when its files last changed: FailureBackoff counts from there
    retry: PendingRetry | None = None  # [Retry]: the next attempt of a failed run (stage retry-pending)
    backoffs: dict[BackoffKind, Backoff] = field(default_factory=dict)  # steps tried again after a back-off
    reported: set[str] = field(default_factory=set)  # "fingerprint:message" already logged
    revision: int = field(default=0, compare=False)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        object.__setattr__(self, "revision", getattr(self, "revision", 0) + 1)


MoveListener = Callable[[PhaseChanged], None]


class Lifecycle:
    """The one way a task moves: checks the tables, applies the move and tells every listener (the
    supervisor log, the status snapshot). A listener's exception is logged; it never stops the move."""

    def __init__(
        self, *, now: Callable[[], datetime], logger: logging.Logger, listeners: Sequence[MoveListener] = ()
    ) -> None:
        self._now = now
        self._log = logger
        self.listeners = tuple(listeners)

    def move(self, st: TaskState, to: TaskPhase | RunStage, why: str | None = None) -> None:
        """Move ``st`` to phase or stage ``to`` if its table allows it; staying put is always allowed."""
        old: TaskPhase | RunStage
        if isinstance(to, TaskPhase):
            old, reason = st.phase, TRANSITIONS[st.phase].get(to)
        else:
            old, reason = st.stage, STAGE_MOVES[st.stage].get(to)
        if to is old:
            return
        if reason is None:
            raise IllegalTransition(f"task {st.name!r}: internal error: no transition {old.value} -> {to.value}")
        if isinstance(to, TaskPhase):
            st.phase = to
        else:
            st.stage = to
        fact = PhaseChanged(task=st.name, old=old, new=to, why=why or reason, at=self._now())
        for listener in self.listeners:
            try:
                listener(fact)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the loop or the other listeners
                self._log.exception("task %r: a move listener failed", st.name)


def is_scheduled(st: TaskState) -> bool:
    """Loaded and not paused: config valid, enabled, env ready, initialize() succeeded; due runs start."""
    return st.phase is P.SCHEDULED


def is_loaded(st: TaskState) -> bool:
    """Scheduled or paused: its due times advance, a manual run may start."""
    return st.phase in LOADED


def is_loading(st: TaskState) -> bool:
    """On its way to loaded (read, env being built, initialize() running); nothing has failed yet."""
    return st.phase in LOADING


def is_gone(st: TaskState) -> bool:
    return st.phase is P.REMOVED


def is_parked(st: TaskState) -> bool:
    """Waits for its files to change; background results do not move it on."""
    return st.phase in PARKED


def is_idle(st: TaskState) -> bool:
    """No process of the task is in flight."""
    return st.main_run is None and st.init_run is None


def move_log_line(fact: PhaseChanged) -> str:
    """The supervisor log's line for one move (its own shape: the lines about a task start "task 'NAME':")."""
    return f"move {fact.task!r}: {fact.old.value} -> {fact.new.value}: {fact.why}"
