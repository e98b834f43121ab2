"""Crash-loop damping ([Global] FailureBackoff) in the loop, on a fake clock and a fake executor
(tests/support/loop_harness.py): the wait grows and is capped, an ok run and a change of the task's files end
it, a restart keeps it, ``off`` restores the plain schedule; and the keys' validation. No processes, no sleeps.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import Harness, started_harness

from supervisor.config.schema import parse_home_config, parse_task_config
from supervisor.errors import ConfigError
from supervisor.model import FailureBackoff, HomeConfig, Outcome, RunStage

pytestmark = pytest.mark.timeout(30)
EVERY_3_S = 0.05  # EveryXMinutes


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with started_harness(tmp_path / "home") as harness:
        yield harness


def next_run(h: Harness, name: str = "t") -> datetime:
    return datetime.fromisoformat(h.task(name)["next_run"])


def fail_running(h: Harness, name: str = "t") -> float:
    """End the task's run in flight as ``failed``; returns the wait from its due time to the next run."""
    due = h.sup.book.tasks[name].anchor
    assert due is not None
    h.executor.finish(h.executor.live_main(name), Outcome.FAILED, message="RuntimeError: boom")
    h.settle()
    return (next_run(h, name) - due).total_seconds()


def to_next_run(h: Harness, name: str = "t") -> None:
    """Advance the clock to just before the next run (nothing starts), then to it (it starts)."""
    before = len(h.executor.mains(name))
    h.tick((next_run(h, name) - h.clock.now()).total_seconds() - 0.5)
    assert len(h.executor.mains(name)) == before, "nothing starts before the next try"
    h.tick(0.5)
    assert h.state(name) == "running"


def failing_task(h: Harness, *, failures: int, every: float = EVERY_3_S) -> list[float]:
    """A task whose first ``failures`` runs fail, each followed by the clock moved on to its next run (which
    is then in flight); returns the waits."""
    h.write("t", every=every)
    h.settle()
    waits = []
    for _ in range(failures):
        waits.append(fail_running(h))
        to_next_run(h)
    return waits


def test_the_wait_doubles_after_the_fifth_failure_up_to_an_hour_and_damped_slots_leave_no_rows(h: Harness) -> None:
    h.write("t", every=EVERY_3_S)
    h.settle()
    waits, states = [], []
    for _ in range(16):
        waits.append(fail_running(h))
        states.append(h.state("t"))
        to_next_run(h)
    assert waits == [3, 3, 3, 3, 6, 12, 24, 48, 96, 192, 384, 768, 1536, 3072, 3600, 3600]
    assert states == ["scheduled"] * 4 + ["backing-off"] * 12
    rows = h.rows("t")
    assert [r.outcome for r in rows] == [Outcome.FAILED] * 16 + [None], "damped slots leave no rows (none skipped)"
    fail_running(h)
    task = h.task("t")
    assert task["consecutive_failures"] == 17
    assert task["why"].startswith("backing off after 17 failures in a row: next try at ")
    assert h.sup.book.tasks["t"].stage is RunStage.DAMPED


def test_an_ok_run_ends_the_damping_at_once_and_the_count_starts_again(h: Harness) -> None:
    failing_task(h, failures=6)
    h.executor.finish(h.executor.live_main("t"), Outcome.OK)
    h.settle()
    assert (h.state("t"), h.task("t")["consecutive_failures"]) == ("scheduled", 0)
    to_next_run(h)
    assert fail_running(h) == 3


def test_a_manual_ok_run_while_backing_off_ends_it_and_the_schedule_resumes(h: Harness) -> None:
    failing_task(h, failures=4)
    assert (fail_running(h), h.state("t")) == (6, "backing-off")
    assert h.request("run-now", name="t")["ok"], "a manual run starts at once"
    h.executor.finish(h.executor.live_main("t"), Outcome.OK)
    h.settle()
    st = h.sup.book.tasks["t"]
    assert h.state("t") == "scheduled" and st.anchor is not None
    assert next_run(h) == st.anchor + timedelta(seconds=3)


