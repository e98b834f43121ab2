"""The clock seam: wall time for schedules, monotonic time for deadlines. Injected, never a module global."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall-clock time (schedules and history)."""

    def monotonic(self) -> float:
        """Seconds that never go backwards (timeouts, sampling, durations)."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class StepDetector:
    """Notices steps of the wall clock: between two looks, wall time and monotonic time should advance
    alike; a disagreement beyond ``tolerance_s`` is a step (NTP, a board without RTC, a resume from suspend)."""

    def __init__(self, clock: Clock, *, tolerance_s: float) -> None:
        self.clock = clock
        self.tolerance_s = tolerance_s
        self.wall, self.mono = clock.now(), clock.monotonic()  # the last look
        self._offset = self.wall.timestamp() - self.mono

    def step(self) -> float:
        """Seconds the wall clock stepped since the last look (negative = back); 0.0 within the tolerance."""
        self.wall, self.mono = self.clock.now(), self.clock.monotonic()
        offset = self.wall.timestamp() - self.mono
        step, self._offset = offset - self._offset, offset
        return step if abs(step) > self.tolerance_s else 0.0
