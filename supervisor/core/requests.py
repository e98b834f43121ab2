"""Control requests (from the CLI over the control socket, later the web API) answered on the loop thread.

Every request gets exactly one reply; a request that fails, for whatever reason, is answered with its error
and never takes the loop down.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Protocol

from ..events import ControlRequest
from .pausing import PAUSE_COMMANDS

_LOG = logging.getLogger("taskautomation")


class CommandTarget(Protocol):
    """What the loop offers to control requests."""

    def status(self) -> dict[str, Any]: ...

    def run_now(self, name: str) -> tuple[bool, str]: ...

    def begin_shutdown(self, reason: str) -> None: ...

    def request_rescan(self) -> None: ...

    def pause_command(self, command: str, args: Mapping[str, Any]) -> dict[str, Any]: ...


def answer(request: ControlRequest, target: CommandTarget) -> None:
    try:
        if request.command == "status":
            request.reply({"ok": True, "status": target.status()})
        elif request.command == "run-now":
            started, detail = target.run_now(str(request.args.get("name", "")))
            request.reply({"ok": started, "run_id" if started else "error": detail})
        elif request.command == "stop":
            target.begin_shutdown(f"stop requested ({request.args.get('by', 'control socket')})")
            request.reply({"ok": True, "pid": os.getpid()})
        elif request.command == "rescan":
            target.request_rescan()
            request.reply({"ok": True})
        elif request.command in PAUSE_COMMANDS:
            request.reply(target.pause_command(request.command, request.args))
        else:
            request.reply({"ok": False, "error": f"unknown command {request.command!r}"})
    except Exception as exc:  # noqa: BLE001 - a bad request must not take the loop down
        _LOG.exception("control request %r failed", request.command)
        request.reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
