"""Raise the open-file soft limit to the hard limit at supervisor start.

Policy: distributions start services with a soft RLIMIT_NOFILE of 1024 (kept low for old ``select()``
code) and a much higher hard limit. The supervisor holds sockets, pipes of runs in flight and SQLite files;
hundreds of tasks must not make it hit EMFILE while the hard limit would allow more, so it raises its soft
limit to the hard one (capped by the kernel's ``fs.nr_open`` when the hard limit is unlimited). Failure is
not an error: the limit stays as it was and the caller logs one line.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

_NR_OPEN = Path("/proc/sys/fs/nr_open")
_FALLBACK_CEILING = 1 << 20  # Linux's default fs.nr_open


@dataclass(frozen=True)
class FdLimit:
    """The soft limit before and after, the hard limit, and why it could not be raised (or None)."""

    before: int
    after: int
    hard: int
    problem: str | None = None

    def describe(self) -> str:
        if self.problem is not None:
            return f"open-file limit stays at {self.before} (hard {self.hard}): {self.problem}"
        if self.after == self.before:
            return f"open-file limit {self.after} (already the hard limit)"
        return f"open-file limit raised from {self.before} to {self.after} (the hard limit)"


def raise_fd_limit(
    *,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
    nr_open: Path = _NR_OPEN,
) -> FdLimit:
    """Set RLIMIT_NOFILE's soft limit to its hard limit; never raises."""
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            target = int(nr_open.read_text().strip())
        except (OSError, ValueError):
            target = _FALLBACK_CEILING
    if soft != resource.RLIM_INFINITY and soft >= target:
        return FdLimit(before=soft, after=soft, hard=hard)
    try:
        setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        return FdLimit(before=soft, after=soft, hard=hard, problem=str(exc))
    return FdLimit(before=soft, after=target, hard=hard)
