"""logs/ is private: a real supervisor started under the loosest umask (000) creates its folders 0700 and its
files 0600 (history database with -wal/-shm, supervisor and task logs also after a rotation, lock, socket),
and ``doctor`` warns, naming path, mode and the chmod, about an existing home whose files others can read."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for, write_task

from supervisor.paths import Paths

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parent.parent
# The loosest umask a user can have: anything private below is private because the supervisor made it so.
LOOSE_UMASK = ("sh", "-c", 'umask 000 && exec "$@"', "sh")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _doctor(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "doctor", "--home", str(home)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_supervisor_under_umask_000_creates_logs_and_state_private(home: Path) -> None:
    # A small LogMaxBytes so the supervisor log and the task log rotate while the test watches.
    (home / "taskautomation.ini").write_text("[Supervisor]\nLogMaxBytes = 2000\nLogBackups = 2\n")
    write_task(home / "Tasks", "chatty", config="[Frequency]\nEveryXMinutes = 0.01\n[Global]\nTesting = True\n")
    paths = Paths(home)
    with SupervisorProcess(home, prefix=LOOSE_UMASK) as sup:
        wait_for(
            lambda: (
                paths.supervisor_log.with_name("supervisor.log.1").exists()
                and paths.task_log("chatty").with_name(paths.task_log("chatty").name + ".1").exists()
            ),
            timeout=60,
            what="the supervisor log and the task log to rotate",
        )
        wal = paths.database.with_name(paths.database.name + "-wal")
        shm = paths.database.with_name(paths.database.name + "-shm")
        wait_for(lambda: wal.exists() and shm.exists(), timeout=30, what="the history's -wal and -shm")
        folders = [paths.logs, paths.task_logs, paths.state]
        files = [paths.database, wal, shm, paths.lock_file, paths.control_socket]
        files += sorted(paths.logs.glob("supervisor.log*")) + sorted(paths.task_logs.glob("chatty.log*"))
        modes = {str(p.relative_to(home)): oct(_mode(p)) for p in folders + files}
        assert all(_mode(p) == 0o700 for p in folders), modes
        assert all(_mode(p) == 0o600 for p in files), modes
        assert stat.S_ISSOCK(paths.control_socket.lstat().st_mode)
        assert sup.status()["tasks"]
    # The home the supervisor made passes doctor's check.
    result = _doctor(home)
    assert f"PASS  private files: {paths.logs} is private" in result.stdout, result.stdout


def test_existing_modes_are_kept_and_doctor_warns_with_path_mode_and_fix(home: Path) -> None:
    """A home made by an older version (0755 folders, 0644 files): the supervisor does not change what the
    user has, but every file it creates is private, and doctor names what others can read."""
    paths = Paths(home)
    for folder in (paths.logs, paths.task_logs, paths.state):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
    old_log = paths.task_log("old")
    old_log.write_text("2026-01-01 old line\n")
    old_log.chmod(0o644)
    write_task(home / "Tasks", "fresh", config="[Frequency]\nEveryXMinutes = 60\n[Global]\nTesting = True\n")
    with SupervisorProcess(home, prefix=LOOSE_UMASK) as sup:
        sup.wait_log("loaded", task="fresh")
        assert _mode(paths.task_log("fresh")) == 0o600
        assert _mode(paths.database) == 0o600
    assert _mode(paths.logs) == 0o755 and _mode(old_log) == 0o644  # left as the user had them

    result = _doctor(home)
    lines = result.stdout.splitlines()
    warn = next(line for line in lines if line.startswith("WARN  private files:"))
    assert f"{paths.logs} (mode 0755)" in warn and "readable by group/others" in warn, warn
    assert f"fix: chmod -R go= {paths.logs}" in lines[lines.index(warn) + 1]
    assert result.returncode == 0  # a WARN, not a FAIL

    subprocess.run(["chmod", "-R", "go=", str(paths.logs)], check=True, timeout=10)
    assert "PASS  private files:" in _doctor(home).stdout


def test_doctor_names_a_group_readable_history_file(home: Path) -> None:
    paths = Paths(home)
    paths.ensure()
    paths.database.write_bytes(b"")
    paths.database.chmod(0o640)
    result = _doctor(home)
    assert f"{paths.database} (mode 0640)" in result.stdout, result.stdout
    assert os.access(paths.database, os.R_OK)
