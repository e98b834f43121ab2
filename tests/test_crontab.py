"""Reading crontabs and converting their jobs (pure): the format of Debian's crontab(5), cron's % rules, which
commands are Python calls, names, the files a job becomes. Fixtures: tests/data/crontab (README there)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.cli import cronfiles
from supervisor.cli.cronjob import (
    dotenv_line,
    identifier,
    job_slug,
    mailto_url,
    python_call,
    split_percent,
    unique_name,
)
from supervisor.cli.crontab import parse_crontab
from supervisor.config.schema import parse_task_config
from supervisor.execution.secrets import read_env_file

DATA = Path(__file__).resolve().parent / "data" / "crontab"


def test_debians_etc_crontab_is_four_jobs_of_root_with_its_variables() -> None:
    crontab = parse_crontab((DATA / "debian-etc-crontab").read_text(), system=True)
    assert crontab.skipped == ()
    assert [(j.line, j.schedule, j.user) for j in crontab.jobs] == [
        (18, "17 * * * *", "root"),
        (19, "25 6 * * *", "root"),
        (20, "47 6 * * 7", "root"),
        (21, "52 6 1 * *", "root"),
    ]
    first = crontab.jobs[0]
    assert first.command == "cd / && run-parts --report /etc/cron.hourly"
    assert first.variable("SHELL") == "/bin/sh"
    assert first.variable("PATH") == "/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin"


def test_the_crontab_5_example_keeps_its_percent_signs_for_the_percent_rules() -> None:
    crontab = parse_crontab((DATA / "debian-crontab.5-example").read_text(), system=False)
    assert crontab.skipped == ()
    assert [j.line for j in crontab.jobs] == [8, 10, 12, 13, 14, 16]
    assert all(j.variable("MAILTO") == "paul" and j.variable("SHELL") == "/bin/sh" for j in crontab.jobs)
    mail = crontab.jobs[2]
    assert split_percent(mail.command) == ('mail -s "It\'s 10pm" joe', "Joe,\n\nWhere are your kids?\n")
    expr = crontab.jobs[5]
    assert split_percent(expr.command) == (
        "expr $(date +%s) / 60 / 60 / 24 % 9 > /dev/null || echo Wax the floor.",
        None,
    )


def test_variables_apply_to_the_lines_below_them_and_quotes_keep_blanks() -> None:
    text = "A=1\n* * * * * one\nA = '2 '\nB=\"x\"\n* * * * * two\n"
    one, two = parse_crontab(text, system=False).jobs
    assert one.env == (("A", "1"),)
    assert two.variable("A") == "2 " and two.variable("B") == "x"


def test_lines_that_cannot_be_imported_are_listed_with_number_and_reason() -> None:
    text = (
        "# comment\n\n"
        "0 0 L * * echo last\n"
        "0 0 15W * * echo weekday\n"
        "0 0 ? * 1 echo quartz\n"
        "0 0 * * 5#2 echo second friday\n"
        "0 0 * * 5L echo last friday\n"
        "61 * * * * echo bad\n"
        "@every 5m echo no\n"
        "* * * *\n"
        "0 12 * jul,aug wed echo names with L and W are names\n"
        "my-var=1\n"
    )
    crontab = parse_crontab(text, system=False)
    reasons = {s.line: s.reason for s in crontab.skipped}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert "'L' (last day)" in reasons[3] and "Debian's cron does not have" in reasons[3]
    assert "'W'" in reasons[4] and "'?'" in reasons[5] and "'#'" in reasons[6] and "'L'" in reasons[7]
    assert "bad minute" in reasons[8] and "unknown shorthand '@every'" in reasons[9]
    assert "not a job" in reasons[10] and "my-var" in reasons[12]
    assert [j.line for j in crontab.jobs] == [11]


def test_system_lines_need_a_user_and_a_command() -> None:
    crontab = parse_crontab("@reboot root\n@daily\tbackup\t/usr/local/bin/backup --all\n", system=True)
    assert [s.line for s in crontab.skipped] == [1]
    (job,) = crontab.jobs
    assert (job.schedule, job.user, job.command) == ("@daily", "backup", "/usr/local/bin/backup --all")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo a", ("echo a", None)),
        ("echo 100\\%", ("echo 100%", None)),
        ("cat%line one%line two", ("cat", "line one\nline two")),
        ("cat%a\\%b%", ("cat", "a%b\n")),
        ("printf '\\n'%x\\y", ("printf '\\n'", "x\\y")),
    ],
)
def test_percent_rules(command: str, expected: tuple[str, str | None]) -> None:
    assert split_percent(command) == expected


def test_python_calls_and_what_needs_a_shell() -> None:
    call = python_call("/usr/bin/python3 -u /opt/jobs/sync.py --since 1h", workdir="/home/u", user_home="/home/u")
    assert call is not None and (call.script, call.module, call.args) == ("/opt/jobs/sync.py", None, ("--since", "1h"))
    call = python_call("python3 ~/bin/warm.py 'a b'", workdir="/w", user_home="/home/u")
    assert call is not None and (call.script, call.args) == ("/home/u/bin/warm.py", ("a b",))
    call = python_call("env python3.12 jobs/report.py", workdir="/home/u", user_home="/home/u")
    assert call is not None and call.script == "/home/u/jobs/report.py"
    call = python_call("/srv/venv/bin/python -m tools.clean --dry", workdir="/", user_home="/root")
    assert call is not None and (call.script, call.module, call.args) == (None, "tools.clean", ("--dry",))
    for shell in (
        "python3 /x.py > /tmp/log 2>&1",
        "python3 /x.py | mail",
        "cd /srv && python3 x.py",
        "FOO=1 python3 /x.py",
        "python3 -c 'print(1)'",
        "python3 -W ignore /x.py",
        "python3 $HOME/x.py",
        "python3",
        "/usr/bin/perl /x.pl",
        "python3 /x.py 'unbalanced",
    ):
        assert python_call(shell, workdir="/", user_home="/root") is None, shell


def test_names_are_identifiers_from_the_command_and_unique() -> None:
    assert job_slug("cd / && run-parts --report /etc/cron.hourly", None) == "run_parts_cron_hourly"
    assert job_slug("test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }", None) == (
        "run_parts_cron_daily"
    )
    assert job_slug("$HOME/bin/daily.job >> $HOME/tmp/out 2>&1", None) == "daily_job"
    call = python_call("python3 /opt/2fa-sync.py", workdir="/", user_home="/")
    assert job_slug("python3 /opt/2fa-sync.py", call) == "job_2fa_sync"
    assert identifier("class") == "class_job" and identifier("!!!") == "cron_job"
    assert all(identifier(x).isidentifier() for x in ("a-b", "9", "ÄÖ", "x" * 100))
    assert unique_name("backup", {"Backup", "backup_2"}) == "backup_3"


def test_env_lines_round_trip_through_python_dotenv(tmp_path: Path) -> None:
    values = {"PLAIN": "/usr/bin:/bin", "QUOTES": 'it\'s "x"', "DOLLAR": "$HOME/$USER", "BACKSLASH": "a\\b\\"}
    env = tmp_path / ".env"
    env.write_text("".join(dotenv_line(k, v) + "\n" for k, v in values.items()))
    os.chmod(env, 0o600)
    read, warnings = read_env_file(env)
    assert (read, warnings) == (values, [])


def test_mailto_becomes_a_mail_notice_through_the_local_server() -> None:
    assert mailto_url("paul") == "mailto://localhost?to=paul@localhost"
    assert mailto_url("a@x.org, b") == "mailto://localhost?to=a@x.org,b@localhost"
    assert mailto_url("") is None


def test_a_reboot_job_is_a_task_that_runs_only_at_startup() -> None:
    (job,) = parse_crontab(
        "MAILTO=ops@example.org\nCRON_TZ=Asia/Tokyo\n@reboot /usr/local/bin/warm\n", system=False
    ).jobs
    settings = cronfiles.job_settings(job)
    text = cronfiles.config_text(job, settings, source="crontab", enable=True)
    spec = parse_task_config(text, task="warm", path=Path("/x/config.ini")).spec
    assert spec.run_on_startup and spec.enabled and spec.cron is None and spec.every is None
    assert spec.catch_up.value == "skip" and spec.time_zone == "Asia/Tokyo"
    assert spec.notify.urls == ("mailto://localhost?to=ops@example.org",)
    assert {e.value for e in spec.notify.on} == {"failure"}
    assert spec.limits.timeout_s is None


def test_variables_other_than_crons_own_go_to_the_env_file() -> None:
    text = "SHELL=/bin/bash\nHOME=/srv\nLOGNAME=x\nMAILTO=\nTZ=UTC\nTOKEN=s3cret value\n* * * * * work\n"
    (job,) = parse_crontab(text, system=False).jobs
    settings = cronfiles.job_settings(job)
    assert (settings.shell, settings.home, settings.notify_url, settings.zone) == ("/bin/bash", "/srv", None, "UTC")
    assert settings.env == (("TZ", "UTC"), ("TOKEN", "s3cret value"))
    spec = parse_task_config(
        cronfiles.config_text(job, settings, source="c", enable=False), task="work", path=Path("/x/config.ini")
    ).spec
    assert not spec.enabled and spec.cron == "* * * * *" and spec.notify.urls == ()


def test_a_value_a_dotenv_would_expand_is_not_passed_on() -> None:
    (job,) = parse_crontab("A=${HOME}/x\nB=$HOME\n* * * * * work\n", system=False).jobs
    assert cronfiles.job_settings(job).env == (("B", "$HOME"),)
