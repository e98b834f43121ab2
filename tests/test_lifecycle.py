"""The task lifecycle table: complete, consistent with itself, and the states docs/cli.md documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from supervisor.core.lifecycle import TRANSITIONS, IllegalTransition, TaskState, move
from supervisor.model import TaskPhase
from supervisor.query.status import DONE, OFFLINE_STOPPED, PAUSED

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
DERIVED_STATES = {"running", "queued", OFFLINE_STOPPED, DONE, PAUSED}  # shown by status, not phases


def documented_states() -> set[str]:
    text = DOCS.read_text()
    table = text[text.index("| state | meaning |") :]
    table = table[: table.index("\n\n")]
    return set(re.findall(r"^\| `([a-z-]+)` \|", table, flags=re.M))


def test_docs_list_exactly_the_phases_and_the_derived_states() -> None:
    assert documented_states() == {phase.value for phase in TaskPhase} | DERIVED_STATES


def test_every_phase_has_a_row_and_every_move_ends_in_a_phase() -> None:
    assert set(TRANSITIONS) == set(TaskPhase)
    for source, moves in TRANSITIONS.items():
        assert source not in moves, f"{source}: staying put is not a move"
        assert all(isinstance(target, TaskPhase) and why for target, why in moves.items())


def test_loading_is_only_a_start_and_removed_is_final_and_reachable_from_everywhere() -> None:
    assert not any(TaskPhase.LOADING in moves for moves in TRANSITIONS.values())
    assert TRANSITIONS[TaskPhase.REMOVED] == {}
    assert all(TaskPhase.REMOVED in moves for phase, moves in TRANSITIONS.items() if phase is not TaskPhase.REMOVED)


def test_every_phase_can_reach_scheduled_unless_it_is_final() -> None:
    for start in TaskPhase:
        seen, todo = {start}, [start]
        while todo:
            for target in TRANSITIONS[todo.pop()]:
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        assert (TaskPhase.SCHEDULED in seen) is (start is not TaskPhase.REMOVED), start


def test_move_follows_the_table_and_refuses_anything_else() -> None:
    st = TaskState("t")
    move(st, TaskPhase.INITIALIZING)
    move(st, TaskPhase.INITIALIZING)  # staying put is allowed
    move(st, TaskPhase.SCHEDULED)
    with pytest.raises(IllegalTransition, match="'t'.*scheduled -> env-failed"):
        move(st, TaskPhase.ENV_FAILED)
    assert st.phase is TaskPhase.SCHEDULED
