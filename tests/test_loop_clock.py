"""Steps of the wall clock inside the loop, on a fake clock whose wall time jumps while monotonic time does not
(tests/support/loop_harness.py): after a backward step no task waits more than one interval counted in real
time from its last start (or, for Cron, its next slot on the new clock), detection included; a forward step
catches up once. No processes, no sleeps.
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import START, Harness, started_harness

from supervisor.model import Outcome

pytestmark = pytest.mark.timeout(30)
HOUR = 3600.0


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with started_harness(tmp_path / "home") as harness:
        yield harness


def first_run_done(h: Harness, *, every: float, outcome: Outcome = Outcome.OK, extra: str = "") -> None:
    h.write("t", every=every, extra=extra)
    h.settle()
    h.executor.finish(h.executor.live_main("t"), outcome)
    h.settle()


def starts_after(h: Harness, seconds: float) -> None:
    """Real time passes (wall and monotonic alike): nothing starts before ``seconds``, the run starts then."""
    before = len(h.executor.mains("t"))
    h.tick(seconds - 0.25)
    assert len(h.executor.mains("t")) == before, f"started before {seconds} s"
    h.tick(0.25)
    assert len(h.executor.mains("t")) == before + 1, f"not started after {seconds} s"


@pytest.mark.parametrize("after_s", [1.0, 30.0, 59.0])
def test_after_a_backward_step_an_interval_task_keeps_its_real_time_cadence(h: Harness, after_s: float) -> None:
    first_run_done(h, every=1)
    h.tick(after_s)
    h.clock.step_wall(-HOUR)
    h.settle()
    assert datetime.fromisoformat(h.task("t")["next_run"]) == START + timedelta(seconds=60 - HOUR)
    starts_after(h, 60 - after_s)
    (row,) = [r for r in h.rows("t") if r.run_id == h.executor.mains("t")[-1].run_id]
    assert row.due == START + timedelta(seconds=60 - HOUR), "due on the stepped clock, one minute on"


def test_a_step_during_the_loops_sleep_is_handled_when_it_wakes_at_the_due_time(h: Harness) -> None:
    first_run_done(h, every=1)
    h.tick(20)
    sleep = h.sup.sleep_for()
    assert sleep == pytest.approx(40)
    h.clock.step_wall(-HOUR)  # while it sleeps
    h.clock.advance(sleep)
    h.settle()  # the wake at the due time notices the step
    assert h.state("t") == "running", "no wait beyond the interval"


def test_a_step_just_after_the_turns_check_cannot_stretch_the_sleep(h: Harness) -> None:
    first_run_done(h, every=0.05)  # 3 s
    h.clock.step_wall(-HOUR)  # after the turn's look at the clock, before the loop computes its sleep
    assert h.sup.sleep_for() == pytest.approx(3), "the sleep ends at the due time, not an hour and then some"
    h.clock.advance(3)
    h.settle()
    assert h.state("t") == "running"


def test_a_backward_step_keeps_a_pending_retry_in_real_time(h: Harness) -> None:
    first_run_done(h, every=1, outcome=Outcome.FAILED, extra="[Retry]\nAttempts = 1\nDelaySeconds = 20\n")
    h.tick(5)
    h.clock.step_wall(-HOUR)
    h.settle()
    assert "attempt 2" in h.task("t")["why"], "the retry is not dropped"
    starts_after(h, 15)


def test_a_backward_step_keeps_a_damped_tasks_next_try_in_real_time(h: Harness) -> None:
    first_run_done(h, every=1, outcome=Outcome.FAILED, extra="[Global]\nFailureBackoffAfter = 1\n")
    assert h.state("t") == "backing-off"
    assert h.task("t")["next_run"] == (START + timedelta(minutes=2)).isoformat()
    h.tick(30)
    h.clock.step_wall(-HOUR)
    h.settle()
    assert h.state("t") == "backing-off"
    starts_after(h, 90)


def test_after_a_backward_step_a_cron_task_runs_at_its_next_slot_on_the_new_clock(h: Harness) -> None:
    h.write("t")
    h.paths.task_config("t").write_text(textwrap.dedent("[Frequency]\nCron = */15 * * * *\nTimeZone = UTC\n"))
    h.settle()
    assert h.task("t")["next_run"] == (START + timedelta(minutes=15)).isoformat()
    h.tick(15 * 60)
    h.executor.finish(h.executor.live_main("t"))
    h.tick(5 * 60)
    h.clock.step_wall(-HOUR)  # 10:20 -> 09:20
    h.settle()
    assert h.task("t")["next_run"] == (START + timedelta(minutes=30) - timedelta(hours=1)).isoformat()
    starts_after(h, 10 * 60)
