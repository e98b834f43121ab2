"""The in-env shim: run by file path with a task's own venv python, stdlib only.

    ENV/bin/python _shim.py MODE TASK REPORT_FD CONTROL_FD GRACE_S SUPERVISOR_PID

(the protocol with the supervisor, argv to exit codes, is _wire.py).

One interpreter start serves two processes. The shim arms the kernel's safety nets, then forks:

* the child imports ``Tasks.<TASK>.main`` and calls ``main()`` or ``initialize()`` (MODE), then writes one
  JSON line to REPORT_FD with the returned string or the traceback;
* the parent stays behind as the run's *monitor*: a child subreaper (so double-forked escapees are re-parented
  to it rather than to PID 1), the only process that reaps with ``waitpid(-1)`` (no task code runs in it, so
  no exit code is stolen from a task's own ``subprocess``), and the one that kills the whole tree.

The monitor kills the tree when the supervisor writes ``T`` (SIGTERM, GRACE_S, then SIGKILL) or ``K`` (SIGKILL
now) on CONTROL_FD, when CONTROL_FD reaches EOF or PDEATHSIG fires (the supervisor is gone: short grace), when
it gets SIGTERM itself, and after ``main()`` returns if anything the run started is still alive. It exits only
once it has no descendants left, then writes its own JSON line to REPORT_FD.

A run that cannot start for lack of a process, thread, memory or file (the shim's own ``fork()`` gets EAGAIN,
the task process cannot enter its cgroups for lack of memory, the monitor has no memory to set itself up)
is reported as such, a ``start`` line and exit code ``EXIT_CANNOT_START``, never as a crash: main() did not
begin, and the supervisor retries the start after a back-off.

Containment (``_wire.ContainmentPlan`` in the environment, ``_contain.py``): the child enters the run's cgroups
and takes its RLIMIT_NPROC right after the fork, before any task code; the monitor stays outside them. A
SIGKILL of the tree signals the run's cgroup at one instant (cgroup.kill, or frozen first) and stops the rest
of the tree with SIGSTOP before it is killed, so a forking tree cannot outrun it; a SIGTERM is one pass.

Everything before the fork delays the first line of ``main()``, so that path imports nothing beyond ``os`` and
``sys`` (already loaded at interpreter start), the two small sibling modules and ``_ctypes`` for ``prctl``;
the monitor imports the rest after the fork, in parallel with the task, and neither process imports ``json``
or ``signal`` (re and enum cost milliseconds of CPU per run: the run rate on 2 cores is bounded by that CPU).
"""

from __future__ import annotations  # annotations are never evaluated: no typing import, no cost

import os
import sys

TYPE_CHECKING = False  # typing itself costs an import before main(); only the type checker reads these
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn, Sequence

try:  # imported as part of the package (the benchmarks read its constants)
    from . import _contain as contain
    from . import _wire as wire
except ImportError:  # run by path: this file's folder is sys.path[0], so these modules are top-level
    import _contain as contain  # type: ignore[no-redef]
    import _wire as wire  # type: ignore[no-redef]

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SIGKILL = 9
SIGTERM = 15
SIGUSR1 = 10
SIGSTOP = 19
SIGCONT = 18
# When the supervisor is gone nobody waits for a graceful exit; a short grace keeps "within seconds" true.
ORPHAN_GRACE_S = 2.0
# prctl built once by a fork server (_forkserver.py) for all the runs it forks; else built per run
PRCTL: Callable[..., int] | None = None
# Set by a fork server: the monitor's parent is the server, whose death must not stop the run, so the
# supervisor's death is noticed by CONTROL_FD's EOF alone (the supervisor holds its only write end).
FORKED = False


def _load_prctl() -> Callable[..., int]:
    """libc's prctl, the one thing before the fork that needs an import (it has no os-level wrapper).

    ``import ctypes`` costs ~1.5 ms of a ~7 ms interpreter start, paid before the first line of every
    ``main()``; ``_ctypes`` alone costs ~0.4 ms. This builds the same function object ``ctypes.CDLL`` would
    (a cdecl function pointer returning int, looked up in the process's own symbols) from ``_ctypes``
    directly, and falls back to ``ctypes`` should a Python release change those internals.
    """
    try:
        import _ctypes

        class _Int(_ctypes._SimpleCData):
            _type_ = "i"

        class _Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = _Int

        class _Self:
            _handle = _ctypes.dlopen(None, os.RTLD_LOCAL)  # type: ignore[arg-type]

        return _Function(("prctl", _Self()))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - any surprise in the fast path: take the documented API
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl


