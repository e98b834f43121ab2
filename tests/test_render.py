"""Pure pieces of the CLI: rendering (times with zones, widths, colour), home choice, --since, log following."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from supervisor.cli.args import parse_since
from supervisor.cli.follow import LogFollower
from supervisor.cli.home import HomeError, choose_home, ensure_home
from supervisor.cli.render import (
    Column,
    View,
    cut,
    fit_widths,
    format_time,
    render_status,
    wants_colour,
)

NOW = datetime(2026, 11, 29, 15, 30, tzinfo=timezone.utc)
UTC_VIEW = View(now=NOW, utc=True)


def test_times_carry_their_zone_and_the_date_when_not_today() -> None:
    assert format_time("2026-11-29T09:05:07+00:00", UTC_VIEW) == "09:05:07 UTC"
    assert format_time("2026-11-29T09:05:07+01:00", UTC_VIEW) == "08:05:07 UTC"  # converted, not relabelled
    assert format_time("2026-11-30T00:10:00+00:00", UTC_VIEW) == "Nov 30 00:10 UTC"
    assert format_time("2025-12-31T23:59:00+00:00", UTC_VIEW) == "2025-12-31 23:59 UTC"
    assert format_time(None, UTC_VIEW) == "-"


def test_widths_shrink_the_lowest_priority_first_and_never_below_the_minimum() -> None:
    columns = [Column("NAME", 6, 0), Column("STATE", 5, 1), Column("WHEN")]
    rows = [["a" * 30, "scheduled", "12:00:00 UTC"]]
    natural = fit_widths(columns, rows, width=200)
    assert natural == [30, 9, 12]
    assert fit_widths(columns, rows, width=40) == [40 - 4 - 9 - 12, 9, 12]  # only NAME is cut
    assert fit_widths(columns, rows, width=10) == [6, 5, 12]  # cannot fit: every column at its minimum
    assert cut("abcdef", 4) == "abc…" and cut("abc", 4) == "abc" and cut("abc", 0) == ""


def test_status_rendering_orders_errors_before_why_and_filters_plain_tasks() -> None:
    last = {
        "run_id": "r",
        "started": "2026-11-29T15:00:00+00:00",
        "finished": "2026-11-29T15:00:01+00:00",
        "outcome": "ok",
        "duration_s": 1.0,
        "exit_code": 0,
        "message": None,
    }
    doc = {
        "supervisor": {"pid": 7, "started": "2026-11-29T14:00:00+00:00", "home": "/h"},
        "tasks": [
            {
                "name": "plain",
                "state": "scheduled",
                "next_run": "2026-11-29T16:00:00+00:00",
                "last_run": last,
                "error": None,
                "why": "every 60 min since its last due time 2026-11-29 15:00:00 UTC",
            },
            {
                "name": "new",
                "state": "scheduled",
                "next_run": "2026-11-29T16:00:00+00:00",
                "last_run": None,
                "error": None,
                "why": "never ran: first run as soon as it is inside its window",
            },
            {
                "name": "bad",
                "state": "error",
                "next_run": None,
                "last_run": None,
                "error": "task 'bad': config.ini: [Frequency] EveryXMinutes = 'x': not a positive number",
                "why": "not scheduled until its files change (see error)",
            },
        ],
    }
    lines = render_status(doc, UTC_VIEW, home="/h")
    assert lines[0] == "supervisor: running (pid 7, since 2026-11-29 14:00:00 UTC)"
    assert lines.index("task 'bad': config.ini: [Frequency] EveryXMinutes = 'x': not a positive number") < lines.index(
        "why:"
    )
    assert lines[lines.index("why:") + 1 :] == ["  new: never ran: first run as soon as it is inside its window"]
    full = render_status(doc, UTC_VIEW, home="/h", why_all=True)
    assert [line.split(":")[0].strip() for line in full[full.index("why:") + 1 :]] == ["plain", "new", "bad"]
    offline = render_status({**doc, "supervisor": None}, UTC_VIEW, home="/h")
    assert offline[0] == "supervisor: not running on /h" and "why:" not in offline
    busy = {"supervisor_running": True, "pid": 7, "reason": "the supervisor did not answer 'status' within 10 s"}
    unanswered = render_status({**doc, "supervisor": None, "offline": busy}, UTC_VIEW, home="/h")
    assert unanswered[0] == "supervisor: running (pid 7) but did not answer; states unknown, figures from the history"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert wants_colour(_Terminal(), {}) is True
    assert wants_colour(_Terminal(), {"NO_COLOR": "1"}) is False
    assert wants_colour(_Terminal(), {"NO_COLOR": ""}) is True  # no-color.org: only a non-empty value counts
    assert wants_colour(_Terminal(), {"TERM": "dumb"}) is False
    assert wants_colour(io.StringIO(), {}) is False


def test_home_choice_order(tmp_path: Path) -> None:
    flag, env, cwd, script = (tmp_path / n for n in ("flag", "env", "cwd", "script"))
    cwd.mkdir()
    environ = {"TASKAUTOMATION_HOME": str(env)}
    assert choose_home(str(flag), environ=environ, cwd=cwd, default=script).path == flag
    assert choose_home(None, environ=environ, cwd=cwd, default=script).source == "TASKAUTOMATION_HOME"
    assert choose_home(None, environ={"TASKAUTOMATION_HOME": ""}, cwd=cwd, default=script).path == script
    with pytest.raises(HomeError, match="no home found"):
        choose_home(None, environ={}, cwd=cwd, default=None)
    (cwd / "Tasks").mkdir()
    assert choose_home(None, environ={}, cwd=cwd, default=None).path == cwd
    assert choose_home("rel", environ={}, cwd=cwd, default=None).path == cwd / "rel"  # relative to the cwd

    missing = choose_home(str(tmp_path / "new" / "home"), environ={}, cwd=cwd, default=None)
    with pytest.raises(HomeError, match="does not exist"):
        ensure_home(missing, may_create=False)
    assert ensure_home(missing, may_create=True) == f"created the home {missing.path} (from --home)"
    assert missing.path.is_dir() and ensure_home(missing, may_create=False) is None


def test_since_accepts_dates_times_and_ages() -> None:
    assert parse_since("2026-11-01T08:00+01:00", now=NOW) == datetime(2026, 11, 1, 7, tzinfo=timezone.utc)
    assert parse_since("2026-11-01T07:00Z", now=NOW) == datetime(2026, 11, 1, 7, tzinfo=timezone.utc)
    assert parse_since("90m", now=NOW) == NOW - timedelta(minutes=90)
    assert parse_since("7d", now=NOW) == NOW - timedelta(days=7)
    local = parse_since("2026-11-01", now=NOW)
    assert local.tzinfo is not None and local.replace(tzinfo=None) == datetime(2026, 11, 1)


def test_follower_reads_every_line_once_across_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    log.write_text("before\n")
    with LogFollower(log) as follower:
        assert follower.read_lines() == []  # starts at the end
        with open(log, "a") as f:
            f.write("one\ntw")
        assert follower.read_lines() == ["one"]  # a partial line waits for its newline
        with open(log, "a") as f:
            f.write("o\nthree\n")
        log.rename(tmp_path / "t.log.1")  # what RotatingFileHandler does
        log.write_text("four\n")
        assert follower.read_lines() == ["two", "three", "four"]
        with open(log, "a") as f:
            f.write("five\n")
        assert follower.read_lines() == ["five"]
    late = tmp_path / "late.log"
    with LogFollower(late) as follower:
        assert follower.read_lines() == []
        late.write_text("first\n")
        assert follower.read_lines() == ["first"]  # created after the follower: read from its start
