"""The fork server: one pre-started interpreter of an env that forks each run's shim. Stdlib only.

    ENV/bin/python -u _forkserver.py SOCKET_FD

(the supervisor's side is forkserver.py). A spawn pays for a whole interpreter start before the first line
of ``main()``; a fork of an interpreter that is already up pays for a fork. The server imports only what the
shim needs before its own fork (``os``, ``sys``, ``_contain``, ``_wire``, ``_shim`` and the C modules
``_socket``, ``_signal``, ``select``), never a task's module: each run still imports its task anew, and as no
task code ever runs in the server, every child starts from the same pristine state.

Protocol (one SOCK_SEQPACKET socketpair, so each message is one packet):

* supervisor -> server: ``\\0``-joined fields ``cwd, mode, task, grace_s, N, K=V * N`` (the run's whole
  environment), with four fds by SCM_RIGHTS: stdin, the merged stdout/stderr pipe, REPORT_FD, CONTROL_FD;
* server -> supervisor: fixed 17-byte records ``kind, pid, value``: ``P`` the child's pid, ``E`` a fork that
  failed (value = errno), ``X`` a child's exit (value = its raw wait status).

The child does ``setsid``, moves the fds to 0, 1, 2, 3 (report) and 4 (control), closes every other fd,
replaces ``os.environ``, chdirs, sets ``sys.argv`` and then runs the shim's main path exactly as a spawned shim
does (it forks again into monitor + task). Its parent for the shim's start check is this server; the monitor
arms no PDEATHSIG (``_shim.FORKED``), so a server that dies does not take its runs in flight with it (they are
re-parented; the supervisor's side reports their ends, forkserver.py), and the supervisor's death is noticed
by CONTROL_FD's EOF, as a spawned monitor also notices it.

Marking (the orphan sweep reads ``/proc/PID/environ``, i.e. the *exec* environment, which a fork inherits):
the server is started with ``TASKAUTOMATION_RUN_COOKIE=<home prefix>`` followed by a blank of fixed length,
so the server and anything forked from it matches the home's prefix sweep; the child then overwrites the
blank in its own copy of that memory (``/proc/self/mem``, copy-on-write after the fork) with its run's cookie,
so a per-run sweep finds its processes exactly as with spawn. A cookie that does not fit fails the request
(``E``), and the supervisor spawns that run instead.

Not per run: PYTHONHASHSEED and anything else read once at interpreter start (``-X`` options, the stdio
encoding) are the server's. ``random`` reseeds itself after a fork (``os.register_at_fork``).

Single-threaded by design (a fork copies only the forking thread): nothing here starts a thread. On EOF of
the socket (the supervisor closed it or died) the server stops taking requests and exits once its children
are gone; it ignores SIGINT (the supervisor's terminal) and is in its own session.
"""

from __future__ import annotations

import _signal
import _socket
import fcntl
import os
import select
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

try:  # imported as part of the package (tests, the type checker)
    from . import _contain, _shim, _wire
except ImportError:  # run by path (always, in use): this file's folder is sys.path[0]
    import _contain  # type: ignore[no-redef]
    import _shim  # type: ignore[no-redef]
    import _wire  # type: ignore[no-redef]

_PRELOADED = (_contain,)  # the shim's modules, loaded here once so that no run pays for importing them

RECORD = 17
COOKIE_VAR = "TASKAUTOMATION_RUN_COOKIE"
BLANK = "_"  # the placeholder's padding character (the supervisor starts the server with it)
FD_COUNT = 4
MAX_REQUEST = 1 << 20


def record(kind: bytes, pid: int, value: int) -> bytes:
    return kind + pid.to_bytes(8, "little", signed=True) + value.to_bytes(8, "little", signed=True)


def _cookie_slot() -> tuple[int, int] | None:
    """(address, length) of the cookie's value in this process's exec environment, or None."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51; [0] is field 3)
        with open("/proc/self/environ", "rb") as f:
            environ = f.read()
    except (OSError, IndexError, ValueError):
        return None
    key = COOKIE_VAR.encode() + b"="
    offset = 0
    for entry in environ.split(b"\0"):
        if entry.startswith(key):
            value_at = start + offset + len(key)
            return (value_at, len(entry) - len(key)) if value_at < end else None
        offset += len(entry) + 1
    return None


def mark(slot: tuple[int, int] | None, cookie: str | None) -> bool:
    """Write ``cookie`` over the blank in this (forked) process's exec environment; NUL-padded."""
    if cookie is None:
        return True
    data = cookie.encode()
    if slot is None or len(data) > slot[1]:
        return False
    fd = os.open("/proc/self/mem", os.O_RDWR)
    try:
        os.pwrite(fd, data + b"\0" * (slot[1] - len(data)), slot[0])
    finally:
        os.close(fd)
    return True


