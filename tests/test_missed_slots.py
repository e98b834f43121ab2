"""The pure walk over missed slots (scheduling/missed.py): intervals, windows, cron across both DST edges,
calendars, jitter, RunAt's end, the half-open span and the cap. Time is an argument; nothing sleeps."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from supervisor.model import Calendar, TaskSpec, Window
from supervisor.scheduling.missed import SlotWalk, missed_words, slots_between
from supervisor.scheduling.triggers import jitter_offset, trigger_for

pytestmark = pytest.mark.timeout(30)
UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def walk(spec: TaskSpec, anchor: str, end: str, **kwargs: int) -> SlotWalk:
    first = at(anchor)
    return slots_between(
        trigger_for(spec, tz=BERLIN), anchor=first, start=first + timedelta(microseconds=1), end=at(end), **kwargs
    )


def test_an_interval_counts_the_slots_strictly_inside_the_span() -> None:
    found = walk(TaskSpec(name="t", every=timedelta(hours=1)), "2026-03-02T10:00+00:00", "2026-03-02T15:00+00:00")
    assert (found.count, found.first, found.last) == (4, at("2026-03-02T11:00+00:00"), at("2026-03-02T14:00+00:00"))
    assert found.following == at("2026-03-02T15:00+00:00"), "a slot exactly at the end is still due, not missed"
    assert not found.capped


def test_slots_outside_the_window_are_not_missed_they_wait_for_its_opening() -> None:
    spec = TaskSpec(name="t", every=timedelta(hours=1), window=Window(time(8, 0), time(18, 0)))
    found = walk(spec, "2026-03-02T16:30+01:00", "2026-03-03T10:30+01:00")
    # 17:30, then the night is outside the window: the next slots are 08:00, 09:00, 10:00 the next day.
    assert found.count == 4
    assert (found.first, found.last) == (at("2026-03-02T17:30+01:00"), at("2026-03-03T10:00+01:00"))


def test_cron_across_spring_forward_misses_the_shifted_slot_once() -> None:
    spec = TaskSpec(name="t", cron="30 2 * * *", time_zone="Europe/Berlin")
    found = walk(spec, "2026-03-27T02:30+01:00", "2026-03-31T00:00+02:00")
    # 28 March 02:30, 29 March at 03:00 (02:30 does not exist that night), 30 March 02:30.
    assert found.count == 3
    assert found.last == at("2026-03-30T02:30+02:00")


def test_an_hourly_cron_across_fall_back_misses_every_real_hour() -> None:
    spec = TaskSpec(name="t", cron="0 * * * *", time_zone="Europe/Berlin")
    found = walk(spec, "2026-10-24T23:00+02:00", "2026-10-26T00:00+01:00")
    assert found.count == 25, "25 real hours on the fall-back day, each a slot"


def test_calendar_skipped_dates_are_not_missed() -> None:
    daily = TaskSpec(name="t", every=timedelta(days=1), time_zone="Europe/Berlin")
    skipping = TaskSpec(
        name="t",
        every=timedelta(days=1),
        time_zone="Europe/Berlin",
        calendar=Calendar(dates=frozenset({date(2026, 3, 4)})),
    )
    plain = walk(daily, "2026-03-02T06:00+01:00", "2026-03-07T12:00+01:00")
    skipped = walk(skipping, "2026-03-02T06:00+01:00", "2026-03-07T12:00+01:00")
    assert plain.count == 5
    # 3 March 06:00; 4 March is skipped; the grid starts afresh at 5 March 00:00, then 6 and 7 March.
    assert (skipped.count, skipped.last) == (4, at("2026-03-07T00:00+01:00"))


def test_jitter_shifts_every_missed_slot_by_the_task_offset() -> None:
    spec = TaskSpec(name="sync", every=timedelta(minutes=15), jitter_s=60)
    offset = jitter_offset("sync", 60)
    anchor = at("2026-03-02T10:00+00:00") + offset
    found = slots_between(trigger_for(spec, tz=UTC), anchor=anchor, start=anchor, end=anchor + timedelta(hours=1))
    assert found.count == 3 and found.first == anchor + timedelta(minutes=15)
    assert found.following == anchor + timedelta(hours=1)


def test_run_at_ends_and_a_span_start_later_than_the_anchor_counts_only_from_there() -> None:
    spec = TaskSpec(name="t", run_at=(datetime(2026, 3, 2, 11, 0), datetime(2026, 3, 2, 12, 0)), time_zone="UTC")
    anchor = at("2026-03-02T10:00+00:00")
    trigger = trigger_for(spec, tz=UTC)
    found = slots_between(trigger, anchor=anchor, start=at("2026-03-02T11:30+00:00"), end=at("2026-03-03T00:00+00:00"))
    assert (found.count, found.first, found.following) == (1, at("2026-03-02T12:00+00:00"), None)


def test_a_years_long_outage_of_a_one_minute_task_is_capped_and_says_so() -> None:
    spec = TaskSpec(name="t", every=timedelta(minutes=1))
    found = walk(spec, "2025-03-02T10:00+00:00", "2026-03-02T10:00+00:00")
    assert found.capped and found.count == 10_000 and found.following is None
    small = walk(spec, "2026-03-02T10:00+00:00", "2026-03-02T11:00+00:00", max_slots=5)
    assert (small.count, small.capped) == (5, True)
    bounded = slots_between(
        trigger_for(spec, tz=UTC),
        anchor=at("2026-03-02T10:00+00:00"),
        start=at("2026-03-03T10:00+00:00"),  # a day of slots before the span: more steps than allowed
        end=at("2026-03-03T11:00+00:00"),
        max_steps=100,
    )
    assert (bounded.count, bounded.capped) == (0, True)
    assert "at least 10000 slots from" in missed_words(found, str)


def test_the_words_of_one_slot_and_of_many() -> None:
    one = SlotWalk(1, at("2026-03-02T10:00+00:00"), at("2026-03-02T10:00+00:00"), None)
    many = SlotWalk(3, at("2026-03-02T10:00+00:00"), at("2026-03-02T12:00+00:00"), None)
    fmt = lambda t: t.strftime("%H:%M") if t else "never"  # noqa: E731
    assert missed_words(one, fmt) == "the slot of 10:00"
    assert missed_words(many, fmt) == "3 slots from 10:00 to 12:00"
