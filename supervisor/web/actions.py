"""Acting on tasks: run now, pause, resume, through the supervisor's control socket (like the CLI).

Policy for the HTTP answer: 200 with the supervisor's reply when it acted; 404 for a task it does not know;
409 when a run is asked for while one is running; 503 when no supervisor runs on the home (the dashboard
never writes the history itself); 502 when the supervisor refused for another reason (its error is passed on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import NotRunningError, TaskAutomationError
from ..model import ShownState
from ..paths import Paths
from ..system.control import ask_supervisor

ACTIONS = {"run": "run-now", "pause": "pause", "resume": "resume"}


@dataclass(frozen=True)
class ActionResult:
    """What the dashboard answers: an HTTP status and a JSON body (``ok``, and ``error`` or the reply)."""

    status: int
    body: Mapping[str, Any]

    @property
    def message(self) -> str:
        if self.status != 200:
            return str(self.body.get("error"))
        if "run_id" in self.body:
            return f"started run {self.body['run_id']} of {self.body.get('task')!r}"
        if "paused" in self.body:
            verb = "paused" if self.body["paused"] else "resumed"
            return f"{self.body.get('task')!r} {verb}" + ("" if self.body.get("changed", True) else " (already)")
        return "done"


Ask = Callable[[str, Mapping[str, Any]], dict[str, Any]]


def control_asker(paths: Paths) -> Ask:
    """The real transport: one request over the control socket; NotRunningError when nobody listens."""

    def ask(command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        return ask_supervisor(paths, command, args)

    return ask


def act(action: str, name: str, *, ask: Ask, status: Callable[[], Mapping[str, Any]], by: str) -> ActionResult:
    """Carry out ``action`` (run, pause, resume) on task ``name``."""
    command = ACTIONS[action]
    try:
        if action == "run":
            # The common refusals are answered from the status document, so each has its own HTTP code.
            doc = status()
            current = next((t for t in doc.get("tasks", []) if t["name"] == name), None)
            if not doc.get("supervisor"):
                return _refuse(503, f"no supervisor is running; start it to run {name!r}")
            if current is None:
                return _refuse(404, f"no task named {name!r}")
            if current.get("state") == ShownState.RUNNING or current.get("running"):
                run = (current.get("running") or {}).get("run_id")
                return _refuse(409, f"task {name!r} is already running" + (f" (run {run})" if run else ""))
        reply = ask(command, {"name": name, "by": by})
    except NotRunningError as exc:
        return _refuse(503, str(exc))
    except TaskAutomationError as exc:
        return _refuse(502, str(exc))
    if reply.get("ok"):
        return ActionResult(200, {**reply, "task": name})
    error = str(reply.get("error"))
    if reply.get("code") == "unknown-task" or error.startswith("no task named"):
        return _refuse(404, error)
    if "already running" in error:  # lost a race with a scheduled start
        return _refuse(409, error)
    return _refuse(502, error)


def _refuse(status: int, error: str) -> ActionResult:
    return ActionResult(status, {"ok": False, "error": error})
