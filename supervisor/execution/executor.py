"""Where runs execute: the ``Executor`` seam and ``LocalExecutor``, which runs them as child processes here.

The loop decides *when* a task runs and what it may use; an executor starts the process, enforces its limits,
stops it on request, and posts ``RunReported`` to the loop, which never learns where a run executes.

LocalExecutor's policies:
* ``launch`` runs on the supervisor's long-lived loop thread (a spawned monitor's PDEATHSIG is tied to it).
* TimeoutSeconds (monotonic wall clock): SIGTERM to the tree, SIGKILL after KillGraceSeconds (the monitor
  does both). MemoryMB is a sample of the tree's RSS every ``LIMIT_SAMPLE_S`` and a SIGKILL at once (a grace
  lets a fast leak grow by gigabytes); CPUSeconds is sampled too and stops the run like a timeout.
* A run its monitor has not ended ``BACKSTOP_S`` after a stop's grace: the executor kills its session, cgroup
  and every process with its cookie.
* MaxProcesses and, where a cgroup enforces it, MemoryMB are the kernel's (cgroups.py): each sample reads the
  run's group; a fork refused at the cap is a SIGKILL at once with outcome ``killed`` (the message names the
  cap that refused: MaxProcesses, or an outer cgroup's pids.max with its path, pidcaps.py), an OOM kill in
  the group a SIGKILL at once with outcome ``memory``. Without a cgroup the sample counts processes + threads.
* A start that fails for lack of processes, threads, memory or files (``is_transient_start_failure``) is
  transient (a ``SpawnError`` at launch, ``RunResult.start_failure`` from the shim): the loop retries it,
  and never gives up a run's cgroup for the RLIMIT_NPROC fallback because of it.
* The first stop reason given is the one the outcome reports.
* Secrets (the task's .env files) are in every process's environment; every line the run prints, its message
  and summary are masked before the task log or the history, with the secrets it was given at launch.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping, Protocol

from ..clock import Clock
from ..errors import SpawnError
from ..events import Event, RunReported
from ..logsetup import FILE_ONLY, TaskLogs
from ..model import Limits, ProcessLaunch, RunMode, RunResult, Trigger
from ._wire import resource_shortage
from .cgroups import CONTAIN_VAR, Containment, RunGroup, containment_plan
from .forkserver import ForkPool
from .outcome import ProcessReport, StopCause, StopRequest, decide_outcome
from .params import RunParams, hidden_values
from .pidcaps import refusal_detail
from .runner import Runner, RunProcess, child_environment, sweep_cookie
from .secrets import NO_MASKER, Masker, SecretStore

LIMIT_SAMPLE_S = 0.25  # tree memory/CPU checks of a run that has MemoryMB or CPUSeconds
STATS_SAMPLE_S = 1.0  # peak-memory sampling of a run without limits (history only)
BACKSTOP_S = 5.0  # extra wait past a stop's grace before the executor kills the run's session itself


@dataclass(frozen=True)
class RunRequest:
    """What the loop asks an executor for: one run of main() or one initialize() call, wherever it executes.

    A ``LocalExecutor`` turns it into a ``ProcessLaunch`` (model/runs.py) for its runner; a remote executor
    sends it to a worker, which does the same there.
    """

    task: str
    run_id: str
    mode: RunMode
    trigger: Trigger
    task_dir: Path
    output_dir: Path
    env_key: str
    python: Path  # the env's interpreter
    env_dir: Path
    limits: Limits
    due: datetime | None = None  # the scheduled slot (None for a manual run): names the slot's job elsewhere
    queue: str = "default"  # [Global] Queue: where a remote executor sends the run
    variables: tuple[tuple[str, str], ...] = ()  # more environment variables of the run (TASK_UPSTREAM_*)
    params: RunParams = ()  # run-now --env: this run's own variables (execution/params.py), real values


class Executor(Protocol):
    """Runs processes for the loop. Every method is called on the loop thread only."""

    def launch(self, request: RunRequest) -> None:
        """Start it; raise a TaskAutomationError (``transient`` set where retrying may help) if it cannot."""

    def stop(self, run_id: str, stop: StopRequest, *, kill_now: bool = False) -> None:
        """Ask a run to stop (SIGTERM, grace, SIGKILL; or SIGKILL at once)."""

    def stop_all(self, stop: StopRequest) -> None: ...

    def enforce(self) -> None:
        """Apply limits and back-stops that are due (called every loop turn)."""

    def next_wakeup(self) -> float | None:
        """The monotonic time at which ``enforce`` next has something to do; None = nothing."""

    def waiting_on(self, run_id: str) -> str | None:
        """What a launched run still waits for before it starts (shown as state ``queued``); None = started."""

    def recover(self) -> list[int]:
        """Kill what a previous supervisor of this home left running; the pids (or ids) it killed."""

    def close(self) -> None:
        """Last resort on the way out: kill every run still in flight and wait for the reports' threads."""


