"""install-systemd: the unit text (system and user mode) checked by ``systemd-analyze verify``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.cli.entry import main as cli_main
from supervisor.system.systemd import (
    UnitSpec,
    enable_unit,
    exec_quote,
    plan_install,
    render_unit,
    stop_timeout_for,
    unit_dir,
    unit_name_for,
)
from supervisor.system.worker_unit import WorkerUnitSpec, env_file_text, render_worker_unit, worker_unit_name_for

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _verify(unit: Path, *, user_mode: bool, tmp_path: Path) -> str:
    """Run ``systemd-analyze [--user] verify``; return every diagnostic that names the unit file."""
    env = dict(os.environ)
    if user_mode:  # the user manager needs a runtime dir; a container has no logind to make one
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    argv = [SYSTEMD_ANALYZE or "systemd-analyze", *(["--user"] if user_mode else []), "verify", str(unit)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=50, check=False)
    assert result.returncode == 0, result.stderr
    # verify exits 0 on an unknown key or a bad value, with a line naming the file: those count as failures.
    return "\n".join(line for line in (result.stdout + result.stderr).splitlines() if unit.name in line)


def _spec(home: Path, *, user_mode: bool) -> UnitSpec:
    return UnitSpec(
        name="taskautomation-test",
        home=home,
        python=Path(sys.executable),
        main_py=ROOT / "main.py",
        user_mode=user_mode,
        stop_timeout_s=stop_timeout_for([5.0, 95.5], default_grace_s=10),
        run_as=None,
    )


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze missing (Debian package 'systemd')")
@pytest.mark.parametrize("user_mode", [False, True], ids=["system", "user"])
def test_generated_unit_passes_systemd_analyze_verify(tmp_path: Path, user_mode: bool) -> None:
    home = tmp_path / "my home %h"  # a space and a specifier character: both must survive quoting
    home.mkdir()
    text = render_unit(_spec(home, user_mode=user_mode))
    unit = tmp_path / "units" / "taskautomation-test.service"
    unit.parent.mkdir()
    unit.write_text(text)
    assert _verify(unit, user_mode=user_mode, tmp_path=tmp_path) == ""


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze missing (Debian package 'systemd')")
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a bad Type= and a missing ExecStart binary are reported."""
    unit = tmp_path / "taskautomation-bad.service"
    text = render_unit(_spec(tmp_path, user_mode=False)).replace("Type=notify", "Type=notifyy")
    unit.write_text(text.replace(sys.executable, str(tmp_path / "no-such-python")))
    result = subprocess.run(
        [SYSTEMD_ANALYZE or "", "verify", str(unit)], capture_output=True, text=True, timeout=50, check=False
    )
    assert result.returncode != 0 or unit.name in result.stderr


def test_unit_keys_system_and_user_mode(tmp_path: Path) -> None:
    system = render_unit(_spec(tmp_path, user_mode=False))
    user = render_unit(_spec(tmp_path, user_mode=True))
    for text in (system, user):
        lines = text.splitlines()
        for expected in (
            "Type=notify",
            "NotifyAccess=main",
            "KillMode=mixed",
            "Restart=on-failure",
            "WatchdogSec=30",
            f"WorkingDirectory={tmp_path}",
            "TimeoutStopSec=126",
        ):
            assert expected in lines
        exec_start = next(line for line in lines if line.startswith("ExecStart="))
        assert exec_start == f"ExecStart={sys.executable} {ROOT / 'main.py'} --home {tmp_path}"
    assert "After=network-online.target" in system and "WantedBy=multi-user.target" in system
    # A user manager has no network-online.target: ordering on it would silently do nothing.
    assert "network-online" not in user and "WantedBy=default.target" in user


def test_stop_timeout_is_largest_grace_plus_30() -> None:
    assert stop_timeout_for([], default_grace_s=10) == 40
    assert stop_timeout_for([3, 120.2], default_grace_s=10) == 151
    assert stop_timeout_for([1], default_grace_s=60) == 90  # the home default counts too


