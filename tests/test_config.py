"""config.ini and taskautomation.ini parsing: values, defaults, warnings, and the shape of every error."""

from __future__ import annotations

import os
from datetime import time, timedelta
from pathlib import Path

import pytest
from tests.support.config_support import PREFIX, error_of, parse

from supervisor.config.schema import parse_home_config, parse_task_config, read_home_config, read_task_config
from supervisor.errors import ConfigError
from supervisor.model import CatchUp, HomeConfig, Limits, Window

FULL_SEED = """\
[Frequency]
EveryXMinutes = 15
AllowedFrom = 08:00
AllowedTo = 18:30

[Global]
Enabled = True
Testing = False
RunOnStartup = True
"""


def test_full_seed_config_parses_without_warnings():
    result = parse(FULL_SEED)
    assert result.warnings == ()
    spec = result.spec
    assert spec.name == "demo"
    assert spec.every == timedelta(minutes=15)
    assert spec.window == Window(time(8, 0), time(18, 30))
    assert (spec.enabled, spec.testing, spec.run_on_startup) == (True, False, True)
    assert spec.catch_up is CatchUp.ONCE
    assert spec.limits == Limits()


def test_minimal_config_uses_documented_defaults_and_warns_about_each_seed_key():
    result = parse("[Frequency]\nEveryXMinutes = 60\n")
    spec = result.spec
    assert spec.window == Window(time(0, 0), time(23, 59))
    assert (spec.enabled, spec.testing, spec.run_on_startup) == (True, False, False)
    assert result.warnings == (
        PREFIX + "[Frequency] AllowedFrom missing: using default 00:00",
        PREFIX + "[Frequency] AllowedTo missing: using default 23:59",
        PREFIX + "[Global] missing: using defaults Enabled = True, Testing = False, RunOnStartup = False",
    )


def test_a_single_missing_seed_key_is_named_with_its_default():
    text = FULL_SEED.replace("Testing = False\n", "")
    assert parse(text).warnings == (PREFIX + "[Global] Testing missing: using default False",)


def test_missing_extension_keys_are_silent():
    result = parse(FULL_SEED)
    assert not any("CatchUp" in w or "Limits" in w for w in result.warnings)


def test_sections_and_keys_are_case_insensitive():
    text = (
        "[FREQUENCY]\neveryxminutes = 5\nallowedfrom = 9:05\nALLOWEDTO=10:00\n"
        "[global]\nenabled = NO\nTESTING = on\nrunonstartup = 1\n"
    )
    result = parse(text)
    assert result.warnings == ()
    assert result.spec.every == timedelta(minutes=5)
    assert result.spec.window == Window(time(9, 5), time(10, 0))
    assert (result.spec.enabled, result.spec.testing, result.spec.run_on_startup) == (False, True, True)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("true", True),
        ("True", True),
        ("YES", True),
        ("1", True),
        ("On", True),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        ("0", False),
        ("off", False),
    ],
)
def test_booleans_accept_every_documented_spelling(text, expected):
    result = parse(FULL_SEED.replace("Enabled = True", f"Enabled = {text}"))
    assert result.spec.enabled is expected


def test_fractional_minutes_are_allowed():
    assert parse("[Frequency]\nEveryXMinutes = 0.5\n").spec.every == timedelta(seconds=30)


def test_percent_signs_and_inline_comments_do_not_break_parsing():
    text = (
        FULL_SEED.replace("EveryXMinutes = 15", "EveryXMinutes = 15 ; every quarter hour")
        + "[Notes]\nurl = https://example.org/?q=100%25&x=%(y)s # a comment\n"
    )
    result = parse(text)
    assert result.spec.every == timedelta(minutes=15)
    assert any("[Notes]: unknown section" in w for w in result.warnings)


def test_hash_without_preceding_space_stays_part_of_the_value():
    # '5#3' is not '5': a comment needs whitespace before it, so this is a bad number, not a silent 5.
    assert "EveryXMinutes = '5#3'" in error_of("[Frequency]\nEveryXMinutes = 5#3\n")


