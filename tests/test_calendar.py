"""[Frequency] SkipDates / SkipHolidays: parsing and its errors, and the calendar filter over every schedule
kind at DST edges, with the reference instant passed in (the triggers never read the clock)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from supervisor.config.schema import parse_task_config
from supervisor.errors import ConfigError
from supervisor.model import Calendar, CatchUp, TaskSpec
from supervisor.scheduling.calendar import skip_reason
from supervisor.scheduling.triggers import skipped_before, trigger_for, upcoming

pytestmark = pytest.mark.timeout(30)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def spec_of(frequency: str) -> TaskSpec:
    return parse_task_config(f"[Frequency]\n{frequency}\n", task="t", path=Path("/h/Tasks/t/config.ini")).spec


def local(times: list[datetime], zone: ZoneInfo = BERLIN) -> list[str]:
    return [t.astimezone(zone).isoformat() for t in times]


def test_skip_dates_parse_dates_month_days_and_ranges() -> None:
    spec = spec_of("EveryXMinutes = 60\nSkipDates = 2026-12-24, 12-25 , 2026-12-28..2027-01-03, 02-29")
    assert spec.calendar == Calendar(
        dates=frozenset({date(2026, 12, 24)}),
        yearly=frozenset({(12, 25), (2, 29)}),
        ranges=((date(2026, 12, 28), date(2027, 1, 3)),),
    )
    assert skip_reason(spec.calendar, date(2027, 12, 25)) == "SkipDates 12-25"
    assert skip_reason(spec.calendar, date(2027, 1, 1)) == "SkipDates 2026-12-28..2027-01-03"
    assert skip_reason(spec.calendar, date(2026, 12, 27)) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2026-13-01", "'2026-13-01' is not a real date"),
        ("12-32", "'12-32' is not a real month-day"),
        ("24.12.2026", "'24.12.2026' is not a date (expected YYYY-MM-DD"),
        ("2027-01-03..2026-12-28", "the range ends before it starts"),
    ],
)
def test_bad_skip_dates_name_task_file_key_and_value(value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        spec_of(f"EveryXMinutes = 60\nSkipDates = {value}")
    message = str(err.value)
    assert "'t'" in message and "config.ini" in message and "[Frequency] SkipDates" in message
    assert reason in message and "\n" not in message


def test_skip_holidays_codes_are_normalised_and_unknown_ones_list_close_matches() -> None:
    assert spec_of("EveryXMinutes = 60\nSkipHolidays = de-by, AT").calendar.holidays == ("DE-BY", "AT")
    with pytest.raises(ConfigError, match=r"unknown subdivision 'DE-BZ' \(close matches: .*DE-BY"):
        spec_of("EveryXMinutes = 60\nSkipHolidays = DE-BZ")
    with pytest.raises(ConfigError, match=r"SkipHolidays = 'XY'.*unknown country 'XY'"):
        spec_of("EveryXMinutes = 60\nSkipHolidays = XY")


def test_cron_skips_dates_and_holidays_in_the_tasks_zone() -> None:
    spec = spec_of("Cron = 30 0 * * *\nTimeZone = Europe/Berlin\nSkipDates = 2026-12-24\nSkipHolidays = DE-BY")
    got = upcoming(trigger_for(spec, tz=UTC), now=datetime(2026, 12, 22, 12, tzinfo=UTC), count=3)
    # 24th: SkipDates; 25th/26th: Christmas holidays in Bavaria. 00:30 Berlin is 23:30 UTC the day before.
    assert local(got) == ["2026-12-23T00:30:00+01:00", "2026-12-27T00:30:00+01:00", "2026-12-28T00:30:00+01:00"]
    assert "except SkipDates 2026-12-24 and holidays DE-BY" in trigger_for(spec, tz=UTC).describe()


def test_a_skipped_spring_forward_day_drops_the_slot_after_the_gap() -> None:
    spec = spec_of("Cron = 30 2 * * *\nTimeZone = Europe/Berlin\nSkipDates = 2026-03-29")
    got = upcoming(trigger_for(spec, tz=UTC), now=datetime(2026, 3, 28, 12, tzinfo=UTC), count=2)
    assert local(got) == ["2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_the_day_after_a_skipped_day_is_the_fall_back_day_and_runs_once() -> None:
    spec = spec_of("Cron = 30 2 * * *\nTimeZone = Europe/Berlin\nSkipDates = 2026-10-24")
    got = upcoming(trigger_for(spec, tz=UTC), now=datetime(2026, 10, 23, 12, tzinfo=UTC), count=2)
    assert local(got) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_interval_task_resumes_at_the_first_instant_of_the_next_day_even_when_midnight_is_skipped() -> None:
    # Cuba springs forward at midnight: 2026-03-08 00:00 does not exist, the day starts at 01:00.
    havana = ZoneInfo("America/Havana")
    spec = spec_of("EveryXMinutes = 360\nTimeZone = America/Havana\nSkipDates = 2026-03-07")
    trigger = trigger_for(spec, tz=UTC)
    anchor = datetime(2026, 3, 6, 20, tzinfo=havana)
    due = trigger.next_due(anchor=anchor, now=anchor)
    assert due is not None and due.astimezone(havana).isoformat() == "2026-03-08T01:00:00-04:00"
    after = trigger.next_due(anchor=due, now=due)
    assert after is not None and after - due == timedelta(hours=6)


def test_interval_task_on_a_skipped_day_after_a_restart_waits_for_the_next_day() -> None:
    spec = replace(spec_of("EveryXMinutes = 60\nSkipDates = 2026-03-02"), catch_up=CatchUp.ONCE)
    now = datetime(2026, 3, 2, 10, tzinfo=UTC)
    due = trigger_for(spec, tz=UTC).next_due(anchor=now - timedelta(hours=5), now=now)
    assert due == datetime(2026, 3, 3, tzinfo=UTC)


def test_run_at_on_a_skipped_date_has_no_more_runs() -> None:
    spec = spec_of("RunAt = 2026-12-25 10:00\nSkipDates = 12-25")
    assert trigger_for(spec, tz=UTC).next_due(anchor=None, now=datetime(2026, 12, 1, tzinfo=UTC)) is None


def test_a_calendar_that_skips_everything_ends_the_schedule_instead_of_spinning() -> None:
    spec = spec_of("EveryXMinutes = 1\nSkipDates = 2026-01-01..2099-12-31")
    assert trigger_for(spec, tz=UTC).next_due(anchor=None, now=datetime(2026, 1, 1, tzinfo=UTC)) is None


def test_skipped_before_names_the_holidays_a_run_waits_out() -> None:
    spec = spec_of("Cron = 0 9 * * *\nTimeZone = Europe/Berlin\nSkipHolidays = DE")
    due = datetime(2026, 12, 27, 9, tzinfo=BERLIN)
    assert skipped_before(spec.calendar, due, tz=BERLIN) == [
        (date(2026, 12, 25), "Christmas Day (DE)"),
        (date(2026, 12, 26), "Second Day of Christmas (DE)"),
    ]
