"""File descriptors: the soft limit is raised, idle tasks hold none, and EMFILE in logging is one line.

Every limit is set on a child process (``prlimit``), never on the test process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for, write_task

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parent.parent


def _child(code: str, *, nofile: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["prlimit", f"--nofile={nofile}", sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_soft_limit_is_raised_to_the_hard_limit() -> None:
    result = _child(
        "import resource\nfrom supervisor.system.fdlimit import raise_fd_limit\n"
        "r = raise_fd_limit()\nprint(r.before, r.after, resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "print(r.describe())",
        nofile="40:4096",
    )
    assert result.stdout.splitlines() == ["40 4096 4096", "open-file limit raised from 40 to 4096 (the hard limit)"], (
        result.stderr
    )


def test_idle_task_logs_hold_no_file_descriptor(tmp_path: Path) -> None:
    """300 task logs under a limit of 48 fds: before, each logger kept its file open and the 40-somethingth
    task failed with EMFILE."""
    code = f"""
import os
from pathlib import Path
from supervisor.logsetup import TaskLogs
logs = TaskLogs(Path({str(tmp_path)!r}), max_bytes=1 << 20, backups=1)
before = len(os.listdir("/proc/self/fd"))
for n in range(300):
    logs.get(f"task-{{n}}").info("loaded")
print(len(os.listdir("/proc/self/fd")) - before, len(list(Path({str(tmp_path)!r}).glob("*.log"))))
"""
    result = _child(code, nofile="48:48")
    assert result.stdout.split() == ["0", "300"], result.stdout + result.stderr
    assert result.stderr == ""


def test_emfile_while_logging_is_one_line_and_logging_recovers(tmp_path: Path) -> None:
    code = f"""
import os
from pathlib import Path
from supervisor.logsetup import TaskLogs
logs = TaskLogs(Path({str(tmp_path)!r}), max_bytes=1 << 20, backups=1)
hog = []
try:
    while True:
        hog.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
for n in range(50):
    logs.get("busy").info("line %d", n)
for fd in hog:
    os.close(fd)
logs.get("busy").info("after the fds came back")
print(Path({str(tmp_path)!r}, "busy.log").read_text().count("\\n"))
"""
    result = _child(code, nofile="64:64")
    assert result.stdout.strip() == "1", result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Too many open files" in lines[0] and "busy.log" in lines[0], result.stderr


def test_a_supervisor_with_more_tasks_than_fds_keeps_running(home: Path) -> None:
    """120 disabled tasks (each logs a line to its own log) and a canary, under a hard limit of 100 fds."""
    for n in range(120):
        write_task(
            home / "Tasks", f"idle-{n:03d}", config="[Frequency]\nEveryXMinutes = 60\n[Global]\nEnabled = False\n"
        )
    write_task(home / "Tasks", "canary", config="[Frequency]\nEveryXMinutes = 0.05\n")
    with SupervisorProcess(home, prefix=("prlimit", "--nofile=100:100")) as sup:
        wait_for(lambda: len(sup.history("canary")) >= 2, timeout=90, what="two canary runs")
        assert sup.task_status("idle-119")["state"] == "disabled"
        assert "disabled" in sup.task_log("idle-119")
        assert sup.proc is not None
        held = len(os.listdir(f"/proc/{sup.proc.pid}/fd"))
        assert held < 60, f"the supervisor holds {held} fds for 121 tasks"
        assert "Too many open files" not in sup.log() + sup.console_text()


def test_runs_get_the_soft_limit_the_supervisor_started_with(home: Path) -> None:
    """The supervisor raises its own soft limit; a task gets the usual one back (select() users break past 1024)."""
    write_task(
        home / "Tasks",
        "limits",
        config="[Frequency]\nEveryXMinutes = 60\n",
        main="def main():\n    import resource\n    return '%d %d' % resource.getrlimit(resource.RLIMIT_NOFILE)\n",
    )
    with SupervisorProcess(home, prefix=("prlimit", "--nofile=1024:8192")) as sup:
        sup.wait_log("open-file limit raised from 1024 to 8192")
        runs = wait_for(
            lambda: [r for r in sup.history("limits") if r["outcome"] == "ok"], timeout=60, what="a finished run"
        )
        assert runs[0]["message"] == "1024 8192"
