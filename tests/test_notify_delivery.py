"""Delivery with real receivers on 127.0.0.1: Apprise json:// and mailto:// notices, pings, the Command hook,
retries, a hanging receiver, the bounded queue, the heartbeat and notify-test."""

from __future__ import annotations

import itertools
import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest
from tests.support.helpers import wait_for, write_task
from tests.support.receivers import HangingReceiver, HttpReceiver, SmtpReceiver, free_port

from supervisor.cli import entry as cli
from supervisor.execution.secrets import Secrets
from supervisor.notify.delivery import Delivery
from supervisor.notify.heartbeat import Heartbeat
from supervisor.notify.message import Origin
from supervisor.model import HeartbeatSettings, NotifyEvent, NotifySettings
from supervisor.notify.model import DeliveryResult, Job, Notice, PingJob, RunFact
from supervisor.notify.notifier import Notifier, describe
from supervisor.notify.senders import ping, run_command, send_apprise

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def log() -> logging.Logger:
    logger = logging.getLogger("test.notify")
    logger.setLevel(logging.INFO)
    return logger


def make_notifier(log: logging.Logger, **kwargs: object) -> Notifier:
    notifier = Notifier(origin=Origin("testhost", Path("/srv/home")), logger=log, pauses_s=(0.0, 0.0), **kwargs)  # type: ignore[arg-type]
    notifier.start()
    return notifier


def write_run_log(path: Path, run_id: str, lines: list[str]) -> Path:
    path.write_text(
        "".join(f"2026-01-01 10:00:{i:02d},000 INFO    [run {run_id}] {line}\n" for i, line in enumerate(lines))
    )
    return path


NOTICE = Notice(
    task="T",
    run_id="r1",
    event=NotifyEvent.FAILURE,
    outcome="failed",
    title="T failed (failed)",
    body="body text",
    message="msg",
)


# ---------------------------------------------------------------------------------------------- channels
def test_json_notice_reaches_a_local_receiver(http: HttpReceiver) -> None:
    result = send_apprise(http.url("/hook", scheme="json"), NOTICE)
    assert result.ok, result.detail
    [got] = http.received("/hook")
    assert got.json()["title"] == "T failed (failed)" and got.json()["message"] == "body text"
    assert got.json()["type"] == "failure"


def test_mailto_notice_reaches_a_local_smtp_server() -> None:
    smtp = SmtpReceiver()
    try:
        result = send_apprise(smtp.mailto(), NOTICE)
        assert result.ok, result.detail
        [mail] = smtp.messages
        assert b"Subject: T failed (failed)" in mail and b"body text" in mail
    finally:
        smtp.close()


def test_a_refused_delivery_is_a_result_with_a_reason() -> None:
    result = send_apprise(f"json://127.0.0.1:{free_port()}/x", NOTICE)
    assert not result.ok and result.detail


def test_ping_get_and_post(http: HttpReceiver) -> None:
    assert ping(http.url("/p/start")).ok
    assert ping(http.url("/p/fail"), b"tail").ok
    assert [(r.method, r.path, r.body) for r in http.received()] == [
        ("GET", "/p/start", b""),
        ("POST", "/p/fail", b"tail"),
    ]
    http.status = 404
    result = ping(http.url("/p"))
    assert not result.ok and "404" in result.detail


# ---------------------------------------------------------------------------------------------- Command hook
def test_command_hook_gets_the_facts_in_its_environment_and_the_notice_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "hook.out"
    code = textwrap.dedent(f"""
        import os, sys
        keys = ("TASK_NAME", "TASK_RUN_ID", "TASK_EVENT", "TASK_OUTCOME", "TASK_MESSAGE")
        with open({str(out)!r}, "w") as f:
            f.write("|".join(os.environ[k] for k in keys) + "\\n" + sys.stdin.read())
        """)
    result = run_command([sys.executable, "-c", code], NOTICE, env=os.environ)
    assert result.ok, result.detail
    assert out.read_text() == "T|r1|failure|failed|msg\nT failed (failed)\n\nbody text\n"
    failing = run_command([sys.executable, "-c", "import sys; sys.exit('no route')"], NOTICE, env=os.environ)
    assert not failing.ok and failing.detail == "exit 1: no route"
    missing = run_command(["/nonexistent/hook"], NOTICE, env=os.environ)
    assert not missing.ok and "cannot run" in missing.detail


