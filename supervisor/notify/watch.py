"""Notices that come from time passing rather than from a finished run: ``silent``, ``slow`` and the repeats of
failure and silent notices. Pure: every function takes ``now``; the timer thread (``timers.py``) and the
notifier call them under their lock.

Policy (README, "Being told"):

- ``silent``: a task with ``ExpectOkWithin`` that has had no ok run for that long gets one ``silent`` notice,
  counted from the end of its last ok run (from when this supervisor began watching it, if it never had
  one). The next ok run sends ``recovery`` (one recovery, even if a failure streak ends with it too).
- ``slow``: a run still going after its threshold gets one ``slow`` notice, while it runs. The threshold is
  ``SlowAfterSeconds``, or ``SlowFactor`` times the median duration of the task's last ``OK_RUNS_KEPT`` ok
  runs (once it has ``MIN_OK_RUNS`` of them, and never below ``MIN_SLOW_S``): the earlier when both are set.
- ``RepeatEvery``: while a task stays failing (a failure notice went out and no ok run since) or silent, that
  notice goes out again every period, counted from the first notice. Periods that passed while nothing could
  be sent (the supervisor asleep, a stopped clock) are skipped, never sent in a burst. A failing task wins
  over a silent one: one repeated notice per period.
- ``On`` decides: without ``silent`` (or ``slow``) in it, the deadline is not even watched.
- After a restart: the last ok run and the ok durations come from the history (``seeded``). A silent notice
  whose deadline passed while the supervisor was still writing rows of the task (a row started after the
  deadline; missed rows do not count, they are written after an outage) was sent by the previous supervisor
  and is not repeated; one whose deadline passed while nothing ran (the supervisor was down) is sent now,
  late rather than lost.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ..model import NotifyEvent, NotifySettings
from .model import RunFact
from .policy import FAILURE_OUTCOMES, OK_OUTCOME

OK_RUNS_KEPT = 20
MIN_OK_RUNS = 3  # a median of one or two runs says little about "usual"
MIN_SLOW_S = 1.0  # a factor of a 50 ms median would call every scheduling hiccup slow


@dataclass(frozen=True)
class RunWatch:
    """A run of ``main()`` in flight, watched for ``slow``."""

    run_id: str
    started: datetime
    notified: bool = False


@dataclass(frozen=True)
class WatchSeed:
    """What the history says about a task when the supervisor begins watching it."""

    last_ok: datetime | None = None  # the end of its newest ok run
    ok_durations: tuple[float, ...] = ()  # of its newest ok runs, oldest first
    newest_started: datetime | None = None  # the start of its newest row of any outcome


@dataclass(frozen=True)
class TaskWatch:
    """One task's memory of the timed notices."""

    settings: NotifySettings
    since: datetime  # when this supervisor began watching it
    last_ok: datetime | None = None
    ok_durations: tuple[float, ...] = ()  # oldest first, at most OK_RUNS_KEPT
    silent: bool = False  # the silent notice went out and no ok run came since
    failing: RunFact | None = None  # the newest failed run of a notified streak (what a repeat tells)
    repeat_at: datetime | None = None
    runs: tuple[RunWatch, ...] = ()
    seeded: bool = False


@dataclass(frozen=True)
class TimedNotice:
    """One notice the timer decided on; ``watch`` is the task's memory right after it."""

    task: str
    event: NotifyEvent  # SILENT, SLOW, or FAILURE (a repeat)
    watch: TaskWatch
    run: RunWatch | None = None  # SLOW: the run
    threshold_s: float | None = None  # SLOW: the threshold it passed
    repeat: bool = False


def watched(settings: NotifySettings) -> bool:
    """True when the task sets a timed key and has somewhere to send a notice: the others cost nothing."""
    keys = (settings.expect_ok_within, settings.slow_after_s, settings.slow_factor, settings.repeat_every)
    return settings.any_channel and any(key is not None for key in keys)


def slow_threshold(settings: NotifySettings, ok_durations: tuple[float, ...]) -> float | None:
    """Seconds after which a run is slow, or None when the task does not watch for slow runs (yet)."""
    if NotifyEvent.SLOW not in settings.on:
        return None
    limits = [settings.slow_after_s] if settings.slow_after_s is not None else []
    if settings.slow_factor is not None and len(ok_durations) >= MIN_OK_RUNS:
        median = statistics.median(ok_durations[-OK_RUNS_KEPT:])
        limits.append(max(MIN_SLOW_S, settings.slow_factor * median))
    return min(limits) if limits else None


def silent_at(watch: TaskWatch) -> datetime | None:
    """When the task goes silent (None: it is not watched for that)."""
    within = watch.settings.expect_ok_within
    if within is None or NotifyEvent.SILENT not in watch.settings.on:
        return None
    return (watch.last_ok or watch.since) + within


