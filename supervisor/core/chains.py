"""[Frequency] After in the loop: a task runs when a final run of a task it names ends with its AfterOutcome.

``Chains`` hears every finished run (a consumer of ``RunFacts``, after the history) and keeps a start for each
downstream task; the run book starts it through the path of a due run (``RunBook._start``), so the window,
pausing, Testing, [Retry], [Limits], MaxConcurrentRuns, the start gates and overlap apply as to any due run.
The pure rules (cycles, missing upstreams, the restart rule) are scheduling/chains.py.

Policies:
* Only final attempts count (``RunFinished.final``), of any trigger: scheduled, startup, a retry's last
  attempt, manual, and ``after`` itself (chains of chains). A run that could not run main() to its own end
  (skipped, testing, killed, interrupted) starts nothing.
* A task still loading (its env building, initialize() running) keeps the start until it is loaded; one
  that is disabled, broken or removed drops it.
* Outside its window the start waits for the window's next opening, like an interval slot; a paused task's
  start is dropped (logged), like its due slots. A start that finds the task still running or queued is
  recorded ``skipped`` (trigger ``after``, with the upstream run id), like any overlapping due run.
* Several upstreams: the task runs after each of them (no join). The same upstream run never starts it twice.
* A cycle makes every task on it a config error (checked whenever an After list changes; the tasks load again
  once the cycle is gone); a missing or disabled upstream is a warning.
* Starts waiting here are in memory; when a task is loaded, the restart rule (``catch_up``) runs it once for
  an upstream run it missed while the supervisor was stopping or down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, TypeVar

from ..errors import TaskAutomationError
from ..history.store import HistoryStore
from ..model import RunFinished, RunRecord, TaskPhase, Trigger, Upstream
from ..scheduling.chains import catch_up, find_cycles, upstream_problems
from ..scheduling.triggers import zone_for
from ..scheduling.windows import in_window
from .facts import RunFacts
from .lifecycle import TaskState, is_loaded, is_loading, is_scheduled
from .tasks import TaskBook

CATCH_UP_LOOKBACK = 200  # the downstream's newest rows the restart rule looks through for ``after`` rows
T = TypeVar("T")
Start = Callable[[TaskState, Trigger, datetime, Upstream], None]


@dataclass(frozen=True)
class PendingStart:
    upstream: Upstream
    due: datetime  # the first moment its window allows (the upstream's end, inside the window)


class Chains:
    def __init__(self, book: TaskBook, facts: RunFacts) -> None:
        self.book = book
        facts.consumers += (self.heard,)  # after the history and every other consumer
        self.pending: dict[str, list[PendingStart]] = {}  # downstream task -> its starts, oldest first
        self._shape: object = None  # the After lists and task folders last checked
        self._cycles: dict[str, str] = {}
        self._loaded: set[str] = set()  # After tasks seen loaded (a new name here is a load: the restart rule)
        self._started: dict[tuple[str, str], str] = {}  # (downstream, upstream) -> the upstream run it ran after

    # ------------------------------------------------------------------ hearing runs end (a consumer)
    def heard(self, fact: RunFinished) -> None:
        if not fact.final:
            return
        for st in self.book.tasks.values():
            spec = st.spec
            if spec is None or fact.task not in spec.after or not (is_loaded(st) or is_loading(st)):
                continue  # a task still loading (env, initialize()) keeps the start until it is loaded
            if spec.after_outcome.matches(fact.outcome):
                self._add(st, Upstream(fact.task, fact.run_id, fact.outcome))

    def _add(self, st: TaskState, upstream: Upstream) -> None:
        assert st.spec is not None
        waiting = self.pending.setdefault(st.name, [])
        if any(p.upstream.run_id == upstream.run_id for p in waiting):
            return
        zone = zone_for(st.spec, default=self.book.report.tz)
        waiting.append(PendingStart(upstream, in_window(st.spec.window, self.book.clock.now(), tz=zone)))

    # ------------------------------------------------------------------ the turn (RunBook.start_due)
    def start_due(self, now: datetime, start: Start) -> None:
        """Check the After lists, then start every waiting start that is due through ``start``."""
        self._check()
        for name in list(self.pending):
            st, waiting = self.book.tasks.get(name), self.pending[name]
            if st is None or st.spec is None or not st.spec.after or not (is_loaded(st) or is_loading(st)):
                del self.pending[name]  # unloaded or no longer an After task: its starts go with its schedule
                continue
            if not is_loaded(st) or waiting[0].due > now:
                continue
            first = waiting.pop(0)
            if not waiting:
                del self.pending[name]
            up = first.upstream
            if not is_scheduled(st):
                self.book.report.say(
                    name, logging.INFO, f"task {name!r}: paused: no run after {up.task!r} (run {up.run_id})"
                )
                continue
            self._started[(name, up.task)] = up.run_id
            self.book.guarded(name, start, st, Trigger.AFTER, first.due, up)

    def next_due_in(self, now: datetime, longest: float) -> float:
        """Seconds until the earliest waiting start (at most ``longest``)."""
        dues = [waiting[0].due for waiting in self.pending.values() if waiting]
        return min([longest, *((due - now).total_seconds() for due in dues)])

    # ------------------------------------------------------------------ cycles, missing upstreams, loads
    def _check(self) -> None:
        tasks = self.book.tasks
        after = {
            name: st.spec.after
            for name, st in tasks.items()
            if st.spec is not None and st.spec.after and st.phase not in (TaskPhase.DISABLED, TaskPhase.REMOVED)
        }
        specs = {n: tasks[n].spec if n in tasks else None for n in self.book.folders}
        enabled = {n: spec.enabled if spec is not None else True for n, spec in specs.items()}
        shape = (sorted(after.items()), sorted(enabled.items()))
        if shape != self._shape:
            self._shape = shape
            self._reshape(after, enabled)
        for name, cycle in self._cycles.items():
            st = tasks[name]
            message = self._cycle_message(name, after[name], cycle)
            if st.phase is not TaskPhase.ERROR or st.error != message:
                self.book.set_broken(st, message)
        self._loaded &= set(after)
        for name in after:
            st = tasks[name]
            if not is_loaded(st):
                self._loaded.discard(name)
            elif name not in self._loaded:
                self._loaded.add(name)
                self.book.guarded(name, self._catch_up, st)

    def _reshape(self, after: dict[str, tuple[str, ...]], enabled: dict[str, bool]) -> None:
        """The After lists changed: find the cycles again, reload tasks freed from one, warn about upstreams."""
        freed = set(self._cycles)
        self._cycles = find_cycles(after)
        for name in sorted(freed - set(self._cycles)):
            st, folder = self.book.tasks.get(name), self.book.folders.get(name)
            if st is not None and folder is not None and st.phase is TaskPhase.ERROR:
                # Its files did not change, so no rescan would load it again: the task book's own load path.
                self.book.guarded(name, self.book._load, name, folder, code_changed=True)
        for name, ups in after.items():
            for warning in upstream_problems(name, ups, enabled=enabled):
                self.book.report.report_once(self.book.tasks[name], warning, logging.WARNING)

    def _cycle_message(self, name: str, after: tuple[str, ...], cycle: str) -> str:
        config = self.book.paths.task_config(name)
        return f"task {name!r}: {config}: [Frequency] After = {', '.join(after)!r}: a cycle {cycle}"

    def _catch_up(self, st: TaskState) -> None:
        """The restart rule (scheduling/chains.py) for a task that was just loaded."""
        assert st.spec is not None
        none: list[RunRecord] = []
        rows = self._read(lambda store: store.history(st.name, limit=CATCH_UP_LOOKBACK), none)
        for up in st.spec.after:
            last = self._last_finished(up)
            run = catch_up(last, rows, st.spec.after_outcome)
            if run is None or run.outcome is None or self._started.get((st.name, up)) == run.run_id:
                continue
            self.book.report.say(
                st.name,
                logging.INFO,
                f"task {st.name!r}: run {run.run_id} of {up!r} ended {run.outcome.value} and no run after it "
                "started (the supervisor stopped): it runs once now",
            )
            self._add(st, Upstream(up, run.run_id, run.outcome))

    def _last_finished(self, task: str) -> RunRecord | None:
        return self._read(lambda store: store.last_finished(task), None)

    def _read(self, action: Callable[[HistoryStore], T], default: T) -> T:
        try:
            return action(self.book.history.records)
        except TaskAutomationError as exc:  # an unreadable history: no catch-up, as after a fresh start
            self.book.report.log.error("run history: %s", exc)
            return default
