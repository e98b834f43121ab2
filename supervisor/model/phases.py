"""Where a task is: its lifecycle phase, the stage of its next run, the state ``status`` shows, and the fact
that it moved (the moves allowed between them are core/lifecycle.py's tables)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class TaskPhase(str, enum.Enum):
    """Where a task is in its lifecycle; ``lifecycle.TRANSITIONS`` lists the allowed moves between phases.

    ``scheduled`` and ``paused`` are the two loaded phases: due times advance in both, due runs start only
    in ``scheduled``.
    """

    LOADING = "loading"  # just discovered, being read (transient)
    ENV_BUILDING = "env-building"  # its first env is being built; nothing to run yet
    INITIALIZING = "initializing"  # initialize() runs in its env after a load, code change or env switch
    SCHEDULED = "scheduled"  # loaded: runs when due
    PAUSED = "paused"  # loaded, but paused (pause NAME): its due runs do not start until resume NAME
    DISABLED = "disabled"  # Enabled=False: not loaded
    ERROR = "error"  # config, source, initialize() or spawn error: not loaded until its files change
    ENV_FAILED = "env-failed"  # its env could not be built and it has no previous env to fall back on
    REMOVED = "removed"  # its folder is gone; forgotten once its last process has ended


class RunStage(str, enum.Enum):
    """Where a loaded task's next run of main() stands besides its schedule (``lifecycle.STAGE_MOVES``).

    Any phase other than the loaded ones is ``idle``: unloading drops a queued run and a pending retry.
    A run in flight is not a stage: it is the task's process (a manual run may be in flight while a retry
    is pending).
    """

    IDLE = "idle"  # nothing waits: the next run is the next due time
    QUEUED = "queued"  # a due run waits for a free run slot (MaxConcurrentRuns)
    BACKING_OFF = "backing-off"  # its start failed transiently: it waits at the head of the queue, then retries
    RETRY_PENDING = "retry-pending"  # [Retry]: the next attempt of a failed run waits for its time
    # FailureBackoff: after N failures in a row the next run waits a growing delay (shown as backing-off;
    # not the spawn back-off above, which shows as queued).
    DAMPED = "damped"


class ShownState(str, enum.Enum):
    """The states ``status`` shows (docs/cli.md, States): a task's phase, except ``running`` (a run of main()
    in flight), ``queued`` (a due run waiting for a run slot), ``backing-off`` (its next run is held back
    after failures in a row, stage ``damped``), ``done`` (loaded, no more runs) and, offline, ``stopped`` or
    ``unknown``. Values are the documented strings; compare a status document's ``state`` with these."""

    LOADING = TaskPhase.LOADING.value
    ENV_BUILDING = TaskPhase.ENV_BUILDING.value
    INITIALIZING = TaskPhase.INITIALIZING.value
    SCHEDULED = TaskPhase.SCHEDULED.value
    RUNNING = "running"
    QUEUED = "queued"
    BACKING_OFF = "backing-off"
    PAUSED = TaskPhase.PAUSED.value
    DONE = "done"
    DISABLED = TaskPhase.DISABLED.value
    ERROR = TaskPhase.ERROR.value
    ENV_FAILED = TaskPhase.ENV_FAILED.value
    REMOVED = TaskPhase.REMOVED.value
    STOPPED = "stopped"  # offline only: a valid, enabled task while no supervisor runs
    UNKNOWN = "unknown"  # offline only: a valid, enabled task while a supervisor runs but did not answer


@dataclass(frozen=True)
class PhaseChanged:
    """The fact that a task moved: its phase, or the stage of its next run (``old`` and ``new`` are of the
    same kind). ``why`` is the table's reason for the move, or a more precise one the loop gave."""

    task: str
    old: TaskPhase | RunStage
    new: TaskPhase | RunStage
    why: str
    at: datetime
