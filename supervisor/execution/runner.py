"""Spawn a run's shim, relay its output, measure its tree, ask it to stop, and report how it ended.

Policy:
* Every run is ``ENV/bin/python _shim.py ...`` in a new session, cwd = HOME, stdin = /dev/null, stdout and
  stderr merged into one pipe that a reader thread relays line by line to ``on_output``. Past
  ``output_cap_bytes`` a run's output is counted and dropped, so a task printing 100 MB cannot fill the disk
  or the supervisor's memory.
* ``launch`` must be called from the supervisor's long-lived loop thread: the monitor's PDEATHSIG is tied to
  the *thread* that forked it.
* Stopping is the monitor's job (it is the subreaper that can find escapees): the runner only writes ``T``
  (graceful) or ``K`` (kill now) to the run's control pipe. If the supervisor dies the pipe reaches EOF and the
  monitor stops the tree on its own.
* The reader thread ends when the monitor has exited, then calls ``on_exit`` with a ``ProcessReport``; it never
  decides the outcome (``outcome.decide_outcome`` does, on the loop thread). It is started *before* the
  process, so a refused thread start ("can't start new thread") is a transient ``SpawnError`` with nothing to
  undo, never a process nobody relays; and ``on_exit`` is called whatever goes wrong after the process began.
* A start that fails for lack of processes, threads, memory or files, here (EAGAIN, ENOMEM, EMFILE, ENFILE,
  a refused thread) or in the shim (its ``start`` report), is transient: the caller retries it.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import psutil

from ..errors import SpawnError
from ..model import ProcessLaunch
from . import _contain as contain
from . import _wire as wire
from .outcome import ProcessReport
from .procscan import find_by_environ

SHIM_PATH = Path(__file__).resolve().with_name("_shim.py")
RUN_COOKIE_VAR = "TASKAUTOMATION_RUN_COOKIE"


@dataclass
class TreeSample:
    """Resource use of a run's tree at one instant (the monitor itself excluded)."""

    rss_bytes: int
    cpu_s: float
    processes: int
    threads: int | None = None  # processes + threads, when asked for (the MaxProcesses check without cgroups)


def child_environment(
    base: Mapping[str, str], *, task: str, run_id: str, task_dir: Path, output_dir: Path, env_dir: Path, cookie: str
) -> dict[str, str]:
    """The environment of a run: the supervisor's, plus the task variables (README.md, How a run executes).

    The env's bin/ goes first on PATH and VIRTUAL_ENV points at it, so a task that starts ``python`` or
    ``pip`` itself gets its own environment, not the supervisor's.
    """
    env = dict(base)
    env.pop("PYTHONHOME", None)
    env.update(
        TASK_NAME=task,
        TASK_DIR=str(task_dir),
        TASK_OUTPUT_DIR=str(output_dir),
        TASK_RUN_ID=run_id,
        VIRTUAL_ENV=str(env_dir),
        PATH=str(env_dir / "bin") + os.pathsep + env.get("PATH", os.defpath),
    )
    env[RUN_COOKIE_VAR] = cookie
    return env


class RunProcess:
    """A live run: its monitor process, its control pipe, and the thread relaying its output."""

    def __init__(self, spec: ProcessLaunch, popen: subprocess.Popen[bytes], control_w: int) -> None:
        self.spec = spec
        self.popen = popen
        self.pid = popen.pid
        self._control_w = control_w
        self._control_lock = threading.Lock()
        self._processes: dict[int, psutil.Process] = {}
        self.peak_rss_bytes = 0
        self.peak_cpu_s = 0.0

    def stop(self, *, kill_now: bool = False) -> None:
        """Ask the monitor to stop the tree: SIGTERM then SIGKILL after the grace, or SIGKILL at once."""
        with self._control_lock:
            if self._control_w < 0:
                return
            try:
                os.write(self._control_w, wire.CONTROL_KILL if kill_now else wire.CONTROL_STOP)
            except OSError:
                # The monitor is already gone (or going); its exit will be reported normally.
                pass

    def close_control(self) -> None:
        with self._control_lock:
            if self._control_w >= 0:
                os.close(self._control_w)
                self._control_w = -1

    def sample(self, *, count_threads: bool = False) -> TreeSample | None:
        """Resident memory and CPU time of the monitor's descendants, or None once the monitor is gone.

        Resident sizes are summed per process, so pages shared after fork are counted in each process: the
        figure errs high, which is the safe side for a limit that protects the host.
        """
        try:
            monitor = psutil.Process(self.pid)
        except psutil.Error:
            return None
        # The tree is walked down from the monitor (its descendants include escapees: it is their
        # subreaper). psutil's children(recursive=True) reads every process on the machine instead: ~50x
        # the cost, paid every second for every run in flight.
        tree = contain.descendants(self.pid)
        rss = 0
        cpu = 0.0
        threads = 0
        seen: dict[int, psutil.Process] = {}
        for pid in tree:
            # Reuse Process objects so psutil can tell a reused pid from the one we sampled before.
            cached = self._processes.get(pid)
            try:
                if cached is None:
                    cached = psutil.Process(pid)
                with cached.oneshot():
                    rss += cached.memory_info().rss
                    times = cached.cpu_times()
                    cpu += times.user + times.system + times.children_user + times.children_system
                    if count_threads:
                        threads += cached.num_threads()
                seen[pid] = cached
            except psutil.Error:
                continue
        self._processes = seen
        try:
            # Orphans re-parented to the monitor (and the task process itself) are reaped by it, so their
            # CPU seconds end up in the monitor's children times; without these, a task that burns CPU in
            # a stream of short-lived orphaned workers would never reach CPUSeconds. The monitor's own CPU
            # stays excluded.
            reaped = monitor.cpu_times()
            cpu += reaped.children_user + reaped.children_system
        except psutil.Error:
            pass
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        # A dead process's CPU seconds are in no sampled figure between its exit and its reaping; keeping
        # the maximum makes the figure monotonic.
        self.peak_cpu_s = max(self.peak_cpu_s, cpu)
        return TreeSample(
            rss_bytes=rss, cpu_s=self.peak_cpu_s, processes=len(seen), threads=threads if count_threads else None
        )


