"""Missed runs as the loop records them: one ``missed`` history row per outage or incident, never one per slot.

``MissedBook`` is a part of the task book (tasks.py builds it; gating.py hands it dropped runs). It looks at
the tasks once per turn (``look``, before due runs start), so it needs no wake-up of its own: the loop wakes
at least once a minute anyway, and a slot's row is written on the first turn after the slot came. It works
from the schedule (scheduling/missed.py walks the trigger), so windows, calendars and DST apply as to runs.

Policies (docs/cli.md, "Missed runs"):
* Outage (reason ``down``): the first time this supervisor sees a task of its first scan loaded, the slots
  between its schedule anchor and its next due time were missed while the supervisor was down: one row,
  ``due`` its first slot, ``finished`` its last, ``slots`` the count. With CatchUp=once the catch-up run
  stands for the latest of them, which is not counted. Slots an older missed row already accounts for are
  not counted again (a second restart before the next run). A task seen first in error or env-failed gets
  the outage up to then. A task that never ran, a paused and a disabled task miss nothing.
* Incident (reason ``error`` or ``env``): while a task sits in ``error`` (initialize() failed, a config it
  cannot run with) or ``env-failed``, each slot its schedule passes grows one row: the first slot writes it,
  later ones only raise its ``slots`` and ``finished`` (``HistoryStore.grow_missed``; no new notice). The
  incident ends when the task loads again, its files change, or it goes; the next one is a new row.
* Dropped runs (reason ``queue`` or ``gate``): a due run still waiting for a run slot or a start gate when its
  next slot comes is one row of one slot (gating.py drops it; the new slot's run queues in its place).
* Every row goes through ``RunFacts.publish``, so the history, the notifications and the status see it;
  ``missed`` is no failure (``streak_after``) and never a schedule anchor (history/store.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Callable, Mapping

from ..clock import Clock
from ..history.recorder import RunHistory
from ..model import CatchUp, MissedReason, Outcome, RunRecord, TaskPhase, Trigger, new_run_id
from ..scheduling.missed import SlotWalk, missed_words, slots_between
from .facts import RunFacts
from .lifecycle import TaskState, is_loaded
from .reporting import Reporter
from .slots import QueuedRun

P = TaskPhase
_TICK = timedelta(microseconds=1)
INCIDENT_PHASES = {P.ERROR: MissedReason.ERROR, P.ENV_FAILED: MissedReason.ENV}
_SETTLED = frozenset({P.SCHEDULED, P.PAUSED, P.DISABLED, P.REMOVED, *INCIDENT_PHASES})


@dataclass
class Incident:
    """One task's stretch in error or env-failed, and its row once a slot passed."""

    reason: MissedReason
    fingerprint: str | None  # the folder content it concerns: new content is a new incident
    since: datetime  # slots from here on are the incident's (earlier ones belong to an outage)
    cursor: datetime | None  # the last slot walked (the schedule anchor at first); None: no schedule to walk
    following: datetime | None = None  # the next slot to come; None: not known yet, or the schedule ended
    record: RunRecord | None = None  # its row once written


