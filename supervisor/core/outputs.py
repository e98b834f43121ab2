"""Output/ retention in the running supervisor: a run-started listener and a run-finished consumer that hand
a task's Output/ to one pruning thread after its run ends.

Policy (docs/cli.md "Output retention"):
* Only tasks whose spec has an [Output] limit (their own or the home's) are pruned; without one Output/ is
  never touched.
* A prune is asked for when a run of main() ends (a process ran: skipped, testing and env-failed rows are
  not runs) and the task has no other run in flight, at most once per ``every_s`` (an hour) per task.
* Never while the task's run is in flight: the thread stops before the next file as soon as a run of the
  task has started (the run-started listener marks it; only the file being removed at that instant can
  overlap the run's first moments).
* One thread, one prune at a time, started on the first prune; a bounded queue (a full one drops the request
  with a line: the next run asks again an hour later). ``close()`` lets a prune in progress finish.
* The result is one line in the task's log and one in the supervisor log (count and bytes freed). Output/
  being a symlink is logged once per task, as a warning, and then left alone.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Callable

from ..clock import Clock
from ..execution.pruning import PruneResult, prune_output
from ..logsetup import TaskLogs
from ..model import Retention, RunFinished, RunStarted

PRUNE_EVERY_S = 3600.0
_QUEUE_SIZE = 256

Pruner = Callable[..., PruneResult]  # prune_output's signature: (output, retention, *, now, busy)


class OutputRetention:
    def __init__(
        self,
        output_of: Callable[[str], Path],
        *,
        clock: Clock,
        logger: logging.Logger,
        task_logs: TaskLogs,
        every_s: float = PRUNE_EVERY_S,
        prune: Pruner = prune_output,
    ) -> None:
        self._output_of = output_of
        self._clock = clock
        self._log = logger
        self._task_logs = task_logs
        self._every_s = every_s
        self._prune = prune
        self._lock = threading.Lock()  # ``_running`` is read by the pruning thread
        self._idle = threading.Condition(self._lock)  # notified when a prune is done
        self._running: dict[str, set[str]] = {}  # task -> run ids in flight
        self._last: dict[str, float] = {}  # task -> monotonic time its last prune was asked for
        self._pending: set[str] = set()  # tasks queued or being pruned
        self._warned: set[str] = set()  # tasks whose Output/ was skipped (logged once)
        self._queue: queue.Queue[tuple[str, Retention] | None] = queue.Queue(_QUEUE_SIZE)
        self._thread: threading.Thread | None = None

    def run_started(self, fact: RunStarted) -> None:
        with self._lock:
            self._running.setdefault(fact.task, set()).add(fact.run_id)

    def busy(self, task: str) -> bool:
        with self._lock:
            return bool(self._running.get(task))

    def __call__(self, fact: RunFinished) -> None:
        with self._lock:
            in_flight = self._running.get(fact.task, set())
            ran = fact.run_id in in_flight
            in_flight.discard(fact.run_id)
            if ran and not in_flight:
                self._running.pop(fact.task, None)
            if not ran or in_flight or fact.spec is None or not fact.spec.retention.enabled:
                return
            if fact.task in self._pending:
                return
            now = self._clock.monotonic()
            last = self._last.get(fact.task)
            if last is not None and now - last < self._every_s:
                return
            self._last[fact.task] = now
            self._pending.add(fact.task)
        self._submit(fact.task, fact.spec.retention)

    def _submit(self, task: str, retention: Retention) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="output-retention", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait((task, retention))
        except queue.Full:
            with self._lock:
                self._pending.discard(task)
            self._log.warning("task %r: Output/ retention skipped this time: %d prunes queued", task, _QUEUE_SIZE)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            task, retention = item
            try:
                self._prune_one(task, retention)
            except Exception:  # noqa: BLE001 - one task's prune must never end the thread for the others
                self._log.exception("task %r: Output/ retention failed", task)
            finally:
                with self._idle:
                    self._pending.discard(task)
                    self._idle.notify_all()

    def _prune_one(self, task: str, retention: Retention) -> None:
        now = self._clock.now().timestamp()
        result = self._prune(self._output_of(task), retention, now=now, busy=lambda: self.busy(task))
        self._report(task, retention, result)

    def _report(self, task: str, retention: Retention, result: PruneResult) -> None:
        line = f"Output/ retention ({retention.describe()}): {result.describe()}"
        if result.skipped is not None:
            if task not in self._warned:
                self._warned.add(task)
                self._log.warning("task %r: %s", task, line)
                self._task_logs.get(task).warning("%s", line)
            return
        level = logging.WARNING if result.problems else logging.INFO
        if result.removed or result.folders or result.problems:
            self._task_logs.get(task).log(level, "%s", line)
            self._log.log(level, "task %r: %s", task, line)
        else:
            self._log.debug("task %r: %s", task, line)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no prune is queued or in progress (tests, and a caller that wants the result logged)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after the prune in progress (queued ones are dropped: the next runs ask again)."""
        if self._thread is None:
            return
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._queue.put(None)
        self._thread.join(timeout_s)
