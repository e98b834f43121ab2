"""Every state in the machine, driven through the loop on a fake clock and a fake executor
(tests/loop_harness.py): a run's stages (queued, backing off, retry pending), the paused phase, one event per
move, and the status snapshot that keeps the last moves."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import Harness, started_harness

from supervisor.errors import SpawnError
from supervisor.model import HomeConfig, Outcome, PhaseChanged, RunMode, RunStage, TaskPhase

pytestmark = pytest.mark.timeout(30)
S, P = RunStage, TaskPhase
RETRY_ONCE = "[Retry]\nAttempts = 1\nDelaySeconds = 30\n"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with started_harness(tmp_path / "home") as harness:
        yield harness


def stage_moves(h: Harness, task: str) -> list[tuple[RunStage, RunStage]]:
    return [(m.old, m.new) for m in h.moves if m.task == task and isinstance(m.new, RunStage)]  # type: ignore[misc]


def phases(h: Harness, task: str) -> list[TaskPhase]:
    return [m.new for m in h.moves if m.task == task and isinstance(m.new, TaskPhase)]  # type: ignore[misc]


def assert_one_event_per_move(h: Harness) -> None:
    """The events of each task and region form an unbroken chain that ends in the task's current state: no
    move went unannounced, none was announced twice."""
    current: dict[tuple[str, type], object] = {}
    for move in h.moves:
        key = (move.task, type(move.new))
        start = P.LOADING if isinstance(move.new, TaskPhase) else S.IDLE
        assert move.old is current.get(key, start), move
        assert move.old is not move.new, move
        current[key] = move.new
    for name, st in h.sup.book.tasks.items():
        assert current.get((name, TaskPhase), P.LOADING) is st.phase
        assert current.get((name, RunStage), S.IDLE) is st.stage


def fail_the_first_attempt(h: Harness) -> None:
    """Task ``t`` (one retry after 30 s) ran once and failed: its retry is pending."""
    h.write("t", extra=RETRY_ONCE)
    h.settle()
    h.executor.finish(h.executor.live_main("t"), Outcome.FAILED)
    h.settle()


def test_a_run_waiting_for_a_slot_is_queued_and_idle_again_once_it_starts(tmp_path: Path) -> None:
    h = Harness(tmp_path / "home", home_config=HomeConfig(max_concurrent_runs=1))
    h.sup.start()
    h.write("a")
    h.write("b")
    h.settle()
    assert (h.sup.book.tasks["b"].stage, h.state("b")) == (S.QUEUED, "queued")
    assert stage_moves(h, "a") == [(S.IDLE, S.QUEUED), (S.QUEUED, S.IDLE)], "queued, then started at once"
    h.executor.finish(h.executor.live_main("a"))
    h.settle()
    assert (h.sup.book.tasks["b"].stage, h.state("b")) == (S.IDLE, "running")
    assert_one_event_per_move(h)
    h.records.close()


def test_a_transient_spawn_failure_backs_off_shown_as_queued_then_starts(h: Harness) -> None:
    h.executor.fail_next = (RunMode.MAIN, SpawnError("task 't': cannot start: Too many open files", transient=True))
    h.write("t")
    h.settle()
    assert (h.sup.book.tasks["t"].stage, h.state("t")) == (S.BACKING_OFF, "queued")
    h.tick(3)
    assert (h.sup.book.tasks["t"].stage, h.state("t")) == (S.IDLE, "running")
    assert stage_moves(h, "t") == [(S.IDLE, S.QUEUED), (S.QUEUED, S.BACKING_OFF), (S.BACKING_OFF, S.IDLE)]
    assert_one_event_per_move(h)


def test_a_failed_attempt_leaves_a_retry_pending_which_queues_when_due(h: Harness) -> None:
    fail_the_first_attempt(h)
    assert h.sup.book.tasks["t"].stage is S.RETRY_PENDING and h.state("t") == "scheduled"
    h.tick(30)
    assert h.sup.book.tasks["t"].stage is S.IDLE and h.state("t") == "running"
    assert stage_moves(h, "t")[-3:] == [(S.IDLE, S.RETRY_PENDING), (S.RETRY_PENDING, S.QUEUED), (S.QUEUED, S.IDLE)]
    assert_one_event_per_move(h)


def test_a_start_that_fails_for_good_from_the_queue_is_a_failed_attempt_with_its_retry(h: Harness) -> None:
    h.executor.fail_next = (RunMode.MAIN, SpawnError("task 't': cannot start: bad interpreter"))
    h.write("t", extra=RETRY_ONCE)
    h.settle()
    assert h.sup.book.tasks["t"].stage is S.RETRY_PENDING
    assert (S.QUEUED, S.RETRY_PENDING) in stage_moves(h, "t")
    assert_one_event_per_move(h)


def test_an_unloaded_task_drops_its_pending_retry_and_returns_to_idle(h: Harness) -> None:
    fail_the_first_attempt(h)
    h.write("t", extra="[Global]\nEnabled = False\n")
    h.settle()
    st = h.sup.book.tasks["t"]
    assert (st.phase, st.stage, st.retry) == (P.DISABLED, S.IDLE, None)
    assert h.moves[-1].why == "dropped: the task was unloaded"
    assert_one_event_per_move(h)


def test_pause_and_resume_move_a_loaded_task_and_due_runs_wait_meanwhile(h: Harness) -> None:
    h.write("t", every=1)
    h.settle()
    h.executor.finish(h.executor.live_main("t"))
    h.settle()
    assert h.request("pause", name="t", by="test")["changed"]
    assert (h.sup.book.tasks["t"].phase, h.state("t")) == (P.PAUSED, "paused")
    assert h.moves[-1].why == "pause by test"
    h.tick(120)
    assert len(h.executor.mains("t")) == 1, "a paused task's slots pass without a run"
    assert h.request("run-now", name="t")["ok"], "a manual run still starts"
    h.executor.finish(h.executor.live_main("t"))
    h.settle()
    assert h.request("resume", name="t")["changed"]
    assert (h.sup.book.tasks["t"].phase, h.state("t")) == (P.SCHEDULED, "scheduled")
    h.tick(60)
    assert h.state("t") == "running"
    assert phases(h, "t")[-2:] == [P.PAUSED, P.SCHEDULED]
    assert_one_event_per_move(h)


def test_a_task_paused_before_it_loads_is_activated_as_paused(h: Harness) -> None:
    h.sup.pauses.pause("t", by="test")
    h.write("t")
    h.settle()
    assert phases(h, "t") == [P.INITIALIZING, P.PAUSED]
    assert h.state("t") == "paused" and h.executor.mains("t") == []
    assert_one_event_per_move(h)


def test_the_snapshot_keeps_the_last_moves_of_each_task_and_is_reused_while_nothing_changes(h: Harness) -> None:
    h.write("t")
    h.settle()
    snapshot = h.sup.board.latest()
    assert snapshot is not None
    (view,) = snapshot.tasks
    assert [(m.old, m.new) for m in view.moves][:2] == [(P.LOADING, P.INITIALIZING), (P.INITIALIZING, P.SCHEDULED)]
    assert all(isinstance(m, PhaseChanged) for m in view.moves)
    h.sup.turn()
    assert h.sup.board.latest() is snapshot, "a turn that changed nothing publishes nothing new"
    h.executor.finish(h.executor.live_main("t"))
    h.settle()
    latest = h.sup.board.latest()
    assert latest is not snapshot and latest is not None
    assert latest.last_finished["t"].outcome is Outcome.OK, "the run's end is in the snapshot, no history read"


def test_a_task_state_keeps_no_field_the_machine_or_the_run_queue_knows() -> None:
    from dataclasses import fields

    from supervisor.core.lifecycle import TaskState

    names = {f.name for f in fields(TaskState)}
    assert not names & {"queued_since", "backoff_at", "paused", "paused_since"}
    assert {"phase", "stage"} <= names
