"""Starting one process of a task (a run of main() or an initialize() call) through the executor, and the
table of processes in flight.

Policies:
* A run of main() gets its history row *before* the spawn (it survives a crash); a start retried after a
  transient failure reuses its run id and its open row.
* A start that fails is returned as a ``LaunchFailed`` (its message, whether it is ``transient``, its row);
  what follows (a back-off, the task's error, a failed run) is the caller's policy: the run book's for
  main(), the task book's for initialize(). Transient is what the executor says it is, and any shortage of
  processes, threads, memory or files (``is_transient_start_failure``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..clock import Clock
from ..envs.builder import EnvBuilder
from ..errors import TaskAutomationError
from ..execution.executor import Executor, RunRequest, is_transient_start_failure
from ..execution.params import RunParams, shown
from ..execution.secrets import load_secrets
from ..history.recorder import RunHistory
from ..logsetup import TaskLogs
from ..model import RunMode, RunRecord, RunStarted, Trigger, Upstream, new_run_id
from ..paths import Paths
from .facts import RunFacts
from .lifecycle import InFlight, TaskState
from .slots import QueuedRun


@dataclass(frozen=True)
class LaunchFailed:
    """A start the executor refused; ``record`` is the run's row (open, for a run of main())."""

    message: str
    transient: bool
    record: RunRecord


class Launcher:
    """Owns ``in_flight``: every process the executor runs for the loop, by run id."""

    def __init__(
        self,
        paths: Paths,
        *,
        executor: Executor,
        envs: EnvBuilder,
        history: RunHistory,
        facts: RunFacts,
        task_logs: TaskLogs,
        clock: Clock,
    ) -> None:
        self.paths = paths
        self.executor = executor
        self.envs = envs
        self.history = history
        self.facts = facts
        self.task_logs = task_logs
        self.clock = clock
        self.in_flight: dict[str, InFlight] = {}

    def count(self, mode: RunMode) -> int:
        return sum(1 for flight in self.in_flight.values() if flight.mode is mode)

    def start(
        self,
        st: TaskState,
        *,
        mode: RunMode,
        trigger: Trigger,
        due: datetime | None,
        queued: QueuedRun | None = None,
        run_id: str | None = None,
        params: RunParams = (),
    ) -> str | LaunchFailed:
        """Start ``main()`` or ``initialize()`` of ``st`` in its current env; its run id, or why not.
        ``run_id``: the id already promised for this run (a manual run accepted while the task loaded);
        ``params``: a manual run's --env (its row shows them masked where they are secrets)."""
        assert st.spec is not None and st.env_key is not None and st.folder is not None
        now = self.clock.now()
        reused, upstream = (queued.run_id, queued.upstream) if queued is not None else (None, None)
        params = queued.params if queued is not None else params
        record = RunRecord(
            run_id=reused or run_id or new_run_id(now),
            task=st.name,
            trigger=trigger,
            started=now,
            due=due,
            log_path=self.task_logs.path(st.name),
            attempt=queued.attempt if queued is not None else 1,
            retry_of=queued.retry_of if queued is not None else None,
            upstream=upstream.run_id if upstream is not None else None,
            params=self._shown(st.name, params),
        )
        if mode is RunMode.MAIN and reused is None:
            self.history.opened(record)  # before the spawn: survives a crash
        try:
            self.executor.launch(self._request(st, record, mode, params, upstream))
        except Exception as exc:  # noqa: BLE001 - whatever stopped the start is this task's problem
            message = str(exc) if isinstance(exc, TaskAutomationError) else f"task {st.name!r}: {exc!r}"
            return LaunchFailed(message, is_transient_start_failure(exc), record)
        self.in_flight[record.run_id] = InFlight(
            task=st.name,
            mode=mode,
            env_key=st.env_key,
            record=record,
            spawn_failures=queued.spawn_failures if queued is not None else 0,
            params=params,
        )
        if mode is RunMode.MAIN:
            st.main_run, st.upstream = record.run_id, upstream
            self.facts.announce(RunStarted(task=st.name, run_id=record.run_id, trigger=trigger, spec=st.spec))
        else:
            st.init_run = record.run_id
        return record.run_id

    def _request(
        self, st: TaskState, record: RunRecord, mode: RunMode, params: RunParams, upstream: Upstream | None
    ) -> RunRequest:
        assert st.spec is not None and st.env_key is not None and st.folder is not None
        return RunRequest(
            task=st.name,
            run_id=record.run_id,
            mode=mode,
            trigger=record.trigger,
            task_dir=st.folder.path,
            output_dir=self.paths.task_output(st.name),
            env_key=st.env_key,
            python=self.envs.python_for(st.env_key),
            env_dir=self.envs.env_dir(st.env_key),
            limits=st.spec.limits,
            due=record.due,
            queue=st.spec.queue,
            params=params,
            variables=upstream.variables() if upstream is not None else (),
        )

    def _shown(self, task: str, params: RunParams) -> RunParams:
        """``params`` as the history shows them: masked where the key is in the task's .env files (read only
        for a run that has parameters) or looks like a secret."""
        if not params:
            return ()
        secrets = load_secrets(self.paths.home_secrets, self.paths.task_secrets(task), task=task)
        return shown(params, secrets.values)
