"""[Frequency] After through the loop (fake clock and executor, real folders, config and history): a chain runs
after ok and not after failed unless AfterOutcome says so, after each of several upstreams, after a retry's
final attempt only, after a manual run, never while paused, waits for its window, records an overlap as
skipped, chains on, refuses cycles, warns about a missing upstream, and catches up once across a restart."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import START, Harness

from supervisor.model import Outcome, RunMode, Trigger

pytestmark = pytest.mark.timeout(30)


def write_after(h: Harness, name: str, after: str, extra: str = "") -> None:
    folder = h.paths.task_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text("def main():\n    return 'ok'\n")
    (folder / "config.ini").write_text(f"[Frequency]\nAfter = {after}\n{extra}")
    (folder / "requirements.txt").write_text("")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "home")
    harness.sup.start()
    yield harness
    harness.records.close()
    harness.task_logs.close()


def finish_up(h: Harness, task: str, outcome: Outcome = Outcome.OK) -> str:
    """End the task's run in flight with ``outcome``; its run id."""
    run_id = h.executor.live_main(task)
    h.executor.finish(run_id, outcome)
    h.settle()
    return run_id


def test_a_chain_runs_after_ok_with_the_upstream_in_its_env_and_row(h: Harness) -> None:
    h.write("backup", every=60)
    write_after(h, "report", "backup")
    h.settle()
    assert h.executor.mains("report") == [] and h.state("report") == "scheduled", "no due time is not done"
    assert h.task("report")["why"].startswith("runs after backup (ok)")
    assert (h.task("report")["after"], h.task("backup")["downstream"]) == (["backup"], ["report"])
    up = finish_up(h, "backup")
    (run,) = h.executor.mains("report")
    assert dict(run.variables) == {
        "TASK_UPSTREAM_TASK": "backup",
        "TASK_UPSTREAM_RUN_ID": up,
        "TASK_UPSTREAM_OUTCOME": "ok",
    }
    h.executor.finish(run.run_id)
    h.settle()
    (row,) = h.rows("report")
    assert (row.trigger, row.upstream, row.outcome) == (Trigger.AFTER, up, Outcome.OK)


def test_failed_upstreams_start_nothing_unless_after_outcome_says_so(h: Harness) -> None:
    h.write("up", every=1)
    write_after(h, "on-ok", "up")
    write_after(h, "on-fail", "up", "AfterOutcome = failed\n")
    write_after(h, "on-any", "up", "AfterOutcome = any\n")
    h.settle()
    finish_up(h, "up", Outcome.FAILED)
    assert [len(h.executor.mains(t)) for t in ("on-ok", "on-fail", "on-any")] == [0, 1, 1]
    for task in ("on-fail", "on-any"):
        h.executor.finish(h.executor.live_main(task))
    h.tick(60)
    finish_up(h, "up", Outcome.TIMEOUT)  # a failure outcome too
    assert [len(h.executor.mains(t)) for t in ("on-ok", "on-fail", "on-any")] == [0, 2, 2]
    for task in ("on-fail", "on-any"):
        h.executor.finish(h.executor.live_main(task))
    h.tick(60)
    finish_up(h, "up", Outcome.OK)
    assert [len(h.executor.mains(t)) for t in ("on-ok", "on-fail", "on-any")] == [1, 2, 3]


def test_several_upstreams_each_start_it_no_join(h: Harness) -> None:
    h.write("a", every=60)
    h.write("b", every=60)
    write_after(h, "d", "a, b")
    h.settle()
    ran_a = finish_up(h, "a")
    h.executor.finish(h.executor.live_main("d"))
    h.settle()
    ran_b = finish_up(h, "b")
    h.executor.finish(h.executor.live_main("d"))
    h.settle()
    assert [(r.trigger, r.upstream) for r in h.rows("d")] == [(Trigger.AFTER, ran_a), (Trigger.AFTER, ran_b)]
    assert "each (no join" in h.task("d")["why"]


