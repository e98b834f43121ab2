"""The example tasks shipped in Tasks/ validate and run as the quick start promises.

Hermetic: quick-start command 1 runs the examples in the repository itself, which leaves files in their
Output/ folders (and a user may add task folders of their own). The tests therefore copy only the shipped
example folders, without Output/ content or bytecode, into a home of their own.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from tests.support.harness import REPO, SupervisorProcess, cli

pytestmark = pytest.mark.timeout(120)


EXAMPLES = ("DiskUsage", "HelloWorld", "NightlyArchive")


def copy_examples(home: Path) -> Path:
    """The shipped examples as a fresh clone has them: empty Output/, no bytecode, nothing else."""
    for name in EXAMPLES:
        shutil.copytree(
            REPO / "Tasks" / name, home / "Tasks" / name, ignore=shutil.ignore_patterns("__pycache__", "Output")
        )
        (home / "Tasks" / name / "Output").mkdir()
    return home


def test_examples_validate(tmp_path: Path) -> None:
    result = cli(copy_examples(tmp_path), "validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 task(s) checked, 0 problem(s)" in result.stdout


def test_examples_run_on_a_copy_of_the_home(tmp_path: Path) -> None:
    copy_examples(tmp_path)
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
