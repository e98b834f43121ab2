"""One trigger per schedule kind: when is a task next due? Pure: time comes in as arguments.

``trigger_for(spec, tz=...)`` is the one place where a task's schedule becomes due times. It picks the
kind (EveryXMinutes, Cron, RunAt or After), reads it in the task's own TimeZone (else the machine's zone
``tz``) and adds the task's JitterSeconds offset. An After task has no due times of its own (core/chains.py
starts it when an upstream run ends); SkipDates, SkipHolidays, JitterSeconds and CatchUp do not apply to
it. The loop and the ``next`` command both go through it, so what ``next`` prints is what the loop does.

Policies (docs/cli.md, "DST and time zones"; README "Scheduling"):

- ``anchor`` is the last *scheduled* start (a due time, jitter included; a RunOnStartup run's start
  counts too), ``None`` when the task never ran. The result is the next due time, never earlier than the
  window allows; ``None`` means no more runs (after the last RunAt).
- Interval: today's rules, unchanged (``schedule.initial_due``): a never-run task is due as soon as it is
  inside its window; missed slots follow CatchUp.
- Cron: only its slots run; a never-run task waits for its next slot. Slots outside the window do not
  run. DST as Debian cron does it (the library, cronsim, implements exactly that): a slot inside the
  skipped hour runs once at the first instant after the gap; a fixed-time slot in the repeated hour runs
  once, while a slot with a wildcard hour (``0 * * * *``) runs in both hours, so it runs every real hour.
- RunAt: each date-time once, read in the zone (a time in the skipped hour runs at the first instant
  after the gap, one in the repeated hour at its first occurrence); the window delays it like an interval
  slot. ``None`` after the last one.
- Missed while the supervisor was down (the next slot after ``anchor`` is already past at ``now``):
  CatchUp=once runs one catch-up as soon as the window allows; CatchUp=skip drops them and waits for the
  next slot that is not in the past. For RunAt a never-run task's past date-times count as missed.
- A future ``anchor`` means the clock went backwards: it is clamped to ``now`` so no task waits longer
  than one interval or its next slot.
- Jitter: a stable offset in [0, JitterSeconds) from a hash of the task name. The kind computes slots on
  the un-jittered grid (the window filters un-jittered slots) and the offset is added to every result.
- Calendars (SkipDates, SkipHolidays): a slot whose wall date in the task's zone is skipped does not
  run. The schedule resumes on the next date that is not skipped as if the skipped dates had not been
  there: a Cron or RunAt task at its first slot of that date or later; an interval task as soon as it is
  inside its window that date (its grid starts afresh there). Like the window, the calendar looks at the
  un-jittered slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from itertools import islice
from typing import Iterator, Protocol
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from ..model import Calendar, CatchUp, TaskSpec, Window
from .calendar import skip_reason
from .windows import in_window, initial_due, resolve_wall

UTC = timezone.utc

# A cron expression whose slots never meet its window (``0 3 * * *`` with 10:00-11:00) must not spin:
# the search gives up after this many slots or years and reports "no more runs". Ten years covers the
# rarest real expression (29 February, with an 8-year gap around 2100).
_MAX_CRON_SLOTS = 200_000
_MAX_CRON_YEARS = 10
_TICK = timedelta(microseconds=1)
# Consecutive skipped dates one search steps over before it reports "no more runs": ten years.
_MAX_SKIPPED_DAYS = 3660


class Trigger(Protocol):
    """A task's schedule: computes due times, never reads the clock."""

    def next_due(self, *, anchor: datetime | None, now: datetime) -> datetime | None:
        """Next due time (aware) after the last scheduled start `anchor` (None = never ran), as seen at
        `now`; None = no more runs."""
        ...

    def describe(self) -> str:
        """The schedule in words, one line."""
        ...


