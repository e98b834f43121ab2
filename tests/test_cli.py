"""End to end: history that survives restarts, and the CLI as a user types it.

Every command runs as a subprocess (``python -m supervisor ...``); supervisors are real processes on a
temporary home (tests/support/harness.py). Times in the JSON documents are compared with each other (due +
interval == next_run), never against how long something took.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from tests.support.harness import REPO, SupervisorProcess, cli, pids_alive, script
from tests.support.helpers import wait_for, write_task

from supervisor.history.store import INTERRUPTED_MESSAGE, HistoryStore
from supervisor.model import Outcome, RunRecord, Trigger
from supervisor.paths import Paths

pytestmark = pytest.mark.timeout(180)

HOURLY = "[Frequency]\nEveryXMinutes = 60\n"
DAILY = "[Frequency]\nEveryXMinutes = 1440\n"
OUTCOMES = {"ok", "failed", "timeout", "memory", "killed", "crashed", "skipped", "testing", "env-failed", "interrupted"}
# The contract keys of docs/cli.md, plus the documented additions (docs/cli.md): "running" per task, "supervisor" on top.
STATUS_KEYS = {"tasks", "supervisor", "offline"}
TASK_KEYS = {
    "name",
    "enabled",
    "state",
    "next_run",
    "last_run",
    "error",
    "running",
    "why",
    "consecutive_failures",
    "schedule",
    "paused",
    "after",
    "downstream",
    "output_retention",
}
LAST_RUN_KEYS = {"run_id", "started", "finished", "outcome", "duration_s", "exit_code", "message", "reason", "slots"}
RUN_KEYS = {
    "run_id",
    "task",
    "trigger",
    "due",
    "started",
    "finished",
    "outcome",
    "duration_s",
    "exit_code",
    "signal",
    "message",
    "peak_rss_mb",
    "cpu_s",
    "log_path",
    "attempt",
    "retry_of",
    "reason",
    "slots",
    "upstream",
    "params",
}

# main() that blocks until the test creates Output/release (bounded, so a failing test cannot hang it).
BLOCKING_MAIN = """
    import os, time
    from pathlib import Path

    def main():
        out = Path(os.environ["TASK_OUTPUT_DIR"])
        (out / "started").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not (out / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return "released"
"""


# ---------------------------------------------------------------------------------------------- helpers
def when(text: str | None) -> datetime:
    """An ISO-8601 time from the JSON output; it must carry its offset."""
    assert text is not None
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None and value.utcoffset() is not None, text
    return value


def seed_run(home: Path, task: str, *, due: datetime, trigger: Trigger = Trigger.SCHEDULE) -> RunRecord:
    """Write one finished run into the home's history, as a supervisor that ran earlier would have."""
    record = RunRecord(
        run_id=f"{due:%Y%m%dT%H%M%S}-seeded-{secrets.token_hex(3)}",
        task=task,
        trigger=trigger,
        started=due,
        due=due,
        finished=due + timedelta(seconds=1),
        outcome=Outcome.OK,
        duration_s=1.0,
        exit_code=0,
        message="seeded",
    )
    with HistoryStore(Paths(home).database) as records:
        records.record_instant(record)
    return record


def json_of(home: Path, *args: str) -> dict[str, Any]:
    result = cli(home, *args, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def task_of(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in status["tasks"] if t["name"] == name)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a failed command's contract: exit 1, one line on stderr, no traceback. Returns the line."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def table(stdout: str, header: tuple[str, ...]) -> list[list[str]]:
    """Cut an aligned table into cells at the header's column starts, checking the alignment."""
    lines = stdout.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith(header[0] + " "))
    starts = [lines[top].index(title) for title in header]
    assert starts == sorted(starts), lines[top]
    rows = []
    for line in lines[top + 1 :]:
        if not line.strip():
            break
        for start in starts[1:]:  # every cell begins exactly under its title, after a gap
            assert line[start - 1] == " " and line[start : start + 1] not in ("", " "), (line, start)
        bounds = [*starts, len(line)]
        rows.append([line[bounds[i] : bounds[i + 1]].strip() for i in range(len(starts))])
    return rows


def wait_scheduled(sup: SupervisorProcess, name: str) -> dict[str, Any]:
    return wait_for(
        lambda: (lambda t: t if t["state"] == "scheduled" and t["next_run"] else None)(sup.task_status(name)),
        timeout=60,
        what=f"{name} scheduled",
    )


# ---------------------------------------------------------------------------------------------- schedule
def test_restart_does_not_rerun_a_fresh_daily_task(home: Path) -> None:
    write_task(home / "Tasks", "daily", config=DAILY)
    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="daily", timeout=60)  # never ran: due at once
        first = sup.history("daily")
    assert [(r["trigger"], r["outcome"]) for r in first] == [("schedule", "ok")]
    due = when(first[0]["due"])
    assert due <= when(first[0]["started"])
    with SupervisorProcess(home) as sup:
        task = wait_scheduled(sup, "daily")
        # The interval counts from the persisted due time of the first run, not from this start.
        assert when(task["next_run"]) == due + timedelta(minutes=1440)
        assert sup.history("daily") == first
    assert sup.task_log("daily").count("started (schedule)") == 1


