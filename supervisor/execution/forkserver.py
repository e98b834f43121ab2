"""The supervisor's side of the fork servers (``[Supervisor] Launcher = fork``): one per env interpreter.

``ForkPool.popen`` has ``subprocess.Popen``'s signature as the runner calls it (runner.py), so the runner, its
relay, its pidfd and the outcome code are the same for both launchers: a request goes to the env's server
(``_forkserver.py``, which documents the protocol and the marking), the answer is a ``ForkedProcess`` with
Popen's ``pid``, ``poll()``, ``wait()`` and ``returncode``, whose exit status the server sends when it reaps
the child.

Policies:
* A server is keyed by its env's interpreter path and identity (the stat of the interpreter it resolves to
  and of the env's ``pyvenv.cfg``): a changed env or base interpreter retires the old server at the next
  launch, between runs.
* A server that cannot be started, refuses or gives no answer within ``answer_timeout_s`` (1 s; 3 s for a
  new server's first answer, which includes its start) never fails a run: that run is spawned
  (``subprocess.Popen``, today's path), the failure is logged once, and the env spawns until
  ``retry_after_s`` has passed; then a new server is started. A server found dead is replaced at once. A
  server that did not answer is killed, and the run's cookie swept, before the spawn, so the run can never
  start twice.
* A server with no run in flight for ``idle_s`` is retired (``retire_idle``, every loop turn). Retiring shuts
  the socket's write side: the server takes no more requests, still reports its children's exits, and exits
  once they are gone; ``close`` waits for that (bounded) and kills what is left.
* The server's exec environment is the supervisor's, with the home's run-cookie prefix and a blank to hold
  one run's cookie: never a task's secrets (those travel per request).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .procscan import find_by_environ

SERVER_PATH = Path(__file__).resolve().with_name("_forkserver.py")
RUN_COOKIE_VAR = "TASKAUTOMATION_RUN_COOKIE"  # (runner.RUN_COOKIE_VAR; runner imports this module's users)
COOKIE_ROOM = 64  # characters of blank after the prefix: a run id is 20-odd characters
RECORD = 17
ANSWER_TIMEOUT_S = 1.0  # a warm server answers in milliseconds; this bounds the loop's wait on a hung one
FIRST_ANSWER_TIMEOUT_S = 3.0  # a new server's first answer includes its interpreter start (a loaded machine)
RETRY_AFTER_S = 30.0
IDLE_S = 180.0
ZOMBIE_POLL_S = 0.5
ZOMBIE_GRACE_S = 1.0
LAUNCHERS = ("fork", "spawn")


class ForkedProcess:
    """A run's shim forked by a server: what the runner uses of ``subprocess.Popen``.

    The exit status comes from the server when it reaps the child. A server that stopped answering (hung,
    stopped) cannot reap it: once the child has been a zombie for ``ZOMBIE_GRACE_S`` its status is read from
    ``/proc/PID/stat`` (the kernel keeps it there until the reaping), so a run's end is never lost with its
    server.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self.orphaned = False  # its server is gone: nobody will send its status

    def _exited(self, status: int) -> None:
        with self._lock:
            if self.returncode is None:
                self.returncode = os.waitstatus_to_exitcode(status) if status >= 0 else status
        self._done.set()

    def poll(self) -> int | None:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        zombie_since = None
        while not self._done.wait(
            ZOMBIE_POLL_S if deadline is None else min(ZOMBIE_POLL_S, deadline - time.monotonic())
        ):
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            status = _zombie_status(self.pid)
            if status is None and self.orphaned and not _exists(self.pid):
                # Re-parented and reaped by someone else: the status is lost. Only a run whose monitor wrote
                # no report reads it (as killed by SIGKILL); the monitor's report decides every other outcome.
                self._exited(-signal.SIGKILL)
            elif status is None:
                zombie_since = None
            elif zombie_since is None:
                zombie_since = time.monotonic()
            elif time.monotonic() - zombie_since >= ZOMBIE_GRACE_S:
                self._exited(status)
        assert self.returncode is not None
        return self.returncode