def _task_traceback() -> str:
    """The traceback of the exception being handled, starting at the task's own code.

    The first frames are this file's (the call of ``main()`` or the import of main.py): they say nothing to
    the task's author, so they are left out. A SyntaxError in main.py keeps no frame at all; its own text
    names the file and line.
    """
    import traceback

    exc = sys.exc_info()[1]
    if exc is None:  # called outside an except block: nothing to format
        return ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _run_task(mode: str, task: str, home: str, report_fd: int) -> NoReturn:
    """Child side: import the task and call its function. Never returns."""
    # The task must not see the shim's folder (the supervisor package) on sys.path: HOME comes first so
    # `import Tasks.NAME.helper` works exactly as in the original design.
    sys.path[0] = home
    code = 0
    record: dict[str, object] = {"kind": wire.KIND_TASK, "mode": mode}
    try:
        # The builtin __import__ rather than importlib.import_module: importing the importlib package
        # costs ~1 ms before the first line of main().
        name = "Tasks." + task + ".main"
        __import__(name)
        module = sys.modules[name]
        function = getattr(module, mode, None)
        if function is None and mode == "initialize":
            record.update(status=wire.STATUS_OK, message=None, note="main.py defines no initialize()")
        elif not callable(function):
            record.update(
                status=wire.STATUS_FAILED,
                phase="load",
                message="Tasks/%s/main.py defines no function %s()" % (task, mode),
            )
            code = 1
        else:
            result = function()
            record.update(status=wire.STATUS_OK, message=None if result is None else str(result))
    except SystemExit as exc:
        # sys.exit() inside main(): 0/None is success, anything else is a failure with that code.
        status = exc.code
        if status is None or status == 0:
            record.update(status=wire.STATUS_OK, message=None)
        else:
            code = status if isinstance(status, int) else 1
            record.update(status=wire.STATUS_FAILED, message="main() called sys.exit(%r)" % (status,))
    except BaseException:  # noqa: BLE001 - the task's traceback is the message, whatever it raised
        record.update(status=wire.STATUS_FAILED, message=_task_traceback())
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # the task may have closed its own stdio
        pass
    try:
        os.write(report_fd, wire.json_line(record))
    except OSError:
        pass
    # Normal interpreter exit so the task's atexit handlers and logging flush still run.
    sys.exit(code)


# --- containment without a cgroup: SIGSTOP passes over the tree (the cgroup side is _contain.py) ----------


def signal_stopped_tree(root: int, sig: int) -> list[int]:
    """Signal every descendant of ``root`` after stopping them all with SIGSTOP (no cgroup to freeze).

    Passes repeat until one finds no descendant that is not stopped yet: anything forked meanwhile is found
    by the next pass (a subreaper's escapees stay below it). Then the signal, then SIGCONT so that a
    SIGTERM is acted on; SIGKILL needs no SIGCONT. Bounded: a tree that outruns 200 passes is signalled as
    far as it was seen, and the caller repeats.
    """
    stopped = {}
    for _ in range(200):
        fresh = [pid for pid in contain.descendants(root) if pid not in stopped]
        if not fresh:
            break
        for pid in contain.signal_all(fresh, SIGSTOP):
            stopped[pid] = True
    hit = contain.signal_all(list(stopped), sig)
    if sig != SIGKILL:
        contain.signal_all(hit, SIGCONT)
    return hit