def test_default_section_does_not_leak_keys_into_other_sections():
    result = parse("[DEFAULT]\nEnabled = False\n" + FULL_SEED)
    assert result.spec.enabled is True
    assert result.warnings == (PREFIX + "[DEFAULT]: unknown section, ignored",)


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("EveryXMinutes", "abc", "not a positive number"),
        ("EveryXMinutes", "0", "not a positive number"),
        ("EveryXMinutes", "-5", "not a positive number"),
        ("EveryXMinutes", "nan", "not a positive number"),
        ("EveryXMinutes", "inf", "not a positive number"),
        ("EveryXMinutes", "", "not a positive number"),
        ("EveryXMinutes", "1e12", "too large"),
        ("AllowedFrom", "8", "not a time of day"),
        ("AllowedFrom", "24:00", "not a time of day"),
        ("AllowedFrom", "12:60", "not a time of day"),
        ("AllowedFrom", "8:5", "not a time of day"),
        ("AllowedTo", "noon", "not a time of day"),
        ("CatchUp", "always", "not a catch-up policy"),
    ],
)
def test_invalid_frequency_values_name_task_file_section_key_and_value(key, value, reason):
    text = (
        f"[Frequency]\nEveryXMinutes = 15\n{key} = {value}\n"
        if key != "EveryXMinutes"
        else f"[Frequency]\nEveryXMinutes = {value}\n"
    )
    message = error_of(text)
    assert message.startswith(f"{PREFIX}[Frequency] {key} = {value!r}: {reason}")


@pytest.mark.parametrize("key", ["Enabled", "Testing", "RunOnStartup"])
def test_invalid_boolean_is_an_error(key):
    message = error_of(f"[Frequency]\nEveryXMinutes = 1\n[Global]\n{key} = maybe\n")
    assert message.startswith(f"{PREFIX}[Global] {key} = 'maybe': not a boolean")


def test_missing_every_x_minutes_is_an_error():
    assert error_of("[Frequency]\nAllowedFrom = 08:00\n").startswith(
        PREFIX + "[Frequency] EveryXMinutes missing: it is required"
    )
    assert "[Frequency] EveryXMinutes missing (no [Frequency] section)" in error_of("[Global]\nEnabled=1\n")
    assert "[Frequency] EveryXMinutes missing" in error_of("")


def test_catch_up_and_limits_are_parsed():
    text = FULL_SEED + "[Limits]\nTimeoutSeconds = 0\nKillGraceSeconds = 2.5\nMemoryMB = 256\nCPUSeconds = 30\n"
    text = text.replace("[Global]", "CatchUp = Skip\n[Global]")
    spec = parse(text).spec
    assert spec.catch_up is CatchUp.SKIP
    assert spec.limits == Limits(timeout_s=None, kill_grace_s=2.5, memory_mb=256.0, cpu_s=30.0)


def test_zero_memory_and_cpu_mean_no_limit():
    spec = parse(FULL_SEED + "[Limits]\nMemoryMB = 0\nCPUSeconds = 0\n").spec
    assert (spec.limits.memory_mb, spec.limits.cpu_s) == (None, None)


def test_missing_limit_keys_take_the_given_defaults():
    home_limits = Limits(timeout_s=60.0, kill_grace_s=3.0, memory_mb=512.0, cpu_s=None)
    spec = parse(FULL_SEED + "[Limits]\nCPUSeconds = 5\n", defaults=home_limits).spec
    assert spec.limits == Limits(timeout_s=60.0, kill_grace_s=3.0, memory_mb=512.0, cpu_s=5.0)
    assert parse(FULL_SEED, defaults=home_limits).spec.limits == home_limits


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("TimeoutSeconds", "-1", "must be 0 or more"),
        ("TimeoutSeconds", "soon", "not a number"),
        ("KillGraceSeconds", "-0.5", "must be 0 or more"),
        ("MemoryMB", "-3", "must be 0 or more"),
        ("MemoryMB", "1GB", "not a number"),
        ("CPUSeconds", "inf", "not a finite number"),
    ],
)
def test_invalid_limits_are_errors(key, value, reason):
    message = error_of(FULL_SEED + f"[Limits]\n{key} = {value}\n")
    assert message == f"{PREFIX}[Limits] {key} = {value!r}: {reason}"


def test_unknown_key_warns_with_the_closest_known_key():
    result = parse(FULL_SEED.replace("RunOnStartup", "RunOnStartUp").replace("AllowedTo", "AlowedTo"))
    assert PREFIX + "[Frequency] AlowedTo: unknown key, ignored (did you mean AllowedTo?)" in result.warnings
    # The typo does not hide the default being used for the real key.
    assert PREFIX + "[Frequency] AllowedTo missing: using default 23:59" in result.warnings
    # RunOnStartUp differs only by case, so it is the same key and not a warning at all.
    assert not any("RunOnStartUp" in w for w in result.warnings)


