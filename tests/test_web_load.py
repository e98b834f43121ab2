"""The dashboard against a real supervisor whose control socket is slowed (tests/support/slowed.py): 200
concurrent clients and 30 `status --json` calls get no 5xx, a busy supervisor's actions answer 503 with
Retry-After in the asker's format, and a run-now for a task still initializing runs once it is loaded."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support import REPO
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for
from tests.support.web_support import TOKEN, WebProcess, make_task

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from supervisor.config.listen import parse_listen
from supervisor.paths import Paths
from supervisor.web.app import WebConfig, create_app

pytestmark = pytest.mark.timeout(180)
CLIENTS = 200
LOAD_S = 10.0
CLI_CALLS = 30
PATHS = ("/", "/api/status", "/tasks/a")
# Most status answers are quick; every tenth takes longer than the dashboard waits for one (3 s), so pages
# are also served from the offline status while the supervisor runs.
STATUS_DELAYS = "status=" + ",".join(["0.02"] * 9 + ["4"])
FIVE_XX = re.compile(r"\b5\d\d (GET|POST) /")


def slowed(home: Path, *delays: str) -> SupervisorProcess:
    return SupervisorProcess(home, entry=("-m", "tests.support.slowed", *(a for d in delays for a in ("--delay", d))))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _load(base: str, token: str, *, deadline: float) -> tuple[Counter[int], list[str], Counter[str]]:
    """CLIENTS clients, each asking its path again and again until ``deadline`` (one answer at least)."""
    codes: Counter[int] = Counter()
    failures: list[str] = []
    seen: Counter[str] = Counter()  # "live", "busy" (offline while the supervisor runs), "banner"
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, headers=bearer(token), timeout=60, limits=limits) as client:

        async def one(path: str) -> None:
            while True:  # at least one answer per client, however long the first one takes
                try:
                    r = await client.get(path)
                except httpx.HTTPError as exc:
                    failures.append(f"{path}: {type(exc).__name__}: {exc}")
                    return
                codes[r.status_code] += 1
                if r.status_code >= 500:
                    failures.append(f"{path}: {r.status_code}: {r.text[:300]}")
                elif path == "/api/status":
                    offline = r.json()["offline"]
                    assert offline is None or offline["supervisor_running"], offline  # never "not running"
                    seen["busy" if offline else "live"] += 1
                elif 'data-offline="busy"' in r.text:
                    seen["banner"] += 1
                if time.monotonic() >= deadline:
                    return

        await asyncio.gather(*(one(PATHS[i % len(PATHS)]) for i in range(CLIENTS)))
    return codes, failures, seen


def _status_calls(home: Path, results: list[subprocess.CompletedProcess[str]]) -> None:
    """CLI_CALLS `status --json` at once."""
    argv = [sys.executable, "-m", "supervisor", "status", "--json", "--home", str(home)]
    procs = [
        subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(CLI_CALLS)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


def test_200_concurrent_clients_and_30_status_calls_against_a_slowed_supervisor_get_no_5xx(home: Path) -> None:
    for name in ("a", "b", "c"):
        make_task(home, name)
    with slowed(home, STATUS_DELAYS) as sup, WebProcess(home) as web:
        wait_for(lambda: sup.task_status("a")["last_run"] is not None, timeout=60, what="a's first run")
        cli_results: list[subprocess.CompletedProcess[str]] = []
        cli = threading.Thread(target=_status_calls, args=(home, cli_results))
        deadline = time.monotonic() + LOAD_S
        cli.start()
        try:
            codes, failures, seen = asyncio.run(_load(web.base, web.token, deadline=deadline))
        finally:
            cli.join(timeout=120)
        web_log = web.out.read_text(errors="replace")
    print(f"load: {dict(codes)} {dict(seen)}")  # the figures, with -s
    assert not failures, failures[:10]
    assert set(codes) == {200} and sum(codes.values()) >= CLIENTS, codes
    assert seen["live"] and seen["busy"] and seen["banner"], seen  # both kinds of answer were served
    assert len(cli_results) == CLI_CALLS
    for result in cli_results:
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        assert document["supervisor"] is not None or document["offline"]["supervisor_running"], document
    assert not FIVE_XX.search(web_log), web_log[-2000:]


def test_an_action_while_the_supervisor_is_busy_is_503_with_retry_after_as_json_html_or_flash(home: Path) -> None:
    make_task(home, "a")
    with slowed(home, "run-now=7") as sup, WebProcess(home) as web:
        wait_for(lambda: sup.task_status("a")["state"] != "initializing", timeout=60, what="a loaded")
        browser = httpx.Client(base_url=web.base, timeout=30, follow_redirects=False)
        assert browser.get(web.login_url.replace(web.base, "")).status_code == 303
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', browser.get("/").text)
        assert found
        csrf = found.group(1)
        answers: dict[str, httpx.Response] = {}

        def post(kind: str) -> None:
            if kind == "api":
                answers[kind] = httpx.post(f"{web.base}/api/tasks/a/run", headers=bearer(web.token), timeout=30)
            elif kind == "form":
                answers[kind] = browser.post("/api/tasks/a/run?next=/", data={"csrf": csrf})
            else:
                answers[kind] = browser.post("/api/tasks/a/run", headers={"HX-Request": "true", "X-CSRF-Token": csrf})

        threads = [threading.Thread(target=post, args=(kind,)) for kind in ("api", "form", "htmx")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        browser.close()
        api, form, htmx = answers["api"], answers["form"], answers["htmx"]
        for r in (api, form, htmx):
            assert r.status_code == 503 and r.headers["retry-after"] == "5", (r.status_code, r.text[:300])
        assert api.headers["content-type"] == "application/json" and "busy" in api.json()["error"]
        assert "<html" in form.text and "Try again in 5 seconds" in form.text and "busy" in form.text
        assert "<html" not in htmx.text and 'data-status="503"' in htmx.text
        web_log = wait_for(
            lambda: (lambda t: t if t.count("503 POST /api/tasks/a/run: the supervisor is busy") == 3 else None)(
                web.out.read_text(errors="replace")
            ),
            timeout=10,
            what="three 503 lines in the web log",
        )
        assert all("\n" not in line for line in web_log.splitlines())


def test_run_now_for_a_task_still_initializing_is_accepted_and_runs_once_it_is_loaded(home: Path) -> None:
    gate = home / "gate"
    make_task(
        home,
        "slow",
        main=f"import os, time\n\ndef initialize():\n    while not os.path.exists({str(gate)!r}):\n"
        f"        time.sleep(0.05)\n    return 'ready'\n\ndef main():\n    return 'ran'\n",
    )
    out = home / "run-now.txt"
    with SupervisorProcess(home) as sup:
        wait_for(lambda: sup.task_status("slow")["state"] == "initializing", timeout=60, what="slow initializing")
        with open(out, "w") as f:
            waiting = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "supervisor",
                    "run-now",
                    "slow",
                    "--wait",
                    "--timeout",
                    "60",
                    "--home",
                    str(home),
                ],
                cwd=REPO,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            accepted = wait_for(
                lambda: re.search(r"accepted run (\S+) of 'slow': it starts once the task is loaded", out.read_text()),
                timeout=30,
                what="the CLI's accepted line",
            )
            run_id = accepted.group(1)
            app = create_app(WebConfig(paths=Paths(home), listen=parse_listen("127.0.0.1:8765"), token=TOKEN))
            api = TestClient(app, base_url="http://127.0.0.1:8765").post("/api/tasks/slow/run", headers=bearer(TOKEN))
            assert api.status_code == 200, api.text
            assert api.json() == {"ok": True, "run_id": run_id, "waiting_for": "initializing", "task": "slow"}
            gate.write_text("go")
            assert waiting.wait(timeout=60) == 0, out.read_text()
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
        assert f"run {run_id} of 'slow': ok" in out.read_text()
        manual = [run for run in sup.history("slow") if run["trigger"] == "manual"]
        assert [(run["run_id"], run["outcome"]) for run in manual] == [(run_id, "ok")]
