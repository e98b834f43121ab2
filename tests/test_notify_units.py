"""Pure parts of notifications and secrets: [Notify] parsing, the streak policy, notice text, masking, .env."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.config.schema import parse_home_config, parse_task_config
from supervisor.errors import ConfigError
from supervisor.execution.secrets import Masker, load_secrets, read_env_file
from supervisor.config.notify_keys import mask_url
from supervisor.notify.message import Origin, ping_body, render, run_lines, tail
from supervisor.model import NotifyEvent, NotifySettings
from supervisor.notify.model import RunFact, StreakState
from supervisor.notify.policy import decide_notices, ping_url

pytestmark = pytest.mark.timeout(30)
CONFIG = Path("/h/Tasks/T/config.ini")


def task_config(notify: str, *, defaults: NotifySettings = NotifySettings()) -> NotifySettings:
    text = f"[Frequency]\nEveryXMinutes = 5\n[Notify]\n{notify}\n"
    return parse_task_config(text, task="T", path=CONFIG, notify_defaults=defaults).spec.notify


# ---------------------------------------------------------------------------------------------- settings
def test_notify_keys_parse_and_default() -> None:
    assert task_config("") == NotifySettings()
    s = task_config(
        "urls = json://127.0.0.1:9/a, mailto://u:pw@example.org?to=a@x.org,b@y.org\n"
        "ON = failure success\nAfterFailures = 3\nPingUrl = https://hc-ping.com/abc/\n"
        "Command = /usr/bin/notify-send 'two words'"
    )
    assert s.urls == ("json://127.0.0.1:9/a", "mailto://u:pw@example.org?to=a@x.org,b@y.org")
    assert s.on == {NotifyEvent.FAILURE, NotifyEvent.SUCCESS}
    assert s.after_failures == 3
    assert s.ping_url == "https://hc-ping.com/abc"
    assert s.command == ("/usr/bin/notify-send", "two words")


def test_task_keys_win_over_home_defaults_key_by_key() -> None:
    home, _ = parse_home_config(
        "[Notify]\nUrls = json://127.0.0.1:9/home\nAfterFailures = 4\n"
        "[Supervisor]\nHeartbeatUrl = http://127.0.0.1:9/beat\nHeartbeatSeconds = 30\n",
        path=Path("/h/taskautomation.ini"),
    )
    assert home.heartbeat.url == "http://127.0.0.1:9/beat" and home.heartbeat.seconds == 30
    inherited = task_config("On = failure", defaults=home.notify)
    assert inherited.urls == ("json://127.0.0.1:9/home",) and inherited.after_failures == 4
    silenced = task_config("Urls =", defaults=home.notify)  # an empty value is a deliberate "none"
    assert silenced.urls == () and silenced.after_failures == 4


@pytest.mark.parametrize(
    "line, key, shown, reason",
    [
        ("Urls = foo://bar", "Urls", "foo://bar", "Apprise does not accept"),
        ("Urls = json://127.0.0.1:9/ok nonsense", "Urls", "nonsense", "not a URL"),
        ("On = failure, sometimes", "On", "failure, sometimes", "'sometimes' is not an event"),
        ("On = test", "On", "test", "not an event"),
        ("AfterFailures = 0", "AfterFailures", "0", "at least 1"),
        ("AfterFailures = two", "AfterFailures", "two", "not a whole number"),
        ("PingUrl = ftp://example.org/x", "PingUrl", "ftp://example.org/***", "http"),
        ("Command = notify 'unbalanced", "Command", "notify 'unbalanced", "cannot be split"),
    ],
)
def test_bad_notify_values_name_task_file_section_key_value(line: str, key: str, shown: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        task_config(line)
    message = str(err.value)
    assert message.startswith(f"task 'T': {CONFIG}: [Notify] {key} = ")
    assert shown in message and reason in message


def test_a_password_in_a_bad_url_is_not_repeated_in_the_error() -> None:
    with pytest.raises(ConfigError) as err:
        task_config("PingUrl = ftp://me:hunter2hunter2@example.org/x")
    assert "hunter2hunter2" not in str(err.value) and "me:***@example.org" in str(err.value)


@pytest.mark.parametrize(
    "text, key",
    [
        ("[Supervisor]\nHeartbeatSeconds = 0.5\n", "HeartbeatSeconds"),
        ("[Supervisor]\nHeartbeatUrl = hc-ping.com/x\n", "HeartbeatUrl"),
        ("[Notify]\nUrls = nope://x\n", "Urls"),
    ],
)
def test_bad_home_keys(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"taskautomation.ini: \[(Supervisor|Notify)\] {key} = "):
        parse_home_config(text, path=Path("/h/taskautomation.ini"))


def test_notify_keys_are_known_no_unknown_key_warning() -> None:
    result = parse_task_config(
        "[Frequency]\nEveryXMinutes = 5\n[Notify]\nAfterFailures = 2\nAfterFailure = 3\n", task="T", path=CONFIG
    )
    assert [w for w in result.warnings if "unknown" in w] == [
        f"task 'T': {CONFIG}: [Notify] AfterFailure: unknown key, ignored (did you mean AfterFailures?)"
    ]


# ---------------------------------------------------------------------------------------------- policy
def fact(outcome: str, streak: int = 0, *, final: bool = True, run: str = "r") -> RunFact:
    return RunFact(task="T", run_id=run, outcome=outcome, final=final, consecutive_failures=streak)


def replay(outcomes: list[tuple[str, bool]], settings: NotifySettings) -> list[list[str]]:
    """Feed outcomes (with a streak counter like the history keeps) and collect each verdict's events."""
    state, streak, seen = StreakState(), 0, []
    for outcome, final in outcomes:
        if final and outcome == "ok":
            streak = 0
        elif final and outcome in ("failed", "timeout", "crashed", "memory", "env-failed"):
            streak += 1
        verdict = decide_notices(fact(outcome, streak, final=final), settings=settings, state=state)
        state = verdict.state
        seen.append([e.value for e in verdict.events])
    return seen


