"""Scanning processes by environment never hangs on one that does not answer."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from supervisor.execution.procscan import find_by_environ, own_start_ticks, parse_stat

pytestmark = pytest.mark.timeout(60)


def _stat(pid: int, *, state: str, start: int) -> str:
    # Field 22 (start time) is the 20th field after the ')' that closes the command name.
    rest = [state] + ["0"] * 18 + [str(start)] + ["0"] * 10
    return f"{pid} (odd) name) {' '.join(rest)}\n"


def test_parse_stat_survives_parentheses_in_the_name() -> None:
    parsed = parse_stat(_stat(7, state="D", start=12345))
    assert parsed is not None and parsed.state == "D" and parsed.start_ticks == 12345
    assert parse_stat("garbage") is None


def test_a_process_whose_environment_blocks_is_skipped_not_waited_for(tmp_path: Path) -> None:
    """A FIFO stands in for the environ of a process in D state: opening it blocks, as that read would."""
    proc = tmp_path / "proc"
    needle = b"COOKIE=abc"
    layout = {
        100: ("D", 500, None),  # hangs
        101: ("S", 500, b"A=1\0COOKIE=abc/run1\0"),  # the one we want
        102: ("S", 10, b"COOKIE=abc/old\0"),  # older than not_before: never read
        103: ("Z", 500, b""),  # zombie
        104: ("R", 500, b"COOKIE=other\0"),
    }
    for pid, (state, start, environ) in layout.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(_stat(pid, state=state, start=start))
        if environ is None:
            os.mkfifo(proc / str(pid) / "environ")
        else:
            (proc / str(pid) / "environ").write_bytes(environ)
    try:
        found = find_by_environ(needle, not_before=100, read_timeout_s=0.2, proc=proc)
        assert found.matches == (101,)
        assert found.unreadable == (100,)
    finally:
        # Release the abandoned reader thread: a writer lets its open() return.
        fd = os.open(proc / "100" / "environ", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    stuck = [t for t in threading.enumerate() if t.name == "environ-reader"]
    for thread in stuck:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in stuck)


def test_real_processes_are_found_by_their_environment() -> None:
    marker = f"PROCSCAN_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, env={**os.environ, key: value}
    )
    try:
        found = find_by_environ(marker.encode(), not_before=own_start_ticks())
        assert found.matches == (child.pid,)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
