"""The loop's side of notifications, on a fake clock and a fake executor (tests/support/loop_harness.py):
run-started listeners, the task spec on run facts, home-wide [Notify] defaults, the loop's health, and the
timed notices (slow, silent) driven by the loop's facts and the fake clock."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import Harness, started_harness

from supervisor.model import HomeConfig, Outcome, RunStarted
from supervisor.model import NotifyEvent, NotifySettings
from supervisor.history.store import HistoryStore
from supervisor.notify.consumer import RunNotifications
from supervisor.notify.message import Origin
from supervisor.notify.model import ChannelJob, Job
from supervisor.notify.notifier import Notifier
from supervisor.notify.timers import history_seeds
from supervisor.service import timed_tasks

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


def test_slow_silent_and_recovery_on_the_loop_with_a_fake_clock(h: Harness) -> None:
    """The wiring of serve(): the loop's facts reach the timer, which reads the tasks from the published
    snapshot and their past from the history; the fake clock makes 26 hours pass at once."""
    logger = logging.getLogger("test.notify.timed")
    notifier = Notifier(origin=Origin("box", h.paths.home), logger=logger, read_lines=lambda path, run: [])
    posted: list[Job] = []
    notifier.delivery.post = posted.append  # type: ignore[method-assign]
    readers: list[HistoryStore] = []
    timer = notifier.watch(
        now=h.clock.now,
        tasks=timed_tasks(h.sup.board),
        seed=history_seeds(
            lambda: readers.append(HistoryStore(h.paths.database, readonly=True)) or readers[-1], logger=logger
        ),
        start=False,
    )
    notices = RunNotifications(notifier, streak_before=lambda task, run_id: 0)
    h.sup.facts.consumers = (*h.sup.facts.consumers, notices)
    h.sup.facts.start_listeners = (notices.run_started,)
    h.write("t", every=7 * 24 * 60, extra="[Notify]\nSlowAfterSeconds = 600\nExpectOkWithin = 26h\n")
    h.settle()
    run_id = h.executor.live_main("t")  # never ran: its first run starts at once
    timer.tick()

    def titles() -> list[str]:
        return [job.notice.title for job in posted if isinstance(job, ChannelJob)]

    h.clock.advance(599)
    timer.tick()
    assert titles() == []
    h.clock.advance(1)
    timer.tick()
    assert titles() == ["t is slow: running for 10 min"]
    h.executor.finish(run_id, Outcome.OK)
    h.settle()
    h.clock.advance(26 * 3600 - 1)
    timer.tick()
    assert titles() == ["t is slow: running for 10 min"]
    h.clock.advance(1)
    assert timer.tick() is None  # silent now; nothing else to wait for until the next run
    assert titles()[1:] == ["t silent: no ok run for 26 h"]
    h.tick(7 * 24 * 3600)  # its next slot
    h.executor.finish(h.executor.live_main("t"), Outcome.OK)
    h.settle()
    assert titles()[2:] == ["t recovered"]
    for reader in readers:
        reader.close()
