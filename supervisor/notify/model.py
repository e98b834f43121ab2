"""Plain data of notifications: settings, events, the run facts they react to and the jobs they produce."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..model.notices import NotifyEvent


@dataclass(frozen=True)
class RunFact:
    """A run (one attempt) has finished; what the notification policy needs to know about it.

    ``final`` is False when the attempt will be retried. ``consecutive_failures`` is the task's streak of final
    failed attempts *including* this one (0 after an ok run).
    """

    task: str
    run_id: str
    outcome: str  # an Outcome value: ok, failed, timeout, ...
    final: bool = True
    attempt: int = 1
    consecutive_failures: int = 0
    duration_s: float | None = None
    exit_code: int | None = None
    signal: str | None = None
    message: str | None = None
    log_path: Path | None = None
    due: datetime | None = None  # a missed row: its first slot
    finished: datetime | None = None  # when the run ended (a missed row: its last slot)
    reason: str | None = None  # a missed row: a MissedReason value (down, error, env, queue, gate)
    slots: int | None = None  # a missed row: how many slots it stands for


@dataclass(frozen=True)
class StreakState:
    """Per task memory of the policy: whether the current failure streak already caused a failure notice,
    and the last missed row notified (a row that grows is published again under the same run id)."""

    alarmed: bool = False
    last_missed: str | None = None

    @classmethod
    def from_streak(cls, consecutive_failures: int, *, after_failures: int) -> StreakState:
        """The state after a restart: a streak already at the threshold was notified before the restart."""
        return cls(alarmed=consecutive_failures >= after_failures)

    def but(self, *, alarmed: bool | None = None, last_missed: str | None = None) -> StreakState:
        return StreakState(
            alarmed=self.alarmed if alarmed is None else alarmed,
            last_missed=self.last_missed if last_missed is None else last_missed,
        )


@dataclass(frozen=True)
class Notice:
    """One notice, rendered and masked, ready for every channel of a task."""

    task: str
    run_id: str
    event: NotifyEvent
    outcome: str
    title: str
    body: str
    message: str = ""  # the run's message, short and masked (TASK_MESSAGE of the Command hook)


@dataclass(frozen=True)
class ChannelJob:
    """Send ``notice`` to one Apprise URL."""

    url: str
    notice: Notice


@dataclass(frozen=True)
class PingJob:
    """One healthchecks-style ping: GET without a body, POST with one."""

    url: str  # the full URL, with /start or /fail already appended
    body: bytes | None = None
    what: str = "ping"  # for messages: "ping", "ping /start", "heartbeat", ...
    task: str | None = None  # None for the supervisor's own heartbeat


@dataclass(frozen=True)
class CommandJob:
    """Run the task's Command hook with the notice on stdin."""

    argv: tuple[str, ...]
    notice: Notice


Job = ChannelJob | PingJob | CommandJob


@dataclass(frozen=True)
class DeliveryResult:
    """How one try of one job went; ``detail`` is already masked (safe to log and print)."""

    ok: bool
    detail: str = ""
