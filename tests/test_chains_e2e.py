"""[Frequency] After end to end, with real supervisor processes: the downstream sees its upstream in its
environment and its history row, status and `next` show the chain, and across a restart an upstream run
that ended just before the stop (its downstream still waiting for its window) runs the downstream once,
never twice.

Nothing sleeps: every wait is on a condition with a deadline (the history, the status).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from tests.support.harness import SupervisorProcess, cli
from tests.support.helpers import wait_for, write_task

pytestmark = pytest.mark.timeout(240)

DOWN_MAIN = """\
import json, os
from pathlib import Path

def main():
    seen = {k: v for k, v in os.environ.items() if k.startswith("TASK_UPSTREAM_")}
    out = Path(os.environ["TASK_OUTPUT_DIR"]) / (os.environ["TASK_RUN_ID"] + ".json")
    out.write_text(json.dumps(seen))
    return "after " + seen.get("TASK_UPSTREAM_TASK", "nothing")
"""


def finished(sup: SupervisorProcess, name: str, count: int) -> list[dict[str, Any]] | None:
    runs = sup.history(name)
    return runs if len(runs) >= count and all(r["outcome"] for r in runs) else None


def down_config(window: str = "") -> str:
    return f"[Frequency]\nAfter = up\nTimeZone = UTC\n{window}"


def test_a_chain_hands_the_upstream_to_the_downstream_run(tmp_path: Path) -> None:
    tasks = tmp_path / "Tasks"
    write_task(tasks, "up", config="[Frequency]\nEveryXMinutes = 1440\n")
    write_task(tasks, "down", main=DOWN_MAIN, config=down_config())
    with SupervisorProcess(tmp_path) as sup:
        (down,) = wait_for(lambda: finished(sup, "down", 1), timeout=120, what="the downstream run")
        (up,) = sup.history("up")
        status = {t["name"]: t for t in sup.status()["tasks"]}
    assert (down["trigger"], down["upstream"], down["outcome"]) == ("after", up["run_id"], "ok")
    assert up["outcome"] == "ok" and down["started"] >= up["finished"]
    seen = json.loads((tasks / "down" / "Output" / f"{down['run_id']}.json").read_text())
    assert seen == {"TASK_UPSTREAM_TASK": "up", "TASK_UPSTREAM_RUN_ID": up["run_id"], "TASK_UPSTREAM_OUTCOME": "ok"}
    assert (status["down"]["after"], status["up"]["downstream"]) == (["up"], ["down"])
    assert status["down"]["state"] == "scheduled" and status["down"]["why"].startswith("runs after up (ok)")
    shown = cli(tmp_path, "next", "down")
    assert shown.returncode == 0 and shown.stdout.startswith("down: after up (ok)"), shown.stdout + shown.stderr


def test_across_a_restart_a_missed_upstream_run_starts_the_downstream_once(tmp_path: Path) -> None:
    tasks = tmp_path / "Tasks"
    write_task(tasks, "up", config="[Frequency]\nEveryXMinutes = 1440\n")
    write_task(tasks, "down", main=DOWN_MAIN, config=down_config())
    write_task(tasks, "probe", config="[Frequency]\nEveryXMinutes = 1440\n")
    later = (datetime.now(timezone.utc) + timedelta(hours=6)).strftime("%H:%M")
    with SupervisorProcess(tmp_path) as sup:
        wait_for(lambda: finished(sup, "down", 1), timeout=120, what="the first downstream run")
        # Its window closes for now: the next start after up waits for it, in memory.
        (tasks / "down" / "config.ini").write_text(down_config(f"AllowedFrom = {later}\nAllowedTo = {later}\n"))
        wait_for(lambda: "starting between" in (sup.task_status("down")["schedule"] or ""), timeout=30, what="reload")
        assert cli(tmp_path, "run-now", "up").returncode == 0
        wait_for(lambda: finished(sup, "up", 2), timeout=60, what="the manual upstream run")
        missed = sup.history("up")[0]["run_id"]  # newest first
        assert "waits for the window" in sup.task_status("down")["why"]
    assert len(sup.history("down")) == 1, "the downstream waited for its window when the supervisor stopped"

    (tasks / "down" / "config.ini").write_text(down_config())
    with SupervisorProcess(tmp_path) as sup:
        runs = wait_for(lambda: finished(sup, "down", 2), timeout=120, what="the caught-up downstream run")
    assert (runs[0]["trigger"], runs[0]["upstream"]) == ("after", missed)

    with SupervisorProcess(tmp_path) as sup:
        wait_for(lambda: sup.task_status("down")["state"] == "scheduled", timeout=60, what="down loaded again")
        probes = len(sup.history("probe"))
        assert cli(tmp_path, "run-now", "probe").returncode == 0
        wait_for(lambda: finished(sup, "probe", probes + 1), timeout=60, what="a run after down was loaded")
        assert len(sup.history("down")) == 2, "never twice"
        assert len(sup.history("up")) == 2
