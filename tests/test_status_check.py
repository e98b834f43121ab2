"""status --check: exit 1 when any task is in error, env-failed, or its last finished run failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.cli.entry import main as cli_main
from supervisor.cli.entry import unhealthy_tasks

pytestmark = pytest.mark.timeout(30)


def _row(name: str, state: str = "idle", outcome: str | None = None, enabled: bool = True) -> dict:
    return {"name": name, "enabled": enabled, "state": state, "last_run": {"outcome": outcome} if outcome else None}


def test_unhealthy_tasks_policy() -> None:
    status = {
        "tasks": [
            _row("ok", outcome="ok"),
            _row("never"),
            _row("testing", outcome="testing"),
            _row("skip", outcome="skipped"),
            _row("bad", state="error"),
            _row("env", state="env-failed"),
            _row("timeout", outcome="timeout"),
            _row("crash", outcome="crashed"),
            _row("off", state="disabled", outcome="failed", enabled=False),
            _row("stopped", outcome="killed"),
            _row("crashed-supervisor", outcome="interrupted"),
            _row("mem", outcome="memory"),
            _row("fail", outcome="failed"),
        ]
    }
    assert unhealthy_tasks(status) == [
        "bad: error",
        "env: env-failed",
        "timeout: last run timeout",
        "crash: last run crashed",
        "mem: last run memory",
        "fail: last run failed",
    ]
    assert unhealthy_tasks({"tasks": [_row("a", outcome="ok")]}) == []


def _task(home: Path, name: str, config: str) -> None:
    folder = home / "Tasks" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text("def main():\n    return 'x'\n")
    (folder / "config.ini").write_text(config)


def test_status_check_exit_codes_from_the_command_line(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _task(home, "good", "[Frequency]\nEveryXMinutes = 5\n")
    assert cli_main(["status", "--check", "--home", str(home)]) == 0
    assert cli_main(["status", "--json", "--check", "--home", str(home)]) == 0
    _task(home, "broken", "[Frequency]\nEveryXMinutes = soon\n")
    capsys.readouterr()
    assert cli_main(["status", "--check", "--home", str(home)]) == 1
    assert "check failed: broken: error" in capsys.readouterr().err
    assert cli_main(["status", "--home", str(home)]) == 0  # without --check status only reports
