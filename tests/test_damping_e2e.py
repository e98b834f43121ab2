"""A real supervisor and a task whose main() raises at once: after FailureBackoffAfter failures in a row it is
``backing-off`` in ``status --json`` with the time of its next try, and the console says one line per failure
while the task log keeps the traceback."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.support.harness import SupervisorProcess, cli
from tests.support.helpers import wait_for, write_task

pytestmark = pytest.mark.timeout(90)

CONFIG = """\
[Frequency]
EveryXMinutes = 0.02
[Global]
FailureBackoffAfter = 2
"""  # every 1.2 s; held back from the 2nd failure in a row on: 2.4 s, then 4.8 s, ...


def status_of(home: Path, name: str) -> dict[str, Any]:
    result = cli(home, "status", "--json")
    assert result.returncode == 0, result.stderr
    return next(t for t in json.loads(result.stdout)["tasks"] if t["name"] == name)


def test_a_task_that_raises_at_once_backs_off_and_costs_one_console_line_per_failure(home: Path) -> None:
    write_task(home / "Tasks", "boom", main="def main():\n    raise RuntimeError('boom')\n", config=CONFIG)
    with SupervisorProcess(home) as sup:
        failed = lambda: [r for r in sup.history("boom") if r["outcome"] == "failed"]  # noqa: E731
        wait_for(lambda: len(failed()) >= 3, timeout=60, what=f"three failures\n{sup.log()[-2000:]}")
        task = wait_for(
            lambda: (t := status_of(home, "boom"))["state"] == "backing-off" and t,
            timeout=30,
            what="state backing-off",
        )
        assert task["consecutive_failures"] >= 2
        assert task["why"].startswith(f"backing off after {task['consecutive_failures']} failures in a row")
        next_try = datetime.fromisoformat(task["next_run"])
        last_due = max(datetime.fromisoformat(r["due"]) for r in failed())
        assert (next_try - last_due).total_seconds() >= 2.4 - 0.01, "at least twice the interval after its due time"
        sup.stop()
        console, runs = sup.console_text(), failed()
    assert "skipped" not in {r["outcome"] for r in sup.history("boom")}
    assert console.count("failed in") == len(runs), "one console line per failure"
    assert "started (schedule)" not in console and "started (schedule)" in sup.log(), "a run's start: log file only"
    assert console.count("backing off") == 1, "the console hears of the damping once"
    assert sup.task_log("boom").count("RuntimeError: boom") >= 2 * len(runs), "the task log keeps the traceback"
