"""The commands another edge of the package serves: ``web`` (the dashboard) and ``worker`` (the RQ worker).

Edges never import each other, so the command line knows these entry points by dotted name only and imports
them when such a command runs. The other commands never load a web framework or RQ, and an install without
the optional extra gets one line naming it instead of a traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import TaskAutomationError


@dataclass(frozen=True)
class EdgeEntry:
    """One function of another edge: ``target`` is ``module:function``; without ``extra`` it cannot load."""

    target: str
    what: str  # names the edge in the missing-extra line ("the dashboard")
    extra: str  # the optional extra that brings its third-party imports

    def resolve(self) -> Callable[..., int]:
        """The function itself. Raises TaskAutomationError naming the extra when a dependency is missing."""
        module_name, _, function = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] == __name__.partition(".")[0]:
                raise  # a module of this package itself is missing: a broken install, not a missing extra
            raise TaskAutomationError(
                f"{self.what} needs the {self.extra} extra ({exc.name} is missing): "
                f"pip install 'taskautomation[{self.extra}]'"
            ) from None
        found: Callable[..., int] = getattr(module, function)
        return found


EDGES: dict[str, EdgeEntry] = {
    "web.serve": EdgeEntry("supervisor.web.server:serve_web", what="the dashboard", extra="web"),
    "web.print_url": EdgeEntry("supervisor.web.server:print_url", what="the dashboard", extra="web"),
    "worker.serve": EdgeEntry("supervisor.scaleout.worker:serve_worker", what="the worker", extra="rq"),
}


def call_edge(entry: str, /, *args: Any, **kwargs: Any) -> int:
    """Run the entry point ``entry`` of :data:`EDGES` with these arguments; returns its exit code."""
    return EDGES[entry].resolve()(*args, **kwargs)
