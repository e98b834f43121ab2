"""Errors read like the others: virtualenv's failures in words (not its raw argument tuple), and a transient
start failure (EMFILE) logged once per try with one wording and a whole number of seconds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for, write_task
from virtualenv.util.error import ProcessCallFailedError
from virtualenv.util.subprocess import run_cmd

from supervisor.envs.installer import describe_virtualenv_error

pytestmark = pytest.mark.timeout(90)


def _failed_call(cmd: list[str]) -> ProcessCallFailedError:
    """What virtualenv raises when a command it runs fails: its own run_cmd on a real command."""
    code, out, err = run_cmd(cmd)
    assert code != 0
    return ProcessCallFailedError(code, out, err, cmd)


def test_a_program_that_cannot_be_run_reads_as_words(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "python3"
    exc = _failed_call([str(missing), "-c", "pass"])
    assert str(exc).startswith("(2, '', ")  # the raw tuple users saw
    text = describe_virtualenv_error(exc)
    assert text == f"cannot run {missing}: [Errno 2] No such file or directory: '{missing}'"


def test_a_program_that_failed_reads_with_its_exit_code_and_reason() -> None:
    exc = _failed_call([sys.executable, "-c", "import sys; print('noise'); sys.exit('venv: cannot copy lib64')"])
    text = describe_virtualenv_error(exc)
    assert text.startswith(f"{sys.executable} failed (exit 1): ")
    assert "venv: cannot copy lib64" in text and "\n" not in text and "(1," not in text


def test_other_virtualenv_errors_keep_their_message_on_one_line() -> None:
    assert describe_virtualenv_error(RuntimeError("failed to find\n  interpreter")) == "failed to find interpreter"
    assert describe_virtualenv_error(SystemExit(2)) == "virtualenv refused its command line (exit 2)"
    assert describe_virtualenv_error(RuntimeError()) == "RuntimeError"


def _soft_nofile(pid: int, soft: int | str) -> None:
    subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={soft}:"], check=True, timeout=10)


def _hard_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as handle:
        line = next(line for line in handle if line.startswith("Max open files"))
    return int(line.split()[4])


def test_emfile_at_spawn_is_one_line_per_try_in_whole_seconds(home: Path) -> None:
    """The running supervisor's soft fd limit is lowered to what it holds, so every start of a run fails
    with EMFILE; then the limit is given back and the run starts."""
    write_task(home / "Tasks", "often", config="[Frequency]\nEveryXMinutes = 0.02\n")
    with SupervisorProcess(home) as sup:
        assert sup.proc is not None
        pid = sup.proc.pid
        sup.wait_log("ok in", task="often")
        hard = _hard_nofile(pid)
        _soft_nofile(pid, len(os.listdir(f"/proc/{pid}/fd")) + 1)
        try:
            sup.wait_log("Too many open files", count=2, timeout=30)
        finally:
            _soft_nofile(pid, hard)
        ok_before = sup.task_log("often").count("ok in")
        wait_for(lambda: sup.task_log("often").count("ok in") > ok_before, timeout=30, what="a run after the limit")
        log = sup.log()
    failures = [line for line in log.splitlines() if "Too many open files" in line]
    assert failures
    retry = re.compile(r"; a transient failure: trying again in \d+ (s|min( \d+ s)?)$")
    assert all(retry.search(line) for line in failures), failures
    assert "retrying in" not in log
    # One line per failed try: no two lines for the same try (same second, same text).
    assert len(failures) == len(set(failures)), failures
