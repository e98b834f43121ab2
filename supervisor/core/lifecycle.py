"""A task's lifecycle as a state machine: ``TaskState``, the table of allowed moves, and named predicates.

The table is the documentation: every move the loop makes goes through ``move``, which refuses one that is
not listed (a bug, reported as that task's error, never a crash of the loop). docs/cli.md lists the same
phases (a test checks it against ``TRANSITIONS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..discovery.scan import TaskFolder
from ..errors import TaskAutomationError
from ..model import RunMode, TaskPhase, TaskSpec
from ..model import Trigger as RunTrigger
from ..scheduling.retry import PendingRetry
from ..scheduling.triggers import Trigger

P = TaskPhase

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
        P.ERROR: "initialize() failed or could not start",
        P.DISABLED: "Enabled=False while initialize() ran",
        P.ENV_BUILDING: "requirements changed to an env that is not built yet",
        P.REMOVED: "its folder disappeared",
    },
    P.SCHEDULED: {
        P.ENV_BUILDING: "its env's base interpreter disappeared: the env is rebuilt (once)",
        P.ERROR: "its files broke, or initialize() failed after a code change or env switch",
        P.DISABLED: "Enabled=False",
        P.REMOVED: "its folder disappeared",
    },
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

# Phases in which nothing the background reports (a finished build or initialize()) may move the task on:
# it waits for its files to change.
PARKED = frozenset({P.DISABLED, P.ERROR, P.REMOVED})


@dataclass(frozen=True)
class InFlight:
    """A process of a task the executor is running."""

    task: str
    mode: RunMode
    env_key: str
    trigger: RunTrigger
    started: datetime
    due: datetime | None
    attempt: int = 1  # [Retry]: 1 = the run itself
    retry_of: str | None = None  # a retry's first attempt's run id


class IllegalTransition(TaskAutomationError):
    """The loop tried a move the table does not allow: a bug, reported as the task's error."""


@dataclass
class TaskState:
    """Everything the loop knows about one task folder. Only the loop thread touches it."""

    name: str
    folder: TaskFolder | None = None
    spec: TaskSpec | None = None
    trigger: Trigger | None = None  # the schedule of ``spec``
    phase: TaskPhase = P.LOADING
    error: str | None = None
    env_key: str | None = None  # env serving new runs
    wanted_key: str | None = None  # env the current requirements.txt asks for
    anchor: datetime | None = None  # due time of the last schedule/startup start
    next_due: datetime | None = None
    startup_pending: bool = False
    main_run: str | None = None
    init_run: str | None = None
    init_again: bool = False  # the folder changed while initialize() ran: run it once more after
    queued_since: datetime | None = None  # a due run waits for a free run slot
    failures: int = 0  # consecutive failures (see spec.RunFinished)
    backoff_at: dict[str, float] = field(default_factory=dict)  # "initialize"/"env" -> monotonic time to try again
    backoffs: dict[str, int] = field(default_factory=dict)  # transient failures in a row, per kind
    retry: PendingRetry | None = None  # [Retry]: the next attempt of a failed run, if one is due
    reported: set[str] = field(default_factory=set)  # "fingerprint:message" already logged


def move(st: TaskState, to: TaskPhase) -> None:
    """Move ``st`` to phase ``to`` if the table allows it; staying put is always allowed."""
    if to is st.phase:
        return
    if to not in TRANSITIONS[st.phase]:
        raise IllegalTransition(f"task {st.name!r}: internal error: no transition {st.phase.value} -> {to.value}")
    st.phase = to


def is_scheduled(st: TaskState) -> bool:
    """Loaded: config valid, enabled, env ready, initialize() succeeded; due runs start."""
    return st.phase is P.SCHEDULED


def is_gone(st: TaskState) -> bool:
    return st.phase is P.REMOVED


def is_parked(st: TaskState) -> bool:
    """Waits for its files to change; background results do not move it on."""
    return st.phase in PARKED


def is_idle(st: TaskState) -> bool:
    """No process of the task is in flight."""
    return st.main_run is None and st.init_run is None