def test_run_missed_while_down_runs_once_or_is_skipped(home: Path) -> None:
    five_hours_ago = datetime.now(timezone.utc) - timedelta(hours=5)
    write_task(home / "Tasks", "catch up", config=HOURLY)  # CatchUp = once is the default
    write_task(home / "Tasks", "skipper", config=HOURLY + "CatchUp = skip\n")
    seeded = seed_run(home, "catch up", due=five_hours_ago)
    skipped = seed_run(home, "skipper", due=five_hours_ago)
    with SupervisorProcess(home) as sup:
        runs = wait_for(
            lambda: (lambda h: h if len(h) == 3 and all(r["outcome"] for r in h) else None)(sup.history("catch up")),
            timeout=60,
            what="the catch-up run",
        )
        (catch_up,) = [r for r in runs if r["outcome"] == "ok" and r["run_id"] != seeded.run_id]
        assert catch_up["trigger"] == "schedule"
        # One run for five missed slots: the catch-up stands for the latest, one missed row for the other four.
        (missed,) = [r for r in runs if r["outcome"] == "missed"]
        assert (missed["reason"], missed["slots"]) == ("down", 4)
        assert seeded.due is not None and when(missed["due"]) == seeded.due + timedelta(hours=1)
        # The next run is a full interval after the catch-up's due time.
        assert when(wait_scheduled(sup, "catch up")["next_run"]) == when(catch_up["due"]) + timedelta(minutes=60)
        assert len(sup.history("catch up")) == 3

        skipper = wait_scheduled(sup, "skipper")
        next_run = when(skipper["next_run"])
        assert next_run > datetime.now(timezone.utc)  # nothing due now: no immediate run
        assert (next_run - five_hours_ago) % timedelta(minutes=60) == timedelta(0)  # on the old grid
        assert next_run - five_hours_ago == timedelta(hours=6)  # the first slot not in the past
        history = sup.history("skipper")
        assert [r["run_id"] for r in history if r["outcome"] != "missed"] == [skipped.run_id]  # nothing ran
        assert [(r["reason"], r["slots"]) for r in history if r["outcome"] == "missed"] == [("down", 5)]
    assert "started (" not in sup.task_log("skipper")


# ---------------------------------------------------------------------------------------------- status/history
def _check_status_document(status: dict[str, Any]) -> None:
    assert set(status) == STATUS_KEYS
    for task in status["tasks"]:
        assert set(task) == TASK_KEYS, task
        assert isinstance(task["name"], str) and isinstance(task["enabled"], bool)
        assert task["error"] is None or isinstance(task["error"], str)
        if task["next_run"] is not None:
            when(task["next_run"])
        last = task["last_run"]
        if last is not None:
            assert set(last) == LAST_RUN_KEYS
            assert last["outcome"] in OUTCOMES
            when(last["started"]), when(last["finished"])


