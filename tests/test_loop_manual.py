"""run-now through the loop (fake clock, fake executor): a task still loading is promised its run, which
starts once the task is loaded or is recorded as never started; every refusal has its reason and code."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import Harness, started_harness

from supervisor.model import Outcome, RunMode, Trigger

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with started_harness(tmp_path / "home") as harness:
        harness.executor.init_outcome = None  # initialize() stays in flight until the test ends it
        yield harness


def init_run(h: Harness, task: str) -> str:
    return next(r.run_id for r in h.executor.live.values() if r.task == task and r.mode is RunMode.INITIALIZE)


def test_a_run_now_while_initializing_is_accepted_and_starts_once_the_task_is_loaded(h: Harness) -> None:
    h.write("t", every=60)
    h.settle()
    assert h.state("t") == "initializing"
    reply = h.request("run-now", name="t")
    assert reply == {"ok": True, "run_id": reply["run_id"], "waiting_for": "initializing"}
    assert h.request("run-now", name="t")["run_id"] == reply["run_id"], "a second request: the same promise"
    assert h.executor.mains("t") == []
    h.executor.finish(init_run(h, "t"))
    h.settle()
    manual = [r for r in h.executor.mains("t") if r.trigger is Trigger.MANUAL]
    assert [r.run_id for r in manual] == [reply["run_id"]]
    h.executor.finish(reply["run_id"])
    h.settle()
    (row,) = [r for r in h.rows("t") if r.trigger is Trigger.MANUAL]
    assert row.run_id == reply["run_id"] and row.outcome is Outcome.OK
    assert len(h.sup.runs.promised) == 0


def test_a_promise_the_task_cannot_keep_is_recorded_as_never_started(h: Harness) -> None:
    h.write("t", every=60)
    h.settle()
    run_id = h.request("run-now", name="t")["run_id"]
    h.executor.finish(init_run(h, "t"), Outcome.FAILED, message="initialize() raised ValueError: no token")
    h.settle()
    assert h.state("t") == "error"
    (row,) = h.rows("t")
    assert row.run_id == run_id and row.outcome is Outcome.KILLED and row.trigger is Trigger.MANUAL
    assert row.message is not None and row.message.startswith("never started: the task did not load (error")
    assert h.executor.mains("t") == []
    assert h.facts == [], "not a failure of the task: no notice, no failure streak"


def test_a_promise_is_recorded_as_never_started_when_the_supervisor_stops(h: Harness) -> None:
    h.write("t", every=60)
    h.settle()
    run_id = h.request("run-now", name="t")["run_id"]
    assert h.request("stop")["ok"]
    (row,) = h.rows("t")
    assert row.run_id == run_id and row.outcome is Outcome.KILLED
    assert row.message == "never started: the supervisor stopped"


def test_a_removed_task_drops_its_promise(h: Harness) -> None:
    h.write("t", every=60)
    h.settle()
    run_id = h.request("run-now", name="t")["run_id"]
    for file in h.paths.task_dir("t").iterdir():
        file.unlink()
    h.paths.task_dir("t").rmdir()
    h.settle()
    (row,) = h.rows("t")
    assert row.run_id == run_id and row.outcome is Outcome.KILLED and "disappeared" in (row.message or "")


def test_refusals_name_their_reason_and_code(h: Harness) -> None:
    h.executor.init_outcome = Outcome.OK
    h.write("ok", every=60)
    h.write("broken", every=60)
    (h.paths.task_dir("broken") / "config.ini").write_text("[Frequency]\nEveryXMinutes = soon\n")
    h.settle()
    assert h.request("run-now", name="nope") == {
        "ok": False,
        "error": f"no task named 'nope' in {h.paths.tasks}",
        "code": "unknown-task",
    }
    broken = h.request("run-now", name="broken")
    assert broken["code"] == "not-loaded" and broken["error"].startswith("task 'broken' is not loaded (error: ")
    assert h.state("ok") == "running"  # its first run (never ran: due at once)
    running = h.request("run-now", name="ok")
    assert running["code"] == "running" and "already running" in running["error"]
