"""The pure half of Output/ retention ([Output] KeepDays / KeepFiles / KeepMB): given the regular files listed
under a task's Output/ (size, modification time), the limits and now, which files to remove.

Policy (README's [Output] keys, docs/cli.md "Output retention"):
* Oldest first: files are ordered by modification time, oldest first (then by path, so a plan is stable).
* KeepDays removes every file last modified more than N days before now; KeepFiles then removes the oldest
  until at most N remain; KeepMB then removes the oldest until the rest total at most N MiB. A file is
  removed only when a limit needs it, so the plan is the smallest oldest-first set that makes all hold.
* A file with a modification time in the future counts as the newest (it is never "too old").
* With no limit set the plan is empty: the supervisor never touches Output/.

``execution.pruning`` lists the files and carries the plan out; nothing here reads a disk or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..model import Retention

DAY_S = 86400.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class OutputFile:
    """One regular file under Output/: its path relative to Output/ as parts, its size and mtime (epoch s).
    ``ident`` is (st_dev, st_ino): the remover checks it is still the same file before unlinking."""

    parts: tuple[str, ...]
    size: int
    mtime: float
    ident: tuple[int, int] = (0, 0)


def plan_prune(files: Sequence[OutputFile], retention: Retention, *, now: float) -> tuple[OutputFile, ...]:
    """The files to remove, oldest first, so that every limit of ``retention`` holds for the rest."""
    if not retention.enabled:
        return ()
    ordered = sorted(files, key=lambda f: (f.mtime, f.parts))
    cut = 0  # ordered[:cut] go
    if retention.keep_days is not None:
        oldest_kept = now - retention.keep_days * DAY_S
        while cut < len(ordered) and ordered[cut].mtime < oldest_kept:
            cut += 1
    if retention.keep_files is not None:
        cut = max(cut, len(ordered) - retention.keep_files)
    if retention.keep_mb is not None:
        budget = retention.keep_mb * MIB
        total = sum(f.size for f in ordered[cut:])
        while cut < len(ordered) and total > budget:
            total -= ordered[cut].size
            cut += 1
    return tuple(ordered[:cut])
