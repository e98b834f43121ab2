"""sd_notify end to end: a real supervisor talks to a datagram socket the test binds (as systemd would), and a
loop blocked on purpose stops its WATCHDOG pings."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

import pytest
from tests.support.harness import REPO, InProcessSupervisor, script
from tests.support.helpers import wait_for

from supervisor.clock import SystemClock
from supervisor.system.sdnotify import LoopNotifier, SdNotifier

pytestmark = pytest.mark.timeout(90)


class Listener:
    """The service manager's side: a bound AF_UNIX datagram socket, read by a thread into a list."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, str]] = []  # (monotonic arrival, datagram)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.got.append((time.monotonic(), data.decode()))

    def messages(self, prefix: str = "", *, since: float = 0.0) -> list[str]:
        with self.lock:
            return [text for at, text in self.got if text.startswith(prefix) and at >= since]

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    own = Listener(tmp_path / "notify.sock")
    yield own
    own.close()


def _task(home: Path, name: str, main: str, every: str = "60") -> None:
    folder = home / "Tasks" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(main)
    (folder / "config.ini").write_text(f"[Frequency]\nEveryXMinutes = {every}\n")


def test_a_real_supervisor_notifies_ready_status_watchdog_and_stopping(home: Path, listener: Listener) -> None:
    _task(
        home,
        "probe",
        "import os\n\ndef main():\n    out = os.environ['TASK_OUTPUT_DIR']\n"
        "    os.makedirs(out, exist_ok=True)\n"
        "    with open(os.path.join(out, 'env.txt'), 'w') as f:\n"
        "        f.write(repr((os.environ.get('NOTIFY_SOCKET'), os.environ.get('WATCHDOG_USEC'))))\n"
        "    return 'seen'\n",
    )
    env = dict(os.environ, NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="1000000")
    console = open(home / "console.txt", "wb")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--home", str(home)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=subprocess.STDOUT,
    )
    console.close()
    try:
        ready = wait_for(lambda: listener.messages("READY=1"), timeout=30, what="READY=1")
        assert ready[0].startswith("READY=1\nSTATUS=1 task(s), ")
        # WATCHDOG_USEC = 1 s: a ping every half second from the loop thread, while nothing else happens.
        wait_for(lambda: len(listener.messages("WATCHDOG=1")) >= 4, timeout=30, what="four WATCHDOG=1 pings")
        seen = wait_for(lambda: (home / "Tasks/probe/Output/env.txt").exists(), timeout=30, what="the task ran")
        assert seen and (home / "Tasks/probe/Output/env.txt").read_text() == "(None, None)", (
            "tasks must not inherit systemd's notification variables"
        )
        wait_for(
            lambda: listener.messages("STATUS=1 task(s), 0 running"),
            timeout=30,
            what="a STATUS update after the run ended",
        )
        result = script("terminate.py", home, timeout=60)
        assert result.returncode == 0, result.stderr
        assert proc.wait(timeout=60) == 0
        assert wait_for(lambda: listener.messages("STOPPING=1"), timeout=10, what="STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


class BlockableClock(SystemClock):
    """The real clock, except that the loop thread can be made to hang in it: the test's stand-in for a
    loop stuck in a system call or a deadlock. Other threads are never blocked."""

    def __init__(self, loop_thread_name: str) -> None:
        self.loop_thread_name = loop_thread_name
        self.blocking = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def now(self) -> datetime:
        if self.blocking.is_set() and threading.current_thread().name == self.loop_thread_name:
            self.entered.set()
            self.release.wait(timeout=60)
        return super().now()


def test_a_blocked_loop_sends_no_watchdog_pings_until_it_moves_again(home: Path, listener: Listener) -> None:
    _task(home, "idle", "def main():\n    return 'x'\n", every="600")
    clock = BlockableClock("in-process-supervisor")
    notifier = LoopNotifier(SdNotifier(str(listener.path), watchdog_s=1.0, logger=logging.getLogger("test")))
    with InProcessSupervisor(home, clock=clock, notifier=notifier):
        wait_for(lambda: listener.messages("READY=1"), timeout=30, what="READY=1")
        wait_for(lambda: len(listener.messages("WATCHDOG=1")) >= 3, timeout=30, what="pings from a healthy loop")
        clock.blocking.set()
        assert clock.entered.wait(timeout=30), "the loop thread did not reach the blocked clock"
        blocked_at = time.monotonic()
        # Four ping intervals (0.5 s each) with the loop stuck: a watchdog of 1 s would have fired twice.
        # This waits on the other side of the socket for something that must not come; it is bounded, and
        # nothing else here is timed.
        listener.done.wait(timeout=2.0)
        assert listener.messages("WATCHDOG=1", since=blocked_at) == [], "a hung loop must not ping"
        clock.blocking.clear()
        clock.release.set()
        resumed = time.monotonic()
        wait_for(lambda: listener.messages("WATCHDOG=1", since=resumed), timeout=30, what="pings again")
    assert listener.messages("STOPPING=1")