def test_a_change_of_the_task_files_ends_the_damping_and_counts_five_failures_again(h: Harness) -> None:
    failing_task(h, failures=6)
    fail_running(h)
    assert h.state("t") == "backing-off"
    h.write("t", every=EVERY_3_S, main="def main():\n    return 'fixed?'\n")  # initialize() again
    h.settle()
    st = h.sup.book.tasks["t"]
    assert h.state("t") == "scheduled" and st.anchor is not None
    assert next_run(h) == st.anchor + timedelta(seconds=3), "its own schedule again"
    waits = []
    for _ in range(5):
        to_next_run(h)
        waits.append(fail_running(h))
    assert waits == [3, 3, 3, 3, 6]
    assert h.task("t")["consecutive_failures"] == 12, "the streak itself is the history's"


def test_a_restart_keeps_the_damping_read_from_the_history(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with started_harness(home) as h:
        failing_task(h, failures=5)
        assert fail_running(h) == 12
        anchor = h.sup.book.tasks["t"].anchor
    with started_harness(home) as again:
        again.clock.advance((h.clock.now() - again.clock.now()).total_seconds())  # no step: a later start
        again.settle()
        assert again.state("t") == "backing-off"
        assert anchor is not None and next_run(again) == anchor + timedelta(seconds=12)


@pytest.mark.parametrize(
    ("home_ini", "task_ini", "waits"),
    [
        ("", "FailureBackoff = off\n", [3] * 10),
        ("[Global]\nFailureBackoff = off\n", "", [3] * 10),
        ("[Global]\nFailureBackoff = off\n", "FailureBackoff = yes\nFailureBackoffAfter = 2\n", [3, 6, 12, 24]),
        ("[Global]\nFailureBackoffAfter = 3\n", "", [3, 3, 6, 12]),
    ],
)
def test_off_restores_the_plain_schedule_and_the_home_default_yields_to_the_task(
    tmp_path: Path, home_ini: str, task_ini: str, waits: list[int]
) -> None:
    home_config, _ = parse_home_config(home_ini, path=tmp_path / "taskautomation.ini")
    with started_harness(tmp_path / "home", home_config=home_config) as h:
        h.write("t", every=EVERY_3_S, extra=f"[Global]\n{task_ini}" if task_ini else "")
        h.settle()
        seen = []
        for _ in waits:
            seen.append(fail_running(h))
            to_next_run(h)
        assert seen == waits
        if waits == [3] * 10:
            assert {e.new for e in h.moves} & {RunStage.DAMPED} == set()


def test_an_hourly_task_is_not_slowed_and_never_shows_backing_off(h: Harness) -> None:
    assert failing_task(h, failures=7, every=60) == [3600] * 7
    assert {e.new for e in h.moves} & {RunStage.DAMPED} == set()


def test_the_keys_are_validated_with_task_file_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    base = "[Frequency]\nEveryXMinutes = 1\n[Global]\n"
    spec = parse_task_config(base + "failurebackoff = Off\n", task="t", path=path).spec
    assert spec.failure_backoff == FailureBackoff(enabled=False, after=5)
    with pytest.raises(ConfigError, match=r"task 't': .*config.ini: \[Global\] FailureBackoff = 'sometimes': not a"):
        parse_task_config(base + "FailureBackoff = sometimes\n", task="t", path=path)
    with pytest.raises(ConfigError, match=r"\[Global\] FailureBackoffAfter = '0': must be at least 1"):
        parse_task_config(base + "FailureBackoffAfter = 0\n", task="t", path=path)
    home, warnings = parse_home_config("[Global]\nFailureBackoffAfter = 9\n", path=path)
    assert home.failure_backoff == FailureBackoff(after=9) and warnings == ()
    assert HomeConfig().failure_backoff == FailureBackoff(enabled=True, after=5)
