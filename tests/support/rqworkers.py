"""``taskautomation worker`` processes and the supervisor's RQ executor on its own, for the scale-out tests."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator, Sequence

from bench.redisproc import RedisServer
from supervisor.clock import SystemClock
from supervisor.events import Event
from supervisor.execution.cgroup_layout import Layout
from supervisor.execution.cgroups import Containment
from supervisor.execution.executor import LocalExecutor, RunRequest
from supervisor.logsetup import TaskLogs
from supervisor.model import Limits, RunMode, Trigger
from supervisor.scaleout.executor import WORKER_SILENT_AFTER_S, RQExecutor
from tests.support.harness import REPO


class Worker:
    """``python -m supervisor worker`` with its own home, as a user starts one on another machine."""

    def __init__(
        self, home: Path, redis_url: str, name: str, *, extra: Sequence[str] = (), url_in_env: bool = False
    ) -> None:
        self.home = home  # not created here: `worker` creates a missing home (and says so)
        self.out = home.parent / f"{home.name}-console.txt"  # beside the home, which the command creates
        # As its systemd unit starts it, the URL can come from the environment instead of the command line.
        env = {**os.environ, "TASKAUTOMATION_REDIS_URL": redis_url} if url_in_env else None
        url = [] if url_in_env else ["--redis", redis_url]
        argv = [sys.executable, "-m", "supervisor", "worker", *url, "--home", str(home)]
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(
                [*argv, "--name", name, *extra],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def console(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def task_log(self, task: str) -> str:
        path = self.home / "logs" / "tasks" / f"{task}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def horse_pids(self) -> list[int]:
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.Error:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # RQ: warm shutdown, then (second signal) cold
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def rq_executor(
    home: Path,
    redis_url: str,
    *,
    task_logs: TaskLogs,
    home_id: str,
    logger: logging.Logger | None = None,
    post: Callable[[Event], None] = lambda event: None,
    lost_after_s: float = WORKER_SILENT_AFTER_S,
) -> RQExecutor:
    """The supervisor's ``RQExecutor`` on its own (no loop): the test drives ``launch`` and ``enforce``."""
    log = logger or logging.getLogger("t")
    local = LocalExecutor(
        home=home,
        cookie_prefix="x/",
        task_logs=task_logs,
        logger=log,
        clock=SystemClock(),
        post=post,
        output_cap_bytes=1024,
        containment=Containment(home, layout=Layout()),
    )
    return RQExecutor(
        local=local,
        redis_url=redis_url,
        home_id=home_id,
        installer="uv",
        output_cap_bytes=1024,
        task_logs=task_logs,
        logger=log,
        clock=SystemClock(),
        post=post,
        lost_after_s=lost_after_s,
    )


def main_request(
    folder: Path, run_id: str, *, trigger: Trigger = Trigger.MANUAL, due: datetime | None = None
) -> RunRequest:
    """A run of ``main()`` of the task in ``folder``, as the loop would hand it to the executor."""
    return RunRequest(
        task=folder.name,
        run_id=run_id,
        mode=RunMode.MAIN,
        trigger=trigger,
        task_dir=folder,
        output_dir=folder / "Output",
        env_key="k",
        python=Path(sys.executable),
        env_dir=Path(sys.prefix),
        limits=Limits(),
        due=due,
    )


@contextmanager
def running_redis(folder: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for the test's duration (stopped even when it fails)."""
    server = RedisServer(folder).start()
    try:
        yield server
    finally:
        server.stop()


class LogLines(logging.Handler):
    """Keeps every message logged to it, for tests that count what was said."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