def test_failure_once_when_the_streak_reaches_after_failures_then_exactly_one_recovery() -> None:
    settings = NotifySettings(after_failures=3)
    seq = [("failed", True)] * 5 + [("ok", True), ("ok", True)]
    assert replay(seq, settings) == [[], [], ["failure"], [], [], ["recovery"], []]


def test_a_short_streak_below_the_threshold_is_neither_failure_nor_recovery() -> None:
    seq = [("failed", True), ("ok", True), ("timeout", True), ("crashed", True), ("ok", True)]
    assert replay(seq, NotifySettings(after_failures=3)) == [[], [], [], [], []]


def test_retried_attempts_notify_nobody_and_ping_nothing() -> None:
    settings = NotifySettings(after_failures=1, ping_url="http://x/p", on=frozenset(NotifyEvent) - {NotifyEvent.TEST})
    verdict = decide_notices(fact("failed", 0, final=False), settings=settings, state=StreakState())
    assert verdict.events == () and verdict.ping_suffix is None and verdict.state == StreakState()
    seq = [("failed", False), ("failed", False), ("failed", True), ("failed", False), ("ok", True)]
    assert replay(seq, NotifySettings()) == [[], [], ["failure"], [], ["recovery"]]


def test_success_only_when_asked_and_never_together_with_recovery() -> None:
    settings = NotifySettings(on=frozenset({NotifyEvent.SUCCESS, NotifyEvent.RECOVERY, NotifyEvent.FAILURE}))
    assert replay([("ok", True), ("failed", True), ("ok", True), ("ok", True)], settings) == [
        ["success"],
        ["failure"],
        ["recovery"],
        ["success"],
    ]
    assert replay([("ok", True)], NotifySettings()) == [[]]


