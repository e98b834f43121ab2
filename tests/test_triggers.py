"""Triggers on fake instants: cron across both 2026 Berlin DST edges, zones, windows, jitter, RunAt, catch-up.

Nothing here sleeps or reads the clock: ``now`` is an argument. Expected times are written as wall-clock
times with their offset, so a failure shows what a user would see.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from supervisor.model import CatchUp, TaskSpec, Window
from supervisor.scheduling.triggers import (
    CronTrigger,
    IntervalTrigger,
    Jittered,
    RunAtTrigger,
    jitter_offset,
    trigger_for,
    upcoming,
)
from supervisor.scheduling.windows import initial_due

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(text: str) -> datetime:
    """An aware instant from ISO text with an offset, e.g. '2026-03-29T03:00+02:00'."""
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None
    return parsed.astimezone(UTC)


def shown(times: list[datetime], tz=BERLIN) -> list[str]:
    return [t.astimezone(tz).strftime("%m-%d %H:%M%z") for t in times]


def cron(
    expression: str,
    *,
    window: Window = Window(),
    catch_up: CatchUp = CatchUp.ONCE,
    zone: str | None = "Europe/Berlin",
    jitter_s: float = 0.0,
    name: str = "t",
):
    spec = TaskSpec(name=name, cron=expression, window=window, catch_up=catch_up, time_zone=zone, jitter_s=jitter_s)
    return trigger_for(spec, tz=UTC)  # the machine zone is UTC: the task's TimeZone must win


def walk(trigger, *, start: datetime, until: datetime) -> list[datetime]:
    """Due times from ``start`` to ``until``, each computed from the last as the loop does."""
    found: list[datetime] = []
    due = trigger.next_due(anchor=None, now=start)
    while due is not None and due < until:
        found.append(due)
        due = trigger.next_due(anchor=due, now=due)
    return found


# --- cron and DST (Europe/Berlin 2026: 03-29 02:00 CET -> 03:00 CEST; 10-25 03:00 CEST -> 02:00 CET) ------


def test_daily_cron_in_the_skipped_hour_runs_once_right_after_the_gap():
    dues = walk(cron("30 2 * * *"), start=at("2026-03-27T12:00+01:00"), until=at("2026-04-01T00:00+02:00"))
    assert shown(dues) == ["03-28 02:30+0100", "03-29 03:00+0200", "03-30 02:30+0200", "03-31 02:30+0200"]


def test_daily_cron_in_the_repeated_hour_runs_exactly_once():
    dues = walk(cron("30 2 * * *"), start=at("2026-10-24T12:00+02:00"), until=at("2026-10-28T00:00+01:00"))
    assert shown(dues) == ["10-25 02:30+0200", "10-26 02:30+0100", "10-27 02:30+0100"]
    assert len([d for d in dues if d.astimezone(BERLIN).date().day == 25]) == 1


@pytest.mark.parametrize("day, real_hours", [("2026-03-29", 23), ("2026-10-25", 25)])
def test_hourly_cron_runs_every_real_hour_on_both_dst_days(day, real_hours):
    midnight = datetime.fromisoformat(day).replace(tzinfo=BERLIN)
    next_midnight = (midnight + timedelta(days=1)).replace(tzinfo=BERLIN)
    dues = walk(
        cron("0 * * * *"), start=midnight.astimezone(UTC) - timedelta(seconds=1), until=next_midnight.astimezone(UTC)
    )
    assert len(dues) == real_hours
    # Every real hour, no more, no less: consecutive runs are exactly one hour apart in real time.
    assert all(b - a == timedelta(hours=1) for a, b in zip(dues, dues[1:]))
    assert dues[0] == midnight.astimezone(UTC)


def test_new_york_daily_shorthand_runs_at_local_midnight_across_both_changes():
    trigger = trigger_for(TaskSpec(name="t", cron="0 0 * * *", time_zone="America/New_York"), tz=BERLIN)
    dues = walk(trigger, start=at("2026-03-07T12:00-05:00"), until=at("2026-03-11T12:00-04:00"))
    assert shown(dues, NEW_YORK) == ["03-08 00:00-0500", "03-09 00:00-0400", "03-10 00:00-0400", "03-11 00:00-0400"]
    dues = walk(trigger, start=at("2026-10-31T12:00-04:00"), until=at("2026-11-03T12:00-05:00"))
    assert shown(dues, NEW_YORK) == ["11-01 00:00-0400", "11-02 00:00-0500", "11-03 00:00-0500"]


def test_fixed_cron_started_inside_the_repeated_hour_never_goes_backwards():
    # A RunOnStartup run at 02:10 CET (the second 02:10) anchors there: the 02:30 CEST slot is in the past.
    trigger = cron("30 2 * * *")
    anchor = at("2026-10-25T02:10+01:00")
    assert shown([trigger.next_due(anchor=anchor, now=anchor)]) == ["10-26 02:30+0100"]


def test_never_run_cron_task_waits_for_its_next_slot():
    now = at("2026-06-01T07:31+02:00")
    assert shown([cron("30 7 * * mon-fri").next_due(anchor=None, now=now)]) == ["06-02 07:30+0200"]


def test_cron_with_names_steps_and_lists():
    dues = walk(cron("*/20 9,17 * jun mon"), start=at("2026-06-01T00:00+02:00"), until=at("2026-06-09T00:00+02:00"))
    assert shown(dues) == [
        "06-01 09:00+0200",
        "06-01 09:20+0200",
        "06-01 09:40+0200",
        "06-01 17:00+0200",
        "06-01 17:20+0200",
        "06-01 17:40+0200",
        "06-08 09:00+0200",
        "06-08 09:20+0200",
        "06-08 09:40+0200",
        "06-08 17:00+0200",
        "06-08 17:20+0200",
        "06-08 17:40+0200",
    ]


# --- windows ------------------------------------------------------------------------------------------


def test_window_filters_cron_slots():
    trigger = cron("0 * * * *", window=Window(time(9, 0), time(11, 0)))
    dues = walk(trigger, start=at("2026-06-01T00:00+02:00"), until=at("2026-06-03T00:00+02:00"))
    assert shown(dues) == [
        "06-01 09:00+0200",
        "06-01 10:00+0200",
        "06-01 11:00+0200",
        "06-02 09:00+0200",
        "06-02 10:00+0200",
        "06-02 11:00+0200",
    ]


def test_window_crossing_midnight_filters_slots():
    trigger = cron("0 * * * *", window=Window(time(23, 0), time(1, 0)))
    dues = walk(trigger, start=at("2026-06-01T12:00+02:00"), until=at("2026-06-02T12:00+02:00"))
    assert shown(dues) == ["06-01 23:00+0200", "06-02 00:00+0200", "06-02 01:00+0200"]


def test_cron_window_across_both_dst_edges():
    window = Window(time(1, 0), time(3, 0))
    spring = walk(
        cron("0 * * * *", window=window), start=at("2026-03-29T00:00+01:00"), until=at("2026-03-29T12:00+02:00")
    )
    assert shown(spring) == ["03-29 01:00+0100", "03-29 03:00+0200"]
    autumn = walk(
        cron("0 * * * *", window=window), start=at("2026-10-25T00:00+02:00"), until=at("2026-10-25T12:00+01:00")
    )
    assert shown(autumn) == ["10-25 01:00+0200", "10-25 02:00+0200", "10-25 02:00+0100", "10-25 03:00+0100"]


@pytest.mark.parametrize("expression", ["0 * * * *", "30 2 * * *"])
def test_cron_window_wholly_in_the_skipped_hour_keeps_the_slot_right_after_the_gap(expression):
    trigger = cron(expression, window=Window(time(2, 0), time(2, 45)))
    dues = walk(trigger, start=at("2026-03-28T12:00+01:00"), until=at("2026-03-31T00:00+02:00"))
    assert (
        shown(dues)
        == {
            "0 * * * *": ["03-29 03:00+0200", "03-30 02:00+0200"],
            "30 2 * * *": ["03-29 03:00+0200", "03-30 02:30+0200"],
        }[expression]
    )


def test_cron_whose_slots_never_meet_the_window_has_no_runs():
    trigger = cron("0 3 * * *", window=Window(time(10, 0), time(11, 0)))
    assert trigger.next_due(anchor=None, now=at("2026-06-01T00:00+02:00")) is None


def test_daily_interval_task_never_skips_a_day_at_spring_forward():
    # Spring forward: window 01:00-01:59, every 24 h. 03-29 01:00 CET + 24 real hours is 03-30 02:00 CEST,
    # outside the window: the wall-clock slot 03-30 01:00 CEST is used instead of skipping to 03-31.
    spec = TaskSpec(
        name="t", every=timedelta(hours=24), window=Window(time(1, 0), time(1, 59)), time_zone="Europe/Berlin"
    )
    dues = walk(trigger_for(spec, tz=UTC), start=at("2026-03-27T12:00+01:00"), until=at("2026-04-01T12:00+02:00"))
    assert shown(dues) == [
        "03-28 01:00+0100",
        "03-29 01:00+0100",
        "03-30 01:00+0200",
        "03-31 01:00+0200",
        "04-01 01:00+0200",
    ]


def test_daily_interval_task_runs_once_on_the_fall_back_day():
    spec = TaskSpec(
        name="t", every=timedelta(hours=24), window=Window(time(1, 0), time(1, 59)), time_zone="Europe/Berlin"
    )
    dues = walk(trigger_for(spec, tz=UTC), start=at("2026-10-23T12:00+02:00"), until=at("2026-10-28T12:00+01:00"))
    # 10-25 01:00 CEST + 24 real hours is 10-26 00:00 CET: outside the window, so 01:00 CET, once.
    assert shown(dues) == [
        "10-24 01:00+0200",
        "10-25 01:00+0200",
        "10-26 01:00+0100",
        "10-27 01:00+0100",
        "10-28 01:00+0100",
    ]


def test_window_wholly_in_the_skipped_hour_opens_right_after_the_gap():
    spec = TaskSpec(
        name="t", every=timedelta(hours=24), window=Window(time(2, 0), time(2, 30)), time_zone="Europe/Berlin"
    )
    dues = walk(trigger_for(spec, tz=UTC), start=at("2026-03-27T12:00+01:00"), until=at("2026-03-31T12:00+02:00"))
    assert shown(dues) == ["03-28 02:00+0100", "03-29 03:00+0200", "03-30 02:00+0200", "03-31 02:00+0200"]


# --- catch-up and clock steps ---------------------------------------------------------------------------


def test_cron_slots_missed_while_down_run_once_with_catch_up_once():
    anchor = at("2026-06-01T07:30+02:00")
    now = at("2026-06-04T12:00+02:00")  # three slots missed
    assert cron("30 7 * * *").next_due(anchor=anchor, now=now) == now


def test_cron_slots_missed_while_down_are_skipped_with_catch_up_skip():
    anchor = at("2026-06-01T07:30+02:00")
    now = at("2026-06-04T12:00+02:00")
    due = cron("30 7 * * *", catch_up=CatchUp.SKIP).next_due(anchor=anchor, now=now)
    assert shown([due]) == ["06-05 07:30+0200"]


def test_cron_catch_up_once_waits_for_the_window():
    anchor = at("2026-06-01T09:00+02:00")
    now = at("2026-06-04T20:00+02:00")
    due = cron("0 9 * * *", window=Window(time(8, 0), time(10, 0))).next_due(anchor=anchor, now=now)
    assert shown([due]) == ["06-05 08:00+0200"]


def test_cron_anchor_in_the_future_after_a_backward_clock_step_waits_only_for_the_next_slot():
    anchor = at("2026-06-10T07:30+02:00")  # the clock went back five days
    now = at("2026-06-05T12:00+02:00")
    assert shown([cron("30 7 * * *").next_due(anchor=anchor, now=now)]) == ["06-06 07:30+0200"]


# --- RunAt ----------------------------------------------------------------------------------------------


def run_at(*times: str, catch_up: CatchUp = CatchUp.ONCE, window: Window = Window()):
    spec = TaskSpec(
        name="t",
        run_at=tuple(datetime.fromisoformat(t) for t in times),
        catch_up=catch_up,
        time_zone="Europe/Berlin",
        window=window,
    )
    return trigger_for(spec, tz=UTC)


def test_run_at_future_times_run_once_each_then_no_more():
    trigger = run_at("2026-12-24 18:00", "2026-12-31 23:59")
    dues = walk(trigger, start=at("2026-12-01T00:00+01:00"), until=at("2030-01-01T00:00+01:00"))
    assert shown(dues) == ["12-24 18:00+0100", "12-31 23:59+0100"]
    assert trigger.next_due(anchor=dues[-1], now=dues[-1] + timedelta(days=1)) is None


def test_run_at_missed_with_catch_up_once_runs_once_now_then_the_future_ones():
    trigger = run_at("2026-12-24 18:00", "2026-12-25 18:00", "2026-12-31 12:00")
    now = at("2026-12-26T09:00+01:00")
    assert trigger.next_due(anchor=None, now=now) == now  # the two missed ones: one catch-up
    assert shown([trigger.next_due(anchor=now, now=now)]) == ["12-31 12:00+0100"]


def test_run_at_missed_with_catch_up_skip_is_dropped():
    trigger = run_at("2026-12-24 18:00", "2026-12-31 12:00", catch_up=CatchUp.SKIP)
    now = at("2026-12-26T09:00+01:00")
    assert shown([trigger.next_due(anchor=None, now=now)]) == ["12-31 12:00+0100"]
    assert run_at("2026-12-24 18:00", catch_up=CatchUp.SKIP).next_due(anchor=None, now=now) is None


def test_run_at_after_its_last_time_ran_has_no_more_runs_even_after_a_restart():
    trigger = run_at("2026-12-24 18:00")
    last = at("2026-12-24T18:00+01:00")
    assert trigger.next_due(anchor=last, now=at("2027-02-01T00:00+01:00")) is None


def test_run_at_in_the_skipped_hour_runs_right_after_the_gap_and_in_the_repeated_hour_once():
    trigger = run_at("2026-03-29 02:30", "2026-10-25 02:30")
    dues = walk(trigger, start=at("2026-03-01T00:00+01:00"), until=at("2027-01-01T00:00+01:00"))
    assert shown(dues) == ["03-29 03:00+0200", "10-25 02:30+0200"]


def test_run_at_outside_the_window_waits_for_it():
    trigger = run_at("2026-12-24 06:00", window=Window(time(8, 0), time(9, 0)))
    assert shown([trigger.next_due(anchor=None, now=at("2026-12-01T00:00+01:00"))]) == ["12-24 08:00+0100"]


# --- jitter ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jitter_s", [1, 30, 600, 3600.5])
def test_jitter_is_stable_and_in_range(jitter_s):
    offsets = [jitter_offset(f"task-{i}", jitter_s) for i in range(300)]
    assert all(timedelta(0) <= o < timedelta(seconds=jitter_s) for o in offsets)
    assert offsets == [jitter_offset(f"task-{i}", jitter_s) for i in range(300)]  # same on every call
    assert len(set(offsets)) > 1  # names spread out
    assert jitter_offset("task-1", 0) == timedelta(0)


def test_jitter_is_added_to_every_due_time_and_the_grid_does_not_drift():
    plain = walk(cron("*/10 * * * *"), start=at("2026-06-01T00:00+02:00"), until=at("2026-06-01T02:00+02:00"))
    jittered_trigger = cron("*/10 * * * *", jitter_s=300, name="backup")
    offset = jitter_offset("backup", 300)
    assert offset > timedelta(0)
    jittered = walk(
        jittered_trigger, start=at("2026-06-01T00:00+02:00") + offset, until=at("2026-06-01T02:00+02:00") + offset
    )
    assert len(plain) == 11
    assert jittered == [p + offset for p in plain]


def test_jitter_on_an_interval_task_keeps_the_interval():
    spec = TaskSpec(name="sync", every=timedelta(minutes=15), jitter_s=60)
    trigger = trigger_for(spec, tz=UTC)
    assert isinstance(trigger, Jittered)
    now = at("2026-06-01T00:00+00:00")
    first = trigger.next_due(anchor=None, now=now)
    assert first == now  # never ran: due at once, as without jitter
    assert trigger.next_due(anchor=first, now=first) == first + timedelta(minutes=15)


def test_interval_trigger_is_todays_schedule_unchanged():
    spec = TaskSpec(
        name="t", every=timedelta(minutes=30), window=Window(time(8, 0), time(18, 0)), catch_up=CatchUp.SKIP
    )
    trigger = trigger_for(spec, tz=BERLIN)
    assert isinstance(trigger, IntervalTrigger)
    for anchor in (None, at("2026-06-01T07:00+02:00"), at("2026-05-01T10:00+02:00")):
        now = at("2026-06-01T12:05+02:00")
        assert trigger.next_due(anchor=anchor, now=now) == initial_due(spec, last_anchor=anchor, now=now, tz=BERLIN)


# --- next: one iterator for cron equals the loop's step-by-step computation ----------------------------


@pytest.mark.parametrize(
    "expression, window, jitter_s",
    [
        ("30 2 * * *", Window(), 0),
        ("0 * * * *", Window(time(1, 0), time(3, 0)), 0),
        ("*/7 * * * *", Window(time(22, 0), time(2, 0)), 45),
        ("0 0 29 2 *", Window(), 0),
    ],
)
def test_upcoming_equals_step_by_step_next_due(expression, window, jitter_s):
    trigger = cron(expression, window=window, jitter_s=jitter_s)
    for start in (at("2026-03-28T12:00+01:00"), at("2026-10-24T12:00+02:00")):
        fast = upcoming(trigger, now=start, count=60)
        slow: list[datetime] = []
        due = trigger.next_due(anchor=None, now=start)
        while due is not None and len(slow) < 60:
            slow.append(due)
            due = trigger.next_due(anchor=due, now=due)
        assert fast == slow
        assert fast == sorted(set(fast))


def test_describe_says_the_schedule_in_words():
    assert "02:30" in cron("30 2 * * *").describe() and "Europe/Berlin" in cron("30 2 * * *").describe()
    spec = TaskSpec(name="t", every=timedelta(minutes=90), window=Window(time(8, 0), time(18, 0)))
    assert trigger_for(spec, tz=BERLIN).describe() == "every 90 min, between 08:00 and 18:00 (Europe/Berlin)"
    assert "jitter" in cron("0 * * * *", jitter_s=30).describe()
    assert run_at("2026-12-24 18:00").describe().startswith("once at 2026-12-24 18:00")
    assert isinstance(cron("0 * * * *"), CronTrigger) and isinstance(run_at("2026-12-24 18:00"), RunAtTrigger)
