"""Validators for the scheduling keys ([Frequency] Cron, RunAt, TimeZone, JitterSeconds) and [Retry].

Each takes the raw text of one value and returns the parsed value, or raises InvalidValue whose message
is the reason; ``config`` puts the task, file, section, key and value in front of it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from ..model import RETRYABLE_OUTCOMES, Outcome, Window
from .values import InvalidValue, non_negative_number, number

_RUN_AT = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{1,2}):(\d{2})")
# The cron shorthands, as the 5-field expressions cron itself expands them to.
_CRON_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
# Largest JitterSeconds: a day. More would move a daily task's runs into other days.
_MAX_JITTER_S = 86400.0


def cron_expression(text: str) -> str:
    """A 5-field expression or an @alias, checked by the parser the scheduler uses; returns 5 fields."""
    expression = _CRON_ALIASES.get(text.strip().lower(), " ".join(text.split()))
    if expression.startswith("@"):
        raise InvalidValue(f"unknown shorthand (use {', '.join(sorted(_CRON_ALIASES))})")
    fields = expression.split(" ")
    if len(fields) != 5:
        raise InvalidValue(
            f"not a cron expression: {len(fields)} fields, expected 5 (minute hour day-of-month "
            "month day-of-week) or a shorthand such as @daily"
        )
    try:
        next(iter(CronSim(expression, datetime(2000, 1, 1))))
    except CronSimError as exc:
        raise InvalidValue(f"not a cron expression: {str(exc).lower() or 'invalid'}") from None
    except (StopIteration, ValueError, OverflowError):
        raise InvalidValue("not a cron expression: it never matches a date") from None
    return expression


def run_at_times(text: str) -> tuple[datetime, ...]:
    """Comma-separated local date-times ``YYYY-MM-DD HH:MM``; sorted, duplicates dropped."""
    times: set[datetime] = set()
    for part in text.split(","):
        item = part.strip()
        match = _RUN_AT.fullmatch(item)
        if match is None:
            raise InvalidValue(
                f"{item!r} is not a local date-time (expected YYYY-MM-DD HH:MM, e.g. 2026-12-24 18:00; "
                "separate several with commas)"
            )
        try:
            year, month, day, hour, minute = (int(g) for g in match.groups())
            times.add(datetime(year, month, day, hour, minute))
        except ValueError as exc:
            raise InvalidValue(f"{item!r} is not a real date-time ({exc})") from None
    return tuple(sorted(times))


def time_zone(text: str) -> str:
    name = text.strip()
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError; bad paths are ValueError
        raise InvalidValue("unknown time zone (use an IANA name such as Europe/Berlin or UTC)") from None
    return name


def jitter_seconds(text: str) -> float:
    value = non_negative_number(text)
    if value > _MAX_JITTER_S:
        raise InvalidValue(f"too large (at most {_MAX_JITTER_S:g} seconds)")
    return value


def backoff(text: str) -> float:
    value = number(text)
    if value < 1:
        raise InvalidValue("must be at least 1 (1 = the same delay before every retry)")
    return value


def retry_on(text: str) -> frozenset[Outcome]:
    names = [part.strip().lower() for part in re.split(r"[,\s]+", text) if part.strip()]
    allowed = ", ".join(sorted(o.value for o in RETRYABLE_OUTCOMES))
    if not names:
        raise InvalidValue(f"empty (list outcomes to retry: {allowed}; or set Attempts = 0)")
    outcomes: set[Outcome] = set()
    for name in names:
        try:
            outcome = Outcome(name)
        except ValueError:
            outcome = None
        if outcome is None or outcome not in RETRYABLE_OUTCOMES:
            raise InvalidValue(f"{name!r} is not an outcome that can be retried (use {allowed})")
        outcomes.add(outcome)
    return frozenset(outcomes)


def cron_meets_window(expression: str, window: Window) -> bool:
    """True when some slot of ``expression`` has a wall time inside ``window``.

    The window filter looks only at the time of day, so the minute and hour fields decide it: their slots
    on one plain day (no DST, every day matching) are all the times of day the expression can have.
    """
    if window == Window():
        return True
    minute, hour = expression.split(" ")[:2]
    day = datetime(2000, 1, 1)
    for slot in CronSim(f"{minute} {hour} * * *", day - timedelta(minutes=1)):
        if slot.date() != day.date():
            return False
        if window.contains(slot.time()):
            return True
    return False
