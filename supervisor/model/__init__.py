"""The kernel's data model: plain frozen dataclasses and enums that cross every module line, no I/O.

Owns what a task is (``TaskSpec`` and its parts, ``HomeConfig``), what a run is and how it ended (``Outcome``,
``Trigger``, ``RunRecord``, ``RunResult``, the ``RunStarted`` / ``RunFinished`` facts) and the phases a task can
be in. It may import only the standard library and the other kernel modules (errors, paths, clock).
"""

from .notices import DEFAULT_ON, HeartbeatSettings, NotifyEvent, NotifySettings
from .phases import PhaseChanged, RunStage, ShownState, TaskPhase
from .runs import (
    FAILURE_OUTCOMES,
    EnvStatus,
    MissedReason,
    Outcome,
    ProcessLaunch,
    RunFinished,
    RunMode,
    RunRecord,
    RunResult,
    RunStarted,
    Trigger,
    Upstream,
    new_run_id,
)
from .tasks import (
    DEFAULT_RETRY_ON,
    RETRYABLE_OUTCOMES,
    AfterOutcome,
    Calendar,
    CatchUp,
    ConfigResult,
    FailureBackoff,
    HomeConfig,
    Limits,
    Retention,
    RetryPolicy,
    TaskSpec,
    Window,
)

__all__ = [
    "DEFAULT_ON",
    "DEFAULT_RETRY_ON",
    "FAILURE_OUTCOMES",
    "RETRYABLE_OUTCOMES",
    "AfterOutcome",
    "Calendar",
    "CatchUp",
    "ConfigResult",
    "EnvStatus",
    "FailureBackoff",
    "HeartbeatSettings",
    "HomeConfig",
    "Limits",
    "MissedReason",
    "NotifyEvent",
    "NotifySettings",
    "Outcome",
    "PhaseChanged",
    "ProcessLaunch",
    "Retention",
    "RetryPolicy",
    "RunFinished",
    "RunMode",
    "RunRecord",
    "RunResult",
    "RunStage",
    "RunStarted",
    "ShownState",
    "TaskPhase",
    "TaskSpec",
    "Trigger",
    "Upstream",
    "Window",
    "new_run_id",
]
