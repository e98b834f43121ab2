"""Server errors of the dashboard: every 5xx is logged in one line with its cause, and is a readable answer
in the asker's format (ASGI middleware, inside the Guard so its answers carry the security headers).

Policy:

* An answer a route gives with a 5xx status names its cause with :func:`blame` (the action's refusal, the
  exception); the middleware logs ``STATUS METHOD PATH: CAUSE`` on the ``taskautomation.web`` logger (the
  supervised dashboard's output is ``logs/web.log``). A 5xx without a named cause is logged as such.
* An exception that escapes a route becomes a 500 (a ``transient`` one, e.g. a locked history: 503 with
  ``Retry-After``), logged in one line with its type and message, never a traceback page and never a
  connection dropped without an answer. After the answer has begun (a log stream) it can only be logged.
* The format follows the asker (:func:`wants_json`): JSON for scripts (the API read with a token, any
  ``/api/`` read), an HTML page for a browser (pages, and the dashboard's own form posts), never JSON for
  a page.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import TaskAutomationError

LOG = logging.getLogger("taskautomation.web")
RETRY_AFTER_S = 5  # a busy supervisor or a locked history is usually free again within seconds

# (request, status, message, retry_after) -> the answer, in the asker's format (the dashboard's renderer)
Respond = Callable[[Request, int, str, "int | None"], Response]


def blame(request: Request, cause: str) -> None:
    """Name the cause of the 5xx answer this request is about to get (logged by the middleware)."""
    request.state.fault = cause


def wants_json(scope: Scope) -> bool:
    """JSON for the API (``/api/...`` read with a token or by a script); HTML for a browser's page or form."""
    path: str = scope.get("path", "")
    state: dict[str, Any] = scope.get("state") or {}
    if path.endswith("/events"):  # an event stream's errors are read by script
        return True
    if not path.startswith("/api/"):
        return False
    return not (state.get("auth") == "cookie" and scope.get("method") == "POST")


class Faults:
    """Logs every 5xx with its cause and answers for routes that raised (see the module's policy)."""

    def __init__(self, app: ASGIApp, *, respond: Respond, logger: logging.Logger = LOG) -> None:
        self.app = app
        self.respond = respond
        self.log = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started: list[int] = []

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(int(message["status"]))
                if message["status"] >= 500:
                    cause = (scope.get("state") or {}).get("fault") or "no cause recorded"
                    self._log(scope, int(message["status"]), str(cause))
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:  # noqa: BLE001 - every failure of a route is an answer, never a dropped connection
            cause = f"{type(exc).__name__}: {exc}"
            if started:
                self._log(scope, started[0], f"failed after the answer began: {cause}")
                return
            transient = isinstance(exc, TaskAutomationError) and bool(getattr(exc, "transient", False))
            status = 503 if transient else 500
            message = str(exc) if isinstance(exc, TaskAutomationError) else f"internal error: {cause}"
            scope.setdefault("state", {})["fault"] = cause
            response = self.respond(Request(scope), status, message, RETRY_AFTER_S if transient else None)
            await response(scope, receive, watched)

    def _log(self, scope: Scope, status: int, cause: str) -> None:
        line = " ".join(str(cause).split())  # one line, whatever the message held
        self.log.error("%d %s %s: %s", status, scope.get("method", "?"), scope.get("path", "?"), line)
