"""The timer of the timed notices (``watch.py``): its own thread, so a silent task is noticed even though
nothing of it runs any more, and the loop thread never waits for a history read or a deadline.

- The loop thread only records facts (``started``, ``finished``) under the lock and pokes the timer.
- The timer thread reads which tasks to watch (``tasks``: the loaded ones with a timed key, from the loop's
  published snapshot), seeds each new one from the history (``seed``: its own read-only connection), sleeps
  until the earliest deadline (at most ``REFRESH_S``, to see new tasks) and has every notice that fell due
  rendered by ``prepare`` (outside the lock: it reads the run's log). The prepared notice is queued under
  the lock, and only if it still holds (``watch.still_due``): a reminder rendered while the loop recorded the
  ok run is dropped instead of arriving after the recovery. Sending is the delivery thread's business.
- Time is the injected ``now``; tests call ``tick()`` with a fake clock and no thread at all.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import datetime
from typing import Callable, Mapping

from ..history.store import HistoryStore
from ..model import NotifySettings, Outcome
from . import watch as rules
from .model import RunFact
from .watch import OK_RUNS_KEPT, TaskWatch, TimedNotice, WatchSeed

REFRESH_S = 2.0
_RAN = tuple(o for o in Outcome if o is not Outcome.MISSED)


class TimedNotices:
    def __init__(
        self,
        *,
        prepare: Callable[[TimedNotice], Callable[[], None]],
        now: Callable[[], datetime],
        logger: logging.Logger,
        tasks: Callable[[], Mapping[str, NotifySettings]] = dict,
        seed: Callable[[str], WatchSeed] = lambda task: WatchSeed(),
    ) -> None:
        self._prepare = prepare
        self._now = now
        self._log = logger
        self._tasks = tasks
        self._seed = seed
        self._lock = threading.Lock()
        self._watches: dict[str, TaskWatch] = {}
        self._wanted: Mapping[str, NotifySettings] | None = None
        self._poke = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-timer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, timeout: float = 2.0) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def watch_of(self, task: str) -> TaskWatch | None:
        with self._lock:
            return self._watches.get(task)

    # ------------------------------------------------------------------ called on the loop thread
    def started(self, task: str, run_id: str, settings: NotifySettings) -> None:
        now = self._now()
        with self._lock:
            self._watches[task] = rules.started(self._current(task, settings, now), run_id, now)
        self._poke.set()

    def finished(self, fact: RunFact, settings: NotifySettings, *, failure_standing: bool) -> bool:
        """Record ``fact``; True when it ends a silence (the caller sends the recovery)."""
        now = self._now()
        with self._lock:
            after, recovered = rules.finished(
                self._current(fact.task, settings, now), fact, now, failure_standing=failure_standing
            )
            self._watches[fact.task] = after
        self._poke.set()
        return recovered

    def _current(self, task: str, settings: NotifySettings, now: datetime) -> TaskWatch:
        known = self._watches.get(task)
        if known is None:
            return TaskWatch(settings, since=now)
        return known if known.settings == settings else replace(known, settings=settings)

    # ------------------------------------------------------------------ on the timer thread
    def tick(self) -> datetime | None:
        """Bring the watched set up to date, send what fell due; returns the next deadline."""
        now = self._now()
        self._refresh(now)
        with self._lock:
            unseeded = [name for name, w in self._watches.items() if not w.seeded]
        for name in unseeded:
            seed = self._seed(name)  # outside the lock: the loop thread never waits for the history
            with self._lock:
                known = self._watches.get(name)
                if known is not None and not known.seeded:
                    self._watches[name] = rules.seeded(known, seed, now)
        notices: list[TimedNotice] = []
        with self._lock:
            for name, known in list(self._watches.items()):
                after, fell_due = rules.due(name, known, now)
                self._watches[name] = after
                notices += fell_due
            wake = min((at for w in self._watches.values() if (at := rules.next_at(w)) is not None), default=None)
        for notice in notices:
            try:
                queue = self._prepare(notice)
            except Exception:  # noqa: BLE001 - one bad notice must not stop the timer for every task
                self._log.exception(
                    "notifications: cannot render the %s notice of task %r", notice.event.value, notice.task
                )
                continue
            with self._lock:
                if rules.still_due(self._watches.get(notice.task), notice):
                    queue()
        return wake

    def _refresh(self, now: datetime) -> None:
        wanted = self._tasks()
        with self._lock:
            if wanted is not self._wanted:
                self._wanted = wanted
                for name, settings in wanted.items():
                    self._watches[name] = self._current(name, settings, now)
            # Unloaded, paused, removed: no more timed notices; a run still in flight keeps its watch.
            for name in [n for n, w in self._watches.items() if n not in wanted and not w.runs]:
                del self._watches[name]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wake = self.tick()
            except Exception:  # noqa: BLE001 - a bug here must cost one tick, not every later notice
                self._log.exception("notifications: the timer of timed notices failed; trying again")
                wake = None
            wait = REFRESH_S if wake is None else (wake - self._now()).total_seconds()
            self._poke.wait(min(REFRESH_S, max(0.01, wait)))
            self._poke.clear()


def history_seeds(open_records: Callable[[], HistoryStore], *, logger: logging.Logger) -> Callable[[str], WatchSeed]:
    """A ``seed`` reading the history through its own connection, opened on first use (on the timer thread:
    a SQLite connection stays on the thread that opened it). An unreadable history is logged and read as
    empty: the task is then watched as if it never ran."""
    opened: list[HistoryStore] = []

    def seed(task: str) -> WatchSeed:
        try:
            if not opened:
                opened.append(open_records())
            records = opened[0]
            oks = records.history(task, limit=OK_RUNS_KEPT, outcomes=(Outcome.OK,))
            # A missed row is written after the fact (at start, for an outage): no sign the supervisor was up.
            newest = records.history(task, limit=1, outcomes=_RAN)
        except Exception as exc:  # noqa: BLE001 - any reading problem: watch the task without its past
            logger.warning("notifications: cannot read the history of task %r for timed notices: %s", task, exc)
            return WatchSeed()
        return WatchSeed(
            last_ok=oks[0].finished if oks else None,
            ok_durations=tuple(r.duration_s for r in reversed(oks) if r.duration_s is not None),
            newest_started=newest[0].started if newest else None,
        )

    return seed
