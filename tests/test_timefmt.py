"""The one wording of durations and relative times, shared by the CLI and the dashboard (pure)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from supervisor.query.timefmt import duration, relative, span

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (245, "4 min 5 s"),
        (3600, "1 h"),
        (7500, "2 h 5 min"),
        (86400, "1 day"),
        (86400 + 3599, "1 day"),  # the smaller unit is rounded down, never up
        (3 * 86400 + 4 * 3600, "3 days 4 h"),
    ],
)
def test_the_ladder_shows_at_most_two_units_and_leaves_a_zero_one_out(seconds: int, text: str) -> None:
    assert span(seconds) == text


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "-"),
        ("1.0", "-"),  # a template's odd value, not a number
        (True, "-"),
        (0.0123, "0.01 s"),
        (9.994, "9.99 s"),
        (9.999, "10.0 s"),  # rounding moves it up a precision, not into "10.00 s"
        (12.34, "12.3 s"),
        (59.97, "1 min"),  # never "60.0 s" or "0 min 60 s"
        (65, "1 min 5 s"),
        (119.7, "2 min"),
        (125, "2 min 5 s"),
        (7322, "2 h 2 min"),
        (90000, "1 day 1 h"),
    ],
)
def test_durations_keep_a_fraction_under_a_minute_and_whole_units_above(seconds: object, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "now"),
        (0.9, "now"),
        (-0.9, "now"),
        (45, "in 45 s"),
        (240, "in 4 min"),
        (299.9, "in 4 min 59 s"),  # rounded down: "in 5 min" only once five minutes are left
        (3600, "in 1 h"),
        (7500, "in 2 h 5 min"),
        (86400, "in 1 day"),
        (3 * 86400 + 4 * 3600, "in 3 days 4 h"),
        (-5, "5 s ago"),
        (-3 * 3600, "3 h ago"),
        (-(2 * 86400 + 60), "2 days ago"),
    ],
)
def test_relative_times_say_in_or_ago(seconds: float, text: str) -> None:
    assert relative(timedelta(seconds=seconds)) == text
