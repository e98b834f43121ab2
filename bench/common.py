"""Set-up shared by the benchmark groups: settings, temporary homes, a ready env, CPU burners, a Runner.

Benchmarks drive the real code (``supervisor.execution.runner.Runner`` and the shim, ``EnvManager``, the loop, the
watcher) on real processes; this module only prepares what they need and cleans it up again. Every helper
that starts a process also stops it, so a benchmark that fails half-way leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: the repository's tests.support helpers and the package
    sys.path.insert(0, str(REPO))

from tests.support.harness import pids_alive  # noqa: E402
from tests.support.helpers import build_wheel, wait_for, write_task  # noqa: E402

from supervisor.envs.manager import EnvManager  # noqa: E402
from supervisor.execution.outcome import ProcessReport  # noqa: E402
from supervisor.execution.runner import Runner, RunProcess, child_environment  # noqa: E402
from supervisor.model import ProcessLaunch, RunMode  # noqa: E402
from supervisor.paths import Paths  # noqa: E402

__all__ = [
    "REPO",
    "BenchRunner",
    "CpuBurners",
    "Settings",
    "build_wheel",
    "hermetic_env",
    "kill_quietly",
    "now_ns",
    "pids_alive",
    "ready_env",
    "temp_home",
    "wait_for",
    "write_task",
]


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: the one clock every benchmark and every task it starts reads.

    It is system-wide, so a timestamp written by a task process compares directly with one taken here.
    """
    return time.monotonic_ns()


@dataclass(frozen=True)
class Settings:
    """How hard to measure. ``quick`` trades repetitions for a run of under three minutes on 2 cores."""

    quick: bool = False
    scratch: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))

    def pick(self, quick: int | float, full: int | float) -> int | float:
        return quick if self.quick else full


@contextlib.contextmanager
def temp_home(prefix: str, settings: Settings | None = None) -> Iterator[Path]:
    """A fresh HOME with an empty Tasks/ folder, removed afterwards."""
    base = settings.scratch if settings else Path(tempfile.gettempdir())
    folder = Path(tempfile.mkdtemp(prefix=f"ta-bench-{prefix}-", dir=base))
    try:
        (folder / "Tasks").mkdir()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def hermetic_env(**extra: str) -> dict[str, str]:
    """os.environ without the host's pip and uv settings (find-links, indexes, constraints), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", UV_NO_PROGRESS="1", **extra
    )
    return env


def ready_env(home: Path) -> Path:
    """Build (with the supervisor's EnvManager, default installer) an env with no requirements; its python."""
    paths = Paths(home)
    paths.ensure()
    folder = home / "Tasks" / "_envseed"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.txt").write_text("")
    status = EnvManager(paths).ensure(task="_envseed", requirements=folder / "requirements.txt", task_dir=folder)
    assert status.python is not None
    return status.python


class CpuBurners:
    """N processes spinning on a core each (both cores busy), killed and reaped on exit."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuBurners:
        for _ in range(self.count):
            self._procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            proc.kill()
        for proc in self._procs:
            proc.wait()


class BenchRunner:
    """A ``supervisor.execution.runner.Runner`` with callbacks that record what each run printed and when it ended.

    ``launch`` must be called from one long-lived thread (the main thread here), as the loop does: the
    monitor's PDEATHSIG is tied to the spawning thread.
    """

    def __init__(self, home: Path, python: Path, *, grace_s: float = 10.0, popen: Any = None) -> None:
        self.home = home
        self.python = python
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self.first_line: dict[str, tuple[int, str]] = {}  # run id -> (ns when the relay saw it, text)
        self.lines: dict[str, list[str]] = {}
        self.exited: dict[str, tuple[int, ProcessReport]] = {}  # run id -> (ns of on_exit, report)
        self._changed = threading.Condition(self._lock)
        extra = {} if popen is None else {"popen": popen}  # a ForkPool's popen: runs forked by a server
        self.runner = Runner(output_cap_bytes=1 << 20, on_output=self._on_output, on_exit=self._on_exit, **extra)
        self._seq = 0

    def _on_output(self, spec: ProcessLaunch, line: str) -> None:
        now = now_ns()
        with self._changed:
            self.first_line.setdefault(spec.run_id, (now, line))
            self.lines.setdefault(spec.run_id, []).append(line)
            self._changed.notify_all()

    def _on_exit(self, spec: ProcessLaunch, report: ProcessReport) -> None:
        now = now_ns()
        with self._changed:
            self.exited[spec.run_id] = (now, report)
            self._changed.notify_all()

    def spec(self, task: str, *, mode: RunMode = RunMode.MAIN, grace_s: float | None = None) -> ProcessLaunch:
        """What the loop builds before a spawn: run id, the child environment, the ProcessLaunch."""
        self._seq += 1
        run_id = f"bench-{os.getpid()}-{self._seq}"
        env = child_environment(
            os.environ,
            task=task,
            run_id=run_id,
            task_dir=self.home / "Tasks" / task,
            output_dir=self.home / "Tasks" / task / "Output",
            env_dir=self.python.parent.parent,
            cookie=f"bench/{run_id}",
        )
        return ProcessLaunch(
            task=task,
            run_id=run_id,
            mode=mode,
            python=self.python,
            home=self.home,
            kill_grace_s=self.grace_s if grace_s is None else grace_s,
            env=env,
        )

    def launch(self, spec: ProcessLaunch) -> RunProcess:
        return self.runner.launch(spec)

    def wait(self, predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Block until ``predicate()`` (evaluated under the lock) holds; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"benchmark timed out after {timeout:g} s waiting for {what}")
                self._changed.wait(left)

    def wait_exit(self, run_id: str, *, timeout: float = 30.0) -> tuple[int, ProcessReport]:
        self.wait(lambda: run_id in self.exited, timeout=timeout, what=f"run {run_id} to end")
        return self.exited[run_id]

    def wait_lines(self, run_id: str, count: int, *, timeout: float = 30.0) -> list[str]:
        self.wait(
            lambda: len(self.lines.get(run_id, ())) >= count or run_id in self.exited,
            timeout=timeout,
            what=f"{count} line(s) from run {run_id}",
        )
        lines = self.lines.get(run_id, [])
        if len(lines) < count:
            report = self.exited.get(run_id)
            raise AssertionError(f"run {run_id} ended after {len(lines)} line(s): {lines} {report}")
        return lines

    def close(self, timeout: float = 10.0) -> None:
        self.runner.join(timeout)


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass
