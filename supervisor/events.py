"""Events posted to the supervisor's loop. Other threads never touch loop state; they post one of these."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .model import RunResult


@dataclass(frozen=True)
class RescanRequested:
    """Something under Tasks/ changed (a hint: the loop rescans and diffs)."""


@dataclass(frozen=True)
class EnvBuilt:
    """A background env build finished; ``error`` is None on success.

    ``transient`` marks a failure worth retrying by itself (an installer killed, an index unreachable).
    """

    key: str
    error: str | None = None
    output: str | None = None
    transient: bool = False


@dataclass(frozen=True)
class RunReported:
    """An executor has news about a run. ``settle`` is called on the loop thread (it may update the
    executor's own bookkeeping there) and returns how the run ended, or None if it has not ended."""

    settle: Callable[[], RunResult | None]


@dataclass(frozen=True)
class StopRequested:
    reason: str


@dataclass(frozen=True)
class ControlRequest:
    """A request from the control socket; ``reply`` is called exactly once from the loop thread."""

    command: str
    args: Mapping[str, Any]
    reply: Callable[[Mapping[str, Any]], None]


Event = RescanRequested | EnvBuilt | RunReported | StopRequested | ControlRequest


class Inbox:
    """The loop's event queue. ``post`` is safe from any thread and from signal handlers."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def post(self, event: Event) -> None:
        self._queue.put(event)

    def get(self, timeout: float) -> Event | None:
        """The next event, waiting at most ``timeout`` seconds (0 = do not wait)."""
        try:
            if timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
