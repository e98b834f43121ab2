"""Scheduling kinds and [Retry] inside the loop, on a fake clock and a fake executor (tests/support/loop_harness.py):
retries as their own rows that never move the schedule, "the next slot wins", the streak of final
attempts, `why` and `status` fields, cron slots and RunAt's `done`. No processes, no sleeps.
"""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import START, Harness, started_harness

from supervisor.history.recorder import failure_streak
from supervisor.model import Outcome, RunRecord, Trigger

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with started_harness(tmp_path / "home") as harness:
        yield harness


def write(h: Harness, name: str, config: str) -> None:
    h.write(name)  # main.py, requirements.txt
    h.paths.task_config(name).write_text(textwrap.dedent(config))


RETRYING = """\
[Frequency]
EveryXMinutes = 60
[Retry]
Attempts = 2
DelaySeconds = 30
Backoff = 2
"""


def test_a_failed_run_is_retried_with_backoff_as_its_own_rows_without_moving_the_schedule(h: Harness) -> None:
    write(h, "t", RETRYING)
    h.settle()
    first = h.executor.live_main("t")
    h.clock.advance(5)
    h.executor.finish(first, Outcome.FAILED)
    h.settle()
    assert h.task("t")["next_run"] == (START + timedelta(minutes=60)).isoformat()  # unchanged
    assert "attempt 2" in h.task("t")["why"] and h.task("t")["consecutive_failures"] == 0
    h.tick(29)
    assert len(h.executor.mains("t")) == 1  # DelaySeconds not yet over
    h.tick(1)
    second = h.executor.live_main("t")
    assert h.executor.mains("t")[-1].trigger is Trigger.RETRY
    h.executor.finish(second, Outcome.TIMEOUT)
    h.settle()
    h.tick(59)
    assert len(h.executor.mains("t")) == 2  # the second retry waits 30 × 2 = 60 s
    h.tick(1)
    h.executor.finish(h.executor.live_main("t"), Outcome.FAILED)
    h.settle()
    rows = h.rows("t")
    assert [(r.trigger, r.attempt, r.retry_of, r.outcome) for r in rows] == [
        (Trigger.SCHEDULE, 1, None, Outcome.FAILED),
        (Trigger.RETRY, 2, first, Outcome.TIMEOUT),
        (Trigger.RETRY, 3, first, Outcome.FAILED),
    ]
    assert rows[1].due == START + timedelta(seconds=35) and rows[2].due == START + timedelta(seconds=95)
    assert [(f.attempt, f.final, f.consecutive_failures) for f in h.facts] == [
        (1, False, 0),
        (2, False, 0),
        (3, True, 1),
    ]
    task = h.task("t")
    assert task["consecutive_failures"] == 1 and "attempt" not in task["why"]
    assert task["next_run"] == (START + timedelta(minutes=60)).isoformat()
    assert h.records.last_anchor("t") == START  # retries never move the anchor


def test_an_ok_retry_ends_the_run_and_resets_the_streak(h: Harness) -> None:
    write(h, "t", RETRYING)
    h.settle()
    h.executor.finish(h.executor.live_main("t"), Outcome.FAILED)
    h.tick(30)
    h.executor.finish(h.executor.live_main("t"), Outcome.OK)
    h.settle()
    h.tick(600)
    assert len(h.executor.mains("t")) == 2
    assert [(f.outcome, f.final, f.consecutive_failures) for f in h.facts] == [
        (Outcome.FAILED, False, 0),
        (Outcome.OK, True, 0),
    ]


def test_the_next_slot_wins_over_a_retry_that_would_come_later(h: Harness) -> None:
    write(h, "t", "[Frequency]\nEveryXMinutes = 1\n[Retry]\nAttempts = 3\nDelaySeconds = 90\n")
    h.settle()
    h.executor.finish(h.executor.live_main("t"), Outcome.FAILED)
    h.settle()
    assert [(f.final, f.consecutive_failures) for f in h.facts] == [(True, 1)]  # no retry: final at once
    h.tick(60)
    assert [r.trigger for r in h.executor.mains("t")] == [Trigger.SCHEDULE, Trigger.SCHEDULE]


