"""Crash-loop damping in the loop: a scheduled task whose final attempts keep failing has its next run held
back (stage ``damped``, shown as ``backing-off``); the pure rule is scheduling/damping.py.

Policies:
* The streak counts from the last change of the task's files (``TaskState.damp_from``); at a supervisor
  start it is the history's, so a restart does not lift the damping.
* The next due time is the damped one only while the task is in stage ``damped``; when it comes, the task
  moves back to ``idle`` and runs like any due run. A run that fails again damps it one level further; an
  ``ok`` run (a manual one too) or a change of its files ends the damping at once. A damped slot is not
  recorded: it is neither a failure nor ``skipped``.
* Damping applies to a scheduled task with no retry pending (a [Retry] attempt is the run's own next step);
  a schedule whose next slot is at least as far as the delay is not held back, so it is not ``backing-off``.
* Logging: the console gets one line when a streak starts being damped; every further damped failure adds
  one line to the task's own log only, so a crash loop costs the console one line per failure.
"""

from __future__ import annotations

import logging
from datetime import datetime

from ..model import RunStage
from ..scheduling.damping import DAMPING_CAP, damped_due, damping_level
from .lifecycle import Lifecycle, TaskState, is_scheduled
from .reporting import Reporter

S = RunStage
_MAY_DAMP = frozenset({S.IDLE, S.QUEUED, S.BACKING_OFF, S.DAMPED})


def level(st: TaskState) -> int:
    """The task's damping level now (0 = not damped); see scheduling/damping.py."""
    if st.spec is None:
        return 0
    return damping_level(st.failures - st.damp_from, st.spec.failure_backoff)


def next_due(st: TaskState, now: datetime) -> datetime | None:
    """The task's next due time from its anchor: the damped one while it is in stage ``damped``."""
    assert st.trigger is not None
    if st.stage is S.DAMPED:
        return damped_due(st.trigger, anchor=st.anchor, level=level(st), now=now)
    return st.trigger.next_due(anchor=st.anchor, now=now)


def hold(st: TaskState, *, machine: Lifecycle, report: Reporter, now: datetime, loud: bool = False) -> None:
    """After a final attempt (or a load): hold the next run back as the streak says, or stop holding it.

    ``loud`` logs to the console too (a load); so does the first level of a streak.
    """
    k = level(st)
    if st.trigger is None or not is_scheduled(st):
        return  # a paused task's slots pass anyway; its next failure after resume damps it
    if k == 0:
        release(st, machine=machine, now=now, why="reset: an ok run ended its failure streak")
        return
    if st.retry is not None or st.stage not in _MAY_DAMP:
        return
    natural = st.trigger.next_due(anchor=st.anchor, now=now)
    held = damped_due(st.trigger, anchor=st.anchor, level=k, now=now)
    if held is None or natural is None or held <= natural:
        return
    streak = st.failures - st.damp_from
    st.next_due = held
    machine.move(st, S.DAMPED, f"{streak} failures in a row: next try at {held.isoformat()} (FailureBackoff)")
    if loud or k == 1:
        message = (
            f"task {st.name!r}: {streak} failures in a row: backing off, next try {report.fmt(held)}; each "
            f"further failure doubles the wait, up to {DAMPING_CAP.total_seconds() / 3600:g} h (an ok run or a "
            "change of its files ends it; [Global] FailureBackoff = off turns it off)"
        )
        report.say(st.name, logging.WARNING, message)
    else:
        message = f"task {st.name!r}: backing off after {streak} failures in a row: next try {report.fmt(held)}"
        report.say(st.name, logging.WARNING, message, everywhere=False)


def release(st: TaskState, *, machine: Lifecycle, now: datetime | None, why: str) -> None:
    """End the hold: back to ``idle``; with ``now``, the next due time is the schedule's own again."""
    if st.stage is not S.DAMPED:
        return
    machine.move(st, S.IDLE, why)
    if now is not None and st.trigger is not None:
        st.next_due = st.trigger.next_due(anchor=st.anchor, now=now)


def files_changed(st: TaskState, *, machine: Lifecycle, now: datetime) -> None:
    """The task's files changed: damping counts its failures from here (the streak itself stays)."""
    st.damp_from = st.failures
    release(st, machine=machine, now=now, why="reset: its files changed")
