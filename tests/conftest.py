"""Shared fixtures. The autouse leftover check fails any test that leaves a process behind."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Iterator

import psutil
import pytest

# Every process a test starts inherits this cookie through the environment, including processes
# that escaped their parents (setsid + double fork), so /proc can be searched for all of them.
COOKIE_VAR = "TASKAUTOMATION_TEST_COOKIE"
COOKIE = uuid.uuid4().hex
os.environ[COOKIE_VAR] = COOKIE
# Tests never touch the network: a stray install that tries an index fails fast instead of hanging.
os.environ.setdefault("UV_OFFLINE", "1")
os.environ.setdefault("PIP_NO_INDEX", "1")
# Hermetic: a home the user exported for their own supervisor must not leak into tests that omit --home.
os.environ.pop("TASKAUTOMATION_HOME", None)

from supervisor.execution.procscan import find_by_environ, own_start_ticks  # noqa: E402
from tests.support.receivers import HangingReceiver, HttpReceiver  # noqa: E402

# Every process this session starts is younger than this one: older processes are never read at all.
SESSION_START_TICKS = own_start_ticks()


def processes_with_cookie() -> list[psutil.Process]:
    """Live (non-zombie) processes other than this one that carry this session's cookie.

    Never hangs on a stranger: only processes younger than the session are looked at, and each environment
    is read with a deadline (a process in D state can block a plain read of /proc/PID/environ for minutes).
    """
    found = []
    needle = f"{COOKIE_VAR}={COOKIE}".encode()
    for pid in find_by_environ(needle, not_before=SESSION_START_TICKS).matches:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Fail the test if any process it started (child, grandchild, escapee, zombie child) survives it."""
    yield
    deadline = time.monotonic() + 10
    while True:
        me = psutil.Process()
        children = [c for c in me.children(recursive=True)]
        strays = {p.pid: p for p in processes_with_cookie()}
        for child in children:
            strays.setdefault(child.pid, child)
        if not strays or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if strays:
        described = []
        for proc in strays.values():
            try:
                described.append(f"{proc.pid} {proc.status()} {' '.join(proc.cmdline())[:120]}")
                os.kill(proc.pid, signal.SIGKILL)
            except (OSError, psutil.Error):
                pass
        for child in children:  # reap our own zombies so the next test starts clean
            try:
                os.waitpid(child.pid, os.WNOHANG)
            except OSError:
                pass
        pytest.fail("test left processes behind:\n" + "\n".join(described))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME with a Tasks/ folder."""
    (tmp_path / "Tasks").mkdir()
    return tmp_path


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    """A notification/ping receiver on 127.0.0.1 that records what it is sent."""
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def hanging() -> Iterator[HangingReceiver]:
    """A receiver on 127.0.0.1 that accepts connections and never answers."""
    receiver = HangingReceiver()
    yield receiver
    receiver.close()
