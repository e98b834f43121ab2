"""The pure scheduler on fake instants: windows, intervals, catch-up, DST. Nothing here sleeps."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from supervisor.model import CatchUp, TaskSpec, Window
from supervisor.scheduling.windows import in_window, initial_due, local_zone

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ALL_DAY = Window()
NIGHT = Window(time(22, 0), time(2, 0))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def spec(every: timedelta, window: Window = ALL_DAY, catch_up: CatchUp = CatchUp.ONCE) -> TaskSpec:
    return TaskSpec(name="t", every=every, window=window, catch_up=catch_up)


def next_after(task: TaskSpec, due: datetime, *, tz: tzinfo) -> datetime:
    """The next due time after the run that was due at ``due``, asked the way the loop asks its trigger."""
    return initial_due(task, last_anchor=due, now=due, tz=tz)


def wall(instant: datetime, tz) -> tuple[int, int, int]:
    local = instant.astimezone(tz)
    return local.hour, local.minute, local.second


def skipped_opening(window: Window, step: datetime, tz) -> bool:
    """True when ``step`` is the first minute after a spring-forward gap that swallowed the window's opening."""
    before = (step - timedelta(minutes=1)).astimezone(tz)
    now = step.astimezone(tz)
    if now.utcoffset() <= before.utcoffset():
        return False
    gap_start = (before + timedelta(minutes=1)).replace(tzinfo=None, fold=0)  # wall as if no change
    opening = datetime.combine(gap_start.date(), window.start)
    return gap_start <= opening < now.replace(tzinfo=None)


def reference_in_window(window: Window, t: datetime, tz) -> datetime:
    """Brute force: t if inside, else the first whole UTC minute after t that is inside (or that ends a
    gap which swallowed the window's opening).

    Valid for zones whose offsets and transitions fall on whole minutes (all the ones used here).
    """
    if window.contains(t.astimezone(tz).time()):
        return t
    if t.second == 0 and t.microsecond == 0 and skipped_opening(window, t, tz):
        return t
    step = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(4 * 24 * 60):
        if window.contains(step.astimezone(tz).time()) or skipped_opening(window, step, tz):
            return step
        step += timedelta(minutes=1)
    raise AssertionError("no opening within four days")


# --- windows -------------------------------------------------------------------------------------------


def test_inside_the_window_returns_the_instant_itself():
    t = utc(2024, 6, 1, 12, 34, 56, 789)
    assert in_window(ALL_DAY, t, tz=UTC) == t
    assert in_window(Window(time(12, 0), time(13, 0)), t, tz=UTC) == t


def test_result_is_a_utc_instant_even_for_input_in_another_zone():
    t = datetime(2024, 6, 1, 5, 0, tzinfo=BERLIN)  # 03:00 UTC, before an 08:00 Berlin opening
    result = in_window(Window(time(8, 0), time(9, 0)), t, tz=BERLIN)
    assert result.tzinfo is UTC
    assert result == utc(2024, 6, 1, 6, 0)


@pytest.mark.parametrize("seconds_into_day", [0, 1, 3599, 43200, 86399])
def test_all_day_window_includes_every_second_of_the_day(seconds_into_day):
    t = utc(2024, 1, 1) + timedelta(seconds=seconds_into_day, microseconds=999_999)
    assert in_window(ALL_DAY, t, tz=UTC) == t


@pytest.mark.parametrize(
    "hhmmss, expected",
    [
        ((21, 59, 59), utc(2024, 6, 1, 22, 0)),  # just before opening: waits for it
        ((22, 0, 0), utc(2024, 6, 1, 22, 0)),
        ((23, 30, 0), utc(2024, 6, 1, 23, 30)),
        ((0, 0, 0), utc(2024, 6, 1, 0, 0)),  # after midnight, still inside (from the night before)
        ((2, 0, 59), utc(2024, 6, 1, 2, 0, 59)),  # end minute is inclusive to its last second
        ((2, 1, 0), utc(2024, 6, 1, 22, 0)),  # one minute later it is closed until evening
        ((12, 0, 0), utc(2024, 6, 1, 22, 0)),
    ],
)
def test_window_crossing_midnight(hhmmss, expected):
    t = utc(2024, 6, 1, *hhmmss)
    assert in_window(NIGHT, t, tz=UTC) == expected


