"""The phases of a task's lifecycle (the moves between them are core/lifecycle.py's table) and the states
``status`` shows."""

from __future__ import annotations

import enum


class TaskPhase(str, enum.Enum):
    """Where a task is in its lifecycle; ``lifecycle.TRANSITIONS`` lists the allowed moves between phases.

    ``status`` shows the phase's value as the task's state, except that a task with a run of main() in flight
    shows ``running`` and one whose due run waits for a free slot shows ``queued``.
    """

    LOADING = "loading"  # just discovered, being read (transient)
    ENV_BUILDING = "env-building"  # its first env is being built; nothing to run yet
    INITIALIZING = "initializing"  # initialize() runs in its env after a load, code change or env switch
    SCHEDULED = "scheduled"  # loaded: runs when due
    DISABLED = "disabled"  # Enabled=False: not loaded
    ERROR = "error"  # config, source, initialize() or spawn error: not loaded until its files change
    ENV_FAILED = "env-failed"  # its env could not be built and it has no previous env to fall back on
    REMOVED = "removed"  # its folder is gone; forgotten once its last process has ended


class ShownState(str, enum.Enum):
    """The states ``status`` shows (docs/cli.md, States): a task's phase, except ``running`` (a run of main()
    in flight), ``queued`` (a due run waiting for a run slot), ``paused``, ``done`` (loaded, no more runs)
    and, offline, ``stopped``. Values are the documented strings; compare a status document's ``state``
    with these."""

    LOADING = TaskPhase.LOADING.value
    ENV_BUILDING = TaskPhase.ENV_BUILDING.value
    INITIALIZING = TaskPhase.INITIALIZING.value
    SCHEDULED = TaskPhase.SCHEDULED.value
    RUNNING = "running"
    QUEUED = "queued"
    PAUSED = "paused"
    DONE = "done"
    DISABLED = TaskPhase.DISABLED.value
    ERROR = TaskPhase.ERROR.value
    ENV_FAILED = TaskPhase.ENV_FAILED.value
    REMOVED = TaskPhase.REMOVED.value
    STOPPED = "stopped"  # offline only: a valid, enabled task while no supervisor runs
