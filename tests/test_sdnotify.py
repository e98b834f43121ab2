"""sd_notify against a real AF_UNIX datagram socket the test binds (path and abstract names)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from supervisor.system.sdnotify import SdNotifier, socket_address, watchdog_period_s

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket standing in for systemd; yields (NOTIFY_SOCKET value, socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        value = str(tmp_path / "notify.sock")
        sock.bind(value)
    else:
        value = f"@taskautomation-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + value[1:].encode())
    sock.settimeout(5)
    try:
        yield value, sock
    finally:
        sock.close()


def _pending(sock: socket.socket) -> list[str]:
    """Every datagram already queued, without waiting."""
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except BlockingIOError:
        return got
    finally:
        sock.settimeout(5)


def test_ready_status_stopping_arrive_as_datagrams(listener: tuple[str, socket.socket]) -> None:
    value, sock = listener
    notifier = SdNotifier(value)
    try:
        assert notifier.ready("3 tasks, 0 running")
        assert sock.recv(4096) == b"READY=1\nSTATUS=3 tasks, 0 running"
        assert notifier.status("line one\nline two")  # a newline would start a bogus field
        assert sock.recv(4096) == b"STATUS=line one line two"
        assert notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        notifier.close()


def test_watchdog_cadence_is_half_the_period(listener: tuple[str, socket.socket]) -> None:
    value, sock = listener
    notifier = SdNotifier(value, watchdog_s=30.0)
    try:
        assert notifier.wake_interval() == 7.5
        sent = [t for t in (100.0, 101.0, 114.9, 115.0, 120.0, 129.9, 130.0, 145.0) if notifier.maybe_ping(t)]
        assert sent == [100.0, 115.0, 130.0, 145.0]
        assert _pending(sock) == ["WATCHDOG=1"] * 4
    finally:
        notifier.close()


def test_environment_is_read_then_removed_so_tasks_do_not_inherit_it(listener: tuple[str, socket.socket]) -> None:
    value, sock = listener
    environ = {"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid()), "X": "1"}
    notifier = SdNotifier.from_environ(environ, pid=os.getpid())
    try:
        assert environ == {"X": "1"}
        assert notifier.enabled and notifier.watchdog_s == 20.0
        assert notifier.maybe_ping(0.0)
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        notifier.close()


def test_watchdog_for_another_pid_or_unset_is_off() -> None:
    assert watchdog_period_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_period_s({"WATCHDOG_USEC": "0"}, pid=2) is None
    assert watchdog_period_s({"WATCHDOG_USEC": "junk"}, pid=2) is None
    assert watchdog_period_s({"WATCHDOG_USEC": "1500000"}, pid=2) == 1.5


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = SdNotifier.from_environ({}, pid=os.getpid())
    assert not notifier.enabled
    assert not notifier.ready("x") and not notifier.maybe_ping(0.0) and not notifier.stopping()
    assert notifier.wake_interval() is None


def test_a_vanished_manager_is_logged_once_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = SdNotifier(str(tmp_path / "gone.sock"), watchdog_s=2.0)
    try:
        assert not notifier.ready()
        assert not notifier.maybe_ping(0.0)
        assert [r.message for r in caplog.records if "cannot notify" in r.message] == [
            f"cannot notify the service manager at {tmp_path / 'gone.sock'}: [Errno 2] No such file or directory"
        ]
    finally:
        notifier.close()


def test_abstract_address_encoding() -> None:
    assert socket_address("@abc") == b"\0abc"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_loop_notifier_ready_once_after_scan_status_on_change_then_stopping(
    listener: tuple[str, socket.socket],
) -> None:
    from supervisor.system.sdnotify import LoopNotifier

    value, sock = listener
    loop = LoopNotifier(SdNotifier(value, watchdog_s=4.0))
    try:
        assert loop.max_sleep() == 1.0
        loop.turn(0.0, scanned=False, tasks=0, running=0, broken=0)  # before the first scan: only the ping
        loop.turn(0.5, scanned=True, tasks=3, running=0, broken=1)
        loop.turn(1.0, scanned=True, tasks=3, running=0, broken=1)  # nothing changed: nothing sent
        loop.turn(2.0, scanned=True, tasks=3, running=2, broken=0)
        loop.stopping(running=2)
        loop.turn(4.0, scanned=True, tasks=3, running=1, broken=0)  # no STATUS after STOPPING, pings go on
        assert _pending(sock) == [
            "WATCHDOG=1",
            "READY=1\nSTATUS=3 task(s), 0 running, 1 not loaded (see taskautomation status)",
            "STATUS=3 task(s), 2 running",
            "WATCHDOG=1",
            "STOPPING=1\nSTATUS=stopping: waiting for 2 run(s) to end",
            "WATCHDOG=1",
        ]
    finally:
        loop.close()