def _monitor(
    child: int,
    *,
    report_fd: int,
    control_fd: int,
    grace_s: float,
    wake: tuple[int, int],
    kill: tuple[str, str] | None = None,
    groups: Sequence[str] = (),
    parents: Sequence[str] = (),
) -> NoReturn:
    """Parent side: supervise ``child`` and everything it starts; exit when none of it is left.

    One function on purpose (the one exception to the package's 60-line rule, see tests/test_sizes.py): it
    runs once per run in a fresh interpreter, and its state (the child's status, the stop reason, the kill
    deadline, what was signalled) is shared by a signal handler, the reaper and the select loop. Kept as
    locals and closures, that state needs no class, no module globals and no import beyond the stdlib
    modules it already has, and the loop reads it at local-variable speed; split into module functions it
    would have to travel in an object or in globals a signal handler writes.
    """
    try:
        import _signal as signal  # the C module: ``signal`` itself imports enum, milliseconds per run
        import select
        import time
    except MemoryError as exc:  # no memory for the monitor: the run cannot be supervised, so it does not start
        _cannot_start(report_fd, wire.STAGE_MONITOR, exc, child=child)

    me = os.getpid()
    wake_r, wake_w = wake
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    requests = []  # (grace_s, reason) asked for by signals; the loop acts on them

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGUSR1:
            requests.append((ORPHAN_GRACE_S, wire.STOP_SUPERVISOR_GONE))
        elif signum == signal.SIGTERM:
            requests.append((grace_s, wire.STOP_SIGTERM))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake select() through the wakeup fd
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the supervisor's terminal is its to handle
    if os.getppid() == 1:
        requests.append((ORPHAN_GRACE_S, wire.STOP_SUPERVISOR_GONE))

    child_status = None
    leftovers = 0  # processes still alive when the task's own process ended
    signalled = set()
    stop_reason = None
    supervisor_gone = False  # then nobody else removes the run's cgroups
    kill_deadline = None  # monotonic time at which SIGTERM escalates to SIGKILL
    watch = [control_fd, wake_r]

    def reap() -> bool:
        nonlocal child_status
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False  # no children at all: the tree is gone
            if pid == 0:
                return True
            if pid == child:
                child_status = status

    def signal_tree(sig: int) -> list[int]:
        # SIGTERM is a request: one pass over the tree (and the run's cgroup) is enough, and a graceful stop
        # stays as cheap as a killpg. SIGKILL must win against a tree that forks faster than it can be
        # listed: the run's cgroup is killed at one instant (cgroup.kill, or frozen first), then the tree
        # below the monitor (anything outside the group) is stopped with SIGSTOP before it is killed.
        if sig != signal.SIGKILL:
            pids = contain.signal_all(contain.group_pids(kill[1]) if kill is not None else [], sig)
            pids += contain.signal_all(contain.descendants(me), sig)
        else:
            pids = contain.signal_group(kill[0], kill[1], sig) if kill is not None else []
            pids += signal_stopped_tree(me, sig)
        signalled.update(pids)
        return pids

    def begin_stop(grace: float, reason: str) -> None:
        nonlocal stop_reason, kill_deadline, supervisor_gone
        supervisor_gone = supervisor_gone or reason == "supervisor-gone"
        if stop_reason is None:
            stop_reason = reason
        deadline = time.monotonic() + grace
        if kill_deadline is not None and kill_deadline <= deadline:
            return  # already stopping at least this urgently
        kill_deadline = deadline
        signal_tree(signal.SIGKILL if grace <= 0 else signal.SIGTERM)

    while True:
        alive = reap()
        if not alive:
            break
        if child_status is not None and stop_reason is None:
            # main() is done but something it started lives on: that is a leak, end it.
            leftovers = len(contain.descendants(me))
            begin_stop(min(grace_s, ORPHAN_GRACE_S), wire.STOP_LEFTOVERS)
        while requests:
            begin_stop(*requests.pop(0))
        timeout = None
        if kill_deadline is not None:
            timeout = kill_deadline - time.monotonic()
            if timeout <= 0:
                signal_tree(signal.SIGKILL)
                timeout = 0.05  # new forks can race the kill; look again shortly
        try:
            ready, _, _ = select.select(watch, [], [], timeout)
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        if control_fd in ready:
            command = os.read(control_fd, 64)
            if not command:
                watch.remove(control_fd)  # EOF: the supervisor is gone
                begin_stop(min(grace_s, ORPHAN_GRACE_S), wire.STOP_SUPERVISOR_GONE)
            elif wire.CONTROL_KILL in command:
                begin_stop(0, wire.STOP_KILL)
            elif wire.CONTROL_STOP in command:
                begin_stop(grace_s, wire.STOP_REQUESTED)

    report: dict[str, object] = {
        "kind": wire.KIND_MONITOR,
        "exit_code": None,
        "signal": None,
        "stop": stop_reason,
        "leftovers": leftovers,
        "signalled": len(signalled),
    }
    if child_status is not None:
        if os.WIFSIGNALED(child_status):
            report["signal"] = os.WTERMSIG(child_status)
        else:
            report["exit_code"] = os.WEXITSTATUS(child_status)
    try:
        os.write(report_fd, wire.json_line(report))
    except OSError:
        pass
    if supervisor_gone and groups:
        contain.remove_groups(groups, parents)
    os._exit(0)


