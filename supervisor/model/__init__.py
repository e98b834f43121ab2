"""Plain data that crosses module lines: frozen dataclasses and enums, no I/O."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Mapping

from ..execution._wire import MonitorReport, TaskReport
from ..notify.model import HeartbeatSettings, NotifySettings


class Outcome(str, enum.Enum):
    """How a run ended; exactly one per run (docs/cli.md, Outcomes)."""

    OK = "ok"  # main() returned
    FAILED = "failed"  # main() raised, or the process exited non-zero
    TIMEOUT = "timeout"  # TimeoutSeconds (wall clock) or CPUSeconds exceeded; tree stopped
    MEMORY = "memory"  # MemoryMB exceeded by the run's whole tree; tree SIGKILLed
    KILLED = "killed"  # stopped on purpose: supervisor shutdown, or its monitor was SIGTERMed from outside
    CRASHED = "crashed"  # died by a signal nobody sent on purpose (segfault, abort, OOM killer)
    SKIPPED = "skipped"  # was due while the previous run was still running
    TESTING = "testing"  # Testing=True: confirmation logged, main() not executed
    ENV_FAILED = "env-failed"  # the task's environment could not be built
    INTERRUPTED = "interrupted"  # the supervisor died while the run was open (found at next start)


# Outcomes that count as a failure in a task's streak of consecutive failures; ``ok`` resets the streak,
# every other outcome (skipped, testing, killed, interrupted) leaves it as it is.
FAILURE_OUTCOMES = frozenset({Outcome.FAILED, Outcome.TIMEOUT, Outcome.MEMORY, Outcome.CRASHED, Outcome.ENV_FAILED})


class Trigger(str, enum.Enum):
    """Why a run started."""

    SCHEDULE = "schedule"
    STARTUP = "startup"  # RunOnStartup, when the task went from not loaded to loaded
    MANUAL = "manual"  # run-now
    RETRY = "retry"  # a further attempt of a failed run ([Retry]); never moves the schedule


class RunMode(str, enum.Enum):
    """Which function of the task a process calls."""

    MAIN = "main"  # a run of main(): recorded in the history
    INITIALIZE = "initialize"  # initialize() after a load, code change or env switch: logged only


class TaskPhase(str, enum.Enum):
    """Where a task is in its lifecycle; ``lifecycle.TRANSITIONS`` lists the allowed moves between phases.

    ``status`` shows the phase's value as the task's state, except that a task with a run of main() in flight
    shows ``running`` and one whose due run waits for a free slot shows ``queued``.
    """

    LOADING = "loading"  # just discovered, being read (transient)
    ENV_BUILDING = "env-building"  # its first env is being built; nothing to run yet
    INITIALIZING = "initializing"  # initialize() runs in its env after a load, code change or env switch
    SCHEDULED = "scheduled"  # loaded: runs when due
    DISABLED = "disabled"  # Enabled=False: not loaded
    ERROR = "error"  # config, source, initialize() or spawn error: not loaded until its files change
    ENV_FAILED = "env-failed"  # its env could not be built and it has no previous env to fall back on
    REMOVED = "removed"  # its folder is gone; forgotten once its last process has ended


class CatchUp(str, enum.Enum):
    """What happens to slots missed while the supervisor was down.

    ONCE: one run at the next allowed time, however many slots were missed.
    SKIP: missed slots are dropped; the next run is the next slot on the interval grid.
    """

    ONCE = "once"
    SKIP = "skip"


@dataclass(frozen=True)
class Window:
    """Local wall-clock window in which a run may *start*.

    ``end`` is inclusive to the end of its minute, so 00:00-23:59 is the whole day; ``start > end``
    crosses midnight (22:00-02:00). ``start == end`` is the single minute start..start+59s.
    """

    start: time = time(0, 0)
    end: time = time(23, 59)

    def contains(self, wall: time) -> bool:
        """True when the wall-clock time ``wall`` (seconds ignored past the minute) is inside."""
        minute = (wall.hour, wall.minute)
        lo = (self.start.hour, self.start.minute)
        hi = (self.end.hour, self.end.minute)
        if lo <= hi:
            return lo <= minute <= hi
        return minute >= lo or minute <= hi

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits. None means no limit."""

    timeout_s: float | None = 3600.0  # wall clock, monotonic; 0 in config.ini means None
    kill_grace_s: float = 10.0  # SIGTERM -> SIGKILL
    memory_mb: float | None = None  # resident memory of the whole process tree
    cpu_s: float | None = None  # CPU seconds of the whole process tree
    max_processes: int | None = 1024  # processes + threads of one run; 0 in config.ini means None


