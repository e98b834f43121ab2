"""A real supervisor prunes a task's Output/ after its run ([Output] KeepFiles, home-wide KeepDays): one line
with the count and bytes freed in the task log and the supervisor log, `status --json` and `validate` show the
retention in force, and a task without [Output] keys keeps every file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.support.harness import SupervisorProcess, cli
from tests.support.helpers import wait_for, write_task

pytestmark = pytest.mark.timeout(90)

WRITES = """\
import os, pathlib
def main():
    out = pathlib.Path(os.environ["TASK_OUTPUT_DIR"])
    (out / f"report-{os.environ['TASK_RUN_ID']}").write_text("fresh")
    return "wrote one report"
"""


def plant(path: Path, *, age_days: float, size: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_days * 86400
    os.utime(path, (when, when))


def test_a_run_prunes_output_to_its_limits_and_leaves_other_tasks_alone(home: Path) -> None:
    (home / "taskautomation.ini").write_text("[Output]\nKeepDays = 30\n")
    keeper = write_task(
        home / "Tasks", "keeper", main=WRITES, config="[Frequency]\nEveryXMinutes = 60\n[Output]\nKeepDays = 0\n"
    )
    pruned = write_task(
        home / "Tasks", "pruned", main=WRITES, config="[Frequency]\nEveryXMinutes = 60\n[Output]\nKeepFiles = 2\n"
    )
    outside = home / "outside.txt"
    plant(outside, age_days=400)
    for folder in (keeper, pruned):
        for i in range(4):
            plant(folder / "Output" / f"old-{i}.txt", age_days=5 + i)
        plant(folder / "Output" / "nested" / "older.bin", age_days=50, size=1000)
        (folder / "Output" / "link").symlink_to(outside)

    checked = cli(home, "validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "home: Output/ retention default: KeepDays 30" in checked.stdout
    assert "Output/ retention: KeepDays 30, KeepFiles 2" in checked.stdout

    with SupervisorProcess(home) as sup:
        line = sup.wait_log("Output/ retention (KeepDays 30, KeepFiles 2): removed", task="pruned", timeout=60)
        assert "removed 4 file(s), 1300 bytes freed, 1 emptied folder(s); 2 file(s) kept" in line, line
        assert "task 'pruned': Output/ retention (KeepDays 30, KeepFiles 2): removed 4 file(s)" in sup.log()
        runs = wait_for(
            lambda: [r for r in sup.history("keeper") if r["outcome"] == "ok"], timeout=30, what="keeper ran"
        )
        assert runs
        status = {t["name"]: t for t in sup.status()["tasks"]}
    assert status["pruned"]["output_retention"] == {"keep_days": 30.0, "keep_files": 2, "keep_mb": None}
    assert status["keeper"]["output_retention"] is None, "KeepDays = 0 switches the home default off"
    left = sorted(p.name for p in (pruned / "Output").iterdir())
    assert left[0] == "link" and left[1] == "old-0.txt" and left[2].startswith("report-") and len(left) == 3
    assert outside.exists() and (pruned / "Output" / "link").is_symlink()
    kept = {str(p.relative_to(keeper / "Output")) for p in (keeper / "Output").rglob("*")}
    assert {"old-0.txt", "old-3.txt", "nested/older.bin", "link"} <= kept, "no [Output] limit: nothing removed"
    assert "Output/ retention" not in sup.task_log("keeper")
    offline = json.loads(cli(home, "status", "--json").stdout)
    by_name = {t["name"]: t for t in offline["tasks"]}
    assert by_name["pruned"]["output_retention"] == {"keep_days": 30.0, "keep_files": 2, "keep_mb": None}
