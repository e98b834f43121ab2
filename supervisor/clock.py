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