def test_status_and_history_json_shapes_live_and_offline(home: Path) -> None:
    write_task(home / "Tasks", "good", config=HOURLY, main="def main():\n    return 'all good'\n")
    write_task(home / "Tasks", "broken", config="[Frequency]\nEveryXMinutes = often\n")
    write_task(home / "Tasks", "off", config=HOURLY + "[Global]\nEnabled = False\n")
    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="good", timeout=60)
        live = wait_for(
            lambda: (lambda s: s if task_of(s, "good")["last_run"] else None)(json_of(home, "status")),
            timeout=30,
            what="good's last run in status",
        )
        human = cli(home, "status")
    _check_status_document(live)
    assert live["supervisor"]["pid"] == sup.proc.pid and live["supervisor"]["home"] == str(home)
    assert [t["name"] for t in live["tasks"]] == ["broken", "good", "off"]
    good, broken, off = (task_of(live, n) for n in ("good", "broken", "off"))
    assert good["state"] == "scheduled" and good["enabled"] is True and good["error"] is None
    assert good["last_run"]["outcome"] == "ok" and good["last_run"]["message"] == "all good"
    assert good["last_run"]["exit_code"] == 0 and good["last_run"]["duration_s"] > 0
    assert when(good["next_run"]) > when(good["last_run"]["started"])
    assert broken["state"] == "error" and "EveryXMinutes = 'often'" in broken["error"]
    assert off["state"] == "disabled" and off["enabled"] is False and off["next_run"] is None

    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith(f"supervisor: running (pid {sup.proc.pid}")
    rows = table(human.stdout, ("TASK", "STATE", "NEXT RUN", "LAST RUN", "OUTCOME", "DURATION"))
    assert [r[:2] for r in rows] == [["broken", "error"], ["good", "scheduled"], ["off", "disabled"]]
    assert rows[1][4] == "ok" and rows[1][5].endswith(" s") and rows[0][2:] == ["-", "-", "-", "-"]
    # The current error is printed under the table, once (it names the task itself).
    assert "\ntask 'broken': " in human.stdout and "broken: task 'broken'" not in human.stdout

    runs = json_of(home, "history", "good")
    assert set(runs) == {"runs"} and len(runs["runs"]) == 1
    run = runs["runs"][0]
    assert set(run) == RUN_KEYS
    assert run["task"] == "good" and run["trigger"] == "schedule" and run["outcome"] in OUTCOMES
    assert run["log_path"] == str(Paths(home).task_log("good"))
    assert when(run["due"]) <= when(run["started"]) <= when(run["finished"])
    assert {k: run[k] for k in LAST_RUN_KEYS} == good["last_run"]

    # Offline: the same shapes, answered from the configs and the database.
    offline = json_of(home, "status")
    _check_status_document(offline)
    assert offline["supervisor"] is None
    assert [(t["name"], t["state"], t["next_run"], t["running"]) for t in offline["tasks"]] == [
        ("broken", "error", None, None),
        ("good", "stopped", None, None),
        ("off", "disabled", None, None),
    ]
    assert task_of(offline, "good")["last_run"] == good["last_run"]
    assert "EveryXMinutes = 'often'" in task_of(offline, "broken")["error"]
    assert json_of(home, "history", "good") == runs
    assert json_of(home, "history", "off") == {"runs": []}  # a task without runs: empty, not an error

    human = cli(home, "history", "good")
    assert human.returncode == 0, human.stderr
    rows = table(human.stdout, ("RUN", "TRIGGER", "STARTED", "OUTCOME", "DURATION", "PEAK MB", "MESSAGE"))
    assert len(rows) == 1 and rows[0][0] == run["run_id"] and rows[0][1:2] == ["schedule"]
    assert rows[0][3] == "ok" and rows[0][6] == "all good"