class ForkServer:
    """One running server: its process, its socket and the thread reading its answers and exit reports."""

    def __init__(self, python: Path, identity: tuple[int, ...], env: dict[str, str]) -> None:
        self.python = python
        self.identity = identity
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [str(python), "-u", str(SERVER_PATH), str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=env,
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.answers: queue.SimpleQueue[tuple[bytes, int, ForkedProcess | None]] = queue.SimpleQueue()
        self.children: dict[int, ForkedProcess] = {}
        self.lock = threading.Lock()
        self.alive = True
        self.served = 0
        self.last_used = time.monotonic()
        self.reader = threading.Thread(target=self._read, name=f"forkserver-{self.process.pid}", daemon=True)
        self.reader.start()

    def request(self, data: bytes, fds: Sequence[int], timeout: float) -> ForkedProcess:
        """The forked child; OSError if the server refused, died or did not answer in time."""
        self.last_used = time.monotonic()
        self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _fd_bytes(fds))])
        try:
            _kind, value, child = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer within {timeout:g} s") from None
        if child is None:
            raise OSError(value, f"the fork server could not fork: {os.strerror(value) if value else 'gone'}")
        return child

    def in_flight(self) -> int:
        with self.lock:
            return len(self.children)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(RECORD)
            except OSError:
                data = b""
            if len(data) != RECORD:
                break
            kind, pid, value = data[:1], _int(data[1:9]), _int(data[9:])
            if kind == b"X":
                with self.lock:
                    child = self.children.pop(pid, None)
                if child is not None:
                    child._exited(value)
                continue
            child = None
            if kind == b"P":
                child = ForkedProcess(pid)
                with self.lock:  # registered before the answer is read, so no exit report can come first
                    self.children[pid] = child
            self.answers.put((kind, value, child))
        self.alive = False
        self.answers.put((b"E", 0, None))
        self._lost()

    def _lost(self) -> None:
        """The server is gone; its runs in flight go on (re-parented), and each one's ``wait`` reports its end
        once its process is gone (``ForkedProcess.orphaned``)."""
        try:
            self.process.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            pass
        with self.lock:
            orphans, self.children = list(self.children.values()), {}
        for child in orphans:
            child.orphaned = True

    def retire(self) -> None:
        """No more requests; the server exits once its children are gone."""
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def kill(self) -> None:
        self.alive = False
        try:
            self.process.kill()
        except OSError:
            pass


