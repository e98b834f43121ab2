"""Due times after a step of the wall clock (NTP, a board without RTC, a resume from suspend).

Policy: after a backward step an interval task's anchor and a pending retry move back with the clock, so the
interval still counts in real time from the last start (no task waits more than one interval); a Cron or
RunAt task's slots are wall-clock times, read on the new clock. After a forward step the anchors stay: the
missed slot is caught up once (CatchUp). An anchor "in the future" is clamped to now, as it would hold the
next start back.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Iterable

from . import damping
from .lifecycle import TaskState, is_loaded


def recompute_after_step(tasks: Iterable[TaskState], *, now: datetime, step_s: float) -> None:
    """Every loaded task's due time again from its anchor, after the wall clock moved by ``step_s`` seconds."""
    back = timedelta(seconds=min(step_s, 0.0))
    for st in tasks:
        if not is_loaded(st) or st.trigger is None or st.spec is None:
            continue
        if st.anchor is not None and st.spec.every is not None:
            st.anchor += back
        if st.anchor is not None and st.anchor > now:
            st.anchor = now
        if st.retry is not None:
            st.retry = replace(st.retry, at=st.retry.at + back)
        st.next_due = damping.next_due(st, now)
