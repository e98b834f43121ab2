"""Crash-loop damping ([Global] FailureBackoff), pure: when does a task that keeps failing try again?

Policy (README, "Scheduling rules"; docs/cli.md, state ``backing-off``):

- A task is damped once ``FailureBackoffAfter`` (default 5) of its final attempts in a row have failed
  (the streak of ``consecutive_failures``, counted since the last change of its files). Its level is then
  ``k = streak - after + 1``: 1 after the 5th failure, 2 after the 6th, ...
- At level k the next try waits ``gap x 2**k`` after the last scheduled start (its due time), where ``gap``
  is the schedule's own spacing there (EveryXMinutes, or the distance to the next cron slot), but never
  more than ``DAMPING_CAP`` (an hour) and never less than the schedule itself: a task that runs hourly or
  less often is not slowed down.
- The try time is found by the trigger as if the supervisor had been down until the end of the delay, so
  the window and CatchUp apply as after a downtime: ``once`` tries at the end of the delay (inside the
  window), ``skip`` at the first slot after it.
- An ``ok`` run ends the streak and with it the damping; so does a change of the task's files (the loop
  keeps the streak, but counts damping from there); ``FailureBackoff = off`` never damps.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..model import FailureBackoff
from .triggers import Trigger

DAMPING_CAP = timedelta(hours=1)
# 2**k overflows a timedelta long before k reaches this; the cap is reached much earlier anyway.
_MAX_LEVEL = 40


def damping_level(streak: int, policy: FailureBackoff) -> int:
    """The damping level of a task with ``streak`` failures in a row (0 = not damped)."""
    if not policy.enabled or streak < policy.after:
        return 0
    return streak - policy.after + 1


def damping_delay(gap: timedelta, level: int, *, cap: timedelta = DAMPING_CAP) -> timedelta:
    """How long after its last scheduled start a task at ``level`` waits: ``gap x 2**level``, at most
    ``cap``, at least ``gap`` (damping never makes a task run sooner than its schedule)."""
    if level <= 0:
        return gap
    return max(gap, min(gap * 2 ** min(level, _MAX_LEVEL), cap))


def damped_due(
    trigger: Trigger, *, anchor: datetime | None, level: int, now: datetime, cap: timedelta = DAMPING_CAP
) -> datetime | None:
    """The task's next due time at damping ``level``: its trigger's, pushed back by the delay.

    ``anchor`` is the last scheduled start (as for ``Trigger.next_due``); a task that never ran, a level of
    0 and a schedule with no more runs are not damped.
    """
    natural = trigger.next_due(anchor=anchor, now=now)
    if level <= 0 or anchor is None or natural is None:
        return natural
    following = trigger.next_due(anchor=anchor, now=anchor)
    if following is None:
        return natural
    delay = damping_delay(following - anchor, level, cap=cap)
    later = trigger.next_due(anchor=anchor, now=max(anchor + delay, now))
    return natural if later is None else max(natural, later)
