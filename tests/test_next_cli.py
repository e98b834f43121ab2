"""`next NAME [--count N] [--from TIME] [--json]`: offline, zone, window and jitter applied.

The command runs in-process through ``cli.main`` (it reads only config.ini), plus once as a subprocess
the way a user types it. ``--from`` pins the reference instant, so every expected time is exact.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from tests.support.harness import cli
from tests.support.helpers import write_task

from supervisor.cli.entry import main
from supervisor.scheduling.triggers import jitter_offset

pytestmark = pytest.mark.timeout(60)


def run(capsys, home: Path, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--home", str(home)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "Tasks").mkdir()
    return tmp_path


def test_next_json_across_the_spring_gap(home: Path, capsys) -> None:
    write_task(home / "Tasks", "nightly", config="[Frequency]\nCron = 30 2 * * *\nTimeZone = Europe/Berlin\n")
    code, out, _ = run(capsys, home, "next", "nightly", "--count", "3", "--from", "2026-03-28T12:00", "--json")
    assert code == 0
    assert json.loads(out) == {
        "task": "nightly",
        "next": ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"],
    }


def test_next_hourly_on_the_fall_back_day_shows_both_two_oclocks(home: Path, capsys) -> None:
    write_task(home / "Tasks", "hourly", config="[Frequency]\nCron = @hourly\nTimeZone = Europe/Berlin\n")
    code, out, _ = run(capsys, home, "next", "hourly", "--count", "4", "--from", "2026-10-25T00:30+02:00", "--json")
    assert code == 0
    assert json.loads(out)["next"] == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_next_human_table_has_offsets_and_relative_times(home: Path, capsys) -> None:
    write_task(
        home / "Tasks",
        "report",
        config="[Frequency]\nCron = */5 * * * *\nAllowedFrom = 09:00\nAllowedTo = 17:00\nTimeZone = America/New_York\n",
    )
    code, out, _ = run(capsys, home, "next", "report", "--count", "3", "--from", "2026-06-01T16:51-04:00")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("report: cron '*/5 * * * *'") and "America/New_York" in lines[0]
    assert lines[1].split() == ["NEXT", "LEFT"]
    assert lines[2].split() == ["Mon", "2026-06-01", "16:55:00", "-0400", "in", "4", "min"]
    assert lines[3].split() == ["Mon", "2026-06-01", "17:00:00", "-0400", "in", "9", "min"]
    # 17:05 is outside the window: the next slot is 09:00 the next morning.
    assert lines[4].split() == ["Tue", "2026-06-02", "09:00:00", "-0400", "in", "16", "h", "9", "min"]


def test_next_applies_the_same_jitter_as_the_loop(home: Path, capsys) -> None:
    write_task(home / "Tasks", "backup", config="[Frequency]\nCron = 0 3 * * *\nTimeZone = UTC\nJitterSeconds = 600\n")
    code, out, _ = run(capsys, home, "next", "backup", "--count", "2", "--from", "2026-06-01T00:00Z", "--json")
    assert code == 0
    offset = jitter_offset("backup", 600)
    expected = [
        datetime.fromisoformat("2026-06-01T03:00+00:00") + offset,
        datetime.fromisoformat("2026-06-02T03:00+00:00") + offset,
    ]
    assert [datetime.fromisoformat(t) for t in json.loads(out)["next"]] == expected


def test_next_interval_task_without_a_zone_uses_the_machine_zone(home: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    write_task(
        home / "Tasks", "poll", config="[Frequency]\nEveryXMinutes = 90\nAllowedFrom = 08:00\nAllowedTo = 10:00\n"
    )
    code, out, _ = run(capsys, home, "next", "poll", "--from", "2026-06-01T07:00", "--json")
    assert code == 0
    assert json.loads(out)["next"] == [
        "2026-06-01T08:00:00+09:00",
        "2026-06-01T09:30:00+09:00",
        "2026-06-02T08:00:00+09:00",
        "2026-06-02T09:30:00+09:00",
        "2026-06-03T08:00:00+09:00",
    ]


def test_next_run_at_lists_the_remaining_times_then_says_no_more(home: Path, capsys) -> None:
    write_task(
        home / "Tasks",
        "xmas",
        config="[Frequency]\nRunAt = 2026-12-24 18:00, 2026-12-31 23:00\nTimeZone = Europe/Berlin\nCatchUp = skip\n",
    )
    code, out, _ = run(capsys, home, "next", "xmas", "--from", "2026-12-25T00:00", "--json")
    assert json.loads(out)["next"] == ["2026-12-31T23:00:00+01:00"]
    code, out, _ = run(capsys, home, "next", "xmas", "--from", "2027-01-01T00:00")
    assert code == 0 and out.splitlines()[-1] == "no more runs"


@pytest.mark.parametrize(
    "args, message",
    [
        (("next", "ghost"), "no task named 'ghost'"),
        (("next", "nightly", "--from", "yesterday"), "--from 'yesterday': not a date-time"),
        (("next", "nightly", "--count", "0"), "--count 0: must be between 1 and"),
    ],
)
def test_next_errors_are_one_line(home: Path, capsys, args, message) -> None:
    write_task(home / "Tasks", "nightly", config="[Frequency]\nCron = 30 2 * * *\n")
    code, out, err = run(capsys, home, *args)
    assert code == 1 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_next_with_a_bad_config_names_the_key(home: Path, capsys) -> None:
    write_task(home / "Tasks", "broken", config="[Frequency]\nCron = 99 * * * *\n")
    code, _, err = run(capsys, home, "next", "broken")
    assert code == 1
    assert "task 'broken'" in err and "[Frequency] Cron = '99 * * * *'" in err


def test_next_as_a_user_types_it(home: Path) -> None:
    write_task(home / "Tasks", "nightly", config="[Frequency]\nCron = @daily\nTimeZone = UTC\n")
    result = cli(home, "next", "nightly", "--count", "2", "--json")
    assert result.returncode == 0, result.stderr
    times = [datetime.fromisoformat(t) for t in json.loads(result.stdout)["next"]]
    assert len(times) == 2 and times[1] - times[0] == timedelta(days=1)
    assert all((t.hour, t.minute, t.utcoffset()) == (0, 0, timedelta(0)) for t in times)
