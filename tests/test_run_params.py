"""run-now --env KEY=VALUE, the pure parts: parsing and checking parameters, which values are masked, the CLI
grammar (a bad one is a usage error), the control request's answer (code bad-request), the dashboard's
parsing of a JSON body and of its run form, the JSON API answers (400 for a bad one), the run form's field,
the executor's environment, and the human history table."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pytest

from supervisor.cli.args import build_parser
from supervisor.cli.render import View, render_history
from supervisor.core.manual import RunNowAnswer
from supervisor.core.requests import answer
from supervisor.execution.params import (
    MAX_PARAMS,
    ParamError,
    RunParams,
    collect,
    from_json,
    from_lines,
    hidden_values,
    looks_secret,
    parse_assignment,
    shown,
)

pytestmark = pytest.mark.timeout(30)


def test_an_assignment_splits_at_the_first_equals_sign_and_keeps_the_rest() -> None:
    assert parse_assignment("URL=https://x/?a=b") == ("URL", "https://x/?a=b")
    assert parse_assignment("EMPTY=") == ("EMPTY", "")
    assert parse_assignment("_x1=  spaced  ") == ("_x1", "  spaced  ")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("NOVALUE", "'NOVALUE': expected KEY=VALUE"),
        ("1ABC=x", "'1ABC': not an environment variable name"),
        ("A-B=x", "'A-B': not an environment variable name"),
        ("=x", "'': not an environment variable name"),
        ("TASK_NAME=x", "'TASK_NAME': reserved, the supervisor sets it for every run"),
        ("task_output_dir=x", "'task_output_dir': reserved"),
        ("TASKAUTOMATION_RUN_COOKIE=x", "'TASKAUTOMATION_RUN_COOKIE': reserved"),
        ("PATH=/tmp", "'PATH': reserved"),
        ("A=x\0y", "'A': the value contains a NUL character"),
        ("A=" + "x" * 40000, "'A': the value is 40000 characters long, at most 32768"),
    ],
)
def test_a_bad_parameter_is_refused_with_its_key_and_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_assignment(text)
    assert str(caught.value).startswith(reason)


def test_parameters_are_sorted_each_key_once_and_bounded() -> None:
    assert collect([("B", "2"), ("A", "1")]) == (("A", "1"), ("B", "2"))
    with pytest.raises(ParamError, match="'A': given twice"):
        collect([("A", "1"), ("A", "2")])
    with pytest.raises(ParamError, match=f"more than {MAX_PARAMS} parameters"):
        collect((f"K{i}", "v") for i in range(MAX_PARAMS + 1))


def test_json_and_form_parameters() -> None:
    assert from_json(None) == () and from_json({}) == ()
    assert from_json({"B": "2", "A": "1"}) == (("A", "1"), ("B", "2"))
    for bad, reason in (
        (["A=1"], "expected an object"),
        ({"A": 1}, "'A': expected a text value, got int"),
        ({"TASK_RUN_ID": "x"}, "reserved"),
    ):
        with pytest.raises(ParamError, match=reason):
            from_json(bad)
    assert from_lines("A=1\n\n  \nB = x=y\r\n") == (("A", "1"), ("B", " x=y"))


def test_secret_looking_keys_and_dotenv_keys_are_masked_others_shown() -> None:
    assert all(looks_secret(k) for k in ("API_TOKEN", "db_password", "SECRET", "AWS_ACCESS_KEY_ID", "Auth", "PWD"))
    assert not any(looks_secret(k) for k in ("REGION", "COUNT", "DRY_RUN", "URL"))
    params: RunParams = (("API_TOKEN", "t0ps3cret"), ("DB", "prod-db"), ("REGION", "eu"))
    assert shown(params, secret_keys={"DB"}) == (("API_TOKEN", "***"), ("DB", "***"), ("REGION", "eu"))
    assert hidden_values(params, {"DB"}) == ["t0ps3cret", "prod-db"]


# --- the CLI grammar ---------------------------------------------------------------------------------------


def test_run_now_takes_repeated_env_options() -> None:
    args = build_parser("taskautomation").parse_args(["run-now", "t", "--env", "A=1", "--env", "B=x=y"])
    assert args.env == [("A", "1"), ("B", "x=y")]
    assert build_parser("taskautomation").parse_args(["run-now", "t"]).env == []


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--env", "A=1", "--env", "A=2"], "argument --env: 'A': given twice"),
        (["--env", "TASK_DIR=/"], "argument --env: 'TASK_DIR': reserved"),
        (["--env", "NOPE"], "argument --env: 'NOPE': expected KEY=VALUE"),
    ],
)
def test_a_bad_env_option_is_a_usage_error(argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser("taskautomation").parse_args(["run-now", "t", *argv])
    assert caught.value.code == 2
    assert reason in capsys.readouterr().err


# --- the control request ------------------------------------------------------------------------------------


class Target:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, RunParams]] = []

    def run_now(self, name: str, *, respect_gates: bool = False, params: RunParams = ()) -> RunNowAnswer:
        self.calls.append((name, respect_gates, params))
        return RunNowAnswer(True, "r1")

    def begin_shutdown(self, reason: str) -> None:
        raise AssertionError

    def request_rescan(self) -> None:
        raise AssertionError

    def pause_command(self, command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError


def test_the_control_request_passes_checked_env_and_refuses_a_bad_one() -> None:
    target = Target()
    assert answer("run-now", {"name": "t", "env": {"B": "2", "A": "1"}}, target) == {"ok": True, "run_id": "r1"}
    assert target.calls == [("t", False, (("A", "1"), ("B", "2")))]
    reply = answer("run-now", {"name": "t", "env": {"TASK_NAME": "x"}}, target)
    assert reply["ok"] is False and reply["code"] == "bad-request"
    assert reply["error"].startswith("bad run parameter (env) 'TASK_NAME': reserved")
    assert answer("run-now", {"name": "t", "env": "A=1"}, target)["code"] == "bad-request"
    assert len(target.calls) == 1, "a refused request never reaches the loop's run-now"


# --- the human history --------------------------------------------------------------------------------------


def test_the_history_table_shows_a_runs_parameters_with_its_trigger() -> None:
    run = {
        "run_id": "r1",
        "trigger": "manual",
        "started": "2027-01-15T12:00:00+00:00",
        "outcome": "ok",
        "duration_s": 0.1,
        "params": {"API_TOKEN": "***", "REGION": "eu"},
    }
    view = View(now=datetime(2027, 1, 15, 13, tzinfo=timezone.utc), utc=True, width=200)
    text = "\n".join(render_history([run], view))
    assert re.search(r"manual API_TOKEN=\*\*\* REGION=eu", text), text


# --- the dashboard ------------------------------------------------------------------------------------------


def web_client(home: Path, asked: list[tuple[str, dict[str, Any]]]) -> Any:
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from supervisor.config.listen import parse_listen
    from supervisor.paths import Paths
    from supervisor.web.app import WebConfig, create_app

    def ask(command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        asked.append((command, dict(args)))
        return {"ok": True, "run_id": "r9"}

    config = WebConfig(paths=Paths(home), listen=parse_listen("127.0.0.1:8765"), token="t" * 64)
    return TestClient(create_app(config, ask=ask), base_url="http://127.0.0.1:8765", follow_redirects=False)


BEARER = {"Authorization": "Bearer " + "t" * 64}


def test_the_json_api_passes_env_and_answers_400_for_a_bad_one(home: Path) -> None:
    asked: list[tuple[str, dict[str, Any]]] = []
    c = web_client(home, asked)
    r = c.post("/api/tasks/a/run", headers=BEARER, json={"env": {"REGION": "eu", "API_TOKEN": "abc123456"}})
    assert r.status_code == 200 and r.json()["run_id"] == "r9"
    assert asked[-1] == (
        "run-now",
        {"name": "a", "by": asked[-1][1]["by"], "env": {"API_TOKEN": "abc123456", "REGION": "eu"}},
    )
    for body, reason in (
        ({"env": {"TASK_NAME": "x"}}, "'TASK_NAME': reserved"),
        ({"env": {"A": 1}}, "'A': expected a text value"),
        ({"env": ["A=1"]}, "expected an object"),
    ):
        r = c.post("/api/tasks/a/run", headers=BEARER, json=body)
        assert r.status_code == 400 and reason in r.json()["error"], r.text
    r = c.post("/api/tasks/a/run", headers={**BEARER, "Content-Type": "application/json"}, content=b"{nope")
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    assert len(asked) == 1, "a refused request never reaches the supervisor"
    r = c.post("/api/tasks/a/run", headers=BEARER)
    assert r.status_code == 200 and "env" not in asked[-1][1], "no body: no parameters"


def test_the_run_form_has_an_env_field_and_sends_its_lines(home: Path) -> None:
    (home / "Tasks" / "a").mkdir(parents=True)
    (home / "Tasks" / "a" / "main.py").write_text("def main():\n    return 'ok'\n")
    (home / "Tasks" / "a" / "config.ini").write_text("[Frequency]\nEveryXMinutes = 60\n")
    asked: list[tuple[str, dict[str, Any]]] = []
    c = web_client(home, asked)
    assert c.get("/login?token=" + "t" * 64).status_code == 303
    page = c.get("/tasks/a")
    assert page.status_code == 200 and '<textarea name="env"' in page.text
    assert '<textarea name="env"' not in c.get("/").text, "the overview's buttons stay plain"
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert match
    r = c.post("/api/tasks/a/run?next=/tasks/a", data={"csrf": match.group(1), "env": "REGION=eu\nDRY_RUN=1\n"})
    assert r.status_code == 303 and asked[-1][1]["env"] == {"DRY_RUN": "1", "REGION": "eu"}
    r = c.post("/api/tasks/a/run?next=/tasks/a", data={"csrf": match.group(1), "env": "PATH=/evil"})
    assert r.status_code == 400 and "&#39;PATH&#39;: reserved" in r.text and len(asked) == 1


# --- the executor's environment -----------------------------------------------------------------------------


def test_the_local_executor_puts_params_over_dotenv_and_masks_hidden_values(tmp_path: Path) -> None:
    import logging

    from supervisor.clock import SystemClock
    from supervisor.execution.cgroup_layout import Layout
    from supervisor.execution.cgroups import Containment
    from supervisor.execution.executor import LocalExecutor, RunRequest
    from supervisor.execution.secrets import Masker, SecretStore
    from supervisor.logsetup import TaskLogs
    from supervisor.model import Limits, RunMode, Trigger

    (tmp_path / ".env").write_text("SHARED=from-dotenv\nDB_URL=postgres://secret-db\n")
    store = SecretStore(tmp_path / ".env", lambda task: tmp_path / "none.env", warn=lambda _: None)
    logs = TaskLogs(tmp_path / "logs", max_bytes=1 << 20, backups=0)
    executor = LocalExecutor(
        home=tmp_path,
        cookie_prefix="c-",
        task_logs=logs,
        logger=logging.getLogger("test.params"),
        clock=SystemClock(),
        post=lambda event: None,
        output_cap_bytes=1024,
        containment=Containment(tmp_path, layout=Layout()),
        secrets=store,
    )
    spawned: list[tuple[Mapping[str, str], Masker]] = []
    executor._spawn = lambda request, base, masker: spawned.append((base, masker))  # type: ignore[method-assign]
    params = (("API_TOKEN", "tok-123456"), ("DB_URL", "override-db"), ("REGION", "eu-west-1"), ("SHARED", "from-param"))
    request = RunRequest(
        task="t",
        run_id="r1",
        mode=RunMode.MAIN,
        trigger=Trigger.MANUAL,
        task_dir=tmp_path,
        output_dir=tmp_path / "Output",
        env_key="k",
        python=Path("/usr/bin/python3"),
        env_dir=tmp_path,
        limits=Limits(),
        params=params,
    )
    try:
        executor.launch(request)
        executor.launch(RunRequest(**{**request.__dict__, "run_id": "r2", "params": ()}))
    finally:
        logs.close()
    (env, masker), (later, later_masker) = spawned
    assert env["SHARED"] == "from-param" and env["API_TOKEN"] == "tok-123456" and env["DB_URL"] == "override-db"
    assert env["REGION"] == "eu-west-1"
    # API_TOKEN looks like a secret, DB_URL and SHARED are .env keys: their values are masked; REGION is not.
    assert (
        masker.mask("tok-123456 override-db postgres://secret-db from-param eu-west-1") == "*** *** *** *** eu-west-1"
    )
    assert later["SHARED"] == "from-dotenv" and "API_TOKEN" not in later, "the next run does not get them"
    assert later_masker.mask("tok-123456 postgres://secret-db") == "tok-123456 ***"


def test_the_rq_job_carries_params_to_the_workers_run(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from supervisor.execution.executor import RunRequest
    from supervisor.model import EnvStatus, Limits, RunMode, Trigger
    from supervisor.paths import Paths
    from supervisor.scaleout.executor import RQExecutor
    from supervisor.scaleout.job import _request

    params = (("API_TOKEN", "tok-123456"), ("REGION", "eu"))
    request = RunRequest(
        task="t",
        run_id="r1",
        mode=RunMode.MAIN,
        trigger=Trigger.MANUAL,
        task_dir=tmp_path,
        output_dir=tmp_path / "Output",
        env_key="k",
        python=Path("/usr/bin/python3"),
        env_dir=tmp_path,
        limits=Limits(),
        params=params,
    )
    fake = SimpleNamespace(installer="uv", output_cap_bytes=1024)
    payload = RQExecutor._payload(fake, request, SimpleNamespace(digest="d"))  # type: ignore[arg-type]
    payload = json.loads(json.dumps(payload))  # what RQ stores
    status = EnvStatus(key="k", python=tmp_path / "env" / "bin" / "python", ready=True)
    again = _request(payload, folder=tmp_path, paths=Paths(tmp_path), status=status)
    assert again.params == params, "the worker's run gets the real values"
    del payload["params"]  # a job queued by a supervisor from before parameters
    assert _request(payload, folder=tmp_path, paths=Paths(tmp_path), status=status).params == ()