def test_unknown_key_without_a_close_match_has_no_suggestion():
    result = parse(FULL_SEED + "Colour = blue\n")
    assert PREFIX + "[Global] Colour: unknown key, ignored" in result.warnings


def test_known_key_in_the_wrong_section_says_where_it_belongs():
    result = parse(FULL_SEED.replace("[Global]\n", "[Global]\nEveryXMinutes = 3\n"))
    assert (
        PREFIX + "[Global] EveryXMinutes: unknown key, ignored (EveryXMinutes belongs in [Frequency])"
        in result.warnings
    )


def test_unknown_section_suggests_the_closest_section():
    result = parse(FULL_SEED + "[Limit]\nMemoryMB = 5\n")
    assert PREFIX + "[Limit]: unknown section, ignored (did you mean [Limits]?)" in result.warnings
    assert result.spec.limits.memory_mb is None


def test_duplicate_section_in_different_case_is_an_error():
    message = error_of(FULL_SEED + "[frequency]\nAllowedTo = 10:00\n")
    assert message.startswith(PREFIX) and "section [frequency] appears twice" in message


def test_exact_duplicate_section_is_an_error_with_its_line():
    message = error_of(FULL_SEED + "[Global]\nTesting = True\n")
    assert message == PREFIX + "line 10: section [Global] appears twice"


def test_duplicate_key_in_different_case_is_an_error():
    message = error_of("[Frequency]\nEveryXMinutes = 5\neveryxminutes = 6\n")
    assert message.startswith(PREFIX) and "everyxminutes appears twice (also as EveryXMinutes)" in message


def test_exact_duplicate_key_is_an_error_with_its_line():
    message = error_of("[Frequency]\nEveryXMinutes = 5\nEveryXMinutes = 6\n")
    assert message == PREFIX + "line 3: [Frequency] EveryXMinutes appears twice"


def test_syntax_errors_name_the_line():
    assert error_of("EveryXMinutes = 5\n") == PREFIX + "line 1: 'EveryXMinutes = 5' comes before any [section] header"
    message = error_of("[Frequency]\nEveryXMinutes = 5\njust some words\n")
    assert message.startswith(PREFIX + "line 3: cannot parse 'just some words'")


def test_relative_path_is_shown_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        parse_task_config("[Frequency]\nEveryXMinutes = x\n", task="t", path=Path("Tasks/t/config.ini"))
    assert str(caught.value).startswith(f"task 't': {tmp_path}/Tasks/t/config.ini: [Frequency]")


# --- reading files -----------------------------------------------------------------------------------


def test_read_task_config_accepts_a_utf8_bom(tmp_path):
    path = tmp_path / "config.ini"
    path.write_bytes(b"\xef\xbb\xbf" + FULL_SEED.encode())
    assert read_task_config(path, task="demo").spec.every == timedelta(minutes=15)


def test_read_task_config_rejects_non_utf8_naming_the_file_and_line(tmp_path):
    path = tmp_path / "config.ini"
    path.write_bytes(FULL_SEED.encode() + b"; caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        read_task_config(path, task="demo")
    assert str(caught.value).startswith(f"task 'demo': {path}: line 10: not valid UTF-8")


def test_read_task_config_missing_file_is_an_error(tmp_path):
    path = tmp_path / "config.ini"
    with pytest.raises(ConfigError, match=r"task 'demo': .*config\.ini: cannot read: file does not exist"):
        read_task_config(path, task="demo")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_read_task_config_unreadable_file_is_an_error(tmp_path):
    path = tmp_path / "config.ini"
    path.write_text(FULL_SEED)
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot read: Permission denied"):
        read_task_config(path, task="demo")


def test_read_task_config_on_a_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"task 'demo': .*: is a directory, not a regular file"):
        read_task_config(tmp_path, task="demo")


# --- the home config ---------------------------------------------------------------------------------

HOME_PATH = Path("/srv/ta/taskautomation.ini")


def test_home_config_values_and_limits():
    text = (
        "[Supervisor]\nInstaller = PIP\nKeepRuns = 50\nLogMaxBytes = 2048\nLogBackups = 0\n"
        "OutputCapBytes = 4096\n[Limits]\nTimeoutSeconds = 120\nMemoryMB = 300\n"
    )
    config, warnings = parse_home_config(text, path=HOME_PATH)
    assert warnings == ()
    assert config == HomeConfig(
        installer="pip",
        keep_runs=50,
        log_max_bytes=2048,
        log_backups=0,
        output_cap_bytes=4096,
        limits=Limits(timeout_s=120.0, kill_grace_s=10.0, memory_mb=300.0),
    )


