"""Skipped dates: is a local date one on which a task's slots do not run? Pure (the holiday tables are
data of the ``holidays`` package, computed per year and cached).

Policies (README "Scheduling", docs/cli.md "Calendars"):

- A date is skipped when it is one of ``SkipDates`` (a date, a yearly month-day or an inclusive range)
  or a public holiday of one of the ``SkipHolidays`` codes (``DE`` or ``DE-BY``). The date is the slot's
  wall date in the task's zone, so a slot at 00:30 on 25 December in Europe/Berlin is on 25 December
  whatever UTC says.
- ``skip_reason`` names why (the holiday's name and code, or the SkipDates entry), for ``why``.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import holidays

from ..model import Calendar


def skip_reason(calendar: Calendar, day: date) -> str | None:
    """Why ``day`` is skipped under ``calendar`` (one short phrase), or None when its slots run."""
    if day in calendar.dates:
        return f"SkipDates {day.isoformat()}"
    if (day.month, day.day) in calendar.yearly:
        return f"SkipDates {day.month:02d}-{day.day:02d}"
    for first, last in calendar.ranges:
        if first <= day <= last:
            return f"SkipDates {first.isoformat()}..{last.isoformat()}"
    for code in calendar.holidays:
        name = _holidays(code, day.year).get(day)
        if name is not None:
            return f"{name} ({code})"
    return None


def split_code(code: str) -> tuple[str, str | None]:
    """``DE-BY`` -> (``DE``, ``BY``); ``DE`` -> (``DE``, None). Subdivision codes may contain dashes."""
    country, _, subdiv = code.partition("-")
    return country, subdiv or None


@lru_cache(maxsize=64)
def _holidays(code: str, year: int) -> holidays.HolidayBase:
    country, subdiv = split_code(code)
    return holidays.country_holidays(country, subdiv=subdiv, years=year)
