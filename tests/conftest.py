"""Shared fixtures, and the one table that puts every test file in a layer (README, "Testing").

The autouse leftover check fails any test that leaves a process behind.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Iterator

import psutil
import pytest

# Every process a test starts inherits this cookie through the environment, including processes
# that escaped their parents (setsid + double fork), so /proc can be searched for all of them.
COOKIE_VAR = "TASKAUTOMATION_TEST_COOKIE"
COOKIE = uuid.uuid4().hex
os.environ[COOKIE_VAR] = COOKIE
# Tests never touch the network: a stray install that tries an index fails fast instead of hanging.
os.environ.setdefault("UV_OFFLINE", "1")
os.environ.setdefault("PIP_NO_INDEX", "1")
# Hermetic: a home the user exported for their own supervisor must not leak into tests that omit --home.
os.environ.pop("TASKAUTOMATION_HOME", None)

from supervisor.execution.procscan import find_by_environ, own_start_ticks  # noqa: E402
from tests.support.receivers import HangingReceiver, HttpReceiver  # noqa: E402

# Every process this session starts is younger than this one: older processes are never read at all.
SESSION_START_TICKS = own_start_ticks()


# The layer of every test file, by the heaviest kind of test in it: each file's tests get that marker, so
# `pytest -m unit` runs the fast pure tests only. tests/test_suite_layout.py fails when a file is missing here.
#   unit     pure logic, one process (a helper child or a linter run at most), no real waits
#   loop     the loop and its books in-process, on a fake clock and a fake executor
#   e2e      real supervisors, CLI commands, task runs, env builds, watchers, receivers, the built wheel
#   browser  the dashboard in a real browser (chromium through Playwright)
#   redis    scale-out against a real Redis server
LAYERS = ("unit", "loop", "e2e", "browser", "redis")
TEST_FILE_LAYERS: dict[str, str] = {
    "test_bench_smoke.py": "e2e",
    "test_bundle.py": "unit",
    "test_calendar.py": "unit",
    "test_cgroups.py": "unit",
    "test_cli.py": "e2e",
    "test_cli_polish.py": "e2e",
    "test_clock_step.py": "e2e",
    "test_config.py": "unit",
    "test_config_schedule.py": "unit",
    "test_containment.py": "e2e",
    "test_control_socket.py": "e2e",
    "test_crontab.py": "unit",
    "test_damping_e2e.py": "e2e",
    "test_discovery.py": "unit",
    "test_doctor.py": "e2e",
    "test_envheal.py": "e2e",
    "test_envheal_loop.py": "loop",
    "test_envs.py": "e2e",
    "test_examples.py": "e2e",
    "test_fds.py": "e2e",
    "test_forkserver.py": "e2e",
    "test_history_facts.py": "unit",
    "test_history_columns.py": "unit",
    "test_gates_e2e.py": "e2e",
    "test_hostile_folders.py": "e2e",
    "test_hot_reload.py": "e2e",
    "test_import_crontab.py": "e2e",
    "test_layers.py": "unit",
    "test_lifecycle.py": "unit",
    "test_lint.py": "unit",
    "test_loop.py": "loop",
    "test_loop_calendar.py": "loop",
    "test_loop_clock.py": "loop",
    "test_loop_damping.py": "loop",
    "test_loop_gates.py": "loop",
    "test_loop_chains.py": "loop",
    "test_chains.py": "unit",
    "test_chains_e2e.py": "e2e",
    "test_loop_manual.py": "loop",
    "test_loop_missed.py": "loop",
    "test_missed_e2e.py": "e2e",
    "test_missed_shown.py": "unit",
    "test_missed_slots.py": "unit",
    "test_loop_sched.py": "loop",
    "test_loop_states.py": "loop",
    "test_metrics.py": "unit",
    "test_metrics_e2e.py": "e2e",
    "test_next_cli.py": "e2e",
    "test_notify_delivery.py": "e2e",
    "test_notify_e2e.py": "e2e",
    "test_notify_loop.py": "loop",
    "test_notify_timed.py": "unit",
    "test_notify_timed_e2e.py": "e2e",
    "test_notify_units.py": "unit",
    "test_onboarding.py": "e2e",
    "test_outage_units.py": "unit",
    "test_outcome.py": "unit",
    "test_output_retention.py": "unit",
    "test_output_pruning.py": "unit",
    "test_output_retention_e2e.py": "e2e",
    "test_run_params.py": "unit",
    "test_run_params_loop.py": "loop",
    "test_run_params_e2e.py": "e2e",
    "test_pep723.py": "e2e",
    "test_permission_fix.py": "e2e",
    "test_private_files.py": "e2e",
    "test_process_cap.py": "e2e",
    "test_procscan.py": "unit",
    "test_readable_errors.py": "e2e",
    "test_records.py": "unit",
    "test_records_attempts.py": "unit",
    "test_render.py": "unit",
    "test_retry.py": "unit",
    "test_safefile.py": "unit",
    "test_scaleout.py": "redis",
    "test_scaleout_outage.py": "redis",
    "test_sched_e2e.py": "e2e",
    "test_schedule.py": "unit",
    "test_sdnotify.py": "unit",
    "test_service_notify.py": "e2e",
    "test_sizes.py": "unit",
    "test_start_failures.py": "e2e",
    "test_status_check.py": "unit",
    "test_status_queries.py": "unit",
    "test_status_source.py": "unit",
    "test_suite_layout.py": "unit",
    "test_supervisor.py": "e2e",
    "test_systemd.py": "unit",
    "test_timefmt.py": "unit",
    "test_triggers.py": "unit",
    "test_typecheck.py": "unit",
    "test_watcher.py": "e2e",
    "test_web_browser.py": "browser",
    "test_web_http.py": "e2e",
    "test_web_load.py": "e2e",
    "test_web_supervised.py": "e2e",
    "test_web_units.py": "unit",
    "test_wheel.py": "e2e",
    "test_writebehind.py": "e2e",
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        layer = TEST_FILE_LAYERS.get(item.path.name)
        if layer is not None:
            item.add_marker(getattr(pytest.mark, layer))


def processes_with_cookie() -> list[psutil.Process]:
    """Live (non-zombie) processes other than this one that carry this session's cookie.

    Never hangs on a stranger: only processes younger than the session are looked at, and each environment
    is read with a deadline (a process in D state can block a plain read of /proc/PID/environ for minutes).
    """
    found = []
    needle = f"{COOKIE_VAR}={COOKIE}".encode()
    for pid in find_by_environ(needle, not_before=SESSION_START_TICKS).matches:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Fail the test if any process it started (child, grandchild, escapee, zombie child) survives it."""
    yield
    deadline = time.monotonic() + 10
    while True:
        me = psutil.Process()
        children = [c for c in me.children(recursive=True)]
        strays = {p.pid: p for p in processes_with_cookie()}
        for child in children:
            strays.setdefault(child.pid, child)
        if not strays or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if strays:
        described = []
        for proc in strays.values():
            try:
                described.append(f"{proc.pid} {proc.status()} {' '.join(proc.cmdline())[:120]}")
                os.kill(proc.pid, signal.SIGKILL)
            except (OSError, psutil.Error):
                pass
        for child in children:  # reap our own zombies so the next test starts clean
            try:
                os.waitpid(child.pid, os.WNOHANG)
            except OSError:
                pass
        pytest.fail("test left processes behind:\n" + "\n".join(described))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME with a Tasks/ folder."""
    (tmp_path / "Tasks").mkdir()
    return tmp_path


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    """A notification/ping receiver on 127.0.0.1 that records what it is sent."""
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def hanging() -> Iterator[HangingReceiver]:
    """A receiver on 127.0.0.1 that accepts connections and never answers."""
    receiver = HangingReceiver()
    yield receiver
    receiver.close()