def test_end_of_day_window_includes_2359_59():
    window = Window(time(23, 0), time(23, 59))
    assert in_window(window, utc(2024, 6, 1, 23, 59, 59), tz=UTC) == utc(2024, 6, 1, 23, 59, 59)
    assert in_window(window, utc(2024, 6, 2, 0, 0), tz=UTC) == utc(2024, 6, 2, 23, 0)


def test_start_equal_to_end_is_a_single_minute():
    window = Window(time(12, 0), time(12, 0))
    assert in_window(window, utc(2024, 6, 1, 12, 0, 30), tz=UTC) == utc(2024, 6, 1, 12, 0, 30)
    assert in_window(window, utc(2024, 6, 1, 12, 1), tz=UTC) == utc(2024, 6, 2, 12, 0)
    assert in_window(window, utc(2024, 6, 1, 11, 59, 59), tz=UTC) == utc(2024, 6, 1, 12, 0)


def test_window_is_evaluated_in_local_time():
    window = Window(time(8, 0), time(9, 0))
    # 07:30 UTC is 09:30 in Berlin (summer): closed until 08:00 Berlin = 06:00 UTC the next day.
    assert in_window(window, utc(2024, 7, 1, 7, 30), tz=BERLIN) == utc(2024, 7, 2, 6, 0)
    # 12:30 UTC is 08:30 in New York: inside.
    assert in_window(window, utc(2024, 7, 1, 12, 30), tz=NEW_YORK) == utc(2024, 7, 1, 12, 30)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        in_window(ALL_DAY, datetime(2024, 1, 1), tz=UTC)
    with pytest.raises(ValueError, match="now must be"):
        initial_due(spec(timedelta(minutes=1)), last_anchor=None, now=datetime(2024, 1, 1), tz=UTC)


# --- DST -----------------------------------------------------------------------------------------------


def test_window_start_inside_spring_forward_gap_opens_at_the_first_instant_after_it():
    # Berlin, 2024-03-31: 02:00 CET jumps to 03:00 CEST at 01:00 UTC; 02:00-02:59 does not exist.
    window = Window(time(2, 30), time(4, 0))
    result = in_window(window, utc(2024, 3, 30, 22, 0), tz=BERLIN)
    assert result == utc(2024, 3, 31, 1, 0)
    assert wall(result, BERLIN) == (3, 0, 0)


def test_window_wholly_inside_the_gap_opens_at_the_first_instant_after_it():
    # A DST gap: the day keeps its window; it opens for the first instant after the gap (like cron).
    window = Window(time(2, 0), time(2, 30))  # never exists on 2024-03-31 in Berlin
    result = in_window(window, utc(2024, 3, 30, 22, 0), tz=BERLIN)
    assert result == utc(2024, 3, 31, 1, 0)
    assert wall(result, BERLIN) == (3, 0, 0)
    # Just after that instant the window is closed again until the next day's opening.
    later = in_window(window, utc(2024, 3, 31, 1, 0, 1), tz=BERLIN)
    assert later == utc(2024, 4, 1, 0, 0)  # 02:00 CEST on April 1st


def test_fall_back_moving_the_clock_back_into_the_window_opens_it():
    # New York, 2024-11-03: 02:00 EDT falls back to 01:00 EST at 06:00 UTC. At 01:45 EDT a 00:30-01:30
    # window is closed; when the clock falls back to 01:00 it is open again.
    window = Window(time(0, 30), time(1, 30))
    t = utc(2024, 11, 3, 5, 45)
    assert wall(t, NEW_YORK) == (1, 45, 0)
    assert in_window(window, t, tz=NEW_YORK) == utc(2024, 11, 3, 6, 0)