def test_a_hanging_hook_is_killed_with_its_process_group(tmp_path: Path) -> None:
    started = tmp_path / "child.pid"
    code = (
        f"import subprocess, sys, time\np = subprocess.Popen([sys.executable, '-c', 'import time; "
        f"time.sleep(600)'])\nopen({str(started)!r}, 'w').write(str(p.pid))\ntime.sleep(600)\n"
    )
    result = run_command([sys.executable, "-c", code], NOTICE, env=os.environ, timeout_s=1.0)
    assert not result.ok and "killed after 1 s" in result.detail
    pid = int(started.read_text())
    wait_for(lambda: not _alive(pid), what="the hook's child to be gone")  # the leftover check reaps too


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------------------------------- worker
def test_three_tries_then_one_warning_with_the_url_secret_masked(
    http: HttpReceiver, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    http.status = 500
    notifier = make_notifier(log)
    url = http.url("/hook", scheme="json").replace("json://", "json://user:hunter2-pw@")
    notifier.run_finished(
        RunFact(task="T", run_id="r1", outcome="failed", consecutive_failures=1), settings=NotifySettings(urls=(url,))
    )
    http.wait(3, path="/hook")
    wait_for(lambda: notifier.delivery.pending() == 0, what="the delivery to give up")
    notifier.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "test.notify"]
    assert len(warnings) == 1 and "failed after 3 tries" in warnings[0]
    assert "hunter2-pw" not in warnings[0] and "task 'T': failure notice to json://user:" in warnings[0]
    assert len(http.received("/hook")) == 3


def test_a_retry_that_gets_through_is_not_a_warning(log: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    results = iter([DeliveryResult(False, "busy"), DeliveryResult(True)])
    sent: list[Job] = []

    def send(job: Job) -> DeliveryResult:
        sent.append(job)
        return next(results)

    delivery = Delivery(send, describe=describe, logger=log, pauses_s=(0.0,))
    delivery.start()
    delivery.post(PingJob("http://127.0.0.1:9/x", task="T"))
    wait_for(lambda: delivery.delivered == 1, what="delivery")
    delivery.close()
    assert len(sent) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "test.notify"]


def test_streaks_and_exactly_one_recovery_at_the_receiver(
    http: HttpReceiver, log: logging.Logger, tmp_path: Path
) -> None:
    notifier = make_notifier(log)
    settings = NotifySettings(urls=(http.url("/n", scheme="json"),), after_failures=2, ping_url=http.url("/ping"))
    streak = 0
    plan = [
        ("failed", False),
        ("failed", True),
        ("failed", False),
        ("failed", True),
        ("failed", True),
        ("ok", True),
        ("ok", True),
    ]
    for i, (outcome, final) in enumerate(plan):
        streak = 0 if outcome == "ok" else streak + (1 if final else 0)
        notifier.run_started("T", f"r{i}", settings=settings)
        notifier.run_finished(
            RunFact(task="T", run_id=f"r{i}", outcome=outcome, final=final, consecutive_failures=streak),
            settings=settings,
        )
    wait_for(lambda: notifier.delivery.pending() == 0, what="all deliveries")
    notifier.close()
    titles = [r.json()["title"] for r in http.received("/n")]
    assert titles == ["T failed (failed)", "T recovered"]
    paths = [r.path for r in http.received() if r.path.startswith("/ping")]
    # a /start per attempt; no /fail for the retried attempts; /fail per final failure; bare URL per ok
    assert paths.count("/ping/start") == 7 and paths.count("/ping/fail") == 3 and paths.count("/ping") == 2


def test_masking_in_notice_and_ping_bodies(http: HttpReceiver, log: logging.Logger, tmp_path: Path) -> None:
    secret = "sk-live-0123456789"
    run_log = write_run_log(tmp_path / "T.log", "r9", ["started", f"calling api with {secret}", "boom"])
    notifier = make_notifier(log)
    settings = NotifySettings(urls=(http.url("/n", scheme="json"),), ping_url=http.url("/ping"))
    notifier.run_finished(
        RunFact(
            task="T",
            run_id="r9",
            outcome="failed",
            consecutive_failures=1,
            message=f"HTTP 401 for key {secret}",
            log_path=run_log,
            exit_code=1,
        ),
        settings=settings,
        secrets=Secrets(values={"API_KEY": secret}),
    )
    [notice] = http.wait(1, path="/n")
    [fail] = http.wait(1, path="/ping/fail")
    notifier.close()
    body = notice.json()["message"]
    assert secret not in body and "HTTP 401 for key ***" in body and "calling api with ***" in body
    assert "host: testhost" in body and "exit code: 1" in body
    assert secret.encode() not in fail.body and b"calling api with ***" in fail.body


