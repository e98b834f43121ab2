"""The one query layer: task state and history -> the ``status --json`` / ``history --json`` documents and the
"why" lines. The live loop, the offline CLI and any other reader build their answers here, so every field
means the same everywhere (docs/cli.md holds the schema).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Callable, Iterable, Mapping

from ..history.store import record_to_json
from ..model import CatchUp, Outcome, PhaseChanged, Retention, RunRecord, ShownState, TaskPhase, TaskSpec, Window
from ..scheduling.retry import PendingRetry
from ..scheduling.triggers import skipped_before, zone_for
from ..scheduling.windows import in_window

LAST_RUN_FIELDS = ("run_id", "started", "finished", "outcome", "duration_s", "exit_code", "message", "reason", "slots")
LOADED = frozenset({TaskPhase.SCHEDULED, TaskPhase.PAUSED})  # the phases in which due times advance


@dataclass(frozen=True)
class RunningView:
    run_id: str
    started: datetime
    trigger: str
    waiting_on: str | None = None  # the run is handed over but not started yet (e.g. an RQ queue's name)


@dataclass(frozen=True)
class TaskView:
    """What the loop knows about one task at one instant (a snapshot; plain data). The loop builds these
    (core/snapshot.py); this layer only reads them."""

    name: str
    phase: TaskPhase
    spec: TaskSpec | None
    error: str | None
    next_due: datetime | None
    anchor: datetime | None
    startup_pending: bool
    running: RunningView | None = None
    queued_since: datetime | None = None
    queued_gate: str | None = None  # the start gate its queued run waits for (core/gating.py)
    retry: PendingRetry | None = None  # [Retry]: the next attempt of a failed run
    failures: int = 0  # consecutive failures (final attempts)
    schedule: str | None = None  # the trigger's describe()
    paused_since: datetime | None = None  # pause NAME: due runs do not start until resume
    moves: tuple[PhaseChanged, ...] = ()  # its last few moves, oldest first
    backing_off: bool = False  # FailureBackoff holds its next run back (``next_due`` is the next try)


@dataclass(frozen=True)
class SupervisorView:
    pid: int
    started: datetime
    home: str


def last_run_json(record: RunRecord | None) -> Mapping[str, Any] | None:
    if record is None:
        return None
    full = record_to_json(record)
    return {key: full[key] for key in LAST_RUN_FIELDS}


def history_json(records: Iterable[RunRecord]) -> dict[str, Any]:
    return {"runs": [record_to_json(r) for r in records]}


def display_state(view: TaskView) -> ShownState:
    """The state ``status`` shows: the phase, except ``running`` / ``queued`` for a due run in flight or
    waiting for a run slot, ``backing-off`` while failures in a row hold its next run back, and ``done`` for
    a loaded task with no more runs."""
    if view.running is not None:
        return ShownState.QUEUED if view.running.waiting_on is not None else ShownState.RUNNING
    if view.queued_since is not None:
        return ShownState.QUEUED
    if view.backing_off and view.phase in LOADED:
        return ShownState.BACKING_OFF
    if is_done(view):
        return ShownState.DONE
    return ShownState(view.phase.value)


def is_done(view: TaskView) -> bool:
    """Loaded, with no next due time and nothing pending: after the last RunAt (or a cron that ended). An
    After task has no due time of its own and is never done: an upstream run starts it."""
    return (
        view.phase in LOADED
        and not (view.spec is not None and view.spec.after)
        and view.next_due is None
        and not view.startup_pending
        and view.retry is None
        and view.running is None
    )


def status_json(
    views: Iterable[TaskView],
    *,
    last_finished: Callable[[str], RunRecord | None],
    supervisor: SupervisorView,
    tz: tzinfo,
) -> dict[str, Any]:
    """The live ``status --json`` document."""
    rows = []
    views = list(views)
    below = downstream_of({view.name: view.spec.after for view in views if view.spec is not None})
    for view in sorted(views, key=lambda v: v.name.casefold()):
        running, last = view.running, last_finished(view.name)
        rows.append(
            {
                "name": view.name,
                "enabled": bool(view.spec.enabled) if view.spec else True,
                "state": display_state(view).value,
                "next_run": view.next_due.isoformat() if view.phase in LOADED and view.next_due else None,
                "last_run": last_run_json(last),
                "error": view.error,
                "running": {
                    "run_id": running.run_id,
                    "started": running.started.isoformat(),
                    "trigger": running.trigger,
                }
                if running
                else None,
                "why": explain(view, tz=tz) + missed_why(last, tz),
                "consecutive_failures": view.failures,
                "schedule": view.schedule,
                "paused": paused_json(view.paused_since),
                "after": list(view.spec.after) if view.spec else [],
                "downstream": below.get(view.name, []),
                "output_retention": retention_json(view.spec.retention if view.spec else None),
            }
        )
    return {
        "tasks": rows,
        "supervisor": {"pid": supervisor.pid, "started": supervisor.started.isoformat(), "home": supervisor.home},
        "offline": None,  # a live answer (query/source.py fills it in for an offline one)
    }


_MISSED_WHY = {
    "down": "while the supervisor was down",
    "error": "while the task could not run",
    "env": "while its env could not be built",
    "queue": "waiting for a free run slot (MaxConcurrentRuns)",
    "gate": "waiting for a start gate to open",
}


def missed_why(last: RunRecord | None, tz: tzinfo) -> str:
    """``; missed 12 slots from … to … while the supervisor was down`` when the newest row is a missed one
    (why the task did not run lately), else nothing."""
    if last is None or last.outcome is not Outcome.MISSED:
        return ""
    why = _MISSED_WHY.get(last.reason.value if last.reason else "", "")
    if (last.slots or 1) == 1:
        return f"; missed its slot of {_fmt(last.due, tz)} {why}".rstrip()
    return f"; missed {last.slots} slots from {_fmt(last.due, tz)} to {_fmt(last.finished, tz)} {why}".rstrip()


def downstream_of(after: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Task -> the tasks whose [Frequency] After names it (sorted), from task -> its After list."""
    below: dict[str, list[str]] = {}
    for name, ups in sorted(after.items(), key=lambda kv: kv[0].casefold()):
        for up in ups:
            below.setdefault(up, []).append(name)
    return below