def test_a_pending_retry_is_dropped_when_the_slot_comes_first_and_never_overlaps_a_run(h: Harness) -> None:
    write(h, "t", "[Frequency]\nEveryXMinutes = 1\n[Retry]\nAttempts = 1\nDelaySeconds = 40\n")
    h.settle()
    h.clock.advance(10)
    h.executor.finish(h.executor.live_main("t"), Outcome.FAILED)  # retry due at +50 s, before the +60 s slot
    h.settle()
    h.tick(20)
    manual = h.sup.run_now("t")  # a manual run in flight when the retry comes due
    assert manual.accepted
    h.tick(20)  # +50 s: the retry waits for the manual run, it never overlaps
    assert len(h.executor.mains("t")) == 2
    assert h.sup.sleep_for() == 10.0  # until the slot; no busy wait on the overdue retry
    h.tick(10)  # +60 s: the slot comes first; the retry is dropped, the slot is skipped (manual still runs)
    assert [r.trigger for r in h.executor.mains("t")] == [Trigger.SCHEDULE, Trigger.MANUAL]
    assert h.sup.book.tasks["t"].retry is None
    h.executor.finish(manual.detail, Outcome.FAILED)  # a manual run is never retried
    h.tick(1)
    assert h.sup.book.tasks["t"].retry is None and h.facts[-1].final


def test_cron_task_waits_for_its_slot_and_reports_its_schedule(h: Harness) -> None:
    write(h, "c", "[Frequency]\nCron = */15 * * * *\nTimeZone = UTC\n")
    h.settle()
    task = h.task("c")
    assert task["next_run"] == (START + timedelta(minutes=15)).isoformat()  # START is 10:00: not due at once
    assert task["schedule"].startswith("cron '*/15 * * * *'") and "next cron slot" in task["why"]
    assert h.executor.mains("c") == []
    h.tick(15 * 60)
    assert len(h.executor.mains("c")) == 1
    h.executor.finish(h.executor.live_main("c"))
    h.settle()
    assert h.task("c")["next_run"] == (START + timedelta(minutes=30)).isoformat()


def test_cron_task_with_run_on_startup_runs_once_then_at_its_slots(h: Harness) -> None:
    write(h, "c", "[Frequency]\nCron = 0 * * * *\nTimeZone = UTC\n[Global]\nRunOnStartup = True\n")
    h.settle()
    assert [r.trigger for r in h.executor.mains("c")] == [Trigger.STARTUP]
    h.executor.finish(h.executor.live_main("c"))
    h.settle()
    assert h.task("c")["next_run"] == (START + timedelta(hours=1)).isoformat()


def test_run_at_task_is_done_after_its_last_time(h: Harness) -> None:
    write(h, "once", "[Frequency]\nRunAt = 2026-03-02 12:00\nTimeZone = UTC\n")
    h.settle()
    assert h.task("once")["next_run"] == (START + timedelta(hours=2)).isoformat()
    h.tick(2 * 3600)
    h.executor.finish(h.executor.live_main("once"))
    h.settle()
    task = h.task("once")
    assert (task["state"], task["next_run"]) == ("done", None) and task["why"].startswith("done")
    h.tick(86400)
    assert len(h.executor.mains("once")) == 1


def test_the_streak_read_back_from_history_counts_only_final_attempts() -> None:
    t0 = START

    def row(run_id: str, outcome: Outcome, attempt: int = 1, retry_of: str | None = None) -> RunRecord:
        return RunRecord(
            run_id=run_id,
            task="t",
            trigger=Trigger.RETRY if retry_of else Trigger.SCHEDULE,
            started=t0,
            outcome=outcome,
            attempt=attempt,
            retry_of=retry_of,
        )

    newest_first = [
        row("c2", Outcome.FAILED, 2, "c1"),
        row("c1", Outcome.FAILED),  # run c: retried, final 2
        row("b1", Outcome.TIMEOUT),  # run b: not retried
        row("a2", Outcome.OK, 2, "a1"),
        row("a1", Outcome.FAILED),
    ]  # run a: recovered
    assert failure_streak(newest_first) == 2
    assert failure_streak(newest_first[3:]) == 0
