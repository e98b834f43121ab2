"""The task lifecycle tables: complete, consistent with themselves, the states docs/cli.md documents, and the
one ``move`` that enforces them and tells its listeners."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pytest

from supervisor.core.lifecycle import (
    LOADED,
    STAGE_MOVES,
    TRANSITIONS,
    IllegalTransition,
    Lifecycle,
    TaskState,
    move_log_line,
)
from supervisor.model import PhaseChanged, RunStage, ShownState, TaskPhase

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
# Shown by status, but not phases: derived from a run in flight or queued, a run held back after failures in
# a row, from the schedule, or offline.
DERIVED_STATES = {
    ShownState.RUNNING,
    ShownState.QUEUED,
    ShownState.BACKING_OFF,
    ShownState.DONE,
    ShownState.STOPPED,
    ShownState.UNKNOWN,
}
T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)


def documented_states() -> set[str]:
    text = DOCS.read_text()
    table = text[text.index("| state | meaning |") :]
    table = table[: table.index("\n\n")]
    return set(re.findall(r"^\| `([a-z-]+)` \|", table, flags=re.M))


def reachable(table: Mapping[Any, Mapping[Any, str]], start: Any) -> set[Any]:
    seen, todo = {start}, [start]
    while todo:
        for target in table[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def machine(events: list[PhaseChanged] | None = None) -> Lifecycle:
    listeners = [events.append] if events is not None else []
    return Lifecycle(now=lambda: T0, logger=logging.getLogger("test.lifecycle"), listeners=listeners)


def test_docs_list_exactly_the_shown_states_which_are_the_phases_and_the_derived_states() -> None:
    assert documented_states() == {state.value for state in ShownState}
    assert {state.value for state in ShownState} == {p.value for p in TaskPhase} | {d.value for d in DERIVED_STATES}


def test_every_phase_has_a_row_and_every_move_ends_in_a_phase() -> None:
    assert set(TRANSITIONS) == set(TaskPhase)
    for source, moves in TRANSITIONS.items():
        assert source not in moves, f"{source}: staying put is not a move"
        assert all(isinstance(target, TaskPhase) and why for target, why in moves.items())


def test_every_stage_has_a_row_every_stage_is_reached_and_each_returns_to_idle() -> None:
    assert set(STAGE_MOVES) == set(RunStage)
    for source, moves in STAGE_MOVES.items():
        assert source not in moves and all(isinstance(t, RunStage) and why for t, why in moves.items())
    assert {target for moves in STAGE_MOVES.values() for target in moves} == set(RunStage)
    assert all(RunStage.IDLE in reachable(STAGE_MOVES, start) for start in RunStage)


def test_loading_is_only_a_start_and_removed_is_final_and_reachable_from_everywhere() -> None:
    assert not any(TaskPhase.LOADING in moves for moves in TRANSITIONS.values())
    assert TRANSITIONS[TaskPhase.REMOVED] == {}
    assert all(TaskPhase.REMOVED in moves for phase, moves in TRANSITIONS.items() if phase is not TaskPhase.REMOVED)


def test_every_phase_can_reach_scheduled_unless_it_is_final() -> None:
    for start in TaskPhase:
        assert (TaskPhase.SCHEDULED in reachable(TRANSITIONS, start)) is (start is not TaskPhase.REMOVED), start


def test_paused_is_loaded_and_moves_only_to_and_from_the_loaded_phases_by_pause_and_resume() -> None:
    assert set(LOADED) == {TaskPhase.SCHEDULED, TaskPhase.PAUSED}
    assert TRANSITIONS[TaskPhase.SCHEDULED][TaskPhase.PAUSED] == "pause NAME"
    assert TRANSITIONS[TaskPhase.PAUSED][TaskPhase.SCHEDULED] == "resume NAME"
    into_paused = {source for source, moves in TRANSITIONS.items() if TaskPhase.PAUSED in moves}
    assert into_paused == {TaskPhase.SCHEDULED, TaskPhase.INITIALIZING}


def test_move_follows_the_table_and_refuses_anything_else() -> None:
    lifecycle = machine()
    st = TaskState("t")
    lifecycle.move(st, TaskPhase.INITIALIZING)
    lifecycle.move(st, TaskPhase.INITIALIZING)  # staying put is allowed
    lifecycle.move(st, TaskPhase.SCHEDULED)
    with pytest.raises(IllegalTransition, match=r"'t'.*scheduled -> env-failed"):
        lifecycle.move(st, TaskPhase.ENV_FAILED)
    assert st.phase is TaskPhase.SCHEDULED
    with pytest.raises(IllegalTransition, match=r"'t'.*idle -> backing-off"):
        lifecycle.move(st, RunStage.BACKING_OFF)
    assert st.stage is RunStage.IDLE


def test_every_move_emits_exactly_one_event_with_the_tables_reason_or_the_given_one() -> None:
    events: list[PhaseChanged] = []
    lifecycle = machine(events)
    st = TaskState("t")
    lifecycle.move(st, TaskPhase.INITIALIZING)
    lifecycle.move(st, TaskPhase.INITIALIZING)  # not a move: no event
    lifecycle.move(st, TaskPhase.SCHEDULED)
    lifecycle.move(st, RunStage.QUEUED)
    lifecycle.move(st, RunStage.BACKING_OFF)
    lifecycle.move(st, RunStage.IDLE, "dropped: the supervisor stopped")
    assert [(e.old, e.new) for e in events] == [
        (TaskPhase.LOADING, TaskPhase.INITIALIZING),
        (TaskPhase.INITIALIZING, TaskPhase.SCHEDULED),
        (RunStage.IDLE, RunStage.QUEUED),
        (RunStage.QUEUED, RunStage.BACKING_OFF),
        (RunStage.BACKING_OFF, RunStage.IDLE),
    ]
    assert events[1].why == TRANSITIONS[TaskPhase.INITIALIZING][TaskPhase.SCHEDULED]
    assert events[-1].why == "dropped: the supervisor stopped"
    assert all(e.task == "t" and e.at == T0 for e in events)
    assert move_log_line(events[1]) == "move 't': initializing -> scheduled: initialize() returned"


def test_a_failing_listener_is_logged_and_neither_stops_the_move_nor_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(_: PhaseChanged) -> None:
        raise RuntimeError("listener bug")

    seen: list[PhaseChanged] = []
    lifecycle = Lifecycle(now=lambda: T0, logger=logging.getLogger("test.lifecycle"), listeners=[broken, seen.append])
    st = TaskState("t")
    with caplog.at_level(logging.ERROR, logger="test.lifecycle"):
        lifecycle.move(st, TaskPhase.DISABLED)
    assert st.phase is TaskPhase.DISABLED and len(seen) == 1
    assert "a move listener failed" in caplog.text


def test_a_task_states_revision_counts_every_change() -> None:
    st = TaskState("t")
    before = st.revision
    st.error = "broken"
    machine().move(st, TaskPhase.ERROR)
    assert st.revision == before + 2
