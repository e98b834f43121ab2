"""run-now with parameters through the loop (fake clock, fake executor): the executor gets the real values for
that one run, its history row shows them (masked where the key is in a .env or looks like a secret), a run
promised to a loading task and a start retried after a transient failure keep them, the next scheduled run
has none."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from supervisor.errors import SpawnError
from supervisor.model import RunMode, Trigger
from tests.support.loop_harness import Harness, started_harness

pytestmark = pytest.mark.timeout(30)

ENV = {"REGION": "eu-west-1", "API_TOKEN": "tok-123456", "DB_URL": "postgres://override"}
REAL = (("API_TOKEN", "tok-123456"), ("DB_URL", "postgres://override"), ("REGION", "eu-west-1"))
SHOWN = (("API_TOKEN", "***"), ("DB_URL", "***"), ("REGION", "eu-west-1"))


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with started_harness(tmp_path / "home") as harness:
        yield harness


def test_params_reach_that_run_only_and_its_row_shows_them_masked(h: Harness) -> None:
    h.write("t", every=60)
    (h.paths.task_dir("t") / ".env").write_text("DB_URL=postgres://from-dotenv\n")
    h.settle()
    scheduled = h.executor.live_main("t")  # never ran: due at once
    h.executor.finish(scheduled)
    h.settle()
    reply = h.request("run-now", name="t", env=ENV)
    assert reply["ok"], reply
    (manual,) = [r for r in h.executor.mains("t") if r.trigger is Trigger.MANUAL]
    assert manual.params == REAL, "the executor gets the real values"
    h.executor.finish(manual.run_id)
    h.settle()
    h.tick(3600)
    later = h.executor.live_main("t")
    h.executor.finish(later)
    h.settle()
    rows = {r.run_id: r for r in h.rows("t")}
    assert rows[manual.run_id].params == SHOWN, "API_TOKEN looks like a secret, DB_URL is in the task's .env"
    assert rows[scheduled].params == () and rows[later].params == ()
    assert [r.params for r in h.executor.mains("t") if r.run_id != manual.run_id] == [(), ()]


def test_a_bad_parameter_is_refused_and_starts_nothing(h: Harness) -> None:
    h.write("t", every=60)
    h.settle()
    h.executor.finish(h.executor.live_main("t"))
    h.settle()
    reply = h.request("run-now", name="t", env={"TASK_RUN_ID": "mine"})
    assert reply["ok"] is False and reply["code"] == "bad-request" and "'TASK_RUN_ID': reserved" in reply["error"]
    assert [r.trigger for r in h.executor.mains("t")] == [Trigger.SCHEDULE]


def test_a_promised_run_and_a_retried_start_keep_their_params(h: Harness) -> None:
    h.executor.init_outcome = None  # initialize() stays in flight: the run-now is promised
    h.write("t", every=60, extra="[Global]\nRunOnStartup = False\n")
    h.settle()
    init = next(r.run_id for r in h.executor.live.values() if r.mode is RunMode.INITIALIZE)
    reply = h.request("run-now", name="t", env=ENV)
    assert reply["waiting_for"] == "initializing"
    h.executor.fail_next = (RunMode.MAIN, SpawnError("task 't': cannot start: Too many open files", transient=True))
    h.executor.finish(init)
    h.settle()
    manual = [r for r in h.executor.mains("t") if r.trigger is Trigger.MANUAL]
    assert manual == [], "its first start failed transiently: it backs off"
    h.tick(3)
    (manual_request,) = [r for r in h.executor.mains("t") if r.trigger is Trigger.MANUAL]
    assert manual_request.run_id == reply["run_id"] and manual_request.params == REAL
    h.executor.finish(manual_request.run_id)
    h.settle()
    row = next(r for r in h.rows("t") if r.run_id == reply["run_id"])
    assert row.params == (("API_TOKEN", "***"), ("DB_URL", "postgres://override"), ("REGION", "eu-west-1"))
