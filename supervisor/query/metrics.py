"""Prometheus metrics (pure): a status document and the history's run totals become the text exposition that
``GET /metrics`` and ``taskautomation metrics`` serve (README, "Metrics", lists every series).

Policies:

- **Every task's series exist from the first scrape**: each task of the status document gets every outcome
  of ``taskautomation_runs_total``, every documented reason of ``taskautomation_missed_runs_total`` and its
  duration histogram, at 0 until something happens, so ``increase()`` and alerts see the first failure.
  Timestamps that do not exist yet (never succeeded, no next run) are 0.
- **Counters come from the history's totals** (history/totals.py), which the database keeps as rows are
  written and which pruning never lowers: they are monotonic across restarts of the supervisor and of the
  dashboard. ``taskautomation_schedule_lateness_seconds`` is home-wide and keeps the share of removed tasks.
- **No run ids in labels**: labels are task names, outcomes, reasons, states and the version only.
- **Formatting is prometheus-client's**: families are its metric families, served by a custom collector
  through ``generate_latest``. :class:`Exposition` gives the same bytes while formatting only the tasks whose
  figures changed since its last rendering (a scrape of 500 tasks is ~17,000 samples; formatting them all
  each time costs more than the whole request may).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..history.totals import DURATION_BOUNDS, LATENESS_BOUNDS, HistoryTotals, Observations, empty
from ..model import Outcome, ShownState

PREFIX = "taskautomation"
# Why a slot was missed (the reasons of the `missed` outcome); each task has a series for every one of them.
MISSED_REASONS = ("down", "error", "env", "queue", "gate")
# A missed row that recorded no reason.
OTHER_REASON = "other"


@dataclass(frozen=True)
class TaskFigures:
    """Everything the exposition says about one task (hashable: the formatted text is cached by it)."""

    name: str
    runs: tuple[tuple[str, int], ...]  # (outcome, count) for every outcome
    missed: tuple[tuple[str, int], ...]  # (reason, count) for every reason
    durations: Observations
    last_success: float  # Unix seconds; 0: never
    next_run: float  # Unix seconds; 0: none
    failures: int


@dataclass(frozen=True)
class HomeFigures:
    """The home-wide series."""

    version: str
    up: bool  # a supervisor answered the status request
    states: tuple[tuple[str, int], ...]  # (state, number of tasks) for every state
    lateness: Observations


def figures(
    status: Mapping[str, Any], totals: HistoryTotals, *, live: bool, version: str
) -> tuple[HomeFigures, tuple[TaskFigures, ...]]:
    """The figures of one scrape: the status document's tasks (in its order) and the home's series."""
    rows = status.get("tasks", [])
    labels = _Labels.of(totals)
    tasks = tuple(labels.task(row, totals) for row in rows)
    return home_figures(rows, totals, live=live, version=version), tasks


def home_figures(rows: Sequence[Mapping[str, Any]], totals: HistoryTotals, *, live: bool, version: str) -> HomeFigures:
    states = {s.value: 0 for s in ShownState}
    for row in rows:
        states[str(row["state"])] = states.get(str(row["state"]), 0) + 1
    return HomeFigures(version=version, up=live, states=tuple(states.items()), lateness=totals.lateness)


@dataclass(frozen=True)
class _Labels:
    """The outcomes and reasons every task gets a series of: the known ones, then any other the totals hold."""

    outcomes: tuple[str, ...]
    reasons: tuple[str, ...]

    @classmethod
    def of(cls, totals: HistoryTotals) -> _Labels:
        return cls(
            outcomes=_with_extra([o.value for o in Outcome], (o for runs in totals.runs.values() for o in runs)),
            reasons=_with_extra(MISSED_REASONS, (r or OTHER_REASON for m in totals.missed.values() for r in m)),
        )

    def task(self, row: Mapping[str, Any], totals: HistoryTotals) -> TaskFigures:
        name = str(row["name"])
        runs = totals.runs.get(name, {})
        missed = {(r or OTHER_REASON): n for r, n in totals.missed.get(name, {}).items()}
        last_ok = totals.last_ok.get(name)
        return TaskFigures(
            name=name,
            runs=tuple((o, runs.get(o, 0)) for o in self.outcomes),
            missed=tuple((r, missed.get(r, 0)) for r in self.reasons),
            durations=totals.durations.get(name) or empty(DURATION_BOUNDS),
            last_success=last_ok.timestamp() if last_ok else 0.0,
            next_run=_timestamp(row.get("next_run")),
            failures=int(row.get("consecutive_failures") or 0),
        )


def _with_extra(known: Sequence[str], found: Iterable[str]) -> tuple[str, ...]:
    """``known`` in order, then any other value ``found`` (e.g. an outcome this version does not know yet)."""
    return (*known, *sorted(set(found) - set(known)))


def _timestamp(iso: object) -> float:
    return datetime.fromisoformat(iso).timestamp() if isinstance(iso, str) else 0.0


# ------------------------------------------------------------------------------------------------ families
def home_families(home: HomeFigures) -> list[Metric]:
    info = InfoMetricFamily(PREFIX, "Task Automation's version.", labels=["version"])
    info.add_metric([home.version], {})
    up = GaugeMetricFamily(
        f"{PREFIX}_supervisor_up", "1 when the home's supervisor answered this scrape's status request, else 0."
    )
    up.add_metric([], 1.0 if home.up else 0.0)
    states = GaugeMetricFamily(f"{PREFIX}_tasks", "Tasks in each state (status's states).", labels=["state"])
    for state, count in home.states:
        states.add_metric([state], count)
    lateness = HistogramMetricFamily(
        f"{PREFIX}_schedule_lateness_seconds",
        "How late scheduled runs started after their due time (started - due, at least 0), all tasks.",
    )
    lateness.add_metric([], _buckets(home.lateness, LATENESS_BOUNDS), home.lateness.total)
    return [info, up, states, lateness]


def task_families(tasks: Sequence[TaskFigures]) -> list[Metric]:
    """One family per per-task series, holding the samples of ``tasks`` (none: the bare families)."""
    runs = CounterMetricFamily(
        f"{PREFIX}_runs",
        "Finished runs by outcome (history rows; pruning never lowers it).",
        labels=["task", "outcome"],
    )
    missed = CounterMetricFamily(
        f"{PREFIX}_missed_runs", "History rows with outcome missed, by reason.", labels=["task", "reason"]
    )
    durations = HistogramMetricFamily(
        f"{PREFIX}_run_duration_seconds", "How long runs of main() took (outcomes that ran).", labels=["task"]
    )
    last_ok = GaugeMetricFamily(
        f"{PREFIX}_task_last_success_timestamp_seconds",
        "When the task's newest ok run finished (Unix time; 0: never).",
        labels=["task"],
    )
    next_run = GaugeMetricFamily(
        f"{PREFIX}_task_next_run_timestamp_seconds",
        "When the task is due next (Unix time; 0: no next run or no supervisor).",
        labels=["task"],
    )
    failures = GaugeMetricFamily(
        f"{PREFIX}_consecutive_failures", "Final attempts in a row that failed (ok resets it).", labels=["task"]
    )
    for task in tasks:
        for outcome, count in task.runs:
            runs.add_metric([task.name, outcome], count)
        for reason, count in task.missed:
            missed.add_metric([task.name, reason], count)
        durations.add_metric([task.name], _buckets(task.durations, DURATION_BOUNDS), task.durations.total)
        last_ok.add_metric([task.name], task.last_success)
        next_run.add_metric([task.name], task.next_run)
        failures.add_metric([task.name], task.failures)
    return [runs, missed, durations, last_ok, next_run, failures]


def _buckets(observed: Observations, bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative buckets as prometheus-client takes them: (upper bound, observations at or below it)."""
    cumulative, total = [], 0
    for bound, count in zip((*(float(b) for b in bounds), float("inf")), observed.counts):
        total += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
    return cumulative


