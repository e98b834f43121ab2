"""The dashboard as a supervised child of the supervisor (``[Web] Listen`` in taskautomation.ini).

It lives here, below the composition root, and knows the dashboard only as a command line: ``service`` starts
it without importing an edge, and it needs no web framework.

Policy:

* The child is ``python -m supervisor web --home HOME --listen ADDR --parent-fd N``: the same program a user
  runs, so it reads the history read-only and acts through the control socket like any other client.
* It is restarted when it exits, after a back-off that doubles from :data:`FIRST_DELAY_S` up to
  :data:`MAX_DELAY_S` and starts over once a child has stayed up for :data:`STABLE_S` (a dashboard that
  cannot bind its port must not spin). Every exit and restart is logged.
* ``stop()`` (supervisor shutdown, hence terminate.py) sends SIGTERM, waits :data:`STOP_GRACE_S`, then SIGKILL.
* If the supervisor dies without stopping it (SIGKILL), the child notices at once: it holds the read end of
  a pipe whose only write end is the supervisor's, and exits at EOF.

Spawning, the clock and the wait between restarts are injected, so tests can drive the policy directly.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from ..paths import Paths

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 60.0
STABLE_S = 60.0
STOP_GRACE_S = 5.0


class ChildProcess(Protocol):
    pid: int

    def wait(self, timeout: float | None = None) -> int: ...
    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


Spawn = Callable[[list[str], int], ChildProcess]


@dataclass(frozen=True)
class Backoff:
    """Delay before the next restart (pure)."""

    first: float = FIRST_DELAY_S
    maximum: float = MAX_DELAY_S
    stable: float = STABLE_S

    def next_delay(self, previous: float | None, *, uptime: float) -> float:
        if previous is None or uptime >= self.stable:
            return self.first
        return min(previous * 2, self.maximum)


def web_argv(home: Path, listen: str, *, python: str = sys.executable) -> list[str]:
    """The command line of the dashboard child (``--parent-fd`` is appended at spawn)."""
    return [python, "-m", "supervisor", "web", "--home", str(home), "--listen", listen]


def popen_spawn(log_path: Path) -> Spawn:
    """Start the child with its output appended to ``log_path`` and the pipe's read end passed on."""

    def spawn(argv: list[str], parent_fd: int) -> ChildProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with open(fd, "ab") as out:
            return subprocess.Popen(
                [*argv, "--parent-fd", str(parent_fd)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(parent_fd,),
                start_new_session=True,
                close_fds=True,
            )

    return spawn


class WebChild:
    """Keeps one dashboard process running until :meth:`stop`."""

    def __init__(
        self,
        argv: list[str],
        *,
        spawn: Spawn,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._argv = argv
        self._spawn = spawn
        self._log = logger
        self._clock = clock
        self._backoff = backoff
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._proc: ChildProcess | None = None
        self._thread: threading.Thread | None = None
        self._pipe_w: int | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def start(self) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)  # the child gets r via pass_fds; only we hold w
        self._pipe_w = w
        self._thread = threading.Thread(target=self._keep_running, args=(r,), name="web-child", daemon=True)
        self._thread.start()

    def _keep_running(self, pipe_r: int) -> None:
        delay: float | None = None
        try:
            while not self._stopping.is_set():
                with self._lock:
                    if self._stopping.is_set():
                        return
                    try:
                        self._proc = self._spawn(self._argv, pipe_r)
                    except OSError as exc:
                        self._log.error("web dashboard: cannot start %s: %s", self._argv[0], exc)
                        self._proc = None
                started = self._clock()
                if self._proc is not None:
                    self.starts += 1
                    self._log.info("web dashboard started (pid %d): %s", self._proc.pid, " ".join(self._argv[2:]))
                    code = self._proc.wait()
                    if self._stopping.is_set():
                        return
                    self._log.warning("web dashboard (pid %d) exited with %s; restarting it", self._proc.pid, code)
                delay = self._backoff.next_delay(delay, uptime=self._clock() - started)
                self._stopping.wait(delay)  # woken at once by stop()
        finally:
            os.close(pipe_r)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace; returns when the child is gone."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._log.warning("web dashboard (pid %d) ignored SIGTERM for %g s; killing it", proc.pid, STOP_GRACE_S)
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=STOP_GRACE_S + 5)
        if self._pipe_w is not None:
            os.close(self._pipe_w)
            self._pipe_w = None


def start_web_child(paths: Paths, listen: str, *, logger: logging.Logger) -> WebChild | None:
    """``[Web] Listen``: start the supervised dashboard, or log why it cannot run (the supervisor runs on)."""
    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        logger.error(
            "[Web] Listen = %s in %s: the dashboard needs the web extra (pip install "
            "'taskautomation[web]'); not starting it",
            listen,
            paths.home_config,
        )
        return None
    child = WebChild(web_argv(paths.home, listen), spawn=popen_spawn(paths.logs / "web.log"), logger=logger)
    child.start()
    return child