class ForkPool:
    """The fork servers of one supervisor, and the fallback to spawn."""

    def __init__(
        self,
        *,
        cookie_prefix: str,
        logger: logging.Logger,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
        retry_after_s: float = RETRY_AFTER_S,
        idle_s: float = IDLE_S,
        spawn: Callable[..., Any] = subprocess.Popen,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cookie_prefix = cookie_prefix
        self.log = logger
        self.answer_timeout_s = answer_timeout_s
        self.retry_after_s = retry_after_s
        self.idle_s = idle_s
        self._spawn = spawn
        self._clock = clock
        self.servers: dict[Path, ForkServer] = {}
        self._resting: dict[Path, float] = {}  # python -> monotonic time before which it is spawned
        self.forked = self.spawned = 0

    def popen(self, argv: list[str], **kwargs: Any) -> Any:
        """Popen for the runner's shim command line (runner.Runner._spawn): forked where a server serves."""
        python = Path(argv[0])
        server = self._server(python)
        if server is not None:
            try:
                process = self._fork(server, argv, kwargs)
                self.forked += 1
                return process
            except OSError as exc:
                self._failed(server, exc, kwargs.get("env") or {})
        self.spawned += 1
        return self._spawn(argv, **kwargs)

    def _fork(self, server: ForkServer, argv: list[str], kwargs: dict[str, Any]) -> ForkedProcess:
        # argv: python -u shim MODE TASK REPORT_FD CONTROL_FD GRACE_S SUPERVISOR_PID (_wire.shim_argv)
        mode, task, report_fd, control_fd, grace = argv[3:8]
        env: dict[str, str] = dict(kwargs["env"])
        fields = [kwargs["cwd"], mode, task, grace, str(len(env)), *(f"{k}={v}" for k, v in env.items())]
        data = b"\0".join(os.fsencode(field) for field in fields)
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            fds = [devnull, kwargs["stdout"], int(report_fd), int(control_fd)]
            timeout = self.answer_timeout_s if server.served else max(self.answer_timeout_s, FIRST_ANSWER_TIMEOUT_S)
            process = server.request(data, fds, timeout)
            server.served += 1
            return process
        finally:
            os.close(devnull)

    def _server(self, python: Path) -> ForkServer | None:
        identity = _identity(python)
        server = self.servers.get(python)
        if server is not None and (not server.alive or server.identity != identity):
            self.servers.pop(python).retire()  # a changed env or base interpreter: retired between runs
            server = None
        if server is not None or identity is None:
            return server
        if self._clock() < self._resting.get(python, 0.0):
            return None
        try:
            server = ForkServer(python, identity, self._server_env())
        except OSError as exc:
            self._rest(python, f"cannot start a fork server for {python}: {exc}")
            return None
        self.servers[python] = server
        return server

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
        env[RUN_COOKIE_VAR] = self.cookie_prefix + "_" * COOKIE_ROOM
        return env

    def _failed(self, server: ForkServer, exc: OSError, env: dict[str, str]) -> None:
        """A refused or unanswered request: the server is killed (it may be hung half-way through a fork)
        and whatever it forked for this run is swept, so the spawn that follows is the run's only start."""
        self.servers.pop(server.python, None)
        server.kill()
        cookie = env.get(RUN_COOKIE_VAR)
        if cookie:
            for pid in find_by_environ(f"{RUN_COOKIE_VAR}={cookie}".encode()).matches:
                _kill(pid)
        self._rest(server.python, f"the fork server for {server.python} failed ({exc})")

    def _rest(self, python: Path, why: str) -> None:
        self._resting[python] = self._clock() + self.retry_after_s
        self.log.warning("%s: runs of this env are spawned; a new server is tried in %g s", why, self.retry_after_s)

    def retire_idle(self) -> None:
        now = time.monotonic()
        for python, server in list(self.servers.items()):
            if not server.alive or (server.in_flight() == 0 and now - server.last_used >= self.idle_s):
                self.servers.pop(python).retire()

    def close(self, timeout_s: float = 5.0) -> None:
        """Retire every server and wait for them to exit; kill what is still there after ``timeout_s``."""
        servers, self.servers = list(self.servers.values()), {}
        for server in servers:
            server.retire()
        deadline = time.monotonic() + timeout_s
        for server in servers:
            try:
                server.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.kill()
                server.process.wait()
            server.reader.join(timeout=max(0.1, deadline - time.monotonic()))
            server.sock.close()

    def server_pids(self) -> list[int]:
        return [s.process.pid for s in self.servers.values()]


def _identity(python: Path) -> tuple[int, ...] | None:
    """The env interpreter's identity: the file it resolves to (the base interpreter) and the env's
    pyvenv.cfg. None if the interpreter is gone (the runner reports that)."""
    try:
        exe = os.stat(python)
    except OSError:
        return None
    try:
        cfg = os.stat(python.parent.parent / "pyvenv.cfg")
        cfg_id = (cfg.st_ino, cfg.st_mtime_ns)
    except OSError:
        cfg_id = (0, 0)
    return (exe.st_dev, exe.st_ino, exe.st_size, exe.st_mtime_ns, *cfg_id)


def _zombie_status(pid: int) -> int | None:
    """The raw wait status of ``pid`` if it is a zombie (stat's field 52, exit_code), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if fields[:1] != [b"Z"] or len(fields) < 50:
        return None
    return int(fields[49])


def _fd_bytes(fds: Sequence[int]) -> bytes:
    return b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)


def _int(data: bytes) -> int:
    return int.from_bytes(data, "little", signed=True)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def fork_unavailable() -> str | None:
    """Why this platform cannot fork runs from a server (None = it can): the server needs SOCK_SEQPACKET
    socketpairs with SCM_RIGHTS, os.fork and a writable /proc/self/mem for the run's cookie."""
    if not hasattr(socket, "SOCK_SEQPACKET") or not hasattr(socket.socket, "sendmsg") or not hasattr(os, "fork"):
        return "no SOCK_SEQPACKET socketpair with SCM_RIGHTS or no fork() on this platform"
    if not os.access("/proc/self/mem", os.W_OK):
        return "/proc/self/mem is not writable (the run's cookie cannot be marked)"
    return None


def launcher_line(launcher: str) -> str:
    """The start-up log line and doctor's line: the launcher in force, and why if it is not the one asked."""
    if launcher != "fork":
        return "launcher: spawn (a fresh interpreter per run)"
    why = fork_unavailable()
    if why is not None:
        return f"launcher: spawn (Launcher = fork asked, but {why})"
    return "launcher: fork (per-env fork servers; a run falls back to spawn if its server fails)"


def fork_pool_for(launcher: str, *, cookie_prefix: str, logger: logging.Logger) -> ForkPool | None:
    """The pool for ``[Supervisor] Launcher``, logging which launcher is in force; None = spawn."""
    logger.info("%s", launcher_line(launcher))
    if launcher != "fork" or fork_unavailable() is not None:
        return None
    return ForkPool(cookie_prefix=cookie_prefix, logger=logger)