class Runner:
    """Starts runs and reports their end through callbacks; keeps no schedule and decides no outcome."""

    def __init__(
        self,
        *,
        output_cap_bytes: int,
        on_output: Callable[[ProcessLaunch, str], None],
        on_exit: Callable[[ProcessLaunch, ProcessReport], None],
        popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
        shim: Path = SHIM_PATH,
    ) -> None:
        self._cap = output_cap_bytes
        self._on_output = on_output
        self._on_exit = on_exit
        self._popen = popen
        self._shim = shim
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        _cache_shim_bytecode()

    def launch(self, spec: ProcessLaunch) -> RunProcess:
        """Start the shim for ``spec``. Raises SpawnError (naming the task and the cause) if it cannot."""
        if not Path(spec.python).exists():
            raise SpawnError(f"task {spec.task!r}: interpreter {spec.python} does not exist")
        handoff: queue.SimpleQueue[tuple[RunProcess, int, int] | None] = queue.SimpleQueue()
        thread = threading.Thread(
            target=self._relay_when_given, args=(handoff,), name=f"run-{spec.run_id}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError as exc:  # the kernel refused the thread (EAGAIN): no process was started yet
            raise SpawnError(
                f"task {spec.task!r}: cannot start a thread to relay the run's output: {exc}", transient=True
            ) from exc
        with self._threads_lock:
            self._threads.add(thread)
        try:
            run, out_r, report_r = self._spawn(spec)
        except BaseException:
            handoff.put(None)  # the relay thread ends without a run
            raise
        handoff.put((run, out_r, report_r))
        return run

    def _spawn(self, spec: ProcessLaunch) -> tuple[RunProcess, int, int]:
        """The shim's process, with the read ends of its output and report pipes."""
        fds: list[int] = []
        try:
            for _ in range(3):
                fds.extend(os.pipe())
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise _spawn_error(spec, exc) from exc
        report_r, report_w, control_r, control_w, out_r, out_w = fds
        argv = wire.shim_argv(
            python=str(spec.python),
            shim=str(self._shim),
            mode=spec.mode.value,
            task=spec.task,
            report_fd=report_w,
            control_fd=control_r,
            grace_s=spec.kill_grace_s,
            supervisor_pid=os.getpid(),
        )
        try:
            popen = self._popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=subprocess.STDOUT,
                pass_fds=(report_w, control_r),
                cwd=str(spec.home),
                env=dict(spec.env),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            for fd in (report_r, report_w, control_r, control_w, out_r, out_w):
                os.close(fd)
            raise _spawn_error(spec, exc) from exc
        for fd in (report_w, control_r, out_w):
            os.close(fd)
        return RunProcess(spec, popen, control_w), out_r, report_r

    def join(self, timeout: float) -> bool:
        """Wait for every relay thread to finish (each finishes when its monitor exits)."""
        deadline = time.monotonic() + timeout
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            if thread.ident is not None:  # (only started threads are kept; a join of another one raises)
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def _relay_when_given(self, handoff: queue.SimpleQueue[tuple[RunProcess, int, int] | None]) -> None:
        given = handoff.get()
        if given is None:  # the process could not be started
            with self._threads_lock:
                self._threads.discard(threading.current_thread())
            return
        self._relay(*given)

    def _relay(self, run: RunProcess, out_r: int, report_r: int) -> None:
        output = _CappedLines(self._cap, lambda line: self._on_output(run.spec, line))
        task_line = monitor_line = start_line = None
        try:
            _pump(run, out_r, output.take)
            output.finish()
            returncode = run.popen.wait()
            task_line, monitor_line, start_line = _read_report(report_r)
            cookie = run.spec.env.get(RUN_COOKIE_VAR)
            if monitor_line is None and start_line is None and cookie:
                # The monitor died without reporting (SIGKILLed from outside, the OOM killer): nothing stopped
                # the tree, and its escapees and grandchildren now belong to init. The run's cookie still
                # names them, and only them.
                sweep_cookie(cookie)
        except Exception:  # noqa: BLE001 - a run whose end is never reported would stay in flight for ever
            returncode = run.popen.wait()
        finally:
            os.close(out_r)
            os.close(report_r)
            run.close_control()
        report = ProcessReport(
            run_id=run.spec.run_id,
            returncode=returncode,
            task=task_line,
            monitor=monitor_line,
            output_bytes=output.total,
            output_dropped=output.dropped,
            start=start_line,
        )
        try:
            self._on_exit(run.spec, report)
        finally:
            with self._threads_lock:
                self._threads.discard(threading.current_thread())


class _CappedLines:
    """A run's output as lines, up to ``cap`` bytes in all; what comes after is counted, not kept."""

    def __init__(self, cap: int, emit: Callable[[str], None]) -> None:
        self._cap = cap
        self._emit = emit
        self._pending = b""
        self.total = self.kept = self.dropped = 0

    def take(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._cap - self.kept
        if room <= 0:
            self.dropped += len(chunk)
            return
        if len(chunk) > room:
            self.dropped += len(chunk) - room
            chunk = chunk[:room]
        self.kept += len(chunk)
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            self._emit(line.decode("utf-8", "replace"))

    def finish(self) -> None:
        """The last line (without its newline), then a note of how much was dropped."""
        if self._pending:
            self._emit(self._pending.decode("utf-8", "replace"))
            self._pending = b""
        if self.dropped:
            self._emit(f"[output over {self._cap} bytes: {self.dropped} more bytes dropped]")


def _pump(run: RunProcess, out_r: int, take: Callable[[bytes], None]) -> None:
    """Hand every chunk of the output pipe to ``take`` until the run's monitor has exited.

    Escapees that inherited stdout could hold the pipe open after the monitor died, so EOF alone cannot end
    the loop: the monitor's pidfd turns readable when it exits (no wake-ups while a run is quiet). Without
    pidfds (Linux < 5.3) a half-second select timeout polls for the exit instead.
    """
    pidfd = _open_pidfd(run.pid)
    try:
        watch = [out_r] if pidfd is None else [out_r, pidfd]
        while True:
            ready, _, _ = select.select(watch, [], [], 0.5 if pidfd is None else None)
            if out_r in ready:
                chunk = os.read(out_r, 65536)
                if not chunk:
                    return
                take(chunk)
                continue
            if (pidfd is not None and pidfd in ready) or (pidfd is None and run.popen.poll() is not None):
                os.set_blocking(out_r, False)
                try:  # what the monitor's tree wrote before the end is still in the pipe (a full pipe is 16
                    # reads); bounded, because an escapee of a killed monitor could write forever
                    for _ in range(64):
                        chunk = os.read(out_r, 65536)
                        if not chunk:
                            break
                        take(chunk)
                except BlockingIOError:
                    pass
                return
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _cache_shim_bytecode() -> None:
    """Every run's shim imports _wire.py and _contain.py before main(): compile them once here so no run
    pays for compiling them, even where PYTHONDONTWRITEBYTECODE keeps Python from caching imports (it still
    reads caches). A read-only install simply compiles per run, as before."""
    import py_compile

    for module in (wire, contain):
        try:
            py_compile.compile(str(module.__file__), doraise=True)
        except (OSError, py_compile.PyCompileError):
            pass


def _spawn_error(spec: ProcessLaunch, exc: OSError) -> SpawnError:
    # Spawn failures that say "not now" rather than "never" (the fd table, the process table or memory full
    # for a moment) are transient: the loop retries them after a few seconds.
    return SpawnError(f"task {spec.task!r}: cannot start {spec.python}: {exc}", transient=wire.resource_shortage(exc))


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid`` (readable once it exits), or None where the kernel or Python has none."""
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return None


def _read_report(fd: int) -> tuple[wire.TaskReport | None, wire.MonitorReport | None, wire.StartFailure | None]:
    """Read what the task and the monitor wrote to the report pipe and decode it once."""
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break  # an escaped fork may still hold the write end; what is written is all we need
        if not chunk:
            break
        data += chunk
    return wire.parse_reports(data)


def sweep_cookie(cookie_prefix: str, *, sig: int = signal.SIGKILL, exclude: Sequence[int] = ()) -> list[int]:
    """Kill every process whose environment carries ``RUN_COOKIE_VAR=<cookie_prefix>...``.

    The last-resort cleanup after a supervisor crash. A process is signalled only when its own environment
    proves it was started for this home's runs, never on a name or a pid file.
    """
    needle = f"{RUN_COOKIE_VAR}={cookie_prefix}".encode()
    killed = []
    # Never blocks on one process: a process in D state can hang a plain read of its environ (procscan).
    for pid in find_by_environ(needle, exclude=tuple(exclude)).matches:
        try:
            os.kill(pid, sig)
            killed.append(pid)
        except OSError:
            pass
    return killed
