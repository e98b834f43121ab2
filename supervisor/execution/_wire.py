"""The protocol between the supervisor (runner.py) and the in-env shim (_shim.py), in one place.

Stdlib only and cheap to import: the shim runs in the task's own interpreter, loads this file by name from
its own folder before it forks, and every millisecond here delays the first line of ``main()``. So nothing
here imports anything at module level (no json, enum or dataclasses: each costs milliseconds per run); the
report types are small immutable classes and parsing imports json only on the supervisor's side.

The protocol:

* argv: ``PYTHON -u _shim.py MODE TASK REPORT_FD CONTROL_FD GRACE_S SUPERVISOR_PID`` (``shim_argv``).
* control pipe (supervisor -> monitor): ``CONTROL_STOP`` = SIGTERM the tree, KILL after GRACE_S;
  ``CONTROL_KILL`` = SIGKILL now; EOF = the supervisor is gone.
* report pipe (task and monitor -> supervisor): one JSON line each, ``{"kind": "task", ...}`` and
  ``{"kind": "monitor", ...}``, decoded once into ``TaskReport`` / ``MonitorReport``.
* exit code ``EXIT_SUPERVISOR_GONE``: the shim found its parent gone before it could arm PDEATHSIG.
* exit code ``EXIT_CANNOT_START`` with a ``{"kind": "start", ...}`` line (``StartFailure``): the run could not
  start for lack of processes, threads, memory or files (the shim's own ``fork()``, the monitor's set-up, the
  task process entering its cgroups). main() never began: the supervisor retries the start, it is no outcome.
* environment ``CONTAIN_VAR``: the run's ``ContainmentPlan`` (its cgroups, RLIMIT_NPROC, how to kill it),
  popped by the shim before any task code runs.
"""

from __future__ import annotations

CONTROL_STOP = b"T"
CONTROL_KILL = b"K"
EXIT_SUPERVISOR_GONE = 3
EXIT_CANNOT_START = 4

KIND_TASK = "task"
KIND_MONITOR = "monitor"
KIND_START = "start"
STATUS_OK = "ok"
STATUS_FAILED = "failed"

# Why the monitor stopped its tree (MonitorReport.stop).
STOP_REQUESTED = "stop"  # CONTROL_STOP from the supervisor
STOP_KILL = "kill"  # CONTROL_KILL from the supervisor
STOP_SIGTERM = "sigterm"  # the monitor itself got SIGTERM from outside the supervisor
STOP_SUPERVISOR_GONE = "supervisor-gone"  # control pipe EOF, PDEATHSIG, or re-parented at start
STOP_LEFTOVERS = "leftovers"  # main() returned but processes it started lived on

# Where a start failed (StartFailure.stage).
STAGE_FORK = "fork"  # the shim's fork() of the task process, or what it sets up before it
STAGE_MONITOR = "monitor"  # the monitor's own set-up after the fork (the task process is killed)
STAGE_CONTAIN = "contain"  # the task process entering its cgroups and rlimits

# Linux errnos that mean "not now" rather than "never": the process table, memory or the fd table is full
# for a moment (EAGAIN, ENOMEM, ENFILE, EMFILE). Numbers, so the shim needs no import for them.
SHORTAGE_ERRNOS = frozenset({11, 12, 23, 24})


def resource_shortage(exc: BaseException) -> bool:
    """Whether ``exc`` says a process, thread, memory or file was lacking (a transient start failure).

    ``threading.Thread.start`` raises RuntimeError("can't start new thread") when the kernel refuses the
    thread (EAGAIN), the one shortage that does not arrive as an OSError.
    """
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in SHORTAGE_ERRNOS
    return isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)


def shim_argv(
    *,
    python: str,
    shim: str,
    mode: str,
    task: str,
    report_fd: int,
    control_fd: int,
    grace_s: float,
    supervisor_pid: int,
) -> list[str]:
    """The command line that starts the shim (``parse_argv`` reads it back)."""
    return [python, "-u", shim, mode, task, str(report_fd), str(control_fd), repr(float(grace_s)), str(supervisor_pid)]


def parse_argv(args: list[str]) -> tuple[str, str, int, int, float, int]:
    """``sys.argv[1:]`` of the shim -> (mode, task, report_fd, control_fd, grace_s, supervisor_pid)."""
    mode, task, report_fd, control_fd, grace_s, supervisor_pid = args[:6]
    return mode, task, int(report_fd), int(control_fd), float(grace_s), int(supervisor_pid)


# JSON without ``import json`` (it pulls in re and enum: several ms of CPU per run in each process). A
# report holds only str, int, bool and None values; control characters, quote and backslash are escaped.
_JSON_ESCAPES = {i: "\\u%04x" % i for i in range(32)}
_JSON_ESCAPES.update({34: '\\"', 92: "\\\\"})


def json_line(record: dict[str, object]) -> bytes:
    """One report line, as the shim writes it."""
    items = []
    for key, value in record.items():
        if value is None or isinstance(value, bool):
            text = {None: "null", True: "true", False: "false"}[value]
        elif isinstance(value, int):
            text = str(int(value))
        else:
            text = '"' + str(value).translate(_JSON_ESCAPES) + '"'
        items.append('"' + key + '":' + text)
    return ("{" + ",".join(items) + "}\n").encode("utf-8", "replace")


class _Frozen:
    """Immutable after ``__init__``, compared by value (dataclasses would cost the shim an import)."""

    __slots__: tuple[str, ...] = ()

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in self.__slots__))

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class TaskReport(_Frozen):
    """What the task process said: ``main()``/``initialize()`` returned (``ok``) or raised (``failed``)."""

    __slots__ = ("status", "message")
    status: str | None
    message: str | None

    def __init__(self, *, status: str | None, message: str | None = None) -> None:
        self._set(status=status, message=message)