# Outcomes a [Retry] policy retries unless its ``On`` says otherwise (docs/cli.md, "Retries").
DEFAULT_RETRY_ON = frozenset({Outcome.FAILED, Outcome.TIMEOUT, Outcome.CRASHED})
# Outcomes ``On`` may name: the failures of a run, plus a run lost with its worker or supervisor.
RETRYABLE_OUTCOMES = frozenset(
    {Outcome.FAILED, Outcome.TIMEOUT, Outcome.CRASHED, Outcome.MEMORY, Outcome.ENV_FAILED, Outcome.INTERRUPTED}
)


@dataclass(frozen=True)
class RetryPolicy:
    """[Retry]: how often a failed run is tried again, and when (``retry.decide`` applies it).

    ``attempts`` is the number of *retries* after the first attempt (0 = never retry). The delay before
    retry k (k = 1, 2, ...) is ``min(delay_s * backoff ** (k - 1), max_delay_s)`` after the attempt ended.
    """

    attempts: int = 0
    delay_s: float = 30.0
    backoff: float = 2.0
    max_delay_s: float = 3600.0
    on: frozenset[Outcome] = DEFAULT_RETRY_ON


@dataclass(frozen=True)
class TaskSpec:
    """A task's parsed config.ini. Built only by config.parse_task_config.

    Exactly one of ``every`` (EveryXMinutes), ``cron`` (Cron) and ``run_at`` (RunAt) is set; the
    ``triggers`` module turns them into due times. ``run_at`` holds naive wall-clock times that are read
    in ``time_zone`` (None = the machine's zone), like the window and the cron expression.
    """

    name: str
    every: timedelta | None = None
    window: Window = field(default_factory=Window)
    enabled: bool = True
    testing: bool = False
    run_on_startup: bool = False
    queue: str = "default"  # [Global] Queue: the RQ queue its runs go to when the executor is rq
    catch_up: CatchUp = CatchUp.ONCE
    limits: Limits = field(default_factory=Limits)
    notify: NotifySettings = field(default_factory=NotifySettings)  # [Notify], home defaults applied
    cron: str | None = None  # 5 fields, @aliases already expanded
    run_at: tuple[datetime, ...] = ()  # naive local date-times, sorted, distinct
    time_zone: str | None = None  # IANA name
    jitter_s: float = 0.0  # JitterSeconds: stable offset in [0, jitter_s) added to every due time
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class HomeConfig:
    """Optional HOME/taskautomation.ini: settings for the whole supervisor.

    [Supervisor] Installer = uv | pip ; KeepRuns = 1000 ; LogMaxBytes ; LogBackups ; OutputCapBytes ;
                 WatchDebounceSeconds = 1.0 (quiet time after the last change in Tasks/ before a rescan) ;
                 MaxConcurrentRuns = 8 x cores (runs of main() in flight at once; further due runs queue)
    [Limits]     defaults for every task's [Limits] keys
    [Notify]     defaults for every task's [Notify] keys; [Supervisor] HeartbeatUrl, HeartbeatSeconds
    [Retry]      defaults for every task's [Retry] keys
    [Web]        Listen = HOST:PORT (run the dashboard as a supervised child) ; AllowedHosts = names
    """

    installer: str = "uv"
    keep_runs: int = 1000
    log_max_bytes: int = 5 * 1024 * 1024
    log_backups: int = 3
    output_cap_bytes: int = 1024 * 1024  # per run; the rest is counted and dropped
    watch_debounce_s: float = 1.0  # long enough for a file-by-file copy or an editor's save dance
    max_concurrent_runs: int = field(default_factory=lambda: 8 * (os.cpu_count() or 1))
    executor: str = "local"  # "local" (child processes here) or "rq" (RQ workers behind RedisUrl)
    redis_url: str | None = None
    limits: Limits = field(default_factory=Limits)
    notify: NotifySettings = field(default_factory=NotifySettings)
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # defaults for every task's [Retry] keys
    web_listen: str | None = None  # [Web] Listen: the supervisor runs the dashboard there (HOST:PORT)
    web_allowed_hosts: tuple[str, ...] = ()  # [Web] AllowedHosts: more names the dashboard answers to


