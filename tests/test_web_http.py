"""The dashboard over HTTP: every refusal, escaping, the JSON API's schemas, the log stream, pause state.

Most tests drive the real ASGI app through Starlette's TestClient (no socket needed); the stream test and
the 409 test use a real `web` process and a real supervisor.
"""

from __future__ import annotations

import json
import re
import sqlite3
import stat
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from tests.support.harness import SupervisorProcess, cli
from tests.support.helpers import wait_for
from tests.support.web_support import TOKEN, WebProcess, add_runs, log_line, make_task

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from supervisor.config.listen import parse_listen
from supervisor.history.store import HistoryStore
from supervisor.model import Outcome, Trigger
from supervisor.paths import Paths
from supervisor.web.app import WebConfig, create_app
from supervisor.web.auth import load_or_create_token

pytestmark = pytest.mark.timeout(120)
BEARER = {"Authorization": f"Bearer {TOKEN}"}
HOSTILE = "<img src=x onerror=alert(1)>\"'&"


def client(home: Path, *, extra_hosts: tuple[str, ...] = ()) -> TestClient:
    app = create_app(
        WebConfig(paths=Paths(home), listen=parse_listen("127.0.0.1:8765"), token=TOKEN, extra_hosts=extra_hosts)
    )
    return TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False)


def logged_in(home: Path) -> tuple[TestClient, str]:
    """A client holding a session cookie, and the page's CSRF token."""
    c = client(home)
    r = c.get(f"/login?token={TOKEN}")
    assert r.status_code == 303 and r.headers["location"] == "/"
    page = c.get("/")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf, page.text[:2000]
    return c, csrf.group(1)


# ------------------------------------------------------------------------------------------ refusals
def test_without_a_token_the_api_answers_401_and_pages_redirect_to_login(home: Path) -> None:
    make_task(home, "a")
    c = client(home)
    for path in ("/api/status", "/api/tasks/a/history", "/api/runs/x"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert "Bearer" in r.json()["error"]
    assert c.post("/api/tasks/a/run").status_code == 401
    for path in ("/", "/tasks/a", "/runs/x", "/fragments/tasks"):
        r = c.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login", path


def test_a_wrong_token_is_refused_everywhere(home: Path) -> None:
    c = client(home)
    assert c.get("/api/status", headers={"Authorization": "Bearer " + "u" * 64}).status_code == 401
    r = c.get("/login?token=" + "u" * 64)
    assert r.status_code == 401 and "not right" in r.text
    assert "set-cookie" not in r.headers
    c.cookies.set("ta_session", "1.2.3")
    assert c.get("/").status_code == 303  # a forged cookie is no session


def test_a_foreign_host_header_is_refused_before_anything_else(home: Path) -> None:
    c = client(home, extra_hosts=("dash.example.org",))
    for host in ("evil.example:8765", "127.0.0.1.evil.example", "attacker"):
        r = c.get("/api/status", headers={**BEARER, "host": host})
        assert r.status_code == 400, host
        assert "Host" in r.text
        assert c.get(f"/login?token={TOKEN}", headers={"host": host}).status_code == 400
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "dash.example.org", "DASH.example.org:80"):
        assert c.get("/api/status", headers={**BEARER, "host": host}).status_code == 200, host


def test_login_sets_an_httponly_strict_cookie(home: Path) -> None:
    c = client(home)
    r = c.get(f"/login?token={TOKEN}")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert c.get("/api/status").status_code == 200  # the cookie now authenticates


