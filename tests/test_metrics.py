"""Prometheus metrics without a server: the history's run totals (real SQLite: every write path counts, pruning
never lowers them, the migration backfills them), the exposition built from a status document and those
totals, and the [Web] MetricsToken key."""

from __future__ import annotations

import os
import re
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.config.schema import parse_home_config, read_home_config
from supervisor.errors import ConfigError
from supervisor.history.schema import MIGRATIONS, SCHEMA_VERSION
from supervisor.history.store import HistoryStore
from supervisor.history.totals import DURATION_BOUNDS, LATENESS_BOUNDS, HistoryTotals, Observations, empty
from supervisor.model import Outcome, RunRecord, ShownState, Trigger
from supervisor.query.metrics import MISSED_REASONS, Exposition, exposition, figures
from supervisor.query.scrape import accepts_gzip

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
TOKEN = "m" * 40


def _open(run_id: str, task: str, *, started: datetime, due: datetime | None, trigger: Trigger) -> RunRecord:
    return RunRecord(run_id=run_id, task=task, trigger=trigger, started=started, due=due)


def _write_mixed_history(db: HistoryStore) -> None:
    """Rows through every writer path: a finished run, instant rows, and a run marked interrupted."""
    db.start_run(_open("r1", "a", started=T0 + timedelta(seconds=2), due=T0, trigger=Trigger.SCHEDULE))
    db.finish_run("r1", finished=T0 + timedelta(seconds=9), outcome=Outcome.OK, duration_s=7.0)
    db.start_run(_open("r2", "a", started=T0 + timedelta(minutes=1), due=None, trigger=Trigger.MANUAL))
    db.finish_run("r2", finished=T0 + timedelta(minutes=2), outcome=Outcome.FAILED, duration_s=60.0)
    for outcome in (Outcome.SKIPPED, Outcome.TESTING, Outcome.ENV_FAILED):
        db.record_instant(
            RunRecord.instant(task="a", trigger=Trigger.SCHEDULE, at=T0, outcome=outcome, message="m", log_path=None)
        )
    db.start_run(_open("r3", "b", started=T0 + timedelta(seconds=0.2), due=T0, trigger=Trigger.SCHEDULE))
    db.mark_interrupted(now=T0 + timedelta(hours=1))


def _bucketed(bounds: tuple[float, ...], *values: float) -> tuple[int, ...]:
    """The (non-cumulative) bucket counts of ``values``: each in the first bucket whose bound it does not pass."""
    counts = [0] * (len(bounds) + 1)
    for value in values:
        counts[next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))] += 1
    return tuple(counts)