@dataclass(frozen=True)
class ConfigResult:
    """A parsed config plus warnings (unknown keys, defaults used) for the log."""

    spec: TaskSpec
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunRecord:
    """One row of run history, as stored and as shown by `history --json`."""

    run_id: str
    task: str
    trigger: Trigger
    started: datetime
    due: datetime | None = None
    finished: datetime | None = None
    outcome: Outcome | None = None  # None while the run is open
    duration_s: float | None = None
    exit_code: int | None = None
    signal: str | None = None
    message: str | None = None
    peak_rss_mb: float | None = None
    cpu_s: float | None = None
    log_path: Path | None = None
    attempt: int = 1  # 1 = the run itself; 2, 3, ... = its retries
    retry_of: str | None = None  # a retry's first attempt's run id


@dataclass(frozen=True)
class EnvStatus:
    """Where a task's environment stands, as the env manager reports it."""

    key: str
    python: Path | None  # the env's interpreter when ready
    ready: bool
    error: str | None = None


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one process of a task: a run of main() or an initialize() call."""

    task: str
    run_id: str
    mode: RunMode
    python: Path  # the task env's interpreter
    home: Path
    kill_grace_s: float
    env: Mapping[str, str]


@dataclass(frozen=True)
class ProcessReport:
    """What a finished run's processes said, before any interpretation."""

    run_id: str
    returncode: int  # the monitor's; negative = killed by that signal
    task: TaskReport | None  # the task process's report, None if it never wrote one
    monitor: MonitorReport | None  # the monitor's report, None if it died before writing
    output_bytes: int
    output_dropped: int


@dataclass(frozen=True)
class RunResult:
    """How one process of a task ended, as an executor reports it to the loop."""

    run_id: str
    task: str
    mode: RunMode
    env_key: str | None  # the env the process ran in (it may be collected once no run uses it)
    outcome: Outcome
    summary: str  # one line for the logs
    finished: datetime
    duration_s: float
    message: str | None = None  # returned string or full traceback
    exit_code: int | None = None
    signal: str | None = None
    leftovers: int = 0
    peak_rss_mb: float | None = None
    cpu_s: float | None = None


@dataclass(frozen=True)
class RunFinished:
    """The fact that a run of main() (or a run that could not start) has ended, published to consumers.

    ``record`` is the complete history row. ``consecutive_failures`` counts the task's final attempts in a
    row whose outcome is in ``FAILURE_OUTCOMES``, this one included; ``ok`` resets it to 0. ``final`` is
    False for an attempt that will be retried.
    """

    task: str
    run_id: str
    trigger: Trigger
    outcome: Outcome
    record: RunRecord
    consecutive_failures: int
    attempt: int = 1
    final: bool = True
    summary: str = ""
    leftovers: int = 0
    spec: TaskSpec | None = None  # the task's config when the run ended (None if the task is not known)


@dataclass(frozen=True)
class RunStarted:
    """The fact that a run of main() has just been started, published to the loop's run-started listeners
    (the healthchecks ``/start`` ping). Listeners run on the loop thread and must not block."""

    task: str
    run_id: str
    trigger: Trigger
    spec: TaskSpec