def _cannot_start(report_fd: int, stage: str, exc: BaseException, *, child: int | None = None) -> NoReturn:
    """The run cannot start for lack of a process, thread, memory or file: say so and exit with
    EXIT_CANNOT_START, so the supervisor retries the start instead of recording a crash. A task process that
    was already forked is killed first (it has not got past the shim's own set-up)."""
    if child is not None:
        try:
            os.kill(child, SIGKILL)
            os.waitpid(child, 0)
        except OSError:
            pass
    try:
        os.write(report_fd, wire.start_failure_line(stage, exc))
    except OSError:
        pass
    os._exit(wire.EXIT_CANNOT_START)


def _enter_containment(plan: wire.ContainmentPlan, *, mode: str, report_fd: int) -> None:
    """Task process side, before any task code: enter the run's cgroups and rlimits, or exit."""
    try:
        contain.enter_containment(plan, os.getpid())
    except (OSError, ValueError) as exc:
        if wire.resource_shortage(exc):
            _cannot_start(report_fd, wire.STAGE_CONTAIN, exc)
        # Never run a task outside the limits it was promised: the run fails with the reason.
        os.write(
            report_fd,
            wire.json_line(
                {
                    "kind": wire.KIND_TASK,
                    "mode": mode,
                    "status": wire.STATUS_FAILED,
                    "phase": "contain",
                    "message": "cannot contain the run: %s" % (exc,),
                }
            ),
        )
        os._exit(1)


def main() -> None:
    mode, task, report_fd, control_fd, grace_s, supervisor_pid = wire.parse_argv(sys.argv[1:])
    home = os.getcwd()
    monitor_pid = os.getpid()
    try:
        prctl = PRCTL or _load_prctl()
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if not FORKED:
            prctl(PR_SET_PDEATHSIG, SIGUSR1, 0, 0, 0)
        if os.getppid() != supervisor_pid:
            # The supervisor died before PDEATHSIG was armed: nobody will ever read our report.
            os._exit(wire.EXIT_SUPERVISOR_GONE)
        plan = wire.ContainmentPlan.decode(os.environ.pop(wire.CONTAIN_VAR, None))
        # The monitor's wake-up pipe exists before the fork: a full fd table is then a start failure, not a
        # monitor that dies after main() began.
        wake = os.pipe()
        pid = os.fork()
    except (OSError, MemoryError) as exc:
        if not wire.resource_shortage(exc):
            raise
        _cannot_start(report_fd, wire.STAGE_FORK, exc)
    if pid == 0:
        os.close(control_fd)
        os.close(wake[0])
        os.close(wake[1])
        _enter_containment(plan, mode=mode, report_fd=report_fd)
        # Own process group: a task that kills its own group (killpg(0, ...)) must not take its monitor.
        os.setpgid(0, 0)
        # Only the monitor should hold the report pipe's lifetime; the task's own subprocesses must not.
        os.set_inheritable(report_fd, False)
        # If the monitor itself is SIGKILLed the task must not live on unsupervised.
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
        if os.getppid() != monitor_pid:
            os._exit(wire.EXIT_SUPERVISOR_GONE)
        _run_task(mode, task, home, report_fd)
    else:
        _monitor(
            pid,
            report_fd=report_fd,
            control_fd=control_fd,
            grace_s=grace_s,
            wake=wake,
            kill=plan.kill,
            groups=[path.rsplit("/", 1)[0] for path in plan.join],
            parents=plan.parents,
        )


if __name__ == "__main__":
    main()