def test_cookie_posts_need_the_csrf_token_and_bearer_posts_do_not(home: Path) -> None:
    make_task(home, "a")
    c, csrf = logged_in(home)
    assert c.post("/api/tasks/a/pause").status_code == 403
    assert c.post("/api/tasks/a/pause", headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    assert c.post("/api/tasks/a/pause", data={"csrf": "0" * 64}).status_code == 403
    # With the right token the request gets through to the action (no supervisor runs here: 503).
    assert c.post("/api/tasks/a/pause", headers={"X-CSRF-Token": csrf}).status_code == 503
    assert c.post("/api/tasks/a/pause", data={"csrf": csrf}).status_code == 503
    assert c.post("/logout").status_code == 403
    bare = client(home)
    assert bare.post("/api/tasks/a/pause", headers=BEARER).status_code == 503
    assert bare.post("/api/tasks/a/explode", headers=BEARER).status_code == 404


def test_every_response_carries_a_strict_content_security_policy(home: Path) -> None:
    make_task(home, "a")
    c, _ = logged_in(home)
    for path in ("/", "/tasks/a", "/api/status", "/login", "/static/app.css"):
        r = c.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    page = c.get("/").text
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", page)), "no inline script"
    assert not re.search(r"\son[a-z]+=", page) and " style=" not in page


# ------------------------------------------------------------------------------------------ escaping
def test_a_hostile_task_name_message_and_log_line_are_escaped(home: Path) -> None:
    make_task(home, HOSTILE)
    (run_id,) = add_runs(home, HOSTILE, [Outcome.FAILED], message="<script>alert('msg')</script>")
    log = home / "logs" / "tasks" / f"{HOSTILE}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(log_line(run_id, "<script>alert('log')</script>"))
    c, _ = logged_in(home)
    pages = [c.get("/"), c.get("/tasks/" + quote(HOSTILE, safe="")), c.get(f"/runs/{run_id}")]
    for page in pages:
        assert page.status_code == 200, page.text[:500]
        assert "<img src=x" not in page.text and "<script>alert" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0].text
    assert "&lt;script&gt;alert(&#39;log&#39;)&lt;/script&gt;" in pages[2].text
    assert "&lt;script&gt;alert(&#39;msg&#39;)&lt;/script&gt;" in pages[2].text
    data = c.get(f"/api/runs/{run_id}").json()
    assert data["run"]["task"] == HOSTILE and data["log"][0].endswith("<script>alert('log')</script>")


# ------------------------------------------------------------------------------------------ JSON API
def test_status_api_is_the_cli_status_document(home: Path) -> None:
    make_task(home, "a", every="5")
    add_runs(home, "a", [Outcome.OK])
    api = client(home).get("/api/status", headers=BEARER).json()
    offline = json.loads(cli(home, "status", "--json").stdout)
    task = api["tasks"][0]
    assert set(offline["tasks"][0]) == set(task)
    assert task["last_run"] == offline["tasks"][0]["last_run"]
    assert task["paused"] is None and task["schedule"] == offline["tasks"][0]["schedule"]
    assert task["schedule"] and "5" in task["schedule"]


def test_the_task_page_links_a_chain_both_ways(home: Path) -> None:
    make_task(home, "backup")
    (home / "Tasks" / "report").mkdir(parents=True)
    (home / "Tasks" / "report" / "main.py").write_text("def main():\n    return 'ok'\n")
    (home / "Tasks" / "report" / "config.ini").write_text("[Frequency]\nAfter = backup\n")
    c, _ = logged_in(home)
    up, down = c.get("/tasks/backup"), c.get("/tasks/report")
    assert up.status_code == down.status_code == 200
    assert re.search(r'Then runs</dt><dd class="chain-down"><a href="/tasks/report">report</a>', up.text), up.text
    assert re.search(r'Runs after</dt><dd class="chain-up"><a href="/tasks/backup">backup</a>', down.text)
    assert "after backup (ok)" in down.text
    (up_run,) = add_runs(home, "backup", [Outcome.OK])
    with HistoryStore(home / "logs" / "state" / "history.sqlite3") as records:
        after = replace(records.run(up_run), run_id="20260101T000000-after0", task="report", upstream=up_run)
        records.record_instant(replace(after, trigger=Trigger.AFTER))
    page = c.get("/runs/20260101T000000-after0")
    assert f'after (after <a href="/runs/{up_run}">run {up_run}</a>)' in page.text, page.text
    task = client(home).get("/api/status", headers=BEARER).json()["tasks"]
    assert [(t["name"], t["after"], t["downstream"]) for t in task] == [
        ("backup", [], ["report"]),
        ("report", ["backup"], []),
    ]


def test_history_api_filters_by_outcome_and_pages(home: Path) -> None:
    make_task(home, "a")
    ids = add_runs(home, "a", [Outcome.OK, Outcome.FAILED, Outcome.OK, Outcome.TIMEOUT, Outcome.OK, None])
    c = client(home)
    first = c.get("/api/tasks/a/history?limit=4", headers=BEARER).json()
    assert [r["run_id"] for r in first["runs"]] == ids[::-1][:4] and first["has_more"]
    second = c.get("/api/tasks/a/history?limit=4&page=2", headers=BEARER).json()
    assert [r["run_id"] for r in second["runs"]] == ids[::-1][4:] and not second["has_more"]
    bad = c.get("/api/tasks/a/history?outcome=failed,timeout", headers=BEARER).json()
    assert [r["outcome"] for r in bad["runs"]] == ["timeout", "failed"]
    cli_rows = json.loads(cli(home, "history", "a", "--json").stdout)["runs"]
    assert c.get("/api/tasks/a/history", headers=BEARER).json()["runs"] == cli_rows
    r = c.get("/api/tasks/a/history?outcome=fine", headers=BEARER)
    assert r.status_code == 400 and "'fine'" in r.json()["error"]
    assert c.get("/api/tasks/nope/history", headers=BEARER).status_code == 404
    assert c.get("/api/runs/nope", headers=BEARER).status_code == 404