@pytest.mark.parametrize(
    "tz, day",
    [
        (BERLIN, datetime(2024, 3, 31)),
        (BERLIN, datetime(2024, 10, 27)),
        (NEW_YORK, datetime(2024, 3, 10)),
        (NEW_YORK, datetime(2024, 11, 3)),
    ],
)
@pytest.mark.parametrize(
    "window",
    [
        Window(time(2, 0), time(4, 0)),
        Window(time(2, 30), time(2, 45)),
        Window(time(1, 0), time(1, 59)),
        Window(time(0, 30), time(1, 30)),
        NIGHT,
        Window(time(3, 0), time(3, 0)),
        ALL_DAY,
    ],
)
def test_in_window_matches_brute_force_around_dst_changes(tz, day, window):
    start = day.replace(tzinfo=UTC) - timedelta(hours=12)
    for step in range(0, 48 * 60, 17):  # every 17 minutes (and a few odd seconds) across two days
        t = start + timedelta(minutes=step, seconds=step % 60)
        result = in_window(window, t, tz=tz)
        assert result >= t
        assert window.contains(result.astimezone(tz).time()) or skipped_opening(window, result, tz), (
            t,
            result,
        )  # check by converting back
        assert result == reference_in_window(window, t, tz), t


@pytest.mark.parametrize(
    "tz, first_day",
    [
        (BERLIN, datetime(2024, 3, 27)),
        (BERLIN, datetime(2024, 10, 23)),
        (NEW_YORK, datetime(2024, 3, 6)),
        (NEW_YORK, datetime(2024, 10, 30)),
    ],
)
def test_daily_task_runs_once_per_local_day_across_dst(tz, first_day):
    task = spec(timedelta(hours=24), Window(time(2, 0), time(4, 0)))
    now = first_day.replace(hour=12, tzinfo=tz).astimezone(UTC)
    due = initial_due(task, last_anchor=None, now=now, tz=tz)
    dues = [due]
    for _ in range(9):
        due = next_after(task, due, tz=tz)
        dues.append(due)
    local_days = [d.astimezone(tz).date() for d in dues]
    assert local_days == [local_days[0] + timedelta(days=i) for i in range(10)]  # no repeat, no gap
    assert all(task.window.contains(d.astimezone(tz).time()) for d in dues)
    assert all(b - a >= timedelta(hours=24) for a, b in zip(dues, dues[1:]))


# --- intervals and catch-up ---------------------------------------------------------------------------


def test_never_ran_is_due_now_when_inside_the_window():
    now = utc(2024, 6, 1, 12, 0, 5)
    assert initial_due(spec(timedelta(hours=1)), last_anchor=None, now=now, tz=UTC) == now


def test_never_ran_outside_the_window_waits_for_the_opening():
    task = spec(timedelta(minutes=5), Window(time(8, 0), time(9, 0)))
    assert initial_due(task, last_anchor=None, now=utc(2024, 6, 1, 9, 1), tz=UTC) == utc(2024, 6, 2, 8, 0)


def test_next_slot_still_ahead_is_kept():
    anchor = utc(2024, 6, 1, 12, 0)
    due = initial_due(spec(timedelta(hours=1)), last_anchor=anchor, now=utc(2024, 6, 1, 12, 20), tz=UTC)
    assert due == utc(2024, 6, 1, 13, 0)


def test_slot_due_exactly_now_is_due_now():
    anchor = utc(2024, 6, 1, 12, 0)
    now = utc(2024, 6, 1, 13, 0)
    assert initial_due(spec(timedelta(hours=1)), last_anchor=anchor, now=now, tz=UTC) == now


def test_catch_up_once_runs_one_catch_up_now_after_a_long_downtime():
    anchor = utc(2024, 6, 1, 12, 0)
    now = utc(2024, 6, 4, 7, 13, 20)  # 67 hourly slots missed
    task = spec(timedelta(hours=1), catch_up=CatchUp.ONCE)
    due = initial_due(task, last_anchor=anchor, now=now, tz=UTC)
    assert due == now
    # After that one run the grid continues from the catch-up's due time, not from the old anchor.
    assert next_after(task, due, tz=UTC) == now + timedelta(hours=1)


def test_catch_up_skip_waits_for_the_next_slot_on_the_grid():
    anchor = utc(2024, 6, 1, 12, 0)
    now = utc(2024, 6, 4, 7, 13, 20)
    task = spec(timedelta(hours=1), catch_up=CatchUp.SKIP)
    assert initial_due(task, last_anchor=anchor, now=now, tz=UTC) == utc(2024, 6, 4, 8, 0)


def test_catch_up_skip_on_a_slot_boundary_is_due_now():
    anchor = utc(2024, 6, 1, 12, 0)
    now = utc(2024, 6, 1, 15, 0)
    task = spec(timedelta(hours=1), catch_up=CatchUp.SKIP)
    assert initial_due(task, last_anchor=anchor, now=now, tz=UTC) == now


