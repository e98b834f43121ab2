"""Schedule lateness with both cores busy: ours vs the sleep floor, APScheduler and the 5 s polling design.

Two processes spin on the two cores for the whole group. A job is due every ``PERIOD_S`` (10 ms) for 1000
periods; lateness is (when the waiting thread woke) - (when it was due).

* ours: the loop's mechanism with the pure scheduler: the next due time from the task's trigger (anchored
  on the previous *due* time, so lateness never accumulates), the wait computed from the wall clock as in
  ``Supervisor._sleep_for`` and slept in ``queue.SimpleQueue.get(timeout=...)`` as in ``_next_event``.
* floor: ``time.sleep`` until each absolute deadline on the monotonic clock.
* APScheduler 3 (optional, ``pip install apscheduler``; not a dependency of the package): a
  ``BackgroundScheduler`` with an ``IntervalTrigger`` of the same period, no coalescing, no misfire limit;
  lateness = job start - scheduled run time.
* the old design, re-implemented here (``OldPollingDesign``): one thread per task that wakes every 5 s and
  runs its task when the interval since the last start has passed.
Floor, ours and APScheduler blocks alternate, round after round; the polling design runs alongside them.
"""

from __future__ import annotations

import queue
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from supervisor.clock import SystemClock
from supervisor.model import TaskSpec
from supervisor.scheduling.triggers import IntervalTrigger
from supervisor.scheduling.windows import local_zone

from . import cron_next
from .common import CpuBurners, Settings
from .stats import Figure, Summary, summarize

GROUP = "schedule"
PERIOD_S = 0.010
PERIODS = 1000
OLD_POLL_S = 5.0


def ours_lateness(periods: int, period_s: float = PERIOD_S) -> list[float]:
    """ms late for each of ``periods`` due times, scheduled the way the supervisor's loop does it."""
    spec = TaskSpec(name="tick", every=timedelta(seconds=period_s))
    clock, tz = SystemClock(), local_zone()
    events: queue.SimpleQueue[object] = queue.SimpleQueue()  # nothing is ever posted: pure timeouts
    trigger = IntervalTrigger(spec, tz=tz)

    def after(due: datetime) -> datetime:
        # From the due time, not from the late start, as the loop asks after a run.
        following = trigger.next_due(anchor=due, now=due)
        assert following is not None  # an interval has no last run
        return following

    due = after(clock.now())
    late: list[float] = []
    for _ in range(periods):
        while True:
            wait = (due - clock.now()).total_seconds()
            if wait <= 0:
                break
            try:
                events.get(timeout=wait)
            except queue.Empty:
                pass
        late.append((clock.now() - due).total_seconds() * 1000)
        due = after(due)
    return late


def floor_lateness(periods: int, period_s: float = PERIOD_S) -> list[float]:
    """ms late of ``time.sleep`` until each absolute monotonic deadline: the floor for any scheduler."""
    start = time.monotonic()
    late = []
    for k in range(1, periods + 1):
        deadline = start + k * period_s
        left = deadline - time.monotonic()
        if left > 0:
            time.sleep(left)
        late.append((time.monotonic() - deadline) * 1000)
    return late


def apscheduler_lateness(periods: int, period_s: float = PERIOD_S) -> list[float] | None:
    """ms late of APScheduler 3's job starts, or None when APScheduler is not installed."""
    try:
        from apscheduler.events import EVENT_JOB_EXECUTED
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger
    except ImportError:
        return None
    late: list[float] = []
    done = threading.Event()
    lock = threading.Lock()

    def job() -> datetime:
        return datetime.now(timezone.utc)

    def on_executed(event: object) -> None:
        started: datetime = event.retval  # type: ignore[attr-defined]
        scheduled: datetime = event.scheduled_run_time  # type: ignore[attr-defined]
        with lock:
            if len(late) < periods:
                late.append((started - scheduled).total_seconds() * 1000)
            if len(late) >= periods:
                done.set()

    scheduler = BackgroundScheduler(timezone=timezone.utc)
    scheduler.add_listener(on_executed, EVENT_JOB_EXECUTED)
    start = datetime.now(timezone.utc) + timedelta(seconds=0.2)
    scheduler.add_job(
        job,
        IntervalTrigger(seconds=period_s, start_date=start, timezone=timezone.utc),
        coalesce=False,
        max_instances=1000,
        misfire_grace_time=None,
    )
    scheduler.start()
    try:
        if not done.wait(periods * period_s * 5 + 30):
            raise AssertionError(f"APScheduler ran {len(late)} of {periods} jobs in time")
    finally:
        scheduler.shutdown(wait=True)
    return late


