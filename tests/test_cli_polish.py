"""The CLI as a newcomer meets it — the right home, times with zones, --version and help, run-now
--wait, history filters, strict requirements validation, `new` that starts disabled, an 80-column coloured
status, and task logs whose every line names its run.

Commands run as subprocesses, as a user types them; TTY behaviour is checked on a real pseudo-terminal
(pty) and piped. Supervisors are real processes (tests/support/harness.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import secrets
import struct
import subprocess
import sys
import termios
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from tests.support.harness import REPO, SupervisorProcess, cli, script
from tests.support.helpers import wait_for, write_task

from supervisor.history.store import HistoryStore
from supervisor.model import Outcome, RunRecord, Trigger
from supervisor.paths import Paths

pytestmark = pytest.mark.timeout(180)

HOURLY = "[Frequency]\nEveryXMinutes = 60\n"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RED, GREEN, YELLOW, RESET = "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[0m"


# ---------------------------------------------------------------------------------------------- helpers
def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without a home, colour or width setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("TASKAUTOMATION_HOME", "NO_COLOR", "COLUMNS", "TZ")}
    env.update(extra)
    return env


def run(args: list[str], *, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m supervisor ARGS`` piped, without an implicit --home."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def in_pty(args: list[str], *, env: dict[str, str], columns: int = 80) -> tuple[int, str]:
    """Run ``python -m supervisor ARGS`` with stdout and stderr on a pseudo-terminal; (exit code, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it (the command ended)
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode().replace("\r\n", "\n")


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def seed(
    home: Path, task: str, *, started: datetime, outcome: Outcome = Outcome.OK, message: str = "seeded"
) -> RunRecord:
    """One finished run in the home's history, as an earlier supervisor would have written it."""
    record = RunRecord(
        run_id=f"{started:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}",
        task=task,
        trigger=Trigger.SCHEDULE,
        started=started,
        due=started,
        finished=started + timedelta(seconds=2),
        outcome=outcome,
        duration_s=2.0,
        exit_code=0 if outcome is Outcome.OK else 1,
        message=message,
    )
    with HistoryStore(Paths(home).database) as records:
        records.record_instant(record)
    return record


def history_json(home: Path, *args: str) -> list[dict[str, Any]]:
    result = cli(home, "history", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["runs"]


# ---------------------------------------------------------------------------------------------- 1. the home
def test_home_is_named_or_the_current_folder_only_if_it_holds_tasks(tmp_path: Path) -> None:
    stray = tmp_path / "somewhere"
    stray.mkdir()
    result = run(["status"], cwd=stray)
    line = one_error_line(result)
    assert "no home found" in line and str(stray) in line and "--home" in line and "TASKAUTOMATION_HOME" in line
    assert result.stdout == ""

    home = tmp_path / "home"
    write_task(home / "Tasks", "here", config=HOURLY)
    inside = run(["status", "--json"], cwd=home)  # the current folder holds Tasks/: it is the home
    assert inside.returncode == 0, inside.stderr
    assert [t["name"] for t in json.loads(inside.stdout)["tasks"]] == ["here"]

    other = tmp_path / "other"
    write_task(other / "Tasks", "there", config=HOURLY)
    by_env = run(["status", "--json"], cwd=home, env=clean_env(TASKAUTOMATION_HOME=str(other)))
    assert [t["name"] for t in json.loads(by_env.stdout)["tasks"]] == ["there"]  # the variable beats the folder
    by_flag = run(["status", "--json", "--home", str(home)], cwd=stray, env=clean_env(TASKAUTOMATION_HOME=str(other)))
    assert [t["name"] for t in json.loads(by_flag.stdout)["tasks"]] == ["here"]  # --home beats the variable


@pytest.mark.parametrize(
    "args",
    [["status"], ["status", "--json"], ["history", "x"], ["logs", "x"], ["validate"], ["run-now", "x"], ["stop"]],
)
def test_missing_home_or_a_file_is_one_line_and_exit_1(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "nope"
    line = one_error_line(run([*args, "--home", str(missing)]))
    assert f"home {missing} (from --home) does not exist" in line
    assert not missing.exists()  # only run and new create a home

    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    line = one_error_line(run(args, env=clean_env(TASKAUTOMATION_HOME=str(a_file))))
    assert f"home {a_file} (from TASKAUTOMATION_HOME) is not a folder" in line


def test_run_and_new_create_a_missing_home_and_say_so(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh" / "home"
    created = run(["new", "first", "--home", str(fresh)])
    assert created.returncode == 0, created.stderr
    assert f"created the home {fresh} (from --home)" in created.stderr
    assert (fresh / "Tasks" / "first" / "main.py").is_file()

    started = tmp_path / "started" / "home"
    console = tmp_path / "console.txt"
    with open(console, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "main.py"), "--home", str(started)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "supervisor started" in console.read_text(), timeout=30, what="the supervisor to start")
    finally:
        stop = script("terminate.py", started)
        proc.wait(timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert f"created the home {started} (from --home)" in console.read_text()
    assert (started / "Tasks").is_dir()


def test_main_py_and_terminate_py_default_to_their_own_folder(tmp_path: Path) -> None:
    # Seed behaviour (docs/cli.md, "The home"): run from anywhere, the scripts' home is the folder they are in.
    stop = subprocess.run(
        [sys.executable, str(REPO / "terminate.py")],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert f"no supervisor is running on {REPO}" in one_error_line(stop)


# ---------------------------------------------------------------------------------------------- 2. zones
def test_every_time_shown_carries_its_zone_and_utc_switches_tables(home: Path) -> None:
    write_task(home / "Tasks", "t", config=HOURLY)
    seed(home, "t", started=datetime(2026, 1, 15, 12, 0, 5, tzinfo=timezone.utc))
    new_york = clean_env(TZ="America/New_York")
    local = run(["history", "t", "--home", str(home)], env=new_york)
    assert local.returncode == 0, local.stderr
    assert "07:00 EST" in local.stdout and "12:00" not in local.stdout
    utc = run(["history", "t", "--utc", "--home", str(home)], env=new_york)
    assert "12:00 UTC" in utc.stdout and "EST" not in utc.stdout

    status = run(["status", "--home", str(home)], env=new_york)
    assert "07:00 EST" in status.stdout
    assert "12:00 UTC" in run(["status", "--utc", "--home", str(home)], env=new_york).stdout
    summer = seed(home, "t", started=datetime(2026, 7, 15, 12, 0, 5, tzinfo=timezone.utc))
    assert summer.run_id in (rows := run(["history", "t", "--home", str(home)], env=new_york).stdout)
    assert "08:00 EDT" in rows  # the offset of that moment, not of today


def test_live_status_why_and_log_lines_carry_zones(home: Path) -> None:
    write_task(home / "Tasks", "t", config=HOURLY)
    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="t", timeout=60)
        task = wait_for(
            lambda: (lambda t: t if t["state"] == "scheduled" and t["last_run"] else None)(sup.task_status("t")),
            timeout=30,
            what="t scheduled after its run",
        )
        human = cli(home, "status", "--why")
    zone = r"(?:[A-Z]{2,5}|[+-]\d{2,4})"
    assert re.search(rf"since its last due time \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {zone}$", task["why"]), task["why"]
    assert re.match(
        rf"supervisor: running \(pid \d+, since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {zone}\)$",
        human.stdout.splitlines()[0],
    ), human.stdout
    row = next(line for line in human.stdout.splitlines() if line.startswith("t "))
    assert len(re.findall(rf"\d\d:\d\d(?::\d\d)? {zone}\b", row)) == 2, row  # next run and last run
    for line in sup.task_log("t").splitlines():
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [+-]\d{4} ", line), line


# ---------------------------------------------------------------------------------------------- 3. version, help
def test_version_on_every_entry_point() -> None:
    from supervisor import __version__

    for argv in ([str(REPO / "main.py")], [str(REPO / "terminate.py")], ["-m", "supervisor"]):
        result = subprocess.run(
            [sys.executable, *argv, "--version"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0 and result.stdout.strip() == f"taskautomation {__version__}", result


def test_help_describes_every_option_with_an_example_per_command() -> None:
    import argparse

    from supervisor.cli.args import SUBCOMMANDS, build_parser, build_single_parser

    parser = build_parser("taskautomation")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(SUBCOMMANDS)
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        assert f"taskautomation {name}" in (command.epilog or ""), f"{name} has no example"
    main_help = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    ).stdout
    assert main_help.startswith("usage: main.py [-h] [--home DIR] [--version]\n"), main_help
    assert "main.py run" not in main_help and "example:" in main_help
    for prog, command in (("main.py", "run"), ("terminate.py", "stop")):
        assert all(a.help for a in build_single_parser(prog, command)._actions)


def test_limit_is_spelled_alike_on_logs_and_history(home: Path) -> None:
    write_task(home / "Tasks", "t", config=HOURLY)
    now = datetime.now(timezone.utc)
    ids = [seed(home, "t", started=now - timedelta(hours=h)).run_id for h in (3, 2, 1)]
    assert [r["run_id"] for r in history_json(home, "t", "-n", "2")] == ids[:0:-1]
    assert [r["run_id"] for r in history_json(home, "t", "--limit", "1")] == ids[2:]
    log = Paths(home).task_log("t")
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(5)))
    assert cli(home, "logs", "t", "-n", "2").stdout == "line 3\nline 4\n"
    assert cli(home, "logs", "t", "--limit", "1").stdout == "line 4\n"


# ---------------------------------------------------------------------------------------------- 4. run-now --wait
CHATTY = """
    import sys

    def main():
        print("working on it")
        print("a warning", file=sys.stderr)
        return "all done"
"""
FAILING = """
    from Tasks.failing import helper

    def main():
        print("about to fail")
        helper.explode()
"""
HELPER = """
    def explode():
        raise RuntimeError("kaboom")
"""
BLOCKING = """
    import os, time
    from pathlib import Path

    def main():
        out = Path(os.environ["TASK_OUTPUT_DIR"])
        deadline = time.monotonic() + 120
        while not (out / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return "released"
"""


def run_id_of(stdout: str) -> str:
    first = stdout.splitlines()[0]
    assert first.startswith("started run "), stdout
    return first.split()[2]


def test_run_now_wait_streams_the_run_and_exits_with_its_outcome(home: Path) -> None:
    never = "[Frequency]\nEveryXMinutes = 600\nAllowedFrom = 00:00\nAllowedTo = 00:00\n"  # only run-now runs it
    write_task(home / "Tasks", "chatty", config=never, main=CHATTY)
    write_task(home / "Tasks", "failing", config=never, main=FAILING, extra={"helper.py": HELPER})
    write_task(home / "Tasks", "blocking", config=never, main=BLOCKING)
    with SupervisorProcess(home) as sup:
        for name in ("chatty", "failing", "blocking"):
            wait_for(lambda: sup.task_status(name)["state"] == "scheduled", timeout=60, what=f"{name} loaded")

        ok = cli(home, "run-now", "chatty", "--wait")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        run_id = run_id_of(ok.stdout)
        body = ok.stdout.splitlines()[1:-1]
        assert all(f"[run {run_id}]" in line for line in body), body
        assert any(line.endswith("working on it") for line in body) and any("a warning" in line for line in body)
        assert re.fullmatch(rf"run {run_id} of 'chatty': ok in \d+\.\d\d s: all done", ok.stdout.splitlines()[-1])
        assert [r["outcome"] for r in sup.history("chatty")] == ["ok"]

        failed = cli(home, "run-now", "failing", "--wait")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        run_id = run_id_of(failed.stdout)
        assert "about to fail" in failed.stdout and "RuntimeError: kaboom" in failed.stdout
        assert failed.stdout.splitlines()[-1].startswith(f"run {run_id} of 'failing': failed in ")
        assert failed.stdout.splitlines()[-1].endswith("RuntimeError: kaboom")

        gave_up = cli(home, "run-now", "blocking", "--wait", "--timeout", "1")
        line = one_error_line(gave_up)
        run_id = run_id_of(gave_up.stdout)
        assert f"run {run_id} of 'blocking' has not finished after 1 s" in line
        assert sup.task_status("blocking")["state"] == "running"  # giving up does not stop the run
        (home / "Tasks" / "blocking" / "Output" / "release").touch()
        sup.wait_log(f"[run {run_id}] ok in", task="blocking")

    usage = cli(home, "run-now", "chatty", "--timeout", "5")
    assert usage.returncode == 2 and "--timeout needs --wait" in usage.stderr


def test_run_now_wait_ends_when_the_supervisor_dies_under_it(home: Path) -> None:
    write_task(
        home / "Tasks",
        "blocking",
        config="[Frequency]\nEveryXMinutes = 600\nAllowedFrom = 00:00\nAllowedTo = 00:00\n",
        main=BLOCKING,
    )
    sup = SupervisorProcess(home).start()
    try:
        wait_for(lambda: sup.task_status("blocking")["state"] == "scheduled", timeout=60, what="blocking loaded")
        waiter = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run-now", "blocking", "--wait", "--home", str(home)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Kill only once the CLI holds the run id (its first line): killing the supervisor while it is still
        # writing the reply to run-now is a different failure, reported as an "unreadable reply".
        assert waiter.stdout is not None
        first = waiter.stdout.readline()
        assert first.startswith("started run "), first
        sup.wait_log("started (manual)", task="blocking")
        sup.kill()  # SIGKILL: the run's row stays open
        out, err = waiter.communicate(timeout=60)
        out = first + out
    finally:
        sup.kill()
    assert waiter.returncode == 1, (out, err)
    assert "the supervisor stopped before run" in err and len(err.strip().splitlines()) == 1


def test_history_filters_by_outcome_and_since(home: Path) -> None:
    write_task(home / "Tasks", "t", config=HOURLY)
    old_fail = seed(home, "t", started=datetime(2026, 10, 20, 8, tzinfo=timezone.utc), outcome=Outcome.FAILED)
    new_fail = seed(home, "t", started=datetime(2026, 11, 5, 8, tzinfo=timezone.utc), outcome=Outcome.FAILED)
    timeout = seed(home, "t", started=datetime(2026, 11, 6, 8, tzinfo=timezone.utc), outcome=Outcome.TIMEOUT)
    ok = seed(home, "t", started=datetime(2026, 11, 7, 8, tzinfo=timezone.utc))

    def ids(*args: str) -> list[str]:
        return [r["run_id"] for r in history_json(home, "t", *args)]

    assert ids("--outcome", "failed") == [new_fail.run_id, old_fail.run_id]
    assert ids("--outcome", "failed", "--since", "2026-11-01") == [new_fail.run_id]
    assert ids("--outcome", "failed,timeout") == [timeout.run_id, new_fail.run_id, old_fail.run_id]
    assert ids("--outcome", "ok", "--outcome", "timeout") == [ok.run_id, timeout.run_id]
    assert ids("--since", "2026-11-06T08:00+00:00") == [ok.run_id, timeout.run_id]
    assert ids("--outcome", "failed", "-n", "1") == [new_fail.run_id]  # the filter applies before the limit
    assert ids("--outcome", "memory") == []
    human = cli(home, "history", "t", "--outcome", "failed", "--since", "2026-11-01")
    assert human.returncode == 0 and new_fail.run_id in human.stdout and old_fail.run_id not in human.stdout
    bad = cli(home, "history", "t", "--outcome", "broken")
    assert bad.returncode == 2 and "outcomes are ok, failed" in bad.stderr
    assert cli(home, "history", "t", "--since", "last tuesday").returncode == 2


# ---------------------------------------------------------------------------------------------- 5. validate
def test_validate_parses_requirements_like_pip_and_names_the_line(home: Path) -> None:
    tasks = home / "Tasks"
    write_task(
        tasks,
        "good",
        config=HOURLY,
        requirements=(
            "# pinned\n--no-index\n--find-links ./wheels\n-i https://example.invalid/simple\n--pre\n"
            "--only-binary :all:\nrequests [security] >= 2.8.1, == 2.8.* ; python_version < '2.7'\n"
            "urllib3 @ https://example.invalid/urllib3.zip\n./local-pkg\nabc==1.0 --hash=sha256:00\n-r more.txt\n"
            "numpy \\\n  ==1.26.*\n"
        ),
        extra={"more.txt": "six\n"},
    )
    write_task(
        tasks,
        "bad",
        config=HOURLY,
        requirements=(
            "requests>=\nfine==1\nfoo bar baz\n# comment\nnumpy==1.26.*.x\n--frobnicate\n--index-url\n"
            "-r missing.txt\n--no-index stray\n"
        ),
    )
    result = cli(home, "validate")
    assert result.returncode == 1
    out = result.stdout
    assert "ok    good" in out and "FAIL  bad" in out, out
    reqs = tasks / "bad" / "requirements.txt"
    errors = [line.strip() for line in out.splitlines() if "error:" in line]
    expected = [
        (1, "'requests>='", "not a valid requirement"),
        (3, "'foo bar baz'", "not a valid requirement"),
        (5, "'numpy==1.26.*.x'", "not a valid requirement"),
        (6, "'--frobnicate'", "no such option"),
        (7, "'--index-url'", "requires 1 argument"),
        (8, "'-r missing.txt'", "does not exist"),
        (9, "'--no-index stray'", "unexpected 'stray'"),
    ]
    assert len(errors) == len(expected), errors
    for error, (number, text, why) in zip(errors, expected):
        assert f"task 'bad': {reqs}: line {number}: {text}: " in error and why in error, error
    assert out.splitlines()[-1] == f"2 task(s) checked, {len(expected)} problem(s)"
    assert "ok    good" in cli(home, "validate", "good").stdout


# ---------------------------------------------------------------------------------------------- 6. new
def test_new_warns_about_names_starts_disabled_and_says_who_picks_it_up(home: Path) -> None:
    offline = cli(home, "new", "Fetch-Weather-02")
    assert offline.returncode == 0, offline.stderr
    assert "not a Python identifier" in offline.stderr and "'Fetch_Weather_02'" in offline.stderr
    assert f"no supervisor is running on {home}" in offline.stdout
    config = (home / "Tasks" / "Fetch-Weather-02" / "config.ini").read_text()
    assert re.search(r"^Enabled = False$", config, re.MULTILINE)
    assert "set Enabled = True when main() is ready" in config
    assert cli(home, "new", "class").stderr.startswith("warning: 'class' is not a Python identifier")

    with SupervisorProcess(home) as sup:
        fine = cli(home, "new", "fetch_weather")
        assert fine.returncode == 0 and fine.stderr == ""
        assert "the running supervisor picks that change up" in fine.stdout
        wait_for(
            lambda: any(t["name"] == "fetch_weather" for t in sup.status()["tasks"]),
            timeout=30,
            what="the new task to be seen",
        )
        assert sup.task_status("fetch_weather")["state"] == "disabled"
        assert cli(home, "validate", "fetch_weather").returncode == 0

        config_path = home / "Tasks" / "fetch_weather" / "config.ini"
        config_path.write_text(config_path.read_text().replace("Enabled = False", "Enabled = True"))
        sup.wait_log("returned: nothing to do yet", task="fetch_weather", timeout=60)  # enabled: it runs
    assert [r["trigger"] for r in sup.history("Fetch-Weather-02")] == []  # the disabled one never ran


# ---------------------------------------------------------------------------------------------- 7. status
def status_home(home: Path) -> None:
    """Twelve tasks with long names and seeded runs of every colour, one broken task."""
    now = datetime.now(timezone.utc) - timedelta(minutes=5)
    for i, outcome in enumerate([Outcome.OK, Outcome.FAILED, Outcome.TIMEOUT, Outcome.SKIPPED] * 3):
        name = f"task_number_{i:02d}_with_a_rather_long_descriptive_name"
        write_task(home / "Tasks", name, config=HOURLY)
        seed(home, name, started=now, outcome=outcome)
    write_task(home / "Tasks", "broken", config="[Frequency]\nEveryXMinutes = often\n")


def test_status_fits_80_columns_and_is_plain_when_piped(home: Path) -> None:
    status_home(home)
    piped = run(["status", "--home", str(home)])
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    table_lines = [line for line in lines if not line.startswith(("task 'broken'", "supervisor: "))]
    assert max(len(line) for line in table_lines) <= 80, piped.stdout
    rows = [line for line in lines if line.startswith("task_number_")]
    assert len(rows) == 12 and all("…" in row.split()[0] for row in rows)
    assert "\x1b[" not in piped.stdout
    wide = run(["status", "--home", str(home)], env=clean_env(COLUMNS="200"))
    assert "task_number_00_with_a_rather_long_descriptive_name" in wide.stdout


def test_status_colours_outcomes_on_a_terminal_unless_no_color(home: Path) -> None:
    status_home(home)
    code, output = in_pty(["status", "--home", str(home)], env=clean_env())
    assert code == 0, output
    rows = {line.split()[0][:14]: line for line in output.splitlines() if line.startswith("task_number_")}
    assert f"{GREEN}ok{RESET}" in rows["task_number_00"]
    assert f"{RED}failed{RESET}" in rows["task_number_01"]
    assert f"{YELLOW}timeout{RESET}" in rows["task_number_02"]
    assert f"{YELLOW}skipped{RESET}" in rows["task_number_03"]
    plain_rows = [ANSI.sub("", line) for line in output.splitlines() if "task_number_" in line]
    assert max(map(len, plain_rows)) <= 80  # colour codes do not count against the width
    # Columns line up once the colour codes are removed: OUTCOME starts at the same offset in every row.
    header = next(ANSI.sub("", line) for line in output.splitlines() if line.startswith("TASK"))
    column = header.index("OUTCOME")
    assert all(row[column - 2 : column] == "  " and row[column] != " " for row in plain_rows)

    code, plain = in_pty(["status", "--home", str(home)], env=clean_env(NO_COLOR="1"))
    assert code == 0 and "\x1b[" not in plain
    assert ANSI.sub("", output) == plain  # the same text, only without colour


def test_status_prints_errors_before_why_and_why_in_full_on_request(home: Path) -> None:
    closed = f"{(datetime.now() + timedelta(hours=2)):%H}:00"  # a one-minute window two hours from now
    write_task(home / "Tasks", "hourly", config=HOURLY + "[Global]\nRunOnStartup = True\n")
    write_task(home / "Tasks", "windowed", config=f"{HOURLY}AllowedFrom = {closed}\nAllowedTo = {closed}\n")
    write_task(home / "Tasks", "broken", config="[Frequency]\nEveryXMinutes = often\n")
    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="hourly")
        wait_for(lambda: sup.task_status("hourly")["state"] == "scheduled", timeout=30, what="hourly idle")
        short = run(["status", "--home", str(home)], env=clean_env(COLUMNS="60")).stdout
        full = run(["status", "--why", "--home", str(home)], env=clean_env(COLUMNS="60")).stdout
    lines = short.splitlines()
    error = next(i for i, line in enumerate(lines) if line.startswith("task 'broken': "))
    assert error < lines.index("why:"), short
    why = lines[lines.index("why:") + 1 :]
    assert [line.split(":")[0].strip() for line in why] == ["windowed"]  # hourly is plainly scheduled
    assert why[0].endswith("…") and len(why[0]) == 60  # cut to the width
    full_why = full.splitlines()[full.splitlines().index("why:") + 1 :]
    assert [line.split(":")[0].strip() for line in full_why] == ["broken", "hourly", "windowed"]
    assert any(line.startswith("  hourly: every 60 min since its last due time") for line in full_why)
    assert next(line for line in full_why if "windowed" in line).endswith("window")  # not cut


# ---------------------------------------------------------------------------------------------- 8. task logs
LOGGED = """
    import sys, traceback
    from Tasks.failing import helper

    def main():
        print("about to fail")
        try:
            helper.explode()
        except RuntimeError:
            traceback.print_exc()
        print("to stderr", file=sys.stderr)
        helper.explode()
"""


def test_every_log_line_of_a_run_names_it_and_tracebacks_start_in_the_task(home: Path) -> None:
    write_task(home / "Tasks", "failing", config=HOURLY, main=LOGGED, extra={"helper.py": HELPER})
    with SupervisorProcess(home) as sup:
        lines = sup.wait_log("failed in", task="failing", timeout=60).splitlines()
        # The outcome line is logged as the row is queued for the history writer: wait for the row itself.
        wait_for(lambda: [r for r in sup.history("failing") if r["outcome"]], what="the run's history row")
        (run,) = sup.history("failing")
    tag = f"[run {run['run_id']}]"
    first = next(i for i, line in enumerate(lines) if f"{tag} started" in line)
    last = next(i for i, line in enumerate(lines) if f"{tag} failed in" in line)
    body = lines[first : last + 1]
    assert all(tag in line for line in body), "\n".join(body)
    assert not any(tag in line for line in lines[:first] + lines[last + 1 :])  # the outcome line ends the run
    assert any(line.endswith(f"{tag} to stderr") for line in body)
    assert sum(line.endswith(f"{tag} Traceback (most recent call last):") for line in body) == 2  # printed + raised
    assert "_shim.py" not in "\n".join(lines) and "_shim.py" not in run["message"]
    frames = re.findall(r'File "([^"]+)"', run["message"])
    assert frames[0].endswith("Tasks/failing/main.py") and frames[-1].endswith("Tasks/failing/helper.py"), frames
    assert run["message"].startswith("Traceback (most recent call last):\n")