def parse_request(data: bytes) -> tuple[str, str, str, str, dict[str, str]]:
    fields = [os.fsdecode(field) for field in data.split(b"\0")]
    cwd, mode, task, grace, count = fields[:5]
    env = {}
    for item in fields[5 : 5 + int(count)]:
        key, _, value = item.partition("=")
        env[key] = value
    return cwd, mode, task, grace, env


def child(sock: _socket.socket, fds: list[int], data: bytes, slot: tuple[int, int] | None) -> None:
    """In the forked child: become the run's shim. Returns only into the shim's normal interpreter exit."""
    sock.detach()  # its fd is closed below; a socket object would close that number again at exit
    _signal.set_wakeup_fd(-1)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    os.setsid()
    cwd, mode, task, grace, env = parse_request(data)
    if not mark(slot, env.get(COOKIE_VAR)):
        os._exit(_wire.EXIT_CANNOT_START)  # not reached in practice: the server checks the fit first
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds]  # above every target, so no dup2 hits a source
    for number, fd in zip((0, 1, 3, 4), moved):
        os.dup2(fd, number)
    os.dup2(1, 2)
    os.closerange(5, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = [_shim.__file__, mode, task, "3", "4", grace, str(os.getppid())]
    if "random" in sys.modules:  # (register_at_fork reseeds it already; cheap, and says what is meant)
        sys.modules["random"].seed()
    _shim.main()


def serve(sock: _socket.socket) -> NoReturn:
    slot = _cookie_slot()
    _shim.PRCTL = _shim._load_prctl()  # ~1 ms per run when each builds it; once here (a pointer to libc's)
    _shim.FORKED = True
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    _signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    _signal.signal(_signal.SIGCHLD, lambda *_: None)
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    children: set[int] = set()
    taking = True
    fd = sock.fileno()
    while taking or children:
        try:
            ready, _, _ = select.select([fd, wake_r] if taking else [wake_r], [], [], None if taking else 1.0)
        except InterruptedError:
            ready = [wake_r]
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            children.discard(pid)
            _send(sock, record(b"X", pid, status))
        if fd in ready:
            taking = _take(sock, slot, children)
    os._exit(0)


def _take(sock: _socket.socket, slot: tuple[int, int] | None, children: set[int]) -> bool:
    """Answer one request; False once the supervisor is gone (EOF)."""
    try:
        data, ancillary, flags, _ = sock.recvmsg(MAX_REQUEST, _socket.CMSG_LEN(4 * FD_COUNT))
    except InterruptedError:
        return True
    except OSError:
        return False
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [int.from_bytes(payload[i : i + 4], sys.byteorder) for i in range(0, len(payload) - 3, 4)]
    if not data and not fds:
        return False
    cookie = parse_request(data)[4].get(COOKIE_VAR) if len(fds) == FD_COUNT else None
    fits = cookie is None or (slot is not None and len(cookie.encode()) <= slot[1])
    pid = 0
    errno = 22  # EINVAL: the request cannot be served; the supervisor spawns this run instead
    if len(fds) == FD_COUNT and fits and not flags & getattr(_socket, "MSG_TRUNC", 0):
        try:
            pid = os.fork()
        except OSError as exc:
            pid, errno = -1, exc.errno or 0
        if pid == 0:
            # No try/finally on this path: the task's SystemExit must reach the interpreter's normal exit
            # (atexit handlers) without running any of the server's clean-up on the run's fds.
            child(sock, fds, data, slot)
            raise SystemExit(0)  # (the shim exits itself; never back into this loop)
    for fd in fds:
        os.close(fd)
    if pid > 0:
        children.add(pid)
        _send(sock, record(b"P", pid, 0))
    else:
        _send(sock, record(b"E", 0, errno))
    return True


def _send(sock: _socket.socket, data: bytes) -> None:
    try:
        sock.send(data)
    except OSError:
        pass  # the supervisor is gone; the children are reaped regardless


if __name__ == "__main__":
    serve(_socket.socket(fileno=int(sys.argv[1])))