class OldPollingDesign:
    """The design the supervisor replaces, re-implemented: one thread per task polling every 5 s.

    Each thread checks "has the interval passed since my last start?" and then sleeps ``poll_s``; a run starts
    at the first poll after it is due, and the next interval counts from that late start.
    """

    def __init__(self, tasks: int, *, poll_s: float = OLD_POLL_S) -> None:
        self.late: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Periods spread over (0, poll_s]: a task's lateness is where its due time falls between two polls,
        # which for real minute-scale intervals is decided by timer jitter; the spread covers every case.
        self._threads = [
            threading.Thread(
                target=self._task,
                args=(index * poll_s / tasks, poll_s * (index + 0.5) / tasks, poll_s),
                name=f"old-task-{index}",
                daemon=True,
            )
            for index in range(tasks)
        ]

    def _task(self, offset: float, period_s: float, poll_s: float) -> None:
        if self._stop.wait(offset):  # tasks were loaded at different moments: their polls are staggered
            return
        last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last >= period_s:
                with self._lock:
                    self.late.append((now - (last + period_s)) * 1000)
                last = now
            self._stop.wait(poll_s)

    def __enter__(self) -> OldPollingDesign:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def drift_ms(late: list[float]) -> float:
    """Median lateness of the last tenth minus that of the first tenth: > 0 when lateness accumulates."""
    tenth = max(1, len(late) // 10)
    return summarize(late[-tenth:]).median - summarize(late[:tenth]).median


def run(settings: Settings) -> list[Figure]:
    rounds = int(settings.pick(1, 3))
    blocks: dict[str, list[float]] = {"floor": [], "ours": [], "aps": []}
    drifts: list[float] = []
    steps: list[tuple[str, Callable[[], list[float] | None]]] = [
        ("floor", lambda: floor_lateness(PERIODS)),
        ("ours", lambda: ours_lateness(PERIODS)),
        ("aps", lambda: apscheduler_lateness(PERIODS)),
    ]
    with CpuBurners(2), OldPollingDesign(20) as old:
        time.sleep(0.5)  # pacing: let the burners reach their cores before the first block
        for _ in range(rounds):
            for name, step in steps:
                values = step()
                if values is None:  # APScheduler is not installed
                    continue
                blocks[name].extend(values)
                if name == "ours":
                    drifts.append(drift_ms(values))
    floor, ours = summarize(blocks["floor"]), summarize(blocks["ours"])
    old_late = summarize(old.late) if old.late else None
    aps = summarize(blocks["aps"]) if blocks["aps"] else None
    worst_drift = max(drifts, key=abs)
    figures = [
        Figure(
            GROUP,
            "schedule lateness p99, both cores busy",
            "ms",
            ours,
            "p99 ≤ 10 ms",
            ours.p99 <= 10.0,
            baseline=floor,
            baseline_name="deadline sleep floor",
            ratio=_p99_ratio(ours, floor),
            tail=True,
            note=f"{rounds} × {PERIODS} periods of {PERIOD_S * 1000:g} ms each, 2 CPU burners; ratio of p99s",
        ),
        Figure(
            GROUP,
            "schedule lateness max, both cores busy",
            "ms",
            summarize([ours.high]),
            "max ≤ 50 ms",
            ours.high <= 50.0,
            baseline=summarize([floor.high]),
            baseline_name="deadline sleep floor (max)",
            ratio=ours.high / floor.high if floor.high else None,
        ),
        Figure(
            GROUP,
            f"schedule drift over {PERIODS} periods",
            "ms",
            summarize(drifts),
            "no drift (|drift| ≤ 1 ms)",
            abs(worst_drift) <= 1.0,
            note="median lateness of the last 100 periods minus that of the first 100; due times are "
            "anchored on the previous due time",
        ),
        Figure(
            GROUP,
            "schedule lateness p99 vs APScheduler",
            "ms",
            ours,
            "ahead",
            None if aps is None else ours.p99 < aps.p99,
            baseline=aps,
            baseline_name="APScheduler 3 BackgroundScheduler" if aps is not None else "APScheduler: not installed",
            ratio=_p99_ratio(ours, aps),
            tail=True,
            note="APScheduler not installed (pip install apscheduler to compare)"
            if aps is None
            else f"same period and count, interleaved with ours; ratio of p99s; max {ours.high:.1f} ms vs "
            f"{aps.high:.1f} ms",
        ),
        Figure(
            GROUP,
            "schedule lateness p99 vs the 5 s polling design",
            "ms",
            ours,
            "ahead",
            None if old_late is None else ours.p99 < old_late.p99,
            baseline=old_late,
            baseline_name="thread per task, polling every 5 s",
            ratio=_p99_ratio(ours, old_late),
            tail=True,
            note=f"re-implementation in bench/schedule.py: 20 tasks with periods spread over 0–5 s, {len(old.late)} runs "
            "while the other blocks ran; each late start also pushes every later run back (drift)",
        ),
    ]
    figures.extend(cron_next.run(settings))  # `next` for 1,000 cron occurrences
    return figures


def _p99_ratio(ours: Summary, other: Summary | None) -> float | None:
    if other is None or other.p99 <= 0:
        return None
    return ours.p99 / other.p99
