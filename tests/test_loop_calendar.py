"""SkipDates inside the loop, on a fake clock and a fake executor (tests/support/loop_harness.py): a slot on a
skipped date does not run and leaves no row, ``status`` shows the next run after the skipped dates and
``why`` names them. No processes, no sleeps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import START, Harness, started_harness

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with started_harness(tmp_path / "home") as harness:
        yield harness


def test_slots_on_skipped_dates_do_not_run_and_leave_no_row(h: Harness) -> None:
    assert START.date().isoformat() == "2026-03-02"
    h.write("t", every=60, extra="SkipDates = 2026-03-02, 03-03\n")
    h.settle()
    resume = datetime(2026, 3, 4, tzinfo=timezone.utc)
    task = h.task("t")
    assert task["next_run"] == resume.isoformat()
    assert "skips 2026-03-02 (SkipDates 2026-03-02), 2026-03-03 (SkipDates 03-03)" in task["why"]
    assert "except SkipDates 2026-03-02, 03-03" in task["schedule"]
    h.tick((resume - START - timedelta(seconds=1)).total_seconds())
    assert h.executor.mains("t") == [] and h.rows("t") == []
    h.tick(1)
    assert len(h.executor.mains("t")) == 1


def test_run_now_on_a_skipped_date_still_runs(h: Harness) -> None:
    h.write("t", every=60, extra="SkipDates = 2026-03-02\n")
    h.settle()
    reply = h.request("run-now", name="t")
    assert reply["ok"], reply
    assert len(h.executor.mains("t")) == 1
