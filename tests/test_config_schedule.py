"""config.ini scheduling keys (Cron, RunAt, TimeZone, JitterSeconds) and [Retry]: values, defaults, errors.

Every bad value must name the task, the file, the section, the key and the value (README, config.ini).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from tests.support.config_support import PREFIX, error_of, parse

from supervisor.config.schema import parse_home_config
from supervisor.errors import ConfigError
from supervisor.model import Outcome, RetryPolicy


def test_seed_config_is_an_interval_task_with_the_new_defaults():
    spec = parse("[Frequency]\nEveryXMinutes = 15\n").spec
    assert spec.every == timedelta(minutes=15)
    assert (spec.cron, spec.run_at, spec.time_zone, spec.jitter_s) == (None, (), None, 0.0)
    assert spec.retry == RetryPolicy()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30 7 * * mon-fri", "30 7 * * mon-fri"),
        ("  */15   9-17 * * 1-5 ", "*/15 9-17 * * 1-5"),
        ("0 0 1 JAN *", "0 0 1 JAN *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_cron_values(text, expected):
    spec = parse(f"[Frequency]\nCron = {text}\n").spec
    assert spec.cron == expected and spec.every is None


def test_keys_are_case_insensitive():
    spec = parse(
        "[frequency]\ncron = @daily\ntimezone = Europe/Berlin\njitterseconds = 5\n[RETRY]\nattempts = 2\n"
    ).spec
    assert (spec.cron, spec.time_zone, spec.jitter_s, spec.retry.attempts) == ("0 0 * * *", "Europe/Berlin", 5.0, 2)


def test_run_at_values_are_sorted_and_distinct():
    spec = parse("[Frequency]\nRunAt = 2026-12-31 23:59, 2026-12-24 18:00,2026-12-24T18:00\n").spec
    assert spec.run_at == (datetime(2026, 12, 24, 18, 0), datetime(2026, 12, 31, 23, 59))
    assert spec.every is None and spec.cron is None


def test_retry_values_and_home_defaults_with_the_task_winning():
    home, warnings = parse_home_config(
        "[Retry]\nAttempts = 2\nDelaySeconds = 5\nOn = failed, memory\n", path=Path("/home/pi/taskautomation.ini")
    )
    assert warnings == ()
    assert home.retry == RetryPolicy(attempts=2, delay_s=5, on=frozenset({Outcome.FAILED, Outcome.MEMORY}))
    spec = parse(
        "[Frequency]\nEveryXMinutes = 5\n[Retry]\nAttempts = 4\nBackoff = 1.5\nMaxDelaySeconds = 60\n",
        retry_defaults=home.retry,
    ).spec
    assert spec.retry == RetryPolicy(
        attempts=4, delay_s=5, backoff=1.5, max_delay_s=60, on=frozenset({Outcome.FAILED, Outcome.MEMORY})
    )


def test_no_schedule_key_names_all_three():
    message = error_of("[Frequency]\nTimeZone = UTC\n")
    assert message.startswith(PREFIX + "[Frequency] EveryXMinutes missing")
    assert "Cron" in message and "RunAt" in message


@pytest.mark.parametrize(
    "keys, named",
    [
        ("EveryXMinutes = 5\nCron = @daily\n", "EveryXMinutes and Cron"),
        ("Cron = @daily\nRunAt = 2026-12-24 18:00\n", "Cron and RunAt"),
        ("EveryXMinutes = 5\nRunAt = 2026-12-24 18:00\n", "EveryXMinutes and RunAt"),
    ],
)
def test_two_schedule_keys_are_an_error_naming_them(keys, named):
    message = error_of(f"[Frequency]\n{keys}")
    assert message.startswith(PREFIX + f"[Frequency] {named} are both set")
    assert "exactly one" in message


def test_three_schedule_keys_are_an_error_naming_them():
    message = error_of("[Frequency]\nEveryXMinutes = 5\nCron = @daily\nRunAt = 2026-12-24 18:00\n")
    assert "EveryXMinutes and Cron and RunAt" in message


@pytest.mark.parametrize(
    "section, key, value, reason",
    [
        ("Frequency", "Cron", "61 * * * *", "not a cron expression: bad minute"),
        ("Frequency", "Cron", "0 25 * * *", "not a cron expression: bad hour"),
        ("Frequency", "Cron", "0 0 * *", "4 fields, expected 5"),
        ("Frequency", "Cron", "0 0 * * * *", "6 fields, expected 5"),
        ("Frequency", "Cron", "0 0 30 feb *", "not a cron expression"),
        ("Frequency", "Cron", "* * * * funday", "not a cron expression"),
        ("Frequency", "Cron", "@reboot", "unknown shorthand"),
        ("Frequency", "RunAt", "tomorrow", "is not a local date-time"),
        ("Frequency", "RunAt", "2026-12-24 18:00, 2026-13-01 00:00", "'2026-13-01 00:00' is not a real date-time"),
        ("Frequency", "RunAt", "2026-12-24 25:00", "is not a real date-time"),
        ("Frequency", "RunAt", "2026-12-24 18:00+01:00", "is not a local date-time"),
        ("Frequency", "TimeZone", "Mars/Olympus", "unknown time zone"),
        ("Frequency", "TimeZone", "../../etc/passwd", "unknown time zone"),
        ("Frequency", "JitterSeconds", "-1", "must be 0 or more"),
        ("Frequency", "JitterSeconds", "soon", "not a number"),
        ("Frequency", "JitterSeconds", "90000", "too large"),
        ("Retry", "Attempts", "-1", "must be at least 0"),
        ("Retry", "Attempts", "2.5", "not a whole number"),
        ("Retry", "DelaySeconds", "-5", "must be 0 or more"),
        ("Retry", "DelaySeconds", "nan", "not a finite number"),
        ("Retry", "Backoff", "0.5", "must be at least 1"),
        ("Retry", "Backoff", "-2", "must be at least 1"),
        ("Retry", "MaxDelaySeconds", "-1", "must be 0 or more"),
        ("Retry", "On", "failed, ok", "'ok' is not an outcome that can be retried"),
        ("Retry", "On", "kaput", "'kaput' is not an outcome that can be retried"),
        ("Retry", "On", " , ", "empty"),
    ],
)
def test_every_bad_value_names_task_file_section_key_and_value(section, key, value, reason):
    schedule = "" if key in ("Cron", "RunAt") else "EveryXMinutes = 5\n"
    text = f"[Frequency]\n{schedule}" + (
        f"{key} = {value}\n" if section == "Frequency" else f"[{section}]\n{key} = {value}\n"
    )
    message = error_of(text)
    assert message.startswith(PREFIX + f"[{section}] {key} = {value.strip()!r}: "), message
    assert reason in message


def test_bad_home_retry_value_names_the_home_file():
    with pytest.raises(ConfigError) as caught:
        parse_home_config("[Retry]\nBackoff = 0\n", path=Path("/home/pi/taskautomation.ini"))
    assert str(caught.value).startswith("/home/pi/taskautomation.ini: [Retry] Backoff = '0': must be at least 1")


def test_unknown_retry_key_is_a_warning_with_a_hint():
    result = parse("[Frequency]\nEveryXMinutes = 5\n[Retry]\nAttempt = 2\n")
    assert any("[Retry] Attempt: unknown key, ignored (did you mean Attempts?)" in w for w in result.warnings)


@pytest.mark.parametrize(
    "cron, window, meets",
    [
        ("0 3 * * *", ("10:00", "11:00"), False),
        ("*/20 9,17 * * mon", ("10:00", "16:00"), False),
        ("0 3 * * *", ("22:00", "04:00"), True),
        ("* * * * *", ("10:00", "10:00"), True),
        ("59 10 * * *", ("10:00", "10:59"), True),
        ("0 11 * * *", ("10:00", "10:59"), False),
    ],
)
def test_a_cron_whose_slots_never_meet_the_window_is_an_error(cron, window, meets):
    text = f"[Frequency]\nCron = {cron}\nAllowedFrom = {window[0]}\nAllowedTo = {window[1]}\n"
    if meets:
        assert parse(text).spec.cron == cron
    else:
        message = error_of(text)
        assert message.startswith(PREFIX + f"[Frequency] Cron = {cron!r}: no slot lies inside the window")
        assert f"({window[0]}-{window[1]})" in message
