"""Validators for the scheduling keys ([Frequency] Cron, RunAt, After, AfterOutcome, TimeZone, JitterSeconds,
SkipDates, SkipHolidays) and [Retry].

Each takes the raw text of one value and returns the parsed value, or raises InvalidValue whose message
is the reason; ``config`` puts the task, file, section, key and value in front of it.
"""

from __future__ import annotations

import difflib
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
from cronsim import CronSim, CronSimError

from ..model import RETRYABLE_OUTCOMES, AfterOutcome, Calendar, Outcome, Window
from ..scheduling.calendar import split_code
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


def after_tasks(text: str) -> tuple[str, ...]:
    """Comma-separated task names (folder names under Tasks/); duplicates dropped, order kept."""
    names: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if not name:
            raise InvalidValue("empty task name (name one or more tasks, e.g. After = backup, export)")
        if "/" in name or name.startswith("."):
            raise InvalidValue(f"{name!r} is not a task name (a folder directly under Tasks/)")
        if name not in names:
            names.append(name)
    return tuple(names)


def after_outcome(text: str) -> AfterOutcome:
    try:
        return AfterOutcome(text.strip().lower())
    except ValueError:
        raise InvalidValue(f"use one of {', '.join(o.value for o in AfterOutcome)}") from None


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


_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_MONTH_DAY = re.compile(r"(\d{2})-(\d{2})")


def skip_dates(text: str) -> Calendar:
    """Comma-separated ``YYYY-MM-DD`` dates, ``MM-DD`` month-days (every year) and inclusive ranges
    ``YYYY-MM-DD..YYYY-MM-DD``; returned as a Calendar without holidays."""
    dates: set[date] = set()
    yearly: set[tuple[int, int]] = set()
    ranges: list[tuple[date, date]] = []
    for part in text.split(","):
        item = part.strip()
        if ".." in item:
            first, _, last = (side.strip() for side in item.partition(".."))
            start, end = _iso_date(first, item), _iso_date(last, item)
            if end < start:
                raise InvalidValue(f"{item!r}: the range ends before it starts")
            ranges.append((start, end))
        elif _MONTH_DAY.fullmatch(item):
            month, day = (int(g) for g in item.split("-"))
            try:
                date(2000, month, day)  # a leap year, so 02-29 is allowed
            except ValueError:
                raise InvalidValue(f"{item!r} is not a real month-day") from None
            yearly.add((month, day))
        else:
            dates.add(_iso_date(item, item))
    return Calendar(dates=frozenset(dates), yearly=frozenset(yearly), ranges=tuple(sorted(ranges)))


def _iso_date(text: str, item: str) -> date:
    match = _ISO_DATE.fullmatch(text)
    if match is None:
        raise InvalidValue(
            f"{item!r} is not a date (expected YYYY-MM-DD, MM-DD for every year, or FIRST..LAST, e.g. "
            "2026-12-24, 12-25, 2026-12-28..2027-01-03; separate several with commas)"
        )
    try:
        return date(*(int(g) for g in match.groups()))
    except ValueError as exc:
        raise InvalidValue(f"{item!r} is not a real date ({exc})") from None


def skip_holidays(text: str) -> tuple[str, ...]:
    """Comma-separated ``COUNTRY`` or ``COUNTRY-SUBDIVISION`` codes known to the ``holidays`` package;
    an unknown one is an error listing the closest known codes."""
    supported = holidays.list_supported_countries()
    codes: list[str] = []
    for part in text.split(","):
        item = part.strip().upper()
        if not item:
            raise InvalidValue("empty code (use a country such as DE or a country-subdivision such as DE-BY)")
        country, subdiv = split_code(item)
        if country not in supported:
            raise InvalidValue(f"unknown country {country!r}{_close(country, list(supported))}")
        if subdiv is not None and subdiv not in supported[country]:
            known = [f"{country}-{s}" for s in supported[country]]
            hint = _close(item, known) or (" (it has no subdivisions)" if not known else "")
            raise InvalidValue(f"unknown subdivision {item!r}{hint}")
        if item not in codes:
            codes.append(item)
    return tuple(codes)


def _close(word: str, known: list[str]) -> str:
    matches = difflib.get_close_matches(word, known, n=5, cutoff=0.4)
    return f" (close matches: {', '.join(matches)})" if matches else ""
