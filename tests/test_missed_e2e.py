"""Missed runs with the real parts: a real supervisor process runs a 3-second task, is stopped across several
of its slots and started again; the history then holds exactly one ``missed`` row for the outage, with the
right count and span, ``history --outcome missed`` finds it and ``taskautomation metrics`` counts its slots.

Nothing sleeps: every wait is on a condition with a deadline (the wall clock passing the slots, the history).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.support.harness import SupervisorProcess, cli
from tests.support.helpers import wait_for, write_task

pytestmark = pytest.mark.timeout(180)
EVERY = timedelta(seconds=3)
CONFIG = "[Frequency]\nEveryXMinutes = 0.05\nCatchUp = skip\n"


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def scheduled(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r["trigger"] == "schedule" and r["outcome"] not in (None, "missed")]


def test_a_stop_and_restart_across_slots_leaves_one_missed_row_with_its_count_and_span(tmp_path: Path) -> None:
    write_task(tmp_path / "Tasks", "tick", config=CONFIG)
    with SupervisorProcess(tmp_path) as sup:
        wait_for(lambda: scheduled(sup.history("tick")) or None, timeout=60, what="a first scheduled run")
        assert sup.stop() == 0
    before = sup.history("tick")
    anchor = max(when(r["due"]) for r in scheduled(before))
    assert [r for r in before if r["outcome"] == "missed"] == [], "no miss while it ran"
    down_until = time.time() + 4 * EVERY.total_seconds()  # at least three slots pass while it is down
    wait_for(lambda: time.time() >= down_until, timeout=30, what="the outage to span several slots")

    sup = SupervisorProcess(tmp_path)
    with sup:
        after = wait_for(
            lambda: (lambda runs: runs if [r for r in scheduled(runs) if when(r["due"]) > anchor] else None)(
                sup.history("tick")
            ),
            timeout=60,
            what="the first scheduled run after the restart",
        )
        (row,) = [r for r in after if r["outcome"] == "missed"]
        resumed = min(when(r["due"]) for r in scheduled(after) if when(r["due"]) > anchor)
        expected = round((resumed - anchor) / EVERY) - 1  # CatchUp=skip: every slot in between was missed
        assert expected >= 3
        assert (row["reason"], row["slots"], row["trigger"]) == ("down", expected, "schedule")
        assert when(row["due"]) == anchor + EVERY and when(row["finished"]) == resumed - EVERY
        assert f"{expected} slots from" in row["message"] and "while the supervisor was down" in row["message"]
        assert sup.task_status("tick")["consecutive_failures"] == 0

    only = cli(tmp_path, "history", "tick", "--outcome", "missed", "--json")
    assert only.returncode == 0, only.stderr
    assert '"outcome": "missed"' in only.stdout and only.stdout.count('"run_id"') == 1
    metrics = cli(tmp_path, "metrics")
    assert metrics.returncode == 0, metrics.stderr
    line = next(
        line
        for line in metrics.stdout.splitlines()
        if line.startswith("taskautomation_missed_runs_total{") and 'reason="down"' in line
    )
    assert 'task="tick"' in line and float(re.split(r"\s+", line)[-1]) == expected
