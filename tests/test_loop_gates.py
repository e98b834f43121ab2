"""Start gates ([Limits] StartIfFreeMemoryMB, StartIfLoadBelow) through the loop: a fake probe for the
policy (queued with the gate in ``why``, starts when it opens, dropped at the next slot, run-now ignores
the gates unless asked), and the real probe reading this machine's /proc/meminfo and load."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import START, FakeProbe, Harness

from supervisor.config.schema import parse_task_config
from supervisor.core.slots import GATE_POLL_S
from supervisor.errors import ConfigError
from supervisor.model import HomeConfig, Limits, MissedReason, Outcome, Trigger
from supervisor.scheduling.gates import HostProbe, closed_gate, parse_mem_available_mb

pytestmark = pytest.mark.timeout(30)

MEMORY_GATE = "[Limits]\nStartIfFreeMemoryMB = 2048\n"


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe()


@pytest.fixture
def h(tmp_path: Path, probe: FakeProbe) -> Iterator[Harness]:
    harness = Harness(tmp_path / "home", home_config=HomeConfig(max_concurrent_runs=1), gate_probe=probe)
    harness.sup.start()
    yield harness
    harness.records.close()
    harness.task_logs.close()


def test_a_closed_memory_gate_queues_the_due_run_until_it_opens(h: Harness, probe: FakeProbe) -> None:
    probe.free_mb = 1500
    h.write("t", every=60, extra=MEMORY_GATE)
    h.settle()
    assert h.state("t") == "queued" and h.executor.mains("t") == []
    assert "StartIfFreeMemoryMB = 2048: 1500 MB free" in h.task("t")["why"]
    probe.free_mb = 1800
    h.tick(GATE_POLL_S)
    assert h.executor.mains("t") == [] and "1800 MB free" in h.task("t")["why"], "looked again, still closed"
    probe.free_mb = 4096
    h.tick(GATE_POLL_S)
    (run,) = h.executor.mains("t")
    assert h.state("t") == "running"
    h.executor.finish(run.run_id)
    h.settle()
    assert [r.due for r in h.rows("t")] == [START], "the run kept its due time"


def test_a_closed_load_gate_queues_and_an_unreadable_value_opens_it(h: Harness, probe: FakeProbe) -> None:
    probe.load = 1.5
    h.write("t", every=60, extra="[Limits]\nStartIfLoadBelow = 0.8\n")
    h.settle()
    assert "StartIfLoadBelow = 0.8: load 1.50 per core" in h.task("t")["why"]
    probe.load = None  # no load average on this machine: the gate must not hold runs for ever
    h.tick(GATE_POLL_S)
    assert len(h.executor.mains("t")) == 1


def test_a_gated_run_takes_no_slot_and_holds_nobody_up(h: Harness, probe: FakeProbe) -> None:
    probe.free_mb = 100
    h.write("a", every=60, extra=MEMORY_GATE)
    h.write("b", every=60)
    h.settle()
    assert (h.state("a"), h.state("b")) == ("queued", "running"), "b starts in the only slot"


def test_the_next_slot_drops_the_waiting_run_and_queues_its_own(
    h: Harness, probe: FakeProbe, caplog: pytest.LogCaptureFixture
) -> None:
    probe.free_mb = 100
    h.write("t", every=1, extra=MEMORY_GATE)
    h.settle()
    logging.getLogger(h.sup.log.name).propagate = True
    with caplog.at_level(logging.WARNING):
        h.tick(60)
    assert h.state("t") == "queued"
    assert any("missed because its start gate stayed closed" in m for m in caplog.messages)
    (row,) = h.rows("t")
    assert (row.outcome, row.reason, row.slots, row.due) == (Outcome.MISSED, MissedReason.GATE, 1, START)
    probe.free_mb = 4096
    h.tick(GATE_POLL_S)
    (run,) = h.executor.mains("t")
    assert run.due == START + timedelta(minutes=1), "the new slot's run, not the dropped one"


def test_run_now_ignores_the_gates_unless_asked_to_respect_them(h: Harness, probe: FakeProbe) -> None:
    h.write("t", every=600, extra=MEMORY_GATE)
    h.settle()
    h.executor.finish(h.executor.live_main("t"))
    h.settle()
    probe.free_mb = 100
    refused = h.request("run-now", name="t", respect_gates=True)
    assert refused["ok"] is False and refused["code"] == "gated"
    assert "StartIfFreeMemoryMB = 2048: 100 MB free" in refused["error"]
    accepted = h.request("run-now", name="t")
    assert accepted["ok"] is True
    assert [r.trigger for r in h.executor.mains("t")] == [Trigger.SCHEDULE, Trigger.MANUAL]


def test_the_real_probe_reads_this_machine(tmp_path: Path) -> None:
    """A threshold just above the memory free now closes the gate with the real value; 1 MB opens it."""
    probe = HostProbe()
    free = probe.free_memory_mb()
    load = probe.load_per_core()
    assert free is not None and free > 0 and load is not None and load >= 0
    text = Path("/proc/meminfo").read_text()
    assert parse_mem_available_mb(text) == pytest.approx(free, rel=0.2)
    above = closed_gate(Limits(start_if_free_memory_mb=free + 1_000_000), probe)
    assert above is not None and "MB free" in above
    assert closed_gate(Limits(start_if_free_memory_mb=1), probe) is None
    h = Harness(tmp_path / "home")  # the default probe: the real machine
    h.sup.start()
    h.write("t", every=60, extra=f"[Limits]\nStartIfFreeMemoryMB = {free + 1_000_000:.0f}\n")
    h.settle()
    assert h.state("t") == "queued" and "MB free" in h.task("t")["why"]
    h.records.close()
    h.task_logs.close()


def test_meminfo_parsing_and_config_errors(tmp_path: Path) -> None:
    assert parse_mem_available_mb("MemTotal: 100 kB\nMemAvailable:    2048 kB\n") == 2.0
    assert parse_mem_available_mb("MemTotal: 100 kB\n") is None
    spec = parse_task_config(
        "[Frequency]\nEveryXMinutes = 1\n[Limits]\nStartIfFreeMemoryMB = 512\nStartIfLoadBelow = 0.75\n",
        task="t",
        path=tmp_path / "config.ini",
    ).spec
    assert (spec.limits.start_if_free_memory_mb, spec.limits.start_if_load_below) == (512, 0.75)
    with pytest.raises(ConfigError, match=r"\[Limits\] StartIfLoadBelow.*'-1'"):
        parse_task_config(
            "[Frequency]\nEveryXMinutes = 1\n[Limits]\nStartIfLoadBelow = -1\n", task="t", path=tmp_path / "config.ini"
        )
