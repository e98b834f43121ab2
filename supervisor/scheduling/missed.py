"""Missed slots: which due times of a task's trigger fell inside a span in which it could not run. Pure.

The walk follows the schedule exactly as the loop would have, had the task run every slot: from the last
scheduled start (the anchor) each next slot is ``trigger.next_due(anchor=slot, now=slot)``. So windows,
calendars (a skipped date has no slot, so it is not missed), cron's DST rules and jitter all apply as they
do to real runs, and only slots inside the span count.

Policies:
* The span is half-open, ``start <= slot < end``: a slot exactly at ``end`` is still due, not missed.
* The walk is bounded: it counts at most ``MAX_COUNTED_SLOTS`` slots and takes at most ``MAX_STEPS`` steps
  (a years-long outage of a one-minute task must not stall the loop); a capped walk says so (``capped``),
  and its count is then a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from .triggers import Trigger

MAX_COUNTED_SLOTS = 10_000  # a week of a one-minute task; "at least" beyond that
MAX_STEPS = 4 * MAX_COUNTED_SLOTS  # slots walked before ``start`` count too (an old anchor)


@dataclass(frozen=True)
class SlotWalk:
    """The slots a walk found in its span, and where the schedule goes on after it."""

    count: int
    first: datetime | None  # the first slot in the span (None when there is none)
    last: datetime | None  # the last one counted
    following: datetime | None  # the first slot at or after ``end``; None when the schedule ends or capped
    capped: bool = False  # the walk stopped at its bound: ``count`` is a lower bound


def slots_between(
    trigger: Trigger,
    *,
    anchor: datetime,
    start: datetime,
    end: datetime,
    max_slots: int = MAX_COUNTED_SLOTS,
    max_steps: int = MAX_STEPS,
) -> SlotWalk:
    """The slots ``start <= slot < end`` of ``trigger`` walked from ``anchor`` (the last scheduled start)."""
    count, first, last = 0, None, None
    slot: datetime | None = anchor
    for _ in range(max_steps):
        assert slot is not None
        nxt = trigger.next_due(anchor=slot, now=slot)
        if nxt is None or nxt <= slot:  # the schedule ended (a trigger never goes backwards; guard anyway)
            return SlotWalk(count, first, last, None)
        slot = nxt
        if slot >= end:
            return SlotWalk(count, first, last, slot)
        if slot < start:
            continue
        if count >= max_slots:
            return SlotWalk(count, first, last, None, capped=True)
        count, last = count + 1, slot
        first = first or slot
    return SlotWalk(count, first, last, None, capped=True)


def missed_words(walk: SlotWalk, fmt: Callable[[datetime | None], str]) -> str:
    """``12 slots from A to B`` (``the slot of A`` for one; ``at least`` when capped), times shown by ``fmt``."""
    if walk.count == 1 and not walk.capped:
        return f"the slot of {fmt(walk.first)}"
    lead = "at least " if walk.capped else ""
    return f"{lead}{walk.count} slots from {fmt(walk.first)} to {fmt(walk.last)}"
