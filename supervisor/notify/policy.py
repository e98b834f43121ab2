"""Which notices and pings a finished run causes: a pure function of the run's facts, the task's settings and
one bit of memory per task.

Policy (README, "Being told"):

- An attempt that will be retried (``final`` False) causes nothing: no notice, no ping. Its retry decides.
- A final attempt whose outcome is a failure (failed, timeout, memory, crashed, env-failed) extends the streak.
  When the streak *reaches* ``AfterFailures`` a ``failure`` notice goes out, once: the streak is now alarmed
  and further failures stay quiet until it ends.
- A final ``ok`` ends the streak. If the streak was alarmed, that is a ``recovery``; otherwise it is a
  ``success`` (which only users who asked for it in ``On`` hear about). A recovery is never also a success.
- A ``missed`` row is a ``missed`` notice, once per row (a row that grows is published again under its run
  id and stays quiet); it neither extends nor ends a streak and sends no ping (the monitor sees the silence).
- Any other outcome (skipped, testing, killed by a shutdown, interrupted) neither extends nor ends a streak.
- ``On`` filters the notices only; the streak is tracked regardless, so adding ``recovery`` later behaves.
- Pings follow the healthchecks.io protocol: ``/start`` when a run starts, the bare URL on a final ok,
  ``/fail`` on a final failure; nothing for the other outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import NotifyEvent, NotifySettings
from .model import RunFact, StreakState

FAILURE_OUTCOMES = frozenset({"failed", "timeout", "memory", "crashed", "env-failed"})
OK_OUTCOME = "ok"
MISSED_OUTCOME = "missed"


@dataclass(frozen=True)
class Verdict:
    """What to send for one finished run, and the task's policy state afterwards."""

    events: tuple[NotifyEvent, ...] = ()  # notices for the channels and the Command hook, already filtered by On
    ping_suffix: str | None = None  # appended to PingUrl: "" (ok) or "/fail"; None = no ping
    state: StreakState = field(default_factory=StreakState)


def decide_notices(fact: RunFact, *, settings: NotifySettings, state: StreakState) -> Verdict:
    """Apply the policy above to one finished attempt."""
    if not fact.final:
        return Verdict(state=state)
    if fact.outcome in FAILURE_OUTCOMES:
        reached = max(1, fact.consecutive_failures) >= settings.after_failures
        notify = reached and not state.alarmed and NotifyEvent.FAILURE in settings.on
        return Verdict(
            events=(NotifyEvent.FAILURE,) if notify else (),
            ping_suffix="/fail",
            state=state.but(alarmed=state.alarmed or reached),
        )
    if fact.outcome == OK_OUTCOME:
        event = NotifyEvent.RECOVERY if state.alarmed else NotifyEvent.SUCCESS
        return Verdict(events=(event,) if event in settings.on else (), ping_suffix="", state=state.but(alarmed=False))
    if fact.outcome == MISSED_OUTCOME:
        fresh = fact.run_id != state.last_missed and NotifyEvent.MISSED in settings.on
        return Verdict(events=(NotifyEvent.MISSED,) if fresh else (), state=state.but(last_missed=fact.run_id))
    return Verdict(state=state)


def ping_url(settings: NotifySettings, suffix: str) -> str | None:
    """``PingUrl`` plus ``suffix`` (``/start``, ``/fail``, ``""``), or None when the task has no PingUrl."""
    if settings.ping_url is None:
        return None
    return settings.ping_url.rstrip("/") + suffix
