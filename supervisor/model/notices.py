"""Notification settings as a task's config carries them: which events, which channels, the heartbeat."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class NotifyEvent(str, enum.Enum):
    """What a notice is about; the values are what ``[Notify] On`` accepts."""

    FAILURE = "failure"  # a streak of final failed runs reached AfterFailures
    RECOVERY = "recovery"  # the first ok run after such a streak
    SUCCESS = "success"  # any other final ok run
    TEST = "test"  # notify-test; never configured in On


DEFAULT_ON = frozenset({NotifyEvent.FAILURE, NotifyEvent.RECOVERY})


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

    @property
    def any_channel(self) -> bool:
        return bool(self.urls or self.ping_url or self.command)


@dataclass(frozen=True)
class HeartbeatSettings:
    """``[Supervisor] HeartbeatUrl`` / ``HeartbeatSeconds``: no URL means no heartbeat."""

    url: str | None = None
    seconds: float = 60.0
