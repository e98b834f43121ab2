"""doctor: a healthy home passes; each FAIL condition, simulated through the probes, fails with its fix."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.cli.doctor import Status, check_cgroups, check_inotify, doctor_command, run_checks
from supervisor.cli.doctor_probes import (
    CgroupInfo,
    Probes,
    SupervisorProbe,
    broken_envs,
    parse_cgroups,
    probe_supervisor,
)
from supervisor.cli.entry import main as cli_main
from supervisor.envs.manager import MARKER_NAME
from supervisor.paths import Paths

pytestmark = pytest.mark.timeout(60)


def _by_name(checks):
    return {check.name: check for check in checks}


def test_healthy_home_has_no_fail_and_json_schema(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "Tasks" / "a" / "Output").mkdir(parents=True)
    code = cli_main(["doctor", "--json", "--home", str(home)])
    report = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in report["checks"]]
    assert names == [
        "python",
        "uv",
        "inotify",
        "cgroups",
        "launcher",
        "disk",
        "home writable",
        "private files",
        "time zones",
        "clock",
        "envs",
        "systemd unit",
        "supervisor",
    ]
    for check in report["checks"]:
        assert set(check) == {"name", "status", "detail", "fix"}
        assert check["status"] in ("pass", "warn", "fail")
        assert (check["fix"] == "") == (check["status"] == "pass")
    assert [c for c in report["checks"] if c["status"] == "fail"] == []
    assert code == 0
    by_name = {c["name"]: c for c in report["checks"]}
    assert "3 folders under Tasks/" in by_name["inotify"]["detail"]  # Tasks, a, a/Output
    assert by_name["supervisor"]["status"] == "warn"  # none running on this home


@pytest.mark.parametrize(
    "probe, value, failing",
    [
        ("python", lambda: ((3, 8, 10), "/usr/bin/python3.8"), "python"),
        ("max_watches", lambda: 10, "inotify"),
        ("free_bytes", lambda home: 50 * 1024 * 1024, "disk"),
        ("home_write_error", lambda home: "Read-only file system", "home writable"),
        ("timezone_error", lambda: "Europe/Berlin: No time zone found with key Europe/Berlin", "time zones"),
        ("supervisor", lambda paths: SupervisorProbe(running=True, error="timed out"), "supervisor"),
    ],
    ids=["python", "inotify", "disk", "home-writable", "tzdata", "hung-supervisor"],
)
def test_each_fail_condition(home: Path, probe: str, value, failing: str, capsys: pytest.CaptureFixture[str]) -> None:
    for index in range(20):
        (home / "Tasks" / f"t{index}").mkdir()
    probes = dataclasses.replace(Probes(), **{probe: value})
    code = doctor_command(Paths(home), as_json=False, out=print, probes=probes)
    out = capsys.readouterr().out
    assert code == 1
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith(f"FAIL  {failing}:")
    fix_line = out.splitlines()[out.splitlines().index(failed[0]) + 1]
    assert fix_line.startswith("      fix: ")


def test_inotify_thresholds() -> None:
    assert check_inotify(100, folders=101).status is Status.FAIL
    assert check_inotify(150, folders=100).status is Status.WARN
    assert check_inotify(200, folders=100).status is Status.PASS
    assert "sysctl fs.inotify.max_user_watches=524288" in check_inotify(1, folders=5).fix


def test_cgroup_parsing_v1_v2_and_none(tmp_path: Path) -> None:
    v1 = (
        "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "31 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    )
    info = parse_cgroups(
        v1, "8:pids:/\n5:memory:/\n", read=lambda p: None, writable=lambda p: str(p).endswith("memory")
    )
    assert info == CgroupInfo("v1", memory=True, pids=False, where="/sys/fs/cgroup/memory, /sys/fs/cgroup/pids")
    assert check_cgroups(info).status is Status.WARN and "pids" not in check_cgroups(info).detail.split(":")[1]
    group = tmp_path / "user.slice"
    group.mkdir()
    v2 = f"40 1 0:30 / {tmp_path} rw - cgroup2 cgroup2 rw\n"
    info = parse_cgroups(
        v2,
        "0::/user.slice\n",
        read=lambda p: "cpu memory pids" if p.parent == group else None,
        writable=lambda p: p == group,
    )
    assert info == CgroupInfo("v2", memory=True, pids=True, where=str(group))
    assert check_cgroups(info).status is Status.PASS
    assert parse_cgroups("", "", read=lambda p: None, writable=lambda p: True).version is None


def test_env_whose_base_interpreter_is_gone_is_reported(home: Path) -> None:
    envs = home / "envs"
    base = home / "base" / "bin"
    base.mkdir(parents=True)
    interpreter = base / "python3"
    shutil.copy(sys.executable, interpreter)
    for key, target in (("aaaaaaaaaaaaaaaa", interpreter), ("bbbbbbbbbbbbbbbb", Path(sys.executable))):
        (envs / key / "bin").mkdir(parents=True)
        (envs / key / "bin" / "python").symlink_to(target)
        (envs / key / "pyvenv.cfg").write_text(f"home = {target.parent}\n")
        (envs / key / MARKER_NAME).write_text(json.dumps({"key": key}))
    assert broken_envs(envs) == ([], 2)
    interpreter.unlink()
    broken, total = broken_envs(envs)
    assert total == 2 and [key for key, _ in broken] == ["aaaaaaaaaaaaaaaa"]
    assert str(interpreter) in broken[0][1]
    check = _by_name(run_checks(Paths(home)))["envs"]
    assert check.status is Status.WARN and "aaaaaaaaaaaaaaaa" in check.detail and "rm -rf" in check.fix


def test_a_supervisor_that_holds_the_lock_but_does_not_answer_fails(home: Path) -> None:
    """A real lock holder and a real socket that accepts but never replies (a hung loop)."""
    paths = Paths(home)
    paths.state.mkdir(parents=True)
    lock_fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        listener.bind(str(paths.control_socket))
        listener.listen(1)
        probes = dataclasses.replace(Probes(), supervisor=lambda p: probe_supervisor(p, timeout=0.5))
        check = _by_name(run_checks(paths, probes=probes))["supervisor"]
        assert check.status is Status.FAIL and "does not answer" in check.detail and "restart" in check.fix
    finally:
        listener.close()
        os.close(lock_fd)


def test_doctor_command_line_exit_codes(home: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "doctor", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  home writable" in result.stdout
    # A home that does not exist is refused at the command line's edge (one line, exit 1) ...
    missing = tmp_path / "nope"
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "doctor", "--home", str(missing)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 1 and str(missing) in result.stderr and "does not exist" in result.stderr
    # ... and the check itself, asked directly, fails it instead of crashing.
    check = _by_name(run_checks(Paths(missing)))["home writable"]
    assert check.status is Status.FAIL and check.detail == f"cannot write to {missing}: it does not exist"


def test_an_installed_unit_that_cannot_start_fails_and_a_short_stop_timeout_warns(home: Path) -> None:
    from supervisor.system.systemd import UnitSpec, installed_units, render_unit, unit_name_for

    config = home / "config"
    unit = config / "systemd" / "user" / f"{unit_name_for(home)}.service"
    unit.parent.mkdir(parents=True)
    task = home / "Tasks" / "slow"
    task.mkdir()
    (task / "main.py").write_text("def main():\n    pass\n")
    (task / "config.ini").write_text("[Frequency]\nEveryXMinutes = 5\n[Limits]\nKillGraceSeconds = 100\n")
    probes = dataclasses.replace(
        Probes(), units=lambda paths: installed_units(paths, environ={"XDG_CONFIG_HOME": str(config)}, user_home=home)
    )

    def write(python: Path, stop_s: int) -> None:
        unit.write_text(
            render_unit(
                UnitSpec(name=unit.stem, home=home, python=python, main_py=None, user_mode=True, stop_timeout_s=stop_s)
            )
        )

    write(Path(sys.executable), 130)
    assert _by_name(run_checks(Paths(home), probes=probes))["systemd unit"].status is Status.PASS
    write(Path(sys.executable), 40)  # written before KillGraceSeconds was raised to 100
    check = _by_name(run_checks(Paths(home), probes=probes))["systemd unit"]
    assert check.status is Status.WARN and "TimeoutStopSec 40 is below the 130 s" in check.detail
    write(home / "old venv" / "bin" / "python", 130)  # the venv was deleted or moved
    check = _by_name(run_checks(Paths(home), probes=probes))["systemd unit"]
    assert check.status is Status.FAIL and str(home / "old venv" / "bin" / "python") in check.detail
    assert "install-systemd" in check.fix


def test_a_healthy_running_supervisor_passes(home: Path) -> None:
    from tests.support.harness import SupervisorProcess

    task = home / "Tasks" / "t"
    task.mkdir()
    (task / "main.py").write_text("def main():\n    return 'x'\n")
    (task / "config.ini").write_text("[Frequency]\nEveryXMinutes = 600\n")
    with SupervisorProcess(home) as running:
        check = _by_name(run_checks(Paths(home)))["supervisor"]
        assert running.proc is not None
        assert check.status is Status.PASS
        assert check.detail == f"running (pid {running.proc.pid}), 1 task(s)"


def test_launcher_check_says_which_launcher_is_in_force() -> None:
    from supervisor.cli.doctor import check_launcher
    from supervisor.execution.forkserver import launcher_line

    spawn = check_launcher("spawn", launcher_line("spawn"))
    assert spawn.status is Status.PASS and spawn.detail.startswith("spawn")
    fork = check_launcher("fork", launcher_line("fork"))
    assert fork.status is Status.PASS and fork.detail.startswith("fork (per-env fork servers")
    refused = check_launcher("fork", "launcher: spawn (Launcher = fork asked, but no fork() on this platform)")
    assert refused.status is Status.WARN and "no fork()" in refused.detail and refused.fix
