"""Single-instance lock, the control socket, and the client side used by the CLI and terminate.py.

* The lock is an ``flock`` held for the supervisor's whole life on ``logs/state/supervisor.lock`` (not a pid
  file's existence: a crashed supervisor's lock is released by the kernel, so a restart never finds it stale).
  The file also records the holder's pid and start time, for messages. Its fd is close-on-exec, so no task
  inherits it.
* The control socket is a Unix socket (mode 0600) under HOME: one JSON request line, one JSON reply line.
  Its backlog holds a thousand waiting clients, and a client waits (up to its timeout) for room in it rather
  than failing with ``EAGAIN`` (see ``_connect``).
* ``ask_supervisor`` is the one client call every reader and actor uses: no supervisor holding the home's lock
  or listening on its socket is ``NotRunningError``; one that does not answer in time is ``ControlError``; a
  refusal (``"ok": false``) is a reply like any other, for the caller to map to its own answer.
* ``terminate`` asks over the socket; if the socket does not answer it signals the lock holder, but only a pid
  that ``/proc/locks`` proves holds this very lock file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import struct
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import AlreadyRunningError, ControlError, NotRunningError
from ..paths import Paths

REQUEST_LIMIT = 64 * 1024
LISTEN_BACKLOG = 1024
# accept() failures that pass by themselves: out of file descriptors or memory for a moment
ACCEPT_TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE_S = 0.1


class InstanceLock:
    """The flock that makes a second supervisor on the same home refuse to start."""

    def __init__(self, paths: Paths) -> None:
        self.home = paths.home
        self.path = paths.lock_file
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise AlreadyRunningError(
                    f"another supervisor is already running on {self.home}"
                    f" ({describe_holder(self.path)}); stop it with terminate.py"
                ) from None
            raise
        info = {"pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def lock_is_held(path: Path) -> bool:
    """True when some process holds the supervisor lock on ``path`` (probe without keeping it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def holder_info(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_holder(path: Path) -> str:
    info = holder_info(path)
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')}, started {info.get('started')}"


def pid_holding_lock(path: Path) -> int | None:
    """The pid that /proc/locks says holds an flock on ``path``'s inode, if any."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        # e.g. "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and not parts[0].endswith("->"):
            try:
                inode = int(parts[5].split(":")[2])
                if inode == st.st_ino:
                    return int(parts[4])
            except (ValueError, IndexError):
                continue
    return None


Handler = Callable[[str, Mapping[str, Any]], "Mapping[str, Any] | bytes"]


class ControlServer:
    """Serves control requests from the CLI on a Unix socket; ``handle`` runs on a thread of the server's,
    one per connection, and returns the reply (or the reply line already encoded, for a cached answer).

    Accept-path policy: the accept thread only accepts and hands over, so hundreds of clients at once wait
    in the backlog (``LISTEN_BACKLOG``) for a moment instead of being refused. A failure to accept for lack of
    file descriptors or memory pauses accepting for ``ACCEPT_PAUSE_S`` (the clients wait in the backlog) and
    never ends the thread; a thread that cannot be started for a connection (``can't start new thread``)
    means that connection is answered on the accept thread itself. ``before_answer`` (a test seam; None in
    the product) is called with the command before each reply is computed.
    """

    def __init__(self, path: Path, handle: Handler, *, before_answer: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._handle = handle
        self._before_answer = before_answer
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.unlink()  # a crashed supervisor's socket file; we hold the lock, so it is stale
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is created 0600: only its owner may steer the supervisor
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        # Sized for hundreds of clients at once (a dashboard under load plus CLI calls): the kernel queues
        # that many connections while the accept thread catches up (capped by net.core.somaxconn).
        sock.listen(LISTEN_BACKLOG)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the server thread
            except OSError:
                pass
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _serve(self) -> None:
        while not self._stopped.is_set():
            sock = self._sock
            if sock is None:
                return
            try:
                conn, _ = sock.accept()
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:  # the client gave up before it was accepted
                    continue
                if exc.errno in ACCEPT_TRANSIENT:
                    self._stopped.wait(ACCEPT_PAUSE_S)  # out of fds or memory for a moment: clients wait
                    continue
                return  # the socket was closed by stop()
            try:
                threading.Thread(target=self._answer, args=(conn,), name="control-conn", daemon=True).start()
            except RuntimeError:  # no thread for it now: answer it here rather than drop it
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            if not _same_user(conn):
                # The socket is 0600 already; this also covers a socket that had to live in the temp folder.
                try:
                    conn.sendall(b'{"ok": false, "error": "permission denied"}\n')
                except OSError:
                    pass
                return
            try:
                data = b""
                while not data.endswith(b"\n") and len(data) < REQUEST_LIMIT:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                request = json.loads(data or b"{}")
                if not isinstance(request, dict):
                    raise ValueError("request is not a JSON object")
                command = str(request.get("command", ""))
                if self._before_answer is not None:
                    self._before_answer(command)
                reply = self._handle(command, request.get("args") or {})
            except (OSError, ValueError) as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            try:
                conn.sendall(reply if isinstance(reply, bytes) else (json.dumps(reply) + "\n").encode())
            except OSError:
                pass


def _same_user(conn: socket.socket) -> bool:
    """Only the supervisor's own user (or root) may steer it (SO_PEERCRED: pid, uid, gid)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (os.getuid(), 0)


def request(
    path: Path, command: str, args: Mapping[str, Any] | None = None, *, timeout: float = 10.0
) -> dict[str, Any]:
    """Send one request to the running supervisor. NotRunningError when nobody listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _connect(sock, path, timeout=timeout)
        sock.settimeout(timeout)
        sock.sendall((json.dumps({"command": command, "args": dict(args or {})}) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError as exc:
        raise ControlError(f"the supervisor did not answer {command!r} within {timeout:g} s") from exc
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc}") from exc
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise ControlError(f"control socket {path}: unreadable reply to {command!r}") from exc
    if not isinstance(reply, dict):
        raise ControlError(f"control socket {path}: unreadable reply to {command!r}")
    return reply


def _connect(sock: socket.socket, path: Path, *, timeout: float) -> None:
    """Connect, waiting up to ``timeout`` for room in the server's backlog.

    A Unix socket in timeout mode connects without blocking, and then a full backlog is ``EAGAIN`` at once
    (unlike TCP, there is no connection in progress to wait for). Connecting in blocking mode, bounded by
    the kernel's send timeout, makes a busy supervisor's client wait its turn instead of failing.
    """
    sock.setblocking(True)
    seconds = max(timeout, 0.001)
    sock.setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
    )
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NotRunningError(f"no supervisor is listening on {path}") from exc
    except BlockingIOError as exc:  # the send timeout ran out with the backlog still full
        raise ControlError(f"the supervisor did not accept a connection within {timeout:g} s") from exc


def ask_supervisor(
    paths: Paths, command: str, args: Mapping[str, Any] | None = None, *, timeout: float = 10.0
) -> dict[str, Any]:
    """Send one request to the supervisor running on ``paths.home`` and return its reply.

    The lock is probed first, so a home without a supervisor answers at once without touching the socket (a
    stale socket file of a crashed supervisor never answers). Raises NotRunningError when no supervisor holds
    the lock or none listens yet (one starting or stopping), ControlError when it does not answer within
    ``timeout``.
    """
    if not lock_is_held(paths.lock_file):
        raise NotRunningError(f"no supervisor is running on {paths.home}")
    return request(paths.control_socket, command, args, timeout=timeout)


def terminate(paths: Paths, *, timeout: float, on_progress: Callable[[str], None] = lambda _: None) -> int:
    """Stop the supervisor of ``paths.home`` and wait until it is gone. Returns its pid.

    Raises NotRunningError when none holds the lock, ControlError when it outlives ``timeout``.
    """
    lock_path, socket_path = paths.lock_file, paths.control_socket
    if not lock_is_held(lock_path):
        raise NotRunningError(f"no supervisor is running on {paths.home}")
    holder = pid_holding_lock(lock_path)
    pid = holder or holder_info(lock_path).get("pid")
    try:
        reply = request(socket_path, "stop", {"by": f"terminate.py, pid {os.getpid()}"}, timeout=10)
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error")))
    except (NotRunningError, ControlError) as exc:
        # No answer on the socket: signal the lock holder itself, but only a pid the kernel says holds it.
        if holder is None:
            raise ControlError(
                f"the supervisor does not answer ({exc}) and no process can be proven to hold {lock_path}"
            ) from exc
        on_progress(f"control socket did not answer ({exc}); sending SIGTERM to pid {holder}")
        os.kill(holder, 15)
    deadline = time.monotonic() + timeout
    while lock_is_held(lock_path):
        if time.monotonic() > deadline:
            raise ControlError(f"the supervisor (pid {pid}) is still running after {timeout:g} s")
        time.sleep(0.05)
    if isinstance(pid, int):  # the lock drops just before the process exits: wait for the exit itself
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
    return pid if isinstance(pid, int) else -1


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] != b"Z"
