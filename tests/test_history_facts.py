"""Pure pieces the loop relies on: the failure streak of RunFinished facts and the run-slot queue."""

from __future__ import annotations

from datetime import datetime, timezone

from supervisor.core.slots import SPAWN_RETRY_FIRST_S, SPAWN_RETRY_MAX_S, QueuedRun, RunQueue
from supervisor.history.recorder import failure_streak, streak_after
from supervisor.model import Outcome, RunRecord, Trigger

T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)


def test_streak_counts_failures_resets_on_ok_and_ignores_the_rest() -> None:
    streak = 0
    seen = []
    for outcome in (
        Outcome.FAILED,
        Outcome.TIMEOUT,
        Outcome.SKIPPED,
        Outcome.KILLED,
        Outcome.MEMORY,
        Outcome.OK,
        Outcome.ENV_FAILED,
        Outcome.CRASHED,
    ):
        streak = streak_after(streak, outcome)
        seen.append(streak)
    assert seen == [1, 2, 2, 2, 3, 0, 1, 2]
    assert streak_after(2, Outcome.FAILED, final=False) == 2, "an attempt that will be retried does not count"


def test_streak_from_history_matches_the_incremental_count() -> None:
    outcomes = [Outcome.OK, Outcome.FAILED, Outcome.TESTING, Outcome.CRASHED, None]  # oldest first; None = open
    rows = [
        RunRecord(run_id=str(i), task="t", trigger=Trigger.SCHEDULE, started=T0, outcome=o)
        for i, o in enumerate(outcomes)
    ]
    assert failure_streak(reversed(rows)) == 2


def run(task: str) -> QueuedRun:
    return QueuedRun(task=task, trigger=Trigger.SCHEDULE, due=T0, since=T0)


def test_queue_serves_first_in_first_out_while_slots_last() -> None:
    queue = RunQueue(capacity=3)
    for task in "abcd":
        queue.add(run(task))
    assert [r.task for r in queue.take(in_flight=1, now_mono=0.0)] == ["a", "b"]
    assert queue.next_wakeup(in_flight=3) is None, "no slot: nothing to wake for"
    assert [r.task for r in queue.take(in_flight=0, now_mono=0.0)] == ["c", "d"]
    assert len(queue) == 0


def test_a_retried_start_goes_first_but_not_before_its_backoff() -> None:
    queue = RunQueue(capacity=1)
    queue.add(run("b"))
    again = queue.retry(run("a"), run_id="r1", now_mono=100.0)
    assert (again.run_id, again.spawn_failures, again.not_before) == ("r1", 1, 100.0 + SPAWN_RETRY_FIRST_S)
    assert [r.task for r in queue.take(in_flight=0, now_mono=100.0)] == ["b"], "a waiting retry lets others by"
    assert queue.next_wakeup(in_flight=0) == 100.0 + SPAWN_RETRY_FIRST_S
    delays = []
    for _ in range(8):
        again = queue.retry(again, run_id="r1", now_mono=0.0)
        delays.append(again.not_before)
    assert delays == sorted(delays) and delays[-1] == SPAWN_RETRY_MAX_S
    assert [r.task for r in queue.take(in_flight=0, now_mono=1e9)] == ["a"]
