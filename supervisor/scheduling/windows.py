"""The pure scheduler: when is a task due? Time comes in as arguments; nothing here reads the clock.

Every datetime in and out is a timezone-aware UTC instant. ``tz`` is used only to look at the local wall
clock, to decide whether an instant lies inside a task's AllowedFrom-AllowedTo window. Interval arithmetic
is done on UTC instants, never on local times, because Python's arithmetic on a datetime carrying a
ZoneInfo is *wall-clock* arithmetic: "+24 h" across a DST change would then be 23 or 25 real hours.

Policies:

- The interval counts between *due* times (the anchor), not actual starts, so loop lateness never
  accumulates into drift; the window can only push a due time later, never earlier.
- A due time outside the window waits for the window's next opening.
- DST: a window opening that does not exist (spring forward) opens at the first instant after the gap,
  even when the whole window lies in the gap (it then opens for that one instant), so no calendar day
  loses its window. On a fall-back day the repeated wall-clock hour is just more instants.
- Intervals are real elapsed time, with one exception so that a daily task neither runs twice nor skips a
  day: at spring forward, when the real-time slot would fall outside the window (the lost hour pushed it
  past the window's end), the slot moved earlier by the lost hour is used if that is inside the window.
- Missed slots while the supervisor was down (CatchUp): ONCE runs one catch-up as soon as allowed, however
  many slots were missed; SKIP drops them and waits for the next slot on the interval grid.
- A last anchor in the future means the wall clock went backwards (an NTP correction, a Raspberry Pi
  without a real-time clock): the task is then due at most one interval from now, not at some far date.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Mapping
from zoneinfo import ZoneInfo

from ..model import CatchUp, TaskSpec, Window

UTC = timezone.utc

# Offset changes are found by sampling the zone this often, then bisecting to the microsecond. Real zones
# never change offset twice within an hour, so no transition can hide between two samples.
_PROBE = timedelta(hours=1)
_MICROSECOND = timedelta(microseconds=1)
# Each search step either returns or moves past one UTC-offset transition; zones have a few per year, so
# this bound is only ever reached by a broken tzinfo.
_MAX_SEGMENTS = 64


def in_window(window: Window, t: datetime, *, tz: tzinfo) -> datetime:
    """The earliest instant >= ``t`` whose local wall time in ``tz`` is inside ``window``.

    ``t`` itself when it is inside. The search walks stretches of constant UTC offset: within one, wall
    time is UTC plus a constant, so the next opening is plain arithmetic; when an offset change (DST)
    comes first, the search restarts at the change, whose own wall time may already be inside.
    """
    instant = _utc(t, "t")
    opening_time = window.start.replace(second=0, microsecond=0, tzinfo=None)
    for _ in range(_MAX_SEGMENTS):
        offset = _offset(instant, tz)
        wall = (instant + offset).replace(tzinfo=None)
        if window.contains(wall.time()) or _opening_skipped_at(window, instant, offset, tz):
            return instant
        # Outside the window, the next time inside is the window's next opening on the wall clock.
        opening = datetime.combine(wall.date(), opening_time)
        if opening <= wall:
            opening += timedelta(days=1)
        candidate = (opening - offset).replace(tzinfo=UTC)
        change = _first_offset_change(instant, candidate, tz)
        if change is None:
            return candidate
        instant = change
    raise RuntimeError(f"no instant inside window {window} found after {t.isoformat()} in zone {tz}")


def initial_due(spec: TaskSpec, *, last_anchor: datetime | None, now: datetime, tz: tzinfo) -> datetime:
    """When a task that is being loaded (start-up, folder added, re-enabled, fixed) is next due.

    Never ran: as soon as it is inside its window. Otherwise the next slot after ``last_anchor``; if that
    slot was missed while the task was not loaded, CatchUp decides (see the module docstring).
    """
    now = _utc(now, "now")
    if last_anchor is None:
        return in_window(spec.window, now, tz=tz)
    # Clamp: a future anchor means the clock went backwards; never wait more than one interval for it.
    anchor = min(_utc(last_anchor, "last_anchor"), now)
    every = _interval(spec)
    slot = anchor + every
    if slot >= now:
        return _next_slot(spec.window, anchor=anchor, every=every, now=now, tz=tz)
    if spec.catch_up is CatchUp.ONCE:
        return in_window(spec.window, now, tz=tz)
    # SKIP: the first slot on the anchor's grid that is not in the past. Integer division of timedeltas
    # is exact (microseconds), so the grid does not drift however long the downtime was.
    missed = -((anchor - now) // every)  # ceil((now - anchor) / every)
    return in_window(spec.window, anchor + missed * every, tz=tz)


def resolve_wall(wall: datetime, *, tz: tzinfo) -> datetime:
    """The UTC instant of the naive wall-clock time ``wall`` in ``tz``, by the cron rules of DST.

    A wall time that exists once is that instant; one in the repeated hour of a fall-back is its first
    occurrence; one in the skipped hour of a spring forward is the first instant after the gap.
    """
    if wall.tzinfo is not None:
        raise ValueError(f"wall must be a naive wall-clock time, got {wall.isoformat()}")
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if (first + _offset(first, tz)).replace(tzinfo=None) == wall:
        return first
    # In a gap the two folds use the offsets on either side of it, so the change lies between them.
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = min(first, second), max(first, second)
    change = _first_offset_change(low, high, tz)
    return change if change is not None else first


def local_zone(*, environ: Mapping[str, str] | None = None, localtime: Path = Path("/etc/localtime")) -> tzinfo:
    """The machine's time zone: $TZ if set and valid, else ``localtime`` (/etc/localtime), else UTC.

    This is the only function here that reads the environment or files; ``environ`` and ``localtime``
    default to the real ones and exist so tests can point them elsewhere.
    """
    env = os.environ if environ is None else environ
    configured = env.get("TZ", "")
    if configured:
        zone = _zone_from_tz(configured)
        if zone is not None:
            return zone
    zone = _zone_from_file(localtime)
    return zone if zone is not None else UTC


# --- helpers -------------------------------------------------------------------------------------------


def _interval(spec: TaskSpec) -> timedelta:
    if spec.every is None:
        raise ValueError(f"task {spec.name!r} has no EveryXMinutes interval")
    return spec.every


def _next_slot(window: Window, *, anchor: datetime, every: timedelta, now: datetime, tz: tzinfo) -> datetime:
    """The slot one interval after ``anchor`` (a UTC instant), pushed into the window.

    The exception for spring forward (module docstring): when the clock jumped forward between the
    anchor (or the gap it was itself moved past) and the slot, and the slot lies outside the window, the
    slot moved earlier by the lost time is tried too; the earlier of the two wins. At fall-back the offset
    goes down, so the exception never applies there.
    """
    slot = anchor + every
    due = in_window(window, slot, tz=tz)
    if due == slot:
        return due
    lost = _offset(slot, tz) - _offset(anchor - _MICROSECOND, tz)
    if lost > timedelta(0):
        early = in_window(window, max(slot - lost, now), tz=tz)
        if anchor < early < due:
            return early
    return due


def _opening_skipped_at(window: Window, instant: datetime, offset: timedelta, tz: tzinfo) -> bool:
    """True when ``instant`` ends a spring-forward gap that swallowed the window's opening.

    ``offset`` is the UTC offset at ``instant``; the gap's wall times are [before-offset wall, wall).
    """
    before = _offset(instant - _MICROSECOND, tz)
    if before >= offset:
        return False
    gap_start = (instant + before).replace(tzinfo=None)
    gap_end = (instant + offset).replace(tzinfo=None)
    opening_time = window.start.replace(second=0, microsecond=0, tzinfo=None)
    return any(gap_start <= datetime.combine(day, opening_time) < gap_end for day in (gap_start.date(), gap_end.date()))


def _utc(t: datetime, what: str) -> datetime:
    """``t`` as a UTC instant; a naive datetime is a programming error (its instant is unknowable)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {t.isoformat()}")
    return t.astimezone(UTC)


