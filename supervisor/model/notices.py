"""Notification settings as a task's config carries them: which events, which channels, the heartbeat."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta


class NotifyEvent(str, enum.Enum):
    """What a notice is about; the values are what ``[Notify] On`` accepts."""

    FAILURE = "failure"  # a streak of final failed runs reached AfterFailures
    RECOVERY = "recovery"  # the first ok run after such a streak
    SUCCESS = "success"  # any other final ok run
    MISSED = "missed"  # a missed row was written (slots that could not start: supervisor down, error, ...)
    SILENT = "silent"  # no ok run for ExpectOkWithin (once; recovery when an ok run comes)
    SLOW = "slow"  # a run still going after SlowAfterSeconds / SlowFactor x its usual duration (once per run)
    TEST = "test"  # notify-test; never configured in On


# silent and slow only fire for a task that sets their keys, so having them on by default changes nothing
# for anyone else; missed is opt-in (an outage of the supervisor would otherwise notify every task).
DEFAULT_ON = frozenset({NotifyEvent.FAILURE, NotifyEvent.RECOVERY, NotifyEvent.SILENT, NotifyEvent.SLOW})


@dataclass(frozen=True)
class NotifySettings:
    """A task's ``[Notify]`` section after the home-wide defaults were applied (the task's keys win).

    ``command`` is the hook's argv (already split, never run through a shell); empty means none.
    """

    urls: tuple[str, ...] = ()
    on: frozenset[NotifyEvent] = DEFAULT_ON
    after_failures: int = 1
    ping_url: str | None = None
    command: tuple[str, ...] = ()
    expect_ok_within: timedelta | None = None  # ExpectOkWithin: silent after this long without an ok run
    slow_after_s: float | None = None  # SlowAfterSeconds: a run still going after this is slow
    slow_factor: float | None = None  # SlowFactor: ... or after this x the median of the last 20 ok runs
    repeat_every: timedelta | None = None  # RepeatEvery: repeat failure / silent notices at this period

    @property
    def any_channel(self) -> bool:
        return bool(self.urls or self.ping_url or self.command)


@dataclass(frozen=True)
class HeartbeatSettings:
    """``[Supervisor] HeartbeatUrl`` / ``HeartbeatSeconds``: no URL means no heartbeat."""

    url: str | None = None
    seconds: float = 60.0
