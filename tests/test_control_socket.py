"""The control socket under load: a full backlog makes a client wait (within its timeout) instead of failing
with EAGAIN, and a thousand clients at once against a slowed handler are all answered."""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import pytest

from tests.support.helpers import wait_for

from supervisor.errors import ControlError
from supervisor.system.control import ControlServer, request

pytestmark = pytest.mark.timeout(60)


def _full_backlog(path: Path) -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket nobody accepts on, its backlog filled by connections that send nothing."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    fillers: list[socket.socket] = []
    while True:
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        filler.setblocking(False)
        try:
            filler.connect(str(path))
        except BlockingIOError as exc:
            assert exc.errno == errno.EAGAIN
            filler.close()
            return server, fillers
        fillers.append(filler)


def _kernel_wait(thread: threading.Thread) -> str:
    """Where in the kernel the thread sleeps (/proc's wchan)."""
    try:
        return Path(f"/proc/self/task/{thread.native_id}/wchan").read_text()
    except OSError:
        return ""


def test_a_client_waits_for_room_in_a_full_backlog_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    server, fillers = _full_backlog(path)
    replies: list[dict[str, Any] | Exception] = []

    def ask() -> None:
        try:
            replies.append(request(path, "status", timeout=20))
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            replies.append(exc)

    client = threading.Thread(target=ask)
    try:
        client.start()
        # Only once the client is waiting in the kernel for room (or has given up) is room made.
        wait_for(lambda: not client.is_alive() or _kernel_wait(client) == "unix_wait_for_peer", timeout=20)
        assert client.is_alive(), f"the client gave up at once: {replies}"
        server.settimeout(20)
        for _ in fillers:  # room in the backlog: the waiting client's connection comes in behind these
            server.accept()[0].close()
        conn, _ = server.accept()
        with conn:
            conn.settimeout(20)
            assert json.loads(conn.recv(4096))["command"] == "status"
            conn.sendall(b'{"ok": true}\n')
        client.join(timeout=20)
        assert replies == [{"ok": True}]
    finally:
        for filler in fillers:
            filler.close()
        server.close()


def test_a_backlog_that_stays_full_is_a_control_error_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    server, fillers = _full_backlog(path)
    try:
        with pytest.raises(ControlError, match="did not accept a connection within 0.3 s"):
            request(path, "status", timeout=0.3)
    finally:
        for filler in fillers:
            filler.close()
        server.close()


def test_a_thousand_clients_at_once_against_a_slowed_handler_are_all_answered(tmp_path: Path) -> None:
    def handle(command: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"ok": True, "command": command}

    # Each answer takes 20 ms (injected slowness, not synchronisation): the clients pile up in the backlog.
    server = ControlServer(tmp_path / "control.sock", handle, before_answer=lambda _: time.sleep(0.02))
    server.start()
    results: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(1000)

    def one() -> None:
        start.wait()
        try:
            outcome = "ok" if request(server.path, "status", timeout=30)["ok"] else "refused"
        except ControlError as exc:
            outcome = str(exc)
        with lock:
            results[outcome] += 1

    threads = [threading.Thread(target=one) for _ in range(1000)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 45
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        server.stop()
    assert results == Counter({"ok": 1000})
