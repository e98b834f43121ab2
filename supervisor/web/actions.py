"""Acting on tasks: run now, pause, resume, through the supervisor's control socket (like the CLI).

Policy for the HTTP answer:

* 200 with the supervisor's reply when it acted. A run-now for a task still loading is accepted too (the
  reply's ``waiting_for`` names its phase): the run starts once the task is loaded (core/manual.py).
* 404 for a task it does not know.
* 409 with the reason when it refused for the task's sake: a run in flight or waiting for a run slot, a
  task that is not loaded (``error``, ``env-failed``, ``disabled``), a supervisor shutting down.
* 503 with ``Retry-After`` when the action needs a supervisor and gets none: none runs on the home (the
  dashboard never writes the history itself), or the one running is busy (it did not answer in time).
* 502 when the supervisor refused for a reason it gave no code for (its error is passed on).
* 400 for a run parameter that cannot be used (the ``env`` of a run: execution/params.py), checked here and
  again by the supervisor (code ``bad-request``).

A run's parameters come as a JSON body ``{"env": {"KEY": "VALUE"}}`` or, from the dashboard's run form, as
the form field ``env`` with one ``KEY=VALUE`` per line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs

from ..errors import ControlError, NotRunningError, TaskAutomationError
from ..execution.params import ParamError, RunParams, from_json, from_lines
from ..paths import Paths
from ..system.control import ask_supervisor

ACTIONS = {"run": "run-now", "pause": "pause", "resume": "resume"}
CONTROL_TIMEOUT_S = 5.0  # an action waits this long for the supervisor before answering 503
RETRY_BUSY_S = 5  # Retry-After when the supervisor is busy
RETRY_NOT_RUNNING_S = 30  # Retry-After when none runs (someone has to start it)
# The supervisor's refusal codes (core/manual.py, and "busy" from the control socket) -> HTTP status.
REFUSALS = {
    "unknown-task": 404,
    "running": 409,
    "queued": 409,
    "not-loaded": 409,
    "stopping": 409,
    "not-started": 409,
    "gated": 409,
    "bad-request": 400,
    "busy": 503,
}


@dataclass(frozen=True)
class ActionResult:
    """What the dashboard answers: an HTTP status, a JSON body (``ok``, and ``error`` or the reply), and for
    a 503 the seconds to wait before trying again."""

    status: int
    body: Mapping[str, Any]
    retry_after: int | None = None

    @property
    def message(self) -> str:
        if self.status != 200:
            return str(self.body.get("error"))
        if "run_id" in self.body:
            task = self.body.get("task")
            if self.body.get("waiting_for"):
                return f"run {self.body['run_id']} of {task!r} starts once it is loaded ({self.body['waiting_for']})"
            return f"started run {self.body['run_id']} of {task!r}"
        if "paused" in self.body:
            verb = "paused" if self.body["paused"] else "resumed"
            return f"{self.body.get('task')!r} {verb}" + ("" if self.body.get("changed", True) else " (already)")
        return "done"


Ask = Callable[[str, Mapping[str, Any]], dict[str, Any]]


def control_asker(paths: Paths, *, timeout: float = CONTROL_TIMEOUT_S) -> Ask:
    """The real transport: one request over the control socket; NotRunningError when nobody listens."""

    def ask(command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        return ask_supervisor(paths, command, args, timeout=timeout)

    return ask


def run_params(content_type: str, body: bytes) -> RunParams:
    """The ``env`` of a run request's body (JSON, or the run form's field); ParamError when it is unusable."""
    if content_type.startswith("application/json") and body.strip():
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise ParamError(f"the body is not JSON: {exc}") from None
        return from_json(document.get("env") if isinstance(document, dict) else document)
    if content_type.startswith("application/x-www-form-urlencoded"):
        return from_lines("\n".join(parse_qs(body.decode("utf-8", "replace")).get("env", [])))
    return ()


def act(action: str, name: str, *, ask: Ask, by: str, params: RunParams = ()) -> ActionResult:
    """Carry out ``action`` (run, pause, resume) on task ``name`` (see the module's policy); ``params``: the
    run's ``env`` (run only)."""
    args: dict[str, Any] = {"name": name, "by": by}
    if params:
        args["env"] = dict(params)
    try:
        reply = ask(ACTIONS[action], args)
    except NotRunningError as exc:
        return _refuse(503, f"{exc}; start it to {action} {name!r}", retry_after=RETRY_NOT_RUNNING_S)
    except ControlError as exc:
        return _refuse(503, f"the supervisor is busy: {exc}; try again shortly", retry_after=RETRY_BUSY_S)
    except TaskAutomationError as exc:
        return _refuse(502, str(exc))
    if reply.get("ok"):
        return ActionResult(200, {**reply, "task": name})
    error = str(reply.get("error"))
    status = REFUSALS.get(str(reply.get("code")))
    if status is None:  # a supervisor without codes (older): the two refusals it had are recognised by text
        status = 404 if error.startswith("no task named") else 409 if "already running" in error else 502
    return _refuse(status, error, retry_after=RETRY_BUSY_S if status == 503 else None)


def _refuse(status: int, error: str, *, retry_after: int | None = None) -> ActionResult:
    return ActionResult(status, {"ok": False, "error": error}, retry_after)