def test_history_newest_first_and_limit(home: Path) -> None:
    write_task(home / "Tasks", "t", config=HOURLY)
    now = datetime.now(timezone.utc)
    ids = [seed_run(home, "t", due=now - timedelta(hours=h)).run_id for h in (3, 2, 1)]
    runs = json_of(home, "history", "t")["runs"]
    assert [r["run_id"] for r in runs] == ids[::-1]
    limited = json_of(home, "history", "t", "--limit", "2")["runs"]
    assert [r["run_id"] for r in limited] == ids[:0:-1]


# ---------------------------------------------------------------------------------------------- run-now
def test_run_now(home: Path) -> None:
    write_task(home / "Tasks", "manual", config=HOURLY, main=BLOCKING_MAIN)
    seeded = seed_run(home, "manual", due=datetime.now(timezone.utc) - timedelta(minutes=1))  # not due now
    output = home / "Tasks" / "manual" / "Output"
    with SupervisorProcess(home) as sup:
        before = wait_scheduled(sup, "manual")
        assert when(before["next_run"]) == seeded.due + timedelta(minutes=60)

        started = cli(home, "run-now", "manual")
        assert started.returncode == 0, started.stderr
        wait_for((output / "started").exists, timeout=30, what="the manual run to start")
        run_id = started.stdout.split()[2]
        assert started.stdout.strip() == f"started run {run_id} of 'manual'"
        assert sup.task_status("manual")["state"] == "running"
        assert sup.task_status("manual")["running"]["trigger"] == "manual"

        again = cli(home, "run-now", "manual")
        line = one_error_line(again)
        assert f"task 'manual' is already running (run {run_id})" in line
        assert again.stdout == ""

        (output / "release").touch()
        sup.wait_log(f"[run {run_id}] ok", task="manual", timeout=30)
        after = wait_scheduled(sup, "manual")
        assert after["next_run"] == before["next_run"]  # manual runs do not move the schedule
        runs = sup.history("manual")
        assert [(r["run_id"], r["trigger"], r["outcome"], r["message"]) for r in runs] == [
            (run_id, "manual", "ok", "released"),
            (seeded.run_id, "schedule", "ok", "seeded"),
        ]
        assert runs[0]["due"] is None

        unknown = one_error_line(cli(home, "run-now", "nope"))
        assert "no task named 'nope'" in unknown
    stopped = one_error_line(cli(home, "run-now", "manual"))
    assert "no supervisor is running" in stopped and str(home) in stopped


