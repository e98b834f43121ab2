"""Events posted to the supervisor's loop. Other threads never touch loop state; they post one of these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .runner import LaunchSpec, ProcessReport


@dataclass(frozen=True)
class RescanRequested:
    """Something under Tasks/ changed (a hint: the loop rescans and diffs)."""


@dataclass(frozen=True)
class EnvBuilt:
    """A background env build finished; ``error`` is None on success."""

    key: str
    error: str | None = None
    output: str | None = None


@dataclass(frozen=True)
class RunExited:
    spec: LaunchSpec
    report: ProcessReport


@dataclass(frozen=True)
class StopRequested:
    reason: str


@dataclass(frozen=True)
class ControlRequest:
    """A request from the control socket; ``reply`` is called exactly once from the loop thread."""

    command: str
    args: Mapping[str, Any]
    reply: Callable[[Mapping[str, Any]], None]


Event = RescanRequested | EnvBuilt | RunExited | StopRequested | ControlRequest
