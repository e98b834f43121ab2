"""The loop's side of notifications, on a fake clock and a fake executor (tests/support/loop_harness.py):
run-started listeners, the task spec on run facts, home-wide [Notify] defaults, and the loop's health."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import Harness, started_harness

from supervisor.model import HomeConfig, Outcome, RunStarted
from supervisor.model import NotifyEvent, NotifySettings

pytestmark = pytest.mark.timeout(60)
HOME_URL = "json://127.0.0.1:9/home"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    home_config = HomeConfig(notify=NotifySettings(urls=(HOME_URL,), after_failures=3))
    with started_harness(tmp_path / "home", home_config=home_config) as harness:
        yield harness


def test_run_started_listeners_and_run_facts_carry_the_spec_with_home_defaults(h: Harness) -> None:
    started: list[RunStarted] = []

    def broken(fact: RunStarted) -> None:
        raise RuntimeError("a listener bug")

    h.sup.facts.start_listeners = (broken, started.append)  # a failing listener must not stop the others or the run
    h.write("t", extra="[Notify]\nOn = failure, success\n")
    h.settle()
    run_id = h.executor.live_main("t")
    assert [(f.task, f.run_id) for f in started] == [("t", run_id)]
    notify = started[0].spec.notify
    assert notify.urls == (HOME_URL,) and notify.after_failures == 3  # from taskautomation.ini
    assert notify.on == {NotifyEvent.FAILURE, NotifyEvent.SUCCESS}  # the task's own key wins
    h.executor.finish(run_id, Outcome.FAILED, message="boom")
    h.settle()
    [fact] = h.facts
    assert fact.spec is not None and fact.spec.notify == notify and fact.consecutive_failures == 1


def test_health_reports_a_loop_that_stopped_turning(h: Harness) -> None:
    h.settle()
    assert h.sup.health() is None
    h.clock.advance(1000)  # no turn for 1000 s: the heartbeat must be withheld
    assert h.sup.health() == "the loop has not turned for 1000 s"
    h.settle()
    assert h.sup.health() is None