# ---------------------------------------------------------------------------------------------- validate
def test_validate_good_and_bad_homes(home: Path, tmp_path: Path) -> None:
    good_home = tmp_path / "good home"
    (good_home / "Tasks").mkdir(parents=True)
    write_task(good_home / "Tasks", "one", config=HOURLY)
    write_task(
        good_home / "Tasks",
        "two",
        config=HOURLY + "AllowedFrom = 22:00\nAllowedTo = 02:00\n",
        requirements="--no-index\nrequests>=2\n",
    )
    result = cli(good_home, "validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "2 task(s) checked, 0 problem(s)"

    tasks = home / "Tasks"
    write_task(tasks, "fine", config=HOURLY)
    write_task(tasks, "bad interval", config="[Frequency]\nEveryXMinutes = often\n")
    write_task(tasks, "bad flag", config=HOURLY + "[Global]\nTesting = maybe\n")
    write_task(tasks, "bad window", config=HOURLY + "AllowedFrom = 25:00\n")
    write_task(tasks, "bad limit", config=HOURLY + "[Limits]\nTimeoutSeconds = -3\n")
    write_task(tasks, "bad reqs", config=HOURLY, requirements="!!nonsense\n")
    write_task(tasks, "no main", config=HOURLY, main="x = 1\n", initialize=None)
    result = cli(home, "validate")
    assert result.returncode == 1
    out = result.stdout
    expected = {
        "bad interval": ("config.ini", "[Frequency] EveryXMinutes = 'often'"),
        "bad flag": ("config.ini", "[Global] Testing = 'maybe'"),
        "bad window": ("config.ini", "[Frequency] AllowedFrom = '25:00'"),
        "bad limit": ("config.ini", "[Limits] TimeoutSeconds = '-3'"),
        "bad reqs": ("requirements.txt", "'!!nonsense'"),
        "no main": ("main.py", "main()"),
    }
    for name, (filename, needle) in expected.items():
        assert f"FAIL  {name}" in out, out
        line = next(line for line in out.splitlines() if f"task {name!r}:" in line)
        assert str(tasks / name / filename) in line and needle in line, line
    assert "ok    fine" in out
    assert out.splitlines()[-1] == f"7 task(s) checked, {len(expected)} problem(s)"

    only = cli(home, "validate", "fine")
    assert only.returncode == 0 and "1 task(s) checked, 0 problem(s)" in only.stdout
    assert cli(home, "validate", "bad flag").returncode == 1
    assert "no task named 'nope'" in one_error_line(cli(home, "validate", "nope"))
    assert not (home / "logs").exists() and not (home / "envs").exists()  # validate runs and writes nothing


# ---------------------------------------------------------------------------------------------- crash
def test_kill_9_mid_run_marks_the_row_interrupted(home: Path) -> None:
    write_task(home / "Tasks", "long", config=HOURLY, main=BLOCKING_MAIN)
    started = home / "Tasks" / "long" / "Output" / "started"
    sup = SupervisorProcess(home).start()
    try:
        wait_for(started.exists, timeout=60, what="the run to start")
        pid = int(wait_for(started.read_text, timeout=5, what="the run's pid"))
        assert json_of(home, "history", "long")["runs"][0]["outcome"] is None  # open while it runs
    finally:
        sup.kill()
    # The run's monitor sees its pipe close and takes the task down with the supervisor.
    wait_for(lambda: not pids_alive([pid]), timeout=30, what="the orphaned run to die")
    with SupervisorProcess(home) as sup:
        sup.wait_log("was interrupted by a supervisor crash")
        (run,) = sup.history("long")  # interrupted, and not run again: its due time still anchors
        task = wait_scheduled(sup, "long")
    assert run["outcome"] == "interrupted" and run["message"] == INTERRUPTED_MESSAGE
    assert run["finished"] is not None and run["duration_s"] is None
    assert task["last_run"]["outcome"] == "interrupted"
    assert when(task["next_run"]) == when(run["due"]) + timedelta(minutes=60)


# ---------------------------------------------------------------------------------------------- offline
def test_cli_without_a_supervisor(home: Path) -> None:
    write_task(home / "Tasks", "t", config=HOURLY, main="def main():\n    print('hello from t')\n    return 'fine'\n")
    # A home that never had a supervisor: read-only commands answer and create nothing.
    fresh = json_of(home, "status")
    assert [(t["name"], t["state"], t["last_run"]) for t in fresh["tasks"]] == [("t", "stopped", None)]
    assert json_of(home, "history", "t") == {"runs": []}
    assert "has not been loaded" in one_error_line(cli(home, "logs", "t"))
    assert not (home / "logs").exists()

    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="t", timeout=60)
    status = cli(home, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0] == f"supervisor: not running on {home}"
    (row,) = table(status.stdout, ("TASK", "STATE", "NEXT RUN", "LAST RUN", "OUTCOME", "DURATION"))
    assert row[:3] == ["t", "stopped", "-"] and row[4] == "ok"
    offline = json_of(home, "status")
    assert task_of(offline, "t")["state"] == "stopped" and task_of(offline, "t")["last_run"]["message"] == "fine"
    assert [r["outcome"] for r in json_of(home, "history", "t")["runs"]] == ["ok"]
    logs = cli(home, "logs", "t")
    assert logs.returncode == 0 and "hello from t" in logs.stdout and "ok in" in logs.stdout

    assert "no supervisor is running" in one_error_line(cli(home, "run-now", "t"))
    assert "no supervisor is running" in one_error_line(cli(home, "stop"))
    assert "no supervisor is running" in one_error_line(script("terminate.py", home))
    assert "no task named 'x'" in one_error_line(cli(home, "history", "x"))
    assert "no task named 'x'" in one_error_line(cli(home, "logs", "x"))


