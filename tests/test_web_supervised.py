"""The dashboard with a real supervisor: pause/resume through the control socket, pause surviving a restart,
the loop's guard on due runs, and ``[Web] Listen`` running the dashboard as a supervised child."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import psutil
import pytest
from tests.support.harness import SupervisorProcess, cli
from tests.support.helpers import wait_for
from tests.support.web_support import make_task

from supervisor.paths import Paths
from supervisor.web.auth import load_or_create_token

pytestmark = pytest.mark.timeout(180)


def _history(home: Path, name: str) -> list[dict[str, object]]:
    result = cli(home, "history", name, "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["runs"])


def test_a_paused_task_does_not_run_and_stays_paused_across_a_restart(home: Path) -> None:
    make_task(home, "held", every="60")  # never ran: due as soon as it is loaded
    make_task(home, "control", every="60")  # the same, unpaused: once it has run, "held" would have too
    assert cli(home, "pause", "held").returncode == 0  # no supervisor yet: written to the history
    with SupervisorProcess(home) as sup:
        wait_for(lambda: _history(home, "control"), timeout=60, what="the control task's first run")
        held = sup.task_status("held")
        assert held["state"] == "paused" and held["paused"] and "paused since" in held["why"]
        assert _history(home, "held") == []
        # Pausing through the running supervisor (what the dashboard and the CLI do) and back.
        result = cli(home, "resume", "held")
        assert result.returncode == 0 and "resumed" in result.stdout
        assert sup.task_status("held")["paused"] is None
        assert cli(home, "pause", "held").returncode == 0
        assert "paused by cli" in sup.task_log("held")
    with SupervisorProcess(home) as sup:  # a restart
        wait_for(lambda: sup.task_status("held")["state"] == "paused", timeout=60, what="held paused again")
        assert _history(home, "held") == []
        assert cli(home, "resume", "held").returncode == 0
        held = sup.task_status("held")
        assert held["state"] == "scheduled" and held["paused"] is None
        # Slots missed while paused are not made up: the next run is the next slot, not now.
        assert held["next_run"] is not None and _history(home, "held") == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _web_children(sup: SupervisorProcess) -> list[psutil.Process]:
    """The supervisor's live `supervisor web` children (a killed one may linger as a zombie until reaped)."""
    assert sup.proc is not None
    found = []
    for child in psutil.Process(sup.proc.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "web" in child.cmdline():
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_web_listen_runs_the_dashboard_as_a_supervised_child(home: Path) -> None:
    port = _free_port()
    (home / "taskautomation.ini").write_text(f"[Web]\nListen = 127.0.0.1:{port}\n")
    make_task(home, "a")
    token = load_or_create_token(Paths(home).state / "web-token")
    base = f"http://127.0.0.1:{port}"

    def serving() -> int | None:
        try:
            r = httpx.get(base + "/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=2)
        except httpx.TransportError:
            return None
        return r.json()["supervisor"]["pid"] if r.status_code == 200 and r.json()["supervisor"] else None

    with SupervisorProcess(home) as sup:
        assert wait_for(serving, timeout=30, what="the supervised dashboard") == sup.proc.pid  # type: ignore[union-attr]
        (first,) = _web_children(sup)
        first.kill()
        wait_for(lambda: [c for c in _web_children(sup) if c.pid != first.pid], timeout=30, what="a new child")
        wait_for(serving, timeout=30, what="the restarted dashboard")
        (second,) = _web_children(sup)
        assert "restarting it" in sup.log()
    # terminate.py stopped the supervisor, and with it the dashboard.
    assert not second.is_running() or second.status() == psutil.STATUS_ZOMBIE
    assert token not in (home / "logs" / "web.log").read_text()