def test_a_hanging_receiver_never_blocks_posting_and_the_queue_stays_bounded(
    hanging: HangingReceiver, http: HttpReceiver, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = make_notifier(log, capacity=10)
    settings = NotifySettings(urls=(hanging.url("/n", scheme="json"),))
    fact = RunFact(task="T", run_id="r", outcome="failed", consecutive_failures=1)
    notifier.run_finished(fact, settings=settings)
    wait_for(lambda: hanging.connections, what="the worker to be stuck in the hanging receiver")
    for i in range(50):  # each would take 3 x 10 s; posting must not wait for any of them
        notifier.forget("T")
        notifier.run_finished(
            RunFact(task="T", run_id=f"r{i}", outcome="failed", consecutive_failures=1), settings=settings
        )
    assert notifier.delivery.pending() == 11  # 10 queued + the one in flight
    assert notifier.delivery.dropped == 40
    overflow = [r for r in caplog.records if "queue is full" in r.getMessage()]
    assert len(overflow) == 1  # one WARNING per overflow episode, not one per dropped notice
    assert notifier.delivery.close(drain_s=0.2) is False  # shutdown is not held by the hanging receiver
    assert "not sent at shutdown" in caplog.text


# ---------------------------------------------------------------------------------------------- heartbeat
def test_heartbeat_keeps_its_cadence(http: HttpReceiver, log: logging.Logger) -> None:
    beat = Heartbeat(HeartbeatSettings(url=http.url("/beat"), seconds=0.3), logger=log)
    import time

    stamps: list[float] = []
    beat.start()
    try:
        for n in range(1, 5):
            http.wait(n, path="/beat")
            stamps.append(time.monotonic())
    finally:
        beat.stop()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= 0.2 for gap in gaps), gaps  # a fixed grid: never a burst of beats


def test_heartbeat_is_withheld_while_unhealthy_and_logs_failures_once(
    http: HttpReceiver, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    sick = ["the loop has not turned for 120 s"]
    tried: list[str] = []

    def send(url: str) -> DeliveryResult:
        tried.append(url)
        return DeliveryResult(False, "refused") if len(tried) <= 3 else ping(url)

    beat = Heartbeat(
        HeartbeatSettings(url=http.url("/beat"), seconds=0.05),
        logger=log,
        send=send,
        healthy=lambda: sick[0] if sick else None,
    )
    beat.start()
    try:
        wait_for(lambda: "withheld" in caplog.text, what="the withheld warning")
        assert tried == []
        sick.clear()
        http.wait(1, path="/beat")
    finally:
        beat.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "test.notify"]
    assert len([w for w in warnings if "ping to" in w]) == 1 and len(tried) >= 4
    assert "answers again after 3 failed" in caplog.text


# ---------------------------------------------------------------------------------------------- CLI
def _home_with_task(home: Path, notify: str) -> None:
    write_task(home / "Tasks", "T", config=f"[Frequency]\nEveryXMinutes = 60\n[Notify]\n{notify}\n")


def test_notify_test_exit_codes(home: Path, http: HttpReceiver, capsys: pytest.CaptureFixture[str]) -> None:
    ok_url = http.url("/n", scheme="json")
    _home_with_task(home, f"Urls = {ok_url}\nPingUrl = {http.url('/hc')}")
    assert cli.main(["notify-test", "T", "--home", str(home)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith("ok") for line in out)
    assert http.received("/n")[0].json()["title"] == "T: test notice"
    assert http.received("/hc/log")

    dead = f"json://127.0.0.1:{free_port()}/n"
    _home_with_task(home, f"Urls = {ok_url}, {dead}\nCommand = {sys.executable} -c 'import sys; sys.exit(3)'")
    assert cli.main(["notify-test", "T", "--home", str(home)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "FAILED", "FAILED"]
    assert "exit 3" in lines[2]

    _home_with_task(home, "")
    assert cli.main(["notify-test", "T", "--home", str(home)]) == 1
    assert "no channel to test" in capsys.readouterr().err


def test_validate_reports_bad_urls(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _home_with_task(home, "Urls = json://127.0.0.1:9/ok, bogus://nothing-here")
    assert cli.main(["validate", "--home", str(home)]) == 1
    out = capsys.readouterr().out
    assert "[Notify] Urls = " in out and "bogus://nothing-here" in out and "Apprise does not accept" in out
    _home_with_task(home, "Urls = json://127.0.0.1:9/ok")
    (home / "taskautomation.ini").write_text("[Supervisor]\nHeartbeatUrl = not-a-url\n")
    assert cli.main(["validate", "--home", str(home)]) == 1
    assert "[Supervisor] HeartbeatUrl = 'not-a-url'" in capsys.readouterr().out


def test_validate_warns_about_a_world_readable_env(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _home_with_task(home, "")
    env = home / "Tasks" / "T" / ".env"
    env.write_text("TOKEN=do-not-print-me\n")
    os.chmod(env, 0o604)
    assert cli.main(["validate", "--home", str(home)]) == 0  # a warning, not a problem
    out = capsys.readouterr().out
    assert f"warning: task 'T': {env}: readable by group/others (mode 0604)" in out
    assert "do-not-print-me" not in out