def test_bad_usage_exits_2(home: Path) -> None:
    for args in (("history",), ("frobnicate",), ("history", "t", "--limit", "many")):
        result = cli(home, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and "usage:" in result.stderr


# ---------------------------------------------------------------------------------------------- new
def test_new_task_validates_and_is_picked_up(home: Path) -> None:
    with SupervisorProcess(home) as sup:
        created = cli(home, "new", "hello", "--enable")  # without --enable it starts disabled (test_cli_polish)
        assert created.returncode == 0, created.stderr
        folder = home / "Tasks" / "hello"
        assert str(folder) in created.stdout
        assert {p.name for p in folder.iterdir()} == {"main.py", "config.ini", "requirements.txt", "Output"}
        valid = cli(home, "validate", "hello")
        assert valid.returncode == 0, valid.stdout
        assert "warning" not in valid.stdout  # the template sets every seed key explicitly
        sup.wait_log("initialize(): hello ready", task="hello", timeout=60)
        sup.wait_log("returned: nothing to do yet", task="hello", timeout=60)
        assert "already exists" in one_error_line(cli(home, "new", "hello"))
        assert "not a valid task folder name" in one_error_line(cli(home, "new", "../escape"))
    assert [r["outcome"] for r in sup.history("hello")] == ["ok"]
    assert not (home / "escape").exists() and not list((home / "Tasks").glob(".new-*"))


# ---------------------------------------------------------------------------------------------- corrupt DB
def test_corrupt_database_is_reported_and_moved_aside(home: Path) -> None:
    write_task(home / "Tasks", "t", config=HOURLY)
    database = Paths(home).database
    database.parent.mkdir(parents=True)
    garbage = bytes(range(256)) * 40
    database.write_bytes(garbage)
    for args in (("history", "t"), ("history", "t", "--json"), ("status",), ("status", "--json")):
        line = one_error_line(cli(home, *args))
        assert str(database) in line and "not a database" in line, line
    assert database.read_bytes() == garbage  # read-only commands never touch it

    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="t", timeout=60)  # the tasks keep running on a fresh history
        log = sup.log()
        runs = sup.history("t")
    (aside,) = database.parent.glob("history.sqlite3.corrupt-*")
    assert aside.read_bytes() == garbage  # kept, not deleted
    assert f"run history {database} is corrupt" in log and str(aside) in log
    assert "ERROR" in next(line for line in log.splitlines() if "is corrupt" in line)
    assert [r["outcome"] for r in runs] == ["ok"]


def test_history_from_a_newer_version_is_refused_not_moved(home: Path) -> None:
    database = Paths(home).database
    HistoryStore(database).close()
    with closing(sqlite3.connect(database)) as conn:
        conn.execute("PRAGMA user_version=99")  # as a newer taskautomation would leave it
    result = script("main.py", home, timeout=60)
    line = one_error_line(result)
    assert "schema version 99" in line and str(database) in line
    assert not list(database.parent.glob("*.corrupt-*"))


