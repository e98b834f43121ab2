"""The start gates as the loop applies them (``[Limits] StartIfFreeMemoryMB``, ``StartIfLoadBelow``;
scheduling/gates.py measures and judges, through the probe the supervisor was given).

Policies:
* A due run (schedule, startup or retry) whose gate is closed waits in the run queue (state ``queued``;
  ``why`` names the gate and the value it read) and starts on the first look that finds the gate open (the
  queue looks again every few seconds, slots.py). It takes no run slot while it waits.
* When the task's next slot comes while its run still waits for a gate (or for a run slot), the waiting run
  is dropped as a ``missed`` row (reason ``gate``, or ``queue``) and the new due run queues in its place: a
  gate never piles runs up.
* A manual run ignores the gates, unless asked to respect them (``run-now --respect-gates``): then a closed
  gate refuses it, saying which gate and the value.
"""

from __future__ import annotations

from ..model import MissedReason, Trigger
from ..scheduling.gates import Probe, closed_gate
from .lifecycle import TaskState
from .reporting import Reporter
from .slots import QueuedRun, RunSlots
from .tasks import TaskBook


class GateKeeper:
    def __init__(self, book: TaskBook, *, probe: Probe, slots: RunSlots, report: Reporter) -> None:
        self._book = book
        self._probe = probe
        self._slots = slots
        self._report = report

    def closed(self, st: TaskState) -> str | None:
        """Which of the task's start gates is closed now (and the value read), or None."""
        return closed_gate(st.spec.limits, self._probe) if st.spec is not None else None

    def held(self, run: QueuedRun) -> str | None:
        """The verdict on a queued run (RunSlots.take): None lets it start."""
        if run.trigger is Trigger.MANUAL:
            return None  # a manual run in the queue is one backing off after a failed start: gates were passed
        st = self._book.tasks.get(run.task)
        return self.closed(st) if st is not None else None

    def slot_came(self, st: TaskState) -> None:
        """The task's next slot came: its due run still waiting for a start gate or a run slot gives way; that
        slot is a ``missed`` row (reason ``gate`` or ``queue``, missing.py) and the new run queues in its place."""
        waiting = self._slots.get(st.name)
        if waiting is None or waiting.run_id is not None or waiting.trigger is Trigger.RETRY:
            return  # none, a start being retried after a back-off (its row is open), or a retry (runbook.py)
        if waiting.gate is not None:
            reason, why = MissedReason.GATE, f"its start gate stayed closed until the next slot ({waiting.gate})"
        else:
            reason, why = MissedReason.QUEUE, "no run slot was free before the next slot (MaxConcurrentRuns)"
        self._slots.drop(st, why)
        self._book.missed.dropped(st, waiting, reason, f"because {why}")
