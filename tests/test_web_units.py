"""Pure parts of the dashboard: listen addresses and the Host allowlist, sessions and CSRF, the SVG, the
restart policy of the supervised child, the pause table, the run-log filter, the [Web] keys, how an action
maps the supervisor's reply to HTTP, and which errors are JSON."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from tests.support.helpers import wait_for
from tests.support.web_support import T0, add_runs

from supervisor.config.listen import ListenError, allowed_hosts, host_allowed, parse_listen
from supervisor.config.schema import parse_home_config
from supervisor.core.pausing import PauseBook
from supervisor.errors import ConfigError, ControlError, NotRunningError
from supervisor.history.store import HistoryStore, OutcomeBin
from supervisor.model import Outcome, RunRecord, Trigger
from supervisor.web import auth
from supervisor.web.actions import act
from supervisor.web.faults import wants_json
from supervisor.system.webchild import Backoff, WebChild
from supervisor.web.fmt import relative
from supervisor.web.runlog import LogFollower, RunLineFilter

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------------------------------ addresses
@pytest.mark.parametrize(
    "text, host, port, loopback",
    [
        ("127.0.0.1:8765", "127.0.0.1", 8765, True),
        ("8080", "127.0.0.1", 8080, True),
        ("localhost:1", "localhost", 1, True),
        ("[::1]:9000", "::1", 9000, True),
        ("0.0.0.0:8765", "0.0.0.0", 8765, False),
        ("192.168.1.5:80", "192.168.1.5", 80, False),
        ("pi.local:8765", "pi.local", 8765, False),
    ],
)
def test_listen_addresses_parse(text: str, host: str, port: int, loopback: bool) -> None:
    listen = parse_listen(text)
    assert (listen.host, listen.port, listen.loopback) == (host, port, loopback)


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty"),
        ("host", "HOST:PORT"),
        ("1.2.3.4:99999", "65535"),
        ("::1:80", "[ADDRESS]"),
        ("1.2.3.4:http", "'http'"),
    ],
)
def test_bad_listen_addresses_say_why(text: str, words: str) -> None:
    with pytest.raises(ListenError, match=words.replace("[", r"\[")):
        parse_listen(text)


def test_the_host_allowlist_ignores_ports_and_case_and_refuses_lookalikes() -> None:
    allowed = allowed_hosts(parse_listen("192.168.1.5:8765"), ("Dash.Example.org",))
    for ok in ("192.168.1.5:8765", "localhost", "127.0.0.1:1", "[::1]:8765", "dash.example.org:8765"):
        assert host_allowed(ok, allowed), ok
    for bad in (None, "", "evil.example", "127.0.0.1.evil.example", "localhost.evil:8765", "[::2]:8765"):
        assert not host_allowed(bad, allowed), bad


def test_web_keys_in_the_home_config_are_validated(tmp_path: Path) -> None:
    ini = tmp_path / "taskautomation.ini"
    config, warnings = parse_home_config(
        "[Web]\nListen = 0.0.0.0:9000\nAllowedHosts = a.example, b.example\n", path=ini
    )
    assert config.web_listen == "0.0.0.0:9000" and config.web_allowed_hosts == ("a.example", "b.example")
    assert warnings == ()
    with pytest.raises(ConfigError, match=r"\[Web\] Listen = 'nope'"):
        parse_home_config("[web]\nlisten = nope\n", path=ini)
    with pytest.raises(ConfigError, match=r"AllowedHosts = 'http://x'"):
        parse_home_config("[Web]\nAllowedHosts = http://x\n", path=ini)


# ------------------------------------------------------------------------------------------ sessions
def test_sessions_are_signed_expire_and_bind_their_csrf_token() -> None:
    token, other = "a" * 64, "b" * 64
    session = auth.new_session(token, now=1000.0)
    assert auth.session_valid(token, session, now=1001.0)
    assert not auth.session_valid(other, session, now=1001.0)  # a rotated token signs everybody out
    assert not auth.session_valid(token, session, now=1000.0 + auth.SESSION_SECONDS + 1)
    issued, nonce, mac = session.split(".")
    assert not auth.session_valid(token, f"{int(issued) + 1}.{nonce}.{mac}", now=1001.0)
    csrf = auth.csrf_token(token, session)
    assert auth.csrf_valid(token, session, csrf)
    assert not auth.csrf_valid(token, auth.new_session(token, now=1000.0), csrf)  # another session's
    assert not auth.csrf_valid(token, session, None)


# ------------------------------------------------------------------------------------------ SVG, times
def _bin(task: str, index: int, outcome: str | None, count: int = 1) -> OutcomeBin:
    at = T0 + timedelta(minutes=15 * index)
    return OutcomeBin(
        task=task,
        bin=index,
        outcome=outcome,
        count=count,
        first=at,
        last=at + timedelta(minutes=1),
        run_id=f"{task}-{index}",
    )


def test_segments_merge_neighbouring_bins_and_show_the_worst_outcome() -> None:
    from supervisor.web.svg import segments

    found = segments(
        [
            _bin("c", 1, "ok", 2),
            _bin("c", 2, "ok"),
            _bin("c", 3, "ok"),
            _bin("c", 3, "failed"),
            _bin("c", 4, "failed"),
            _bin("c", 6, "failed"),
            _bin("d", 7, None),
        ]
    )
    assert [(s.task, s.outcome, s.total) for s in found] == [
        ("c", "ok", 3),
        ("c", "failed", 3),
        ("c", "failed", 1),
        ("d", "running", 1),
    ]
    assert found[1].counts == (("failed", 2), ("ok", 1))
    assert found[0].run_id is None and found[2].run_id == "c-6"
    assert "3 runs" in found[1].title() and "1 ok" in found[1].title()


def test_the_timeline_draws_lanes_with_outcome_words_and_escapes_names() -> None:
    from supervisor.web.svg import sparkline, timeline

    now = T0 + timedelta(hours=24)
    svg = str(timeline(["<a>", "b"], [_bin("<a>", 92, "failed"), _bin("b", 95, None), _bin("zzz", 3, "ok")], now=now))
    assert "<a>" not in svg.replace("<a href", "") and "&lt;a&gt;" in svg
    assert 'class="run o-failed bad"' in svg and "failed at" in svg and 'href="/runs/%3Ca%3E-92"' in svg
    assert 'class="run o-running"' in svg
    assert "zzz" not in svg  # not one of the lanes asked for
    runs = [
        RunRecord(run_id="r1", task="a", trigger=Trigger.SCHEDULE, started=T0, outcome=Outcome.FAILED, duration_s=60.0)
    ]
    assert "0 of 1 recent runs succeeded" in str(sparkline(runs))


def test_lanes_prefer_failing_and_running_tasks_when_there_are_too_many() -> None:
    from supervisor.web.svg import pick_lanes

    tasks: list[dict[str, object]] = [
        {"name": f"t{i}", "state": "idle", "last_run": {"outcome": "ok"}} for i in range(10)
    ]
    tasks[7]["last_run"] = {"outcome": "timeout"}
    tasks[8]["state"] = "running"
    assert pick_lanes(tasks, limit=3) == ["t0", "t7", "t8"]


def test_relative_times_read_naturally() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert relative((now + timedelta(minutes=4)).isoformat(), now=now) == "in 4 min"
    assert relative((now - timedelta(hours=3)).isoformat(), now=now) == "3 h ago"
    assert relative(now.isoformat(), now=now) == "now"
    assert relative(None, now=now) == ""


# ------------------------------------------------------------------------------------------ run log
def test_the_run_filter_keeps_continuation_lines_of_its_entries_only() -> None:
    keep = RunLineFilter("R1")
    lines = [
        "2026-01-01 00:00:00,000 INFO    [run R1] traceback:",
        "Traceback ...",
        "ValueError",
        "2026-01-01 00:00:01,000 INFO    [run R2] hi",
        "continued R2",
        "2026-01-01 00:00:02,000 INFO    [run R1] done",
    ]
    assert [line for line in lines if keep.keep(line)] == [lines[0], lines[1], lines[2], lines[5]]


def test_the_follower_survives_a_rotation_and_waits_for_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("2026-01-01 00:00:00,000 INFO    [run R] old\n")
    follower = LogFollower(log, "R")
    assert follower.poll() == []
    with open(log, "a") as f:
        f.write("2026-01-01 00:00:01,000 INFO    [run R] one\n2026-01-01 00:00:02,000 INFO    [run R] hal")
    assert [line[-3:] for line in follower.poll()] == ["one"]
    with open(log, "a") as f:
        f.write("f\n")
    log.rename(tmp_path / "a.log.1")
    log.write_text("2026-01-01 00:00:03,000 INFO    [run R] after rotation\n")
    assert [line.split("] ")[1] for line in follower.poll()] == ["half", "after rotation"]
    follower.close()


# ------------------------------------------------------------------------------------------ pause
def test_pauses_persist_keep_their_first_time_and_name_unknown_tasks(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite3"
    times = iter([T0, T0 + timedelta(hours=1)])
    with HistoryStore(db) as records:
        book = PauseBook(records, now=lambda: next(times))
        first = book.handle("pause", {"name": "a"}, known=lambda n: n == "a")
        assert first == {"ok": True, "task": "a", "paused": True, "since": T0.isoformat(), "changed": True}
        again = book.handle("pause", {"name": "a"}, known=lambda n: n == "a")
        assert again["since"] == T0.isoformat() and not again["changed"]
        assert book.handle("pause", {"name": "zz"}, known=lambda n: n == "a")["code"] == "unknown-task"
    with HistoryStore(db, readonly=True) as reader:  # another process, after a restart
        assert reader.paused() == {"a": T0}
    with HistoryStore(db) as records:
        book = PauseBook(records, now=lambda: T0)
        assert book.since("a") == T0
        assert book.handle("resume", {"name": "a"}, known=lambda n: True)["changed"]
        assert book.since("a") is None and records.paused() == {}


def test_history_filters_pages_and_finds_runs(tmp_path: Path) -> None:
    ids = add_runs(tmp_path, "a", [Outcome.OK, Outcome.FAILED, None])
    with HistoryStore(tmp_path / "logs" / "state" / "history.sqlite3", readonly=True) as records:
        assert [r.run_id for r in records.history("a", limit=1, offset=1)] == [ids[1]]
        assert [r.run_id for r in records.history("a", outcomes=(Outcome.FAILED,))] == [ids[1]]
        assert records.run(ids[2]) is not None and records.run("nope") is None
        bins = records.outcome_bins(["a", "b"], T0, bin_s=90, now=T0 + timedelta(hours=1))
        assert sorted((b.bin, b.outcome or "", b.count) for b in bins) == [(0, "failed", 1), (0, "ok", 1), (1, "", 1)]


# ------------------------------------------------------------------------------------------ child
def test_backoff_doubles_to_its_cap_and_starts_over_after_a_stable_run() -> None:
    b = Backoff(first=1, maximum=8, stable=60)
    delays, d = [], None
    for _ in range(5):
        d = b.next_delay(d, uptime=0.1)
        delays.append(d)
    assert delays == [1, 2, 4, 8, 8]
    assert b.next_delay(8, uptime=61) == 1


def test_the_web_child_is_restarted_when_it_dies_and_stopped_on_request(tmp_path: Path) -> None:
    started: list[subprocess.Popen[bytes]] = []
    lock = threading.Lock()

    def spawn(argv: list[str], parent_fd: int) -> subprocess.Popen[bytes]:
        # A stand-in dashboard that lives until its parent pipe closes or it is signalled.
        proc = subprocess.Popen(
            [sys.executable, "-c", "import os, sys; os.read(int(sys.argv[1]), 1)", str(parent_fd)],
            pass_fds=(parent_fd,),
            stdin=subprocess.DEVNULL,
        )
        with lock:
            started.append(proc)
        return proc

    child = WebChild(
        ["python", "-m", "web"],
        spawn=spawn,
        logger=logging.getLogger("test.webchild"),
        backoff=Backoff(first=0.01, maximum=0.05),
    )
    child.start()
    try:
        wait_for(lambda: len(started) == 1, what="first start")
        started[0].kill()
        wait_for(lambda: len(started) == 2 and started[1].poll() is None, what="restart after death")
    finally:
        child.stop()
    assert all(p.poll() is not None for p in started)
    assert len(started) == 2 and child.starts == 2


# ------------------------------------------------------------------------------------------ actions and errors
@pytest.mark.parametrize(
    "outcome, status, retry_after",
    [
        ({"ok": True, "run_id": "r1"}, 200, None),
        ({"ok": True, "run_id": "r1", "waiting_for": "initializing"}, 200, None),
        ({"ok": False, "error": "no task named 'a'", "code": "unknown-task"}, 404, None),
        ({"ok": False, "error": "task 'a' is already running (run r0)", "code": "running"}, 409, None),
        ({"ok": False, "error": "task 'a' is not loaded (error: x)", "code": "not-loaded"}, 409, None),
        ({"ok": False, "error": "the supervisor is shutting down", "code": "stopping"}, 409, None),
        ({"ok": False, "error": "the supervisor's loop did not answer within 10 s", "code": "busy"}, 503, 5),
        ({"ok": False, "error": "ValueError: odd"}, 502, None),
        ({"ok": False, "error": "task 'a' is already running (run r0)"}, 409, None),  # a supervisor without codes
        (ControlError("the supervisor did not answer 'run-now' within 5 s"), 503, 5),
        (NotRunningError("no supervisor is running on /h"), 503, 30),
    ],
)
def test_an_actions_answer_follows_the_supervisors_reply(
    outcome: dict[str, object] | Exception, status: int, retry_after: int | None
) -> None:
    def ask(command: str, args: object) -> dict[str, object]:
        assert command == "run-now"
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = act("run", "a", ask=ask, by="test")  # type: ignore[arg-type]
    assert (result.status, result.retry_after) == (status, retry_after)
    if status == 200:
        assert result.body["task"] == "a" and result.message.startswith(
            "run r1 of 'a' starts once it is loaded" if "waiting_for" in result.body else "started run r1"
        )
    else:
        assert result.body["ok"] is False and result.message


def test_errors_are_json_for_the_api_and_html_for_pages_and_the_dashboards_forms() -> None:
    def scope(path: str, method: str = "GET", auth: str = "cookie") -> dict[str, object]:
        return {"type": "http", "path": path, "method": method, "state": {"auth": auth}}

    assert wants_json(scope("/api/status")) and wants_json(scope("/api/tasks/a/run", "POST", "bearer"))
    assert wants_json(scope("/runs/r1/events"))
    assert not wants_json(scope("/api/tasks/a/run", "POST", "cookie")), "a form post from a page gets a page"
    assert not wants_json(scope("/")) and not wants_json(scope("/tasks/a"))