def test_catch_up_respects_the_window():
    anchor = utc(2024, 6, 1, 12, 0)
    now = utc(2024, 6, 3, 10, 0)
    window = Window(time(22, 0), time(2, 0))
    once = initial_due(spec(timedelta(hours=1), window, CatchUp.ONCE), last_anchor=anchor, now=now, tz=UTC)
    skip = initial_due(spec(timedelta(hours=5), window, CatchUp.SKIP), last_anchor=anchor, now=now, tz=UTC)
    assert once == utc(2024, 6, 3, 22, 0)
    assert skip == utc(2024, 6, 3, 22, 0)  # grid slot 12:00+5h*k=12:00 on the 3rd, then the opening


def test_future_anchor_after_the_clock_went_back_waits_at_most_one_interval():
    now = utc(2024, 6, 1, 12, 0)
    anchor = utc(2025, 1, 1, 0, 0)  # recorded while the clock was wrong
    due = initial_due(spec(timedelta(minutes=30)), last_anchor=anchor, now=now, tz=UTC)
    assert due == now + timedelta(minutes=30)


def test_fractional_interval_of_half_a_minute():
    task = spec(timedelta(minutes=0.5))
    anchor = utc(2024, 6, 1, 12, 0)
    assert next_after(task, anchor, tz=UTC) == utc(2024, 6, 1, 12, 0, 30)


@pytest.mark.parametrize("every", [timedelta(minutes=0.5), timedelta(minutes=7.3), timedelta(hours=1)])
def test_no_drift_over_a_thousand_steps(every):
    task = spec(every)
    start = utc(2024, 6, 1, 0, 0, 0, 1)
    due = start
    for _ in range(1000):
        due = next_after(task, due, tz=BERLIN)
    assert due == start + 1000 * every


def test_lateness_of_the_actual_start_does_not_shift_the_grid():
    task = spec(timedelta(minutes=10))
    anchor = utc(2024, 6, 1, 12, 0)
    # The run actually started at 12:00:04; the next due time still counts from the due time.
    assert next_after(task, anchor, tz=UTC) == utc(2024, 6, 1, 12, 10)


def test_due_outside_the_window_waits_for_the_opening():
    task = spec(timedelta(minutes=45), Window(time(8, 0), time(17, 0)))
    assert next_after(task, utc(2024, 6, 1, 16, 30), tz=UTC) == utc(2024, 6, 2, 8, 0)
    assert next_after(task, utc(2024, 6, 1, 16, 15), tz=UTC) == utc(2024, 6, 1, 17, 0)


# --- the machine's zone ----------------------------------------------------------------------------------


def test_local_zone_prefers_a_valid_tz_variable(tmp_path):
    missing = tmp_path / "no-localtime"
    assert local_zone(environ={"TZ": "Europe/Berlin"}, localtime=missing) == BERLIN
    assert local_zone(environ={"TZ": ":America/New_York"}, localtime=missing) == NEW_YORK


def test_local_zone_tz_as_a_file_path():
    zone_file = Path("/usr/share/zoneinfo/Europe/Berlin")
    if not zone_file.exists():
        pytest.skip("no system zoneinfo files")
    zone = local_zone(environ={"TZ": f":{zone_file}"})
    assert zone.utcoffset(datetime(2024, 7, 1)) == timedelta(hours=2)


def test_local_zone_falls_back_to_localtime_then_utc(tmp_path):
    zone_file = Path("/usr/share/zoneinfo/America/New_York")
    if not zone_file.exists():
        pytest.skip("no system zoneinfo files")
    link = tmp_path / "localtime"
    link.symlink_to(zone_file)
    zone = local_zone(environ={"TZ": "Not/AZone"}, localtime=link)
    assert zone.utcoffset(datetime(2024, 1, 1)) == timedelta(hours=-5)
    assert str(zone) == "America/New_York"  # keyed by its name, for readable logs
    assert local_zone(environ={}, localtime=tmp_path / "missing") is UTC
    broken = tmp_path / "garbage"
    broken.write_bytes(b"not a tzif file")
    assert local_zone(environ={"TZ": ""}, localtime=broken) is UTC
