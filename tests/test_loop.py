"""The loop driven by a fake clock and a fake executor replaying reports: no processes, no sleeps.

Task folders, discovery, config parsing and the SQLite history are real (they are fast); the clock, the
executor and the env builder are fakes handed to the loop through its seams. Assertions are on state and
history, never on log text.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import KEY_A, KEY_B, START, Harness, started_harness

from supervisor.errors import SpawnError
from supervisor.events import EnvBuilt
from supervisor.history.store import HistoryStore
from supervisor.model import HomeConfig, Outcome, RunMode, RunRecord, Trigger
from supervisor.paths import Paths

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with started_harness(tmp_path / "home") as harness:
        yield harness


def test_a_new_task_initializes_runs_at_once_and_then_every_interval(h: Harness) -> None:
    h.write("t", every=60)
    h.settle()
    assert h.state("t") == "running"
    run_id = h.executor.live_main("t")
    h.clock.advance(5)
    h.executor.finish(run_id)
    h.settle()
    assert h.state("t") == "scheduled"
    assert h.task("t")["next_run"] == (START + timedelta(minutes=60)).isoformat()
    rows = h.rows("t")
    assert [(r.run_id, r.outcome, r.trigger, r.due) for r in rows] == [(run_id, Outcome.OK, Trigger.SCHEDULE, START)]
    h.tick(3600 - 5)
    assert len(h.executor.mains("t")) == 2 and h.state("t") == "running"


def test_a_due_run_while_the_last_one_runs_is_skipped_and_the_next_slot_kept(h: Harness) -> None:
    h.write("t", every=1)
    h.settle()
    first = h.executor.live_main("t")
    h.tick(60)
    h.tick(60)
    assert len(h.executor.mains("t")) == 1 and h.state("t") == "running"
    h.executor.finish(first)
    h.settle()
    assert [r.outcome for r in h.rows("t")] == [Outcome.OK, Outcome.SKIPPED, Outcome.SKIPPED]
    assert h.task("t")["next_run"] == (START + timedelta(minutes=3)).isoformat()
    h.tick(60)
    assert len(h.executor.mains("t")) == 2


def test_missed_slots_are_caught_up_once_after_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Paths(home).ensure()
    records = HistoryStore(Paths(home).database)
    old = START - timedelta(hours=5)
    records.record_instant(
        RunRecord(
            run_id="old",
            task="t",
            trigger=Trigger.SCHEDULE,
            started=old,
            due=old,
            finished=old,
            outcome=Outcome.OK,
            duration_s=1.0,
        )
    )
    h = Harness(home, records=records)
    h.sup.start()
    h.write("t", every=60)
    h.settle()
    assert len(h.executor.mains("t")) == 1, "one catch-up run, not five"
    h.executor.finish(h.executor.live_main("t"))
    h.settle()
    assert h.task("t")["next_run"] == (START + timedelta(minutes=60)).isoformat()
    records.close()


def test_requirements_change_builds_a_new_env_runs_keep_the_old_one_until_it_is_ready(h: Harness) -> None:
    h.write("t", every=1)
    h.settle()
    h.executor.finish(h.executor.live_main("t"))
    h.write("t", every=1, requirements="b")
    h.settle()
    assert h.envs.builds == [KEY_B] and h.state("t") == "scheduled"
    h.tick(60)
    assert h.executor.mains("t")[-1].env_key == KEY_A, "runs keep the old env while the new one builds"
    h.executor.finish(h.executor.live_main("t"))
    h.envs.ready.add(KEY_B)
    h.post(EnvBuilt(KEY_B))
    h.settle()
    inits = [r for r in h.executor.launched if r.mode is RunMode.INITIALIZE]
    assert [r.env_key for r in inits] == [KEY_A, KEY_B], "initialize() again in the new env"
    h.tick(60)
    assert h.executor.mains("t")[-1].env_key == KEY_B


def test_a_code_change_while_initialize_runs_initializes_once_more(h: Harness) -> None:
    h.executor.init_outcome = None
    h.write("t")
    h.settle()
    assert h.state("t") == "initializing"
    first_init = next(r for r in h.executor.live.values() if r.mode is RunMode.INITIALIZE)
    h.write("t", main="def main():\n    return 'v2'\n")
    h.settle()
    h.executor.finish(first_init.run_id)
    h.settle()
    assert h.state("t") == "initializing", "the old code's initialize() does not activate the new code"
    second = next(r for r in h.executor.live.values() if r.mode is RunMode.INITIALIZE)
    h.executor.finish(second.run_id)
    h.settle()
    assert h.state("t") in ("scheduled", "running")


def test_a_removed_task_disappears_its_run_finishes_and_is_recorded(h: Harness) -> None:
    h.write("t")
    h.settle()
    run_id = h.executor.live_main("t")
    shutil.rmtree(h.paths.task_dir("t"))
    h.settle()
    assert [t["name"] for t in h.sup.status()["tasks"]] == []
    assert "t" in h.sup.book.tasks, "kept until its run has ended"
    h.executor.finish(run_id, Outcome.FAILED)
    h.settle()
    assert "t" not in h.sup.book.tasks
    assert [r.outcome for r in h.rows("t")] == [Outcome.FAILED]


def test_a_backward_clock_step_never_delays_a_task_more_than_one_interval(h: Harness) -> None:
    h.write("t", every=10)
    h.settle()
    h.executor.finish(h.executor.live_main("t"))
    h.settle()
    h.clock.step_wall(-3 * 3600)
    h.settle()
    next_run = datetime.fromisoformat(h.task("t")["next_run"])
    assert next_run <= h.clock.now() + timedelta(minutes=10)
    h.tick(600)
    assert len(h.executor.mains("t")) == 2


def test_a_forward_clock_step_catches_up_once_without_skipped_rows(h: Harness) -> None:
    h.write("t", every=10)
    h.settle()
    h.executor.finish(h.executor.live_main("t"))
    h.settle()
    h.clock.step_wall(5 * 3600)
    h.settle()
    assert len(h.executor.mains("t")) == 2, "exactly one catch-up"
    h.executor.finish(h.executor.live_main("t"))
    h.tick(1)
    assert len(h.executor.mains("t")) == 2
    assert Outcome.SKIPPED not in [r.outcome for r in h.rows("t")]


def test_one_broken_task_is_its_own_error_and_the_others_run(h: Harness) -> None:
    h.envs.broken.add("bad")
    h.write("bad")
    h.write("good")
    h.settle()
    assert h.state("bad") == "error" and "key computation exploded" in h.task("bad")["error"]
    assert h.state("good") == "running"


def test_a_spawn_error_is_recorded_as_failed_and_the_streak_counts_it(h: Harness) -> None:
    h.executor.init_outcome = Outcome.OK
    h.write("t", every=1)
    h.settle()
    h.executor.finish(h.executor.live_main("t"), Outcome.FAILED)
    h.settle()
    h.executor.fail_next = (RunMode.MAIN, SpawnError("task 't': cannot start: no such file"))
    h.tick(60)
    assert [r.outcome for r in h.rows("t")] == [Outcome.FAILED, Outcome.FAILED]
    assert [f.consecutive_failures for f in h.facts] == [1, 2]
    h.tick(60)
    h.executor.finish(h.executor.live_main("t"))
    h.settle()
    assert [f.consecutive_failures for f in h.facts] == [1, 2, 0] and all(f.final for f in h.facts)


def test_testing_mode_confirms_without_launching_and_counts_as_a_start(h: Harness) -> None:
    h.write("t", every=1, extra="[Global]\nTesting = True\n")
    h.settle()
    h.tick(60)
    assert h.executor.mains("t") == []
    assert [r.outcome for r in h.rows("t")] == [Outcome.TESTING, Outcome.TESTING]


def test_shutdown_stops_runs_and_the_loop_ends_when_they_have(h: Harness) -> None:
    h.write("t")
    h.settle()
    h.sup.request_stop("test")
    h.settle()
    assert not h.sup.turn(), "nothing in flight: the loop ends"
    assert [r.outcome for r in h.rows("t")] == [Outcome.KILLED]


def test_due_runs_beyond_the_cap_wait_in_order_and_start_as_slots_free(tmp_path: Path) -> None:
    h = Harness(tmp_path / "home", home_config=HomeConfig(max_concurrent_runs=2))
    h.sup.start()
    for name in ("a", "b", "c", "d"):
        h.write(name, every=60)
    h.settle()
    assert {n: h.state(n) for n in "abcd"} == {"a": "running", "b": "running", "c": "queued", "d": "queued"}
    assert "waiting for a free run slot" in h.task("c")["why"]
    h.executor.finish(h.executor.live_main("b"))
    h.settle()
    assert [h.state(n) for n in "cd"] == ["running", "queued"], "first in, first out"
    assert h.sup.run_now("d").accepted is False
    h.executor.finish(h.executor.live_main("a"))
    h.settle()
    assert h.state("d") == "running"
    assert [r.due for r in h.rows("d")] == [START], "a queued run keeps its due time"
    h.records.close()


def test_a_transient_spawn_error_is_retried_with_the_same_history_row(h: Harness) -> None:
    h.executor.fail_next = (RunMode.MAIN, SpawnError("task 't': cannot start: Too many open files", transient=True))
    h.write("t")
    h.settle()
    assert h.state("t") == "queued" and h.executor.mains("t") == []
    h.tick(1)
    assert h.executor.mains("t") == [], "backoff: not before a few seconds"
    h.tick(2)
    (request,) = h.executor.mains("t")
    h.executor.finish(request.run_id)
    h.settle()
    rows = h.rows("t")
    assert [(r.run_id, r.outcome) for r in rows] == [(request.run_id, Outcome.OK)]
    assert [f.consecutive_failures for f in h.facts] == [0]


def test_a_transient_initialize_spawn_error_is_retried(h: Harness) -> None:
    h.executor.fail_next = (
        RunMode.INITIALIZE,
        SpawnError("task 't': cannot start: Cannot allocate memory", transient=True),
    )
    h.write("t")
    h.settle()
    assert h.state("t") == "initializing"
    h.tick(3)
    assert h.state("t") == "running"


def test_a_transient_env_build_failure_is_retried_with_backoff(h: Harness) -> None:
    h.write("t", requirements="b")
    h.settle()
    assert h.state("t") == "env-building" and h.envs.builds == [KEY_B]
    h.post(EnvBuilt(KEY_B, error="task 't': index unreachable", transient=True))
    h.settle()
    assert h.state("t") == "env-failed" and [r.outcome for r in h.rows("t")] == [Outcome.ENV_FAILED]
    h.tick(59)
    assert h.envs.builds == [KEY_B]
    h.tick(1)
    assert h.envs.builds == [KEY_B, KEY_B] and h.state("t") == "env-building"
    h.post(EnvBuilt(KEY_B, error="task 't': index unreachable", transient=True))
    h.settle()
    h.tick(60)
    assert h.envs.builds == [KEY_B, KEY_B], "the second wait is twice as long"
    h.tick(60)
    assert len(h.envs.builds) == 3
    h.envs.ready.add(KEY_B)
    h.post(EnvBuilt(KEY_B))
    h.settle()
    assert h.state("t") == "scheduled", "loaded (the env-failed row counts as its last start)"


def test_a_permanent_env_build_failure_waits_for_the_files_to_change(h: Harness) -> None:
    h.write("t", requirements="b")
    h.settle()
    h.post(EnvBuilt(KEY_B, error="task 't': no matching distribution"))
    h.tick(7200)
    assert h.state("t") == "env-failed" and h.envs.builds == [KEY_B]


def test_the_loop_sleeps_until_the_next_due_run_but_never_longer_than_a_minute(h: Harness) -> None:
    h.write("soon", every=1)
    h.write("later", every=600)
    h.settle()
    for name in ("soon", "later"):
        h.executor.finish(h.executor.live_main(name))
    h.tick(20)
    assert h.sup.sleep_for() == pytest.approx(40.0), "woken for the 1-minute task's next slot"
    h.write("soon", every=600)  # now nothing is due within the hour
    h.settle()
    assert h.sup.sleep_for() == pytest.approx(60.0), "at least one wake a minute to notice clock steps"


def test_a_start_being_retried_is_closed_when_the_task_goes_away_or_the_supervisor_stops(h: Harness) -> None:
    for name in ("gone", "stays"):
        h.executor.fail_next = (
            RunMode.MAIN,
            SpawnError("cannot start: Resource temporarily unavailable", transient=True),
        )
        h.write(name)
        h.settle()
    assert [h.state(n) for n in ("gone", "stays")] == ["queued", "queued"]
    shutil.rmtree(h.paths.task_dir("gone"))
    h.settle()
    h.sup.request_stop("test")
    h.settle()
    assert not h.sup.turn()
    for name in ("gone", "stays"):
        (row,) = h.rows(name)
        assert row.outcome is Outcome.KILLED and row.message and row.message.startswith("never started")
    assert h.executor.mains() == []


def test_a_retry_waits_for_a_run_slot_like_any_due_run(tmp_path: Path) -> None:
    h = Harness(tmp_path / "home", home_config=HomeConfig(max_concurrent_runs=1))
    h.sup.start()
    h.write("a", every=60, extra="[Retry]\nAttempts = 1\nDelaySeconds = 30\n")
    h.write("b", every=60)
    h.settle()
    first = h.executor.live_main("a")
    assert h.state("b") == "queued"
    h.executor.finish(first, Outcome.FAILED)
    h.settle()
    assert h.state("b") == "running" and h.facts[-1].final is False
    h.tick(30)
    assert h.state("a") == "queued", "the retry is due but the only slot is busy"
    h.executor.finish(h.executor.live_main("b"))
    h.settle()
    retry = h.executor.live_main("a")
    h.executor.finish(retry)
    h.settle()
    rows = h.rows("a")
    assert [(r.trigger, r.attempt, r.retry_of, r.outcome) for r in rows] == [
        (Trigger.SCHEDULE, 1, None, Outcome.FAILED),
        (Trigger.RETRY, 2, first, Outcome.OK),
    ]
    assert [f.consecutive_failures for f in h.facts if f.task == "a"] == [0, 0]
    h.records.close()
