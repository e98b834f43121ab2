"""run-now --env with a real supervisor: main() sees the values and writes them to Output/, `history --json`
shows them (masked for a secret-looking key and a key of the task's .env), the run's output is masked too,
the next scheduled run does not see them, a bad one is a usage error, and the JSON API passes them the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import SupervisorProcess, cli
from tests.support.helpers import wait_for, write_task

pytestmark = pytest.mark.timeout(120)

MAIN = """\
import json, os, pathlib
def main():
    seen = {k: os.environ.get(k) for k in ("REGION", "API_TOKEN", "DB_URL")}
    out = pathlib.Path(os.environ["TASK_OUTPUT_DIR"])
    (out / (os.environ["TASK_RUN_ID"] + ".json")).write_text(json.dumps(seen))
    print("token is", seen["API_TOKEN"])
    return "seen"
"""
SECRET = "tok-123456"


def seen(folder: Path, run_id: str) -> dict[str, Any]:
    return json.loads((folder / "Output" / f"{run_id}.json").read_text())


def run_now(home: Path, *args: str) -> str:
    """run-now until it is accepted (a scheduled run of the task may be in flight just then); the run id."""

    def attempt() -> str | None:
        result = cli(home, "run-now", "t", *args, "--wait", "--timeout", "30")
        if result.returncode != 0:
            assert "already running" in result.stderr, result.stdout + result.stderr
            return None
        return result.stdout.split()[2]  # "started run RUN_ID of 't'"

    return wait_for(attempt, timeout=60, what="run-now accepted")


def test_env_reaches_that_run_only_and_its_history_row_shows_it_masked(home: Path) -> None:
    folder = write_task(home / "Tasks", "t", main=MAIN, config="[Frequency]\nEveryXMinutes = 0.05\n")
    (folder / ".env").write_text("DB_URL=postgres://from-dotenv\n")
    bad = cli(home, "run-now", "t", "--env", "TASK_NAME=other")
    assert bad.returncode == 2 and "argument --env: 'TASK_NAME': reserved" in bad.stderr
    with SupervisorProcess(home) as sup:
        wait_for(lambda: [r for r in sup.history("t") if r["outcome"] == "ok"], timeout=60, what="a first run")
        env = ["--env", "REGION=eu-west-1", "--env", f"API_TOKEN={SECRET}", "--env", "DB_URL=postgres://override"]
        manual = run_now(home, *env)
        assert seen(folder, manual) == {"REGION": "eu-west-1", "API_TOKEN": SECRET, "DB_URL": "postgres://override"}
        row = next(r for r in sup.history("t") if r["run_id"] == manual)
        assert row["trigger"] == "manual" and row["outcome"] == "ok"
        assert row["params"] == {"API_TOKEN": "***", "DB_URL": "***", "REGION": "eu-west-1"}
        after = wait_for(
            lambda: [r for r in sup.history("t") if r["trigger"] == "schedule" and r["started"] > row["started"]],
            timeout=30,
            what="a scheduled run after the manual one",
        )
        later = after[-1]["run_id"]
        wait_for(lambda: (folder / "Output" / f"{later}.json").exists(), timeout=30, what="its output")
        assert seen(folder, later) == {"REGION": None, "API_TOKEN": None, "DB_URL": "postgres://from-dotenv"}
        assert after[-1]["params"] == {}
        table = cli(home, "history", "t", "--limit", "50")
        assert "manual API_TOKEN=*** DB_URL=*** REGION=eu-west-1" in table.stdout, table.stdout
        api_run = _run_through_the_json_api(home)
        wait_for(lambda: (folder / "Output" / f"{api_run}.json").exists(), timeout=30, what="the API's run")
        assert seen(folder, api_run)["REGION"] == "us-east-2"
        api_row = wait_for(
            lambda: next((r for r in sup.history("t") if r["run_id"] == api_run and r["outcome"]), None),
            timeout=30,
            what="the API's run row",
        )
        assert api_row["params"] == {"REGION": "us-east-2", "SESSION_ID": "***"}
    log = sup.task_log("t")
    assert f"[run {manual}] token is ***" in log and SECRET not in log, "the secret is masked in the output too"


def _run_through_the_json_api(home: Path) -> str:
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from supervisor.config.listen import parse_listen
    from supervisor.paths import Paths
    from supervisor.web.app import WebConfig, create_app

    token = "w" * 64
    app = create_app(WebConfig(paths=Paths(home), listen=parse_listen("127.0.0.1:8765"), token=token))
    client = TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False)
    headers = {"Authorization": f"Bearer {token}"}
    bad = client.post("/api/tasks/t/run", headers=headers, json={"env": {"PATH": "/tmp"}})
    assert bad.status_code == 400 and "'PATH': reserved" in bad.json()["error"]

    def attempt() -> str | None:
        r = client.post(
            "/api/tasks/t/run", headers=headers, json={"env": {"REGION": "us-east-2", "SESSION_ID": "s-98765"}}
        )
        if r.status_code == 409:
            return None
        assert r.status_code == 200, r.text
        return str(r.json()["run_id"])

    return wait_for(attempt, timeout=60, what="the API's run-now accepted")