def seeded(watch: TaskWatch, seed: WatchSeed, now: datetime) -> TaskWatch:
    """``watch`` with the history's facts merged in (what this supervisor saw itself is newer and wins)."""
    last_ok = max((t for t in (watch.last_ok, seed.last_ok) if t is not None), default=None)
    merged = replace(
        watch, last_ok=last_ok, ok_durations=(seed.ok_durations + watch.ok_durations)[-OK_RUNS_KEPT:], seeded=True
    )
    at = silent_at(merged)
    # A row started after the deadline: the previous supervisor was running when the task went silent.
    if (
        not merged.silent
        and at is not None
        and at <= now
        and seed.newest_started is not None
        and seed.newest_started >= at
    ):
        merged = replace(merged, silent=True, repeat_at=_first_repeat(merged, now))
    return merged


def started(watch: TaskWatch, run_id: str, now: datetime) -> TaskWatch:
    return replace(watch, runs=(*watch.runs, RunWatch(run_id, now)))


def finished(watch: TaskWatch, fact: RunFact, now: datetime, *, failure_standing: bool) -> tuple[TaskWatch, bool]:
    """The task's memory after ``fact``, and whether it ends a silence (a ``recovery`` is due).

    ``failure_standing``: after this run a failure notice stands unanswered (the notifier's streak is alarmed
    and ``failure`` is in ``On``): the repeats start, or go on with this run as the newest failure."""
    runs = tuple(r for r in watch.runs if r.run_id != fact.run_id)
    if not fact.final:
        return replace(watch, runs=runs), False
    if fact.outcome == OK_OUTCOME:
        durations = watch.ok_durations
        if fact.duration_s is not None:
            durations = (*durations, fact.duration_s)[-OK_RUNS_KEPT:]
        after = replace(
            watch,
            runs=runs,
            last_ok=fact.finished or now,
            ok_durations=durations,
            silent=False,
            failing=None,
            repeat_at=None,
        )
        return after, watch.silent
    if failure_standing and fact.outcome in FAILURE_OUTCOMES:  # a missed row is no failure to repeat
        repeat_at = watch.repeat_at if watch.failing is not None or watch.silent else None
        after = replace(watch, runs=runs, failing=fact)
        return replace(after, repeat_at=repeat_at or _first_repeat(after, now)), False
    return replace(watch, runs=runs), False


def due(task: str, watch: TaskWatch, now: datetime) -> tuple[TaskWatch, list[TimedNotice]]:
    """The notices due at ``now`` and the memory after them."""
    notices: list[TimedNotice] = []
    at = silent_at(watch)
    if watch.seeded and not watch.silent and at is not None and at <= now:
        watch = replace(watch, silent=True)
        watch = replace(watch, repeat_at=watch.repeat_at or _first_repeat(watch, now))
        notices.append(TimedNotice(task, NotifyEvent.SILENT, watch))
    limit = slow_threshold(watch.settings, watch.ok_durations)
    if limit is not None and any(not r.notified for r in watch.runs):
        runs = []
        for run in watch.runs:
            if not run.notified and run.started + timedelta(seconds=limit) <= now:
                run = replace(run, notified=True)
                notices.append(TimedNotice(task, NotifyEvent.SLOW, watch, run=run, threshold_s=limit))
            runs.append(run)
        watch = replace(watch, runs=tuple(runs))
    if watch.repeat_at is not None and watch.repeat_at <= now:
        watch = _repeated(task, watch, now, notices)
    return watch, [replace(n, watch=watch) for n in notices]


def still_due(watch: TaskWatch | None, notice: TimedNotice) -> bool:
    """Whether ``notice`` still holds for the task's memory now (a fact may have come in since it fell due)."""
    if watch is None:
        return False
    if notice.event is NotifyEvent.SLOW:
        return notice.run is not None and any(r.run_id == notice.run.run_id for r in watch.runs)
    if notice.event is NotifyEvent.SILENT:
        return watch.silent
    return watch.failing is not None


def next_at(watch: TaskWatch) -> datetime | None:
    """The earliest moment something may be due for this task (None: nothing, until a fact changes it)."""
    moments = [watch.repeat_at] if watch.repeat_at is not None else []
    at = silent_at(watch)
    if watch.seeded and not watch.silent and at is not None:
        moments.append(at)
    limit = slow_threshold(watch.settings, watch.ok_durations)
    if limit is not None:
        moments += [r.started + timedelta(seconds=limit) for r in watch.runs if not r.notified]
    return min(moments, default=None)


def _repeated(task: str, watch: TaskWatch, now: datetime, notices: list[TimedNotice]) -> TaskWatch:
    period = watch.settings.repeat_every
    assert watch.repeat_at is not None
    if period is None or (watch.failing is None and not watch.silent):
        return replace(watch, repeat_at=None)
    fresh = {n.event for n in notices}
    event = NotifyEvent.FAILURE if watch.failing is not None else NotifyEvent.SILENT
    if event not in fresh:  # a silent notice that just went out is not also its own repeat
        notices.append(TimedNotice(task, event, watch, repeat=True))
    passed = (now - watch.repeat_at) // period + 1
    return replace(watch, repeat_at=watch.repeat_at + period * passed)


def _first_repeat(watch: TaskWatch, now: datetime) -> datetime | None:
    period = watch.settings.repeat_every
    return now + period if period is not None else None
