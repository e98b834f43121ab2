"""What a run is and how it ended: outcomes, triggers, the history row, and the facts the loop publishes."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from .tasks import TaskSpec


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
    MISSED = "missed"  # a slot that should have started and could not, for a reason the user did not choose


class MissedReason(str, enum.Enum):
    """Why a ``missed`` row's slots did not run (the ``reason`` of its row; a label of the missed-runs metric)."""

    DOWN = "down"  # the supervisor was not running
    ERROR = "error"  # the task was in error (initialize() failed, a config it cannot run with)
    ENV = "env"  # its env could not be built, or is missing
    QUEUE = "queue"  # a queued run (MaxConcurrentRuns) was dropped because its next slot came
    GATE = "gate"  # a start gate stayed closed until the next slot came


# Outcomes that count as a failure in a task's streak of consecutive failures; ``ok`` resets the streak,
# every other outcome (skipped, testing, killed, interrupted) leaves it as it is.
FAILURE_OUTCOMES = frozenset({Outcome.FAILED, Outcome.TIMEOUT, Outcome.MEMORY, Outcome.CRASHED, Outcome.ENV_FAILED})


class Trigger(str, enum.Enum):
    """Why a run started."""

    SCHEDULE = "schedule"
    STARTUP = "startup"  # RunOnStartup, when the task went from not loaded to loaded
    MANUAL = "manual"  # run-now
    RETRY = "retry"  # a further attempt of a failed run ([Retry]); never moves the schedule
    AFTER = "after"  # [Frequency] After: a run of an upstream task ended (its run id is the row's ``upstream``)


class RunMode(str, enum.Enum):
    """Which function of the task a process calls."""

    MAIN = "main"  # a run of main(): recorded in the history
    INITIALIZE = "initialize"  # initialize() after a load, code change or env switch: logged only


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
    reason: MissedReason | None = None  # a ``missed`` row: why its slots did not run
    slots: int | None = None  # a ``missed`` row: how many slots it stands for (one row per outage or incident)
    upstream: str | None = None  # a run triggered by ``After``: the upstream run's id
    params: tuple[tuple[str, str], ...] = ()  # run-now --env KEY=VALUE, as shown (secret values masked)

    # A row is opened with the plain constructor (run id, task, trigger, start, due, log, attempt) before its
    # process starts, and completed by one of the two derivations below; ``instant`` is a row that never had
    # a process. Every row the loop writes is made this way, so the fields of an ending mean the same
    # everywhere.
    @classmethod
    def instant(
        cls,
        *,
        task: str,
        trigger: Trigger,
        at: datetime,
        outcome: Outcome,
        message: str,
        log_path: Path | None,
        due: datetime | None = None,
    ) -> RunRecord:
        """A run that starts no process (skipped, testing, env-failed): complete at once, zero duration."""
        return cls(
            run_id=new_run_id(at),
            task=task,
            trigger=trigger,
            started=at,
            due=due or at,
            finished=at,
            outcome=outcome,
            duration_s=0.0,
            message=message,
            log_path=log_path,
        )

    def closed_unstarted(self, outcome: Outcome, *, at: datetime, message: str) -> RunRecord:
        """This open row ends without its process having run (its start failed, or it was dropped)."""
        return replace(self, finished=at, outcome=outcome, duration_s=0.0, message=message)

    def finished_with(self, result: RunResult) -> RunRecord:
        """This open row completed by how its process ended."""
        return replace(
            self,
            finished=result.finished,
            outcome=result.outcome,
            duration_s=result.duration_s,
            exit_code=result.exit_code,
            signal=result.signal,
            message=result.message,
            peak_rss_mb=result.peak_rss_mb,
            cpu_s=result.cpu_s,
        )


def new_run_id(now: datetime) -> str:
    """Sortable and unique: start time plus random bits (two runs can start in the same second)."""
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Upstream:
    """The run of an upstream task that started a run of ``[Frequency] After`` (core/chains.py)."""

    task: str
    run_id: str
    outcome: Outcome

    def variables(self) -> tuple[tuple[str, str], ...]:
        """The downstream run's TASK_UPSTREAM_* environment variables (README, How a run executes)."""
        return (
            ("TASK_UPSTREAM_TASK", self.task),
            ("TASK_UPSTREAM_RUN_ID", self.run_id),
            ("TASK_UPSTREAM_OUTCOME", self.outcome.value),
        )


@dataclass(frozen=True)
class EnvStatus:
    """Where a task's environment stands, as the env manager reports it."""

    key: str
    python: Path | None  # the env's interpreter when ready
    ready: bool
    error: str | None = None


@dataclass(frozen=True)
class ProcessLaunch:
    """Everything the runner needs to start one process of a task: a run of main() or an initialize() call.

    An executor builds it from the loop's ``RunRequest`` (execution/executor.py), adding what only the
    machine that runs the process knows: the home there, the kill grace and the child's environment.
    """

    task: str
    run_id: str
    mode: RunMode
    python: Path  # the task env's interpreter
    home: Path
    kill_grace_s: float
    env: Mapping[str, str]


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
    # Set when the process could not start for lack of processes, threads, memory or files (main() never
    # began): a transient start failure the loop retries, not an outcome (``outcome`` is then ``killed``,
    # recorded only when the start is not retried).
    start_failure: str | None = None


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
