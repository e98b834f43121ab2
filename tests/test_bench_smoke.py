"""bench/ must not rot: import every benchmark module and run the cheapest figures once with tiny counts.

Benchmarks are not part of the test suite (timings belong in bench/, docs/architecture.md): these tests assert only
that a figure produces a number and that the results table renders, never how fast anything is.
"""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

GROUPS = ("launch", "forkserver", "envs", "kill", "reload", "schedule", "idle", "notify", "scaleout", "web")


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_imports_and_has_a_run_entry_point(group: str) -> None:
    module = importlib.import_module(f"bench.{group}")
    assert callable(module.run)
    assert group == module.GROUP


def test_run_py_knows_every_group() -> None:
    from bench import run

    assert set(run.GROUPS) == set(GROUPS)


def test_decision_to_first_line_measures_a_real_run(tmp_path: Path) -> None:
    from bench import launch

    (tmp_path / "Tasks").mkdir()
    # The real shim, with this interpreter standing in for a task's venv python.
    ours, floor = launch.decision_to_first_line(Path(sys.executable), tmp_path, runs=1)
    assert len(ours) == len(floor) == 1
    assert all(math.isfinite(v) and v > 0 for v in ours + floor)


def test_schedule_lateness_and_table_render() -> None:
    from bench import schedule, stats

    late = schedule.ours_lateness(20, period_s=0.002)
    assert len(late) == 20 and all(math.isfinite(v) and v >= 0 for v in late)
    summary = stats.summarize(late)
    figure = stats.Figure("schedule", "smoke", "ms", summary, "p99 ≤ 10 ms", None, tail=True)
    text = stats.render_text([figure])
    markdown = stats.render_markdown([figure], machine=stats.machine_info(), command="smoke", elapsed_s=0.0)
    assert "smoke" in text and "| smoke |" in markdown and "| cores |" in markdown


def test_notify_queue_memory_is_measured() -> None:
    from bench import notify

    kb, pending = notify.queue_memory_kb(30, capacity=10)
    assert math.isfinite(kb) and pending <= 11


def test_next_for_cron_occurrences_measures_both_sides() -> None:
    from bench import cron_next
    from supervisor.model import Window

    assert cron_next.ours_ms("*/5 * * * *", Window()) > 0
    assert cron_next.library_ms("*/5 * * * *") > 0


def test_scaleout_reads_the_first_line_of_the_right_run(tmp_path: Path) -> None:
    from bench import scaleout

    out = tmp_path / "first-line"
    assert scaleout._written(out, "run-b") is None
    out.write_text("run-a 100\nrun-b 250\n")
    assert scaleout._written(out, "run-b") == 250 and scaleout._written(out, "run-c") is None


def test_web_figures_measure_a_real_dashboard(tmp_path: Path) -> None:
    import httpx
    from tests.support.web_support import WebProcess

    from bench import web

    (tmp_path / "Tasks").mkdir()
    run_id = web.build_home(tmp_path, tasks=2, rows=20)
    with (
        WebProcess(tmp_path) as server,
        httpx.Client(base_url=server.base, timeout=30, headers={"Authorization": f"Bearer {server.token}"}) as http,
    ):
        assert web._timed(http, "/") > 0 and web._timed(http, f"/runs/{run_id}") > 0
        (latency,) = web.line_latencies(http, tmp_path / "logs" / "tasks" / "task-000.log", run_id, 1)
    assert math.isfinite(latency) and latency > 0


def test_the_soak_is_a_long_group_run_only_when_named() -> None:
    from bench import run, soak

    assert soak.GROUP == "soak" and callable(soak.run)
    assert "soak" in run.LONG_GROUPS and "soak" not in run.GROUPS


def test_the_soak_in_a_tiny_configuration_produces_every_figure(tmp_path: Path) -> None:
    from bench import soak
    from bench.common import Settings

    plan = soak.SoakPlan.tiny()
    figures = soak.run(Settings(quick=True, scratch=tmp_path), plan)
    names = [figure.name for figure in figures]
    assert len(names) == 6 and all(name.startswith("soak: ") for name in names)
    assert all(figure.ours is not None and math.isfinite(figure.ours.median) for figure in figures)
    assert "runs in" in figures[0].note
    samples = (tmp_path / "ta-bench-soak-samples.tsv").read_text().splitlines()
    assert samples[0].startswith("elapsed_s\truns") and int(samples[-1].split("\t")[1]) >= plan.target_runs
