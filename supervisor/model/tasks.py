"""What a task is: its parsed config.ini (``TaskSpec`` and its parts) and the home's taskautomation.ini."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from .notices import HeartbeatSettings, NotifySettings
from .runs import FAILURE_OUTCOMES, Outcome


class CatchUp(str, enum.Enum):
    """What happens to slots missed while the supervisor was down.

    ONCE: one run at the next allowed time, however many slots were missed.
    SKIP: missed slots are dropped; the next run is the next slot on the interval grid.
    """

    ONCE = "once"
    SKIP = "skip"


class AfterOutcome(str, enum.Enum):
    """[Frequency] AfterOutcome: which final outcomes of an upstream run start an ``After`` task.

    OK: ``ok``. FAILED: a failure (``FAILURE_OUTCOMES``). ANY: either. A run that did not run main() to an
    end of its own (skipped, testing, killed, interrupted, missed) never starts one.
    """

    OK = "ok"
    FAILED = "failed"
    ANY = "any"

    def matches(self, outcome: Outcome) -> bool:
        ok, failed = outcome is Outcome.OK, outcome in FAILURE_OUTCOMES
        return ok if self is AfterOutcome.OK else failed if self is AfterOutcome.FAILED else ok or failed


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
class Calendar:
    """[Frequency] SkipDates / SkipHolidays: local dates (in the task's zone) on which no slot runs.

    ``dates`` are single dates, ``yearly`` month-days that repeat every year, ``ranges`` inclusive
    (first, last) date pairs; ``holidays`` are ``COUNTRY`` or ``COUNTRY-SUBDIVISION`` codes of the
    ``holidays`` package (``scheduling.calendar`` looks them up). Empty = every date runs.
    """

    dates: frozenset[date] = frozenset()
    yearly: frozenset[tuple[int, int]] = frozenset()
    ranges: tuple[tuple[date, date], ...] = ()
    holidays: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.dates or self.yearly or self.ranges or self.holidays)


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits. None means no limit."""

    timeout_s: float | None = 3600.0  # wall clock, monotonic; 0 in config.ini means None
    kill_grace_s: float = 10.0  # SIGTERM -> SIGKILL
    memory_mb: float | None = None  # resident memory of the whole process tree
    cpu_s: float | None = None  # CPU seconds of the whole process tree
    max_processes: int | None = 1024  # processes + threads of one run; 0 in config.ini means None
    # Start gates (scheduling/gates.py): a due run waits in the queue until the machine has this much free
    # memory (MemAvailable) and a 1-minute load per core below this; None means no gate.
    start_if_free_memory_mb: float | None = None
    start_if_load_below: float | None = None


@dataclass(frozen=True)
class Retention:
    """[Output] KeepDays / KeepFiles / KeepMB: how much of Tasks/NAME/Output/ the supervisor keeps
    (``execution.retention`` plans, ``execution.pruning`` removes). None means no such limit; with none set
    the supervisor never touches Output/."""

    keep_days: float | None = None
    keep_files: int | None = None
    keep_mb: float | None = None

    @property
    def enabled(self) -> bool:
        return self.keep_days is not None or self.keep_files is not None or self.keep_mb is not None

    def describe(self) -> str:
        """``KeepDays 7, KeepMB 100`` or ``off``: the words of ``validate`` and the prune log line."""
        limits = (("KeepDays", self.keep_days), ("KeepFiles", self.keep_files), ("KeepMB", self.keep_mb))
        return ", ".join(f"{label} {value:g}" for label, value in limits if value is not None) or "off"


# Outcomes a [Retry] policy retries unless its ``On`` says otherwise (docs/cli.md, "Retries").
DEFAULT_RETRY_ON = frozenset({Outcome.FAILED, Outcome.TIMEOUT, Outcome.CRASHED})

# Outcomes ``On`` may name: the failures of a run, plus a run lost with its worker or supervisor.
RETRYABLE_OUTCOMES = frozenset(
    {Outcome.FAILED, Outcome.TIMEOUT, Outcome.CRASHED, Outcome.MEMORY, Outcome.ENV_FAILED, Outcome.INTERRUPTED}
)


@dataclass(frozen=True)
class RetryPolicy:
    """[Retry]: how often a failed run is tried again, and when (``retry.decide_retry`` applies it).

    ``attempts`` is the number of *retries* after the first attempt (0 = never retry). The delay before
    retry k (k = 1, 2, ...) is ``min(delay_s * backoff ** (k - 1), max_delay_s)`` after the attempt ended.
    """

    attempts: int = 0
    delay_s: float = 30.0
    backoff: float = 2.0
    max_delay_s: float = 3600.0
    on: frozenset[Outcome] = DEFAULT_RETRY_ON


@dataclass(frozen=True)
class FailureBackoff:
    """[Global] FailureBackoff / FailureBackoffAfter: crash-loop damping (``scheduling.damping`` applies it).

    After ``after`` failures in a row a task's next scheduled runs are spaced out, twice as far after each
    further failure, at most an hour; ``enabled=False`` runs it on its schedule however often it fails.
    """

    enabled: bool = True
    after: int = 5


@dataclass(frozen=True)
class TaskSpec:
    """A task's parsed config.ini. Built only by config.parse_task_config.

    Exactly one of ``every`` (EveryXMinutes), ``cron`` (Cron), ``run_at`` (RunAt) and ``after`` (After) is set; the
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
    failure_backoff: FailureBackoff = field(default_factory=FailureBackoff)
    calendar: Calendar = field(default_factory=Calendar)  # SkipDates / SkipHolidays
    after: tuple[str, ...] = ()  # [Frequency] After: the upstream tasks whose final runs start this one
    after_outcome: AfterOutcome = AfterOutcome.OK  # [Frequency] AfterOutcome
    retention: Retention = field(default_factory=Retention)  # [Output], home defaults applied


@dataclass(frozen=True)
class HomeConfig:
    """Optional HOME/taskautomation.ini: settings for the whole supervisor.

    [Supervisor] Installer = uv | pip ; KeepRuns = 1000 ; LogMaxBytes ; LogBackups ; OutputCapBytes ;
                 WatchDebounceSeconds = 1.0 (quiet time after the last change in Tasks/ before a rescan) ;
                 MaxConcurrentRuns = 8 x cores (runs of main() in flight at once; further due runs queue)
    [Limits]     defaults for every task's [Limits] keys
    [Notify]     defaults for every task's [Notify] keys; [Supervisor] HeartbeatUrl, HeartbeatSeconds
    [Retry]      defaults for every task's [Retry] keys
    [Global]     FailureBackoff, FailureBackoffAfter: defaults for every task
    [Output]     KeepDays, KeepFiles, KeepMB: defaults for every task
    [Web]        Listen = HOST:PORT (run the dashboard as a supervised child) ; AllowedHosts = names ;
                 MetricsToken = a bearer token good for GET /metrics only (Prometheus' scrape secret)
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
    launcher: str = "fork"  # "spawn" (a fresh interpreter per run) or "fork" (from a per-env fork server)
    limits: Limits = field(default_factory=Limits)
    notify: NotifySettings = field(default_factory=NotifySettings)
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # defaults for every task's [Retry] keys
    failure_backoff: FailureBackoff = field(default_factory=FailureBackoff)  # defaults for every task
    retention: Retention = field(default_factory=Retention)  # [Output]: defaults for every task
    web_listen: str | None = None  # [Web] Listen: the supervisor runs the dashboard there (HOST:PORT)
    web_allowed_hosts: tuple[str, ...] = ()  # [Web] AllowedHosts: more names the dashboard answers to
    web_metrics_token: str | None = None  # [Web] MetricsToken: a second bearer token, good for /metrics only


@dataclass(frozen=True)
class ConfigResult:
    """A parsed config plus warnings (unknown keys, defaults used) for the log."""

    spec: TaskSpec
    warnings: tuple[str, ...] = ()