def trigger_for(spec: TaskSpec, *, tz: tzinfo) -> Trigger:
    """The trigger for ``spec``: its kind, read in its TimeZone (else ``tz``), with its jitter applied."""
    zone = zone_for(spec, default=tz)
    base: Trigger
    if spec.after:
        return AfterTrigger(spec.after, spec.after_outcome.value, window=spec.window, tz=zone)
    if spec.cron is not None:
        base = CronTrigger(spec.cron, window=spec.window, catch_up=spec.catch_up, tz=zone)
    elif spec.run_at:
        base = RunAtTrigger(spec.run_at, window=spec.window, catch_up=spec.catch_up, tz=zone)
    else:
        base = IntervalTrigger(spec, tz=zone)
    if spec.calendar:
        base = Calendared(base, spec.calendar, tz=zone)
    offset = jitter_offset(spec.name, spec.jitter_s)
    return Jittered(base, offset) if offset else base


def zone_for(spec: TaskSpec, *, default: tzinfo) -> tzinfo:
    """The zone a task's windows, Cron and RunAt are read in (config.py has validated the name)."""
    return ZoneInfo(spec.time_zone) if spec.time_zone is not None else default


def jitter_offset(name: str, jitter_s: float) -> timedelta:
    """A stable offset in [0, jitter_s) seconds, in whole microseconds, from a hash of the task name.

    sha256 rather than ``hash()``: Python salts str hashes per process, and the offset must be the same
    in the supervisor, in ``next`` and after a restart.
    """
    span = int(jitter_s * 1_000_000)
    if span <= 0:
        return timedelta(0)
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    return timedelta(microseconds=int.from_bytes(digest[:8], "big") % span)


def upcoming(trigger: Trigger, *, now: datetime, count: int) -> list[datetime]:
    """The next ``count`` due times from ``now`` for a task that never ran (fewer when the schedule ends).

    Each time is computed from the previous one exactly as the loop does after a run was due there. For
    cron the same slots come from one cronsim iterator instead of one per time (a test pins the equality):
    ``next --count 1000`` then costs about a third (bench/cron_next.py).
    """
    offset, base = (trigger.offset, trigger.inner) if isinstance(trigger, Jittered) else (timedelta(0), trigger)
    if isinstance(base, CronTrigger):
        return [slot + offset for slot in islice(base.slots_after(now - offset), count)]
    found: list[datetime] = []
    anchor: datetime | None = None
    at = now
    while len(found) < count:
        due = trigger.next_due(anchor=anchor, now=at)
        if due is None:
            break
        found.append(due)
        anchor, at = due, due
    return found


# --- the kinds ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntervalTrigger:
    """EveryXMinutes inside the window: today's semantics, unchanged (see ``schedule``)."""

    spec: TaskSpec
    tz: tzinfo

    def next_due(self, *, anchor: datetime | None, now: datetime) -> datetime | None:
        return initial_due(self.spec, last_anchor=anchor, now=now, tz=self.tz)

    def describe(self) -> str:
        every = self.spec.every
        minutes = every.total_seconds() / 60 if every is not None else 0.0
        return f"every {_minutes(minutes)}{_window_words(self.spec.window)}{_zone_words(self.tz)}"


