"""Scheduling end to end, with a real supervisor process: cron slots, retries, RunAt's `done`.

Nothing sleeps: every wait is on a condition with a deadline (the history, the status). The only timing
assert is the bound of the issue: a `* * * * *` run starts within a second of its minute.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for, write_task

pytestmark = pytest.mark.timeout(180)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def finished_runs(sup: SupervisorProcess, name: str, count: int) -> list[dict[str, Any]] | None:
    runs = sup.history(name)
    return runs if len(runs) >= count and all(r["outcome"] for r in runs) else None


def test_every_minute_cron_task_starts_within_a_second_of_the_minute(tmp_path: Path) -> None:
    write_task(tmp_path / "Tasks", "minutely", config="[Frequency]\nCron = * * * * *\n")
    with SupervisorProcess(tmp_path) as sup:
        task = wait_for(
            lambda: (lambda t: t if t["next_run"] else None)(sup.task_status("minutely")),
            timeout=60,
            what="minutely scheduled",
        )
        assert task["schedule"].startswith("cron '* * * * *'")
        slot = when(task["next_run"])
        assert (slot.second, slot.microsecond) == (0, 0)  # a never-run cron task waits for its slot
        runs = wait_for(lambda: finished_runs(sup, "minutely", 1), timeout=90, what="the first cron run")
    run = runs[-1]
    assert run["trigger"] == "schedule" and run["outcome"] == "ok"
    assert when(run["due"]) == slot
    assert timedelta(0) <= when(run["started"]) - slot < timedelta(seconds=1)


FLAKY_MAIN = """\
from pathlib import Path

def main():
    marker = Path("Tasks/flaky/Output/attempts")
    count = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(count))
    if count == 1:
        raise RuntimeError("first attempt fails")
    return f"attempt {count} passed"
"""


def test_failing_then_passing_task_is_retried_as_its_own_history_row(tmp_path: Path) -> None:
    write_task(
        tmp_path / "Tasks",
        "flaky",
        main=FLAKY_MAIN,
        config="[Frequency]\nEveryXMinutes = 600\n[Retry]\nAttempts = 2\nDelaySeconds = 1\n",
    )
    with SupervisorProcess(tmp_path) as sup:
        runs = wait_for(lambda: finished_runs(sup, "flaky", 2), timeout=90, what="the retried attempt")
        task = sup.task_status("flaky")
    retry, first = runs[0], runs[1]  # newest first
    assert (first["trigger"], first["outcome"], first["attempt"], first["retry_of"]) == ("schedule", "failed", 1, None)
    assert (retry["trigger"], retry["outcome"], retry["attempt"], retry["retry_of"]) == (
        "retry",
        "ok",
        2,
        first["run_id"],
    )
    assert when(retry["started"]) >= when(first["finished"]) + timedelta(seconds=1)  # DelaySeconds
    assert len(runs) == 2  # the ok attempt is final: no third attempt
    # The retry did not move the schedule: the next slot is one interval after the first attempt's due time.
    assert when(task["next_run"]) == when(first["due"]) + timedelta(minutes=600)
    assert task["consecutive_failures"] == 0


def test_run_at_task_is_done_after_its_last_time(tmp_path: Path) -> None:
    write_task(tmp_path / "Tasks", "once", config="[Frequency]\nRunAt = 2020-01-01 00:00\nTimeZone = UTC\n")
    with SupervisorProcess(tmp_path) as sup:
        runs = wait_for(lambda: finished_runs(sup, "once", 1), timeout=60, what="the catch-up of the RunAt")
        task = wait_for(
            lambda: (lambda t: t if t["state"] == "done" else None)(sup.task_status("once")),
            timeout=30,
            what="state done",
        )
    assert [r["outcome"] for r in runs] == ["ok"]  # missed while down, CatchUp=once: one run
    assert task["next_run"] is None and task["schedule"].startswith("once at 2020-01-01 00:00")
