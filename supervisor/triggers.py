"""When is a task due: one ``Trigger`` per schedule kind, pure (time comes in as arguments).

The loop asks nothing else about time: every due time it holds comes from ``Trigger.next_due``, so a new
schedule kind is a new Trigger, not a change to the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Protocol

from .schedule import initial_due
from .spec import TaskSpec


class Trigger(Protocol):
    def next_due(self, *, anchor: datetime | None, now: datetime) -> datetime | None:
        """Next due time (aware) after the last scheduled start ``anchor`` (None = never ran), as seen at
        ``now``; None = no more runs."""

    def describe(self) -> str:
        """The schedule in words, e.g. "every 30 min, 02:00-04:00"."""


@dataclass(frozen=True)
class IntervalTrigger:
    """EveryXMinutes within the AllowedFrom-AllowedTo window; CatchUp decides about missed slots."""

    spec: TaskSpec
    tz: tzinfo

    def next_due(self, *, anchor: datetime | None, now: datetime) -> datetime | None:
        return initial_due(self.spec, last_anchor=anchor, now=now, tz=self.tz)

    def describe(self) -> str:
        every = f"every {self.spec.every.total_seconds() / 60:g} min"
        window = str(self.spec.window)
        return every if window == "00:00-23:59" else f"{every}, {window}"


def trigger_for(spec: TaskSpec, *, tz: tzinfo) -> Trigger:
    """The trigger of a task's schedule."""
    return IntervalTrigger(spec, tz)