def test_run_api_gathers_its_lines_from_the_log_and_its_rotation(home: Path) -> None:
    make_task(home, "a")
    mine, other = add_runs(home, "a", [Outcome.FAILED, Outcome.OK])
    logs = home / "logs" / "tasks"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "a.log.1").write_text(
        log_line(mine, "started (schedule)") + log_line(other, "not mine") + log_line(mine, "first output")
    )
    (logs / "a.log").write_text(
        log_line(mine, "traceback:") + "Traceback (most recent call last):\n"
        "ValueError: boom\n" + log_line(other, "other again")
    )
    data = client(home).get(f"/api/runs/{mine}", headers=BEARER).json()
    assert data["run"]["run_id"] == mine and data["run"]["outcome"] == "failed"
    assert [line.split("] ", 1)[-1] for line in data["log"]] == [
        "started (schedule)",
        "first output",
        "traceback:",
        "Traceback (most recent call last):",
        "ValueError: boom",
    ]


def test_the_run_stream_sends_new_lines_then_the_outcome(home: Path) -> None:
    make_task(home, "a")
    (run_id,) = add_runs(home, "a", [None])
    log = home / "logs" / "tasks" / "a.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(log_line(run_id, "before"))
    with (
        WebProcess(home) as web,
        httpx.Client(base_url=web.base, headers={"Authorization": f"Bearer {web.token}"}, timeout=20) as http,
        http.stream("GET", f"/runs/{run_id}/events") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        seen: list[str] = []

        def until(text: str) -> bool:
            for line in lines:
                seen.append(line)
                if text in line:
                    return True
            return False

        assert until("before")
        with open(log, "a") as f:
            f.write(log_line(run_id, "<live> line"))
        assert until("<live> line")
        with HistoryStore(Paths(home).database) as records:
            opened = records.run(run_id)
            assert opened is not None
            records.finish_run(run_id, finished=opened.started, outcome=Outcome.OK, duration_s=1.0)
        assert until("event: end")
        assert until('"outcome": "ok"')


# ------------------------------------------------------------------------------------------ token file
def test_the_token_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "web-token"
    token = load_or_create_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) == 64
    assert load_or_create_token(path) == token
    path.chmod(0o644)
    with pytest.raises(Exception, match="readable by others"):
        load_or_create_token(path)


# ------------------------------------------------------------------------------------------ pause
def test_offline_pause_is_kept_in_the_history_and_shown_after_a_restart(home: Path) -> None:
    make_task(home, "a")
    result = cli(home, "pause", "a")
    assert result.returncode == 0, result.stderr
    assert "paused since" in result.stdout
    first = client(home).get("/api/status", headers=BEARER).json()["tasks"][0]
    assert first["paused"] is not None
    again = client(home).get("/api/status", headers=BEARER).json()["tasks"][0]  # a new web process
    assert again["paused"] == first["paused"]
    assert cli(home, "pause", "nope").returncode == 1
    assert cli(home, "resume", "a").returncode == 0
    assert client(home).get("/api/status", headers=BEARER).json()["tasks"][0]["paused"] is None


