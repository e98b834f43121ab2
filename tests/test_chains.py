"""[Frequency] After, the pure parts: parsing After and AfterOutcome (errors name the task, file, key and
value), which outcomes match, cycles, missing or disabled upstreams, the restart rule, the trigger (no due
times, not done), the "why" line, the status fields and `validate`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from tests.support.config_support import PREFIX, error_of, parse

from supervisor.cli.validate import validate_home
from supervisor.model import AfterOutcome, Outcome, RunRecord, TaskPhase, Trigger
from supervisor.paths import Paths
from supervisor.query.status import SupervisorView, TaskView, display_state, explain, status_json
from supervisor.scheduling.chains import catch_up, find_cycles, upstream_problems
from supervisor.scheduling.triggers import AfterTrigger, trigger_for

pytestmark = pytest.mark.timeout(30)
UTC = timezone.utc
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_after_is_a_schedule_kind_with_its_outcome():
    spec = parse("[Frequency]\nAfter = backup, export , backup\nAfterOutcome = FAILED\n").spec
    assert (spec.after, spec.after_outcome, spec.every, spec.cron) == (
        ("backup", "export"),
        AfterOutcome.FAILED,
        None,
        None,
    )
    assert parse("[Frequency]\nAfter = backup\n").spec.after_outcome is AfterOutcome.OK


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "[Frequency]\nAfter = backup\nEveryXMinutes = 5\n",
            "[Frequency] EveryXMinutes and After are both set (EveryXMinutes = '5', After = 'backup'): "
            "use exactly one of EveryXMinutes, Cron, RunAt and After",
        ),
        ("[Frequency]\nAfter = demo\n", "[Frequency] After = 'demo': names the task itself: a cycle demo -> demo"),
        ("[Frequency]\nAfter = a,,b\n", "[Frequency] After = 'a,,b': empty task name"),
        ("[Frequency]\nAfter = ../x\n", "[Frequency] After = '../x': '../x' is not a task name"),
        (
            "[Frequency]\nAfter = a\nAfterOutcome = maybe\n",
            "[Frequency] AfterOutcome = 'maybe': use one of ok, failed, any",
        ),
        (
            "[Frequency]\nEveryXMinutes = 5\nAfterOutcome = ok\n",
            "[Frequency] AfterOutcome = 'ok': needs [Frequency] After",
        ),
    ],
)
def test_bad_after_values_name_task_file_key_and_value(text, message):
    assert error_of(text).startswith(PREFIX + message)


def test_a_missing_schedule_mentions_after():
    assert "or After (e.g. After = backup) instead" in error_of("[Global]\nEnabled = True\n")


@pytest.mark.parametrize(
    "setting, matched",
    [
        (AfterOutcome.OK, {Outcome.OK}),
        (AfterOutcome.FAILED, {Outcome.FAILED, Outcome.TIMEOUT, Outcome.MEMORY, Outcome.CRASHED, Outcome.ENV_FAILED}),
        (
            AfterOutcome.ANY,
            {Outcome.OK, Outcome.FAILED, Outcome.TIMEOUT, Outcome.MEMORY, Outcome.CRASHED, Outcome.ENV_FAILED},
        ),
    ],
)
def test_which_outcomes_start_a_downstream(setting, matched):
    assert {o for o in Outcome if setting.matches(o)} == matched  # never skipped, testing, killed, interrupted


def test_cycles_are_named_from_each_task_and_leaders_in_are_not_on_them():
    after = {"a": ("b",), "b": ("c",), "c": ("a",), "lead": ("a",), "d": ("e",), "e": ("d", "a")}
    assert find_cycles(after) == {
        "a": "a -> b -> c -> a",
        "b": "b -> c -> a -> b",
        "c": "c -> a -> b -> c",
        "d": "d -> e -> d",
        "e": "e -> d -> e",
    }
    assert find_cycles({"x": ("y",), "y": ("z",)}) == {}, "a chain that ends is no cycle"
    assert find_cycles({"x": ("missing",)}) == {}


def test_missing_and_disabled_upstreams_are_warnings():
    problems = upstream_problems("d", ("ghost", "off", "on"), enabled={"off": False, "on": True, "d": True})
    assert problems == [
        "task 'd': [Frequency] After names 'ghost', which is not a task folder (yet)",
        "task 'd': [Frequency] After names 'off', which is disabled (Enabled=False)",
    ]


def _row(task: str, run_id: str, start: datetime, *, outcome=Outcome.OK, trigger=Trigger.SCHEDULE, upstream=None):
    return RunRecord(
        run_id=run_id,
        task=task,
        trigger=trigger,
        started=start,
        finished=start + timedelta(minutes=1),
        outcome=outcome,
        upstream=upstream,
    )


def test_the_restart_rule_runs_a_missed_upstream_run_once():
    before = _row("d", "d1", T0, trigger=Trigger.AFTER, upstream="u1")
    missed = _row("up", "u2", T0 + timedelta(hours=1))
    assert catch_up(missed, [before], AfterOutcome.OK) is missed
    ran = _row("d", "d2", T0 + timedelta(hours=2), trigger=Trigger.AFTER, upstream="u2")
    assert catch_up(missed, [ran, before], AfterOutcome.OK) is None, "its row names the upstream run: never twice"
    skipped = _row("d", "d2", T0 + timedelta(hours=2), outcome=Outcome.SKIPPED, trigger=Trigger.AFTER, upstream="u2")
    assert catch_up(missed, [skipped, before], AfterOutcome.OK) is None, "a skipped row counts as handled"
    assert catch_up(missed, [], AfterOutcome.OK) is None, "a downstream that never ran after anything waits"
    assert catch_up(missed, [_row("d", "m", T0)], AfterOutcome.OK) is None, "only after rows count"
    failed = _row("up", "u3", T0 + timedelta(hours=1), outcome=Outcome.FAILED)
    assert catch_up(failed, [before], AfterOutcome.OK) is None
    assert catch_up(failed, [before], AfterOutcome.ANY) is failed
    old = _row("up", "u0", T0 - timedelta(hours=1))
    assert catch_up(old, [before], AfterOutcome.OK) is None, "finished before the downstream's last after run"
    assert catch_up(None, [before], AfterOutcome.OK) is None


def test_the_after_trigger_has_no_due_times_and_says_what_it_runs_after():
    spec = parse("[Frequency]\nAfter = backup, db\nAfterOutcome = any\nAllowedFrom = 01:00\nAllowedTo = 05:00\n").spec
    trigger = trigger_for(spec, tz=UTC)
    assert isinstance(trigger, AfterTrigger)
    assert trigger.next_due(anchor=None, now=T0) is None
    assert trigger.describe() == "after backup, db (any), starting between 01:00 and 05:00"
    assert trigger_for(parse("[Frequency]\nAfter = backup\n").spec, tz=UTC).describe() == "after backup (ok)"


def _view(spec_text: str, name: str = "demo") -> TaskView:
    spec = parse(spec_text).spec
    return TaskView(
        name=name,
        phase=TaskPhase.SCHEDULED,
        spec=spec,
        error=None,
        next_due=None,
        anchor=None,
        startup_pending=False,
        schedule=trigger_for(spec, tz=UTC).describe(),
    )


def test_an_after_task_is_never_done_and_why_says_after_what():
    view = _view("[Frequency]\nAfter = backup\n")
    assert display_state(view).value == "scheduled"
    assert explain(view, tz=UTC) == "runs after backup (ok)"
    window = _view("[Frequency]\nAfter = a, b\nAllowedFrom = 01:00\nAllowedTo = 02:00\n")
    why = explain(window, tz=UTC)
    assert "each (no join" in why and "a start outside its window 01:00-02:00 waits for the window" in why
    run_at = _view("[Frequency]\nRunAt = 2020-01-01 10:00\n")
    assert display_state(run_at).value == "done", "a RunAt task past its last time still is"


def test_status_json_lists_after_and_downstream():
    views = [_view("[Frequency]\nAfter = backup\n", "report"), _view("[Frequency]\nEveryXMinutes = 5\n", "backup")]
    doc = status_json(views, last_finished=lambda name: None, supervisor=SupervisorView(1, T0, "/h"), tz=UTC)
    rows = {row["name"]: row for row in doc["tasks"]}
    assert (rows["report"]["after"], rows["report"]["downstream"]) == (["backup"], [])
    assert (rows["backup"]["after"], rows["backup"]["downstream"]) == ([], ["report"])


def _task(paths: Paths, name: str, frequency: str) -> None:
    folder = paths.task_dir(name)
    folder.mkdir(parents=True)
    (folder / "main.py").write_text("def main():\n    return 'ok'\n")
    (folder / "config.ini").write_text(f"[Frequency]\n{frequency}\n")


def test_validate_reports_cycles_as_errors_and_missing_upstreams_as_warnings(tmp_path: Path):
    paths = Paths(tmp_path / "home")
    paths.ensure()
    _task(paths, "a", "After = b")
    _task(paths, "b", "After = a")
    _task(paths, "c", "After = ghost")
    problems, report = validate_home(paths)
    text = "\n".join(report)
    assert problems == 2
    assert f"error: task 'a': {paths.task_config('a')}: [Frequency] After = 'b': a cycle a -> b -> a" in text
    assert "error: task 'b'" in text and "a cycle b -> a -> b" in text
    assert (
        "ok    c" in text and "warning: task 'c': [Frequency] After names 'ghost', which is not a task folder" in text
    )
    problems, report = validate_home(paths, only="a")
    assert problems == 1, "the cycle is found with --only too: every folder is read for it"
