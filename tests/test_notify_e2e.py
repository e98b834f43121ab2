"""Notifications, pings, heartbeat and secrets in a real supervisor (main.py), with receivers on 127.0.0.1."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for, write_task
from tests.support.receivers import HangingReceiver, HttpReceiver

pytestmark = pytest.mark.timeout(120)

SECRET = "sk-live-7c1d9e0f22"


def test_a_failing_task_notifies_once_with_secrets_masked_everywhere(home: Path, http: HttpReceiver) -> None:
    (home / ".env").write_text(f"API_KEY={SECRET}\n")
    os.chmod(home / ".env", 0o644)  # readable by others: a warning, and the secret is still used
    write_task(
        home / "Tasks",
        "Sync",
        main="""
        import os
        def main():
            key = os.environ['API_KEY']
            print(f'calling the api with {key}', flush=True)
            raise RuntimeError(f'401 for key {key}')
        """,
        config=f"""
        [Frequency]
        EveryXMinutes = 0.01
        [Notify]
        Urls = {http.url("/notify", scheme="json")}
        PingUrl = {http.url("/hc")}
        """,
        initialize="def initialize():\n    return 'key ends ' + __import__('os').environ['API_KEY'][-4:]\n",
    )
    with SupervisorProcess(home) as sup:
        wait_for(
            lambda: len([r for r in sup.history("Sync") if r["outcome"] == "failed"]) >= 3,
            timeout=60,
            what="three failed runs",
        )
        http.wait(3, path="/hc/fail")
        [notice] = http.received("/notify")  # the streak reached AfterFailures=1 once: one notice
        history = sup.history("Sync")
        task_log = sup.task_log("Sync")
    body = notice.json()
    assert body["title"] == "Sync failed (failed)"
    assert SECRET not in body["message"] and "401 for key ***" in body["message"]
    assert "calling the api with ***" in body["message"] and "task: Sync" in body["message"]
    assert SECRET not in task_log and "calling the api with ***" in task_log
    assert all(SECRET not in (r["message"] or "") for r in history)
    assert any("401 for key ***" in (r["message"] or "") for r in history)
    log = sup.log()
    assert SECRET not in log
    assert f"{home / '.env'}: readable by group/others (mode 0644)" in log
    fail_pings = http.received("/hc/fail")
    assert all(SECRET.encode() not in p.body for p in fail_pings) and b"calling the api with ***" in fail_pings[0].body
    assert http.received("/hc/start")


def test_a_canary_keeps_its_cadence_while_the_receiver_hangs(home: Path, hanging: HangingReceiver) -> None:
    urls = ", ".join(hanging.url(f"/n{i}", scheme="json") for i in range(5))
    write_task(
        home / "Tasks",
        "Noisy",
        main="def main():\n    return 'fine'\n",
        config=f"""
        [Frequency]
        EveryXMinutes = 0.005
        [Notify]
        Urls = {urls}
        On = success
        PingUrl = {hanging.url("/hc")}
        """,
    )
    write_task(
        home / "Tasks", "Canary", main="def main():\n    return 'tweet'\n", config="[Frequency]\nEveryXMinutes = 0.05\n"
    )  # every 3 s
    with SupervisorProcess(home) as sup:
        wait_for(lambda: hanging.connections, timeout=60, what="the delivery thread stuck on the hanging receiver")
        first = len(sup.history("Canary"))
        wait_for(
            lambda: len([r for r in sup.history("Canary") if r["outcome"] == "ok"]) >= first + 3,
            timeout=40,
            what="three more canary runs",
        )
        runs = [r for r in reversed(sup.history("Canary")) if r["trigger"] == "schedule"][-3:]
        noisy_runs = len(sup.history("Noisy"))
    late = [(datetime.fromisoformat(r["started"]) - datetime.fromisoformat(r["due"])).total_seconds() for r in runs]
    # A delivery blocks for 10 s per try; had one reached the loop, a start would be seconds late. The margin
    # is half the canary's period, far above a loaded machine's scheduling noise.
    assert all(lateness < 1.5 for lateness in late), late
    assert noisy_runs >= 10  # every one of them queued 5 notices and a ping: far more than one delivery


def test_heartbeat_pings_while_the_supervisor_runs(home: Path, http: HttpReceiver) -> None:
    (home / "taskautomation.ini").write_text(
        f"[Supervisor]\nHeartbeatUrl = {http.url('/beat')}\nHeartbeatSeconds = 1\n"
    )
    with SupervisorProcess(home) as sup:
        beats = http.wait(3, path="/beat", timeout=30)
        assert "heartbeat: pinging http://127.0.0.1" in sup.log()
    assert all(b.method == "GET" for b in beats)