@dataclass(frozen=True)
class CronTrigger:
    """Cron slots (Debian cron's DST rules, via cronsim), filtered by the window."""

    expression: str
    window: Window
    catch_up: CatchUp
    tz: tzinfo

    def next_due(self, *, anchor: datetime | None, now: datetime) -> datetime | None:
        now = _aware(now, "now")
        if anchor is None:
            return self._first_slot(after=now)
        anchor = min(_aware(anchor, "anchor"), now)  # a future anchor: the clock went backwards
        slot = self._first_slot(after=anchor)
        if slot is None or slot >= now:
            return slot
        if self.catch_up is CatchUp.ONCE:
            return in_window(self.window, now, tz=self.tz)
        # SKIP: the first slot not in the past; a slot exactly at ``now`` is still due.
        return self._first_slot(after=now - timedelta(microseconds=1))

    def describe(self) -> str:
        try:
            words = CronSim(self.expression, datetime(2000, 1, 1)).explain()
        except (CronSimError, ValueError, AttributeError):  # explain() is newer than some cronsim builds
            words = "on its slots"
        return f"cron {self.expression!r} ({words}){_window_words(self.window, 'only')}{_zone_words(self.tz)}"

    def _first_slot(self, *, after: datetime) -> datetime | None:
        return next(self.slots_after(after), None)

    def slots_after(self, after: datetime) -> Iterator[datetime]:
        """The slots strictly after ``after`` whose wall time is inside the window, as UTC instants.

        Ends when no slot meets the window for ``_MAX_CRON_SLOTS`` slots or ``_MAX_CRON_YEARS`` years.
        """
        after = _aware(after, "after")
        misses = 0
        all_day = self.window == Window()
        limit_year = after.astimezone(self.tz).year + _MAX_CRON_YEARS
        for slot in self._slots(after):
            instant = slot.astimezone(UTC)
            if instant <= after:
                # cronsim started inside a repeated hour (fold=1) may return the earlier fold's slot.
                continue
            if slot.year > limit_year:
                return
            if all_day or self.window.contains(slot.time()) or self._opens_after_gap(instant, slot):
                yield instant
                after, misses = instant, 0
                limit_year = slot.year + _MAX_CRON_YEARS
                continue
            misses += 1
            if misses >= _MAX_CRON_SLOTS:
                return

    def _opens_after_gap(self, instant: datetime, slot: datetime) -> bool:
        """A slot at the end of a spring-forward gap that swallowed the window's opening is inside it.

        Checked only for slots outside the window, and cheaply first: most are not at a gap's end.
        """
        before, now = (instant - _TICK).astimezone(self.tz).utcoffset(), slot.utcoffset()
        if before is None or now is None or before >= now:
            return False
        return in_window(self.window, instant, tz=self.tz) == instant

    def _slots(self, after: datetime) -> Iterator[datetime]:
        try:
            yield from CronSim(self.expression, after.astimezone(self.tz))
        except (CronSimError, StopIteration, ValueError, OverflowError):  # past year 9999
            return


@dataclass(frozen=True)
class RunAtTrigger:
    """One-shot runs at local date-times; ``None`` after the last one."""

    times: tuple[datetime, ...]  # naive wall times in ``tz``
    window: Window
    catch_up: CatchUp
    tz: tzinfo

    def next_due(self, *, anchor: datetime | None, now: datetime) -> datetime | None:
        now = _aware(now, "now")
        if anchor is not None:
            anchor = min(_aware(anchor, "anchor"), now)
        instants = sorted(resolve_wall(t, tz=self.tz) for t in self.times)
        pending = [t for t in instants if anchor is None or t > anchor]
        if not pending:
            return None
        if pending[0] >= now:
            return in_window(self.window, pending[0], tz=self.tz)
        if self.catch_up is CatchUp.ONCE:  # one catch-up for however many were missed
            return in_window(self.window, now, tz=self.tz)
        ahead = [t for t in pending if t >= now]
        return in_window(self.window, ahead[0], tz=self.tz) if ahead else None

    def describe(self) -> str:
        shown = ", ".join(f"{t:%Y-%m-%d %H:%M}" for t in sorted(self.times))
        return f"once at {shown}{_window_words(self.window)}{_zone_words(self.tz)}"


@dataclass(frozen=True)
class AfterTrigger:
    """[Frequency] After: no due times of its own (``next_due`` is None, which is not "done": an upstream
    run's end makes it due, core/chains.py); the window still holds such a start back."""

    upstream: tuple[str, ...]
    outcome: str  # AfterOutcome's value
    window: Window
    tz: tzinfo

    def next_due(self, *, anchor: datetime | None, now: datetime) -> datetime | None:
        return None

    def describe(self) -> str:
        return f"after {', '.join(self.upstream)} ({self.outcome}){_window_words(self.window, 'starting')}"