class MissedBook:
    def __init__(
        self,
        *,
        history: RunHistory,
        facts: RunFacts,
        report: Reporter,
        clock: Clock,
        paused: Callable[[str], datetime | None],
    ) -> None:
        self._history = history
        self._facts = facts
        self._report = report
        self._clock = clock
        self._paused = paused
        self._first_seen: set[str] | None = None  # tasks of the first scan not yet looked at for an outage
        self.incidents: dict[str, Incident] = {}

    def look(self, tasks: Mapping[str, TaskState], *, scanned: bool) -> None:
        """Once per turn: outages of tasks seen settled for the first time, and every incident's growth."""
        if self._first_seen is None and scanned:
            self._first_seen = set(tasks)
        now = self._clock.now()
        first_seen = self._first_seen or set()
        for name in [n for n in first_seen if n not in tasks or tasks[n].phase in _SETTLED]:
            first_seen.discard(name)
            st = tasks.get(name)
            if st is not None and self._paused(name) is None:
                self._outage(st, now)
        for name in [n for n in self.incidents if n not in tasks]:
            del self.incidents[name]
        for st in tasks.values():
            self._incident(st, now)

    # ------------------------------------------------------------------ outages
    def _outage(self, st: TaskState, now: datetime) -> None:
        loaded = is_loaded(st)
        if st.trigger is None or st.spec is None or not (loaded or st.phase in INCIDENT_PHASES):
            return
        anchor = st.anchor if loaded else self._history.last_anchor(st.name)
        if anchor is None:
            return  # a task that never ran misses nothing
        end = st.next_due if loaded and st.next_due is not None else now
        walk = slots_between(st.trigger, anchor=anchor, start=anchor + _TICK, end=end)
        if walk.count:
            prior = self._history.last_missed(st.name)
            if prior is not None and prior.finished is not None and prior.finished > anchor:
                walk = slots_between(st.trigger, anchor=anchor, start=prior.finished + _TICK, end=end)
        if loaded and st.spec.catch_up is CatchUp.ONCE and walk.count and not walk.capped:
            walk = _without_last(st, anchor, walk)  # the catch-up run stands for the latest slot
        if walk.count:
            self._write(st, walk, MissedReason.DOWN, "while the supervisor was down")

    # ------------------------------------------------------------------ incidents
    def _incident(self, st: TaskState, now: datetime) -> None:
        reason = INCIDENT_PHASES.get(st.phase)
        fingerprint = st.folder.fingerprint if st.folder is not None else None
        incident = self.incidents.get(st.name)
        if incident is not None and (incident.reason is not reason or incident.fingerprint != fingerprint):
            del self.incidents[st.name]  # the task loaded again, changed or broke otherwise: the incident ended
            incident = None
        if reason is None or self._paused(st.name) is not None:
            return
        if incident is None:
            cursor = st.anchor if st.anchor is not None else self._history.last_anchor(st.name)
            incident = self.incidents[st.name] = Incident(reason, fingerprint, since=now, cursor=cursor)
        elif incident.following is None or incident.following > now:
            return  # no slot passed since the last look (or no more slots): nothing to walk
        if st.trigger is None or incident.cursor is None:
            return  # no schedule (a config never read) or a task that never ran: nothing is missed
        walk = slots_between(st.trigger, anchor=incident.cursor, start=incident.since, end=now + _TICK)
        incident.following = walk.following
        if walk.count and walk.last is not None:
            incident.cursor = walk.last
            self._grow(st, incident, walk)

    def _grow(self, st: TaskState, incident: Incident, walk: SlotWalk) -> None:
        assert walk.last is not None
        if incident.record is None:
            what = "its env could not be built" if incident.reason is MissedReason.ENV else "the task could not run"
            detail = (st.error or "").strip().splitlines()[:1]
            why = f"while {what}" + (f": {detail[0]}" if detail else "")
            incident.record = self._write(st, walk, incident.reason, why, counted=False)
            return
        grown = replace(incident.record, slots=(incident.record.slots or 1) + walk.count, finished=walk.last)
        incident.record = grown
        self._facts.grown(grown)

    # ------------------------------------------------------------------ dropped runs
    def dropped(self, st: TaskState, run: QueuedRun, reason: MissedReason, why: str) -> None:
        """A due run that waited for a run slot or a start gate gave way to its next slot: one missed slot."""
        due = run.due or run.since
        self._write(st, SlotWalk(1, due, due, None), reason, why, trigger=run.trigger)

    def _write(
        self,
        st: TaskState,
        walk: SlotWalk,
        reason: MissedReason,
        why: str,
        *,
        trigger: Trigger = Trigger.SCHEDULE,
        counted: bool = True,  # False: an incident's row, whose count grows (``slots`` says it; the text may not)
    ) -> RunRecord:
        assert walk.first is not None and walk.last is not None
        words = missed_words(walk, self._report.fmt) if counted else f"slots from {self._report.fmt(walk.first)} on"
        message = f"{words} missed {why}"
        record = RunRecord(
            run_id=new_run_id(walk.first),
            task=st.name,
            trigger=trigger,
            started=walk.first,
            due=walk.first,
            finished=walk.last,
            outcome=Outcome.MISSED,
            duration_s=0.0,
            message=message,
            log_path=self._report.task_logs.path(st.name),
            reason=reason,
            slots=walk.count,
        )
        self._report.say(st.name, logging.WARNING, f"task {st.name!r}: {message}")
        self._facts.publish(st, record)
        return record


def _without_last(st: TaskState, anchor: datetime, walk: SlotWalk) -> SlotWalk:
    """``walk`` less its last slot (the one a CatchUp=once run covers)."""
    if walk.count == 1:
        return SlotWalk(0, None, None, walk.following)
    assert st.trigger is not None and walk.first is not None and walk.last is not None
    shorter = slots_between(st.trigger, anchor=anchor, start=walk.first, end=walk.last)
    return SlotWalk(walk.count - 1, walk.first, shorter.last, walk.following)