# ---------------------------------------------------------------------------------------------- --home
def test_home_before_or_after_the_subcommand_and_from_the_environment(home: Path, tmp_path: Path) -> None:
    write_task(home / "Tasks", "mine", config=HOURLY)
    other = tmp_path / "other"
    write_task(other / "Tasks", "theirs", config=HOURLY)

    def names(args: list[str], env_home: Path | None) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k != "TASKAUTOMATION_HOME"}
        if env_home is not None:
            env["TASKAUTOMATION_HOME"] = str(env_home)
        result = subprocess.run(
            [sys.executable, "-m", "supervisor", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stderr
        return [t["name"] for t in json.loads(result.stdout)["tasks"]]

    assert names(["--home", str(home), "status", "--json"], None) == ["mine"]
    assert names(["status", "--json", "--home", str(home)], None) == ["mine"]
    assert names(["status", "--json"], home) == ["mine"]
    assert names(["--home", str(other), "status", "--json"], home) == ["theirs"]  # --home wins
    assert names(["status", "--home", str(other), "--json"], home) == ["theirs"]

    env = {**os.environ, "TASKAUTOMATION_HOME": str(other)}
    stop = subprocess.run(
        [sys.executable, str(REPO / "terminate.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert f"no supervisor is running on {other}" in one_error_line(stop)


# ---------------------------------------------------------------------------------------------- retention
def test_keep_runs_prunes_while_running(home: Path) -> None:
    (home / "taskautomation.ini").write_text("[Supervisor]\nKeepRuns = 5\n")
    write_task(home / "Tasks", "often", config="[Frequency]\nEveryXMinutes = 0.02\n")  # every 1.2 s
    with SupervisorProcess(home) as sup:

        def pruned_after_eight() -> list[dict[str, Any]] | None:
            runs = sup.history("often")
            return runs if sup.task_log("often").count(" ok in ") >= 8 and len(runs) <= 5 else None

        wait_for(pruned_after_eight, timeout=120, interval=0.2, what="8 runs with at most 5 kept")
    runs = sup.history("often")
    assert len(runs) == 5
    starts = [when(r["started"]) for r in runs]
    assert starts == sorted(starts, reverse=True)
    first_id = sup.task_log("often").split("started (schedule)")[0].rsplit("[run ", 1)[1].split("]")[0]
    assert first_id not in {r["run_id"] for r in runs}  # the oldest went, not the newest


# ---------------------------------------------------------------------------------------------- logs
def test_logs_prints_and_follows(home: Path) -> None:
    write_task(
        home / "Tasks",
        "chatty",
        config=HOURLY,
        main="import os\n\ndef main():\n    print('line from', os.environ['TASK_RUN_ID'])\n    return 'said it'\n",
    )
    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="chatty", timeout=60)
        printed = cli(home, "logs", "chatty")
        assert printed.returncode == 0 and printed.stdout == sup.task_log("chatty")
        last = cli(home, "logs", "chatty", "-n", "1")
        assert last.stdout == sup.task_log("chatty").splitlines(keepends=True)[-1]

        with follow_logs(home, "chatty") as (follower, seen):
            wait_for(lambda: any(" ok in " in line for line in seen), timeout=30, what="the existing log lines")
            started = cli(home, "run-now", "chatty")
            assert started.returncode == 0, started.stderr
            run_id = started.stdout.split()[2]
            wait_for(
                lambda: any(f"line from {run_id}" in line for line in seen),
                timeout=30,
                what="the new run's output in logs -f",
            )
            wait_for(
                lambda: any(f"[run {run_id}] ok" in line for line in seen),
                timeout=30,
                what="the new run's outcome in logs -f",
            )
            assert follower.poll() is None  # still following


@contextmanager
def follow_logs(home: Path, name: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`logs NAME -f` as a user runs it; yields the process and the lines it printed so far."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "logs", name, "-f", "--home", str(home)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(follower.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        yield follower, seen
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        reader.join(timeout=10)
        follower.stdout.close()
        follower.stderr.close()
    assert not reader.is_alive()


def test_run_now_respects_testing_mode(home: Path) -> None:
    write_task(
        home / "Tasks",
        "dry",
        main="def main():\n    open('ran', 'w').write('x')\n",
        config="[Frequency]\nEveryXMinutes = 600\nAllowedFrom = 00:00\nAllowedTo = 00:00\n[Global]\nTesting = True\n",
    )
    with SupervisorProcess(home) as sup:
        wait_for(lambda: sup.task_status("dry")["state"] == "scheduled", timeout=30, what="dry loaded")
        result = cli(home, "run-now", "dry")
        assert result.returncode == 0, result.stderr
        # run-now answers once the run is accepted; its row follows on the loop's next turn.
        runs = wait_for(lambda: sup.history("dry"), timeout=30, what="the manual run's row")
    assert [(r["trigger"], r["outcome"]) for r in runs][0] == ("manual", "testing")
    assert not (home / "ran").exists()


def test_home_too_deep_for_a_socket_path_still_works(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    (deep / "Tasks").mkdir(parents=True)
    write_task(deep / "Tasks", "deep", config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n")
    assert len(str(deep / "logs" / "state" / "control.sock")) > 107
    with SupervisorProcess(deep) as sup:
        sup.wait_log("ok in", task="deep")
        status = cli(deep, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["tasks"][0]["last_run"]["outcome"] == "ok"
    assert not sup.paths.control_socket.exists(), "the socket is removed on a clean stop"


def test_logs_follow_survives_rotation(home: Path) -> None:
    (home / "taskautomation.ini").write_text("[Supervisor]\nLogMaxBytes = 1024\nLogBackups = 1\n")
    # Each run writes well over LogMaxBytes, so every run rotates the task's log at least once.
    write_task(
        home / "Tasks",
        "noisy",
        config=HOURLY,
        main="import os\n\ndef main():\n    for i in range(20):\n"
        "        print('padding line', i, 'x' * 60)\n    print('marker', os.environ['TASK_RUN_ID'])\n",
    )
    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="noisy", timeout=60)
        with follow_logs(home, "noisy") as (_, seen):
            for _ in range(3):
                started = cli(home, "run-now", "noisy")
                assert started.returncode == 0, started.stderr
                run_id = started.stdout.split()[2]
                wait_for(
                    lambda: any(f"marker {run_id}" in line for line in seen),
                    timeout=30,
                    what=f"run {run_id}'s output in logs -f after a rotation",
                )
                wait_for(lambda: sup.task_status("noisy")["state"] != "running", timeout=30, what="run end")
            assert (home / "logs" / "tasks" / "noisy.log.1").exists(), "the log really rotated"


def test_status_explains_why_each_task_is_waiting(home: Path) -> None:
    now = datetime.now()
    closed = f"{(now + timedelta(hours=2)):%H}:00"  # a one-minute window two hours from now
    write_task(home / "Tasks", "hourly", config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n")
    write_task(
        home / "Tasks",
        "windowed",
        config=f"[Frequency]\nEveryXMinutes = 60\nAllowedFrom = {closed}\nAllowedTo = {closed}\n",
    )
    write_task(home / "Tasks", "off", config="[Frequency]\nEveryXMinutes = 60\n[Global]\nEnabled = False\n")
    write_task(
        home / "Tasks",
        "dry",
        config="[Frequency]\nEveryXMinutes = 60\nAllowedFrom = "
        f"{closed}\nAllowedTo = {closed}\n[Global]\nTesting = True\n",
    )
    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="hourly")
        wait_for(lambda: sup.task_status("hourly")["state"] == "scheduled", timeout=30, what="hourly idle")
        why = {t["name"]: t["why"] for t in sup.status()["tasks"]}
        human = cli(home, "status")
    assert why["hourly"].startswith("every 60 min since its last due time")
    assert why["windowed"].startswith("never ran: first run as soon as it is inside its window")
    assert why["off"] == "not loaded: Enabled=False in config.ini"
    assert "Testing=True" in why["dry"]
    assert "  windowed: never ran" in human.stdout