@dataclass(frozen=True)
class Jittered:
    """Adds a fixed offset to every due time of ``inner``; ``inner`` works on the un-jittered grid."""

    inner: Trigger
    offset: timedelta

    def next_due(self, *, anchor: datetime | None, now: datetime) -> datetime | None:
        due = self.inner.next_due(anchor=None if anchor is None else anchor - self.offset, now=now - self.offset)
        return None if due is None else due + self.offset

    def describe(self) -> str:
        return f"{self.inner.describe()}, +{self.offset.total_seconds():g} s jitter"


@dataclass(frozen=True)
class Calendared:
    """Drops the due times of ``inner`` whose wall date in ``tz`` is skipped by ``calendar``."""

    inner: Trigger
    calendar: Calendar
    tz: tzinfo

    def next_due(self, *, anchor: datetime | None, now: datetime) -> datetime | None:
        due = self.inner.next_due(anchor=anchor, now=now)
        for _ in range(_MAX_SKIPPED_DAYS):
            if due is None:
                return None
            day = due.astimezone(self.tz).date()
            if skip_reason(self.calendar, day) is None:
                return due
            due = self._resume(day + timedelta(days=1))
        return None

    def _resume(self, day: date) -> datetime | None:
        """The first due time on or after the start of ``day``, as if the dates before had no slots."""
        start = resolve_wall(datetime.combine(day, time(0, 0)), tz=self.tz)
        if isinstance(self.inner, IntervalTrigger):
            return self.inner.next_due(anchor=None, now=start)
        return self.inner.next_due(anchor=start - _TICK, now=start - _TICK)

    def describe(self) -> str:
        return f"{self.inner.describe()}, {calendar_words(self.calendar)}"


def calendar_words(calendar: Calendar) -> str:
    """``except SkipDates 12-25, 2026-12-28..2027-01-03 and holidays DE-BY``: the calendar in words."""
    dates = [d.isoformat() for d in sorted(calendar.dates)]
    dates += [f"{m:02d}-{d:02d}" for m, d in sorted(calendar.yearly)]
    dates += [f"{a.isoformat()}..{b.isoformat()}" for a, b in calendar.ranges]
    parts = [f"SkipDates {', '.join(dates)}"] if dates else []
    if calendar.holidays:
        parts.append(f"holidays {', '.join(calendar.holidays)}")
    return "except " + " and ".join(parts)


def skipped_before(calendar: Calendar, due: datetime, *, tz: tzinfo) -> list[tuple[date, str]]:
    """The skipped dates right before ``due``'s wall date (the run of days it waits out), oldest first,
    each with its reason; at most a year of them."""
    found: list[tuple[date, str]] = []
    day = due.astimezone(tz).date()
    for _ in range(366):
        day -= timedelta(days=1)
        reason = skip_reason(calendar, day)
        if reason is None:
            break
        found.append((day, reason))
    return found[::-1]


# --- helpers --------------------------------------------------------------------------------------------


def _aware(t: datetime, what: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {t.isoformat()}")
    return t.astimezone(UTC)


def _minutes(minutes: float) -> str:
    if minutes >= 60 and minutes % 60 == 0:
        hours = minutes / 60
        return "hour" if hours == 1 else f"{hours:g} hours"
    if minutes < 1:
        return f"{minutes * 60:g} s"
    return "minute" if minutes == 1 else f"{minutes:g} min"


def _window_words(window: Window, how: str = "") -> str:
    if window == Window():
        return ""
    lead = f"{how} " if how else ""
    return f", {lead}between {window.start:%H:%M} and {window.end:%H:%M}"


def _zone_words(tz: tzinfo) -> str:
    return f" ({getattr(tz, 'key', None) or tz})"
