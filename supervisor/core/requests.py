"""Control requests (from the CLI over the control socket, and the dashboard) answered on the loop thread.

Every request gets exactly one reply; a request that fails, for whatever reason, is answered with its error
and never takes the loop down. ``run-now`` is one code path for the CLI, the dashboard and its API: a task
still loading is promised its run, which starts once the task is loaded (core/manual.py). ``status`` is not
among them: the control socket answers it from the latest status snapshot on its own thread (snapshot.py),
so a polling dashboard never waits for the loop.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Protocol

from ..execution.params import ParamError, RunParams, from_json
from .manual import BAD_REQUEST, RunNowAnswer
from .pausing import PAUSE_COMMANDS

_LOG = logging.getLogger("taskautomation")


class RequestTarget(Protocol):
    """What the loop offers to control requests."""

    def run_now(self, name: str, *, respect_gates: bool = False, params: RunParams = ()) -> RunNowAnswer: ...

    def begin_shutdown(self, reason: str) -> None: ...

    def request_rescan(self) -> None: ...

    def pause_command(self, command: str, args: Mapping[str, Any]) -> dict[str, Any]: ...


def answer(command: str, args: Mapping[str, Any], target: RequestTarget) -> Mapping[str, Any]:
    """The reply to one control request."""
    try:
        if command == "run-now":
            # Accepted (``run_id``, and ``waiting_for`` when the task is still loading) or refused (``error``
            # and ``code``): core/manual.py has the policy, docs/cli.md the reply.
            # ``respect_gates``: a closed start gate refuses the run instead of being ignored (core/gating.py).
            # ``env``: {KEY: VALUE} for this run's environment only (execution/params.py checks it).
            try:
                params = from_json(args.get("env"))
            except ParamError as exc:
                return RunNowAnswer.refused(BAD_REQUEST, f"bad run parameter (env) {exc}").reply()
            gates = args.get("respect_gates") is True
            return target.run_now(str(args.get("name", "")), respect_gates=gates, params=params).reply()
        if command == "stop":
            target.begin_shutdown(f"stop requested ({args.get('by', 'control socket')})")
            return {"ok": True, "pid": os.getpid()}
        if command == "rescan":
            target.request_rescan()
            return {"ok": True}
        if command in PAUSE_COMMANDS:
            return target.pause_command(command, args)
        return {"ok": False, "error": f"unknown command {command!r}"}
    except Exception as exc:  # noqa: BLE001 - a bad request must not take the loop down
        _LOG.exception("control request %r failed", command)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
