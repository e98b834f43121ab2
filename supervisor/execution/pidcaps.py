"""Which pids cap refused a run's forks: the run's own group (MaxProcesses) or an outer cgroup's ``pids.max``.

Policy: the kernel counts a refused fork in the ``pids.events`` of the group that forked (cgroup v1, and v2
without hierarchical events) whichever ancestor's ``pids.max`` refused it, so that counter says *that* forks
failed, not *where*. The counts say where: a fork is refused by a cap that has no room left, so the cap that
refused is the one with the least room (``pids.max - pids.current``) among the run's group and its ancestors;
on a tie the nearest wins (the run's own cap is the one it was promised). The kill's message names that cap,
with its path when it is an outer one (a cap an administrator, a container or a test put around the
supervisor). Reads only ``pids.max`` and ``pids.current``; the choice itself is pure (``refusing_cap``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class PidsCap:
    """One group's finite ``pids.max`` and what it holds now."""

    path: Path
    limit: int
    current: int

    @property
    def room(self) -> int:
        return self.limit - self.current


def refusing_cap(caps: Sequence[PidsCap]) -> PidsCap | None:
    """The cap that refused the forks (least room; nearest first on a tie), None without any finite cap."""
    best: PidsCap | None = None
    for cap in caps:  # nearest first
        if best is None or cap.room < best.room:
            best = cap
    return best


def caps_from(run_dir: Path) -> list[PidsCap]:
    """The finite pids caps of ``run_dir`` and each of its ancestors, nearest first, up to the hierarchy's
    root (which has no ``pids.max``). A group whose files cannot be read is passed over."""
    caps: list[PidsCap] = []
    directory = run_dir
    while (directory / "pids.max").exists():
        try:
            text = (directory / "pids.max").read_text().strip()
            current = int((directory / "pids.current").read_text())
        except (OSError, ValueError):
            text, current = "max", 0
        if text != "max":
            try:
                caps.append(PidsCap(path=directory, limit=int(text), current=current))
            except ValueError:
                pass
        if directory.parent == directory:
            break
        directory = directory.parent
    return caps


def refusal_detail(run_dir: Path, *, refused: int, max_processes: int, caps: Sequence[PidsCap] | None = None) -> str:
    """The kill's message: how many forks were refused, at which cap (``caps`` None = read them now)."""
    cap = refusing_cap(caps_from(run_dir) if caps is None else caps)
    if cap is None or cap.path == run_dir:
        return (
            f"process limit reached: {refused} fork(s) refused at MaxProcesses={max_processes} (cgroup pids controller)"
        )
    return (
        f"process limit reached: {refused} fork(s) refused at pids.max={cap.limit} of the outer cgroup {cap.path} "
        f"(cgroup pids controller; the run's MaxProcesses={max_processes} was not reached)"
    )