def test_other_outcomes_neither_extend_nor_end_a_streak() -> None:
    seq = [("failed", True), ("killed", True), ("skipped", True), ("interrupted", True), ("ok", True)]
    assert replay(seq, NotifySettings()) == [["failure"], [], [], [], ["recovery"]]


def test_state_after_restart_comes_from_the_recorded_streak() -> None:
    settings = NotifySettings(after_failures=2)
    alarmed = StreakState.from_streak(5, after_failures=2)
    assert decide_notices(fact("failed", 6), settings=settings, state=alarmed).events == ()
    assert decide_notices(fact("ok"), settings=settings, state=alarmed).events == (NotifyEvent.RECOVERY,)
    assert not StreakState.from_streak(1, after_failures=2).alarmed


def test_pings_follow_the_healthchecks_protocol() -> None:
    settings = NotifySettings(ping_url="https://hc.example/uuid")
    assert ping_url(settings, "/start") == "https://hc.example/uuid/start"
    assert decide_notices(fact("ok"), settings=settings, state=StreakState()).ping_suffix == ""
    assert decide_notices(fact("memory", 1), settings=settings, state=StreakState()).ping_suffix == "/fail"
    assert decide_notices(fact("killed"), settings=settings, state=StreakState()).ping_suffix is None
    assert ping_url(NotifySettings(), "/start") is None


# ---------------------------------------------------------------------------------------------- text
LOG = """2026-01-01 10:00:00,000 INFO    [run A1] started (schedule)
2026-01-01 10:00:00,100 INFO    [run B2] started (schedule)
2026-01-01 10:00:01,000 INFO    [run A1] line one
2026-01-01 10:00:02,000 ERROR   [run A1] traceback:
Traceback (most recent call last):
  ValueError: boom
2026-01-01 10:00:02,500 INFO    [run B2] other run
"""


def test_run_lines_pick_the_runs_records_with_their_continuations() -> None:
    assert run_lines(LOG, "A1") == [LOG.splitlines()[i] for i in (0, 2, 3, 4, 5)]


def test_tail_keeps_the_last_lines_within_the_byte_budget() -> None:
    lines = [f"line {i:03d}" for i in range(100)]
    assert tail(lines, max_lines=20, max_bytes=4096).splitlines() == lines[-20:]
    small = tail(lines, max_lines=None, max_bytes=30)
    assert small.splitlines() == lines[-3:] and len(small.encode()) <= 30
    assert len(tail(["x" * 10_000], max_lines=20, max_bytes=4096).encode()) <= 4096


def test_notice_names_everything_and_masks_secrets() -> None:
    masker = Masker(["s3cr3t-token", "short"])
    f = RunFact(
        task="Backup",
        run_id="20260101T100000-abc",
        outcome="failed",
        attempt=2,
        consecutive_failures=3,
        duration_s=1.5,
        exit_code=1,
        message="token s3cr3t-token refused" + "x" * 3000,
    )
    lines = [f"log {i} s3cr3t-token" for i in range(30)]
    notice = render(f, NotifyEvent.FAILURE, origin=Origin("box", Path("/srv/home")), log_lines=lines, mask=masker.mask)
    assert notice.title == "Backup failed (failed)"
    for part in (
        "host: box",
        "home: /srv/home",
        "task: Backup",
        "run: 20260101T100000-abc",
        "attempt: 2",
        "outcome: failed (3 failed runs in a row)",
        "duration: 1.50 s",
        "exit code: 1",
        "log 29 ***",
        "token *** refused",
    ):
        assert part in notice.body
    assert "s3cr3t-token" not in notice.body and "log 9 " not in notice.body and "log 10 " in notice.body
    assert len(notice.message.encode()) <= 1024
    assert (
        render(f, NotifyEvent.RECOVERY, origin=Origin("b", Path("/")), log_lines=[], mask=str).title
        == "Backup recovered"
    )
    body = ping_body([f"{i} s3cr3t-token " + "y" * 200 for i in range(200)], mask=masker.mask)
    assert len(body) <= 10 * 1024 and b"s3cr3t-token" not in body


