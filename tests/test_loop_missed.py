"""``missed`` rows through the loop (fake clock and executor, real history; tests/support/loop_harness.py):
an outage across a restart, an incident that grows one row, a queued run and a gated run dropped for their
next slot, and what misses nothing (a paused, a disabled and a never-run task)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import KEY_A, START, FakeProbe, Harness

from supervisor.history.store import HistoryStore
from supervisor.model import HomeConfig, MissedReason, Outcome, RunRecord

pytestmark = pytest.mark.timeout(30)
MIN = timedelta(minutes=1)


def missed(h: Harness, name: str) -> list[RunRecord]:
    return [r for r in h.rows(name) if r.outcome is Outcome.MISSED]


def ran_once(home: Path, name: str = "t", *, extra: str = "") -> None:
    """A first supervisor runs ``name`` (every minute) once at START, then stops."""
    h = Harness(home)
    h.sup.start()
    h.write(name, every=1, extra=extra)
    h.settle()
    h.executor.finish(h.executor.live_main(name))
    h.settle()
    h.records.close()
    h.task_logs.close()


@pytest.fixture
def restarted(tmp_path: Path) -> Iterator[Harness]:
    """The second supervisor on the same home, started 10.5 minutes after the first run."""
    ran_once(tmp_path / "home")
    h = Harness(tmp_path / "home")
    h.clock.advance(10.5 * 60)
    yield h
    h.records.close()
    h.task_logs.close()


def test_an_outage_is_one_row_with_its_count_and_span_and_the_catch_up_its_own(restarted: Harness) -> None:
    h = restarted
    h.sup.start()
    h.settle()
    (row,) = missed(h, "t")
    # Slots 10:01 .. 10:10 passed while down; CatchUp=once runs one catch-up, which stands for 10:10.
    assert (row.reason, row.slots, row.due, row.finished) == (MissedReason.DOWN, 9, START + MIN, START + 9 * MIN)
    assert "9 slots from" in (row.message or "") and "while the supervisor was down" in (row.message or "")
    (catch_up,) = [r for r in h.executor.mains("t")]
    assert catch_up.due == h.clock.now(), "the catch-up run is its own run, as before"
    assert h.sup.book.tasks["t"].failures == 0, "missed is no failure"
    assert h.records.last_anchor("t") == h.clock.now(), "the missed row did not move the anchor; the catch-up did"
    assert h.records.totals().missed["t"]["down"] == 9, "the metric's source counts the slots"


def test_with_catch_up_skip_every_past_slot_is_missed_and_a_second_restart_counts_none_twice(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ran_once(home, extra="CatchUp = skip\n")
    for minutes, expected in ((10.5, [10]), (10.7, [10])):  # the second start, 12 s later, finds nothing new
        h = Harness(home)
        h.clock.advance(minutes * 60)
        h.sup.start()
        h.settle()
        assert [r.slots for r in missed(h, "t")] == expected
        assert h.executor.mains("t") == [], "skip: no catch-up; the next slot is 10:11"
        h.records.close()
        h.task_logs.close()


def test_a_task_that_never_ran_a_paused_and_a_disabled_task_miss_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ran_once(home, "paused")
    ran_once(home, "off")
    records = HistoryStore(Harness(home).paths.database)
    records.pause("paused", since=START)
    records.close()
    h = Harness(home)
    h.clock.advance(30 * 60)
    h.write("off", every=1, extra="[Global]\nEnabled = False\n")
    h.write("fresh", every=1)
    h.sup.start()
    h.settle()
    assert [missed(h, n) for n in ("paused", "off", "fresh")] == [[], [], []]
    h.records.close()
    h.task_logs.close()


def test_an_incident_grows_one_row_and_a_new_incident_is_a_new_row(tmp_path: Path) -> None:
    h = Harness(tmp_path / "home")
    h.sup.start()
    h.write("t", every=1)
    h.settle()
    h.executor.finish(h.executor.live_main("t"))
    h.settle()
    h.write("t", every=1, main="def main():\n    return 'v2'\n")  # new code: initialize() again, which fails
    h.executor.init_outcome = Outcome.FAILED
    h.settle()
    assert h.state("t") == "error"
    for _ in range(5):
        h.tick(60)
    (row,) = missed(h, "t")
    assert (row.reason, row.slots, row.due, row.finished) == (MissedReason.ERROR, 5, START + MIN, START + 5 * MIN)
    notices = [f for f in h.facts if f.outcome is Outcome.MISSED]
    assert len(notices) == 1 and notices[0].final, "one notice per incident, however long it lasts"
    assert h.task("t")["last_run"]["slots"] == 5, "status shows the grown row"
    assert (
        "missed 5 slots from 2026-03-02 10:01:00 UTC to 2026-03-02 10:05:00 UTC while the task could not run"
        in (h.task("t")["why"])
    )
    assert h.sup.book.tasks["t"].failures == 0
    h.write("t", every=1, main="def main():\n    return 'v3'\n")  # still failing: a new incident
    h.tick(60)
    h.tick(60)
    assert [(r.slots, r.due) for r in missed(h, "t")] == [(5, START + MIN), (2, START + 6 * MIN)]
    h.executor.init_outcome = Outcome.OK
    h.write("t", every=1, main="def main():\n    return 'fixed'\n")
    h.settle()
    h.tick(120)
    assert len(missed(h, "t")) == 2, "loaded again: the incident ended"
    h.records.close()
    h.task_logs.close()


def test_an_env_failed_task_misses_with_reason_env(tmp_path: Path) -> None:
    from supervisor.events import EnvBuilt

    h = Harness(tmp_path / "home")
    h.sup.start()
    h.write("t", every=1)
    h.settle()
    h.executor.finish(h.executor.live_main("t"))
    h.settle()
    h.envs.gone[KEY_A] = "its interpreter /usr/bin/python3.11 is gone"  # a distro upgrade: rebuilt once
    h.envs.ready.discard(KEY_A)
    h.write("t", every=1, main="def main():\n    return 'v2'\n")
    h.settle()
    assert h.state("t") == "env-building"
    h.post(EnvBuilt(KEY_A, error="task 't': pip failed"))  # the rebuild fails: env-failed
    h.settle()
    assert h.state("t") == "env-failed"
    h.tick(60)
    h.tick(60)
    (row,) = missed(h, "t")
    assert (row.reason, row.slots) == (MissedReason.ENV, 2)
    h.records.close()
    h.task_logs.close()


def test_a_queued_run_dropped_for_its_next_slot_is_one_missed_slot(tmp_path: Path) -> None:
    h = Harness(tmp_path / "home", home_config=HomeConfig(max_concurrent_runs=1))
    h.sup.start()
    h.write("busy", every=600)
    h.settle()
    h.write("t", every=1)
    h.settle()
    assert h.state("t") == "queued"
    h.tick(60)
    (row,) = missed(h, "t")
    assert (row.reason, row.slots, row.due) == (MissedReason.QUEUE, 1, START)
    assert h.state("t") == "queued" and h.sup.slots.get("t").due == START + MIN, "the new slot's run waits instead"
    assert [r.outcome for r in h.rows("t")] == [Outcome.MISSED], "no skipped row besides"
    h.records.close()
    h.task_logs.close()


def test_a_gated_run_dropped_for_its_next_slot_is_one_missed_slot(tmp_path: Path) -> None:
    probe = FakeProbe(free_mb=100)
    h = Harness(tmp_path / "home", gate_probe=probe)
    h.sup.start()
    h.write("t", every=1, extra="[Limits]\nStartIfFreeMemoryMB = 2048\n")
    h.settle()
    h.tick(60)
    h.tick(60)
    rows = missed(h, "t")
    assert [(r.reason, r.slots, r.due) for r in rows] == [
        (MissedReason.GATE, 1, START),
        (MissedReason.GATE, 1, START + MIN),
    ]
    assert "StartIfFreeMemoryMB" in (rows[0].message or "")
    h.records.close()
    h.task_logs.close()


def test_a_task_broken_at_start_gets_the_outage_up_to_then_and_an_incident_after(restarted: Harness) -> None:
    h = restarted
    h.executor.init_outcome = Outcome.FAILED
    h.sup.start()
    h.settle()
    assert h.state("t") == "error"
    h.tick(60)
    h.tick(60)
    down, error = missed(h, "t")
    # 10:01 .. 10:10 while down (no catch-up can run: all ten count); 10:11 and 10:12 while in error.
    assert (down.reason, down.slots, down.finished) == (MissedReason.DOWN, 10, START + 10 * MIN)
    assert (error.reason, error.slots, error.due, error.finished) == (
        MissedReason.ERROR,
        2,
        START + 11 * MIN,
        START + 12 * MIN,
    )
    assert h.executor.mains("t") == []


def test_a_missed_slot_neither_adds_to_nor_ends_a_failure_streak(tmp_path: Path) -> None:
    probe = FakeProbe()
    h = Harness(tmp_path / "home", gate_probe=probe)
    h.sup.start()
    h.write("t", every=1, extra="[Limits]\nStartIfFreeMemoryMB = 2048\n")
    h.settle()
    for _ in range(2):
        h.executor.finish(h.executor.live_main("t"), Outcome.FAILED, message="boom")
        h.settle()
        h.tick(60)
    assert h.task("t")["consecutive_failures"] == 2
    h.executor.finish(h.executor.live_main("t"), Outcome.FAILED, message="boom")
    h.settle()
    probe.free_mb = 100  # the next due run is held by the gate until the slot after it comes
    h.tick(60)
    h.tick(60)
    assert [r.reason for r in missed(h, "t")] == [MissedReason.GATE]
    assert h.task("t")["consecutive_failures"] == 3, "the three failures count; the missed slot does not"
    assert h.sup.history.failure_streak("t") == 3, "nor does it in the streak read back from the history"
    h.records.close()
    h.task_logs.close()
