"""Runs in flight: start them with their history row first, enforce their limits, stop them, and turn each
exit into exactly one recorded and logged outcome.

Owned by the loop thread (``Supervisor``): it decides *when* a task runs; this module handles *a run*.
Policies:
* The history row is written before the spawn, so a supervisor crash leaves an open row that the next start
  marks ``interrupted`` instead of losing the run.
* TimeoutSeconds is wall clock on the monotonic clock: SIGTERM to the whole tree, SIGKILL after
  KillGraceSeconds (the monitor does both). MemoryMB is checked by sampling the tree's resident memory every
  ``LIMIT_SAMPLE_S`` and is a SIGKILL at once: a grace period lets a fast leak grow by gigabytes. CPUSeconds
  is sampled the same way and stops the run like a timeout.
* If a monitor has not ended its run ``BACKSTOP_S`` after the grace of a stop, the supervisor kills the run's
  session, its cgroup and every process carrying the run's cookie itself.
* MaxProcesses and, where a cgroup enforces it, MemoryMB are the kernel's (cgroups.py): each sample reads the
  run's group; a fork refused at the cap is a SIGKILL at once with outcome ``killed``, an OOM kill in the group
  a SIGKILL at once with outcome ``memory``. Without a cgroup the sample counts processes + threads instead.
* History writes never stop the loop: a full disk or a locked database is logged and runs go on.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from .cgroups import CONTAIN_VAR, Containment, RunGroup, containment_plan
from .clock import Clock
from .errors import TaskAutomationError
from .logsetup import TaskLogs
from .outcome import Decision, StopCause, StopRequest, decide
from .records import Records
from .runner import LaunchSpec, ProcessReport, Runner, RunProcess, child_environment, sweep_cookie
from .spec import Limits, Outcome, RunRecord, Trigger

LIMIT_SAMPLE_S = 0.25  # tree memory/CPU checks of a run that has MemoryMB or CPUSeconds
STATS_SAMPLE_S = 1.0  # peak-memory sampling of a run without limits (history only)
BACKSTOP_S = 5.0  # extra wait past a stop's grace before the supervisor kills the run's session itself


@dataclass
class ActiveRun:
    """A process in flight: a run of main() or an initialize() call."""

    process: RunProcess
    record: RunRecord
    mode: str  # "main" or "initialize"
    limits: Limits
    started_mono: float
    deadline: float | None  # monotonic time of TimeoutSeconds
    next_sample: float
    stop: StopRequest | None = None
    backstop: float | None = None  # monotonic time after which the supervisor kills the session itself
    group: RunGroup | None = None  # the run's cgroup(s), if cgroups contain it

    @property
    def env_key(self) -> str:
        return Path(self.process.spec.python).parent.parent.name


def new_run_id(now: datetime) -> str:
    """Sortable and unique: start time plus random bits (two runs can start in the same second)."""
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _has_tree_limits(limits: Limits) -> bool:
    return limits.memory_mb is not None or limits.cpu_s is not None


class Runs:
    """The runs in flight and the history rows they produce."""

    def __init__(self, *, home: Path, records: Records, task_logs: TaskLogs, logger: logging.Logger,
                 clock: Clock, cookie_prefix: str, output_cap_bytes: int, keep_runs: int,
                 on_exit: Callable[[LaunchSpec, ProcessReport], None], containment: Containment) -> None:
        self.home = home
        self.containment = containment
        self.records = records
        self.task_logs = task_logs
        self.log = logger
        self.clock = clock
        self.cookie_prefix = cookie_prefix
        self.keep_runs = keep_runs
        self.runner = Runner(output_cap_bytes=output_cap_bytes, on_output=self._on_output, on_exit=on_exit)
        self.active: dict[str, ActiveRun] = {}
        self.counts: dict[str, int] = {}  # outcomes since start, for the shutdown summary
        self.rows_since_prune = 0

    # ------------------------------------------------------------------ start
    def launch(self, *, task: str, task_dir: Path, output_dir: Path, python: Path, mode: str,
               trigger: Trigger, due: datetime | None, limits: Limits) -> str:
        """Start a run of ``main()`` (recorded) or an ``initialize()`` call (logged only); return its id.

        Raises SpawnError (after recording the run as failed) when the process cannot be started.
        """
        now = self.clock.now()
        run_id = new_run_id(now)
        env = child_environment(os.environ, task=task, run_id=run_id, task_dir=task_dir, output_dir=output_dir,
                                env_dir=python.parent.parent, cookie=self.cookie_prefix + run_id)
        record = RunRecord(run_id=run_id, task=task, trigger=trigger, started=now, due=due,
                           log_path=self.task_logs.path(task))
        if mode == "main":
            self._write(lambda: self.records.start_run(record))  # before the spawn: survives a crash
        group = self._contain(run_id, limits, env)
        spec = LaunchSpec(task=task, run_id=run_id, mode=mode, python=python, home=self.home,
                          kill_grace_s=limits.kill_grace_s, env=env)
        try:
            process = self.runner.launch(spec)
        except TaskAutomationError as exc:
            if group is not None:
                self.containment.remove(group)
            if mode == "main":
                reason = str(exc)
                self._write(lambda: self.records.finish_run(run_id, finished=self.clock.now(),
                                                            outcome=Outcome.FAILED, duration_s=0.0,
                                                            message=reason))
                self._count(Outcome.FAILED)
            raise
        mono = self.clock.monotonic()
        first_sample = (LIMIT_SAMPLE_S if _has_tree_limits(limits) else STATS_SAMPLE_S) / 5
        self.active[run_id] = ActiveRun(process=process, record=record, mode=mode, limits=limits,
                                        started_mono=mono, next_sample=mono + first_sample,
                                        deadline=mono + limits.timeout_s if limits.timeout_s else None,
                                        group=group)
        if mode == "main":
            self.task_logs.get(task).info("[run %s] started (%s)", run_id, trigger.value)
            self.log.info("task %r: run %s started (%s)", task, run_id, trigger.value)
        else:
            self.task_logs.get(task).info("[init %s] started", run_id)
        return run_id

    def _contain(self, run_id: str, limits: Limits, env: dict[str, str]) -> RunGroup | None:
        """Make the run's cgroup (or plan the RLIMIT_NPROC fallback) and tell the shim through ``env``."""
        group = None
        try:
            group = self.containment.create(run_id, max_processes=limits.max_processes,
                                            memory_mb=limits.memory_mb)
        except OSError as exc:
            self.log.warning("run %s: cannot create its cgroup (%s); capping it with RLIMIT_NPROC instead",
                             run_id, exc)
        plan = containment_plan(group=group, nproc=self.containment.nproc_limit(limits.max_processes, group=group),
                                parents=self.containment.parents.values())
        if plan:
            env[CONTAIN_VAR] = plan
        return group

    def record_instant(self, *, task: str, trigger: Trigger, due: datetime, outcome: Outcome,
                       message: str) -> str:
        """A run that starts no process (skipped, testing, env-failed): one complete row at once."""
        now = self.clock.now()
        record = RunRecord(run_id=new_run_id(now), task=task, trigger=trigger, started=now, due=due,
                           finished=now, outcome=outcome, duration_s=0.0, message=message,
                           log_path=self.task_logs.path(task))
        self._write(lambda: self.records.record_instant(record))
        self._count(outcome)
        return record.run_id

    # ------------------------------------------------------------------ limits and stops
    def next_wakeup(self) -> float | None:
        """The earliest monotonic time at which ``enforce`` has something to do."""
        moments = [m for a in self.active.values() for m in (a.deadline, a.next_sample, a.backstop)
                   if m is not None]
        return min(moments) if moments else None

    def enforce(self) -> None:
        """Stop runs past their timeout or over their memory/CPU limit; back up stuck stops."""
        mono = self.clock.monotonic()
        for active in list(self.active.values()):
            limits = active.limits
            if active.stop is None and active.deadline is not None and mono >= active.deadline:
                self.stop(active, StopRequest(StopCause.TIMEOUT, f"timed out after {limits.timeout_s:g} s "
                                                                 f"(TimeoutSeconds={limits.timeout_s:g})"))
            if mono >= active.next_sample:
                active.next_sample = mono + (LIMIT_SAMPLE_S if _has_tree_limits(limits) else STATS_SAMPLE_S)
                self._check_tree(active)
            if active.backstop is not None and mono >= active.backstop:
                # The monitor did not finish the stop in time (it may itself be stuck or gone): kill its
                # session and anything carrying this run's cookie, then keep waiting for the exit report.
                active.backstop = mono + BACKSTOP_S
                self.log.warning("run %s: monitor did not stop its tree in time; killing it directly",
                                 active.record.run_id)
                try:
                    os.killpg(active.process.pid, signal.SIGKILL)
                except OSError:
                    pass
                if active.group is not None:
                    self.containment.kill(active.group)
                sweep_cookie(self.cookie_prefix + active.record.run_id)

    def _check_tree(self, active: ActiveRun) -> None:
        limits = active.limits
        group = active.group
        if group is not None and active.stop is None:
            self._check_group(active, group)
        sample = active.process.sample(count_threads=group is None and limits.max_processes is not None)
        if sample is None or active.stop is not None:
            return
        mb = sample.rss_bytes / 1048576
        if (group is None and limits.max_processes is not None and sample.threads is not None
                and sample.threads >= limits.max_processes):
            self.stop(active, StopRequest(StopCause.PROCESSES, f"process limit reached: {sample.threads} "
                                                               f"processes and threads >= MaxProcesses="
                                                               f"{limits.max_processes}"), kill_now=True)
        elif (limits.memory_mb is not None and (group is None or group.memory_mb is None)
              and mb > limits.memory_mb):
            self.stop(active, StopRequest(StopCause.MEMORY, f"memory limit exceeded: tree resident {mb:.0f} MB "
                                                            f"> MemoryMB={limits.memory_mb:g}"), kill_now=True)
        elif limits.cpu_s is not None and sample.cpu_s > limits.cpu_s:
            self.stop(active, StopRequest(StopCause.CPU, f"CPU limit exceeded: tree used {sample.cpu_s:.1f} "
                                                         f"CPU s > CPUSeconds={limits.cpu_s:g}"))

    def _check_group(self, active: ActiveRun, group: RunGroup) -> None:
        """The kernel's verdicts on the run's cgroup: an OOM kill, or a fork refused at the process cap."""
        usage = self.containment.usage(group)
        if usage.oom_kills and group.memory_mb is not None:
            self.stop(active, StopRequest(StopCause.MEMORY, _oom_detail(group, usage.oom_kills)), kill_now=True)
        elif usage.fork_failures and group.max_processes is not None:
            self.stop(active, StopRequest(
                StopCause.PROCESSES, f"process limit reached: {usage.fork_failures} fork(s) refused at "
                                     f"MaxProcesses={group.max_processes} (cgroup pids controller)"),
                kill_now=True)

    def stop(self, active: ActiveRun, stop: StopRequest, *, kill_now: bool = False) -> None:
        """Ask the run's monitor to stop its tree; the first reason given is the one recorded."""
        if active.stop is None:
            active.stop = stop
        grace = 0.0 if kill_now else active.limits.kill_grace_s
        deadline = self.clock.monotonic() + grace + BACKSTOP_S
        active.backstop = deadline if active.backstop is None else min(active.backstop, deadline)
        active.process.stop(kill_now=kill_now)

    def stop_all(self, stop: StopRequest) -> None:
        for active in self.active.values():
            self.stop(active, stop)

    # ------------------------------------------------------------------ end
    def finish(self, spec: LaunchSpec, report: ProcessReport) -> tuple[ActiveRun, Decision] | None:
        """A run's processes are gone: decide its outcome; record and log it if it was a run of main()."""
        active = self.active.pop(spec.run_id, None)
        if active is None:
            return None
        if active.group is not None:
            self._end_group(active, active.group)
        decision = decide(report, stop=active.stop)
        if active.mode == "main":
            self._record_end(active, decision, self.clock.monotonic() - active.started_mono)
        return active, decision

    def _end_group(self, active: ActiveRun, group: RunGroup) -> None:
        """Before the outcome: an OOM kill that ended the run between samples makes it a ``memory`` run (the
        kernel's SIGKILL alone would read as ``crashed``). Then the group goes."""
        usage = self.containment.usage(group)
        if usage.oom_kills and group.memory_mb is not None and active.stop is None:
            active.stop = StopRequest(StopCause.MEMORY, _oom_detail(group, usage.oom_kills))
        if not self.containment.remove(group, timeout_s=0.5):
            self.log.warning("run %s: its cgroup could not be removed; the next start removes it",
                             active.record.run_id)

    def _record_end(self, active: ActiveRun, decision: Decision, duration: float) -> None:
        run_id, task, process = active.record.run_id, active.record.task, active.process
        self._write(lambda: self.records.finish_run(
            run_id, finished=self.clock.now(), outcome=decision.outcome, duration_s=round(duration, 3),
            exit_code=decision.exit_code, signal=decision.signal, message=decision.message,
            peak_rss_mb=round(process.peak_rss_bytes / 1048576, 1) if process.peak_rss_bytes else None,
            cpu_s=round(process.peak_cpu_s, 3) if process.peak_cpu_s else None))
        self._count(decision.outcome)
        level = logging.INFO if decision.outcome is Outcome.OK and not decision.leftovers else logging.WARNING
        task_log = self.task_logs.get(task)
        task_log.log(level, "[run %s] %s in %.2f s: %s", run_id, decision.outcome.value, duration,
                     decision.summary)
        if decision.outcome is Outcome.FAILED and decision.message and "\n" in decision.message:
            task_log.error("[run %s] traceback:\n%s", run_id, decision.message.rstrip())
        self.log.log(level, "task %r: run %s %s in %.2f s: %s", task, run_id, decision.outcome.value, duration,
                     decision.summary)

    def start_containment(self) -> list[str]:
        """Set up this home's cgroups (removing stale ones); the lines say which mechanism enforces what."""
        return self.containment.start()

    def close_containment(self) -> None:
        self.containment.close()

    def join(self, timeout: float) -> None:
        """Wait for the relay threads of finished runs (each ends when its monitor exits)."""
        self.runner.join(timeout=timeout)

    def kill_everything(self) -> None:
        """Last resort on the way out: SIGKILL every run and anything carrying this home's cookie."""
        for active in self.active.values():
            active.process.stop(kill_now=True)
            if active.group is not None:
                self.containment.kill(active.group)
        self.runner.join(timeout=5.0)
        sweep_cookie(self.cookie_prefix)

    def env_keys(self) -> set[str]:
        return {active.env_key for active in self.active.values()}

    # ------------------------------------------------------------------ history bookkeeping
    def _count(self, outcome: Outcome) -> None:
        self.counts[outcome.value] = self.counts.get(outcome.value, 0) + 1
        self._note_row_written()

    def _note_row_written(self) -> None:
        """Retention while running: prune the history after every ``max(1, KeepRuns // 10)`` finished rows.

        Start-up prunes too (service.py), but a supervisor that runs for months must stay bounded on its own.
        The prune is one whole-table statement, so running it once per KeepRuns/10 rows costs about ten
        rows' worth of work per run, and no task ever holds more than KeepRuns + KeepRuns/10 finished rows
        (plus its schedule anchor, which records.prune always keeps). With a small KeepRuns it runs after
        every row, so the bound is exact.
        """
        self.rows_since_prune += 1
        if self.rows_since_prune >= max(1, self.keep_runs // 10):
            self.rows_since_prune = 0
            self._write(lambda: self.records.prune(keep=self.keep_runs))

    def _write(self, action: Callable[[], object]) -> None:
        try:
            action()
        except TaskAutomationError as exc:
            self.log.error("run history: %s", exc)

    def _on_output(self, spec: LaunchSpec, line: str) -> None:
        """Called from relay threads: logging is thread-safe, and no loop state is touched."""
        self.task_logs.get(spec.task).info("[%s %s] %s", "run" if spec.mode == "main" else "init",
                                           spec.run_id, line)


def _oom_detail(group: RunGroup, kills: int) -> str:
    return (f"memory limit exceeded: the kernel's OOM killer ended {kills} process(es) at MemoryMB="
            f"{group.memory_mb:g} (cgroup v{group.version} memory controller)")
