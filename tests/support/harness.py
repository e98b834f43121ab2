"""Drive a real supervisor process (``python main.py --home HOME``) from tests."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from supervisor.clock import SystemClock
from supervisor.envs.manager import EnvManager
from supervisor.errors import TaskAutomationError
from supervisor.execution.procscan import find_by_environ, own_start_ticks
from supervisor.history.store import HistoryStore
from supervisor.logsetup import TaskLogs
from supervisor.model import HomeConfig
from supervisor.paths import Paths
from supervisor.service import build_supervisor
from supervisor.system.control import request

from . import REPO
from .helpers import wait_for


def cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m supervisor ARGS --home HOME`` and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args, "--home", str(home)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def script(name: str, home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run main.py / terminate.py as a user would."""
    return subprocess.run(
        [sys.executable, str(REPO / name), "--home", str(home), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class SupervisorProcess:
    """A supervisor started as a user would start it, with helpers to wait on what it logs."""

    def __init__(
        self,
        home: Path,
        *,
        prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        entry: tuple[str, ...] = (),
    ) -> None:
        self.home = home
        self.env = env  # the supervisor's environment; None = the test's own
        self.paths = Paths(home)
        self.console = home / "console.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.prefix = prefix  # an argv prefix (setpriv, prlimit) the supervisor is started under
        self.entry = entry or (str(REPO / "main.py"),)  # what the interpreter runs (a test wrapper, e.g. slowed)

    def start(self, *, wait_ready: bool = True) -> SupervisorProcess:
        out = open(self.console, "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, *self.entry, "--home", str(self.home)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        out.close()
        if wait_ready:
            wait_for(self._ready, timeout=20, what="supervisor control socket")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"supervisor exited early ({self.proc.returncode}):\n{self.console_text()}")
        try:
            return bool(request(self.paths.control_socket, "status", timeout=2).get("ok"))
        except TaskAutomationError:
            return False

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def log(self) -> str:
        path = self.paths.supervisor_log
        return path.read_text(errors="replace") if path.exists() else ""

    def task_log(self, name: str) -> str:
        path = self.paths.task_log(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, text: str, *, task: str | None = None, timeout: float = 30, count: int = 1) -> str:
        def found() -> str | None:
            body = self.task_log(task) if task else self.log()
            return body if body.count(text) >= count else None

        return wait_for(
            found,
            timeout=timeout,
            what=f"{text!r} x{count} in {'log of ' + task if task else 'supervisor log'}"
            f"\n--- supervisor log ---\n{self.log()[-3000:]}",
        )

    def status(self) -> dict[str, Any]:
        reply = request(self.paths.control_socket, "status")
        assert reply["ok"], reply
        return reply["status"]

    def task_status(self, name: str) -> dict[str, Any]:
        return next(t for t in self.status()["tasks"] if t["name"] == name)

    def history(self, name: str) -> list[dict[str, Any]]:
        result = cli(self.home, "history", name, "--json", "--limit", "1000")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["runs"]

    def stop(self, timeout: float = 60) -> int:
        """terminate.py, then reap the process; returns the supervisor's exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            result = script("terminate.py", self.home, timeout=timeout)
            assert result.returncode == 0, result.stdout + result.stderr
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> SupervisorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - a failing test must still not leave a supervisor behind
                self.kill()


class InProcessSupervisor:
    """A Supervisor running on a thread of the test process, for wiring the service does not expose.

    Its runs are spawned from that thread, which lives until stop(): the monitors' PDEATHSIG stays armed.
    """

    def __init__(self, home: Path, *, clock: Any = None, envs: EnvManager | None = None, **options: Any) -> None:
        self.paths = Paths(home)
        self.paths.ensure()
        self.logger = logging.getLogger(f"test.in_process.{home.name}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.handler = logging.FileHandler(home / "supervisor-test.log")
        self.logger.addHandler(self.handler)
        self.records = HistoryStore(self.paths.database)
        self.task_logs = TaskLogs(self.paths.task_logs, max_bytes=1 << 20, backups=0)
        self.supervisor = build_supervisor(
            self.paths,
            home_config=HomeConfig(),
            records=self.records,
            envs=envs or EnvManager(self.paths, logger=self.logger),
            clock=clock or SystemClock(),
            logger=self.logger,
            task_logs=self.task_logs,
            **options,
        )
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="in-process-supervisor", daemon=True)

    def _run(self) -> None:
        try:
            self.supervisor.run()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.failure = exc

    def log(self) -> str:
        self.handler.flush()
        return (self.paths.home / "supervisor-test.log").read_text()

    def __enter__(self) -> InProcessSupervisor:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.supervisor.request_stop("test finished")
        self.thread.join(timeout=60)
        self.records.close()
        self.logger.removeHandler(self.handler)
        self.handler.close()
        assert not self.thread.is_alive(), "the supervisor did not stop"
        assert self.failure is None, self.failure


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2 :][:1] != b"Z":
            alive.append(pid)
    return alive


__all__ = ["SupervisorProcess", "cli", "os", "pids_alive", "script"]


RUN_COOKIE_VAR = "TASKAUTOMATION_RUN_COOKIE"


def run_cookie(home: Path, run_id: str = "") -> str:
    """The run cookie the supervisor of ``home`` gives run ``run_id``; with no run id, the home's prefix.

    Spelled out here rather than imported: the value is a contract (it is how a restarted supervisor
    recognises what a crashed one left behind), so the tests pin its shape.
    """
    import hashlib

    digest = hashlib.sha256(str(Path(home).expanduser().resolve()).encode()).hexdigest()[:12]
    return f"{digest}/{run_id}"


def cookie_processes(cookie: str) -> list[int]:
    """Pids of live (non-zombie) processes whose environment carries ``RUN_COOKIE_VAR`` starting with ``cookie``.

    Pass ``run_cookie(home, run_id)`` for one run's processes, ``run_cookie(home)`` for every run of a home.
    The environment survives setsid() and double forks, so this finds escapees that no process tree shows.
    """
    needle = f"{RUN_COOKIE_VAR}={cookie}".encode()
    # Deadline-bounded reads (a process in D state must not hang the test); only processes younger than
    # this test process can carry a cookie it made.
    found = find_by_environ(needle, not_before=own_start_ticks()).matches
    return [pid for pid in found if pids_alive([pid])]