def test_only_the_final_attempt_of_a_retried_upstream_counts(h: Harness) -> None:
    h.write("up", every=60, extra="[Retry]\nAttempts = 1\nDelaySeconds = 10\n")
    write_after(h, "d", "up", "AfterOutcome = any\n")
    h.settle()
    finish_up(h, "up", Outcome.FAILED)
    assert h.executor.mains("d") == [], "attempt 1 is retried: not final"
    h.tick(10)
    retry = finish_up(h, "up", Outcome.OK)
    (run,) = h.executor.mains("d")
    assert dict(run.variables)["TASK_UPSTREAM_RUN_ID"] == retry


def test_a_manual_upstream_run_and_an_after_run_start_the_next_link(h: Harness) -> None:
    h.write("up", every=1440)
    write_after(h, "mid", "up")
    write_after(h, "end", "mid")
    h.settle()
    h.executor.finish(h.executor.live_main("up"))
    h.settle()
    h.executor.finish(h.executor.live_main("mid"))
    h.settle()
    h.executor.finish(h.executor.live_main("end"))
    h.settle()
    reply = h.request("run-now", name="up")
    manual = reply["run_id"]
    finish_up(h, "up")
    mid = finish_up(h, "mid")
    assert h.rows("mid")[-1].upstream == manual
    assert dict(h.executor.mains("end")[-1].variables)["TASK_UPSTREAM_RUN_ID"] == mid
    assert dict(h.executor.mains("end")[-1].variables)["TASK_UPSTREAM_TASK"] == "mid"


def test_a_paused_downstream_does_not_run_and_does_not_make_it_up(h: Harness) -> None:
    h.write("up", every=60)
    write_after(h, "d", "up")
    h.settle()
    h.request("pause", name="d")
    finish_up(h, "up")
    assert h.executor.mains("d") == [] and h.rows("d") == []
    h.request("resume", name="d")
    h.tick(30)
    assert h.executor.mains("d") == []


def test_outside_its_window_the_start_waits_for_the_window(h: Harness) -> None:
    h.write("up", every=1440)
    write_after(h, "d", "up", "AllowedFrom = 12:00\nAllowedTo = 13:00\n")  # START is 10:00 UTC
    h.settle()
    finish_up(h, "up")
    assert h.executor.mains("d") == []
    assert h.sup.sleep_for() <= 60
    h.tick(2 * 3600 - 1)
    assert h.executor.mains("d") == []
    h.tick(1)
    (run,) = h.executor.mains("d")
    assert run.due == START.replace(hour=12)


def test_an_upstream_ending_while_the_downstream_runs_is_a_skipped_row(h: Harness) -> None:
    h.write("up", every=1)
    write_after(h, "d", "up")
    h.settle()
    finish_up(h, "up")
    assert len(h.executor.mains("d")) == 1
    h.tick(60)
    second = finish_up(h, "up")
    (skipped,) = [r for r in h.rows("d") if r.outcome is Outcome.SKIPPED]
    assert (skipped.trigger, skipped.upstream) == (Trigger.AFTER, second)


def test_testing_downstream_confirms_with_the_upstream_in_its_row(h: Harness) -> None:
    h.write("up", every=60)
    write_after(h, "d", "up", "[Global]\nTesting = True\n")
    h.settle()
    up = finish_up(h, "up")
    assert h.executor.mains("d") == []
    (row,) = h.rows("d")
    assert (row.outcome, row.trigger, row.upstream) == (Outcome.TESTING, Trigger.AFTER, up)


def test_a_cycle_is_an_error_on_each_task_until_it_is_broken(h: Harness) -> None:
    write_after(h, "a", "b")
    write_after(h, "b", "a")
    h.write("c", every=60)
    h.settle()
    assert (h.state("a"), h.state("b"), h.state("c")) == ("error", "error", "running")
    assert h.task("a")["error"].endswith("a cycle a -> b -> a")
    assert h.task("b")["error"].endswith("a cycle b -> a -> b")
    assert "config.ini: [Frequency] After = 'b'" in h.task("a")["error"]
    write_after(h, "b", "c")
    h.settle()
    assert (h.state("a"), h.state("b")) == ("scheduled", "scheduled"), "a loads again once the cycle is gone"