# ------------------------------------------------------------------------------------------- totals
def test_every_writer_path_is_counted_once_per_outcome(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite3") as db:
        _write_mixed_history(db)
        totals = db.totals()
    assert totals.runs == {
        "a": {"ok": 1, "failed": 1, "skipped": 1, "testing": 1, "env-failed": 1},
        "b": {"interrupted": 1},
    }
    assert totals.last_ok == {"a": T0 + timedelta(seconds=9)}
    # Durations only of runs of main() that ended with one (the instant rows' 0 s would skew the histogram).
    assert totals.durations["a"].counts == _bucketed(DURATION_BOUNDS, 7.0, 60.0)
    assert totals.durations["a"].total == 67.0
    assert "b" not in totals.durations
    # Lateness: scheduled rows that started something (r1: 2 s, the testing row: 0 s, r3: 0.2 s), not the
    # manual run, the skipped row or the env-failed row.
    assert totals.lateness.counts == _bucketed(LATENESS_BOUNDS, 2.0, 0.0, 0.2)
    assert totals.lateness.total == pytest.approx(2.2, abs=1e-3)


def test_pruning_and_reopening_never_lower_the_totals(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    with HistoryStore(path) as db:
        _write_mixed_history(db)
        before = db.totals()
        assert db.prune(keep=0) > 0
        assert db.totals() == before
    with HistoryStore(path, readonly=True) as reader:
        assert reader.totals() == before


def test_a_database_from_before_the_totals_is_backfilled_by_the_writer_and_read_as_is_by_a_reader(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as conn:  # the last schema without the totals, as a user's file has it
        for step in MIGRATIONS[:4]:
            for statement in step:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 4")
        conn.executemany(
            "INSERT INTO runs (run_id, task, trigger, due, started, finished, outcome, duration_s) "
            "VALUES (?, 'old', 'schedule', ?, ?, ?, ?, 3.0)",
            [
                (f"o{i}", T0.isoformat(), (T0 + timedelta(seconds=1)).isoformat(), T0.isoformat(), outcome)
                for i, outcome in enumerate(["ok", "ok", "failed"])
            ],
        )
        conn.commit()
    with HistoryStore(path, readonly=True) as reader:  # may not migrate: computes from the rows present
        from_rows = reader.totals()
    assert from_rows.runs == {"old": {"ok": 2, "failed": 1}}
    assert from_rows.lateness.count == 3 and from_rows.durations["old"].count == 3
    with HistoryStore(path) as db:  # the writer migrates and backfills, once
        assert db.totals() == from_rows
        db.prune(keep=0)
        db.record_instant(
            RunRecord.instant(
                task="old", trigger=Trigger.MANUAL, at=T0, outcome=Outcome.SKIPPED, message="m", log_path=None
            )
        )
        after = db.totals()
    assert after.runs == {"old": {"ok": 2, "failed": 1, "skipped": 1}}
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_missed_rows_are_counted_by_reason_when_one_is_recorded(tmp_path: Path) -> None:
    """Rows with an outcome this code does not name yet count like the others; a missed row's reason key is
    the totals table's, '' until the writer records one."""
    path = tmp_path / "h.sqlite3"
    with HistoryStore(path) as db:
        db.start_run(_open("m1", "a", started=T0, due=T0, trigger=Trigger.SCHEDULE))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE runs SET outcome = 'missed', finished = started WHERE run_id = 'm1'")
        conn.execute("INSERT INTO run_totals (task, outcome, reason, runs) VALUES ('a', 'missed', 'down', 2)")
        conn.commit()
    with HistoryStore(path, readonly=True) as reader:
        totals = reader.totals()
    assert totals.runs["a"]["missed"] == 3
    assert totals.missed == {"a": {"": 1, "down": 2}}


# ---------------------------------------------------------------------------------------- exposition
def _status(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"tasks": list(rows)}


def _row(name: str, state: str = "scheduled", *, next_run: str | None = None, failures: int = 0) -> dict[str, Any]:
    return {"name": name, "state": state, "next_run": next_run, "consecutive_failures": failures}


def _samples(data: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(data.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_every_task_has_every_series_from_the_first_scrape() -> None:
    home, tasks = figures(_status(_row("a"), _row("b", "stopped")), HistoryTotals(), live=False, version="9.9")
    samples = _samples(exposition(home, tasks))
    for task in ("a", "b"):
        for outcome in Outcome:
            assert samples[("taskautomation_runs_total", (("outcome", outcome.value), ("task", task)))] == 0
        for reason in MISSED_REASONS:
            assert samples[("taskautomation_missed_runs_total", (("reason", reason), ("task", task)))] == 0
        assert samples[("taskautomation_run_duration_seconds_count", (("task", task),))] == 0
        assert samples[("taskautomation_run_duration_seconds_bucket", (("le", "+Inf"), ("task", task)))] == 0
        for gauge in ("task_last_success_timestamp_seconds", "task_next_run_timestamp_seconds", "consecutive_failures"):
            assert samples[(f"taskautomation_{gauge}", (("task", task),))] == 0
    assert samples[("taskautomation_info", (("version", "9.9"),))] == 1
    assert samples[("taskautomation_supervisor_up", ())] == 0
    for state in ShownState:
        expected = {"scheduled": 1, "stopped": 1}.get(state.value, 0)
        assert samples[("taskautomation_tasks", (("state", state.value),))] == expected
    assert samples[("taskautomation_schedule_lateness_seconds_count", ())] == 0


def test_figures_come_from_the_totals_and_the_status_document() -> None:
    last_ok = T0 + timedelta(minutes=5)
    totals = HistoryTotals(
        runs={"a": {"ok": 7, "failed": 2, "missed": 3}, "gone": {"ok": 100}},
        missed={"a": {"down": 2, "": 1}},
        last_ok={"a": last_ok},
        durations={"a": Observations(counts=(1, 0, 0, 2, *(0,) * (len(DURATION_BOUNDS) - 3)), total=10.5)},
        lateness=Observations(counts=(4, *(0,) * (len(LATENESS_BOUNDS) - 1), 1), total=400.0),
    )
    status = _status(_row("a", "running", next_run=(T0 + timedelta(hours=1)).isoformat(), failures=2))
    samples = _samples(exposition(*figures(status, totals, live=True, version="1")))
    assert samples[("taskautomation_runs_total", (("outcome", "ok"), ("task", "a")))] == 7
    # An outcome this version does not list yet still gets a series of every task.
    assert samples[("taskautomation_runs_total", (("outcome", "missed"), ("task", "a")))] == 3
    assert samples[("taskautomation_missed_runs_total", (("reason", "down"), ("task", "a")))] == 2
    assert samples[("taskautomation_missed_runs_total", (("reason", "other"), ("task", "a")))] == 1
    assert samples[("taskautomation_run_duration_seconds_bucket", (("le", "0.5"), ("task", "a")))] == 1
    assert samples[("taskautomation_run_duration_seconds_bucket", (("le", "5.0"), ("task", "a")))] == 3
    assert samples[("taskautomation_run_duration_seconds_sum", (("task", "a"),))] == 10.5
    assert samples[("taskautomation_task_last_success_timestamp_seconds", (("task", "a"),))] == last_ok.timestamp()
    assert samples[("taskautomation_task_next_run_timestamp_seconds", (("task", "a"),))] == T0.timestamp() + 3600
    assert samples[("taskautomation_consecutive_failures", (("task", "a"),))] == 2
    assert samples[("taskautomation_schedule_lateness_seconds_count", ())] == 5
    assert samples[("taskautomation_schedule_lateness_seconds_bucket", (("le", "300.0"),))] == 4
    assert samples[("taskautomation_supervisor_up", ())] == 1
    # A task that left the status document has no series; no label holds anything but names and words.
    assert not any(dict(labels).get("task") == "gone" for _, labels in samples)


def test_the_cached_exposition_is_the_whole_one_as_tasks_change_come_and_go() -> None:
    cached = Exposition()
    odd = 'c "quoted"\nname'
    totals = HistoryTotals(runs={"a": {"ok": 1}})
    steps = [
        (_status(_row("a"), _row("b")), totals),
        (_status(_row("a"), _row("b")), totals),  # nothing changed: all from the cache
        (_status(_row("a", failures=1), _row("b", "running"), _row(odd)), totals),  # one changed, one new
        (_status(_row("a", failures=1), _row("b"), _row(odd)), HistoryTotals(runs={"a": {"ok": 1}})),  # equal
        (_status(_row(odd)), totals),  # two gone
        (_status(_row(odd), _row("a")), HistoryTotals(runs={odd: {"failed": 4}, "a": {"missed": 1}})),
    ]
    for live, (status, step_totals) in enumerate(steps):
        home, tasks = figures(status, step_totals, live=bool(live % 2), version="1")
        assert cached.render(status, step_totals, live=bool(live % 2), version="1") == exposition(home, tasks)
    assert b'task="c \\"quoted\\"\\nname"' in exposition(home, tasks)


def test_a_task_without_history_has_an_empty_histogram_of_every_bucket() -> None:
    [task] = figures(_status(_row("a")), HistoryTotals(), live=True, version="1")[1]
    assert task.durations == empty(DURATION_BOUNDS)
    text = exposition(*figures(_status(_row("a")), HistoryTotals(), live=True, version="1")).decode()
    buckets = re.findall(r'taskautomation_run_duration_seconds_bucket\{le="([^"]+)"', text)
    assert buckets == [repr(float(b)) for b in DURATION_BOUNDS] + ["+Inf"]


def test_gzip_is_sent_only_where_the_client_accepts_it() -> None:
    assert accepts_gzip("gzip") and accepts_gzip("identity, GZIP;q=0.5") and accepts_gzip("deflate, x-gzip")
    assert not accepts_gzip("") and not accepts_gzip("identity") and not accepts_gzip("gzip;q=0")


# ----------------------------------------------------------------------------------- [Web] MetricsToken
def test_metrics_token_is_read_validated_and_never_shown_in_an_error(tmp_path: Path) -> None:
    ini = tmp_path / "taskautomation.ini"
    config, _ = parse_home_config(f"[Web]\nMetricsToken = {TOKEN}\n", path=ini)
    assert config.web_metrics_token == TOKEN
    assert parse_home_config("", path=ini)[0].web_metrics_token is None
    with pytest.raises(ConfigError) as short:
        parse_home_config("[web]\nmetricstoken = hunter2hunter2\n", path=ini)
    assert str(short.value).startswith(f"{ini}: [Web] MetricsToken = '<secret, 14 characters>': too short")
    assert "hunter2" not in str(short.value)
    with pytest.raises(ConfigError, match="not a bearer token") as spaced:
        parse_home_config(f"[Web]\nMetricsToken = {TOKEN} {TOKEN}\n", path=ini)
    assert TOKEN not in str(spaced.value)


def test_a_metrics_token_in_a_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    ini = tmp_path / "taskautomation.ini"
    ini.write_text(f"[Web]\nMetricsToken = {TOKEN}\n")
    os.chmod(ini, 0o644)
    _, warnings = read_home_config(ini)
    assert any("MetricsToken" in w and f"chmod 600 {ini}" in w for w in warnings)
    os.chmod(ini, 0o600)
    assert read_home_config(ini)[1] == ()