def test_home_config_empty_is_all_defaults_without_warnings():
    assert parse_home_config("", path=HOME_PATH) == (HomeConfig(), ())


@pytest.mark.parametrize(
    "section, key, value, reason",
    [
        ("Supervisor", "Installer", "conda", "not an installer (use uv or pip)"),
        ("Supervisor", "KeepRuns", "0", "must be at least 1"),
        ("Supervisor", "KeepRuns", "1.5", "not a whole number"),
        ("Supervisor", "LogMaxBytes", "1000", "must be at least 1024"),
        ("Supervisor", "LogBackups", "-1", "must be at least 0"),
        ("Supervisor", "OutputCapBytes", "lots", "not a whole number"),
        ("Limits", "KillGraceSeconds", "-1", "must be 0 or more"),
        ("Supervisor", "WatchDebounceSeconds", "0.01", "must be at least 0.05 (seconds)"),
        ("Supervisor", "WatchDebounceSeconds", "soon", "not a number"),
        ("Supervisor", "WatchDebounceSeconds", "nan", "not a finite number"),
        ("Supervisor", "MaxConcurrentRuns", "0", "must be at least 1"),
        ("Supervisor", "MaxConcurrentRuns", "many", "not a whole number"),
        ("Supervisor", "Launcher", "vfork", "must be one of spawn, fork"),
    ],
)
def test_home_config_errors_name_file_section_key_and_value(section, key, value, reason):
    with pytest.raises(ConfigError) as caught:
        parse_home_config(f"[{section}]\n{key} = {value}\n", path=HOME_PATH)
    assert str(caught.value) == f"{HOME_PATH}: [{section}] {key} = {value!r}: {reason}"


def test_home_config_launcher_default_and_values():
    assert HomeConfig().launcher == "fork"  # where the platform cannot, the start-up falls back to spawn
    assert parse_home_config("[Supervisor]\nLauncher = Fork\n", path=HOME_PATH)[0].launcher == "fork"
    assert parse_home_config("[supervisor]\nlauncher = spawn\n", path=HOME_PATH)[0].launcher == "spawn"


def test_home_config_max_concurrent_runs_default_and_value():
    assert HomeConfig().max_concurrent_runs == 8 * (os.cpu_count() or 1)
    assert parse_home_config("[supervisor]\nmaxconcurrentruns = 3\n", path=HOME_PATH)[0].max_concurrent_runs == 3


def test_home_config_watch_debounce_default_and_value():
    assert HomeConfig().watch_debounce_s == 1.0
    assert parse_home_config("[Supervisor]\nWatchDebounceSeconds = 0.3\n", path=HOME_PATH)[0].watch_debounce_s == 0.3
    # The smallest accepted value is accepted, and the key is case-insensitive like every other.
    assert parse_home_config("[supervisor]\nwatchdebounceseconds = 0.05\n", path=HOME_PATH)[0].watch_debounce_s == 0.05


def test_home_config_unknown_keys_and_sections_warn():
    _, warnings = parse_home_config("[Supervisor]\nKeepRun = 5\n[Extra]\n", path=HOME_PATH)
    assert warnings == (
        f"{HOME_PATH}: [Supervisor] KeepRun: unknown key, ignored (did you mean KeepRuns?)",
        f"{HOME_PATH}: [Extra]: unknown section, ignored",
    )


def test_read_home_config_missing_file_is_defaults(tmp_path):
    assert read_home_config(tmp_path / "taskautomation.ini") == (HomeConfig(), ())


def test_read_home_config_reads_the_file(tmp_path):
    path = tmp_path / "taskautomation.ini"
    path.write_text("[supervisor]\nkeepruns = 7\n")
    assert read_home_config(path)[0].keep_runs == 7


def test_read_home_config_invalid_utf8_names_the_file(tmp_path):
    path = tmp_path / "taskautomation.ini"
    path.write_bytes(b"[Supervisor]\nKeepRuns = \xff\n")
    with pytest.raises(ConfigError) as caught:
        read_home_config(path)
    assert str(caught.value).startswith(f"{path}: line 2: not valid UTF-8")


def test_home_limits_become_task_defaults():
    config, _ = parse_home_config("[Limits]\nTimeoutSeconds = 0\nCPUSeconds = 9\n", path=HOME_PATH)
    spec = parse(FULL_SEED, defaults=config.limits).spec
    assert spec.limits == Limits(timeout_s=None, kill_grace_s=10.0, memory_mb=None, cpu_s=9.0)