def _offset(instant: datetime, tz: tzinfo) -> timedelta:
    offset = instant.astimezone(tz).utcoffset()
    if offset is None:  # a tzinfo that does not know its own offset cannot place a wall time
        raise ValueError(f"time zone {tz!r} has no UTC offset at {instant.isoformat()}")
    return offset


def _first_offset_change(start: datetime, end: datetime, tz: tzinfo) -> datetime | None:
    """The first instant in (start, end] whose UTC offset in ``tz`` differs from the one at ``start``."""
    base = _offset(start, tz)
    low = start
    while low < end:
        high = min(low + _PROBE, end)
        if _offset(high, tz) != base:
            # Bisect in whole microseconds: offset(low) == base != offset(high).
            span = (high - low) // _MICROSECOND
            while span > 1:
                middle = low + timedelta(microseconds=span // 2)
                if _offset(middle, tz) == base:
                    low = middle
                else:
                    high = middle
                span = (high - low) // _MICROSECOND
            return high
        low = high
    return None


def _zone_from_tz(value: str) -> tzinfo | None:
    """$TZ as a zone: 'Europe/Berlin', ':Europe/Berlin' or ':/path/to/zonefile'; None when unusable.

    POSIX rule strings ('CET-1CEST,M3.5.0,M10.5.0/3') are not supported by zoneinfo and fall through.
    """
    name = value[1:] if value.startswith(":") else value
    if name.startswith("/"):
        return _zone_from_file(Path(name))
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return None


def _zone_from_file(path: Path) -> tzinfo | None:
    """A TZif file as a zone, keyed by its name under a zoneinfo folder when it is a link to one."""
    real = os.path.realpath(path)
    marker = "/zoneinfo/"
    key = real.split(marker, 1)[1] if marker in real else None
    try:
        with open(path, "rb") as handle:
            return ZoneInfo.from_file(handle, key=key)
    except (OSError, ValueError):
        return None