def test_a_missing_upstream_is_a_warning_and_the_task_stays_loaded(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    write_after(h, "d", "ghost")
    with caplog.at_level(logging.WARNING, logger=h.sup.log.name):
        h.sup.log.propagate = True
        h.settle()
    assert h.state("d") == "scheduled"
    assert "After names 'ghost', which is not a task folder" in caplog.text
    h.write("ghost", every=60)
    h.settle()
    finish_up(h, "ghost")
    assert len(h.executor.mains("d")) == 1, "it runs after the task once it exists"


def test_across_a_restart_a_missed_upstream_run_starts_it_once_never_twice(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = Harness(home)
    first.sup.start()
    first.write("up", every=1440)
    write_after(first, "d", "up", "AllowedFrom = 12:00\nAllowedTo = 13:00\n")  # START is 10:00 UTC
    first.settle()
    first.executor.finish(first.executor.live_main("up"))
    first.tick(2 * 3600)  # d's window opens: it runs after up's first run
    first.executor.finish(first.executor.live_main("d"))
    first.tick(22 * 3600)  # the next day 10:00: up's next slot
    missed = first.executor.live_main("up")
    first.executor.finish(missed)
    first.settle()
    assert len(first.executor.mains("d")) == 1, "d waits for its window when the supervisor stops"
    first.records.close()
    first.task_logs.close()

    def restart(at: timedelta) -> Harness:
        again = Harness(home)
        again.clock.advance(at.total_seconds())
        again.sup.start()
        again.settle()
        return again

    second = restart(timedelta(hours=26, minutes=30))  # the next day 12:30, inside d's window
    try:
        (run,) = second.executor.mains("d")
        assert dict(run.variables)["TASK_UPSTREAM_RUN_ID"] == missed, "the missed upstream run starts it once"
        second.executor.finish(run.run_id)
        second.settle()
    finally:
        second.records.close()
        second.task_logs.close()
    third = restart(timedelta(hours=26, minutes=40))
    try:
        assert third.executor.mains("d") == [] and third.executor.mains("up") == [], "never twice"
        assert [r.upstream for r in third.rows("d")][1] == missed
        assert len(third.rows("d")) == 2
    finally:
        third.records.close()
        third.task_logs.close()


def test_a_new_downstream_does_not_run_for_old_upstream_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = Harness(home)
    first.sup.start()
    first.write("up", every=1440)
    first.settle()
    first.executor.finish(first.executor.live_main("up"))
    first.settle()
    first.records.close()
    first.task_logs.close()
    second = Harness(home)
    second.clock.advance(3600)
    second.sup.start()
    write_after(second, "d", "up")
    try:
        second.settle()
        assert second.state("d") == "scheduled" and second.executor.mains("d") == []
    finally:
        second.records.close()
        second.task_logs.close()


def test_a_downstream_still_loading_keeps_the_start_until_it_is_loaded(h: Harness) -> None:
    h.write("up", every=60)
    h.settle()
    h.executor.init_outcome = None  # d's initialize() stays in flight
    write_after(h, "d", "up")
    h.settle()
    assert h.state("d") == "initializing"
    up = finish_up(h, "up")
    assert h.executor.mains("d") == []
    (init,) = [r for r in h.executor.live.values() if r.task == "d" and r.mode is RunMode.INITIALIZE]
    h.executor.finish(init.run_id)
    h.settle()
    (run,) = h.executor.mains("d")
    assert dict(run.variables)["TASK_UPSTREAM_RUN_ID"] == up


def test_a_retry_of_a_downstream_run_keeps_its_upstream_in_its_env_and_row(h: Harness) -> None:
    h.write("backup", every=60)
    write_after(h, "upload", "backup", "[Retry]\nAttempts = 1\nDelaySeconds = 10\n")
    h.settle()
    up = finish_up(h, "backup")
    first = finish_up(h, "upload", Outcome.FAILED)
    h.tick(11)
    retry = h.executor.mains("upload")[-1]
    assert retry.run_id != first and dict(retry.variables)["TASK_UPSTREAM_RUN_ID"] == up
    h.executor.finish(retry.run_id)
    h.settle()
    rows = sorted(h.rows("upload"), key=lambda r: r.attempt)
    assert [(r.trigger, r.attempt, r.upstream, r.outcome) for r in rows] == [
        (Trigger.AFTER, 1, up, Outcome.FAILED),
        (Trigger.RETRY, 2, up, Outcome.OK),
    ]