def test_quoting_and_names() -> None:
    assert exec_quote("/a b/c") == '"/a b/c"'
    assert exec_quote("/x/100%") == "/x/100%%"
    assert exec_quote('/q"$HOME') == '"/q\\"$$HOME"'
    assert unit_name_for(Path("/srv/My Tasks!")) == "taskautomation-My-Tasks"
    assert unit_dir(user_mode=True, environ={}, user_home=Path("/home/u")) == Path("/home/u/.config/systemd/user")
    assert unit_dir(user_mode=True, environ={"XDG_CONFIG_HOME": "/c"}, user_home=Path("/h")) == Path("/c/systemd/user")
    assert unit_dir(user_mode=False, environ={}, user_home=Path("/h")) == Path("/etc/systemd/system")


def _task(home: Path, name: str, grace: str) -> None:
    folder = home / "Tasks" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text("def main():\n    return 'x'\n")
    (folder / "config.ini").write_text(f"[Frequency]\nEveryXMinutes = 5\n[Limits]\nKillGraceSeconds = {grace}\n")


def test_install_systemd_dry_run_uses_the_homes_largest_grace(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _task(home, "slow", "200")
    _task(home, "fast", "1")
    _task(home, "broken", "not-a-number")  # unreadable config: the default grace covers it
    units = home / "units"
    assert cli_main(["install-systemd", "--user", "--dry-run", "--unit-dir", str(units), "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "TimeoutStopSec=230" in out
    assert f"--home {home}" in out
    assert "loginctl enable-linger" in out
    assert not units.exists()  # --dry-run writes nothing


def test_install_systemd_writes_the_unit(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    units = home / "units"
    assert cli_main(["install-systemd", "--unit-dir", str(units), "--home", str(home)]) == 0
    written = units / f"{unit_name_for(home)}.service"
    assert "Type=notify" in written.read_text()
    out = capsys.readouterr().out
    assert f"wrote {written}" in out and "enable-linger" not in out


def test_enable_runs_daemon_reload_then_enable_now_and_reports_failure() -> None:
    calls: list[list[str]] = []

    def fake(argv):  # the service manager is not running in a test container; record what would run
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")

    lines = enable_unit("taskautomation-x", user_mode=True, run=fake)
    assert calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "taskautomation-x.service"],
    ]
    assert lines == [f"ran: {' '.join(c)}" for c in calls]

    def failing(argv):
        return subprocess.CompletedProcess(argv, 1, "", "Failed to connect to bus: No medium found\n")

    with pytest.raises(Exception, match="systemctl daemon-reload failed \\(exit 1\\): Failed to connect to bus"):
        enable_unit("taskautomation-x", user_mode=False, run=failing)


def test_plan_system_mode_runs_as_the_home_owner(tmp_path: Path) -> None:
    plan = plan_install(
        home=tmp_path,
        python=Path(sys.executable),
        main_py=None,
        user_mode=False,
        graces=[],
        default_grace_s=10,
        run_as="alice",
        target_dir=tmp_path / "u",
    )
    assert "User=alice" in plan.text
    assert f"ExecStart={sys.executable} -m supervisor run --home {tmp_path}" in plan.text


def test_install_systemd_enable_runs_systemctl_and_reports_it(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the command line with a stand-in ``systemctl`` on PATH (no service manager runs in a test
    container): the real subprocess path, the order of the calls and the report."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    fake = bin_dir / "systemctl"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1 $2" != "--user enable" ] || [ -z "$FAIL" ] '
        f"|| {{ echo 'Failed to enable unit: Unit file is masked.' >&2; exit 1; }}\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    units = home / "units"
    name = unit_name_for(home)
    assert cli_main(["install-systemd", "--user", "--enable", "--unit-dir", str(units), "--home", str(home)]) == 0
    assert calls.read_text().splitlines() == ["--user daemon-reload", f"--user enable --now {name}.service"]
    out = capsys.readouterr().out
    assert f"ran: systemctl --user daemon-reload\nran: systemctl --user enable --now {name}.service" in out
    assert "loginctl enable-linger" in out
    monkeypatch.setenv("FAIL", "1")
    assert cli_main(["install-systemd", "--user", "--enable", "--unit-dir", str(units), "--home", str(home)]) == 1
    assert "enable --now" in capsys.readouterr().err


def test_the_unit_runs_a_clones_main_py_and_an_installed_tool_with_dash_m(tmp_path: Path) -> None:
    from supervisor.system.systemd import clone_main_py

    module = tmp_path / "supervisor" / "system" / "systemd.py"
    module.parent.mkdir(parents=True)
    module.write_text("")
    assert clone_main_py(module) is None  # site-packages: no seed scripts beside the package
    (tmp_path / "main.py").write_text("")
    assert clone_main_py(module) is None  # another distribution's main.py is not ours
    (tmp_path / "terminate.py").write_text("")
    assert clone_main_py(module) == tmp_path / "main.py"
    assert clone_main_py(ROOT / "supervisor" / "system" / "systemd.py") == ROOT / "main.py"


def _worker_spec(home: Path, *, user_mode: bool) -> WorkerUnitSpec:
    return WorkerUnitSpec(
        home=home,
        python=Path(sys.executable),
        pythonpath=ROOT,
        queues=("default", "gpu"),
        worker_name="box 1",
        user_mode=user_mode,
        run_as=None,
    )


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze missing (Debian package 'systemd')")
@pytest.mark.parametrize("user_mode", [False, True], ids=["system", "user"])
def test_worker_unit_passes_systemd_analyze_verify(tmp_path: Path, user_mode: bool) -> None:
    home = tmp_path / "worker home %h"
    home.mkdir()
    (home / "worker.env").write_text(env_file_text("redis://:pw@10.0.0.5:6379/0"))
    unit = tmp_path / "units" / f"{worker_unit_name_for(home)}.service"
    unit.parent.mkdir()
    unit.write_text(render_worker_unit(_worker_spec(home, user_mode=user_mode)))
    assert _verify(unit, user_mode=user_mode, tmp_path=tmp_path) == ""


def test_worker_unit_restarts_always_and_keeps_the_redis_url_out(tmp_path: Path) -> None:
    text = render_worker_unit(_worker_spec(tmp_path, user_mode=False))
    lines = text.splitlines()
    for expected in ("Restart=always", "RestartSec=10", "StartLimitIntervalSec=0", "KillMode=mixed", "Type=simple"):
        assert expected in lines
    assert f"EnvironmentFile={tmp_path / 'worker.env'}" in lines
    assert f"Environment=PYTHONPATH={ROOT}" in lines  # a clone: works without a pip install too
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    assert exec_start == (
        f'ExecStart={sys.executable} -m supervisor worker --home {tmp_path} --queues default,gpu --name "box 1"'
    )
    assert "redis://" not in text and "--redis" not in text  # the URL (and its password) lives in worker.env
    assert worker_unit_name_for(Path("/srv/ta worker")) == "taskautomation-worker-ta-worker"


def test_install_systemd_worker_writes_a_private_env_file(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    units = home / "units"
    argv = ["install-systemd", "--worker", "--user", "--unit-dir", str(units), "--home", str(home)]
    monkeypatch.delenv("TASKAUTOMATION_REDIS_URL", raising=False)
    assert cli_main(argv) == 1
    assert "--redis URL" in capsys.readouterr().err
    assert cli_main([*argv, "--dry-run", "--redis", "redis://me:s3cret@10.0.0.5:6379/0"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "redis://me:***@10.0.0.5:6379/0" in out
    assert "Restart=always" in out and not units.exists() and not (home / "worker.env").exists()
    assert cli_main([*argv, "--redis", "redis://me:s3cret@10.0.0.5:6379/0", "--queues", "a,b"]) == 0
    unit = units / f"{worker_unit_name_for(home)}.service"
    assert "--queues a,b" in unit.read_text() and "s3cret" not in unit.read_text()
    env_file = home / "worker.env"
    assert (env_file.stat().st_mode & 0o777) == 0o600
    assert env_file.read_text() == 'TASKAUTOMATION_REDIS_URL="redis://me:s3cret@10.0.0.5:6379/0"\n'
    # The supervisor's unit takes none of the worker's options.
    assert cli_main(["install-systemd", "--dry-run", "--name", "x", "--home", str(home)]) == 1
    assert "belong with --worker" in capsys.readouterr().err
