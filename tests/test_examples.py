"""The example tasks shipped in Tasks/ validate and run as the quick start promises."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest

from harness import REPO, SupervisorProcess, cli

pytestmark = pytest.mark.timeout(120)


def test_examples_validate() -> None:
    result = cli(REPO, "validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 task(s) checked, 0 problem(s)" in result.stdout


def test_examples_run_on_a_copy_of_the_home(tmp_path: Path) -> None:
    shutil.copytree(REPO / "Tasks", tmp_path / "Tasks", ignore=shutil.ignore_patterns("__pycache__"))
    with SupervisorProcess(tmp_path) as sup:
        sup.wait_log("ok in", task="HelloWorld", timeout=60)
        sup.wait_log("ok in", task="DiskUsage", timeout=60)
        archive = sup.task_status("NightlyArchive")
        assert archive["state"] in ("scheduled", "running")
        next_run = datetime.fromisoformat(archive["next_run"]).astimezone()
        assert "02:00" <= next_run.strftime("%H:%M") <= "04:00"
    assert "hello from run" in (tmp_path / "Tasks" / "HelloWorld" / "Output" / "hello.txt").read_text()
    rows = (tmp_path / "Tasks" / "DiskUsage" / "Output" / "disk_usage.csv").read_text().splitlines()
    assert rows[0].startswith("time,total") and len(rows) == 2