@dataclass
class _Active:
    process: RunProcess
    request: RunRequest
    started_mono: float
    deadline: float | None  # monotonic time of TimeoutSeconds
    next_sample: float
    stop: StopRequest | None = None
    backstop: float | None = None  # monotonic time after which the executor kills the session itself
    group: RunGroup | None = None  # the run's cgroup(s), if cgroups contain it
    masker: Masker = NO_MASKER


def is_transient_start_failure(exc: BaseException) -> bool:
    """Whether a failed launch is worth retrying: the error says so (``transient``), or it is a shortage of
    processes, threads, memory or files wherever in the launch it happened."""
    return bool(getattr(exc, "transient", False)) or resource_shortage(exc)


def _has_tree_limits(limits: Limits) -> bool:
    return limits.memory_mb is not None or limits.cpu_s is not None


class LocalExecutor:
    """Runs each process as a contained child of this supervisor (runner.py + the in-env shim)."""

    def __init__(
        self,
        *,
        home: Path,
        cookie_prefix: str,
        task_logs: TaskLogs,
        logger: logging.Logger,
        clock: Clock,
        post: Callable[[Event], None],
        output_cap_bytes: int,
        containment: Containment,
        runner_factory: Callable[..., Runner] = Runner,
        secrets: SecretStore | None = None,
        fork_pool: ForkPool | None = None,  # [Supervisor] Launcher = fork: runs forked by per-env servers
    ) -> None:
        self.home = home
        self.fork_pool = fork_pool
        self.containment = containment
        self.task_logs = task_logs
        self.log = logger
        self.clock = clock
        self.post = post
        self.cookie_prefix = cookie_prefix
        self.runner = runner_factory(
            output_cap_bytes=output_cap_bytes,
            on_output=self._on_output,
            on_exit=self._on_exit,
            **({} if fork_pool is None else {"popen": fork_pool.popen}),
        )
        self.active: dict[str, _Active] = {}
        self.secrets = secrets
        # run id -> masker, read by relay threads (a dict lookup; written on the loop thread before the spawn)
        self._maskers: dict[str, Masker] = {}

    def launch(self, request: RunRequest) -> None:
        base: Mapping[str, str] = os.environ
        masker = NO_MASKER
        secrets: Mapping[str, str] = {}
        if self.secrets is not None:
            values, masker = self.secrets.get(request.task)
            secrets = values.values
            base = {**os.environ, **secrets}  # TASK_* set by child_environment still win
        if request.params:  # run-now --env wins over .env; a hidden value is masked in the output too
            base = {**base, **dict(request.params)}
            if hidden := hidden_values(request.params, secrets):
                masker = Masker([*secrets.values(), *hidden])
        self._maskers[request.run_id] = masker
        try:
            self._spawn(request, base, masker)
        except BaseException:
            self._maskers.pop(request.run_id, None)
            raise

    def _spawn(self, request: RunRequest, base: Mapping[str, str], masker: Masker) -> None:
        env = child_environment(
            base,
            task=request.task,
            run_id=request.run_id,
            task_dir=request.task_dir,
            output_dir=request.output_dir,
            env_dir=request.env_dir,
            cookie=self.cookie_prefix + request.run_id,
        )
        env.update(request.variables)
        group = self._contain(request.run_id, request.limits, env)
        spec = ProcessLaunch(
            task=request.task,
            run_id=request.run_id,
            mode=request.mode,
            python=request.python,
            home=self.home,
            kill_grace_s=request.limits.kill_grace_s,
            env=env,
        )
        try:
            process = self.runner.launch(spec)  # SpawnError propagates to the loop
        except BaseException:
            if group is not None:
                self.containment.remove(group)
            raise
        mono = self.clock.monotonic()
        limits = request.limits
        first_sample = (LIMIT_SAMPLE_S if _has_tree_limits(limits) else STATS_SAMPLE_S) / 5
        self.active[request.run_id] = _Active(
            process=process,
            request=request,
            started_mono=mono,
            next_sample=mono + first_sample,
            deadline=mono + limits.timeout_s if limits.timeout_s else None,
            masker=masker,
            group=group,
        )
        if request.mode is RunMode.MAIN:
            line = "task %r: run %s started (%s)"
            self.log.info(line, request.task, request.run_id, request.trigger.value, extra=FILE_ONLY)
        # The process runs now: a task log that cannot be written must not make it look as if it did not.
        self._task_line(
            request.task,
            f"[{'run' if request.mode is RunMode.MAIN else 'init'} {request.run_id}] "
            f"started" + (f" ({request.trigger.value})" if request.mode is RunMode.MAIN else ""),
        )

    def _contain(self, run_id: str, limits: Limits, env: dict[str, str]) -> RunGroup | None:
        """Make the run's cgroup (or plan the RLIMIT_NPROC fallback) and tell the shim through ``env``."""
        group = None
        try:
            group = self.containment.create(run_id, max_processes=limits.max_processes, memory_mb=limits.memory_mb)
        except OSError as exc:
            if resource_shortage(exc):  # a moment's shortage: retried, never a run with a weaker cap
                raise SpawnError(f"run {run_id}: cannot create its cgroup: {exc}", transient=True) from exc
            self.log.warning("run %s: cannot create its cgroup (%s); capping it with RLIMIT_NPROC instead", run_id, exc)
        plan = containment_plan(
            group=group,
            nproc=self.containment.nproc_limit(limits.max_processes, group=group),
            parents=self.containment.parents.values(),
            nofile=self.containment.task_nofile,
        )
        if plan:
            env[CONTAIN_VAR] = plan
        return group

    # ------------------------------------------------------------------ limits and stops
    def next_wakeup(self) -> float | None:
        moments = [m for a in self.active.values() for m in (a.deadline, a.next_sample, a.backstop) if m is not None]
        return min(moments) if moments else None

    def enforce(self) -> None:
        mono = self.clock.monotonic()
        if self.fork_pool is not None:
            self.fork_pool.retire_idle()
        for active in list(self.active.values()):
            limits = active.request.limits
            if active.stop is None and active.deadline is not None and mono >= active.deadline:
                self._stop(
                    active,
                    StopRequest(
                        StopCause.TIMEOUT,
                        f"timed out after {limits.timeout_s:g} s (TimeoutSeconds={limits.timeout_s:g})",
                    ),
                )
            if mono >= active.next_sample:
                active.next_sample = mono + (LIMIT_SAMPLE_S if _has_tree_limits(limits) else STATS_SAMPLE_S)
                self._check_tree(active)
            if active.backstop is not None and mono >= active.backstop:
                # The monitor did not finish the stop in time (it may itself be stuck or gone): kill its
                # session and anything carrying this run's cookie, then keep waiting for the exit report.
                active.backstop = mono + BACKSTOP_S
                self.log.warning(
                    "run %s: monitor did not stop its tree in time; killing it directly", active.request.run_id
                )
                try:
                    os.killpg(active.process.pid, signal.SIGKILL)
                except OSError:
                    pass
                if active.group is not None:
                    self.containment.kill(active.group)
                sweep_cookie(self.cookie_prefix + active.request.run_id)

    def _check_tree(self, active: _Active) -> None:
        limits = active.request.limits
        group = active.group
        if group is not None and active.stop is None:
            self._check_group(active, group)
        sample = active.process.sample(count_threads=group is None and limits.max_processes is not None)
        if sample is None or active.stop is not None:
            return
        mb = sample.rss_bytes / 1048576
        if (
            group is None
            and limits.max_processes is not None
            and sample.threads is not None
            and sample.threads > limits.max_processes
        ):
            # Without a cgroup nothing reports a refused fork; a tree seen over the cap is the runaway (as
            # root, whom RLIMIT_NPROC does not bind, this is the only check).
            self._stop(
                active,
                StopRequest(
                    StopCause.PROCESSES,
                    f"process limit exceeded: {sample.threads} "
                    f"processes and threads > MaxProcesses="
                    f"{limits.max_processes}",
                ),
                kill_now=True,
            )
        elif limits.memory_mb is not None and (group is None or group.memory_mb is None) and mb > limits.memory_mb:
            self._stop(
                active,
                StopRequest(
                    StopCause.MEMORY,
                    f"memory limit exceeded: tree resident {mb:.0f} MB > MemoryMB={limits.memory_mb:g}",
                ),
                kill_now=True,
            )
        elif limits.cpu_s is not None and sample.cpu_s > limits.cpu_s:
            self._stop(
                active,
                StopRequest(
                    StopCause.CPU,
                    f"CPU limit exceeded: tree used {sample.cpu_s:.1f} CPU s > CPUSeconds={limits.cpu_s:g}",
                ),
            )

    def _check_group(self, active: _Active, group: RunGroup) -> None:
        """The kernel's verdicts on the run's cgroup: an OOM kill, or a fork refused at the process cap."""
        usage = self.containment.usage(group)
        if usage.oom_kills and group.memory_mb is not None:
            self._stop(active, StopRequest(StopCause.MEMORY, _oom_detail(group, usage.oom_kills)), kill_now=True)
        elif usage.fork_failures and group.max_processes is not None:
            detail = refusal_detail(group.pids_dir, refused=usage.fork_failures, max_processes=group.max_processes)
            self._stop(active, StopRequest(StopCause.PROCESSES, detail), kill_now=True)

    def stop(self, run_id: str, stop: StopRequest, *, kill_now: bool = False) -> None:
        active = self.active.get(run_id)
        if active is not None:
            self._stop(active, stop, kill_now=kill_now)

    def _stop(self, active: _Active, stop: StopRequest, *, kill_now: bool = False) -> None:
        if active.stop is None:
            active.stop = stop
        grace = 0.0 if kill_now else active.request.limits.kill_grace_s
        deadline = self.clock.monotonic() + grace + BACKSTOP_S
        active.backstop = deadline if active.backstop is None else min(active.backstop, deadline)
        active.process.stop(kill_now=kill_now)

    def stop_all(self, stop: StopRequest) -> None:
        for active in self.active.values():
            self._stop(active, stop)

    # ------------------------------------------------------------------ end
    def _on_exit(self, spec: ProcessLaunch, report: ProcessReport) -> None:
        """Relay thread: the processes are gone; the outcome is decided on the loop thread (it owns stops)."""
        self.post(RunReported(lambda: self._settle(spec.run_id, report)))

    def _settle(self, run_id: str, report: ProcessReport) -> RunResult | None:
        active = self.active.pop(run_id, None)
        if active is None:
            return None
        if active.group is not None:
            self._end_group(active, active.group)
        self._maskers.pop(run_id, None)
        decision = decide_outcome(report, stop=active.stop)
        process, request, mask = active.process, active.request, active.masker.mask
        return RunResult(
            run_id=run_id,
            task=request.task,
            mode=request.mode,
            env_key=request.env_key,
            outcome=decision.outcome,
            summary=mask(decision.summary),
            finished=self.clock.now(),
            duration_s=round(self.clock.monotonic() - active.started_mono, 3),
            message=mask(decision.message) if decision.message is not None else None,
            exit_code=decision.exit_code,
            signal=decision.signal,
            leftovers=decision.leftovers,
            peak_rss_mb=round(process.peak_rss_bytes / 1048576, 1) if process.peak_rss_bytes else None,
            cpu_s=round(process.peak_cpu_s, 3) if process.peak_cpu_s else None,
            start_failure=mask(decision.start_failure) if decision.start_failure is not None else None,
        )

    def _end_group(self, active: _Active, group: RunGroup) -> None:
        """Before the outcome: an OOM kill that ended the run between samples makes it a ``memory`` run (the
        kernel's SIGKILL alone would read as ``crashed``). Then the group goes."""
        usage = self.containment.usage(group)
        if usage.oom_kills and group.memory_mb is not None and active.stop is None:
            active.stop = StopRequest(StopCause.MEMORY, _oom_detail(group, usage.oom_kills))
        if not self.containment.remove(group, timeout_s=0.5):
            self.log.warning(
                "run %s: its cgroup could not be removed; the next start removes it", active.request.run_id
            )

    def waiting_on(self, run_id: str) -> str | None:
        return None  # a local run starts at launch

    def recover(self) -> list[int]:
        """Sweep what a crashed supervisor of this home left, then set up (and log) this home's containment:
        its stale cgroups are killed and removed there."""
        killed = sweep_cookie(self.cookie_prefix)
        for line in self.containment.start():  # which mechanism enforces pids, memory and the kill
            if line.startswith("WARNING: "):
                self.log.warning("containment: %s", line[len("WARNING: ") :])
            else:
                self.log.info("containment: %s (tree samples every %.2f s)", line, LIMIT_SAMPLE_S)
        return killed

    def close(self) -> None:
        """Whatever happens on the way, the home's cgroups are removed last (a run group left behind by a
        failed removal goes with them)."""
        try:
            for active in self.active.values():
                active.process.stop(kill_now=True)
                if active.group is not None:
                    self.containment.kill(active.group)
            self.runner.join(timeout=5.0)
            if self.fork_pool is not None:  # after the runs: a server reports its children's exits
                self.fork_pool.close()
            sweep_cookie(self.cookie_prefix)
        finally:
            self.containment.close()

    def _on_output(self, spec: ProcessLaunch, line: str) -> None:
        """Called from relay threads: logging is thread-safe, and no loop state is touched."""
        line = self._maskers.get(spec.run_id, NO_MASKER).mask(line)
        self._task_line(spec.task, f"[{'run' if spec.mode is RunMode.MAIN else 'init'} {spec.run_id}] {line}")

    def _task_line(self, task: str, line: str) -> None:
        """One line in the task's log. Never raises: a relay thread that died here would never report its
        run's end."""
        try:
            self.task_logs.get(task).info("%s", line)
        except Exception:  # noqa: BLE001 - the line is lost; the run and its report are not
            pass


def _oom_detail(group: RunGroup, kills: int) -> str:
    return (
        f"memory limit exceeded: the kernel's OOM killer ended {kills} process(es) at MemoryMB="
        f"{group.memory_mb:g} (cgroup v{group.version} memory controller)"
    )