class MetricsCollector(Collector):
    """A prometheus-client collector of one scrape's figures (register it, or pass it to ``generate_latest``)."""

    def __init__(self, home: HomeFigures, tasks: Sequence[TaskFigures]) -> None:
        self.home = home
        self.tasks = tasks

    def collect(self) -> Iterator[Metric]:
        yield from home_families(self.home)
        yield from task_families(self.tasks)


class _Families(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def exposition(home: HomeFigures, tasks: Sequence[TaskFigures]) -> bytes:
    """The text exposition of one scrape, formatted whole."""
    return generate_latest(MetricsCollector(home, tasks))


@dataclass(frozen=True)
class _Formatted:
    key: tuple[object, ...]  # what the figures were built from besides the totals
    figures: TaskFigures
    texts: tuple[bytes, ...]  # the task's samples in each of task_families(), headers dropped


class Exposition:
    """:func:`exposition` of :func:`figures`, formatting only the tasks whose figures changed since the last call.

    The text format puts a family's samples together under its header: the per-task text of each family is
    formatted by ``generate_latest`` for that task alone (its two header lines dropped) and kept until the
    task's figures change; while the totals are the same object as last time, a task whose status row says
    the same is not even looked up again. A task gone from the status document is forgotten.
    """

    def __init__(self) -> None:
        self._headers = [generate_latest(_Families([family])) for family in task_families(())]
        self._tasks: dict[str, _Formatted] = {}
        self._totals: HistoryTotals | None = None
        self._labels = _Labels.of(HistoryTotals())

    def render(self, status: Mapping[str, Any], totals: HistoryTotals, *, live: bool, version: str) -> bytes:
        rows = status.get("tasks", [])
        same_totals = totals is self._totals
        if not same_totals:
            self._totals, self._labels = totals, _Labels.of(totals)
        kept: dict[str, _Formatted] = {}
        for row in rows:
            name = str(row["name"])
            key = (row.get("next_run"), row.get("consecutive_failures"))
            cached = self._tasks.get(name)
            if cached is None or not same_totals or cached.key != key:
                task = self._labels.task(row, totals)
                if cached is None or cached.figures != task:
                    texts = tuple(generate_latest(_Families([f])).split(b"\n", 2)[2] for f in task_families((task,)))
                    cached = _Formatted(key, task, texts)
                else:
                    cached = _Formatted(key, task, cached.texts)
            kept[name] = cached
        self._tasks = kept
        parts = [generate_latest(_Families(home_families(home_figures(rows, totals, live=live, version=version))))]
        for i, header in enumerate(self._headers):
            parts.append(header)
            parts.extend(kept[str(row["name"])].texts[i] for row in rows)
        return b"".join(parts)