def test_mask_url_hides_passwords_and_tokens() -> None:
    assert (
        mask_url("https://user:pw123456@hc.example:8443/ping/uuid-secret?x=1") == "https://user:***@hc.example:8443/***"
    )
    assert "pw123456" not in mask_url("mailto://user:pw123456@example.org?to=a@b.org")
    assert "123456789:AAbbccddeeffgg" not in mask_url("tgram://123456789:AAbbccddeeffgg/12345")
    assert mask_url("http://127.0.0.1:80") == "http://127.0.0.1:80"


# ---------------------------------------------------------------------------------------------- secrets
def test_masker_masks_long_values_longest_first() -> None:
    masker = Masker(["abcdef", "abcdefghij", "12345", ""])
    assert masker.mask("x abcdefghij y abcdef z 12345") == "x *** y *** z 12345"
    assert not Masker(["short"]) and Masker(["short"]).mask("short") == "short"


def test_masker_is_one_regex_pass_for_many_secrets() -> None:
    secrets = [f"secret-value-{i:04d}" for i in range(2000)]
    masker = Masker(secrets)
    text = "\n".join(f"line {s} end" for s in secrets[::7])
    masked = masker.mask(text)
    assert "secret-value" not in masked and masked.count("***") == len(secrets[::7])


def test_env_files_merge_task_wins_and_shadowed_values_stay_masked(tmp_path: Path) -> None:
    home_env, task_env = tmp_path / ".env", tmp_path / "task.env"
    home_env.write_text("API_KEY=home-key-123\nSHARED=from-home-long\n")
    task_env.write_text("# comment\nexport API_KEY='task-key-456'\nEMPTY\nQUOTED=\"a b c d e f\"\n")
    os.chmod(home_env, 0o600)
    os.chmod(task_env, 0o600)
    secrets = load_secrets(home_env, task_env, task="T")
    assert dict(secrets.values) == {"API_KEY": "task-key-456", "SHARED": "from-home-long", "QUOTED": "a b c d e f"}
    assert secrets.warnings == ()
    assert secrets.masker().mask("home-key-123 task-key-456") == "*** ***"


def test_env_readable_by_others_is_a_warning_naming_the_file_never_the_value(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("TOKEN=topsecretvalue\nnot a binding\n")
    os.chmod(env, 0o644)
    values, warnings = read_env_file(env, task="T")
    assert values == {"TOKEN": "topsecretvalue"}
    assert any(f"task 'T': {env}: readable by group/others (mode 0644)" in w for w in warnings)
    assert any(f"{env}: line 2:" in w for w in warnings)
    assert not any("topsecretvalue" in w for w in warnings)
    os.chmod(env, 0o600)
    assert not any("group/others" in w for w in read_env_file(env)[1])
    assert read_env_file(tmp_path / "missing.env") == ({}, [])


def test_a_fifo_env_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / ".env"
    os.mkfifo(fifo)
    values, warnings = read_env_file(fifo)
    assert values == {} and "not a regular file" in warnings[0]


def test_secret_store_rereads_a_changed_env_and_warns_once_per_change(tmp_path: Path) -> None:
    from supervisor.execution.secrets import SecretStore

    home_env = tmp_path / ".env"
    task_env = tmp_path / "T.env"
    home_env.write_text("A=first-value\n")
    os.chmod(home_env, 0o640)
    warnings: list[str] = []
    store = SecretStore(home_env, lambda task: task_env, warn=warnings.append)
    secrets, masker = store.get("T")
    assert dict(secrets.values) == {"A": "first-value"} and masker.mask("first-value") == "***"
    assert store.get("T")[1] is masker and len(warnings) == 1  # unchanged: cached, not warned again
    task_env.write_text("A=second-value-longer\n")
    secrets, masker = store.get("T")
    assert dict(secrets.values) == {"A": "second-value-longer"}
    assert masker.mask("first-value second-value-longer") == "*** ***"
    assert len(warnings) == 2