def paused_json(since: datetime | None) -> dict[str, Any] | None:
    return {"since": since.isoformat()} if since is not None else None


def retention_json(retention: Retention | None) -> dict[str, Any] | None:
    """The [Output] limits in force (the home's defaults applied), or None when Output/ is never pruned."""
    if retention is None or not retention.enabled:
        return None
    return {"keep_days": retention.keep_days, "keep_files": retention.keep_files, "keep_mb": retention.keep_mb}


def offline_row(
    name: str,
    *,
    enabled: bool,
    error: str | None,
    last: RunRecord | None,
    failures: int = 0,
    schedule: str | None = None,
    paused_since: datetime | None = None,
    after: tuple[str, ...] = (),
    downstream: list[str] | None = None,
    retention: Retention | None = None,
) -> dict[str, Any]:
    """One task of the offline ``status --json`` (no supervisor: read from config.ini and the history)."""
    return {
        "name": name,
        "enabled": enabled,
        "state": (ShownState.ERROR if error else ShownState.STOPPED if enabled else ShownState.DISABLED).value,
        "next_run": None,
        "last_run": last_run_json(last),
        "error": error,
        "running": None,
        "why": "the supervisor is not running" if not error else "not loadable (see error)",
        "consecutive_failures": failures,
        "schedule": schedule,
        "paused": paused_json(paused_since),
        "after": list(after),
        "downstream": downstream or [],
        "output_retention": retention_json(retention),
    }


def offline_status_json(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"tasks": sorted(rows, key=lambda r: str(r["name"]).casefold()), "supervisor": None}


def _fmt(when: datetime | None, tz: tzinfo) -> str:
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z") if when else "never"


_WAITING_WHY = {
    TaskPhase.DISABLED: "not loaded: Enabled=False in config.ini",
    TaskPhase.ERROR: "not scheduled until its files change (see error)",
    TaskPhase.ENV_FAILED: "not scheduled until its files change (see error)",
    TaskPhase.ENV_BUILDING: "waiting for its environment to be built",
    TaskPhase.INITIALIZING: "waiting for initialize() to finish",
}


