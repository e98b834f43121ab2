"""[Output] retention, the pure parts: the prune plan, the config keys (task, home default, errors), what
`validate` and `status --json` show, and the OutputRetention consumer's rules (only after a real run, never
while one is in flight, at most once an hour) with a fake pruner."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from supervisor.config.schema import parse_home_config, parse_task_config
from supervisor.core.outputs import OutputRetention
from supervisor.errors import ConfigError
from supervisor.execution.pruning import PruneResult
from supervisor.execution.retention import DAY_S, MIB, OutputFile, plan_prune
from supervisor.logsetup import TaskLogs
from supervisor.model import Outcome, Retention, RunFinished, RunRecord, RunStarted, TaskSpec, Trigger
from supervisor.query.status import retention_json
from tests.support.loop_harness import FakeClock

pytestmark = pytest.mark.timeout(30)

NOW = 1_800_000_000.0
BASE = "[Frequency]\nEveryXMinutes = 60\n"


def f(name: str, *, age_days: float = 0.0, size: int = 1) -> OutputFile:
    return OutputFile(tuple(name.split("/")), size, NOW - age_days * DAY_S)


def names(files: tuple[OutputFile, ...]) -> list[str]:
    return ["/".join(x.parts) for x in files]


# --- the plan ---------------------------------------------------------------------------------------------


def test_no_limit_means_an_empty_plan_whatever_the_files() -> None:
    files = [f("a", age_days=9999, size=10**9)]
    assert plan_prune(files, Retention(), now=NOW) == ()


def test_keep_days_removes_only_files_older_than_n_days() -> None:
    files = [f("new", age_days=1), f("old", age_days=8), f("edge", age_days=6.99), f("d/older", age_days=30)]
    assert names(plan_prune(files, Retention(keep_days=7), now=NOW)) == ["d/older", "old"]


def test_keep_files_removes_the_oldest_until_n_remain() -> None:
    files = [f("c", age_days=1), f("a", age_days=3), f("b", age_days=2), f("d", age_days=0)]
    assert names(plan_prune(files, Retention(keep_files=2), now=NOW)) == ["a", "b"]
    assert plan_prune(files, Retention(keep_files=4), now=NOW) == ()


def test_keep_mb_removes_the_oldest_until_the_rest_fits() -> None:
    files = [f("a", age_days=3, size=MIB), f("b", age_days=2, size=MIB), f("c", age_days=1, size=MIB // 2)]
    assert names(plan_prune(files, Retention(keep_mb=1.5), now=NOW)) == ["a"]
    assert names(plan_prune(files, Retention(keep_mb=1.4), now=NOW)) == ["a", "b"]
    assert names(plan_prune(files, Retention(keep_mb=0.1), now=NOW)) == ["a", "b", "c"]


def test_limits_combine_and_the_strictest_wins() -> None:
    files = [f(str(i), age_days=i, size=MIB) for i in range(10)]  # "9" is the oldest
    assert names(plan_prune(files, Retention(keep_days=5.5, keep_files=8), now=NOW)) == ["9", "8", "7", "6"]
    assert names(plan_prune(files, Retention(keep_days=8.5, keep_files=8, keep_mb=2), now=NOW)) == [
        "9",
        "8",
        "7",
        "6",
        "5",
        "4",
        "3",
        "2",
    ]


def test_a_file_from_the_future_counts_as_the_newest() -> None:
    files = [f("future", age_days=-3), f("old", age_days=2), f("new", age_days=1)]
    assert names(plan_prune(files, Retention(keep_days=1.5, keep_files=1), now=NOW)) == ["old", "new"]


def test_equal_times_are_ordered_by_path_so_the_plan_is_stable() -> None:
    files = [f("b"), f("a"), f("c")]
    assert names(plan_prune(files, Retention(keep_files=1), now=NOW)) == ["a", "b"]


# --- config -----------------------------------------------------------------------------------------------


def task_spec(text: str, **kw: Any) -> TaskSpec:
    return parse_task_config(BASE + text, task="t", path=Path("/h/Tasks/t/config.ini"), **kw).spec


def test_output_keys_parse_case_insensitively_and_zero_means_no_limit() -> None:
    spec = task_spec("[output]\nkeepdays = 7\nKeepFiles = 100\nKEEPMB = 0.5\n")
    assert spec.retention == Retention(keep_days=7, keep_files=100, keep_mb=0.5)
    assert spec.retention.describe() == "KeepDays 7, KeepFiles 100, KeepMB 0.5"
    assert task_spec("[Output]\nKeepDays = 0\nKeepFiles = 0\n").retention == Retention()
    assert not task_spec("").retention.enabled and task_spec("").retention.describe() == "off"


def test_the_home_default_applies_and_a_task_can_switch_a_limit_off() -> None:
    home, warnings = parse_home_config("[Output]\nKeepDays = 30\nKeepMB = 100\n", path=Path("/h/taskautomation.ini"))
    assert warnings == () and home.retention == Retention(keep_days=30, keep_mb=100)
    spec = task_spec("[Output]\nKeepMB = 0\nKeepFiles = 5\n", retention_defaults=home.retention)
    assert spec.retention == Retention(keep_days=30, keep_files=5)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("KeepDays = -1", "[Output] KeepDays = '-1': must be 0 or more"),
        ("KeepDays = week", "[Output] KeepDays = 'week': not a number"),
        ("KeepFiles = 2.5", "[Output] KeepFiles = '2.5': not a whole number"),
        ("KeepFiles = -3", "[Output] KeepFiles = '-3': must be 0 or more"),
        ("KeepMB = inf", "[Output] KeepMB = 'inf': not a finite number"),
    ],
)
def test_a_bad_output_value_is_an_error_naming_task_file_key_and_value(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        task_spec(f"[Output]\n{text}\n")
    assert str(caught.value).startswith("task 't': /h/Tasks/t/config.ini: " + reason)


def test_an_unknown_output_key_is_a_warning_with_a_suggestion() -> None:
    result = parse_task_config(BASE + "[Output]\nKeepDay = 3\n", task="t", path=Path("/h/Tasks/t/config.ini"))
    assert result.spec.retention == Retention()
    assert any("KeepDay" in w and "KeepDays" in w for w in result.warnings)


def test_status_json_shape_of_the_retention_in_force() -> None:
    assert retention_json(None) is None and retention_json(Retention()) is None
    assert retention_json(Retention(keep_files=3)) == {"keep_days": None, "keep_files": 3, "keep_mb": None}


# --- the consumer -----------------------------------------------------------------------------------------


class FakePruner:
    def __init__(self) -> None:
        self.calls: list[tuple[Path, Retention, float]] = []
        self.release = threading.Event()
        self.release.set()
        self.busy_seen: list[bool] = []

    def __call__(self, output: Path, retention: Retention, *, now: float, busy: Any) -> PruneResult:
        self.release.wait(10)
        self.busy_seen.append(busy())
        self.calls.append((output, retention, now))
        return PruneResult(removed=2, freed=300, kept=1)


def finished(task: str, run_id: str, spec: TaskSpec | None) -> RunFinished:
    at = datetime(2027, 1, 15, 12, tzinfo=timezone.utc)
    record = RunRecord(run_id=run_id, task=task, trigger=Trigger.SCHEDULE, started=at, outcome=Outcome.OK)
    return RunFinished(
        task=task,
        run_id=run_id,
        trigger=Trigger.SCHEDULE,
        outcome=Outcome.OK,
        record=record,
        consecutive_failures=0,
        spec=spec,
    )


def started(task: str, run_id: str) -> RunStarted:
    return RunStarted(task=task, run_id=run_id, trigger=Trigger.SCHEDULE, spec=TaskSpec(name=task))


@pytest.fixture
def consumer(tmp_path: Path) -> Any:
    clock = FakeClock(datetime(2027, 1, 15, 12, tzinfo=timezone.utc))
    pruner = FakePruner()
    logs = TaskLogs(tmp_path / "logs", max_bytes=1 << 20, backups=0)
    log = logging.getLogger("test.outputs")
    outputs = OutputRetention(lambda t: tmp_path / t / "Output", clock=clock, logger=log, task_logs=logs, prune=pruner)
    yield outputs, pruner, clock, logs
    outputs.close()
    logs.close()


def run_once(outputs: OutputRetention, pruner: FakePruner, run_id: str, spec: TaskSpec | None) -> bool:
    """A run of ``t`` starts and ends; True when it led to a prune."""
    before = len(pruner.calls)
    outputs.run_started(started("t", run_id))
    outputs(finished("t", run_id, spec))
    assert outputs.wait_idle(10)
    return len(pruner.calls) > before


def test_a_prune_follows_a_real_run_at_most_once_an_hour(consumer: Any, tmp_path: Path) -> None:
    outputs, pruner, clock, logs = consumer
    spec = TaskSpec(name="t", retention=Retention(keep_files=1))
    assert run_once(outputs, pruner, "r1", spec)
    assert pruner.calls[0][0] == tmp_path / "t" / "Output" and pruner.calls[0][1] == spec.retention
    assert pruner.calls[0][2] == clock.now().timestamp(), "now comes from the injected clock"
    clock.advance(3599)
    assert not run_once(outputs, pruner, "r2", spec), "less than an hour later: no prune"
    clock.advance(2)
    assert run_once(outputs, pruner, "r3", spec)
    assert len(pruner.calls) == 2
    text = logs.path("t").read_text()
    assert "Output/ retention (KeepFiles 1): removed 2 file(s), 300 bytes freed; 1 file(s) kept" in text


def test_no_prune_without_a_limit_without_a_process_or_while_another_run_is_in_flight(consumer: Any) -> None:
    outputs, pruner, _clock, _logs = consumer
    assert not run_once(outputs, pruner, "r1", TaskSpec(name="t")), "no [Output] limit: Output/ is never touched"
    assert not run_once(outputs, pruner, "r2", None)
    spec = TaskSpec(name="t", retention=Retention(keep_days=1))
    outputs(finished("t", "skipped-row", spec))  # a row without a process (skipped, testing, env-failed)
    outputs.run_started(started("t", "manual"))
    assert not run_once(outputs, pruner, "r3", spec), "another run of the task is still in flight"
    assert pruner.calls == []
    outputs(finished("t", "manual", spec))
    assert outputs.wait_idle(10) and len(pruner.calls) == 1, "the last run in flight ended: now it prunes"


def test_busy_turns_true_when_a_run_starts_during_the_prune(consumer: Any) -> None:
    outputs, pruner, _clock, _logs = consumer
    pruner.release.clear()  # the prune waits until the next run has started
    outputs.run_started(started("t", "r1"))
    outputs(finished("t", "r1", TaskSpec(name="t", retention=Retention(keep_files=1))))
    outputs.run_started(started("t", "r2"))
    pruner.release.set()
    assert outputs.wait_idle(10)
    assert pruner.busy_seen == [True], "the pruner is told a run is in flight, so it stops before the next file"