class MonitorReport(_Frozen):
    """What the monitor said once its tree was gone."""

    __slots__ = ("exit_code", "signal", "stop", "leftovers", "signalled")
    exit_code: int | None  # the task process's exit code, None if it died by a signal or never ran
    signal: int | None  # the signal that killed the task process
    stop: str | None  # one of the STOP_* reasons, None if the run ended by itself
    leftovers: int  # processes alive when the task process ended (killed by the monitor)
    signalled: int  # processes the monitor sent a signal to

    def __init__(
        self,
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        stop: str | None = None,
        leftovers: int = 0,
        signalled: int = 0,
    ) -> None:
        self._set(exit_code=exit_code, signal=signal, stop=stop, leftovers=leftovers, signalled=signalled)


CONTAIN_VAR = "TASKAUTOMATION_CONTAIN"
KILL_V2 = "v2"  # a cgroup v2 group: cgroup.kill, cgroup.freeze
KILL_V1_FREEZER = "v1-freezer"  # a cgroup v1 freezer group: freezer.state


class StartFailure(_Frozen):
    """What the shim said when the run could not start for lack of a resource (main() never began)."""

    __slots__ = ("stage", "message")
    stage: str | None  # one of the STAGE_* names
    message: str  # the cause in words, e.g. "the shim's fork() failed: [Errno 11] Resource temporarily ..."

    def __init__(self, *, stage: str | None, message: str) -> None:
        self._set(stage=stage, message=message)


def start_failure_line(stage: str, exc: BaseException) -> bytes:
    """The report line of a start that failed at ``stage`` because of ``exc``."""
    what = {
        STAGE_FORK: "the shim could not fork the task process",
        STAGE_MONITOR: "the run's monitor could not set itself up",
        STAGE_CONTAIN: "the task process could not enter its cgroups",
    }.get(stage, "the run could not start")
    cause = str(exc) or type(exc).__name__
    return json_line({"kind": KIND_START, "stage": stage, "message": "%s: %s" % (what, cause)})


class ContainmentPlan(_Frozen):
    """How one run is contained, as the supervisor tells the shim (supervisor/cgroups.py makes it).

    Encoded as one "word argument" line per item: ``join FILE`` (a cgroup.procs file the task process
    enters before any task code runs), ``nproc N`` (RLIMIT_NPROC of the task process), ``nofile N`` (the
    soft RLIMIT_NOFILE the task process gets back: the supervisor's own before it raised it), ``kill KIND DIR``
    (how the monitor signals the run's processes at one instant) and ``parent DIR`` (the home's parent
    groups, which a monitor that outlived its supervisor removes when they are empty).
    """

    __slots__ = ("join", "nproc", "kill", "parents", "nofile")
    join: tuple[str, ...]
    nproc: int | None
    kill: tuple[str, str] | None
    parents: tuple[str, ...]
    nofile: int | None

    def __init__(
        self,
        *,
        join: tuple[str, ...] = (),
        nproc: int | None = None,
        kill: tuple[str, str] | None = None,
        parents: tuple[str, ...] = (),
        nofile: int | None = None,
    ) -> None:
        self._set(join=tuple(join), nproc=nproc, kill=kill, parents=tuple(parents), nofile=nofile)

    def encode(self) -> str:
        lines = ["join " + path for path in self.join]
        if self.kill is not None:
            lines.append("kill %s %s" % self.kill)
        if self.nproc is not None:
            lines.append("nproc %d" % self.nproc)
        if self.nofile is not None:
            lines.append("nofile %d" % self.nofile)
        lines += ["parent " + path for path in self.parents]
        return "\n".join(lines)

    @classmethod
    def decode(cls, text: str | None) -> ContainmentPlan:
        """The plan in ``text`` (None or empty: nothing to contain)."""
        join: list[str] = []
        parents: list[str] = []
        nproc: int | None = None
        nofile: int | None = None
        kill: tuple[str, str] | None = None
        for line in (text or "").split("\n"):
            word, _, rest = line.partition(" ")
            if word == "join":
                join.append(rest)
            elif word == "parent":
                parents.append(rest)
            elif word == "nproc":
                nproc = int(rest)
            elif word == "nofile":
                nofile = int(rest)
            elif word == "kill":
                kind, _, path = rest.partition(" ")
                kill = (kind, path)
        return cls(join=tuple(join), nproc=nproc, kill=kill, parents=tuple(parents), nofile=nofile)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_reports(data: bytes) -> tuple[TaskReport | None, MonitorReport | None, StartFailure | None]:
    """Decode the report pipe's content; garbage and missing lines are tolerated (the parent decides)."""
    import json

    task: TaskReport | None = None
    monitor: MonitorReport | None = None
    start: StartFailure | None = None
    for raw in data.splitlines():
        try:
            parsed = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(parsed, dict):
            continue
        if parsed.get("kind") == KIND_TASK:
            task = TaskReport(status=_str(parsed.get("status")), message=_str(parsed.get("message")))
        elif parsed.get("kind") == KIND_MONITOR:
            monitor = MonitorReport(
                exit_code=_int(parsed.get("exit_code")),
                signal=_int(parsed.get("signal")),
                stop=_str(parsed.get("stop")),
                leftovers=_int(parsed.get("leftovers")) or 0,
                signalled=_int(parsed.get("signalled")) or 0,
            )
        elif parsed.get("kind") == KIND_START:
            start = StartFailure(stage=_str(parsed.get("stage")), message=_str(parsed.get("message")) or "")
    return task, monitor, start