def test_a_run_request_while_running_is_409(home: Path) -> None:
    gate = home / "gate"
    make_task(
        home,
        "slow",
        main=f"import os, time\ndef main():\n    while not os.path.exists({str(gate)!r}):\n"
        f"        time.sleep(0.05)\n    return 'released'\n",
    )
    with SupervisorProcess(home) as sup:
        wait_for(lambda: sup.task_status("slow")["state"] == "running", timeout=60, what="slow running")
        c = client(home)
        r = c.post("/api/tasks/slow/run", headers=BEARER)
        assert r.status_code == 409 and "already running" in r.json()["error"]
        assert c.post("/api/tasks/ghost/run", headers=BEARER).status_code == 404
        browser, csrf = logged_in(home)  # a form post without script: an error page, not a redirect
        r = browser.post("/api/tasks/slow/run?next=/", data={"csrf": csrf})
        assert r.status_code == 409 and "already running" in r.text and "<html" in r.text
        gate.write_text("go")
        wait_for(lambda: sup.task_status("slow")["state"] != "running", timeout=30, what="slow finished")
        r = browser.post("/api/tasks/slow/run?next=//evil.example/", data={"csrf": csrf})
        assert r.status_code == 200 and r.json()["run_id"]  # never redirected off the site
        wait_for(lambda: sup.task_status("slow")["state"] != "running", timeout=30, what="that run finished")
        r = browser.post("/api/tasks/slow/run?next=/tasks/slow", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/tasks/slow"
        wait_for(lambda: sup.task_status("slow")["state"] != "running", timeout=30, what="manual run finished")


def test_the_supervised_dashboard_exits_when_the_supervisor_is_gone(home: Path) -> None:
    """The child holds the read end of a pipe only the supervisor writes: EOF (however it died) ends it."""
    import os
    import subprocess
    import sys

    from tests.support.web_support import REPO

    r, w = os.pipe()
    out = home / "child.txt"
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "supervisor",
                "web",
                "--home",
                str(home),
                "--listen",
                "127.0.0.1:0",
                "--parent-fd",
                str(r),
            ],
            cwd=REPO,
            pass_fds=(r,),
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    os.close(r)
    try:
        wait_for(lambda: "listening on" in out.read_text(), timeout=20, what="the child listening")
        token = load_or_create_token(Paths(home).state / "web-token")
        assert token not in out.read_text()  # its output goes to a log file: no secret in it
        url = cli(home, "web", "--url", "--listen", "127.0.0.1:8765")
        assert url.returncode == 0 and url.stdout.strip() == f"http://127.0.0.1:8765/login?token={token}"
        os.close(w)  # what the kernel does when the supervisor dies
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------ 5xx answers
def test_an_action_without_a_supervisor_is_503_with_retry_after_html_for_a_form_and_logged(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_task(home, "a")
    caplog.set_level("ERROR", logger="taskautomation.web")
    api = client(home).post("/api/tasks/a/run", headers=BEARER)
    assert api.status_code == 503 and api.headers["retry-after"] == "30"
    assert api.json() == {"ok": False, "error": f"no supervisor is running on {home}; start it to run 'a'"}
    browser, csrf = logged_in(home)
    form = browser.post("/api/tasks/a/pause?next=/", data={"csrf": csrf})
    assert form.status_code == 503 and form.headers["retry-after"] == "30"
    assert form.headers["content-type"].startswith("text/html") and "<html" in form.text
    assert "Nothing was changed" in form.text and "no supervisor is running" in form.text
    lines = [r.getMessage() for r in caplog.records if r.name == "taskautomation.web"]
    assert lines == [
        f"503 POST /api/tasks/a/run: no supervisor is running on {home}; start it to run 'a'",
        f"503 POST /api/tasks/a/pause: no supervisor is running on {home}; start it to pause 'a'",
    ]


def test_an_unreadable_history_is_a_500_page_for_a_browser_json_for_the_api_and_one_log_line(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_task(home, "a")
    browser, _ = logged_in(home)  # no history yet: the dashboard opens it when it appears
    database = Paths(home).database
    database.parent.mkdir(parents=True, exist_ok=True)
    database.write_bytes(b"this is not a database" * 4096)
    caplog.set_level("ERROR", logger="taskautomation.web")
    page = browser.get("/tasks/a")
    assert page.status_code == 500 and page.headers["content-type"].startswith("text/html"), page.text[:300]
    assert "<html" in page.text and "Something went wrong" in page.text
    api = browser.get("/api/tasks/a/history", headers=BEARER)  # a script, on the same dashboard
    assert api.status_code == 500 and api.json()["ok"] is False
    lines = [r.getMessage() for r in caplog.records if r.name == "taskautomation.web"]
    assert [line.split(":")[0] for line in lines] == ["500 GET /tasks/a", "500 GET /api/tasks/a/history"]
    assert all("\n" not in line and line.endswith("open failed: file is not a database") for line in lines), lines


def test_a_history_locked_by_another_process_is_a_503_with_retry_after_not_a_500(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_task(home, "a")
    add_runs(home, "a", [Outcome.OK])
    # Exclusive locking mode, taken before the dashboard first opens the file: even WAL readers are refused.
    locker = sqlite3.connect(Paths(home).database, isolation_level=None)
    try:
        locker.execute("PRAGMA locking_mode=EXCLUSIVE")
        locker.execute("UPDATE runs SET message = 'held'")
        browser = client(home)  # a dashboard started while the history is locked starts all the same
        caplog.set_level("ERROR", logger="taskautomation.web")
        api = browser.get("/api/tasks/a/history", headers=BEARER)
        page = browser.get("/tasks/a", headers=BEARER)
    finally:
        locker.close()
    assert api.status_code == 503 and api.headers["retry-after"] == "5", api.text[:300]
    assert api.json()["ok"] is False and "locked" in api.json()["error"]
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    lines = [r.getMessage() for r in caplog.records if r.name == "taskautomation.web"]
    assert [line.split(":")[0] for line in lines] == ["503 GET /api/tasks/a/history", "503 GET /tasks/a"], lines
