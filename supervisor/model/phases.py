"""The phases of a task's lifecycle (the moves between them are core/lifecycle.py's table)."""

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