def explain(view: TaskView, *, tz: tzinfo) -> str:
    """One line on why the task is in its state and when it runs next (answers "why did X not run?")."""
    spec = view.spec
    waiting = _explain_in_flight(view, tz=tz)
    if waiting is not None:
        return waiting
    phase = view.phase
    if view.backing_off and phase is TaskPhase.SCHEDULED:
        return (
            f"backing off after {view.failures} failures in a row: next try at {_fmt(view.next_due, tz)} "
            "(FailureBackoff: each further failure doubles the wait, up to an hour; an ok run or a change of "
            "its files ends it)"
        )
    if phase is TaskPhase.PAUSED:
        return f"paused since {_fmt(view.paused_since, tz)}: due runs do not start (resume NAME to continue)"
    if phase in _WAITING_WHY:
        return _WAITING_WHY[phase]
    if phase in LOADED and spec is not None and spec.after:
        return _explain_after(view, spec, tz=tz)
    if is_done(view):
        if spec is not None and spec.cron is not None:
            return f"done: no slot of its cron expression lies inside its window {spec.window}"
        return "done: no more runs (its last RunAt has run)"
    if phase in LOADED and view.next_due is None and view.retry is not None:
        return (
            f"attempt {view.retry.attempt} (retry of run {view.retry.retry_of}) at {_fmt(view.retry.at, tz)}; "
            "then no more runs"
        )
    if phase not in LOADED or spec is None or view.next_due is None:
        return phase.value
    parts = []
    if spec.testing:
        parts.append("Testing=True: due runs are confirmed, main() is not executed")
    if view.retry is not None:
        parts.append(
            f"attempt {view.retry.attempt} (retry of run {view.retry.retry_of}) at "
            f"{_fmt(view.retry.at, tz)}, unless the next slot comes first"
        )
    if view.startup_pending:
        parts.append("RunOnStartup: runs now")
    elif spec.every is None:
        parts.append(_explain_slots(view, spec, tz=tz))
    elif view.anchor is None:
        parts.append("never ran: first run as soon as it is inside its window")
    else:
        slot = view.anchor + spec.every
        if view.next_due == slot:
            parts.append(
                f"every {spec.every / timedelta(minutes=1):g} min since its last due time {_fmt(view.anchor, tz)}"
            )
        elif in_window(spec.window, slot, tz=tz) != slot:
            parts.append(f"interval elapsed at {_fmt(slot, tz)}, but it may only start within its window {spec.window}")
        elif spec.catch_up is CatchUp.SKIP:
            parts.append("runs missed while the supervisor was down are skipped (CatchUp=skip)")
        else:
            parts.append("catching up one run missed while the supervisor was down (CatchUp=once)")
    if spec.calendar:
        parts.extend(_calendar_why(spec, view.next_due, tz=tz))
    return "; ".join(parts)


def _explain_in_flight(view: TaskView, *, tz: tzinfo) -> str | None:
    """Why a running or queued task is not starting (``None`` when it is neither)."""
    if view.running is not None and view.running.waiting_on is not None:
        return f"due run {view.running.run_id} is queued: {view.running.waiting_on}"
    if view.running is not None:
        return "running now"
    if view.queued_since is not None and view.queued_gate is not None:
        return f"due since {_fmt(view.queued_since, tz)}; waiting for its {view.queued_gate}"
    if view.queued_since is not None:
        return f"due since {_fmt(view.queued_since, tz)}; waiting for a free run slot (MaxConcurrentRuns)"
    return None


def _explain_after(view: TaskView, spec: TaskSpec, *, tz: tzinfo) -> str:
    """Why an After task waits: it runs after its upstreams' final runs (and when its window allows)."""
    each = " each (no join: it runs once after every one of them)" if len(spec.after) > 1 else ""
    parts = [f"runs {view.schedule or 'after ' + ', '.join(spec.after)}{each}"]
    if spec.testing:
        parts.append("Testing=True: such runs are confirmed, main() is not executed")
    if view.retry is not None:
        parts.append(f"attempt {view.retry.attempt} (retry of run {view.retry.retry_of}) at {_fmt(view.retry.at, tz)}")
    if spec.window != Window():
        parts.append(f"a start outside its window {spec.window} waits for the window")
    return "; ".join(parts)


def _calendar_why(spec: TaskSpec, due: datetime, *, tz: tzinfo) -> list[str]:
    """The skipped dates the next run waits out (the ones right before its date), with their reasons."""
    skipped = skipped_before(spec.calendar, due, tz=zone_for(spec, default=tz))
    if not skipped:
        return []
    shown = ", ".join(f"{day.isoformat()} ({reason})" for day, reason in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return [f"skips {shown}{more}"]


def _explain_slots(view: TaskView, spec: TaskSpec, *, tz: tzinfo) -> str:
    """Why a Cron or RunAt task waits: its next slot, and what the window and CatchUp did."""
    assert view.next_due is not None
    kind = "cron slot" if spec.cron is not None else "RunAt time"
    line = f"runs only at its slots ({view.schedule}); next {kind} {_fmt(view.next_due, tz)}"
    if spec.window != Window():
        line += f"; slots outside its window {spec.window} do not run"
    return line
