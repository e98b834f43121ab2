"""How a ``missed`` row is shown (pure functions over records and documents): the status's ``why`` and
``last_run``, the human history's OUTCOME cell and colour, ``--outcome missed``, and the dashboard's hollow
timeline mark that does not count as a failure."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from supervisor.cli.args import _outcome_list
from supervisor.cli.render import OUTCOME_COLOURS, YELLOW, View, plainly_scheduled, render_history
from supervisor.history.timeline import OutcomeBin
from supervisor.history.rows import record_to_json
from supervisor.model import MissedReason, Outcome, RunRecord, Trigger
from supervisor.query.status import last_run_json, missed_why
from supervisor.web.svg import segments, timeline

pytestmark = pytest.mark.timeout(30)
UTC = timezone.utc
T0 = datetime(2026, 3, 2, 10, 1, tzinfo=UTC)


def missed(slots: int, reason: MissedReason = MissedReason.DOWN) -> RunRecord:
    return RunRecord(
        run_id="20260302T100100-abcdef",
        task="t",
        trigger=Trigger.SCHEDULE,
        started=T0,
        due=T0,
        finished=T0 + timedelta(minutes=slots - 1),
        outcome=Outcome.MISSED,
        duration_s=0.0,
        message="m",
        reason=reason,
        slots=slots,
    )


def test_why_names_the_count_the_span_and_the_reason_of_the_newest_missed_row() -> None:
    assert missed_why(missed(12), UTC) == (
        "; missed 12 slots from 2026-03-02 10:01:00 UTC to 2026-03-02 10:12:00 UTC while the supervisor was down"
    )
    assert missed_why(missed(1, MissedReason.GATE), UTC) == (
        "; missed its slot of 2026-03-02 10:01:00 UTC waiting for a start gate to open"
    )
    ok = RunRecord.instant(task="t", trigger=Trigger.SCHEDULE, at=T0, outcome=Outcome.OK, message="", log_path=None)
    assert missed_why(ok, UTC) == "" and missed_why(None, UTC) == ""


def test_last_run_carries_reason_and_slots() -> None:
    shown = last_run_json(missed(3, MissedReason.QUEUE))
    assert shown is not None and (shown["outcome"], shown["reason"], shown["slots"]) == ("missed", "queue", 3)


def test_the_history_table_shows_slots_and_reason_in_yellow() -> None:
    (header, line) = render_history([record_to_json(missed(12))], View(now=T0, utc=True, width=200))
    assert "missed x12 (down)" in line and "OUTCOME" in header
    assert OUTCOME_COLOURS["missed"] == YELLOW
    assert _outcome_list("missed,failed") == [Outcome.MISSED, Outcome.FAILED]


def test_the_timeline_draws_a_missed_slot_hollow_and_not_as_a_failure() -> None:
    bins = [
        OutcomeBin(task="t", bin=0, outcome="missed", count=1, first=T0, last=T0, run_id="r1"),
        OutcomeBin(task="t", bin=0, outcome="ok", count=1, first=T0, last=T0, run_id="r2"),
    ]
    (seg,) = segments(bins)
    assert seg.outcome == "missed", "a miss outweighs a success in its bin, but no failure does"
    failed = OutcomeBin(task="t", bin=0, outcome="failed", count=1, first=T0, last=T0, run_id="r3")
    assert segments([*bins, failed])[0].outcome == "failed"
    svg = str(timeline(["t"], bins[:1], now=T0 + timedelta(hours=1)))
    assert 'class="run o-missed"' in svg, "its own class, without the failure mark"
    css = (Path(__file__).resolve().parent.parent / "supervisor" / "web" / "static" / "app.css").read_text()
    rule = next(line for line in css.splitlines() if line.startswith(".o-missed"))
    assert "fill: none" in rule and "stroke:" in rule, "hollow: an outline only"


def test_status_prints_the_why_of_a_scheduled_task_whose_last_row_is_missed() -> None:
    task = {"state": "scheduled", "error": None, "last_run": last_run_json(missed(2))}
    assert not plainly_scheduled(task)
    assert plainly_scheduled({**task, "last_run": {"outcome": "ok"}})
